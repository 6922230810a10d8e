package e2e

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/controller/store"
)

// monitorRoot is a directory a device's monitoring sees as "/": the real
// /proc and /sys (processes, sockets and interface counters are the
// machine's), and its own /etc and /var/log and /usr/local/bin.
type monitorRoot struct {
	t   *testing.T
	dir string
}

func newMonitorRoot(t *testing.T) *monitorRoot {
	t.Helper()
	r := &monitorRoot{t: t, dir: t.TempDir()}
	for _, d := range []string{"proc", "sys"} {
		if err := os.Symlink("/"+d, filepath.Join(r.dir, d)); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, r.path("/etc/app.conf"), []byte("level = info\n"), 0o644)
	writeFile(t, r.path("/var/log/app.log"), []byte("app started\n"), 0o644)
	writeFile(t, r.path("/var/log/auth.log"), []byte("Dec  2 06:00:00 dev CRON[1]: pam_unix(cron:session): session opened for user root\n"), 0o640)
	writeFile(t, r.path("/usr/local/bin/tool"), []byte("#!/bin/sh\n"), 0o755)
	return r
}

func (r *monitorRoot) path(p string) string { return filepath.Join(r.dir, p) }

func (r *monitorRoot) appendLine(p, line string) {
	r.t.Helper()
	f, err := os.OpenFile(r.path(p), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		r.t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(line + "\n"); err != nil {
		r.t.Fatal(err)
	}
}

// namedProcess runs a copy of sleep under name (its comm) until the test
// ends; it is stopped by its PID.
func namedProcess(t testing.TB, name string) *exec.Cmd {
	t.Helper()
	bin := filepath.Join(t.TempDir(), name)
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(sleep)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, bin, b, 0o755)
	cmd := exec.Command(bin, "3600")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopProcess(cmd) })
	return cmd
}

func stopProcess(cmd *exec.Cmd) {
	if cmd.Process != nil {
		_ = syscall.Kill(cmd.Process.Pid, syscall.SIGKILL)
		_, _ = cmd.Process.Wait()
	}
}

// Alerts lists alert records through the management API.
func (c *Controller) Alerts(query url.Values) ([]store.Alert, error) {
	var out struct {
		Alerts []store.Alert `json:"alerts"`
	}
	err := c.getJSON("/api/management/v1/alerts?"+query.Encode(), &out)
	return out.Alerts, err
}

// AwaitAlert waits until the alert of device, check and key (any key when
// key is "") satisfies ok, and returns it.
func (c *Controller) AwaitAlert(device, check, key string, what string, ok func(store.Alert) bool) store.Alert {
	c.env.t.Helper()
	var found store.Alert
	var last []store.Alert
	c.awaitFunc(fmt.Sprintf("alert %s/%s/%s %s", device, check, key, what), func() bool {
		as, err := c.Alerts(url.Values{"device": {device}, "check": {check}, "limit": {"1000"}})
		if err != nil {
			return false
		}
		last = as
		for _, a := range as {
			if (key == "" || a.Key == key) && ok(a) {
				found = a
				return true
			}
		}
		return false
	}, func() string { b, _ := json.MarshalIndent(last, "", "  "); return string(b) })
	return found
}

func isOpen(a store.Alert) bool { return a.State == store.AlertOpen }

// monitorChecks declares one check of every probe the e2e environment can
// fire, each scanning every second, for every device.
func monitorChecks(svc, rst string) map[string]string {
	checks := map[string]string{
		"app-errors": "log: {path: /var/log/app.log, pattern: 'ERROR'}\n  expiry: 4s",
		"svc-down":   "service: {name: " + svc + "}",
		"ports":      "listeningPorts: {allow: [22]}",
		"suid":       "setuid: {paths: [/usr/local/bin]}",
		"conf":       "fileChange: {paths: [/etc/app.conf]}",
		"restart":    "processRestart: {name: " + rst + "}",
		"traffic":    "traffic: {interface: lo, maxBytes: 209715200, window: 1m}",
		"root-login": "rootLogin: {log: /var/log/auth.log}",
		"inject":     "libraryInjection: {}",
		"failed":     "failedDeployments: {}",
	}
	return checkManifests(checks, "severity: error\n  interval: 1s")
}

// checkManifests writes a MonitorCheck targeting every device for each
// name → probe spec of checks, each spec also holding common.
func checkManifests(checks map[string]string, common string) map[string]string {
	out := map[string]string{}
	for name, spec := range checks {
		out["checks/"+name+".yaml"] = fmt.Sprintf(`apiVersion: gitfleet.io/v1
kind: MonitorCheck
metadata: {name: %s}
spec:
  target: {all: true}
  %s
  %s
`, name, common, spec)
	}
	return out
}

// awaitChecksApplied waits until the agent has applied the checks and its
// monitor has taken a baseline of each (its state file names them all).
func awaitChecksApplied(t testing.TB, a *Agent, names ...string) {
	t.Helper()
	deadline := time.Now().Add(Deadline)
	for {
		b, _ := os.ReadFile(filepath.Join(a.Dir(), "data", "monitor.json"))
		var st struct {
			Checks map[string]struct {
				Baseline map[string]string `json:"baseline"`
			} `json:"checks"`
		}
		_ = json.Unmarshal(b, &st)
		missing := 0
		for _, n := range names {
			if cs, ok := st.Checks[n]; !ok || (n == "suid" || n == "conf" || n == "restart") && len(cs.Baseline) == 0 {
				missing++
			}
		}
		if missing == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent %s: %d checks without a baseline after %s; state %s\nlog:\n%s", a.Name, missing, Deadline, b, tailLines(a.Logs(), 40))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestMonitoringEndToEnd: checks declared in Git reach real agents on
// simulated devices through two controller replicas sharing a real Redis;
// each probe fires for real and exactly one alert reaches the
// controllers, listed alike by both; a restarted agent raises nothing
// again; expiry clears; an alert named by a rollout's abort criteria
// aborts it on the replica the device talks to, seen by the other; a
// failed deployment raises the failedDeployments check.
func TestMonitoringEndToEnd(t *testing.T) {
	// A webhook receiver both replicas notify (HMAC-checked); the
	// controllers trust its certificate through SSL_CERT_FILE.
	hooks := startHookReceiver(t, "e2e-hook-secret")
	t.Setenv("SSL_CERT_FILE", hooks.caFile)
	t.Setenv("GF_E2E_HOOK_SECRET", "e2e-hook-secret")
	releasePriv, releasePub := generateKey(t)
	storeDir := filepath.Join(t.TempDir(), "artifacts")
	env, a := agentFleet(t, storeDir, map[string][]byte{"release": releasePub})
	b := env.StartController("b", "--artifact-store", storeDir)
	b.AwaitServing(env.Repo.Head())

	suffix := make([]byte, 3)
	_, _ = rand.Read(suffix)
	svcName, rstName := "gfs"+hex.EncodeToString(suffix), "gfr"+hex.EncodeToString(suffix)
	svc := namedProcess(t, svcName)
	rst := namedProcess(t, rstName)

	initial := TestImage("rel-1", agentImageSize, true)
	good := WriteRootfsArtifact(t, storeDir, "rel-2", TestImage("rel-2", agentImageSize, true), releasePriv)
	sick := WriteRootfsArtifact(t, storeDir, "rel-3", TestImage("rel-3", agentImageSize, false), releasePriv)

	// dev-watch talks to replica a, dev-roll to replica b.
	watchRoot, rollRoot := newMonitorRoot(t), newMonitorRoot(t)
	watch := NewAgent(t, a, AgentOptions{Name: "dev-watch", Image: initial, ArtifactName: "rel-1", VerifyKeys: [][]byte{releasePub}, MonitorRoot: watchRoot.dir})
	roll := NewAgent(t, b, AgentOptions{Name: "dev-roll", Image: initial, ArtifactName: "rel-1", VerifyKeys: [][]byte{releasePub}, MonitorRoot: rollRoot.dir})
	notification := map[string]string{"notifications/ops.yaml": `apiVersion: gitfleet.io/v1
kind: Notification
metadata: {name: ops}
spec:
  webhook:
    url: ` + hooks.url + `
    secret: {env: GF_E2E_HOOK_SECRET}
  events: [alert.raised, alert.cleared, rollout.aborted]
`}
	sha := env.CommitAndServe(a, merge(watch.Manifest(), roll.Manifest(), monitorChecks(svcName, rstName), notification), "declare devices, checks and notifications")
	b.AwaitServing(sha)
	for _, d := range []*Agent{watch, roll} {
		if err := d.Start(); err != nil {
			t.Fatal(err)
		}
	}
	all := []string{"app-errors", "svc-down", "ports", "suid", "conf", "restart", "traffic", "root-login", "inject", "failed"}
	awaitChecksApplied(t, watch, all...)
	awaitChecksApplied(t, roll, all...)

	// Fire every probe on dev-watch.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 1<<20)
	for range 256 { // 256 MiB each way on lo: 512 MiB counted, over 200 MiB
		if _, err := conn.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	conn.Close()
	watchRoot.appendLine("/var/log/app.log", "2026-12-02T07:00:00Z ERROR payment worker crashed")
	watchRoot.appendLine("/var/log/auth.log", "Dec  2 07:00:01 dev sshd[4242]: Failed password for root from 203.0.113.9 port 52211 ssh2")
	writeFile(t, watchRoot.path("/etc/app.conf"), []byte("level = debug\n"), 0o644)
	writeFile(t, watchRoot.path("/etc/ld.so.preload"), []byte("/usr/lib/libevil.so\n"), 0o644)
	suid := watchRoot.path("/usr/local/bin/rootshell")
	writeFile(t, suid, []byte("#!/bin/sh\n"), 0o755)
	if err := os.Chmod(suid, os.ModeSetuid|0o755); err != nil {
		t.Fatal(err)
	}
	stopProcess(svc)
	stopProcess(rst)
	namedProcess(t, rstName) // restarted: a new PID

	want := []struct{ check, key, evidence string }{
		{"app-errors", "", "payment worker crashed"},
		{"svc-down", svcName, svcName},
		{"ports", "tcp/" + strconv.Itoa(port), fmt.Sprintf("127.0.0.1:%d", port)},
		{"suid", "/usr/local/bin/rootshell", "rootshell"},
		{"conf", "/etc/app.conf", "sha256 changed"},
		{"restart", rstName, rstName},
		{"traffic", "", "lo moved"},
		{"root-login", "", "Failed password for root"},
		{"inject", "/etc/ld.so.preload", "libevil.so"},
	}
	seen := map[string]store.Alert{}
	for _, w := range want {
		al := a.AwaitAlert("dev-watch", w.check, w.key, "open", isOpen)
		if !strings.Contains(al.Evidence, w.evidence) {
			t.Errorf("%s: evidence %q does not contain %q", w.check, al.Evidence, w.evidence)
		}
		seen[w.check] = al
	}
	// Each reached the controllers once: one record each, raised once,
	// and replica b lists what replica a does.
	for _, w := range want {
		for _, c := range []*Controller{a, b} {
			as, err := c.Alerts(url.Values{"device": {"dev-watch"}, "check": {w.check}})
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for _, al := range as {
				if w.key == "" || al.Key == w.key {
					n++
					if al.Count != 1 {
						t.Errorf("replica %s: %s/%s raised %d times, want once", c.Name, w.check, al.Key, al.Count)
					}
				}
			}
			if n != 1 {
				t.Errorf("replica %s: %d records of %s/%s, want 1: %+v", c.Name, n, w.check, w.key, as)
			}
		}
	}
	// dev-roll shares the machine's processes and sockets, not dev-watch's
	// files: it raised none of the file checks.
	for _, check := range []string{"app-errors", "suid", "conf", "root-login", "inject"} {
		if as, _ := b.Alerts(url.Values{"device": {"dev-roll"}, "check": {check}}); len(as) != 0 {
			t.Errorf("dev-roll raised %s: %+v", check, as)
		}
	}
	// Each was notified once, by whichever replica recorded it.
	for _, w := range want {
		al := seen[w.check]
		hooks.await(t, "alert.raised dev-watch "+w.check+" "+al.Key, 1)
	}
	t.Logf("nine probes fired on dev-watch; one alert each on both replicas, notified once")

	// Expiry clears the log alert (expiry 4s, no new match).
	a.AwaitAlert("dev-watch", "app-errors", "", "expired", func(al store.Alert) bool {
		return al.State == store.AlertClosed && al.Closing == store.AlertExpired
	})

	// A restarted agent raises nothing again: stop it, start it, and once
	// it has delivered a new marker alert (so it scanned and sent after
	// the restart), every other record is as it was.
	if err := watch.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := watch.Start(); err != nil {
		t.Fatal(err)
	}
	marker := watchRoot.path("/usr/local/bin/marker")
	writeFile(t, marker, []byte("#!/bin/sh\n"), 0o755)
	if err := os.Chmod(marker, os.ModeSetuid|0o755); err != nil {
		t.Fatal(err)
	}
	a.AwaitAlert("dev-watch", "suid", "/usr/local/bin/marker", "open after the restart", isOpen)
	time.Sleep(3 * time.Second) // a few more 1 s scans; nothing may change
	for _, w := range want {
		if w.check == "app-errors" {
			continue
		}
		as, err := a.Alerts(url.Values{"device": {"dev-watch"}, "check": {w.check}})
		if err != nil {
			t.Fatal(err)
		}
		for _, al := range as {
			if al.Key == seen[w.check].Key && (al.Count != 1 || al.Raised != seen[w.check].Raised) {
				t.Errorf("after the agent restarted, %s/%s: %+v; before: %+v", w.check, al.Key, al, seen[w.check])
			}
		}
	}

	// A rollout whose phase aborts on app-errors: dev-roll (on replica b)
	// installs rel-2, then its app logs an error.
	sha = env.CommitAndServe(a, merge(ArtifactManifest(good, "2", "release"), map[string]string{"rollouts/app.yaml": `apiVersion: gitfleet.io/v1
kind: Rollout
metadata: {name: app}
spec:
  artifact: rel-2
  target: {devices: [dev-roll]}
  phases:
    - {name: all, percent: 100, abort: {alerts: [app-errors]}}
`}), "roll out rel-2, aborting on app errors")
	b.AwaitServing(sha)
	if o := roll.AwaitOutcome(b, "app"); o != store.StateSuccess {
		t.Fatalf("dev-roll: outcome %q, want success", o)
	}
	rollRoot.appendLine("/var/log/app.log", "2026-12-02T07:05:00Z ERROR checkout failed after the update")
	b.AwaitAlert("dev-roll", "app-errors", "", "open", isOpen)
	rec, err := a.RolloutRecord("app")
	if err != nil {
		t.Fatal(err)
	}
	g := store.GenerationRef{Rollout: rec.Name, Generation: rec.Generation}
	a.awaitFunc("rollout app aborted", func() bool { return a.Progress(g).Aborted != "" }, func() string { return fmt.Sprint(a.Progress(g)) })
	if reason := a.Progress(g).Aborted; !strings.Contains(reason, `alert "app-errors"`) || !strings.Contains(reason, "dev-roll") || !strings.Contains(reason, "checkout failed") {
		t.Errorf("abort reason %q does not name the alert, the device and its evidence", reason)
	}
	a.AwaitEvent("rollout.aborted", "app")
	hooks.await(t, "rollout.aborted   ", 1)
	hooks.await(t, "alert.cleared dev-watch app-errors match", 1)
	if bad := hooks.badSignatures.Load(); bad != 0 {
		t.Errorf("%d webhook deliveries with a bad signature", bad)
	}

	// A failed deployment on dev-watch raises "failed".
	sha = env.CommitAndServe(a, merge(ArtifactManifest(sick, "3", "release"), RolloutManifest("sick", sick.Name, []string{"dev-watch"}, false)), "roll out the unhealthy rel-3")
	b.AwaitServing(sha)
	if o := watch.AwaitOutcome(a, "sick"); o != store.StateFailure {
		t.Fatalf("dev-watch: outcome of sick %q, want failure", o)
	}
	al := a.AwaitAlert("dev-watch", "failed", "", "open", isOpen)
	if !strings.Contains(al.Evidence, "rel-3") {
		t.Errorf("failed deployment alert %+v does not name rel-3", al)
	}
}

// hookReceiver is an HTTPS webhook receiver that checks each delivery's
// HMAC signature and counts distinct deliveries by "event device check
// key".
type hookReceiver struct {
	url, caFile   string
	secret        string
	mu            sync.Mutex
	byKey         map[string]map[string]bool // key → delivery IDs
	posts         map[string]int             // key → requests
	badSignatures atomic.Int64
}

func startHookReceiver(t *testing.T, secret string) *hookReceiver {
	t.Helper()
	h := &hookReceiver{secret: secret, byKey: map[string]map[string]bool{}, posts: map[string]int{}}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		mac := hmac.New(sha256.New, []byte(h.secret))
		fmt.Fprintf(mac, "%s\n%s\n", r.Header.Get("X-Gitfleet-Timestamp"), r.Header.Get("X-Gitfleet-Delivery"))
		mac.Write(body)
		if !hmac.Equal([]byte("sha256="+hex.EncodeToString(mac.Sum(nil))), []byte(r.Header.Get("X-Gitfleet-Signature"))) {
			h.badSignatures.Add(1)
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		var ev struct {
			ID, Event, Device, Check string
			Details                  map[string]string
		}
		if err := json.Unmarshal(body, &ev); err != nil || ev.ID != r.Header.Get("X-Gitfleet-Delivery") {
			http.Error(w, "bad body", http.StatusBadRequest)
			return
		}
		key := ev.Event + " " + ev.Device + " " + ev.Check + " " + ev.Details["key"]
		h.mu.Lock()
		if h.byKey[key] == nil {
			h.byKey[key] = map[string]bool{}
		}
		h.byKey[key][ev.ID] = true
		h.posts[key]++
		h.mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(srv.Close)
	h.url = srv.URL + "/hook"
	h.caFile = filepath.Join(t.TempDir(), "hook-ca.pem")
	writeFile(t, h.caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644)
	return h
}

// await waits until key has n distinct deliveries and checks that each
// came once: the receiver accepts every request, so nothing is retried,
// and a second replica announcing the same alert (same delivery ID)
// would show as a second request.
func (h *hookReceiver) await(t *testing.T, key string, n int) {
	t.Helper()
	count := func() int {
		h.mu.Lock()
		defer h.mu.Unlock()
		return len(h.byKey[key])
	}
	deadline := time.Now().Add(Deadline)
	for count() < n {
		if time.Now().After(deadline) {
			h.mu.Lock()
			var keys []string
			for k, ids := range h.byKey {
				keys = append(keys, fmt.Sprintf("%s ×%d", k, len(ids)))
			}
			h.mu.Unlock()
			t.Fatalf("webhook: %d deliveries of %q within %s, want %d; got:\n%s", count(), key, Deadline, n, strings.Join(keys, "\n"))
		}
		time.Sleep(50 * time.Millisecond)
	}
	h.mu.Lock()
	posts := h.posts[key]
	h.mu.Unlock()
	if got := count(); got != n || posts != n {
		t.Errorf("webhook: %d distinct deliveries of %q in %d requests, want %d", got, key, posts, n)
	}
}
