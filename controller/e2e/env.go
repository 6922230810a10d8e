// Package e2e runs the real gitfleet binary against a real fleet repository
// served over HTTPS by git http-backend and a real redis-server, and drives
// it the way an operator and a Git host do. Tests read like scripts:
//
//	env := e2e.New(t)
//	c := env.StartController("a")
//	sha := env.Commit(change, "bigger canary")
//	env.Push(c, sha)              // a signed GitHub webhook
//	c.AwaitServing(sha)
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/controller"
	"github.com/gitfleet/gitfleet/controller/gitsource/gittest"
	"github.com/gitfleet/gitfleet/controller/store/redistest"
)

// Deadline bounds every wait in these tests.
const Deadline = 60 * time.Second

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// Binary builds cmd/gitfleet once per test process and returns its path.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "gitfleet-e2e-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "gitfleet")
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Join(filepath.Dir(file), "..", "..")
		cmd := exec.Command("go", "build", "-o", binPath, "./cmd/gitfleet")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// Env is one fleet repository, its HTTPS server and one Redis.
type Env struct {
	t             testing.TB
	Repo          *gittest.Repo
	Git           *gittest.HTTPSServer
	RedisAddr     string
	RestartRedis  func()
	WebhookSecret string
	Token         string
	caFile        string
	deliveries    atomic.Int64
}

// New makes a fleet repository seeded from dir (relative to the module
// root, e.g. "examples/quickstart"), serves it over HTTPS with basic auth,
// and starts a Redis.
func New(t testing.TB, seed string) *Env {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	return newEnv(t, filepath.Join(filepath.Dir(file), "..", "..", seed))
}

// newEnv seeds the repository from the directory dir.
func newEnv(t testing.TB, dir string) *Env {
	t.Helper()
	gittest.RequireGit(t)
	e := &Env{t: t, WebhookSecret: "hook-secret-" + strconv.Itoa(os.Getpid()), Token: "mgmt-token"}
	e.Repo = gittest.NewRepo(t)
	e.Repo.CopyDir(dir, "seed fleet from "+filepath.Base(dir))
	e.Git = gittest.StartHTTPS(t, e.Repo.Dir, gittest.HTTPSOptions{Username: "fleet-bot", Password: "repo-token"})
	e.caFile = filepath.Join(t.TempDir(), "git-ca.pem")
	if err := os.WriteFile(e.caFile, e.Git.CAPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	e.RedisAddr, e.RestartRedis = redistest.Start(t)
	return e
}

// Commit writes files (path → content) and returns the SHA; env.Repo.Apply
// also removes files.
func (e *Env) Commit(files map[string]string, msg string) string {
	return e.Repo.Commit(files, msg)
}

// Controller is one running `gitfleet serve` process.
type Controller struct {
	Name    string
	Addr    string
	DataDir string
	env     *Env
	cmd     *exec.Cmd
	client  *http.Client
	logs    *lockedBuffer
	exited  chan struct{}
}

// StartController starts `gitfleet serve` on a free loopback port with the
// Redis store, following the repository over HTTPS. Webhooks are the only
// prompt way it learns of commits: its poll interval is an hour.
func (e *Env) StartController(name string, extra ...string) *Controller {
	e.t.Helper()
	c := &Controller{Name: name, env: e, DataDir: e.t.TempDir(), logs: &lockedBuffer{}, exited: make(chan struct{})}
	args := append([]string{"serve",
		"--repo", e.Git.URL, "--branch", "main", "--repo-username", "fleet-bot", "--repo-ca", e.caFile,
		"--redis", "redis://" + e.RedisAddr, "--data-dir", c.DataDir, "--listen", "127.0.0.1:0",
		"--poll-interval", "1h", "--log-level", "debug",
	}, extra...)
	c.cmd = exec.Command(Binary(e.t), args...)
	// Secrets through the environment, as an operator would.
	c.cmd.Env = append(os.Environ(), "GITFLEET_REPO_TOKEN=repo-token",
		"GITFLEET_WEBHOOK_SECRET="+e.WebhookSecret, "GITFLEET_MANAGEMENT_TOKEN="+e.Token)
	stderr, err := c.cmd.StderrPipe()
	if err != nil {
		e.t.Fatal(err)
	}
	c.cmd.Stdout = c.logs
	if err := c.cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(c.Stop)
	addr := make(chan string, 1)
	go func() {
		defer close(c.exited)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		re := regexp.MustCompile(`"msg":"serving HTTPS","addr":"([^"]+)"`)
		for sc.Scan() {
			line := sc.Text()
			c.logs.WriteString(line + "\n")
			if m := re.FindStringSubmatch(line); m != nil {
				addr <- m[1]
			}
		}
		c.cmd.Wait()
	}()
	select {
	case c.Addr = <-addr:
	case <-c.exited:
		e.t.Fatalf("controller %s exited at start:\n%s", name, c.logs)
	case <-time.After(Deadline):
		e.t.Fatalf("controller %s did not start listening:\n%s", name, c.logs)
	}
	pemBytes, err := os.ReadFile(filepath.Join(c.DataDir, "dev-tls.crt"))
	if err != nil {
		e.t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pemBytes)
	c.client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	return c
}

// Stop ends the process (SIGTERM, then SIGKILL) and waits for it.
func (c *Controller) Stop() {
	if c.cmd.Process == nil {
		return
	}
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(15 * time.Second):
		c.cmd.Process.Kill()
		<-c.exited
	}
}

// Logs returns what the controller logged so far.
func (c *Controller) Logs() string { return c.logs.String() }

// PID of the controller process.
func (c *Controller) PID() int { return c.cmd.Process.Pid }

// Status reads the management API's status.
func (c *Controller) Status() (controller.Status, error) {
	var st controller.Status
	err := c.getJSON("/api/management/v1/status", &st)
	return st, err
}

// Events reads the newest events.
func (c *Controller) Events() ([]map[string]any, error) {
	var out struct {
		Events []map[string]any `json:"events"`
	}
	err := c.getJSON("/api/management/v1/events?limit=1000", &out)
	return out.Events, err
}

// Rollouts reads the rollouts the store knows.
func (c *Controller) Rollouts() ([]map[string]any, error) {
	var out struct {
		Rollouts []map[string]any `json:"rollouts"`
	}
	err := c.getJSON("/api/management/v1/rollouts", &out)
	return out.Rollouts, err
}

func (c *Controller) getJSON(path string, v any) error {
	req, _ := http.NewRequest("GET", "https://"+c.Addr+path, nil)
	req.Header.Set("Authorization", "Bearer "+c.env.Token)
	resp, err := c.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("GET %s: %s %s", path, resp.Status, b)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// Get does an unauthenticated GET and returns the status code and body.
func (c *Controller) Get(path string) (int, string) {
	resp, err := c.client.Get("https://" + c.Addr + path)
	if err != nil {
		c.env.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, string(b)
}

// AwaitServing waits until the controller serves sha.
func (c *Controller) AwaitServing(sha string) controller.Status {
	c.env.t.Helper()
	return c.Await(fmt.Sprintf("serving %.12s", sha), func(st controller.Status) bool {
		return st.Serving != nil && st.Serving.SHA == sha
	})
}

// AwaitRefused waits until the controller reports sha as refused.
func (c *Controller) AwaitRefused(sha string) controller.Status {
	c.env.t.Helper()
	return c.Await(fmt.Sprintf("refused %.12s", sha), func(st controller.Status) bool {
		return st.Refused != nil && st.Refused.SHA == sha
	})
}

// Await polls the status until ok holds, failing the test at Deadline.
func (c *Controller) Await(what string, ok func(controller.Status) bool) controller.Status {
	c.env.t.Helper()
	deadline := time.Now().Add(Deadline)
	var last controller.Status
	var lastErr error
	for time.Now().Before(deadline) {
		last, lastErr = c.Status()
		if lastErr == nil && ok(last) {
			return last
		}
		time.Sleep(20 * time.Millisecond)
	}
	b, _ := json.MarshalIndent(last, "", "  ")
	c.env.t.Fatalf("controller %s: not %s within %s (last error %v)\nstatus: %s\nlogs:\n%s", c.Name, what, Deadline, lastErr, b, tailLines(c.Logs(), 40))
	return last
}

// Push posts a GitHub push webhook for sha, signed with the secret (or, with
// forge, with a wrong one). It returns the HTTP status.
func (e *Env) Push(c *Controller, sha string, forge bool) int {
	e.t.Helper()
	body, _ := json.Marshal(map[string]any{
		"ref": "refs/heads/main", "before": strings.Repeat("0", 40), "after": sha,
		"repository": map[string]any{"full_name": "example/fleet", "clone_url": e.Git.URL},
		"pusher":     map[string]any{"name": "ada"},
	})
	secret := e.WebhookSecret
	if forge {
		secret = "not-the-secret"
	}
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	req, _ := http.NewRequestWithContext(context.Background(), "POST", "https://"+c.Addr+"/hooks", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-GitHub-Event", "push")
	req.Header.Set("X-GitHub-Delivery", fmt.Sprintf("delivery-%d-%d", os.Getpid(), e.deliveries.Add(1)))
	req.Header.Set("X-Hub-Signature-256", "sha256="+hex.EncodeToString(mac.Sum(nil)))
	resp, err := c.client.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// RSS returns the controller's current and peak resident memory in bytes.
func (c *Controller) RSS() (cur, peak int64) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.PID()))
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			cur = kb << 10
		case "VmHWM:":
			peak = kb << 10
		}
	}
	return cur, peak
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) WriteString(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b.WriteString(s)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
