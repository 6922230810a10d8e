package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gitfleet/gitfleet/device/devconfig"
)

// fakeConfigController stands in for the controller's device API: device
// authentication and the three configuration endpoints, on 127.0.0.1.
type fakeConfigController struct {
	srv *httptest.Server

	mu     sync.Mutex
	token  string
	auths  int
	values map[string]string
	// badDigest serves a digest that is not the values'.
	badDigest bool
	// absent answers 404 on every configuration endpoint (a Mender server).
	absent bool
	// down answers 503 on the status and report endpoints.
	down        bool
	gets        int
	notModified int
	statuses    []devconfig.Status
	reports     []map[string]string
}

func newFakeConfigController(t *testing.T, values map[string]string) *fakeConfigController {
	c := &fakeConfigController{values: values}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/devices/v1/authentication/auth_requests", func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.auths++
		c.token = fmt.Sprintf("tok%d", c.auths)
		w.Write([]byte(c.token))
	})
	// check answers the request itself when it must not go on.
	check := func(w http.ResponseWriter, r *http.Request) bool {
		if r.Header.Get("Authorization") != "Bearer "+c.token {
			http.Error(w, `{"error":"unauthorized"}`, http.StatusUnauthorized)
			return false
		}
		if c.absent {
			http.NotFound(w, r)
			return false
		}
		return true
	}
	mux.HandleFunc("GET "+devconfig.ConfigPath, func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		defer c.mu.Unlock()
		if !check(w, r) {
			return
		}
		c.gets++
		cfg := devconfig.Configuration{Digest: devconfig.Digest(c.values), Values: c.values}
		if c.badDigest {
			cfg.Digest = devconfig.Digest(map[string]string{"other": "values"})
		}
		etag := `"` + cfg.Digest + `"`
		if r.Header.Get("If-None-Match") == etag {
			c.notModified++
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Header().Set("ETag", etag)
		json.NewEncoder(w).Encode(cfg)
	})
	mux.HandleFunc("PUT "+devconfig.StatusPath, func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		defer c.mu.Unlock()
		if !check(w, r) {
			return
		}
		if c.down {
			http.Error(w, `{"error":"unavailable"}`, http.StatusServiceUnavailable)
			return
		}
		var st devconfig.Status
		if err := json.NewDecoder(r.Body).Decode(&st); err != nil {
			http.Error(w, `{"error":"bad status"}`, http.StatusBadRequest)
			return
		}
		c.statuses = append(c.statuses, st)
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("PUT "+devconfig.ReportPath, func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		defer c.mu.Unlock()
		if !check(w, r) {
			return
		}
		if c.down {
			http.Error(w, `{"error":"unavailable"}`, http.StatusServiceUnavailable)
			return
		}
		var v map[string]string
		if err := json.NewDecoder(r.Body).Decode(&v); err != nil {
			http.Error(w, `{"error":"bad report"}`, http.StatusBadRequest)
			return
		}
		c.reports = append(c.reports, v)
		w.WriteHeader(http.StatusNoContent)
	})
	c.srv = httptest.NewServer(mux)
	t.Cleanup(c.srv.Close)
	return c
}

func (c *fakeConfigController) set(f func(c *fakeConfigController)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	f(c)
}

func (c *fakeConfigController) got() (statuses []devconfig.Status, reports []map[string]string, gets, notModified int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.statuses), slices.Clone(c.reports), c.gets, c.notModified
}

func (c *fakeConfigController) client(t *testing.T) *Client {
	return testClient(t, c.srv, "02:00:00:00:00:02")
}

// lockedBuffer is a log destination shared by goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// secretValue is a configuration value no log line may show.
const secretValue = "s3cret-wifi-passphrase"

// cfgEnv is one device's configuration side: its data and scripts
// directories, a fake controller, a clock and a boot ID.
type cfgEnv struct {
	t       *testing.T
	dir     string
	data    string
	scripts string
	ran     string // the scripts append "NAME ARG CONTENT" lines here
	ctl     *fakeConfigController
	api     *Client
	clock   *testClock
	logs    *lockedBuffer
	boot    string
	opts    func(*ConfigApplierOptions)
}

func newCfgEnv(t *testing.T, values map[string]string) *cfgEnv {
	t.Helper()
	dir := t.TempDir()
	e := &cfgEnv{t: t, dir: dir, data: filepath.Join(dir, "data"), scripts: filepath.Join(dir, "apply-device-config.d"),
		ran: filepath.Join(dir, "ran.log"), ctl: newFakeConfigController(t, values),
		clock: &testClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}, logs: &lockedBuffer{}, boot: "boot-1"}
	e.api = e.ctl.client(t)
	if err := os.MkdirAll(e.scripts, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if strings.Contains(e.logs.String(), secretValue) {
			t.Errorf("a configuration value appears in the agent's log:\n%s", e.logs.String())
		}
	})
	return e
}

// applier is one agent process's ConfigApplier.
func (e *cfgEnv) applier() *ConfigApplier {
	e.t.Helper()
	opts := ConfigApplierOptions{
		DataDir:    e.data,
		ScriptsDir: e.scripts,
		Now:        e.clock.Now,
		BootID:     func() string { return e.boot },
		Logger:     slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if e.opts != nil {
		e.opts(&opts)
	}
	ca, err := NewConfigApplier(opts)
	if err != nil {
		e.t.Fatal(err)
	}
	return ca
}

func (e *cfgEnv) path() string { return filepath.Join(e.data, "device-config.json") }

// script installs an apply script (a shell script body) as name.
func (e *cfgEnv) script(name, body string) {
	e.t.Helper()
	if err := os.WriteFile(filepath.Join(e.scripts, name), []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		e.t.Fatal(err)
	}
}

// recorder is a script body that records its name, argument and the
// content of the file it was given.
func (e *cfgEnv) recorder() string {
	return fmt.Sprintf("printf '%%s %%s %%s\\n' \"$(basename \"$0\")\" \"$1\" \"$(cat \"$1\")\" >> %s\n", e.ran)
}

// runs returns the lines the recorder scripts wrote.
func (e *cfgEnv) runs() []string {
	e.t.Helper()
	b, err := os.ReadFile(e.ran)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		e.t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
}

func (e *cfgEnv) poll(ca *ConfigApplier) {
	e.t.Helper()
	if err := ca.Poll(context.Background(), e.api); err != nil {
		e.t.Fatalf("Poll: %v", err)
	}
}

func (e *cfgEnv) fileContent() string {
	e.t.Helper()
	b, err := os.ReadFile(e.path())
	if err != nil {
		e.t.Fatal(err)
	}
	return string(b)
}

func states(sts []devconfig.Status) []string {
	var out []string
	for _, s := range sts {
		out = append(out, s.State)
	}
	return out
}

var wifi = map[string]string{"wifi_ssid": "office", "wifi_password": secretValue}

func TestDeviceConfigAppliedInLexicalOrder(t *testing.T) {
	e := newCfgEnv(t, wifi)
	for _, name := range []string{"a-third", "10-first", "2-second"} {
		e.script(name, e.recorder())
	}
	// Not run: not executable, hidden, a directory.
	if err := os.WriteFile(filepath.Join(e.scripts, "README"), []byte("#!/bin/sh\necho README >> "+e.ran+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	e.script(".hidden", "echo hidden >> "+e.ran+"\n")
	if err := os.Mkdir(filepath.Join(e.scripts, "0-dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	ca := e.applier()
	e.poll(ca)

	digest := devconfig.Digest(wifi)
	content := string(devconfig.Encode(wifi))
	want := []string{
		"10-first " + e.path() + " " + content,
		"2-second " + e.path() + " " + content,
		"a-third " + e.path() + " " + content,
	}
	if got := e.runs(); !slices.Equal(got, want) {
		t.Fatalf("scripts ran:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	fi, err := os.Stat(e.path())
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("configuration file mode %v, want 0600", fi.Mode().Perm())
	}
	if got := e.fileContent(); got != content {
		t.Errorf("file holds %q, want %q", got, content)
	}
	sts, reports, _, _ := e.ctl.got()
	if len(sts) != 1 || sts[0].State != devconfig.Applied || sts[0].Digest != digest || sts[0].Time.IsZero() {
		t.Fatalf("statuses %+v, want one applied with digest %s", sts, digest)
	}
	if len(reports) != 1 || !equalMaps(reports[0], wifi) {
		t.Fatalf("reports %v, want the applied values once", reports)
	}
	if s := ca.State(); s.Applied != digest || s.Desired != digest || s.Failed != nil || s.Pending != 0 {
		t.Errorf("state %+v", s)
	}

	// Unchanged: 304, nothing runs, nothing is reported.
	for range 3 {
		e.poll(ca)
	}
	sts, reports, gets, notModified := e.ctl.got()
	if gets != 4 || notModified != 3 {
		t.Errorf("%d fetches, %d answered 304; want 4, 3", gets, notModified)
	}
	if len(e.runs()) != 3 || len(sts) != 1 || len(reports) != 1 {
		t.Errorf("after unchanged polls: %d script runs, %d statuses, %d reports; want 3, 1, 1", len(e.runs()), len(sts), len(reports))
	}

	// A change reaches the device with the next poll.
	changed := map[string]string{"wifi_ssid": "lab", "wifi_password": secretValue, "timezone": "UTC"}
	e.ctl.set(func(c *fakeConfigController) { c.values = changed })
	e.poll(ca)
	if got := e.runs(); len(got) != 6 || !strings.HasSuffix(got[5], string(devconfig.Encode(changed))) {
		t.Errorf("after the change the scripts ran %q", got)
	}
	sts, reports, _, _ = e.ctl.got()
	if len(sts) != 2 || sts[1].Digest != devconfig.Digest(changed) || len(reports) != 2 || !equalMaps(reports[1], changed) {
		t.Errorf("after the change: statuses %+v, reports %d", sts, len(reports))
	}
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func TestDeviceConfigFailureReportedAndRetried(t *testing.T) {
	e := newCfgEnv(t, wifi)
	e.script("10-ok", e.recorder())
	// Far more output than a status keeps; its last line must be there.
	e.script("20-fail", `i=0
while [ $i -lt 800 ]; do echo "noise line $i"; i=$((i+1)); done
echo "cannot join the network: bad passphrase length" >&2
exit 3
`)
	e.script("30-never", e.recorder())
	ca := e.applier()
	e.poll(ca)

	if got := e.runs(); len(got) != 1 || !strings.HasPrefix(got[0], "10-ok ") {
		t.Fatalf("scripts ran %q; want 10-ok only (30-never after the failure must not run)", got)
	}
	sts, reports, _, _ := e.ctl.got()
	if len(sts) != 1 {
		t.Fatalf("statuses %+v, want one", sts)
	}
	st := sts[0]
	if st.State != devconfig.Failed || st.Script != "20-fail" || st.ExitCode != 3 || st.Digest != devconfig.Digest(wifi) {
		t.Errorf("status %+v, want failed by 20-fail with exit code 3", st)
	}
	if len(st.Output) > devconfig.MaxOutput || !strings.HasSuffix(st.Output, "cannot join the network: bad passphrase length\n") ||
		!strings.Contains(st.Output, "noise line 799") || strings.Contains(st.Output, "noise line 0\n") || !utf8.ValidString(st.Output) {
		t.Errorf("output (%d bytes) is not the tail of the script's output:\n%s", len(st.Output), st.Output)
	}
	if len(reports) != 0 {
		t.Errorf("a failed configuration was reported as the device's: %v", reports)
	}
	if s := ca.State(); s.Applied != "" || s.Failed == nil || s.Failed.Script != "20-fail" {
		t.Errorf("state %+v, want nothing applied and the failure", s)
	}

	// Not again at every poll, nor after a restart.
	e.clock.Add(time.Minute)
	e.poll(ca)
	e.poll(e.applier())
	if n := len(e.runs()); n != 1 {
		t.Errorf("a failed configuration was applied again at the next poll (%d runs)", n)
	}
	// After the retry interval, yes.
	e.clock.Add(DefaultConfigRetryInterval)
	e.poll(ca)
	if n := len(e.runs()); n != 2 {
		t.Errorf("not tried again after the retry interval (%d runs)", n)
	}
	// After a reboot, once.
	e.boot = "boot-2"
	ca = e.applier()
	ca.Reconcile(context.Background())
	e.poll(ca)
	e.poll(ca)
	if n := len(e.runs()); n != 3 {
		t.Errorf("after a reboot: %d runs, want 3 (one more)", n)
	}
	sts, _, _, _ = e.ctl.got()
	if got := states(sts); !slices.Equal(got, []string{"failed", "failed", "failed"}) {
		t.Errorf("statuses %v", got)
	}

	// The script is fixed; a new configuration applies at once.
	e.script("20-fail", "exit 0\n")
	fixed := map[string]string{"wifi_ssid": "office", "wifi_password": secretValue + "-2"}
	e.ctl.set(func(c *fakeConfigController) { c.values = fixed })
	e.poll(ca)
	if got := e.runs(); len(got) != 5 || !strings.HasPrefix(got[4], "30-never ") {
		t.Errorf("after the fix the scripts ran %q", got)
	}
	sts, reports, _, _ = e.ctl.got()
	if last := sts[len(sts)-1]; last.State != devconfig.Applied || last.Digest != devconfig.Digest(fixed) || len(reports) != 1 {
		t.Errorf("after the fix: last status %+v, %d reports", last, len(reports))
	}
	if s := ca.State(); s.Failed != nil || s.Applied != devconfig.Digest(fixed) {
		t.Errorf("state %+v", s)
	}
}

// processGone reports whether pid has exited (a zombie counts).
func processGone(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && len(s) > i+2 && s[i+2] == 'Z'
}

func TestDeviceConfigScriptTimeout(t *testing.T) {
	e := newCfgEnv(t, wifi)
	pidFile := filepath.Join(e.dir, "child.pid")
	// The script leaves a child behind: the whole process group goes.
	e.script("10-hang", fmt.Sprintf("sleep 300 &\necho $! > %s\necho waiting for the network\nsleep 300\n", pidFile))
	e.script("20-after", e.recorder())
	e.opts = func(o *ConfigApplierOptions) { o.ScriptTimeout = 300 * time.Millisecond }
	ca := e.applier()
	e.poll(ca)

	sts, _, _, _ := e.ctl.got()
	if len(sts) != 1 || sts[0].State != devconfig.Failed || sts[0].Script != "10-hang" || sts[0].ExitCode != ConfigScriptTimedOut {
		t.Fatalf("statuses %+v, want 10-hang failed with exit code %d", sts, ConfigScriptTimedOut)
	}
	if out := sts[0].Output; !strings.Contains(out, "waiting for the network") || !strings.Contains(out, "timed out after 300ms") {
		t.Errorf("output %q: want the script's output and \"timed out after\"", out)
	}
	if len(e.runs()) != 0 {
		t.Errorf("a script after the one that timed out ran")
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for !processGone(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("the script's child %d still runs after its process group was killed", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// An apply stopped with the agent (ctx ends) records nothing but that the
// configuration is no longer known to be applied: the next start applies
// it again.
func TestDeviceConfigInterruptedApplyIsRedone(t *testing.T) {
	e := newCfgEnv(t, wifi)
	e.script("10-record", e.recorder())
	ca := e.applier()
	e.poll(ca)
	// A new configuration; its script hangs and the agent is stopped.
	started := filepath.Join(e.dir, "started")
	e.script("20-hang", fmt.Sprintf("touch %s\nsleep 300\n", started))
	next := map[string]string{"wifi_ssid": "lab"}
	e.ctl.set(func(c *fakeConfigController) { c.values = next })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ca.Poll(ctx, e.api) }()
	deadline := time.Now().Add(20 * time.Second)
	for !fileExists(started) {
		if time.Now().After(deadline) {
			t.Fatal("the hanging script did not start within 20 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Poll = %v, want context.Canceled", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Poll did not return within 30 s of its context ending")
	}
	if s := ca.State(); s.Applied != "" || s.Failed != nil {
		t.Errorf("state after the stop %+v: want nothing applied and no failure", s)
	}
	sts, _, _, _ := e.ctl.got()
	if len(sts) != 1 {
		t.Errorf("statuses %+v: the interrupted apply must report nothing", sts)
	}
	// The next start (the script fixed) applies it again.
	e.script("20-hang", "exit 0\n")
	ca = e.applier()
	ca.Reconcile(context.Background())
	if s := ca.State(); s.Applied != devconfig.Digest(next) {
		t.Errorf("after the restart: state %+v", s)
	}
	if n := len(e.runs()); n != 3 {
		t.Errorf("10-record ran %d times, want 3", n)
	}
}

func TestDeviceConfigRestartAndReboot(t *testing.T) {
	e := newCfgEnv(t, wifi)
	e.script("10-record", e.recorder())
	e.poll(e.applier())
	if n := len(e.runs()); n != 1 {
		t.Fatalf("%d runs", n)
	}
	// A restart (and a reboot that keeps the file): nothing runs again,
	// the fetch is conditional.
	e.boot = "boot-2"
	ca := e.applier()
	ca.Reconcile(context.Background())
	e.poll(ca)
	sts, reports, gets, notModified := e.ctl.got()
	if n := len(e.runs()); n != 1 || gets != 2 || notModified != 1 || len(sts) != 1 || len(reports) != 1 {
		t.Errorf("after a restart: %d runs, %d fetches (%d answered 304), %d statuses, %d reports; want 1, 2 (1), 1, 1",
			n, gets, notModified, len(sts), len(reports))
	}

	// A reboot into a root file system that does not keep the file,
	// before the controller can be reached: applied again from the state.
	if err := os.Remove(e.path()); err != nil {
		t.Fatal(err)
	}
	e.boot = "boot-3"
	ca = e.applier()
	ca.Reconcile(context.Background())
	if n := len(e.runs()); n != 2 {
		t.Errorf("the missing file was not applied again (%d runs)", n)
	}
	if got := e.fileContent(); got != string(devconfig.Encode(wifi)) {
		t.Errorf("file %q after the re-apply", got)
	}
	if s := ca.State(); s.Pending != 2 || s.Applied != devconfig.Digest(wifi) {
		t.Errorf("state %+v: want applied and its status and report pending", s)
	}
	e.poll(ca)
	sts, reports, _, notModified = e.ctl.got()
	if len(sts) != 2 || sts[1].State != devconfig.Applied || len(reports) != 2 || notModified != 2 {
		t.Errorf("after the re-apply: statuses %+v, %d reports, %d answered 304", sts, len(reports), notModified)
	}
}

func TestDeviceConfigDriftReportedOnce(t *testing.T) {
	e := newCfgEnv(t, wifi)
	e.script("10-record", e.recorder())
	ca := e.applier()
	e.poll(ca)
	digest := devconfig.Digest(wifi)
	edit := func(s string) {
		t.Helper()
		if err := os.WriteFile(e.path(), []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	edited := `{"wifi_ssid":"home"}`
	edit(edited)
	e.poll(ca)
	e.poll(ca)
	e.poll(e.applier()) // a restart does not report it again
	sts, _, _, _ := e.ctl.got()
	if got := states(sts); !slices.Equal(got, []string{"applied", "drifted"}) {
		t.Fatalf("statuses %v, want applied then drifted once", got)
	}
	if d := sts[1]; d.Digest != digest || d.FileDigest != devconfig.DigestOf([]byte(edited)) {
		t.Errorf("drift status %+v, want digest %s and the file's digest", d, digest)
	}
	if got := e.fileContent(); got != edited {
		t.Errorf("the drifted file was overwritten: %q", got)
	}
	if n := len(e.runs()); n != 1 {
		t.Errorf("drift ran the scripts (%d runs)", n)
	}
	if s := ca.State(); s.Drift != devconfig.DigestOf([]byte(edited)) || s.Applied != digest {
		t.Errorf("state %+v", s)
	}
	// Another edit is another drift.
	edit(`{"wifi_ssid":"home2"}`)
	e.poll(ca)
	// Put back by hand: in sync again, said once.
	edit(string(devconfig.Encode(wifi)))
	e.poll(ca)
	e.poll(ca)
	sts, _, _, _ = e.ctl.got()
	if got := states(sts); !slices.Equal(got, []string{"applied", "drifted", "drifted", "applied"}) {
		t.Errorf("statuses %v", got)
	}
	// Drifted again, then the desired configuration changes: it is
	// written and applied.
	edit(edited)
	e.poll(ca)
	next := map[string]string{"wifi_ssid": "lab"}
	e.ctl.set(func(c *fakeConfigController) { c.values = next })
	e.poll(ca)
	if got := e.fileContent(); got != string(devconfig.Encode(next)) {
		t.Errorf("file %q after the change", got)
	}
	sts, _, _, _ = e.ctl.got()
	if got := states(sts); !slices.Equal(got, []string{"applied", "drifted", "drifted", "applied", "drifted", "applied"}) {
		t.Errorf("statuses %v", got)
	}
	if s := ca.State(); s.Drift != "" || s.Applied != devconfig.Digest(next) {
		t.Errorf("state %+v", s)
	}
}

func TestDeviceConfigRepairDrift(t *testing.T) {
	e := newCfgEnv(t, wifi)
	e.script("10-record", e.recorder())
	e.opts = func(o *ConfigApplierOptions) { o.RepairDrift = true }
	ca := e.applier()
	e.poll(ca)
	if err := os.WriteFile(e.path(), []byte(`{}`), 0o644); err != nil {
		t.Fatal(err)
	}
	e.poll(ca)
	sts, _, _, _ := e.ctl.got()
	if got := states(sts); !slices.Equal(got, []string{"applied", "drifted", "applied"}) {
		t.Errorf("statuses %v, want applied, drifted, applied", got)
	}
	if got := e.fileContent(); got != string(devconfig.Encode(wifi)) {
		t.Errorf("file %q, want the configuration put back", got)
	}
	if fi, err := os.Stat(e.path()); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("repaired file: %v, %v", fi, err)
	}
	if n := len(e.runs()); n != 2 {
		t.Errorf("%d runs, want 2", n)
	}
}

// A server that serves no configuration (a Mender server): no error, one
// log line, what is applied stays.
func TestDeviceConfigServerWithoutConfiguration(t *testing.T) {
	e := newCfgEnv(t, wifi)
	e.script("10-record", e.recorder())
	ca := e.applier()
	e.poll(ca)
	e.ctl.set(func(c *fakeConfigController) { c.absent = true })
	// Drift while the server is absent is recorded but not sent.
	if err := os.WriteFile(e.path(), []byte(`{}`), 0o600); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		e.poll(ca)
	}
	if n := strings.Count(e.logs.String(), "serves no device configuration"); n != 1 {
		t.Errorf("the absent API was logged %d times, want once", n)
	}
	if s := ca.State(); !s.ServerAbsent || s.Applied != devconfig.Digest(wifi) || s.Pending != 1 {
		t.Errorf("state %+v: want the server absent, the configuration still applied, the drift pending", s)
	}
	sts, _, _, _ := e.ctl.got()
	if len(sts) != 1 || len(e.runs()) != 1 {
		t.Errorf("%d statuses, %d runs while the server serves no configuration", len(sts), len(e.runs()))
	}

	// A device that never had a configuration: nothing is written.
	e2 := newCfgEnv(t, wifi)
	e2.ctl.set(func(c *fakeConfigController) { c.absent = true })
	ca2 := e2.applier()
	e2.poll(ca2)
	if fileExists(e2.path()) || !ca2.State().ServerAbsent {
		t.Errorf("a configuration file was written without a configuration API")
	}
}

func TestDeviceConfigRefusesBadDigest(t *testing.T) {
	e := newCfgEnv(t, wifi)
	e.script("10-record", e.recorder())
	e.ctl.set(func(c *fakeConfigController) { c.badDigest = true })
	err := e.applier().Poll(context.Background(), e.api)
	if !errors.Is(err, ErrRejected) || !strings.Contains(err.Error(), "not the digest of the values") {
		t.Errorf("Poll = %v, want a refused configuration", err)
	}
	if strings.Contains(err.Error(), secretValue) {
		t.Errorf("the error shows a value: %v", err)
	}
	if fileExists(e.path()) || len(e.runs()) != 0 {
		t.Errorf("a configuration with a wrong digest was applied")
	}
}

// Statuses and the report wait while the controller cannot take them.
func TestDeviceConfigReportsRetried(t *testing.T) {
	e := newCfgEnv(t, wifi)
	e.script("10-record", e.recorder())
	e.ctl.set(func(c *fakeConfigController) { c.down = true })
	ca := e.applier()
	if err := ca.Poll(context.Background(), e.api); !errors.Is(err, ErrServer) {
		t.Fatalf("Poll = %v, want ErrServer", err)
	}
	if s := ca.State(); s.Pending != 2 || s.Applied != devconfig.Digest(wifi) {
		t.Fatalf("state %+v: want applied, status and report pending", s)
	}
	e.ctl.set(func(c *fakeConfigController) { c.down = false })
	e.poll(e.applier()) // after a restart too
	sts, reports, _, _ := e.ctl.got()
	if len(sts) != 1 || sts[0].State != devconfig.Applied || len(reports) != 1 {
		t.Errorf("statuses %+v, %d reports after the controller came back", sts, len(reports))
	}
	if n := len(e.runs()); n != 1 {
		t.Errorf("%d runs", n)
	}
}

func TestFitOutput(t *testing.T) {
	long := strings.Repeat("é", devconfig.MaxOutput) // 2 bytes a rune
	cases := []struct {
		name, out, note string
		wantSuffix      string
	}{
		{"short", "hello\n", "", "hello\n"},
		{"long runes", long + "end", "", "éend"},
		{"with note", long, "\n[timed out]", "é\n[timed out]"},
		{"invalid utf-8", "a\xffb", "", "a\uFFFDb"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := fitOutput([]byte(tc.out), tc.note)
			if len(got) > devconfig.MaxOutput || !utf8.ValidString(got) || !strings.HasSuffix(got, tc.wantSuffix) {
				t.Errorf("fitOutput = %d bytes, valid %v, suffix %q", len(got), utf8.ValidString(got), got[max(0, len(got)-20):])
			}
		})
	}
	var tb tailBuffer
	tb.max = 8
	for _, s := range []string{"0123", "4567", "89"} {
		tb.Write([]byte(s))
	}
	if got := string(tb.bytes()); got != "…23456789" {
		t.Errorf("tail %q", got)
	}
}

// The daemon fetches and applies the configuration with its update polls;
// DeviceConfig false turns that off.
func TestDeviceConfigDaemon(t *testing.T) {
	for _, enabled := range []bool{true, false} {
		t.Run(fmt.Sprintf("enabled=%v", enabled), func(t *testing.T) {
			ce := newCfgEnv(t, wifi)
			ce.script("10-record", ce.recorder())
			e := newTestEnv(t, "release-1")
			e.cfg.UpdatePollIntervalSeconds = 1
			e.cfg.RetryPollIntervalSeconds = 1
			e.cfg.InventoryPollIntervalSeconds = 3600
			off := false
			e.cfg.Monitor = &off
			e.cfg.DeviceConfigScriptsDir = ce.scripts
			if !enabled {
				e.cfg.DeviceConfig = &off
			}
			e.opts = func(o *Options) {
				o.ConfigAPI = ce.api
				o.Sleep = sleepCtx
				o.Logger = slog.New(slog.NewTextHandler(ce.logs, nil))
			}
			a, ctx := e.agent()
			ctx, cancel := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- a.Daemon(ctx) }()
			defer func() {
				cancel()
				if err := <-done; err != nil {
					t.Errorf("Daemon = %v", err)
				}
			}()
			path := filepath.Join(e.cfg.DataDir, "device-config.json")
			deadline := time.Now().Add(30 * time.Second)
			for {
				if time.Now().After(deadline) {
					t.Fatal("the daemon did not poll twice within 30 s")
				}
				sts, _, gets, _ := ce.ctl.got()
				if enabled && len(sts) > 0 && gets >= 2 {
					if sts[0].State != devconfig.Applied || !fileExists(path) || len(ce.runs()) != 1 {
						t.Errorf("statuses %+v, file %v, %d runs", sts, fileExists(path), len(ce.runs()))
					}
					return
				}
				if !enabled && e.server.nextCalls() >= 2 {
					// The first loop's configuration poll (had there been
					// one) came before the second update poll.
					if gets != 0 || fileExists(path) || len(ce.runs()) != 0 {
						t.Errorf("DeviceConfig false: %d fetches, file %v, %d runs", gets, fileExists(path), len(ce.runs()))
					}
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
}

// A configuration that fails, then a revert in Git: the device applies the
// old configuration again (its scripts ran with the failed one's file).
func TestDeviceConfigRevertAfterFailure(t *testing.T) {
	e := newCfgEnv(t, wifi)
	e.script("10-record", e.recorder())
	e.script("20-check", `grep -q broken "$1" && { echo "refusing a broken configuration"; exit 1; }; exit 0`+"\n")
	ca := e.applier()
	e.poll(ca)
	broken := map[string]string{"wifi_ssid": "broken"}
	e.ctl.set(func(c *fakeConfigController) { c.values = broken })
	e.poll(ca)
	if s := ca.State(); s.Applied != "" || s.Failed == nil || s.Failed.Digest != devconfig.Digest(broken) {
		t.Fatalf("state %+v after the broken configuration", s)
	}
	e.ctl.set(func(c *fakeConfigController) { c.values = wifi })
	e.poll(ca)
	if s := ca.State(); s.Applied != devconfig.Digest(wifi) || s.Failed != nil || s.Drift != "" {
		t.Errorf("state %+v after the revert", s)
	}
	if got := e.fileContent(); got != string(devconfig.Encode(wifi)) {
		t.Errorf("file %q after the revert", got)
	}
	sts, _, _, _ := e.ctl.got()
	if got := states(sts); !slices.Equal(got, []string{"applied", "failed", "applied"}) {
		t.Errorf("statuses %v", got)
	}
	if sts[1].Output != "refusing a broken configuration\n" || sts[1].Script != "20-check" || sts[1].ExitCode != 1 {
		t.Errorf("failure %+v", sts[1])
	}
	if n := len(e.runs()); n != 3 {
		t.Errorf("%d runs, want 3", n)
	}
}
