package monitor

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

func TestRestartRaisesNoSecondAlert(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "app")
	auth := filepath.Join(dir, "auth.log")
	os.WriteFile(f, []byte("v1"), 0o755)
	os.WriteFile(auth, nil, 0o640)
	checks := []Check{
		{Name: "files", FileChange: &FileChange{Paths: []string{f}}},
		{Name: "root", RootLogin: &RootLogin{Log: auth}},
	}
	h := newHarness(t, Options{StatePath: filepath.Join(dir, "state.json")}, checks...)
	h.step(0)
	os.WriteFile(f, []byte("v2"), 0o755)
	appendFile(t, auth, "Dec  2 05:00:01 dev sshd[78]: Accepted publickey for root from 203.0.113.7 port 4242 ssh2\n")
	evs := h.step(5 * time.Minute)
	wantOne(t, evs, Raised, key(f))
	wantOne(t, evs, Raised, key("match"))
	if err := h.m.Drain(context.Background(), 0, func(context.Context, []Event) error { return nil }); err != nil {
		t.Fatal(err)
	}

	// The agent restarts (or the device reboots): same state file.
	h.m.Close()
	h.start(checks...)
	for range 3 {
		evs := h.step(5 * time.Minute)
		if len(evs) != 0 {
			t.Fatalf("a restart emitted %+v", evs)
		}
	}
	// A shorter expiry keeps the state (the probe settings are unchanged):
	// the open alert expires.
	rootCheck := Check{Name: "root", RootLogin: &RootLogin{Log: auth}, Expiry: time.Minute}
	h.m.Close()
	h.start(checks[0], rootCheck)
	wantOne(t, h.step(5*time.Minute), Expired, key("match"))
	// The log is resumed where it was left, not from its end: a line written
	// while the agent was down is seen after the restart.
	h.m.Close()
	appendFile(t, auth, "Dec  2 05:10:00 dev sshd[79]: Failed password for root from 203.0.113.7 port 4243 ssh2\n")
	h.start(checks[0], rootCheck)
	wantOne(t, h.step(5*time.Minute), Raised, key("match"), "port 4243")
}

func TestStatePersistsQueueWhileOffline(t *testing.T) {
	dir := t.TempDir()
	opts := Options{StatePath: filepath.Join(dir, "state.json"), QueueSize: 3}
	h := newHarness(t, opts, Check{Name: "deploys", FailedDeployments: &FailedDeployments{}})
	for i := range 5 {
		h.m.ReportDeployment(DeploymentOutcome{ID: "d" + strconv.Itoa(i), Artifact: "os", Status: "failure"})
	}
	h.step(0)
	q, dropped := h.m.Pending()
	if len(q) != 3 || dropped != 2 || q[0].Key != "d2" || q[2].Key != "d4" {
		t.Fatalf("queue %+v dropped %d; want d2..d4 and 2 dropped", q, dropped)
	}
	offline := errors.New("connection refused")
	if err := h.m.Drain(context.Background(), 2, func(context.Context, []Event) error { return offline }); !errors.Is(err, offline) {
		t.Fatalf("Drain offline: %v", err)
	}
	// Restart while offline: the queue survives.
	h.m.Close()
	h.start(Check{Name: "deploys", FailedDeployments: &FailedDeployments{}})
	if q, dropped := h.m.Pending(); len(q) != 3 || dropped != 2 {
		t.Fatalf("after restart: queue %d dropped %d", len(q), dropped)
	}
	var batches [][]string
	err := h.m.Drain(context.Background(), 2, func(_ context.Context, evs []Event) error {
		var b []string
		for _, e := range evs {
			b = append(b, e.Key)
		}
		batches = append(batches, b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := [][]string{{"d2", "d3"}, {"d4"}}; !slices.EqualFunc(batches, want, slices.Equal) {
		t.Fatalf("batches %v, want %v", batches, want)
	}
	h.m.Close()
	h.start(Check{Name: "deploys", FailedDeployments: &FailedDeployments{}})
	if q, _ := h.m.Pending(); len(q) != 0 {
		t.Fatalf("drained events came back after a restart: %+v", q)
	}
}

func TestExpiryClearsAndStuckConditionStaysQuiet(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	k := key("tcp/" + strconv.Itoa(l.Addr().(*net.TCPAddr).Port))
	h := newHarness(t, Options{}, Check{Name: "ports", Expiry: time.Hour, ListeningPorts: &ListeningPorts{}})
	wantOne(t, h.step(0), Raised, k)
	wantNone(t, h.step(59*time.Minute), Expired, k)
	wantOne(t, h.step(time.Minute), Expired, k, "expired after 1h0m0s")
	for range 3 { // still listening: no new alert at every expiry
		wantNone(t, h.step(time.Hour), Raised, k)
	}
	l.Close()
	wantNone(t, h.step(time.Minute), Cleared, k) // already closed by expiry
	l2, err := net.Listen("tcp", l.Addr().String())
	if err != nil {
		t.Skipf("port taken meanwhile: %v", err)
	}
	defer l2.Close()
	wantOne(t, h.step(time.Minute), Raised, k) // it came back: a new alert
}

func TestFlappingDamped(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "conf")
	os.WriteFile(f, []byte("A"), 0o644)
	h := newHarness(t, Options{FlapThreshold: 3, FlapWindow: 30 * time.Minute},
		Check{Name: "files", FileChange: &FileChange{Paths: []string{f}}})
	h.step(0)
	var all []Event
	for i := 1; i <= 6; i++ { // B, A, B, A, B, A ... every 5 minutes
		os.WriteFile(f, []byte(map[bool]string{true: "B", false: "A"}[i%2 == 1]), 0o644)
		all = append(all, h.step(5*time.Minute)...)
	}
	os.WriteFile(f, []byte("B"), 0o644)
	all = append(all, h.step(5*time.Minute)...)
	if len(only(all, Raised, nil)) != 1 || len(only(all, Cleared, nil)) != 1 {
		t.Fatalf("flapping not damped: %+v", all)
	}
	wantOne(t, all, Flapping, key(f), "3 state changes")
	// Stable (changed) for the flap window: the current state is sent once.
	var later []Event
	for range 7 {
		later = append(later, h.step(5*time.Minute)...)
	}
	wantOne(t, later, Raised, key(f))
	wantNone(t, later, Cleared, nil)
}

func TestFollowerRotationTruncationBounds(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "app.log")
	os.WriteFile(p, []byte("old ALERT\n"), 0o644)
	env := &scanEnv{root: "/"}
	base := map[string]string{}
	var fl follower
	defer func() { fl.close() }()
	match := func(s string) bool { return strings.Contains(s, "ALERT") }
	read := func(want ...string) {
		t.Helper()
		got, err := fl.read(env, p, base, match)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("read %q, want %q", got, want)
		}
	}
	read() // history is not news
	appendFile(t, p, "a1 ALERT\nquiet\n")
	read("a1 ALERT")
	// Rotation: more lines land in the old file, it is renamed, a new one
	// starts.
	appendFile(t, p, "a2 ALERT\n")
	os.Rename(p, p+".1")
	appendFile(t, p+".1", "a2b ALERT\n") // the writer has not reopened yet
	os.WriteFile(p, []byte("a3 ALERT\n"), 0o644)
	read("a2 ALERT", "a2b ALERT", "a3 ALERT")
	// Renamed and not yet re-created: the old file is finished.
	appendFile(t, p, "a4 ALERT\n")
	os.Rename(p, p+".2")
	read("a4 ALERT")
	os.WriteFile(p, []byte("a5 ALERT\n"), 0o644)
	read("a5 ALERT")
	// Truncation (copytruncate).
	os.WriteFile(p, []byte("b ALERT\n"), 0o644)
	read("b ALERT")
	// A partial line waits for its newline.
	appendFile(t, p, "partial ALERT")
	read()
	appendFile(t, p, " done\n")
	read("partial ALERT done")
	// Over-long lines are cut at maxLine; the rest is skipped.
	appendFile(t, p, "long ALERT "+strings.Repeat("x", 3*maxLine)+" ALERT tail\nnext ALERT\n")
	got, _ := fl.read(env, p, base, match)
	if len(got) != 2 || len(got[0]) > maxLine || got[1] != "next ALERT" {
		t.Fatalf("long line: %d lines, first %d bytes, second %q", len(got), len(got[0]), got[len(got)-1])
	}
	// A new follower with the saved baseline resumes at the saved offset.
	appendFile(t, p, "while down ALERT\n")
	var fl2 follower
	defer fl2.close()
	got, _ = fl2.read(env, p, base, match)
	if !slices.Equal(got, []string{"while down ALERT"}) {
		t.Fatalf("resume: %q", got)
	}
}

// countingExec is a unit-test Exec: each start prints two lines and exits.
type countingExec struct {
	mu     sync.Mutex
	starts []time.Time
}

func (c *countingExec) Start(ctx context.Context, command string) (io.ReadCloser, func() error, error) {
	c.mu.Lock()
	c.starts = append(c.starts, time.Now())
	c.mu.Unlock()
	return io.NopCloser(strings.NewReader("noise\nALERT from " + command + "\n")), func() error { return errors.New("exit status 1") }, nil
}

func TestCommandRestartedWithBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ex := &countingExec{}
		m, err := New(Options{Exec: ex})
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		if err := m.SetChecks([]Check{{Name: "scan", Log: &Log{Path: "@trivy-watch", Pattern: "ALERT"}}}); err != nil {
			t.Fatal(err)
		}
		m.Step(context.Background())
		synctest.Wait()
		time.Sleep(5 * time.Second)
		m.Step(context.Background())
		q, _ := m.Pending()
		wantOne(t, q, Raised, nil, "ALERT from trivy-watch")
		wantOne(t, q, CheckError, nil, "command ended (exit status 1)")
		time.Sleep(20 * time.Second)
		m.Step(context.Background())
		q, _ = m.Pending()
		wantOne(t, q, CheckError, nil) // reported once
		ex.mu.Lock()
		defer ex.mu.Unlock()
		var gaps []time.Duration
		for i := 1; i < len(ex.starts); i++ {
			gaps = append(gaps, ex.starts[i].Sub(ex.starts[i-1]))
		}
		if want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second}; !slices.Equal(gaps, want) {
			t.Fatalf("restart gaps %v, want %v", gaps, want)
		}
	})
}

func TestCommandRealShell(t *testing.T) {
	h := newHarness(t, Options{}, Check{Name: "sweep", Log: &Log{Path: "@echo quiet; echo 'Sweep Scan CRITICAL: /usr/bin/x sum mismatch'; sleep 1000", Pattern: "Sweep Scan CRITICAL:"}})
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if evs := only(h.step(5*time.Second), Raised, nil); len(evs) == 1 {
			if !strings.Contains(evs[0].Evidence, "sum mismatch") {
				t.Fatalf("evidence %q", evs[0].Evidence)
			}
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("no alert from the command's output within 20s")
}

func TestValidateRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		c    Check
		want string
	}{
		{"no probe", Check{Name: "x"}, "exactly one probe, this one sets 0"},
		{"two probes", Check{Name: "x", Service: &Service{Name: "a"}, LibraryInjection: &LibraryInjection{}}, "sets 2"},
		{"bad pattern", Check{Name: "x", Log: &Log{Path: "/f", Pattern: "(("}}, "not an RE2"},
		{"relative log", Check{Name: "x", Log: &Log{Path: "var/log/app", Pattern: "x"}}, "must be an absolute file path"},
		{"relative watched file", Check{Name: "x", FileChange: &FileChange{Paths: []string{"/bin/sh", "bin/su"}}}, `path "bin/su" must be absolute`},
		{"bad port", Check{Name: "x", ListeningPorts: &ListeningPorts{Allow: []int{70000}}}, "outside 1-65535"},
		{"bad name", Check{Name: "../x", LibraryInjection: &LibraryInjection{}}, "name must be"},
		{"tiny interval", Check{Name: "x", Interval: time.Millisecond, LibraryInjection: &LibraryInjection{}}, "1s minimum"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.c.Validate()
			if err == nil || !errors.Is(err, ErrInvalidCheck) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate: %v, want %q", err, tc.want)
			}
		})
	}
}

func TestExpectedDigestsAfterUpdate(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	os.WriteFile(a, []byte("a1"), 0o755)
	os.WriteFile(b, []byte("b1"), 0o755)
	check := Check{Name: "files", FileChange: &FileChange{Paths: []string{a, b}}}
	h := newHarness(t, Options{StatePath: filepath.Join(dir, "state.json")}, check)
	wantNone(t, h.step(0), Raised, nil)
	// The update is announced, then the agent restarts into the new image
	// before the next scan: a gets new content, b the same content in a new
	// inode (the image rewrote it).
	if err := h.m.Expect(map[string]string{a: "sha256:" + sha256hex("a2"), b: sha256hex("b1")}); err != nil {
		t.Fatal(err)
	}
	h.m.Close()
	replace := func(p, content string) {
		tmp := p + ".new"
		os.WriteFile(tmp, []byte(content), 0o755)
		if err := os.Rename(tmp, p); err != nil {
			t.Fatal(err)
		}
	}
	replace(a, "a2")
	replace(b, "b1")
	h.start(check)
	wantNone(t, h.step(5*time.Minute), Raised, nil)
	// Anything else is still caught.
	replace(a, "a3-evil")
	wantOne(t, h.step(5*time.Minute), Raised, key(a), "sha256 changed from "+sha256hex("a2"))
}

func TestEveryFailedDeploymentsCheckSeesOutcomes(t *testing.T) {
	h := newHarness(t, Options{},
		Check{Name: "deploys", FailedDeployments: &FailedDeployments{}},
		Check{Name: "deploys-critical", Severity: Critical, FailedDeployments: &FailedDeployments{}})
	h.m.ReportDeployment(DeploymentOutcome{ID: "d9", Artifact: "os-9", Status: "failure"})
	evs := h.step(0)
	if got := only(evs, Raised, key("d9")); len(got) != 2 || got[0].Check == got[1].Check {
		t.Fatalf("want d9 raised by both checks, got %+v", evs)
	}
}

func TestRunStepsOnSchedule(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, err := New(Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		if err := m.SetChecks([]Check{{Name: "deploys", Interval: 10 * time.Second, FailedDeployments: &FailedDeployments{}}}); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- m.Run(ctx) }()
		synctest.Wait()
		m.ReportDeployment(DeploymentOutcome{ID: "d1", Artifact: "os", Status: "failure"})
		time.Sleep(9 * time.Second)
		synctest.Wait()
		if q, _ := m.Pending(); len(q) != 0 {
			t.Fatalf("scanned before its interval: %+v", q)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if q, _ := m.Pending(); len(q) != 1 || q[0].Key != "d1" {
			t.Fatalf("after the interval: %+v", q)
		}
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("Run: %v", err)
		}
	})
}

func TestFollowerReadsAtMostOneMiBPerScan(t *testing.T) {
	p := filepath.Join(t.TempDir(), "big.log")
	os.WriteFile(p, nil, 0o644)
	env := &scanEnv{root: "/"}
	base := map[string]string{}
	var fl follower
	defer fl.close()
	all := func(string) bool { return true }
	fl.read(env, p, base, all)
	line := strings.Repeat("y", 1023) + "\n"
	appendFile(t, p, strings.Repeat(line, 3*1024)) // 3 MiB
	total := 0
	for scans := 1; ; scans++ {
		got, err := fl.read(env, p, base, all)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) > 1024 {
			t.Fatalf("scan %d read %d lines (> 1 MiB)", scans, len(got))
		}
		if total += len(got); total == 3*1024 {
			if scans != 3 {
				t.Fatalf("3 MiB took %d scans, want 3", scans)
			}
			return
		}
		if scans > 10 {
			t.Fatalf("only %d of %d lines after 10 scans", total, 3*1024)
		}
	}
}

func TestChangedOrRemovedCheckClearsItsAlerts(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "app")
	os.WriteFile(f, []byte("v1"), 0o755)
	files := Check{Name: "files", FileChange: &FileChange{Paths: []string{f}}}
	h := newHarness(t, Options{StatePath: filepath.Join(dir, "state.json")}, files)
	h.step(0)
	os.WriteFile(f, []byte("v2"), 0o755)
	wantOne(t, h.step(5*time.Minute), Raised, key(f))

	// The check now watches another list: its old alert is cleared, and the
	// new settings start a new baseline.
	changed := Check{Name: "files", FileChange: &FileChange{Paths: []string{f, "/nonexistent"}}}
	if err := h.m.SetChecks([]Check{changed}); err != nil {
		t.Fatal(err)
	}
	evs := h.step(0)
	wantOne(t, evs, Cleared, key(f), "probe settings changed")
	wantNone(t, evs, Raised, nil)

	os.WriteFile(f, []byte("v3"), 0o755)
	wantOne(t, h.step(5*time.Minute), Raised, key(f))
	// Removed from Git, across a restart: cleared too.
	h.m.Close()
	h.start(changed)
	if err := h.m.SetChecks(nil); err != nil {
		t.Fatal(err)
	}
	wantOne(t, h.step(0), Cleared, key(f), "check was removed")
}
