package rollout

import (
	"fmt"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gitfleet/gitfleet/schema"
)

// benchFleet: n devices and 100 rollouts with distinct priorities, each
// targeting a group of a tenth of the devices (by static members), a
// selector over device_type, or a selector over reported inventory; the
// device polled is targeted by the lowest-priority one only, so routing
// looks at all 100.
func benchFleet(n int) (*schema.Fleet, []store.RolloutRecord) {
	f := &schema.Fleet{Devices: declare("dev", n, "rpi4")}
	var recs []store.RolloutRecord
	for i := range 100 {
		art := artifact(fmt.Sprintf("app-%d", i), fmt.Sprintf("%d.0", i), "rpi4", "rpi3")
		art.Spec.Provides = map[string]string{"rootfs-image.version": fmt.Sprintf("%d.0", i)}
		f.Artifacts = append(f.Artifacts, art)
		var target schema.Target
		switch i % 3 {
		case 0:
			g := schema.DeviceGroup{Meta: schema.Meta{Name: fmt.Sprintf("g%d", i)}}
			for j := i % 10; j < n; j += 10 {
				if j != 1 {
					g.Spec.Members = append(g.Spec.Members, f.Devices[j].Name)
				}
			}
			if i == 99 {
				g.Spec.Members = g.Spec.Members[:0]
				for j := 1; j < n; j += 10 {
					g.Spec.Members = append(g.Spec.Members, f.Devices[j].Name)
				}
			}
			f.Groups = append(f.Groups, g)
			target = schema.Target{Groups: []string{g.Name}}
		case 1:
			target = schema.Target{Selector: &schema.Selector{Inventory: map[string]schema.Match{"device_type": {Equal: ptr("rpi3")}}}}
		case 2:
			target = schema.Target{Selector: &schema.Selector{Inventory: map[string]schema.Match{"site": {Equal: ptr(fmt.Sprintf("site-%d", i))}}}}
		}
		r := rollout(fmt.Sprintf("r%03d", i), art.Name, target, count("canary", 5), pct("wave", 20), pct("all", 100))
		r.Spec.Priority = 1000 - i
		r.Spec.Phases[1].Hold.Duration = time.Hour
		r.Spec.MaintenanceWindows = []schema.MaintenanceWindow{{Start: "22:00", End: "06:00", TimeZone: "Europe/Berlin"}}
		f.Rollouts = append(f.Rollouts, r)
		recs = append(recs, store.RolloutRecord{Name: r.Name, Generation: 3})
	}
	return f, recs
}

// BenchmarkNext is one poll: Route, then Next for a device in an open
// phase of the lowest-priority rollout (so routing passes 99 others).
func BenchmarkNext(b *testing.B) {
	for _, n := range []int{10_000, 1_000_000} {
		b.Run(fmt.Sprintf("devices=%d", n), func(b *testing.B) {
			f, recs := benchFleet(n)
			p := Compile(f, recs)
			d := device(&f.Devices[1], "app-1")
			d.Inventory["site"] = "nowhere"
			d.Provides["rootfs-image.version"] = "1.0"
			progress := store.Progress{Phases: []store.PhaseCounts{{Admitted: 5, Succeeded: 5}, {Admitted: 10, Succeeded: 3}}}
			completed := []time.Time{t0.Add(-3 * time.Hour), t0.Add(-2 * time.Hour)}
			now := time.Date(2026, 3, 2, 23, 0, 0, 0, time.UTC)
			g, _, ok := p.Route(d)
			if !ok || g.Rollout != "r099" {
				b.Fatalf("route %v", g)
			}
			if dec := p.Next(NextInput{Device: d, Now: now, Generation: g, Progress: progress, Completed: completed}); dec.Action != Admit {
				b.Fatalf("decision %s", dec)
			}
			b.ReportAllocs()
			for b.Loop() {
				g, _, _ := p.Route(d)
				_ = p.Next(NextInput{Device: d, Now: now, Generation: g, Progress: progress, Completed: completed})
			}
		})
	}
}

// BenchmarkCompile is the per-Snapshot cost.
func BenchmarkCompile(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		b.Run(fmt.Sprintf("devices=%d", n), func(b *testing.B) {
			f, recs := benchFleet(n)
			b.ReportAllocs()
			for b.Loop() {
				Compile(f, recs)
			}
		})
	}
}

// BenchmarkCompileFleet compiles the plan of a fleet of a million devices
// with one rollout of the whole fleet in three phases (the load
// generator's fleet): "first" from scratch (Compile), "recompile" as
// after a commit that changed the rollout's settings but not its target
// nor the devices (CompileFrom the previous Plan).
//
//	go test ./controller/rollout -run '^$' -bench CompileFleet -benchmem
func BenchmarkCompileFleet(b *testing.B) {
	const n = 1_000_000
	f := &schema.Fleet{Devices: declare("dev", n, "rpi4")}
	f.Artifacts = append(f.Artifacts, artifact("app", "2.0", "rpi4"))
	f.Rollouts = append(f.Rollouts, rollout("fleet", "app", schema.Target{All: true}, count("canary", 10), pct("half", 50), pct("all", 100)))
	recs := []store.RolloutRecord{{Name: "fleet", Generation: 1}}
	b.Run("first", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			Compile(f, recs)
		}
	})
	b.Run("recompile", func(b *testing.B) {
		prev := Compile(f, recs)
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			g := *f
			g.Rollouts = []schema.Rollout{f.Rollouts[0]}
			g.Rollouts[0].Spec.Phases = append([]schema.Phase(nil), f.Rollouts[0].Spec.Phases...)
			failures := i + 1
			g.Rollouts[0].Spec.Phases[2].Abort.MaxFailures = &failures
			prev = CompileFrom(prev, &g, recs)
		}
	})
}
