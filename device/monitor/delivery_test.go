package monitor

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func seqs(evs []Event) []uint64 {
	out := make([]uint64, len(evs))
	for i, e := range evs {
		out[i] = e.Seq
	}
	return out
}

// queueOf fills a Monitor's queue with n failed-deployment alerts.
func queueOf(t *testing.T, opts Options, n int) *harness {
	t.Helper()
	h := newHarness(t, opts, Check{Name: "deploys", FailedDeployments: &FailedDeployments{}})
	for i := range n {
		h.m.ReportDeployment(DeploymentOutcome{ID: "d" + itoa(i), Status: "failure"})
	}
	if evs := h.step(time.Minute); len(evs) != n {
		t.Fatalf("%d events queued, want %d", len(evs), n)
	}
	return h
}

func TestAckDropsUpToSeqAndPersists(t *testing.T) {
	opts := Options{StatePath: filepath.Join(t.TempDir(), "state.json")}
	h := queueOf(t, opts, 4)
	select {
	case <-h.m.Queued():
	default:
		t.Fatal("Queued did not signal the queued events")
	}
	if err := h.m.Ack(2); err != nil {
		t.Fatal(err)
	}
	q, _ := h.m.Pending()
	if got := seqs(q); len(got) != 2 || got[0] != 3 || got[1] != 4 {
		t.Fatalf("queue after Ack(2) = %v, want [3 4]", got)
	}
	if err := h.m.Ack(1); err != nil { // already gone: nothing changes
		t.Fatal(err)
	}
	h.start(Check{Name: "deploys", FailedDeployments: &FailedDeployments{}})
	q, _ = h.m.Pending()
	if got := seqs(q); len(got) != 2 || got[0] != 3 {
		t.Fatalf("queue after a restart = %v, want [3 4]", got)
	}
}

func TestResequenceAfterLostState(t *testing.T) {
	opts := Options{StatePath: filepath.Join(t.TempDir(), "state.json")}
	h := queueOf(t, opts, 3)
	// Within the counter: an acknowledgement, not a lost state.
	if ok, err := h.m.Resequence(3); ok || err != nil {
		t.Fatalf("Resequence(3) = %v, %v; want no change", ok, err)
	}
	ok, err := h.m.Resequence(50)
	if !ok || err != nil {
		t.Fatalf("Resequence(50) = %v, %v", ok, err)
	}
	q, _ := h.m.Pending()
	if got := seqs(q); len(got) != 3 || got[0] != 51 || got[2] != 53 {
		t.Fatalf("queue = %v, want [51 52 53]", got)
	}
	h.m.ReportDeployment(DeploymentOutcome{ID: "next", Status: "failure"})
	evs := h.step(time.Minute)
	if len(evs) != 1 || evs[0].Seq != 54 {
		t.Fatalf("next event %+v, want seq 54", evs)
	}
	h.start(Check{Name: "deploys", FailedDeployments: &FailedDeployments{}})
	q, _ = h.m.Pending()
	if got := seqs(q); len(got) != 4 || got[3] != 54 {
		t.Fatalf("queue after a restart = %v", got)
	}
}

// Run sleeps until the next check is due; with no checks that is an hour.
// SetChecks must wake it so new checks run at once.
func TestRunWakesOnSetChecks(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "etc/ld.so.preload"), []byte("/lib/evil.so\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := New(Options{Root: root})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	// Let Run take its first (empty) step and go to sleep.
	time.Sleep(50 * time.Millisecond)
	if err := m.SetChecks([]Check{{Name: "preload", LibraryInjection: &LibraryInjection{}}}); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(20 * time.Second)
	for {
		select {
		case <-m.Queued():
		case <-deadline:
			t.Fatal("no event 20 s after SetChecks: Run slept through the new check")
		}
		q, _ := m.Pending()
		for _, e := range q {
			if e.Kind == Raised && e.Key == "/etc/ld.so.preload" {
				return
			}
		}
	}
}
