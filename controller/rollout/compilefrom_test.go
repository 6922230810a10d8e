package rollout

import (
	"reflect"
	"slices"
	"testing"

	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gitfleet/gitfleet/schema"
)

// compileFromFleet: 300 devices of two types, a group by members and one
// by selector, and rollouts of all of them, of a group, of a selector and
// of listed devices.
func compileFromFleet() *schema.Fleet {
	f := &schema.Fleet{Devices: append(declare("a", 200, "rpi4"), declare("b", 100, "rpi3")...)}
	f.Artifacts = []schema.Artifact{artifact("app", "2", "rpi4", "rpi3"), artifact("pi4", "3", "rpi4")}
	var members []string
	for i := 0; i < 200; i += 7 {
		members = append(members, f.Devices[i].Name)
	}
	f.Groups = []schema.DeviceGroup{
		{Meta: schema.Meta{Kind: schema.KindDeviceGroup, Name: "ring"}, Spec: schema.DeviceGroupSpec{Members: members}},
		{Meta: schema.Meta{Kind: schema.KindDeviceGroup, Name: "labs"}, Spec: schema.DeviceGroupSpec{
			Selector: &schema.Selector{Identity: map[string]schema.Match{"mac": {Glob: "b-00*"}}}}},
	}
	f.Rollouts = []schema.Rollout{
		rollout("everyone", "app", all(), count("canary", 3), pct("half", 50), pct("all", 100)),
		rollout("ring", "pi4", schema.Target{Groups: []string{"ring"}}, pct("first", 30), pct("rest", 100)),
		rollout("labs", "app", schema.Target{Groups: []string{"labs"}}, count("one", 1), pct("all", 100)),
		rollout("some", "pi4", devicesTarget("a-0001", "a-0002", "b-0003"), pct("all", 100)),
	}
	for i := range f.Rollouts {
		f.Rollouts[i].Spec.Priority = 10 * i
	}
	return f
}

// compiled is what a Plan decided for each rollout, comparable.
func compiled(p *Plan) map[string]any {
	out := map[string]any{"devices": p.devices, "problems": p.problems}
	for name, pl := range p.byName {
		out[name] = []any{pl.yes, pl.maybe, pl.exact, pl.size, pl.keys, pl.phases, pl.open, len(pl.selectors)}
	}
	return out
}

// CompileFrom gives the Plan Compile gives, whatever changed since the
// earlier Plan, and reuses the earlier targets only when they still hold.
func TestCompileFromSameAsCompile(t *testing.T) {
	recs := []store.RolloutRecord{{Name: "everyone", Generation: 1}, {Name: "ring", Generation: 2}, {Name: "labs", Generation: 1}, {Name: "some", Generation: 4}}
	base := compileFromFleet()
	prev := Compile(base, recs)
	for _, tc := range []struct {
		name   string
		change func(f *schema.Fleet)
		reused []string // rollouts whose targets carry over
	}{
		{"nothing", func(f *schema.Fleet) {}, []string{"everyone", "ring", "labs", "some"}},
		{"phases and abort criteria", func(f *schema.Fleet) {
			f.Rollouts[0].Spec.Phases = []schema.Phase{count("canary", 5), pct("all", 100)}
			f.Rollouts[1].Spec.Phases[0].Abort.MaxFailures = ptr(3)
		}, []string{"everyone", "ring", "labs", "some"}},
		{"a target", func(f *schema.Fleet) {
			f.Rollouts[3].Spec.Target = devicesTarget("a-0001", "b-0004")
		}, []string{"everyone", "ring", "labs"}},
		{"a group's members", func(f *schema.Fleet) {
			f.Groups[0].Spec.Members = f.Groups[0].Spec.Members[1:]
		}, []string{"everyone", "labs", "some"}},
		{"a group's selector", func(f *schema.Fleet) {
			f.Groups[1].Spec.Selector = &schema.Selector{Identity: map[string]schema.Match{"mac": {Glob: "b-000*"}}}
		}, []string{"everyone", "ring", "some"}},
		{"an artifact's device types", func(f *schema.Fleet) {
			f.Artifacts[1].Spec.DeviceTypes = []string{"rpi4", "rpi3"}
		}, []string{"everyone", "labs"}},
		{"a rollout renamed", func(f *schema.Fleet) {
			f.Rollouts[0].Name = "all-of-them"
		}, []string{"ring", "labs", "some"}},
		{"a DeviceCA declared", func(f *schema.Fleet) {
			f.DeviceCAs = []schema.DeviceCA{{Meta: schema.Meta{Kind: schema.KindDeviceCA, Name: "factory"}}}
		}, []string{"everyone", "ring", "labs", "some"}},
		{"other devices", func(f *schema.Fleet) {
			f.Devices = slices.Clone(f.Devices)
			f.Devices[5].Spec.DeviceType = "rpi3"
		}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := compileFromFleet()
			f.Devices = base.Devices // shared, as the loader shares them
			tc.change(f)
			got, want := CompileFrom(prev, f, recs), Compile(f, recs)
			if g, w := compiled(got), compiled(want); !reflect.DeepEqual(g, w) {
				for k := range w {
					if !reflect.DeepEqual(g[k], w[k]) {
						t.Errorf("%s: CompileFrom differs from Compile", k)
					}
				}
			}
			for name, pl := range got.byName {
				old := prev.byName[name]
				shared := old != nil && len(pl.yes) > 0 && &pl.yes[0] == &old.yes[0]
				if want := slices.Contains(tc.reused, name); shared != want {
					t.Errorf("rollout %s: targets reused %v, want %v", name, shared, want)
				}
			}
			// And every decision agrees.
			for i := range f.Devices {
				d := device(&f.Devices[i], "app-1")
				g1, r1, ok1 := got.Route(d)
				g2, r2, ok2 := want.Route(d)
				if g1 != g2 || r1 != r2 || ok1 != ok2 {
					t.Fatalf("%s: routed %v %s %v by CompileFrom, %v %s %v by Compile", d.ID, g1, r1, ok1, g2, r2, ok2)
				}
			}
		})
	}
}
