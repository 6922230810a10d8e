package monitor

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// clock is the injected clock of the tests.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type harness struct {
	t     *testing.T
	m     *Monitor
	clock *clock
	opts  Options
	taken int // events already looked at
}

func newHarness(t *testing.T, opts Options, checks ...Check) *harness {
	t.Helper()
	h := &harness{t: t, clock: newClock()}
	if opts.Now == nil {
		opts.Now = h.clock.Now
	}
	h.opts = opts
	h.start(checks...)
	return h
}

func (h *harness) start(checks ...Check) {
	h.t.Helper()
	m, err := New(h.opts)
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { m.Close() })
	if err := m.SetChecks(checks); err != nil {
		h.t.Fatal(err)
	}
	h.m = m
	h.taken = 0
	if q, _ := m.Pending(); len(q) > 0 {
		h.taken = len(q)
	}
}

// step advances the clock by d and runs due checks; it returns the events
// emitted by this step.
func (h *harness) step(d time.Duration) []Event {
	h.t.Helper()
	h.clock.Add(d)
	if _, err := h.m.Step(context.Background()); err != nil {
		h.t.Fatal(err)
	}
	q, _ := h.m.Pending()
	if h.taken > len(q) {
		h.taken = 0
	}
	evs := q[h.taken:]
	h.taken = len(q)
	return evs
}

// only keeps the events of one kind whose key satisfies keep.
func only(evs []Event, kind EventKind, keep func(string) bool) []Event {
	var out []Event
	for _, e := range evs {
		if e.Kind == kind && (keep == nil || keep(e.Key)) {
			out = append(out, e)
		}
	}
	return out
}

func wantOne(t *testing.T, evs []Event, kind EventKind, keep func(string) bool, evidence ...string) Event {
	t.Helper()
	got := only(evs, kind, keep)
	if len(got) != 1 {
		t.Fatalf("want exactly one %s event, got %d in %+v", kind, len(got), evs)
	}
	for _, s := range evidence {
		if !strings.Contains(got[0].Evidence, s) {
			t.Errorf("%s evidence %q lacks %q", kind, got[0].Evidence, s)
		}
	}
	return got[0]
}

func wantNone(t *testing.T, evs []Event, kind EventKind, keep func(string) bool) {
	t.Helper()
	if got := only(evs, kind, keep); len(got) != 0 {
		t.Fatalf("want no %s event, got %+v", kind, got)
	}
}

func key(k string) func(string) bool { return func(s string) bool { return s == k } }

// startNamed starts a copy of sleep under a name no other process has, and
// returns the command and the name.
func startNamed(t *testing.T, dir, name string, env ...string) *exec.Cmd {
	t.Helper()
	bin := filepath.Join(dir, name)
	if _, err := os.Stat(bin); err != nil {
		src, err := exec.LookPath("sleep")
		if err != nil {
			t.Skip("no sleep binary")
		}
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(bin, b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(bin, "1000")
	cmd.Env = append(os.Environ(), env...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	// Wait (with a deadline) until the kernel shows the new name.
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(filepath.Join("/proc", itoa(cmd.Process.Pid), "comm"))
		if strings.TrimSpace(string(b)) == name || time.Now().After(deadline) {
			return cmd
		}
		time.Sleep(5 * time.Millisecond)
	}
}
