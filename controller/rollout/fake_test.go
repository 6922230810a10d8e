package rollout

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gitfleet/gitfleet/schema"
)

// fakeGen is one generation in fakeStore: the semantics of
// store.Deployments (Admit, Report, Progress, Abort) plus the phase
// completion times the caller records, first writer wins.
type fakeGen struct {
	counts    [store.MaxPhases]store.PhaseCounts
	aborted   string
	devs      map[string]*store.Deployment
	completed []time.Time
	log       []admission // every admission, in order
}

type admission struct {
	device string
	phase  int
	at     time.Time
}

// fakeStore is an in-memory store.Deployments for tests.
type fakeStore struct {
	gens map[store.GenerationRef]*fakeGen
}

func newFakeStore() *fakeStore { return &fakeStore{gens: make(map[store.GenerationRef]*fakeGen)} }

func (s *fakeStore) gen(g store.GenerationRef) *fakeGen {
	fg := s.gens[g]
	if fg == nil {
		fg = &fakeGen{devs: make(map[string]*store.Deployment)}
		s.gens[g] = fg
	}
	return fg
}

func (g *fakeGen) admit(phase int, limit int64, device string, now time.Time) (store.Deployment, bool) {
	if d := g.devs[device]; d != nil {
		return *d, true
	}
	if g.aborted != "" || g.counts[phase].Admitted >= limit {
		return store.Deployment{}, false
	}
	g.counts[phase].Admitted++
	d := &store.Deployment{Phase: phase, State: store.StateAdmitted, Admitted: now}
	g.devs[device] = d
	g.log = append(g.log, admission{device, phase, now})
	return *d, true
}

func (g *fakeGen) report(device, state string, retries int) (store.Deployment, bool, error) {
	d := g.devs[device]
	if d == nil {
		return store.Deployment{}, false, store.ErrNotFound
	}
	prev := *d
	switch {
	case store.FinalState(d.State):
	case state == store.StateTimeout:
		d.State = state
		g.counts[d.Phase].TimedOut++
	case state == store.StateFailure && d.Attempts < retries:
		d.State, d.Attempts = store.StateRetrying, d.Attempts+1
	case state == store.StateSuccess:
		d.State = state
		g.counts[d.Phase].Succeeded++
	case state == store.StateFailure:
		d.State = state
		g.counts[d.Phase].Failed++
	default:
		d.State = state
	}
	return *d, *d != prev, nil
}

func (g *fakeGen) progress() store.Progress {
	p := store.Progress{Aborted: g.aborted}
	last := -1
	for i, c := range g.counts {
		if c != (store.PhaseCounts{}) {
			last = i
		}
	}
	p.Phases = slices.Clone(g.counts[:last+1])
	// As the stores do: a phase's counts carry when it was completed.
	for k, t := range g.completed {
		if !t.IsZero() {
			for len(p.Phases) <= k {
				p.Phases = append(p.Phases, store.PhaseCounts{})
			}
			p.Phases[k].Completed = t
		}
	}
	return p
}

func (g *fakeGen) complete(mask uint64, now time.Time) {
	for k := range 64 {
		if mask&(1<<k) == 0 {
			continue
		}
		for len(g.completed) <= k {
			g.completed = append(g.completed, time.Time{})
		}
		if g.completed[k].IsZero() {
			g.completed[k] = now
		}
	}
}

// harness drives a Plan the way the device API will: Route, read the
// store, Next, carry out the decision; Report, OnStatus, carry it out.
type harness struct {
	t     testing.TB
	fleet *schema.Fleet
	recs  []store.RolloutRecord
	plan  *Plan
	st    *fakeStore
	now   time.Time
	// admitsAfterAbort counts admissions into generations already
	// aborted (must stay 0).
	admitsAfterAbort int
	// seen is when each device was last seen (polls and "seen" lines);
	// tracked only when trackSeen, which golden scripts turn on.
	seen      map[string]time.Time
	trackSeen bool
	// refused is why the controller refuses a rollout's artifact, by
	// rollout name.
	refused map[string]string
}

func newHarness(t testing.TB, fleet *schema.Fleet, now time.Time) *harness {
	h := &harness{t: t, fleet: fleet, st: newFakeStore(), now: now, seen: map[string]time.Time{}, refused: map[string]string{}}
	for _, ro := range fleet.Rollouts {
		h.recs = append(h.recs, store.RolloutRecord{Name: ro.Name, Artifact: ro.Spec.Artifact, Generation: 1})
	}
	h.plan = Compile(fleet, h.recs)
	if p := h.plan.Problems(); len(p) > 0 {
		t.Fatalf("problems: %v", p)
	}
	return h
}

// recompile takes a changed fleet (same generations).
func (h *harness) recompile() { h.plan = Compile(h.fleet, h.recs) }

// poll runs one deployments/next and returns the decision and whether
// the device got a deployment to install.
func (h *harness) poll(d *Device) (Decision, bool) {
	g, _, ok := h.plan.Route(d)
	in := NextInput{Device: d, Now: h.now, Generation: g}
	var fg *fakeGen
	if ok {
		fg = h.st.gen(g)
		in.Progress = fg.progress()
		in.Completed = fg.completed
		if dep := fg.devs[d.ID]; dep != nil {
			dd := *dep
			in.Deployment = &dd
		}
		in.ArtifactRefused = h.refused[g.Rollout]
		if h.trackSeen {
			h.seen[d.ID] = h.now
			in.LastSeen = func(id string) time.Time { return h.seen[id] }
			in.Admitted = func(id string) bool { return fg.devs[id] != nil }
		}
	}
	dec := h.plan.Next(in)
	if fg == nil {
		return dec, false
	}
	fg.complete(dec.NewlyComplete, h.now)
	if dec.TimedOut {
		h.report(d, g, store.StateTimeout)
		return dec, false
	}
	switch dec.Action {
	case Admit, Installed:
		wasAborted := fg.aborted != ""
		_, admitted := fg.admit(dec.Phase, dec.Limit, d.ID, h.now)
		if admitted && wasAborted {
			h.admitsAfterAbort++
		}
		if !admitted {
			return dec, false
		}
		if dec.Action == Installed {
			h.report(d, g, store.StateSuccess)
			return dec, false
		}
		return dec, true
	case Resume:
		return dec, true
	}
	return dec, false
}

// report runs one status report and carries out OnStatus.
func (h *harness) report(d *Device, g store.GenerationRef, state string) (store.Deployment, StatusDecision) {
	fg := h.st.gen(g)
	retries := h.fleet.Rollout(g.Rollout).Spec.Retries
	dep, changed, err := fg.report(d.ID, state, retries)
	if err != nil {
		h.t.Fatalf("report %s %s: %v", d.ID, state, err)
	}
	if !changed {
		return dep, StatusDecision{}
	}
	sd := h.plan.OnStatus(StatusInput{Generation: g, Phase: dep.Phase, Progress: fg.progress()})
	if sd.PhaseCompleted {
		fg.complete(1<<dep.Phase, h.now)
	}
	if sd.Abort && fg.aborted == "" {
		fg.aborted = sd.Reason
	}
	return dep, sd
}

// alert runs OnStatus for an alert raised on an admitted device.
func (h *harness) alert(d *Device, g store.GenerationRef, alerts map[string]int64) StatusDecision {
	fg := h.st.gen(g)
	dep := fg.devs[d.ID]
	if dep == nil {
		h.t.Fatalf("alert on %s, not admitted to %s", d.ID, g)
	}
	sd := h.plan.OnStatus(StatusInput{Generation: g, Phase: dep.Phase, Progress: fg.progress(), Alerts: alerts})
	if sd.Abort && fg.aborted == "" {
		fg.aborted = sd.Reason
	}
	return sd
}

// sweep reports a timeout for every admitted device of g past its
// deadline (in ID order) while g is not aborted, as the device API's
// sweep does, and returns
// what each report decided.
func (h *harness) sweep(g store.GenerationRef) (ids []string, sds []StatusDecision) {
	fg := h.st.gen(g)
	if fg.aborted != "" {
		return nil, nil // an aborted generation's devices are told so; nothing is counted
	}
	for _, id := range slices.Sorted(maps.Keys(fg.devs)) {
		if t, ok := h.plan.Deadline(g, *fg.devs[id]); ok && !h.now.Before(t) {
			_, sd := h.report(&Device{ID: id}, g, store.StateTimeout)
			ids, sds = append(ids, id), append(sds, sd)
		}
	}
	return ids, sds
}

// settle runs the device API's periodic check for phases over because
// their remaining devices are offline, and records what it finds.
func (h *harness) settle(g store.GenerationRef) string {
	fg := h.st.gen(g)
	in := NextInput{Now: h.now, Generation: g, Progress: fg.progress(), Completed: fg.completed,
		ArtifactRefused: h.refused[g.Rollout],
		LastSeen:        func(id string) time.Time { return h.seen[id] },
		Admitted:        func(id string) bool { return fg.devs[id] != nil }}
	bits := h.plan.Settle(in)
	fg.complete(bits, h.now)
	var phases []string
	for k := range 64 {
		if bits&(1<<k) != 0 {
			phases = append(phases, fmt.Sprint(k))
		}
	}
	if len(phases) == 0 {
		return "none"
	}
	return strings.Join(phases, ",")
}

func (h *harness) String() string { return fmt.Sprintf("harness at %s", h.now.Format(time.RFC3339)) }
