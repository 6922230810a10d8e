package rollout

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gitfleet/gitfleet/schema"
)

// sim runs devices against a harness in rounds: every round each device
// that has not finished polls (in a shuffled order), and a device that got
// a deployment reports its outcome in the next round.
type sim struct {
	t       *testing.T
	h       *harness
	g       store.GenerationRef
	devices []*Device
	rng     *rand.Rand
	step    time.Duration
	fails   func(d *Device, dep store.Deployment) bool // outcome of an install

	installing map[string]bool
	finished   map[string]bool
	abortedAt  time.Time
	// reports of final states in order, with the phase counts after each.
	onReport func(d *Device, dep store.Deployment, sd StatusDecision)
}

func newSim(t *testing.T, fleet *schema.Fleet, step time.Duration) *sim {
	s := &sim{t: t, h: newHarness(t, fleet, t0), rng: rand.New(rand.NewPCG(1, 2)), step: step,
		installing: map[string]bool{}, finished: map[string]bool{}}
	s.g = store.GenerationRef{Rollout: fleet.Rollouts[0].Name, Generation: 1}
	for i := range fleet.Devices {
		s.devices = append(s.devices, device(&fleet.Devices[i], "app-1"))
	}
	return s
}

func (s *sim) round() {
	order := slices.Clone(s.devices)
	s.rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
	for _, d := range order {
		if s.finished[d.ID] {
			continue
		}
		if s.installing[d.ID] {
			dep := *s.h.st.gen(s.g).devs[d.ID]
			state := store.StateSuccess
			if s.fails != nil && s.fails(d, dep) {
				state = store.StateFailure
			}
			dep, sd := s.h.report(d, s.g, state)
			delete(s.installing, d.ID)
			if dep.State == store.StateSuccess || dep.State == store.StateFailure {
				s.finished[d.ID] = true
				if dep.State == store.StateSuccess {
					d.Provides["artifact_name"] = "app-2"
				}
			}
			if s.onReport != nil {
				s.onReport(d, dep, sd)
			}
			if sd.Abort {
				s.abortedAt = s.h.now
			}
			continue
		}
		dec, install := s.h.poll(d)
		if install {
			s.installing[d.ID] = true
		}
		if dec.Reason == ReasonAborted || dec.Reason == ReasonDone {
			s.finished[d.ID] = true
		}
	}
	s.h.now = s.h.now.Add(s.step)
}

// firstAdmission returns when phase k admitted its first device.
func (s *sim) firstAdmission(k int) time.Time {
	for _, a := range s.h.st.gen(s.g).log {
		if a.phase == k {
			return a.at
		}
	}
	return time.Time{}
}

// homes returns each device's own phase under plan p (-1: none): the
// first phase it is eligible for.
func homes(p *Plan, g store.GenerationRef, devices []*Device) map[string]int {
	pl := p.byName[g.Rollout]
	out := make(map[string]int, len(devices))
	for _, d := range devices {
		out[d.ID] = -1
		if !pl.targets(d, int(p.devices[d.ID])) {
			continue
		}
		key := keyT{Key(g.Rollout, d.ID), d.ID}
		for j := range pl.phases {
			if pl.eligible(j, key) {
				out[d.ID] = j
				break
			}
		}
	}
	return out
}

func simFleet(n int) *schema.Fleet {
	f := &schema.Fleet{
		Devices:   declare("sim", n, "rpi4"),
		Artifacts: []schema.Artifact{artifact("app-1", "1", "rpi4"), artifact("app-2", "2", "rpi4")},
	}
	r := rollout("fleet", "app-2", all(), count("canary", 50), pct("wave", 20), pct("all", 100))
	r.Spec.Phases[0].Hold.Duration = 30 * time.Minute
	r.Spec.Phases[1].Hold.Duration = time.Hour
	r.Spec.Phases[1].RequiresApproval = true
	r.Spec.Phases[2].RequiresApproval = true
	f.Rollouts = []schema.Rollout{r}
	return f
}

// TestSimulation: 10,000 devices through count 50 (hold 30m), 20 %
// (approval, hold 1h), 100 % (approval); 500 devices join midway.
func TestSimulation(t *testing.T) {
	if testing.Short() {
		t.Skip("simulation")
	}
	const n, added = 10_000, 500
	f := simFleet(n)
	s := newSim(t, f, 5*time.Minute)
	g := s.g
	approve := func(phase string) time.Time {
		f.Rollouts[0].Spec.ApprovedPhases = append(f.Rollouts[0].Spec.ApprovedPhases, phase)
		s.h.recompile()
		return s.h.now
	}
	var approvedWave, approvedAll time.Time
	for round := 0; round < 200; round++ {
		switch round {
		case 30:
			approvedWave = approve("wave")
		case 40:
			// Devices join while "wave" runs: declared in a new commit.
			before := homes(s.h.plan, g, s.devices)
			oldFleet := f.Devices
			f.Devices = append(slices.Clone(oldFleet), declare("late", added, "rpi4")...)
			s.h.recompile()
			after := homes(s.h.plan, g, s.devices)
			moved := 0
			for id, k := range before {
				if after[id] != k {
					moved++
					if d := after[id] - k; d != 1 && d != -1 {
						t.Errorf("%s moved from phase %d to %d", id, k, after[id])
					}
				}
			}
			// Only devices right at a boundary move, and only by as many
			// ranks as devices were added before them.
			if moved > added {
				t.Errorf("%d devices changed phase after %d joined", moved, added)
			}
			t.Logf("%d joined: %d of %d devices changed phase (each by one, at a boundary)", added, moved, n)
			for i := range added {
				s.devices = append(s.devices, device(&f.Devices[n+i], "app-1"))
			}
		case 80:
			approvedAll = approve("all")
		}
		s.round()
	}
	fg := s.h.st.gen(g)
	in, _ := s.h.plan.Rollout("fleet")
	if in.Size != n+added {
		t.Fatalf("size %d", in.Size)
	}
	wantLimits := []int64{50, 2100 - 50, 10_500 - 2100}
	for k, ph := range in.Phases {
		if ph.Limit != wantLimits[k] {
			t.Errorf("phase %d limit %d, want %d", k, ph.Limit, wantLimits[k])
		}
		if c := fg.counts[k]; c.Admitted != ph.Limit || c.Succeeded != ph.Limit {
			t.Errorf("phase %s: %+v, want exactly %d admitted and succeeded", ph.Name, c, ph.Limit)
		}
	}
	if len(s.finished) != n+added {
		t.Errorf("%d devices finished, want %d", len(s.finished), n+added)
	}
	// Holds and approvals.
	if got, min := s.firstAdmission(1), maxTime(fg.completed[0].Add(30*time.Minute), approvedWave); got.Before(min) {
		t.Errorf("wave opened at %s, before %s", got, min)
	}
	if got, min := s.firstAdmission(2), maxTime(fg.completed[1].Add(time.Hour), approvedAll); got.Before(min) {
		t.Errorf("all opened at %s, before %s", got, min)
	}
	// Canary membership: exactly the 50 lowest keys of the first 10,000
	// (the late devices that rank among them had not joined yet).
	var canaries []string
	for _, a := range fg.log {
		if a.phase == 0 {
			canaries = append(canaries, a.device)
		}
	}
	slices.Sort(canaries)
	want := ranked("fleet", names(f.Devices[:n]))[:50]
	slices.Sort(want)
	if !slices.Equal(canaries, want) {
		t.Errorf("canaries are not the 50 lowest keys")
	}
	t.Logf("completed: canary %s, wave %s (approved %s), all %s (approved %s)",
		fg.completed[0].Format("15:04"), fg.completed[1].Format("15:04"), approvedWave.Format("15:04"), fg.completed[2].Format("15:04"), approvedAll.Format("15:04"))
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// TestSimulationAbort: failures injected in phase "wave" (about 8 % of its
// devices); it aborts on maxFailurePercent 5 with minSample 100 at exactly
// the report that first puts the failed share above 5 %, and nobody is
// admitted after it.
func TestSimulationAbort(t *testing.T) {
	if testing.Short() {
		t.Skip("simulation")
	}
	for _, tc := range []struct {
		name  string
		abort schema.AbortCriteria
		phase int
		crit  func(c store.PhaseCounts) bool
	}{
		{"maxFailurePercent", schema.AbortCriteria{MaxFailurePercent: ptr(5.0), MinSample: 100}, 1,
			func(c store.PhaseCounts) bool { f := c.Succeeded + c.Failed; return f >= 100 && c.Failed*100 > 5*f }},
		{"maxFailures", schema.AbortCriteria{MaxFailures: ptr(3)}, 1,
			func(c store.PhaseCounts) bool { return c.Failed > 3 }},
		{"canary maxFailures 0", schema.AbortCriteria{MaxFailures: ptr(0)}, 0,
			func(c store.PhaseCounts) bool { return c.Failed > 0 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := simFleet(10_000)
			ro := &f.Rollouts[0].Spec
			ro.ApprovedPhases = []string{"wave", "all"}
			ro.Phases[tc.phase].Abort = tc.abort
			s := newSim(t, f, 5*time.Minute)
			s.fails = func(d *Device, dep store.Deployment) bool {
				return dep.Phase == tc.phase && Position("failures", d.ID) < 0.08
			}
			var counts store.PhaseCounts
			reports, abortAt := 0, -1
			s.onReport = func(d *Device, dep store.Deployment, sd StatusDecision) {
				if dep.Phase != tc.phase {
					return
				}
				reports++
				prev := counts
				counts = s.h.st.gen(s.g).counts[tc.phase]
				crossed := !tc.crit(prev) && tc.crit(counts)
				if abortAt < 0 && crossed != sd.Abort {
					t.Fatalf("report %d (%+v): abort %v, criterion crossed %v", reports, counts, sd.Abort, crossed)
				}
				if sd.Abort {
					if abortAt >= 0 {
						t.Fatalf("aborted twice")
					}
					abortAt = reports
					t.Logf("aborted at report %d of phase %d with %+v: %s", reports, tc.phase, counts, sd.Reason)
				}
			}
			for range 100 {
				s.round()
			}
			fg := s.h.st.gen(s.g)
			if fg.aborted == "" {
				t.Fatal("never aborted")
			}
			if s.h.admitsAfterAbort != 0 {
				t.Errorf("%d admissions after the abort", s.h.admitsAfterAbort)
			}
			for _, a := range fg.log {
				if a.at.After(s.abortedAt) {
					t.Errorf("%s admitted into phase %d at %s, after the abort at %s", a.device, a.phase, a.at, s.abortedAt)
				}
			}
			if fg.counts[tc.phase+1].Admitted != 0 {
				t.Errorf("next phase admitted %d", fg.counts[tc.phase+1].Admitted)
			}
			// Everybody, admitted or not, is told the rollout aborted.
			for _, d := range s.devices[:100] {
				if dec, _ := s.h.poll(d); dec.Reason != ReasonAborted {
					t.Fatalf("%s after abort: %s", d.ID, dec)
				}
			}
		})
	}
}

func ExamplePlan_Next() {
	fleet := &schema.Fleet{
		Devices:   declare("dev", 100, "rpi4"),
		Artifacts: []schema.Artifact{artifact("app-2", "2", "rpi4")},
		Rollouts:  []schema.Rollout{rollout("hello", "app-2", all(), count("canary", 5), pct("all", 100))},
	}
	plan := Compile(fleet, []store.RolloutRecord{{Name: "hello", Generation: 1}})
	dev := &Device{ID: "dev-0042", DeviceType: "rpi4", Provides: map[string]string{"artifact_name": "app-1"}}
	g, _, _ := plan.Route(dev)
	// The caller reads store.Progress(g) and store.Deployment(g, dev.ID) here.
	dec := plan.Next(NextInput{Device: dev, Now: t0, Generation: g})
	fmt.Println(dec)
	// Output: none waiting-phase hello:1 phase 1 "all"
}
