package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/gitfleet/gitfleet/device/sim"
)

// TestQuickstart runs `make run`'s script (scripts/quickstart) as a
// newcomer does, with a deadline: it makes the fleet repository, starts
// the controller on the embedded store and five simulated devices running
// the real agent, and prints the next steps. The test then does what the
// printout says — starts the paused rollout with a commit (announced by
// the repository's post-commit hook through the signed webhook) — and sees
// all five devices update; makes sim-005 raise an alert on demand and sees
// it in the management API; and stops everything with Ctrl-C (SIGINT to
// the process group), after which no process the script started is left.
func TestQuickstart(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a controller and five devices")
	}
	_, file, _, _ := runtime.Caller(0)
	src := filepath.Join(filepath.Dir(file), "..", "..")
	bin := t.TempDir()
	build := exec.Command("go", "build", "-o", bin+"/", "./cmd/gitfleet", "./cmd/gitfleet-agent", "./cmd/gitfleet-sim")
	build.Dir = src
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	state := t.TempDir()
	listen := freeAddr(t)

	// The whole run is bounded: the script is killed at the deadline.
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(src, "scripts", "quickstart"))
	cmd.Env = append(os.Environ(),
		"GITFLEET_QUICKSTART_DIR="+state,
		"GITFLEET_QUICKSTART_LISTEN="+listen,
		"GITFLEET_QUICKSTART_POLL=1",
		"GITFLEET_QUICKSTART_BIN="+bin,
	)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pgid := cmd.Process.Pid
	exited := make(chan error, 1)
	var out safeBuffer
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			out.WriteString(sc.Text() + "\n")
		}
		exited <- cmd.Wait()
	}()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			// As Ctrl-C would: the script stops its controller and
			// devices (each agent is in a process group of its own);
			// SIGKILL to the group only if it does not end in time.
			_ = syscall.Kill(-pgid, syscall.SIGINT)
			select {
			case <-exited:
			case <-time.After(15 * time.Second):
				_ = syscall.Kill(-pgid, syscall.SIGKILL)
				<-exited
			}
		}
		if t.Failed() {
			for _, f := range []string{"controller.log", "devices.log", "devices/sim-001/agent.log"} {
				b, _ := os.ReadFile(filepath.Join(state, f))
				t.Logf("%s (last 3000 bytes):\n%s", f, tail(b, 3000))
			}
			t.Logf("quickstart stdout:\n%s\nstderr:\n%s", out.String(), stderr.String())
		}
	})

	waitFor(t, 2*time.Minute, "the quickstart's next steps", func() bool {
		return strings.Contains(out.String(), "Next: start the rollout")
	})
	printed := out.String()
	for _, want := range []string{"Dashboard   https://" + listen + "/", "Token       ", "git -C " + state + "/fleet commit -am", "scripts/quickstart alert sim-005"} {
		if !strings.Contains(printed, want) {
			t.Errorf("the quickstart's printout lacks %q:\n%s", want, printed)
		}
	}
	api := quickstartAPI(t, state, listen)

	// Five devices, all declared and authenticated, none updated: the
	// rollout waits for the commit that un-pauses it.
	waitFor(t, Deadline, "five devices authenticated (their keys bound on first use)", func() bool {
		log, _ := os.ReadFile(filepath.Join(state, "controller.log"))
		return bytes.Count(log, []byte(`"device key bound on first use"`)) == 5
	})
	var rollouts struct {
		Rollouts []struct {
			Name   string `json:"name"`
			Phases []struct {
				Waiting []struct {
					Reason string `json:"reason"`
				} `json:"waiting"`
			} `json:"phases"`
		} `json:"rollouts"`
	}
	if err := api.get("/api/management/v1/rollouts", &rollouts); err != nil {
		t.Fatal(err)
	}
	if len(rollouts.Rollouts) != 1 || len(rollouts.Rollouts[0].Phases) == 0 || len(rollouts.Rollouts[0].Phases[0].Waiting) == 0 ||
		rollouts.Rollouts[0].Phases[0].Waiting[0].Reason != "paused" {
		t.Fatalf("before the first commit the rollout should wait, paused: %+v", rollouts)
	}
	for i := 1; i <= 5; i++ {
		if got := deviceArtifact(t, state, i); got != "hello-1" {
			t.Fatalf("sim-00%d runs %q before the rollout started", i, got)
		}
	}

	// The change a newcomer commits (with holds short enough for a test).
	repo := filepath.Join(state, "fleet")
	rollout := filepath.Join(repo, "rollout.yaml")
	b, err := os.ReadFile(rollout)
	if err != nil {
		t.Fatal(err)
	}
	changed := strings.Replace(string(b), "paused: true", "paused: false", 1)
	for _, h := range []string{"hold: 30s", "hold: 1m"} {
		changed = strings.ReplaceAll(changed, h, "hold: 1s")
	}
	if changed == string(b) || !strings.Contains(changed, "paused: false") {
		t.Fatalf("rollout.yaml has no 'paused: true' to change:\n%s", b)
	}
	if err := os.WriteFile(rollout, []byte(changed), 0o644); err != nil {
		t.Fatal(err)
	}
	git := exec.Command("git", "-C", repo, "-c", "user.name=Newcomer", "-c", "user.email=new@example.com", "commit", "-qam", "Start the hello-2 rollout")
	if out, err := git.CombinedOutput(); err != nil {
		t.Fatalf("git commit: %v\n%s", err, out)
	}
	if out, _ := exec.Command("git", "-C", repo, "rev-parse", "HEAD").Output(); len(out) > 0 {
		sha := strings.TrimSpace(string(out))
		// The post-commit hook announced it (the controller polls only
		// every 30 s, and logs each webhook push).
		waitFor(t, Deadline, "the webhook push for the commit", func() bool {
			log, _ := os.ReadFile(filepath.Join(state, "controller.log"))
			return bytes.Contains(log, []byte(`"webhook push"`)) && bytes.Contains(log, []byte(sha))
		})
	}
	waitFor(t, 3*time.Minute, "all five devices on hello-2", func() bool {
		for i := 1; i <= 5; i++ {
			if deviceArtifact(t, state, i) != "hello-2" {
				return false
			}
		}
		return true
	})
	for i := 1; i <= 5; i++ {
		got, err := os.ReadFile(filepath.Join(state, "devices", fmt.Sprintf("sim-%03d", i), "root/opt/hello/hello.txt"))
		if err != nil || !strings.Contains(string(got), "version 2") {
			t.Errorf("sim-%03d: /opt/hello/hello.txt = %q, %v; want the artifact's file installed by the single-file module", i, got, err)
		}
	}

	// The dashboard as a newcomer opens it (the README's screenshot):
	// logged in with the printed token, the rollout completed on all five
	// devices; then, once sim-005 raised its alert on demand, the alert
	// open and the rollout aborted by it (an alert on a device the rollout
	// updated marks the release bad, also after the rollout finished).
	var br *browser
	if _, err := os.Stat(chromiumPath); err == nil || os.Getenv("CI") == "true" {
		cert, err := os.ReadFile(filepath.Join(state, "data", "dev-tls.crt"))
		if err != nil {
			t.Fatal(err)
		}
		br = startBrowser(t, cert)
		br.do("log in", chromedp.Navigate("https://"+listen+"/"), chromedp.WaitVisible(chromedp.CSS(`#token`)),
			chromedp.SendKeys(chromedp.CSS(`#token`), api.token), chromedp.Click(chromedp.CSS(`#login button[type=submit]`)),
			chromedp.WaitVisible(chromedp.CSS(`#live`)))
		bar := `.rollout-summary[data-rollout="hello-2"] .bar`
		br.await("the overview showing the completed rollout", `document.getElementById("live").innerText.includes("5 succeeded")`)
		done := br.screenshot("quickstart-completed", "#live", bar)
		for _, want := range []string{"Start the hello-2 rollout", "Newcomer", "hello-2", "completed", "5 succeeded"} {
			if !strings.Contains(done.text, want) {
				t.Errorf("the quickstart's overview lacks %q:\n%s", want, done.text)
			}
		}
		if got := done.colorShare(bar, colorOK); got < 0.9 {
			t.Errorf("the completed rollout's bar is %.0f%% green, want it full", got*100)
		}
	}

	// An alert on demand.
	alert := exec.Command(filepath.Join(src, "scripts", "quickstart"), "alert", "sim-005")
	alert.Env = cmd.Env
	if out, err := alert.CombinedOutput(); err != nil {
		t.Fatalf("quickstart alert: %v\n%s", err, out)
	}
	waitFor(t, Deadline, "sim-005's hello-errors alert", func() bool {
		var alerts struct {
			Alerts []struct {
				Device string `json:"device"`
				Check  string `json:"check"`
			} `json:"alerts"`
		}
		if api.get("/api/management/v1/alerts?device=sim-005", &alerts) != nil {
			return false
		}
		for _, a := range alerts.Alerts {
			if a.Check == "hello-errors" {
				return true
			}
		}
		return false
	})

	if br != nil {
		br.await("the overview showing the alert", `document.getElementById("live").innerText.includes("hello-errors")`)
		overview := br.screenshot("quickstart-overview", "#live")
		for _, want := range []string{"sim-005", "hello-errors", "cannot reach the upstream service", "aborted", "5 succeeded"} {
			if !strings.Contains(overview.text, want) {
				t.Errorf("the quickstart's overview after the alert lacks %q:\n%s", want, overview.text)
			}
		}
	}

	// Ctrl-C: the terminal sends SIGINT to the foreground process group.
	if err := syscall.Kill(-pgid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		stopped = true
		if err != nil {
			t.Errorf("the quickstart exited with %v after Ctrl-C; want 0", err)
		}
	case <-time.After(Deadline):
		t.Fatal("the quickstart did not stop on Ctrl-C")
	}
	if left := processesUnder(state); len(left) > 0 {
		t.Errorf("processes left running after Ctrl-C: %v", left)
	}
	if c, err := net.DialTimeout("tcp", listen, time.Second); err == nil {
		c.Close()
		t.Errorf("the controller still listens on %s after Ctrl-C", listen)
	}
}

// deviceArtifact is the artifact simulated device i says it runs.
func deviceArtifact(t *testing.T, state string, i int) string {
	d, err := sim.New(filepath.Join(state, "devices", fmt.Sprintf("sim-%03d", i)), sim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return d.ArtifactName()
}

// processesUnder lists the processes whose command line names dir.
func processesUnder(dir string) []string {
	var left []string
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		if cmdline := strings.ReplaceAll(string(b), "\x00", " "); strings.Contains(cmdline, dir) {
			left = append(left, filepath.Base(filepath.Dir(p))+": "+cmdline)
		}
	}
	return left
}

type quickstartClient struct {
	base, token string
	client      *http.Client
}

func quickstartAPI(t *testing.T, state, listen string) *quickstartClient {
	token, err := os.ReadFile(filepath.Join(state, "management-token"))
	if err != nil {
		t.Fatal(err)
	}
	pemBytes, err := os.ReadFile(filepath.Join(state, "data", "dev-tls.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemBytes) {
		t.Fatal("dev-tls.crt holds no certificate")
	}
	return &quickstartClient{
		base:   "https://" + listen,
		token:  strings.TrimSpace(string(token)),
		client: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}},
	}
}

func (c *quickstartClient) get(path string, out any) error {
	req, err := http.NewRequest(http.MethodGet, c.base+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := c.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %d %s", path, resp.StatusCode, b)
	}
	return json.Unmarshal(b, out)
}

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func waitFor(t *testing.T, d time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

type safeBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *safeBuffer) WriteString(v string) {
	s.mu.Lock()
	s.b.WriteString(v)
	s.mu.Unlock()
}

func (s *safeBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
