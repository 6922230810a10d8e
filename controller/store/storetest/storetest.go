// Package storetest is the conformance suite every store.Store
// implementation passes: each method's contract, compare-and-set races,
// exactly-once effects when many goroutines (standing in for controller
// replicas) do the same work at once, event bounds and order, TTL expiry, and
// state surviving a restart of the backing store; and rollout progress:
// atomic phase admission, deployment states counted once, aborts; and
// devices' alert records: every event kind, batches sent again or by
// several replicas at once applied once, listing filters, order and bounds;
// and devices' configuration reports: the changed flag, Since, batch reads
// over pages, refusals, and replicas reporting one device at once.
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) store.Store {
//			return openEmptyStore(t, storetest.MaxEvents)
//		})
//	}
//
// Subtests run in parallel; each calls newStore for its own empty store.
package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/google/go-cmp/cmp"
)

// MaxEvents is the event-log bound newStore must configure: small, so the
// suite can overflow the log quickly.
const MaxEvents = 50

// Device bounds newStore must configure (MaxPending, MaxConflicts,
// PendingTTL options): small, so the suite can fill them quickly.
const (
	MaxPending   = 8
	MaxConflicts = 4
	PendingTTL   = time.Hour
)

// racers is how many goroutines race for the same transition.
const racers = 16

// waitLimit bounds every wait in the suite.
const waitLimit = 10 * time.Second

// Run runs the conformance suite. newStore returns an empty store configured
// with MaxEvents, MaxPending, MaxConflicts, PendingTTL and MaxAlerts; the
// caller's cleanup (t.Cleanup) closes it.
func Run(t *testing.T, newStore func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"Empty", testEmpty},
		{"SetLive", testSetLive},
		{"SetLiveRaceDifferentCommits", testSetLiveRaceDifferent},
		{"SetLiveRaceSameCommit", testSetLiveRaceSame},
		{"MoveLive", testMoveLive},
		{"MoveLiveRace", testMoveLiveRace},
		{"EventsOccurrence", testEventsOccurrence},
		{"RecordRefused", testRefused},
		{"RecordRefusedRace", testRefusedRace},
		{"RolloutGenerations", testGenerations},
		{"PutRolloutsNotLive", testRolloutsNotLive},
		{"PutRolloutsInvalid", testRolloutsInvalid},
		{"PutRolloutsRace", testRolloutsRace},
		{"Events", testEvents},
		{"EventsBound", testEventsBound},
		{"EventsDedupeRace", testEventsRace},
		{"FirstDelivery", testFirstDelivery},
		{"FirstDeliveryExpiry", testFirstDeliveryExpiry},
		{"SharedSecret", testSharedSecret},
		{"SharedSecretRace", testSharedSecretRace},
		{"Admit", testAdmit},
		{"AdmitRace", testAdmitRace},
		{"Report", testReport},
		{"ReportRace", testReportRace},
		{"Changes", testChanges},
		{"Abort", testAbort},
		{"CompletePhase", testCompletePhase},
		{"Timeout", testTimeout},
		{"DeploymentLog", testDeploymentLog},
		{"Alerts", testAlerts},
		{"DeviceAlerts", testDeviceAlerts},
		{"DeviceAlertsResend", testDeviceAlertsResend},
		{"DeviceAlertsRace", testDeviceAlertsRace},
		{"DeviceAlertsList", testDeviceAlertsList},
		{"DeviceAlertsPerDevice", testDeviceAlertsPerDevice},
		{"DeviceAlertsListBound", testDeviceAlertsListBound},
		{"DeviceAlertsInvalid", testDeviceAlertsInvalid},
		{"Devices", testDevices},
		{"DeviceKeyStays", testDeviceKeyStays},
		{"DeviceBindRace", testDeviceBindRace},
		{"DeviceBindAfterPending", testDeviceBindAfterPending},
		{"PendingBound", testPendingBound},
		{"ConflictsBound", testConflictsBound},
		{"ConfigStatus", testConfigStatus},
		{"ConfigStatusBatch", testConfigStatusBatch},
		{"ConfigStatusInvalid", testConfigStatusInvalid},
		{"ConfigStatusRace", testConfigStatusRace},
	}
	tests = append(tests, remoteTests...)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, newStore(t))
		})
	}
}

// RunRestart checks that everything the store records survives a restart of
// its backing store (closing and reopening a file; restarting a server).
// open returns an empty store configured with MaxEvents and a restart
// function that restarts the backing store and returns the store to use
// afterwards (the same one if it reconnects by itself).
func RunRestart(t *testing.T, open func(t *testing.T) (s store.Store, restart func() store.Store)) {
	ctx := t.Context()
	s, restart := open(t)

	c1 := commit("c1", 1)
	mustSet(t, s, c1, "")
	refusal := store.Refusal{SHA: "bad1", Author: "eve", Time: at(2), Errors: []string{"rollouts/a.yaml:3: no artifact"}}
	must(t, "RecordRefused", ok1(s.RecordRefused(ctx, refusal)))
	rs := []store.RolloutRecord{ro("a", "art1", `{"phases": [5, 100]}`), ro("b", "art1", "")}
	changes, err := s.PutRollouts(ctx, c1.SHA, rs)
	must(t, "PutRollouts", err)
	beforeRollouts, err := s.Rollouts(ctx)
	must(t, "Rollouts", err)
	var events []store.Event
	for i := range 3 {
		e := event(c1.SHA, "test", fmt.Sprint(i))
		id, _, err := s.AppendEvent(ctx, e)
		must(t, "AppendEvent", err)
		e.ID = id
		events = append(events, e)
	}
	first, err := s.FirstDelivery(ctx, "delivery-1", time.Hour)
	must(t, "FirstDelivery", err)
	if !first {
		t.Fatal("FirstDelivery(new ID) = false")
	}
	secret, err := s.SharedSecret(ctx, "jwt", func() ([]byte, error) { return []byte("s3cret"), nil })
	must(t, "SharedSecret", err)
	admit(t, s, genA, 0, 2, "d1", store.Deployment{State: store.StateAdmitted}, true)
	report(t, s, "d1", store.StateSuccess, 0, store.Deployment{State: store.StateSuccess}, true)
	_, err = s.Abort(ctx, store.GenerationRef{Rollout: "b", Generation: 1}, "alert")
	must(t, "Abort", err)
	alertBatch := []store.AlertEvent{
		withEvidence(aev(1, "disk", "/", store.AlertRaised, 1), "warning", "91% full"),
		withEvidence(aev(2, "log", "oom", store.AlertRaised, 2), "critical", "Killed process 7"),
		aev(3, "log", "oom", store.AlertCleared, 3),
	}
	_, _, err = s.RecordAlerts(ctx, "dev-a", alertBatch)
	must(t, "RecordAlerts", err)
	alerts, err := s.ListAlerts(ctx, store.AlertFilter{Limit: 10})
	must(t, "ListAlerts", err)
	configAfterRestart := configRestart(t, s)
	remoteAfterRestart := remoteRestart(t, s)

	s = restart()

	// The first call may meet a connection the restart broke; the store
	// must recover by itself within the deadline.
	eventually(t, "Ping after restart", func() error { return s.Ping(ctx) })

	got, err := s.Live(ctx)
	must(t, "Live", err)
	c1.Seq = 1
	diff(t, "Live after restart", c1, got)
	gotRefusal, err := s.LastRefused(ctx)
	must(t, "LastRefused", err)
	diff(t, "LastRefused after restart", refusal, gotRefusal)
	gotRollouts, err := s.Rollouts(ctx)
	must(t, "Rollouts", err)
	diff(t, "Rollouts after restart", beforeRollouts, gotRollouts)
	again, err := s.PutRollouts(ctx, c1.SHA, rs)
	must(t, "PutRollouts", err)
	diff(t, "PutRollouts(same commit) after restart", changes, again)
	gotEvents, err := s.Events(ctx, "", 100)
	must(t, "Events", err)
	diff(t, "Events after restart", events, gotEvents)
	_, added, err := s.AppendEvent(ctx, event(c1.SHA, "test", "0"))
	must(t, "AppendEvent", err)
	if added {
		t.Error("AppendEvent(duplicate of an event from before the restart) added it again")
	}
	first, err = s.FirstDelivery(ctx, "delivery-1", time.Hour)
	must(t, "FirstDelivery", err)
	if first {
		t.Error("FirstDelivery(ID seen before the restart) = true")
	}
	gotSecret, err := s.SharedSecret(ctx, "jwt", func() ([]byte, error) {
		return nil, errors.New("generate called for a secret created before the restart")
	})
	must(t, "SharedSecret", err)
	diff(t, "SharedSecret after restart", secret, gotSecret)

	progressIs(t, s, genA, store.Progress{Phases: []store.PhaseCounts{{Admitted: 1, Succeeded: 1}}})
	progressIs(t, s, store.GenerationRef{Rollout: "b", Generation: 1}, store.Progress{Aborted: "alert"})
	admit(t, s, genA, 0, 2, "d2", store.Deployment{State: store.StateAdmitted}, true)
	admit(t, s, genA, 0, 2, "d3", store.Deployment{}, false)

	alertsAre(t, s, store.AlertFilter{Limit: 10}, alerts...)
	alertsAre(t, s, store.AlertFilter{Device: "dev-a", Limit: 10}, alerts...)
	recordAlerts(t, s, "dev-a", alertBatch, nil, 3) // applied before the restart
	reopened := alerts[0]
	reopened.State, reopened.Closing, reopened.Closed, reopened.Evidence, reopened.Raised, reopened.Updated, reopened.Count, reopened.Seq =
		store.AlertOpen, "", time.Time{}, "", aat(4), aat(4), 2, 4
	recordAlerts(t, s, "dev-a", []store.AlertEvent{aev(4, "log", "oom", store.AlertRaised, 4)}, []store.Alert{reopened}, 4)
	configAfterRestart(s)
	remoteAfterRestart(s)

	c2 := commit("c2", 3)
	if ok, err := s.SetLive(ctx, c2, c1.SHA); err != nil || !ok {
		t.Fatalf("SetLive after restart = %v, %v; want true", ok, err)
	}
}

func testEmpty(t *testing.T, s store.Store) {
	ctx := t.Context()
	must(t, "Ping", s.Ping(ctx))
	if _, err := s.Live(ctx); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Live on an empty store: err = %v, want ErrNotFound", err)
	}
	if _, err := s.LastRefused(ctx); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("LastRefused on an empty store: err = %v, want ErrNotFound", err)
	}
	rs, err := s.Rollouts(ctx)
	if err != nil || len(rs) != 0 {
		t.Errorf("Rollouts on an empty store = %v, %v; want none", rs, err)
	}
	es, err := s.Events(ctx, "", 10)
	if err != nil || len(es) != 0 {
		t.Errorf("Events on an empty store = %v, %v; want none", es, err)
	}
	es, err = s.RecentEvents(ctx, 10)
	if err != nil || len(es) != 0 {
		t.Errorf("RecentEvents on an empty store = %v, %v; want none", es, err)
	}
}

func testSetLive(t *testing.T, s store.Store) {
	ctx := t.Context()
	a, b, c := commit("aaaa", 1), commit("bbbb", 2), commit("cccc", 3)

	if _, err := s.SetLive(ctx, store.CommitRecord{}, ""); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("SetLive(no SHA): err = %v, want ErrInvalid", err)
	}
	setLive(t, s, a, "x", false) // nothing live yet, so prev "x" is wrong
	setLive(t, s, a, "", true)
	liveIs(t, s, a)
	setLive(t, s, b, "", false) // stale: someone already made a live
	setLive(t, s, b, "zzzz", false)
	liveIs(t, s, a)
	setLive(t, s, b, a.SHA, true)
	liveIs(t, s, b)
	setLive(t, s, a, "", false) // a replica that never saw anything cannot move live back
	liveIs(t, s, b)

	// Already live: ok, and the first record for the commit is kept.
	b2 := b
	b2.Loaded = at(99)
	b2.Message = "loaded again"
	setLive(t, s, b2, a.SHA, true)
	setLive(t, s, b2, "", true)
	liveIs(t, s, b)

	setLive(t, s, c, b.SHA, true)
	liveIs(t, s, c)
}

func testSetLiveRaceDifferent(t *testing.T, s store.Store) {
	ctx := t.Context()
	base := commit("base", 1)
	mustSet(t, s, base, "")
	next := make([]store.CommitRecord, racers)
	for i := range next {
		next[i] = commit(fmt.Sprintf("next%02d", i), 2)
	}
	won := make([]bool, racers)
	race(t, func(i int) error {
		ok, err := s.SetLive(ctx, next[i], base.SHA)
		won[i] = ok
		return err
	})
	winners := 0
	var winner store.CommitRecord
	for i, ok := range won {
		if ok {
			winners++
			winner = next[i]
		}
	}
	if winners != 1 {
		t.Fatalf("%d racers moved live from %s; want exactly 1", winners, base.SHA)
	}
	liveIs(t, s, winner)
}

func testSetLiveRaceSame(t *testing.T, s store.Store) {
	ctx := t.Context()
	base := commit("base", 1)
	mustSet(t, s, base, "")
	recs := make([]store.CommitRecord, racers)
	for i := range recs {
		recs[i] = commit("next", 2)
		recs[i].Loaded = at(100 + i) // each replica loaded it at its own time
	}
	race(t, func(i int) error {
		ok, err := s.SetLive(ctx, recs[i], base.SHA)
		if err == nil && !ok {
			return fmt.Errorf("SetLive(same commit as the other racers) = false")
		}
		return err
	})
	got, err := s.Live(ctx)
	must(t, "Live", err)
	if !slices.ContainsFunc(recs, func(r store.CommitRecord) bool { return cmp.Equal(r, got, ignoreSeq) }) {
		t.Fatalf("Live after the race = %+v; want one racer's record", got)
	}
	// It stays that record: later calls for the same commit change nothing.
	_, err = s.SetLive(ctx, recs[0], base.SHA)
	must(t, "SetLive", err)
	liveIs(t, s, got)
}

func testRefused(t *testing.T, s store.Store) {
	ctx := t.Context()
	if _, err := s.RecordRefused(ctx, store.Refusal{}); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("RecordRefused(no SHA): err = %v, want ErrInvalid", err)
	}
	r1 := store.Refusal{SHA: "r1", Author: "ann <ann@example.com>", Time: at(1), Errors: []string{
		"rollouts/canary.yaml:12: spec.phases[0].percent: 120 > 100",
		"devices/x.yaml:1: unknown kind \"Devise\"",
	}}
	r2 := store.Refusal{SHA: "r2", Author: "bob", Time: at(2), Errors: []string{"policies: canary must be ≤ 5 %"}}

	refuse(t, s, r1, true)
	refuse(t, s, r1, false)
	lastRefusedIs(t, s, r1)
	refuse(t, s, r2, true)
	lastRefusedIs(t, s, r2)

	// A slow replica refusing r1 again (with its own time) changes nothing.
	late := r1
	late.Time = at(3)
	refuse(t, s, late, false)
	lastRefusedIs(t, s, r2)
}

func testRefusedRace(t *testing.T, s store.Store) {
	ctx := t.Context()
	var recorded atomic.Int32
	r := store.Refusal{SHA: "bad", Author: "eve", Errors: []string{"x"}}
	race(t, func(i int) error {
		ri := r
		ri.Time = at(i)
		ok, err := s.RecordRefused(ctx, ri)
		if ok {
			recorded.Add(1)
		}
		return err
	})
	if n := recorded.Load(); n != 1 {
		t.Fatalf("%d racers recorded the same refusal; want 1", n)
	}
	got, err := s.LastRefused(ctx)
	must(t, "LastRefused", err)
	if got.SHA != r.SHA {
		t.Fatalf("LastRefused = %+v, want SHA %s", got, r.SHA)
	}
}

// genStep is one commit in testGenerations: the rollouts it declares, the
// changes PutRollouts must report, and the records Rollouts must return
// (Name, Artifact, Settings, Generation, StartCommit, Commit, Stopped).
type genStep struct {
	sha     string
	in      []store.RolloutRecord
	changes []store.RolloutChange
	want    []store.RolloutRecord
}

func testGenerations(t *testing.T, s store.Store) {
	ctx := t.Context()
	s1 := `{"phases": [{"percent": 5}, {"percent": 100}]}` // whitespace kept byte for byte
	s2 := `{"phases":[{"percent":10},{"percent":100}]}`
	steps := []genStep{{
		sha: "c1",
		in:  []store.RolloutRecord{ro("b", "art1", s1), ro("a", "art1", s1)},
		changes: []store.RolloutChange{
			{Name: "a", Kind: store.RolloutStarted, Generation: 1, Artifact: "art1"},
			{Name: "b", Kind: store.RolloutStarted, Generation: 1, Artifact: "art1"},
		},
		want: []store.RolloutRecord{
			rec("a", "art1", s1, 1, "c1", "c1", false),
			rec("b", "art1", s1, 1, "c1", "c1", false),
		},
	}, {
		sha: "c2", // settings only: same generation
		in:  []store.RolloutRecord{ro("a", "art1", s2), ro("b", "art1", s1)},
		changes: []store.RolloutChange{
			{Name: "a", Kind: store.RolloutSettings, Generation: 1, Artifact: "art1"},
		},
		want: []store.RolloutRecord{
			rec("a", "art1", s2, 1, "c1", "c2", false),
			rec("b", "art1", s1, 1, "c1", "c1", false),
		},
	}, {
		sha: "c3", // artifact: new generation
		in:  []store.RolloutRecord{ro("a", "art2", s2), ro("b", "art1", s1)},
		changes: []store.RolloutChange{
			{Name: "a", Kind: store.RolloutArtifact, Generation: 2, Artifact: "art2", PrevArtifact: "art1"},
		},
		want: []store.RolloutRecord{
			rec("a", "art2", s2, 2, "c3", "c3", false),
			rec("b", "art1", s1, 1, "c1", "c1", false),
		},
	}, {
		sha: "c4", // b deleted: stopped, record kept
		in:  []store.RolloutRecord{ro("a", "art2", s2)},
		changes: []store.RolloutChange{
			{Name: "b", Kind: store.RolloutStopped, Generation: 1, Artifact: "art1"},
		},
		want: []store.RolloutRecord{
			rec("a", "art2", s2, 2, "c3", "c3", false),
			rec("b", "art1", s1, 1, "c1", "c4", true),
		},
	}, {
		sha: "c5", // b declared again, same artifact: a new generation all the same
		in:  []store.RolloutRecord{ro("a", "art2", s2), ro("b", "art1", s1), ro("c", "art3", "")},
		changes: []store.RolloutChange{
			{Name: "b", Kind: store.RolloutStarted, Generation: 2, Artifact: "art1"},
			{Name: "c", Kind: store.RolloutStarted, Generation: 1, Artifact: "art3"},
		},
		want: []store.RolloutRecord{
			rec("a", "art2", s2, 2, "c3", "c3", false),
			rec("b", "art1", s1, 2, "c5", "c5", false),
			rec("c", "art3", "", 1, "c5", "c5", false),
		},
	}, {
		sha:  "c6", // nothing changed
		in:   []store.RolloutRecord{ro("c", "art3", ""), ro("b", "art1", s1), ro("a", "art2", s2)},
		want: nil, // same as before
	}, {
		sha: "c7", // everything deleted
		in:  nil,
		changes: []store.RolloutChange{
			{Name: "a", Kind: store.RolloutStopped, Generation: 2, Artifact: "art2"},
			{Name: "b", Kind: store.RolloutStopped, Generation: 2, Artifact: "art1"},
			{Name: "c", Kind: store.RolloutStopped, Generation: 1, Artifact: "art3"},
		},
		want: []store.RolloutRecord{
			rec("a", "art2", s2, 2, "c3", "c7", true),
			rec("b", "art1", s1, 2, "c5", "c7", true),
			rec("c", "art3", "", 1, "c5", "c7", true),
		},
	}}
	prev := ""
	var want []store.RolloutRecord
	for _, st := range steps {
		mustSet(t, s, commit(st.sha, 1), prev)
		prev = st.sha
		for attempt := range 2 { // the second call must be a no-op with the same answer
			got, err := s.PutRollouts(ctx, st.sha, st.in)
			must(t, "PutRollouts "+st.sha, err)
			diff(t, fmt.Sprintf("PutRollouts(%s) changes, call %d", st.sha, attempt+1), st.changes, got)
		}
		if st.want != nil {
			want = st.want
		}
		got, err := s.Rollouts(ctx)
		must(t, "Rollouts", err)
		diff(t, "Rollouts after "+st.sha, want, got, ignoreRolloutTimes)
		for _, r := range got {
			if r.Started.IsZero() || r.Updated.Before(r.Started) {
				t.Errorf("rollout %s after %s: started %v, updated %v; want started set, updated ≥ started", r.Name, st.sha, r.Started, r.Updated)
			}
		}
	}
}

func testRolloutsNotLive(t *testing.T, s store.Store) {
	ctx := t.Context()
	in := []store.RolloutRecord{ro("a", "art1", "")}
	if _, err := s.PutRollouts(ctx, "c1", in); !errors.Is(err, store.ErrNotLive) {
		t.Errorf("PutRollouts with nothing live: err = %v, want ErrNotLive", err)
	}
	mustSet(t, s, commit("c1", 1), "")
	_, err := s.PutRollouts(ctx, "c1", in)
	must(t, "PutRollouts", err)
	mustSet(t, s, commit("c2", 2), "c1")
	// A stale replica still reconciling c1 must not touch c2's rollouts.
	if _, err := s.PutRollouts(ctx, "c1", []store.RolloutRecord{ro("a", "art0", "")}); !errors.Is(err, store.ErrNotLive) {
		t.Errorf("PutRollouts(older commit): err = %v, want ErrNotLive", err)
	}
	got, err := s.Rollouts(ctx)
	must(t, "Rollouts", err)
	diff(t, "Rollouts after a stale PutRollouts", []store.RolloutRecord{rec("a", "art1", "", 1, "c1", "c1", false)}, got, ignoreRolloutTimes)
}

func testRolloutsInvalid(t *testing.T, s store.Store) {
	ctx := t.Context()
	mustSet(t, s, commit("c1", 1), "")
	for name, in := range map[string][]store.RolloutRecord{
		"duplicate name": {ro("a", "x", ""), ro("a", "y", "")},
		"empty name":     {ro("", "x", "")},
		"no artifact":    {ro("a", "", "")},
		"bad JSON":       {ro("a", "x", "{phases")},
	} {
		if _, err := s.PutRollouts(ctx, "c1", in); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("PutRollouts(%s): err = %v, want ErrInvalid", name, err)
		}
	}
	if _, err := s.PutRollouts(ctx, "", nil); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("PutRollouts(no commit): err = %v, want ErrInvalid", err)
	}
	got, err := s.Rollouts(ctx)
	if err != nil || len(got) != 0 {
		t.Errorf("Rollouts after refused input = %v, %v; want none", got, err)
	}
}

func testRolloutsRace(t *testing.T, s store.Store) {
	ctx := t.Context()
	rounds := []struct {
		sha string
		in  []store.RolloutRecord
		gen int64
	}{
		{"c1", []store.RolloutRecord{ro("a", "art1", `{"p":1}`), ro("b", "art1", `{"p":1}`)}, 1},
		{"c2", []store.RolloutRecord{ro("a", "art2", `{"p":1}`), ro("b", "art2", `{"p":2}`)}, 2},
		{"c3", []store.RolloutRecord{ro("a", "art3", `{"p":1}`), ro("b", "art3", `{"p":2}`)}, 3},
	}
	prev := ""
	for _, r := range rounds {
		mustSet(t, s, commit(r.sha, 1), prev)
		prev = r.sha
		results := make([][]store.RolloutChange, racers)
		race(t, func(i int) error {
			var err error
			results[i], err = s.PutRollouts(ctx, r.sha, r.in)
			return err
		})
		for i := 1; i < racers; i++ {
			diff(t, fmt.Sprintf("%s: racer %d's changes vs racer 0's", r.sha, i), results[0], results[i])
		}
		got, err := s.Rollouts(ctx)
		must(t, "Rollouts", err)
		for _, rec := range got {
			if rec.Generation != r.gen {
				t.Errorf("after %d racers applied %s: rollout %s generation %d, want %d", racers, r.sha, rec.Name, rec.Generation, r.gen)
			}
		}
	}
}

func testEvents(t *testing.T, s store.Store) {
	ctx := t.Context()
	if _, _, err := s.AppendEvent(ctx, store.Event{Commit: "c1"}); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("AppendEvent(no kind): err = %v, want ErrInvalid", err)
	}
	var want []store.Event
	for _, e := range []store.Event{
		{Time: at(1), Commit: "c1", Author: "ann", Kind: "commit.live", Subject: "commit/c1", Message: "c1 is live"},
		{Time: at(2), Commit: "c1", Author: "ann", Kind: "rollout.started", Subject: "rollout/a", Message: "generation 1"},
		{Time: at(3), Commit: "c1", Author: "ann", Kind: "rollout.started", Subject: "rollout/b", Message: "generation 1 ✓"},
		{Time: at(4), Kind: "rollout.aborted", Subject: "rollout/a", Message: "5 failures"}, // no commit
	} {
		id, added, err := s.AppendEvent(ctx, e)
		must(t, "AppendEvent", err)
		if !added || id == "" {
			t.Fatalf("AppendEvent(new event) = %q, %v; want an ID, true", id, added)
		}
		e.ID = id
		want = append(want, e)
	}
	// The same (commit, kind, subject) again, from another replica with its
	// own time and words: not appended, same ID.
	dup := want[1]
	dup.ID, dup.Time, dup.Message = "", at(9), "generation 1 (replica 2)"
	id, added, err := s.AppendEvent(ctx, dup)
	must(t, "AppendEvent", err)
	if added || id != want[1].ID {
		t.Errorf("AppendEvent(duplicate) = %q, %v; want %q, false", id, added, want[1].ID)
	}
	// A zero time is set by the store.
	e := store.Event{Commit: "c2", Kind: "commit.live"}
	id, _, err = s.AppendEvent(ctx, e)
	must(t, "AppendEvent", err)
	e.ID = id
	want = append(want, e)

	got, err := s.Events(ctx, "", 100)
	must(t, "Events", err)
	if len(got) == len(want) {
		if got[4].Time.IsZero() {
			t.Error("event appended with a zero time still has a zero time")
		}
		want[4].Time = got[4].Time
	}
	diff(t, "Events", want, got)

	paged := pages(t, s, 2)
	diff(t, "Events paged by 2", want, paged)
	after, err := s.Events(ctx, want[len(want)-1].ID, 10)
	must(t, "Events", err)
	if len(after) != 0 {
		t.Errorf("Events after the newest = %v, want none", after)
	}
	recent, err := s.RecentEvents(ctx, 2)
	must(t, "RecentEvents", err)
	diff(t, "RecentEvents(2)", want[3:], recent)

	for _, limit := range []int{0, -1} {
		if _, err := s.Events(ctx, "", limit); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("Events(limit %d): err = %v, want ErrInvalid", limit, err)
		}
	}
	if _, err := s.Events(ctx, "not an id", 10); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("Events(afterID garbage): err = %v, want ErrInvalid", err)
	}
}

func testEventsBound(t *testing.T, s store.Store) {
	ctx := t.Context()
	total := MaxEvents + 25
	var all []store.Event
	for i := range total {
		e := event("c1", "test", fmt.Sprint(i))
		id, added, err := s.AppendEvent(ctx, e)
		must(t, "AppendEvent", err)
		if !added {
			t.Fatalf("event %d not added", i)
		}
		e.ID = id
		all = append(all, e)
	}
	want := all[total-MaxEvents:]
	diff(t, fmt.Sprintf("Events after %d appends (bound %d)", total, MaxEvents), want, pages(t, s, 7))
	got, err := s.Events(ctx, "", store.MaxPage+1) // clamped, not refused
	must(t, "Events", err)
	diff(t, "Events in one page", want, got)
	recent, err := s.RecentEvents(ctx, 5)
	must(t, "RecentEvents", err)
	diff(t, "RecentEvents(5)", all[total-5:], recent)
	// Events after a dropped ID continue from the oldest retained one.
	got, err = s.Events(ctx, all[0].ID, 3)
	must(t, "Events", err)
	diff(t, "Events after a dropped ID", want[:3], got)
	// A dropped event may be appended again.
	_, added, err := s.AppendEvent(ctx, all[0])
	must(t, "AppendEvent", err)
	if !added {
		t.Error("AppendEvent(event already dropped from the log) was deduplicated against nothing")
	}
}

func testEventsRace(t *testing.T, s store.Store) {
	ctx := t.Context()
	ids := make([]string, racers)
	var added atomic.Int32
	race(t, func(i int) error {
		e := event("c1", "rollout.started", "rollout/a")
		e.Message = fmt.Sprintf("from replica %d", i)
		id, ok, err := s.AppendEvent(ctx, e)
		ids[i] = id
		if ok {
			added.Add(1)
		}
		return err
	})
	if n := added.Load(); n != 1 {
		t.Errorf("%d racers appended the same event; want 1", n)
	}
	for i := range ids {
		if ids[i] != ids[0] {
			t.Errorf("racer %d got ID %q, racer 0 got %q", i, ids[i], ids[0])
		}
	}
	got, err := s.Events(ctx, "", 100)
	must(t, "Events", err)
	if len(got) != 1 {
		t.Errorf("Events after the race: %d events, want 1", len(got))
	}
}

func testFirstDelivery(t *testing.T, s store.Store) {
	ctx := t.Context()
	delivered(t, s, "gh-1", time.Hour, true)
	delivered(t, s, "gh-1", time.Hour, false)
	delivered(t, s, "gh-2", time.Hour, true)
	delivered(t, s, "{weird}:id with spaces\x00", time.Hour, true)
	for _, bad := range []struct {
		id  string
		ttl time.Duration
	}{{"", time.Hour}, {"x", 0}, {"x", -time.Second}, {string(make([]byte, store.MaxDeliveryIDBytes+1)), time.Hour}} {
		if _, err := s.FirstDelivery(ctx, bad.id, bad.ttl); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("FirstDelivery(%d-byte ID, %v): err = %v, want ErrInvalid", len(bad.id), bad.ttl, err)
		}
	}
	var firsts atomic.Int32
	race(t, func(int) error {
		first, err := s.FirstDelivery(ctx, "gh-race", time.Hour)
		if first {
			firsts.Add(1)
		}
		return err
	})
	if n := firsts.Load(); n != 1 {
		t.Errorf("%d racers saw delivery gh-race first; want 1", n)
	}
}

func testFirstDeliveryExpiry(t *testing.T, s store.Store) {
	ctx := t.Context()
	delivered(t, s, "short", 50*time.Millisecond, true)
	delivered(t, s, "long", time.Hour, true)
	// After the TTL the ID is new again. No wall-clock assertion: only that
	// it happens before the deadline.
	eventually(t, "delivery ID to expire", func() error {
		first, err := s.FirstDelivery(ctx, "short", time.Hour)
		if err == nil && !first {
			err = errors.New("still a duplicate")
		}
		return err
	})
	delivered(t, s, "short", time.Hour, false) // the new delivery is recorded again
	delivered(t, s, "long", time.Hour, false)
}

func testSharedSecret(t *testing.T, s store.Store) {
	ctx := t.Context()
	calls := 0
	gen := func(b string) func() ([]byte, error) {
		return func() ([]byte, error) { calls++; return []byte(b), nil }
	}
	got, err := s.SharedSecret(ctx, "jwt", gen("first\x00\xff"))
	must(t, "SharedSecret", err)
	diff(t, "SharedSecret(new)", []byte("first\x00\xff"), got)
	got, err = s.SharedSecret(ctx, "jwt", gen("second"))
	must(t, "SharedSecret", err)
	diff(t, "SharedSecret(existing)", []byte("first\x00\xff"), got)
	if calls != 1 {
		t.Errorf("generate called %d times, want 1", calls)
	}
	got, err = s.SharedSecret(ctx, "presign", gen("other"))
	must(t, "SharedSecret", err)
	diff(t, "SharedSecret(second name)", []byte("other"), got)

	boom := errors.New("no entropy")
	if _, err := s.SharedSecret(ctx, "failing", func() ([]byte, error) { return nil, boom }); !errors.Is(err, boom) {
		t.Errorf("SharedSecret(generate fails): err = %v, want %v", err, boom)
	}
	// Nothing was stored: the next call generates.
	got, err = s.SharedSecret(ctx, "failing", gen("ok now"))
	must(t, "SharedSecret", err)
	diff(t, "SharedSecret after a failed generate", []byte("ok now"), got)

	if _, err := s.SharedSecret(ctx, "empty", gen("")); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("SharedSecret(generate returns nothing): err = %v, want ErrInvalid", err)
	}
	for _, name := range []string{"", "Upper", "a/b", "{tag}"} {
		if _, err := s.SharedSecret(ctx, name, gen("x")); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("SharedSecret(name %q): err = %v, want ErrInvalid", name, err)
		}
	}
}

func testSharedSecretRace(t *testing.T, s store.Store) {
	ctx := t.Context()
	got := make([][]byte, racers)
	race(t, func(i int) error {
		var err error
		got[i], err = s.SharedSecret(ctx, "jwt", func() ([]byte, error) {
			return fmt.Appendf(nil, "secret-of-replica-%d", i), nil
		})
		return err
	})
	for i := range got {
		diff(t, fmt.Sprintf("racer %d's secret vs racer 0's", i), got[0], got[i])
	}
}

// Helpers.

var base = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func at(sec int) time.Time { return base.Add(time.Duration(sec) * time.Second) }

func commit(sha string, sec int) store.CommitRecord {
	return store.CommitRecord{
		SHA: sha, Branch: "main", Author: "Ann Example <ann@example.com>",
		Message:   "rollouts: canary for " + sha + "\n\nSigned-off-by: Ann",
		Committed: at(sec), Loaded: at(sec).Add(1500 * time.Millisecond),
		Manifests: map[string]int{"Rollout": 2, "Artifact": 3, "Device": 10},
	}
}

func ro(name, artifact, settings string) store.RolloutRecord {
	r := store.RolloutRecord{Name: name, Artifact: artifact}
	if settings != "" {
		r.Settings = json.RawMessage(settings)
	}
	return r
}

func rec(name, artifact, settings string, gen int64, start, commit string, stopped bool) store.RolloutRecord {
	r := ro(name, artifact, settings)
	r.Generation, r.StartCommit, r.Commit, r.Stopped = gen, start, commit, stopped
	return r
}

func event(commit, kind, subject string) store.Event {
	return store.Event{Time: at(5), Commit: commit, Author: "ann", Kind: kind, Subject: subject, Message: "m " + subject}
}

// timeEqual compares instants, not locations or monotonic readings.
var timeEqual = cmp.Comparer(func(a, b time.Time) bool { return a.Equal(b) })

var ignoreRolloutTimes = cmp.FilterPath(func(p cmp.Path) bool {
	sf, ok := p.Last().(cmp.StructField)
	return ok && (sf.Name() == "Started" || sf.Name() == "Updated")
}, cmp.Ignore())

func diff(t *testing.T, what string, want, got any, opts ...cmp.Option) {
	t.Helper()
	if d := cmp.Diff(want, got, append(opts, timeEqual)...); d != "" {
		t.Errorf("%s mismatch (-want +got):\n%s", what, d)
	}
}

func must(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func ok1(_ bool, err error) error { return err }

func mustSet(t *testing.T, s store.Store, next store.CommitRecord, prev string) {
	t.Helper()
	setLive(t, s, next, prev, true)
}

func setLive(t *testing.T, s store.Store, next store.CommitRecord, prev string, want bool) {
	t.Helper()
	ok, err := s.SetLive(t.Context(), next, prev)
	must(t, "SetLive", err)
	if ok != want {
		t.Fatalf("SetLive(%s, prev %q) = %v, want %v", next.SHA, prev, ok, want)
	}
}

func liveIs(t *testing.T, s store.Store, want store.CommitRecord) {
	t.Helper()
	got, err := s.Live(t.Context())
	must(t, "Live", err)
	diff(t, "Live", want, got, ignoreSeq)
}

func refuse(t *testing.T, s store.Store, r store.Refusal, want bool) {
	t.Helper()
	got, err := s.RecordRefused(t.Context(), r)
	must(t, "RecordRefused", err)
	if got != want {
		t.Fatalf("RecordRefused(%s) = %v, want %v", r.SHA, got, want)
	}
}

func lastRefusedIs(t *testing.T, s store.Store, want store.Refusal) {
	t.Helper()
	got, err := s.LastRefused(t.Context())
	must(t, "LastRefused", err)
	diff(t, "LastRefused", want, got)
}

func delivered(t *testing.T, s store.Store, id string, ttl time.Duration, want bool) {
	t.Helper()
	got, err := s.FirstDelivery(t.Context(), id, ttl)
	must(t, "FirstDelivery", err)
	if got != want {
		t.Fatalf("FirstDelivery(%q) = %v, want %v", id, got, want)
	}
}

// pages reads the whole log, size events at a time.
func pages(t *testing.T, s store.Store, size int) []store.Event {
	t.Helper()
	var all []store.Event
	after := ""
	for range 10_000 {
		page, err := s.Events(t.Context(), after, size)
		must(t, "Events", err)
		if len(page) > size {
			t.Fatalf("Events(limit %d) returned %d", size, len(page))
		}
		if len(page) == 0 {
			return all
		}
		all = append(all, page...)
		after = page[len(page)-1].ID
	}
	t.Fatal("Events paging did not end")
	return nil
}

// race runs fn(0…racers-1) at once, released together, and fails on any error.
func race(t *testing.T, fn func(i int) error) {
	t.Helper()
	var wg sync.WaitGroup
	start := make(chan struct{})
	errs := make([]error, racers)
	for i := range racers {
		wg.Go(func() {
			<-start
			errs[i] = fn(i)
		})
	}
	close(start)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
}

// eventually retries fn until it succeeds or waitLimit passes.
func eventually(t *testing.T, what string, fn func() error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), waitLimit)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		err := fn()
		if err == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for %s: gave up after %v: %v", what, waitLimit, err)
		case <-tick.C:
		}
	}
}
