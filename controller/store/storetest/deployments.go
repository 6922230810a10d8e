package storetest

import (
	"errors"
	"fmt"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/google/go-cmp/cmp"
)

var genA = store.GenerationRef{Rollout: "canary", Generation: 1}

func testAdmit(t *testing.T, s store.Store) {
	ctx := t.Context()
	for _, d := range []string{"d1", "d2", "d3"} {
		admit(t, s, genA, 0, 3, d, store.Deployment{Phase: 0, State: store.StateAdmitted}, true)
	}
	admit(t, s, genA, 0, 3, "d4", store.Deployment{}, false)                                    // phase full
	admit(t, s, genA, 0, 3, "d1", store.Deployment{Phase: 0, State: store.StateAdmitted}, true) // again: not counted twice
	admit(t, s, genA, 1, 2, "d5", store.Deployment{Phase: 1, State: store.StateAdmitted}, true)
	admit(t, s, genA, 1, 2, "d2", store.Deployment{Phase: 0, State: store.StateAdmitted}, true) // keeps its phase
	admit(t, s, genA, 2, 0, "d6", store.Deployment{}, false)                                    // limit 0 admits nobody
	progressIs(t, s, genA, store.Progress{Phases: []store.PhaseCounts{{Admitted: 3}, {Admitted: 1}}})

	// Generations are counted apart.
	gen2 := store.GenerationRef{Rollout: "canary", Generation: 2}
	admit(t, s, gen2, 0, 3, "d4", store.Deployment{Phase: 0, State: store.StateAdmitted}, true)
	progressIs(t, s, gen2, store.Progress{Phases: []store.PhaseCounts{{Admitted: 1}}})

	unknown := store.GenerationRef{Rollout: "never", Generation: 1}
	progressIs(t, s, unknown, store.Progress{})
	if _, err := s.Deployment(ctx, unknown, "d1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Deployment in an unknown generation: err = %v, want ErrNotFound", err)
	}
	if _, err := s.Deployment(ctx, genA, "d4"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Deployment of a device the phase refused: err = %v, want ErrNotFound", err)
	}

	for _, bad := range []struct {
		g      store.GenerationRef
		phase  int
		limit  int64
		device string
	}{
		{store.GenerationRef{Rollout: "", Generation: 1}, 0, 1, "d"},
		{store.GenerationRef{Rollout: "r", Generation: 0}, 0, 1, "d"},
		{store.GenerationRef{Rollout: "r{x}", Generation: 1}, 0, 1, "d"},
		{genA, -1, 1, "d"},
		{genA, store.MaxPhases, 1, "d"},
		{genA, 0, -1, "d"},
		{genA, 0, 1, ""},
	} {
		if _, _, err := s.Admit(ctx, bad.g, bad.phase, bad.limit, bad.device); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("Admit(%v, phase %d, limit %d, %q): err = %v, want ErrInvalid", bad.g, bad.phase, bad.limit, bad.device, err)
		}
	}
}

func testAdmitRace(t *testing.T, s store.Store) {
	ctx := t.Context()
	const limit = 5
	var admitted atomic.Int32
	race(t, func(i int) error {
		_, ok, err := s.Admit(ctx, genA, 0, limit, fmt.Sprint("device-", i))
		if ok {
			admitted.Add(1)
		}
		return err
	})
	if n := admitted.Load(); n != limit {
		t.Errorf("%d of %d racing devices admitted into a phase of %d", n, racers, limit)
	}
	// One device polling through many replicas at once counts once.
	race(t, func(i int) error {
		_, ok, err := s.Admit(ctx, genA, 1, limit, "same-device")
		if err == nil && !ok {
			err = errors.New("same device refused")
		}
		return err
	})
	progressIs(t, s, genA, store.Progress{Phases: []store.PhaseCounts{{Admitted: limit}, {Admitted: 1}}})
}

func testReport(t *testing.T, s store.Store) {
	ctx := t.Context()
	if _, _, err := s.Report(ctx, genA, "d1", "downloading", 0); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Report for a device never admitted: err = %v, want ErrNotFound", err)
	}
	for _, d := range []string{"d1", "d2", "d3"} {
		admit(t, s, genA, 0, 10, d, store.Deployment{Phase: 0, State: store.StateAdmitted}, true)
	}
	report(t, s, "d1", "downloading", 0, store.Deployment{State: "downloading"}, true)
	report(t, s, "d1", "downloading", 0, store.Deployment{State: "downloading"}, false)
	report(t, s, "d1", store.StateSuccess, 0, store.Deployment{State: store.StateSuccess}, true)
	report(t, s, "d1", store.StateFailure, 0, store.Deployment{State: store.StateSuccess}, false) // final stays final
	report(t, s, "d1", "installing", 0, store.Deployment{State: store.StateSuccess}, false)

	// d2 may retry once: its first failure is not counted.
	report(t, s, "d2", store.StateFailure, 1, store.Deployment{State: store.StateRetrying, Attempts: 1}, true)
	report(t, s, "d2", "downloading", 1, store.Deployment{State: "downloading", Attempts: 1}, true)
	report(t, s, "d2", store.StateFailure, 1, store.Deployment{State: store.StateFailure, Attempts: 1}, true)
	report(t, s, "d3", store.StateFailure, 0, store.Deployment{State: store.StateFailure}, true)
	progressIs(t, s, genA, store.Progress{Phases: []store.PhaseCounts{{Admitted: 3, Succeeded: 1, Failed: 2}}})

	got, err := s.Deployment(ctx, genA, "d2")
	must(t, "Deployment", err)
	diff(t, "Deployment(d2)", store.Deployment{State: store.StateFailure, Attempts: 1}, got, ignoreAdmitted)

	for _, state := range []string{"", store.StateAdmitted, store.StateRetrying, "a|b"} {
		if _, _, err := s.Report(ctx, genA, "d1", state, 0); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("Report(state %q): err = %v, want ErrInvalid", state, err)
		}
	}
	if _, _, err := s.Report(ctx, genA, "d1", "installing", -1); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("Report(retries -1): err = %v, want ErrInvalid", err)
	}
}

func testReportRace(t *testing.T, s store.Store) {
	ctx := t.Context()
	admit(t, s, genA, 0, 10, "d1", store.Deployment{State: store.StateAdmitted}, true)
	admit(t, s, genA, 0, 10, "d2", store.Deployment{State: store.StateAdmitted}, true)
	var changed atomic.Int32
	race(t, func(i int) error {
		state, device := store.StateSuccess, "d1"
		if i%2 == 1 {
			state, device = store.StateFailure, "d2"
		}
		_, ok, err := s.Report(ctx, genA, device, state, 0)
		if ok {
			changed.Add(1)
		}
		return err
	})
	if n := changed.Load(); n != 2 {
		t.Errorf("%d racing reports changed a deployment; want 2 (one per device)", n)
	}
	progressIs(t, s, genA, store.Progress{Phases: []store.PhaseCounts{{Admitted: 2, Succeeded: 1, Failed: 1}}})
}

func testAbort(t *testing.T, s store.Store) {
	ctx := t.Context()
	admit(t, s, genA, 0, 10, "d1", store.Deployment{State: store.StateAdmitted}, true)
	var firsts atomic.Int32
	race(t, func(i int) error {
		first, err := s.Abort(ctx, genA, fmt.Sprintf("3 failures in phase 0 (replica %d)", i))
		if first {
			firsts.Add(1)
		}
		return err
	})
	if n := firsts.Load(); n != 1 {
		t.Errorf("%d racers aborted first; want 1", n)
	}
	p, err := s.Progress(ctx, genA)
	must(t, "Progress", err)
	if p.Aborted == "" {
		t.Error("Progress after Abort: not aborted")
	}
	admit(t, s, genA, 0, 10, "d2", store.Deployment{}, false)                                    // nobody new
	admit(t, s, genA, 0, 10, "d1", store.Deployment{State: store.StateAdmitted}, true)           // d1 is still in
	report(t, s, "d1", store.StateFailure, 0, store.Deployment{State: store.StateFailure}, true) // and still reports
	if _, err := s.Abort(ctx, store.GenerationRef{Rollout: "canary"}, "x"); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("Abort(generation 0): err = %v, want ErrInvalid", err)
	}
	// Aborting a generation nobody was admitted to works too.
	other := store.GenerationRef{Rollout: "other", Generation: 3}
	first, err := s.Abort(ctx, other, "")
	must(t, "Abort", err)
	if !first {
		t.Error("Abort(fresh generation) = false")
	}
	admit(t, s, other, 0, 10, "d1", store.Deployment{}, false)
}

func admit(t *testing.T, s store.Store, g store.GenerationRef, phase int, limit int64, device string, want store.Deployment, wantOK bool) {
	t.Helper()
	got, ok, err := s.Admit(t.Context(), g, phase, limit, device)
	must(t, "Admit", err)
	if ok != wantOK {
		t.Fatalf("Admit(%s, phase %d, limit %d, %s) ok = %v, want %v", g, phase, limit, device, ok, wantOK)
	}
	diff(t, fmt.Sprintf("Admit(%s, phase %d, %s)", g, phase, device), want, got, ignoreAdmitted)
}

// ignoreAdmitted compares deployments without their admission time (the
// store's clock; testTimeout checks it).
var ignoreAdmitted = cmp.FilterPath(func(p cmp.Path) bool {
	sf, ok := p.Last().(cmp.StructField)
	return ok && sf.Name() == "Admitted" && p.Index(-2).Type() == reflect.TypeFor[store.Deployment]()
}, cmp.Ignore())

func report(t *testing.T, s store.Store, device, state string, retries int, want store.Deployment, wantChanged bool) {
	t.Helper()
	got, changed, err := s.Report(t.Context(), genA, device, state, retries)
	must(t, "Report", err)
	if changed != wantChanged {
		t.Errorf("Report(%s, %s) changed = %v, want %v", device, state, changed, wantChanged)
	}
	diff(t, fmt.Sprintf("Report(%s, %s)", device, state), want, got, ignoreAdmitted)
}

func progressIs(t *testing.T, s store.Store, g store.GenerationRef, want store.Progress) {
	t.Helper()
	got, err := s.Progress(t.Context(), g)
	must(t, "Progress", err)
	diff(t, "Progress of "+g.String(), want, got)
}

func testCompletePhase(t *testing.T, s store.Store) {
	ctx := t.Context()
	admit(t, s, genA, 0, 10, "d1", store.Deployment{State: store.StateAdmitted}, true)
	base := time.UnixMilli(1_800_000_000_000)
	var firsts atomic.Int32
	var mu sync.Mutex
	seen := map[int64]int{}
	race(t, func(i int) error {
		// Every racer offers a different moment; all must read back one.
		got, first, err := s.CompletePhase(ctx, genA, 0, base.Add(time.Duration(i)*time.Second))
		if first {
			firsts.Add(1)
		}
		mu.Lock()
		seen[got.UnixMilli()]++
		mu.Unlock()
		return err
	})
	if n := firsts.Load(); n != 1 {
		t.Errorf("%d racers recorded the completion first; want 1", n)
	}
	if len(seen) != 1 {
		t.Errorf("racers read back %d different completion times: %v", len(seen), seen)
	}
	var recorded time.Time
	for ms := range seen {
		recorded = time.UnixMilli(ms)
	}
	// Later calls change nothing; Progress reports the moment.
	got, first, err := s.CompletePhase(ctx, genA, 0, base.Add(time.Hour))
	must(t, "CompletePhase", err)
	if first || !got.Equal(recorded) {
		t.Errorf("CompletePhase again = %v, %v; want %v, false", got, first, recorded)
	}
	p, err := s.Progress(ctx, genA)
	must(t, "Progress", err)
	if len(p.Phases) < 1 || !p.Phases[0].Completed.Equal(recorded) || p.Phases[0].Admitted != 1 {
		t.Errorf("Progress = %+v; want phase 0 admitted 1, completed %v", p, recorded)
	}
	// A phase nobody was admitted to can complete (an empty quota), and
	// other phases stay open.
	if _, _, err := s.CompletePhase(ctx, genA, 2, base); err != nil {
		t.Fatal(err)
	}
	p, err = s.Progress(ctx, genA)
	must(t, "Progress", err)
	if len(p.Phases) != 3 || !p.Phases[1].Completed.IsZero() || !p.Phases[2].Completed.Equal(base) {
		t.Errorf("Progress = %+v; want phase 1 open, phase 2 completed at %v", p, base)
	}
	for _, bad := range []struct {
		g     store.GenerationRef
		phase int
		at    time.Time
	}{{store.GenerationRef{Rollout: "canary"}, 0, base}, {genA, -1, base}, {genA, store.MaxPhases, base}, {genA, 0, time.Time{}}} {
		if _, _, err := s.CompletePhase(ctx, bad.g, bad.phase, bad.at); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("CompletePhase(%v, %d, %v): err = %v, want ErrInvalid", bad.g, bad.phase, bad.at, err)
		}
	}
}

func testAlerts(t *testing.T, s store.Store) {
	ctx := t.Context()
	genB := store.GenerationRef{Rollout: "other", Generation: 2}
	var firsts atomic.Int32
	race(t, func(i int) error {
		// Every racer raises the same alert on the same device: one counts.
		changed, err := s.SetAlert(ctx, genA, "d1", "app-errors", true)
		if changed {
			firsts.Add(1)
		}
		return err
	})
	if n := firsts.Load(); n != 1 {
		t.Errorf("%d racers raised the alert first; want 1", n)
	}
	for _, step := range []struct {
		g       store.GenerationRef
		device  string
		check   string
		raised  bool
		changed bool
	}{
		{genA, "d2", "app-errors", true, true},
		{genA, "d2", "ssh-root-login", true, true},
		{genB, "d1", "app-errors", true, true}, // another generation counts apart
		{genA, "d1", "app-errors", false, true},
		{genA, "d1", "app-errors", false, false}, // clearing twice changes nothing
		{genA, "d3", "never-raised", false, false},
	} {
		changed, err := s.SetAlert(ctx, step.g, step.device, step.check, step.raised)
		must(t, "SetAlert", err)
		if changed != step.changed {
			t.Errorf("SetAlert(%v, %s, %s, %v) changed = %v, want %v", step.g, step.device, step.check, step.raised, changed, step.changed)
		}
	}
	got, err := s.AlertCounts(ctx, genA)
	must(t, "AlertCounts", err)
	if len(got) != 2 || got["app-errors"] != 1 || got["ssh-root-login"] != 1 {
		t.Errorf("AlertCounts(A) = %v; want app-errors 1, ssh-root-login 1", got)
	}
	got, err = s.AlertCounts(ctx, genB)
	must(t, "AlertCounts", err)
	if len(got) != 1 || got["app-errors"] != 1 {
		t.Errorf("AlertCounts(B) = %v; want app-errors 1", got)
	}
	got, err = s.AlertCounts(ctx, store.GenerationRef{Rollout: "none", Generation: 1})
	must(t, "AlertCounts", err)
	if len(got) != 0 {
		t.Errorf("AlertCounts(fresh) = %v; want none", got)
	}
	if _, err := s.SetAlert(ctx, genA, "d1", "bad|name", true); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("SetAlert(bad name): err = %v, want ErrInvalid", err)
	}
}

func testChanges(t *testing.T, s store.Store) {
	ctx := t.Context()
	changes := func(from int64, max int) []store.Change {
		t.Helper()
		cs, err := s.Changes(ctx, genA, from, max)
		must(t, "Changes", err)
		return cs
	}
	if got := changes(0, 10); len(got) != 0 {
		t.Errorf("Changes of a fresh generation = %v, want none", got)
	}
	admit(t, s, genA, 0, 10, "d1", store.Deployment{Phase: 0, State: store.StateAdmitted}, true)
	admit(t, s, genA, 1, 10, "dev|with|bars", store.Deployment{Phase: 1, State: store.StateAdmitted}, true)
	admit(t, s, genA, 0, 10, "d1", store.Deployment{Phase: 0, State: store.StateAdmitted}, true) // again: no change
	admit(t, s, genA, 0, 1, "d3", store.Deployment{}, false)                                     // full: no change
	report(t, s, "d1", "downloading", 1, store.Deployment{State: "downloading"}, true)           // not final: no change
	report(t, s, "d1", store.StateFailure, 1, store.Deployment{State: store.StateRetrying, Attempts: 1}, true)
	report(t, s, "d1", store.StateSuccess, 1, store.Deployment{State: store.StateSuccess, Attempts: 1}, true)
	report(t, s, "d1", store.StateFailure, 1, store.Deployment{State: store.StateSuccess, Attempts: 1}, false)
	_, _, err := s.Report(ctx, genA, "dev|with|bars", store.StateFailure, 0)
	must(t, "Report", err)
	want := []store.Change{
		{Device: "d1", Phase: 0, State: store.StateAdmitted},
		{Device: "dev|with|bars", Phase: 1, State: store.StateAdmitted},
		{Device: "d1", Phase: 0, State: store.StateSuccess},
		{Device: "dev|with|bars", Phase: 1, State: store.StateFailure},
	}
	diff(t, "Changes(0, 10)", want, changes(0, 10))
	diff(t, "Changes(1, 2)", want[1:3], changes(1, 2))
	if got := changes(4, 10); len(got) != 0 {
		t.Errorf("Changes past the end = %v, want none", got)
	}
	p, err := s.Progress(ctx, genA)
	must(t, "Progress", err)
	if n := p.ChangeCount(); n != int64(len(want)) {
		t.Errorf("Progress.ChangeCount() = %d, want %d (the length of the change list)", n, len(want))
	}
	// Other generations have lists of their own.
	if cs, err := s.Changes(ctx, store.GenerationRef{Rollout: "canary", Generation: 2}, 0, 10); err != nil || len(cs) != 0 {
		t.Errorf("Changes(canary:2) = %v, %v; want none", cs, err)
	}
	for _, bad := range []struct {
		g    store.GenerationRef
		from int64
		max  int
	}{{genA, -1, 10}, {genA, 0, 0}, {genA, 0, store.MaxChangesPage + 1}, {store.GenerationRef{Rollout: "canary"}, 0, 10}} {
		if _, err := s.Changes(ctx, bad.g, bad.from, bad.max); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("Changes(%v, %d, %d): err = %v, want ErrInvalid", bad.g, bad.from, bad.max, err)
		}
	}

	// Racing admissions and reports: the list holds each change once and
	// its length is what Progress counts.
	race(t, func(i int) error {
		dev := fmt.Sprint("racer-", i%4)
		if _, _, err := s.Admit(ctx, genA, 2, 3, dev); err != nil {
			return err
		}
		_, _, err := s.Report(ctx, genA, dev, store.StateSuccess, 0)
		if errors.Is(err, store.ErrNotFound) { // the phase was full
			err = nil
		}
		return err
	})
	p, err = s.Progress(ctx, genA)
	must(t, "Progress", err)
	all := changes(0, store.MaxChangesPage)
	if int64(len(all)) != p.ChangeCount() {
		t.Errorf("after racing: %d changes listed, Progress counts %d", len(all), p.ChangeCount())
	}
	seen := map[store.Change]bool{}
	for _, c := range all {
		if seen[c] {
			t.Errorf("change %+v listed twice", c)
		}
		seen[c] = true
	}
	if n := len(all) - len(want); n != 6 {
		t.Errorf("racing 4 devices into a phase of 3: %d new changes, want 6 (3 admitted, 3 succeeded)", n)
	}
}

// testTimeout: a deployment records when it was admitted, keeps it through
// reports, and StateTimeout is final and counted as TimedOut, with its
// change logged; a late report changes nothing.
func testTimeout(t *testing.T, s store.Store) {
	ctx := t.Context()
	before := time.Now().Add(-time.Minute)
	d, ok, err := s.Admit(ctx, genA, 0, 10, "d1")
	must(t, "Admit", err)
	after := time.Now().Add(time.Minute)
	if !ok || d.Admitted.Before(before) || d.Admitted.After(after) {
		t.Fatalf("Admit(d1) = %+v, %v; want admitted with a time between %v and %v (the store's clock)", d, ok, before, after)
	}
	admitted := d.Admitted
	admit(t, s, genA, 0, 10, "d2", store.Deployment{State: store.StateAdmitted}, true)
	admit(t, s, genA, 0, 10, "d3", store.Deployment{State: store.StateAdmitted}, true)
	report(t, s, "d1", "downloading", 0, store.Deployment{State: "downloading"}, true)
	got, err := s.Deployment(ctx, genA, "d1")
	must(t, "Deployment", err)
	if !got.Admitted.Equal(admitted) {
		t.Errorf("Deployment(d1).Admitted = %v after a report, want %v (kept)", got.Admitted, admitted)
	}
	report(t, s, "d1", store.StateTimeout, 0, store.Deployment{State: store.StateTimeout}, true)
	report(t, s, "d1", store.StateSuccess, 0, store.Deployment{State: store.StateTimeout}, false) // late: stays timed out
	report(t, s, "d1", store.StateTimeout, 0, store.Deployment{State: store.StateTimeout}, false)
	report(t, s, "d2", store.StateSuccess, 0, store.Deployment{State: store.StateSuccess}, true)
	report(t, s, "d2", store.StateTimeout, 0, store.Deployment{State: store.StateSuccess}, false) // final stays final
	// A timeout is final at once, whatever retries are left.
	report(t, s, "d3", store.StateTimeout, 3, store.Deployment{State: store.StateTimeout}, true)
	progressIs(t, s, genA, store.Progress{Phases: []store.PhaseCounts{{Admitted: 3, Succeeded: 1, TimedOut: 2}}})
	got, err = s.Deployment(ctx, genA, "d1")
	must(t, "Deployment", err)
	if !got.Admitted.Equal(admitted) || got.State != store.StateTimeout {
		t.Errorf("Deployment(d1) = %+v, want timeout admitted at %v", got, admitted)
	}
	changes, err := s.Changes(ctx, genA, 0, 100)
	must(t, "Changes", err)
	want := []store.Change{
		{Device: "d1", State: store.StateAdmitted}, {Device: "d2", State: store.StateAdmitted}, {Device: "d3", State: store.StateAdmitted},
		{Device: "d1", State: store.StateTimeout}, {Device: "d2", State: store.StateSuccess}, {Device: "d3", State: store.StateTimeout},
	}
	diff(t, "Changes", want, changes)
	p, err := s.Progress(ctx, genA)
	must(t, "Progress", err)
	if n := p.ChangeCount(); n != int64(len(want)) {
		t.Errorf("ChangeCount = %d, want %d", n, len(want))
	}
}
