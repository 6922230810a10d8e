package rollout

import (
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gitfleet/gitfleet/schema"
)

var t0 = time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC) // a Monday

// baseFleet: ten rpi4 devices, app-1 (1.0) and app-2 (2.0), and rollout
// "r" of app-2 to all of them: canary 2 devices, half 50 %, all 100 %.
func baseFleet() *schema.Fleet {
	f := &schema.Fleet{
		Devices:   declare("dev", 10, "rpi4"),
		Artifacts: []schema.Artifact{artifact("app-1", "1.0", "rpi4"), artifact("app-2", "2.0", "rpi4"), artifact("app-3", "3.0", "rpi4")},
	}
	f.Rollouts = []schema.Rollout{rollout("r", "app-2", all(), count("canary", 2), pct("half", 50), pct("all", 100))}
	return f
}

func TestNext(t *testing.T) {
	order := ranked("r", names(declare("dev", 10, "rpi4")))
	canary, second, half, last := order[0], order[1], order[2], order[9]
	g := store.GenerationRef{Rollout: "r", Generation: 1}
	progress := func(counts ...store.PhaseCounts) store.Progress { return store.Progress{Phases: counts} }
	canaryDone := store.PhaseCounts{Admitted: 2, Succeeded: 2}

	type tc struct {
		name      string
		fleet     func(f *schema.Fleet) // changes baseFleet
		records   []store.RolloutRecord // default: r generation 1
		device    string
		run       string            // artifact_name the device reports (default app-1)
		provides  map[string]string // more provides
		devType   string            // default the declared type
		gen       *store.GenerationRef
		progress  store.Progress
		completed []time.Time
		dep       *store.Deployment
		now       time.Time
		want      Decision // Action, Reason, Phase, Limit, Until, NewlyComplete compared
	}
	cases := []tc{
		{name: "not declared", device: "stranger", want: Decision{Reason: ReasonNotTargeted}},
		{name: "canary admitted", device: canary, want: Decision{Action: Admit, Reason: ReasonAdmit, Phase: 0, Limit: 2}},
		{name: "second canary admitted", device: second, want: Decision{Action: Admit, Reason: ReasonAdmit, Phase: 0, Limit: 2}},
		{name: "phase 1 device waits for canary", device: half, progress: progress(store.PhaseCounts{Admitted: 2, Succeeded: 1}),
			want: Decision{Reason: ReasonWaitPhase, Phase: 1}},
		{name: "phase 1 opens when canary complete", device: half, progress: progress(canaryDone),
			want: Decision{Action: Admit, Reason: ReasonAdmit, Phase: 1, Limit: 3, NewlyComplete: 1}},
		{name: "failures complete a phase too", device: half, progress: progress(store.PhaseCounts{Admitted: 2, Succeeded: 1, Failed: 1}),
			want: Decision{Action: Admit, Reason: ReasonAdmit, Phase: 1, Limit: 3, NewlyComplete: 1}},
		{name: "recorded completion is not new", device: half, progress: progress(canaryDone), completed: []time.Time{t0.Add(-time.Hour)},
			want: Decision{Action: Admit, Reason: ReasonAdmit, Phase: 1, Limit: 3}},
		{name: "completion latched", device: half, progress: progress(store.PhaseCounts{Admitted: 2, Succeeded: 1}), completed: []time.Time{t0.Add(-time.Hour)},
			want: Decision{Action: Admit, Reason: ReasonAdmit, Phase: 1, Limit: 3}},
		{name: "last device waits for phase 1", device: last, progress: progress(canaryDone, store.PhaseCounts{Admitted: 3, Succeeded: 2}), completed: []time.Time{t0},
			want: Decision{Reason: ReasonWaitPhase, Phase: 2}},
		{name: "last device admitted into phase 2", device: last, progress: progress(canaryDone, store.PhaseCounts{Admitted: 3, Succeeded: 3}), completed: []time.Time{t0},
			want: Decision{Action: Admit, Reason: ReasonAdmit, Phase: 2, Limit: 5, NewlyComplete: 2}},
		{name: "hold running", device: half, fleet: func(f *schema.Fleet) { f.Rollouts[0].Spec.Phases[0].Hold.Duration = time.Hour },
			progress: progress(canaryDone), completed: []time.Time{t0.Add(-20 * time.Minute)},
			want: Decision{Reason: ReasonHold, Phase: 1, Until: t0.Add(40 * time.Minute)}},
		{name: "hold starts now when completion not recorded", device: half, fleet: func(f *schema.Fleet) { f.Rollouts[0].Spec.Phases[0].Hold.Duration = time.Hour },
			progress: progress(canaryDone),
			want:     Decision{Reason: ReasonHold, Phase: 1, Until: t0.Add(time.Hour), NewlyComplete: 1}},
		{name: "hold over", device: half, fleet: func(f *schema.Fleet) { f.Rollouts[0].Spec.Phases[0].Hold.Duration = time.Hour },
			progress: progress(canaryDone), completed: []time.Time{t0.Add(-time.Hour)},
			want: Decision{Action: Admit, Reason: ReasonAdmit, Phase: 1, Limit: 3}},
		{name: "approval missing", device: half, fleet: func(f *schema.Fleet) { f.Rollouts[0].Spec.Phases[1].RequiresApproval = true },
			progress: progress(canaryDone), completed: []time.Time{t0},
			want: Decision{Reason: ReasonApproval, Phase: 1}},
		{name: "approval given", device: half, fleet: func(f *schema.Fleet) {
			f.Rollouts[0].Spec.Phases[1].RequiresApproval = true
			f.Rollouts[0].Spec.ApprovedPhases = []string{"half"}
		}, progress: progress(canaryDone), completed: []time.Time{t0},
			want: Decision{Action: Admit, Reason: ReasonAdmit, Phase: 1, Limit: 3}},
		{name: "approval after hold", device: half, fleet: func(f *schema.Fleet) {
			f.Rollouts[0].Spec.Phases[0].Hold.Duration = time.Hour
			f.Rollouts[0].Spec.Phases[1].RequiresApproval = true
		}, progress: progress(canaryDone), completed: []time.Time{t0.Add(-time.Minute)},
			want: Decision{Reason: ReasonHold, Phase: 1, Until: t0.Add(59 * time.Minute)}},
		{name: "first phase needs approval", device: canary, fleet: func(f *schema.Fleet) { f.Rollouts[0].Spec.Phases[0].RequiresApproval = true },
			want: Decision{Reason: ReasonApproval, Phase: 0}},
		{name: "paused", device: canary, fleet: func(f *schema.Fleet) { f.Rollouts[0].Spec.Paused = true },
			want: Decision{Reason: ReasonPaused}},
		{name: "aborted", device: canary, progress: store.Progress{Aborted: "too many failures"},
			want: Decision{Reason: ReasonAborted}},

		// Admitted devices.
		{name: "resume admitted", device: canary, dep: &store.Deployment{Phase: 0, State: store.StateAdmitted},
			want: Decision{Action: Resume, Reason: ReasonResume}},
		{name: "resume while paused", device: canary, fleet: func(f *schema.Fleet) { f.Rollouts[0].Spec.Paused = true },
			dep: &store.Deployment{Phase: 0, State: "downloading"}, want: Decision{Action: Resume, Reason: ReasonResume}},
		{name: "resume outside window", device: canary, fleet: func(f *schema.Fleet) {
			f.Rollouts[0].Spec.MaintenanceWindows = []schema.MaintenanceWindow{{Start: "01:00", End: "02:00"}}
		}, dep: &store.Deployment{Phase: 0, State: "installing"}, want: Decision{Action: Resume, Reason: ReasonResume}},
		{name: "resume retrying", device: canary, dep: &store.Deployment{Phase: 0, State: store.StateRetrying, Attempts: 1},
			want: Decision{Action: Resume, Reason: ReasonResume}},
		{name: "done", device: canary, run: "app-2", dep: &store.Deployment{Phase: 0, State: store.StateSuccess},
			want: Decision{Reason: ReasonDone}},
		{name: "failed, retries exhausted", device: canary, dep: &store.Deployment{Phase: 0, State: store.StateFailure, Attempts: 2},
			want: Decision{Reason: ReasonFailed}},
		{name: "admitted then aborted", device: canary, dep: &store.Deployment{Phase: 0, State: "downloading"}, progress: store.Progress{Aborted: "x"},
			want: Decision{Reason: ReasonAborted}},
		{name: "admitted and already running it", device: canary, run: "app-2", dep: &store.Deployment{Phase: 0, State: "rebooting"},
			want: Decision{Action: Installed, Reason: ReasonInstalled, Phase: 0, Limit: 2}},

		// Compatibility.
		{name: "device type", device: canary, devType: "rpi3", want: Decision{Reason: ReasonDeviceType}},
		{name: "depends unmet", device: canary, fleet: func(f *schema.Fleet) {
			f.Artifacts[1].Spec.Depends = map[string]string{"rootfs-image.version": "1.0"}
		}, want: Decision{Reason: ReasonDepends}},
		{name: "depends met", device: canary, provides: map[string]string{"rootfs-image.version": "1.0"}, fleet: func(f *schema.Fleet) {
			f.Artifacts[1].Spec.Depends = map[string]string{"rootfs-image.version": "1.0"}
		}, want: Decision{Action: Admit, Reason: ReasonAdmit, Limit: 2}},
		{name: "downgrade by artifact version", device: canary, run: "app-3", fleet: func(f *schema.Fleet) {
			f.Rollouts = append(f.Rollouts, rollout("older", "app-3", devicesTarget("nobody"), pct("all", 100)))
		}, want: Decision{Reason: ReasonDowngrade}},
		{name: "downgrade allowed", device: canary, run: "app-3", fleet: func(f *schema.Fleet) {
			f.Rollouts = append(f.Rollouts, rollout("older", "app-3", devicesTarget("nobody"), pct("all", 100)))
			f.Rollouts[0].Spec.AllowDowngrade = true
		}, want: Decision{Action: Admit, Reason: ReasonAdmit, Limit: 2}},
		{name: "other software is no downgrade", device: canary, run: "app-3", provides: map[string]string{"artifact_group": "other"}, fleet: func(f *schema.Fleet) {
			f.Rollouts = append(f.Rollouts, rollout("older", "app-3", devicesTarget("nobody"), pct("all", 100)))
		}, want: Decision{Action: Admit, Reason: ReasonAdmit, Limit: 2}},
		{name: "downgrade by provides version", device: canary, provides: map[string]string{"rootfs-image.version": "2.10"}, fleet: func(f *schema.Fleet) {
			f.Artifacts[1].Spec.Provides = map[string]string{"rootfs-image.version": "2.9"}
		}, want: Decision{Reason: ReasonDowngrade}},
		{name: "upgrade by provides version", device: canary, provides: map[string]string{"rootfs-image.version": "2.9"}, fleet: func(f *schema.Fleet) {
			f.Artifacts[1].Spec.Provides = map[string]string{"rootfs-image.version": "2.10"}
		}, want: Decision{Action: Admit, Reason: ReasonAdmit, Limit: 2}},
		{name: "unknown version is not compared", device: canary, provides: map[string]string{"rootfs-image.version": "abc"}, fleet: func(f *schema.Fleet) {
			f.Artifacts[1].Spec.Provides = map[string]string{"rootfs-image.version": "1"}
		}, want: Decision{Action: Admit, Reason: ReasonAdmit, Limit: 2}},
		{name: "already installed, due now", device: canary, run: "app-2",
			want: Decision{Action: Installed, Reason: ReasonInstalled, Limit: 2}},
		{name: "already installed, not due", device: half, run: "app-2",
			want: Decision{Reason: ReasonInstalled}},
		{name: "already installed beats device type", device: canary, run: "app-2", devType: "rpi3",
			want: Decision{Action: Installed, Reason: ReasonInstalled, Limit: 2}},

		// Maintenance windows.
		{name: "outside window", device: canary, fleet: func(f *schema.Fleet) {
			f.Rollouts[0].Spec.MaintenanceWindows = []schema.MaintenanceWindow{{Start: "22:00", End: "04:00", TimeZone: "Europe/Berlin"}}
		}, want: Decision{Reason: ReasonWindow, Until: time.Date(2026, 3, 2, 21, 0, 0, 0, time.UTC)}},
		{name: "inside window past midnight", device: canary, now: time.Date(2026, 3, 3, 2, 30, 0, 0, time.UTC), fleet: func(f *schema.Fleet) {
			f.Rollouts[0].Spec.MaintenanceWindows = []schema.MaintenanceWindow{{Start: "22:00", End: "04:00", TimeZone: "Europe/Berlin"}}
		}, want: Decision{Action: Admit, Reason: ReasonAdmit, Limit: 2}},
		{name: "outside window on the wrong day", device: canary, fleet: func(f *schema.Fleet) {
			f.Rollouts[0].Spec.MaintenanceWindows = []schema.MaintenanceWindow{{Days: []string{"sat", "sun"}, Start: "00:00", End: "00:00"}}
		}, want: Decision{Reason: ReasonWindow, Until: time.Date(2026, 3, 7, 0, 0, 0, 0, time.UTC)}},
		{name: "second window open", device: canary, fleet: func(f *schema.Fleet) {
			f.Rollouts[0].Spec.MaintenanceWindows = []schema.MaintenanceWindow{{Days: []string{"sat"}, Start: "00:00", End: "06:00"}, {Days: []string{"mon"}, Start: "09:00", End: "11:00"}}
		}, want: Decision{Action: Admit, Reason: ReasonAdmit, Limit: 2}},
		{name: "installed ignores window", device: canary, run: "app-2", fleet: func(f *schema.Fleet) {
			f.Rollouts[0].Spec.MaintenanceWindows = []schema.MaintenanceWindow{{Start: "01:00", End: "02:00"}}
		}, want: Decision{Action: Installed, Reason: ReasonInstalled, Limit: 2}},
		{name: "window not checked while waiting for a phase", device: half, fleet: func(f *schema.Fleet) {
			f.Rollouts[0].Spec.MaintenanceWindows = []schema.MaintenanceWindow{{Start: "01:00", End: "02:00"}}
		}, want: Decision{Reason: ReasonWaitPhase, Phase: 1}},

		// Room in phases.
		{name: "own phase full, next one open", device: canary, progress: progress(store.PhaseCounts{Admitted: 2, Succeeded: 2}), completed: []time.Time{t0},
			want: Decision{Action: Admit, Reason: ReasonAdmit, Phase: 1, Limit: 3}},
		{name: "own phase full, next one closed", device: canary, progress: progress(store.PhaseCounts{Admitted: 2, Succeeded: 1}),
			want: Decision{Reason: ReasonWaitPhase, Phase: 1}},
		{name: "last phase full", device: canary, fleet: func(f *schema.Fleet) { f.Rollouts[0].Spec.Phases = []schema.Phase{pct("all", 100)} },
			progress: progress(store.PhaseCounts{Admitted: 10}), want: Decision{Reason: ReasonPhaseFull}},
		{name: "beyond the last phase", device: last, fleet: func(f *schema.Fleet) { f.Rollouts[0].Spec.Phases = []schema.Phase{pct("half", 50)} },
			want: Decision{Reason: ReasonBeyondPhases}},

		// Routing.
		{name: "higher priority wins", device: canary, fleet: func(f *schema.Fleet) {
			other := rollout("a-other", "app-3", all(), pct("all", 100))
			other.Spec.Priority = 5
			f.Rollouts = append(f.Rollouts, other)
		}, records: []store.RolloutRecord{{Name: "r", Generation: 1}, {Name: "a-other", Generation: 4}},
			gen:  &store.GenerationRef{Rollout: "a-other", Generation: 4},
			want: Decision{Action: Admit, Reason: ReasonAdmit, Limit: 10}},
		{name: "equal priority: name order", device: canary, fleet: func(f *schema.Fleet) {
			f.Rollouts = append(f.Rollouts, rollout("s", "app-3", all(), pct("all", 100)))
		}, records: []store.RolloutRecord{{Name: "r", Generation: 1}, {Name: "s", Generation: 1}},
			want: Decision{Action: Admit, Reason: ReasonAdmit, Limit: 2}},
		{name: "winner waiting blocks lower priority", device: half, fleet: func(f *schema.Fleet) {
			other := rollout("low", "app-3", all(), pct("all", 100))
			other.Spec.Priority = -1
			f.Rollouts = append(f.Rollouts, other)
		}, records: []store.RolloutRecord{{Name: "r", Generation: 1}, {Name: "low", Generation: 1}},
			want: Decision{Reason: ReasonWaitPhase, Phase: 1}},
		{name: "not recorded", device: canary, records: []store.RolloutRecord{}, gen: &store.GenerationRef{},
			want: Decision{Reason: ReasonNotRecorded}},
		{name: "stopped", device: canary, records: []store.RolloutRecord{{Name: "r", Generation: 3, Stopped: true}}, gen: &store.GenerationRef{},
			want: Decision{Reason: ReasonNotRecorded}},
		{name: "stale generation", device: canary, gen: &store.GenerationRef{Rollout: "r", Generation: 2},
			want: Decision{Reason: ReasonStale}},
		{name: "device targeted by name", device: last, fleet: func(f *schema.Fleet) {
			f.Rollouts[0].Spec.Target = devicesTarget(last)
			f.Rollouts[0].Spec.Phases = []schema.Phase{count("one", 1)}
		}, want: Decision{Action: Admit, Reason: ReasonAdmit, Limit: 1}},
		{name: "device not in the group", device: last, fleet: func(f *schema.Fleet) {
			f.Groups = []schema.DeviceGroup{{Meta: schema.Meta{Name: "g"}, Spec: schema.DeviceGroupSpec{Members: []string{canary}}}}
			f.Rollouts[0].Spec.Target = schema.Target{Groups: []string{"g"}}
		}, want: Decision{Reason: ReasonNotTargeted}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := baseFleet()
			if c.fleet != nil {
				c.fleet(f)
			}
			recs := c.records
			if recs == nil {
				recs = []store.RolloutRecord{{Name: "r", Generation: 1}}
			}
			p := Compile(f, recs)
			if probs := p.Problems(); len(probs) > 0 {
				t.Fatalf("problems: %v", probs)
			}
			decl := f.Device(c.device)
			if decl == nil {
				decl = &schema.Device{Meta: schema.Meta{Name: c.device}, Spec: schema.DeviceSpec{DeviceType: "rpi4"}}
			}
			run := c.run
			if run == "" {
				run = "app-1"
			}
			d := device(decl, run)
			for k, v := range c.provides {
				d.Provides[k] = v
			}
			if c.devType != "" {
				d.DeviceType = c.devType
			}
			gen := g
			if c.gen != nil {
				gen = *c.gen
			}
			if rg, _, ok := p.Route(d); ok && c.gen == nil && rg != gen {
				t.Fatalf("Route = %v, want %v", rg, gen)
			}
			now := c.now
			if now.IsZero() {
				now = t0
			}
			got := p.Next(NextInput{Device: d, Now: now, Generation: gen, Progress: c.progress, Completed: c.completed, Deployment: c.dep})
			g := Decision{Action: got.Action, Reason: got.Reason, Phase: got.Phase, Limit: got.Limit, Until: got.Until, NewlyComplete: got.NewlyComplete}
			if !g.Until.IsZero() {
				g.Until = g.Until.UTC()
			}
			if g != c.want {
				t.Errorf("Next:\n got %+v\nwant %+v\n(%s)", g, c.want, got)
			}
			if got.Action != None && got.ArtifactName == "" {
				t.Errorf("no artifact in %s", got)
			}
		})
	}
}
