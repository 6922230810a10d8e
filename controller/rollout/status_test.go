package rollout

import (
	"strings"
	"testing"

	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gitfleet/gitfleet/schema"
)

func TestOnStatus(t *testing.T) {
	g := store.GenerationRef{Rollout: "r", Generation: 1}
	type tc struct {
		name     string
		abort    schema.AbortCriteria // phase 1's criteria
		abort2   schema.AbortCriteria // phase 2's criteria
		phase    int
		counts   []store.PhaseCounts
		aborted  string
		alerts   map[string]int64
		gen      *store.GenerationRef
		want     string // Criterion; "" for no abort
		complete bool
		reason   string // substring of Reason
	}
	cases := []tc{
		{name: "no criteria", phase: 1, counts: []store.PhaseCounts{{}, {Admitted: 3, Failed: 3}}},
		{name: "phase completes", phase: 1, counts: []store.PhaseCounts{{}, {Admitted: 48, Succeeded: 47, Failed: 1}}, complete: true},
		{name: "maxFailures 0, first failure", abort: schema.AbortCriteria{MaxFailures: ptr(0)}, phase: 1,
			counts: []store.PhaseCounts{{}, {Admitted: 3, Failed: 1}}, want: "maxFailures", reason: `phase "half": 1 device failed, more than maxFailures 0`},
		{name: "maxFailures 0, success", abort: schema.AbortCriteria{MaxFailures: ptr(0)}, phase: 1,
			counts: []store.PhaseCounts{{}, {Admitted: 3, Succeeded: 1}}},
		{name: "maxFailures 2, at 2", abort: schema.AbortCriteria{MaxFailures: ptr(2)}, phase: 1,
			counts: []store.PhaseCounts{{}, {Admitted: 3, Failed: 2}}},
		{name: "maxFailures 2, third failure", abort: schema.AbortCriteria{MaxFailures: ptr(2)}, phase: 1,
			counts: []store.PhaseCounts{{}, {Admitted: 3, Failed: 3}}, want: "maxFailures"},
		{name: "failures of another phase do not count", abort: schema.AbortCriteria{MaxFailures: ptr(0)}, phase: 1,
			counts: []store.PhaseCounts{{Admitted: 2, Failed: 2}, {Admitted: 3, Succeeded: 1}}},
		{name: "criteria of another phase do not apply", abort2: schema.AbortCriteria{MaxFailures: ptr(0)}, phase: 1,
			counts: []store.PhaseCounts{{}, {Admitted: 3, Failed: 1}}},
		{name: "percent below sample", abort: schema.AbortCriteria{MaxFailurePercent: ptr(10.0), MinSample: 10}, phase: 1,
			counts: []store.PhaseCounts{{}, {Admitted: 3, Failed: 3}}},
		{name: "percent at the share", abort: schema.AbortCriteria{MaxFailurePercent: ptr(10.0), MinSample: 10}, phase: 1,
			counts: []store.PhaseCounts{{}, {Admitted: 20, Succeeded: 9, Failed: 1}}},
		{name: "percent above the share", abort: schema.AbortCriteria{MaxFailurePercent: ptr(10.0), MinSample: 10}, phase: 1,
			counts: []store.PhaseCounts{{}, {Admitted: 20, Succeeded: 9, Failed: 2}}, want: "maxFailurePercent",
			reason: `phase "half": 2 of 11 finished devices failed (18.18%), more than maxFailurePercent 10% (minSample 10)`},
		{name: "success completing the sample aborts", abort: schema.AbortCriteria{MaxFailurePercent: ptr(10.0), MinSample: 10}, phase: 1,
			counts: []store.PhaseCounts{{}, {Admitted: 20, Succeeded: 8, Failed: 2}}, want: "maxFailurePercent"},
		{name: "percent 0 without sample: first failure", abort: schema.AbortCriteria{MaxFailurePercent: ptr(0.0)}, phase: 1,
			counts: []store.PhaseCounts{{}, {Admitted: 20, Succeeded: 8, Failed: 1}}, want: "maxFailurePercent"},
		{name: "fractional percent", abort: schema.AbortCriteria{MaxFailurePercent: ptr(2.5), MinSample: 1}, phase: 1,
			counts: []store.PhaseCounts{{}, {Admitted: 48, Succeeded: 39, Failed: 1}}},
		{name: "fractional percent exceeded", abort: schema.AbortCriteria{MaxFailurePercent: ptr(2.5), MinSample: 1}, phase: 1,
			counts: []store.PhaseCounts{{}, {Admitted: 48, Succeeded: 38, Failed: 2}}, want: "maxFailurePercent"},
		{name: "alert raised", abort: schema.AbortCriteria{Alerts: []string{"crash"}}, phase: 1,
			counts: []store.PhaseCounts{{}, {Admitted: 3}}, alerts: map[string]int64{"crash": 1}, want: "alert",
			reason: `alert "crash" raised on 1 admitted device (abort criteria of phase "half")`},
		{name: "other alert", abort: schema.AbortCriteria{Alerts: []string{"crash"}}, phase: 1,
			counts: []store.PhaseCounts{{}, {Admitted: 3}}, alerts: map[string]int64{"disk": 4}},
		{name: "alert cleared", abort: schema.AbortCriteria{Alerts: []string{"crash"}}, phase: 1,
			counts: []store.PhaseCounts{{}, {Admitted: 3}}, alerts: map[string]int64{"crash": 0}},
		{name: "alert of an earlier phase device, later phase criteria", abort: schema.AbortCriteria{Alerts: []string{"crash"}}, phase: 0,
			counts: []store.PhaseCounts{{Admitted: 2, Succeeded: 2}, {Admitted: 3}}, alerts: map[string]int64{"crash": 1}, want: "alert", complete: true},
		{name: "alert of a phase not reached", abort2: schema.AbortCriteria{Alerts: []string{"crash"}}, phase: 1,
			counts: []store.PhaseCounts{{}, {Admitted: 3}}, alerts: map[string]int64{"crash": 1}},
		{name: "already aborted", abort: schema.AbortCriteria{MaxFailures: ptr(0)}, phase: 1, aborted: "earlier",
			counts: []store.PhaseCounts{{}, {Admitted: 3, Failed: 3}}},
		{name: "other generation", abort: schema.AbortCriteria{MaxFailures: ptr(0)}, phase: 1, gen: &store.GenerationRef{Rollout: "r", Generation: 7},
			counts: []store.PhaseCounts{{}, {Admitted: 3, Failed: 3}}},
		{name: "phase out of range", abort: schema.AbortCriteria{MaxFailures: ptr(0)}, phase: 9,
			counts: []store.PhaseCounts{{}, {Admitted: 3, Failed: 3}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := baseFleet()
			f.Devices = declare("dev", 100, "rpi4") // phase "half" has a quota of 48
			f.Rollouts[0].Spec.Phases[1].Abort = c.abort
			f.Rollouts[0].Spec.Phases[2].Abort = c.abort2
			p := Compile(f, []store.RolloutRecord{{Name: "r", Generation: 1}})
			gen := g
			if c.gen != nil {
				gen = *c.gen
			}
			got := p.OnStatus(StatusInput{Generation: gen, Phase: c.phase, Progress: store.Progress{Phases: c.counts, Aborted: c.aborted}, Alerts: c.alerts})
			if got.Criterion != c.want || got.Abort != (c.want != "") {
				t.Errorf("OnStatus = %+v, want criterion %q", got, c.want)
			}
			if got.PhaseCompleted != c.complete {
				t.Errorf("PhaseCompleted = %v, want %v", got.PhaseCompleted, c.complete)
			}
			if !strings.Contains(got.Reason, c.reason) {
				t.Errorf("Reason = %q, want it to contain %q", got.Reason, c.reason)
			}
			if got.Abort && (got.Reason == "" || len(got.Reason) > 1024) {
				t.Errorf("Reason %q unusable for store.Abort", got.Reason)
			}
		})
	}
}
