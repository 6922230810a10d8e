package rollout

import (
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gitfleet/gitfleet/schema"
)

func TestCompareVersions(t *testing.T) {
	cases := []struct {
		a, b string
		want int
		ok   bool
	}{
		{"1", "1", 0, true},
		{"1.0", "1", 0, true},
		{"1.2.0", "1.2", 0, true},
		{"1.10", "1.9", 1, true},
		{"1.9", "1.10", -1, true},
		{"v2.0.1", "2.0.0", 1, true},
		{"2.0.0-rc.1", "2.0.0", -1, true},
		{"2.0.0", "2.0.0-rc.1", 1, true},
		{"2.0.0-rc.2", "2.0.0-rc.10", -1, true},
		{"2.0.0-alpha", "2.0.0-beta", -1, true},
		{"3.1+git42", "3.1+git7", 0, true},
		{"007", "7", 0, true},
		{"1.a", "1.b", -1, true},
		{"2024.01.15", "2023.12.31", 1, true},
		{"release-2", "1", 0, false},
		{"", "1", 0, false},
		{"1", "abc", 0, false},
	}
	for _, c := range cases {
		got, ok := CompareVersions(c.a, c.b)
		if got != c.want || ok != c.ok {
			t.Errorf("CompareVersions(%q, %q) = %d, %v; want %d, %v", c.a, c.b, got, ok, c.want, c.ok)
		}
	}
}

func TestCeilPercent(t *testing.T) {
	cases := []struct {
		pct  float64
		n    int64
		want int64
	}{
		{1, 10000, 100}, {1, 50, 1}, {1, 0, 0}, {10, 10000, 1000}, {20, 10000, 2000},
		{33.3, 1000, 333}, {33.3, 1001, 334}, {100, 7, 7}, {0.01, 10000, 1}, {12.5, 8, 1}, {50, 3, 2},
	}
	for _, c := range cases {
		if got := ceilPercent(c.pct, c.n); got != c.want {
			t.Errorf("ceilPercent(%v, %d) = %d, want %d", c.pct, c.n, got, c.want)
		}
	}
}

// TestKey pins the membership hash: changing it reshuffles every rollout
// of every fleet, which must never happen by accident.
func TestKey(t *testing.T) {
	if got, want := fmt.Sprintf("%016x", Key("hello", "dev-0001")), "6be4e99526f48e41"; got != want {
		t.Errorf("Key(hello, dev-0001) = %s, want %s", got, want)
	}
	if Key("a", "bc") == Key("ab", "c") {
		t.Error("Key does not separate rollout and device")
	}
	if p := Position("hello", "dev-0001"); p < 0 || p >= 1 || math.Abs(p-float64(Key("hello", "dev-0001"))/(1<<64)) > 1e-15 {
		t.Errorf("Position = %v", p)
	}
	long := string(make([]byte, 600))
	_ = Key(long, long) // longer than the stack buffer
}

func TestWindow(t *testing.T) {
	berlin, _ := time.LoadLocation("Europe/Berlin")
	at := func(y int, m time.Month, d, h, min int, loc *time.Location) time.Time {
		return time.Date(y, m, d, h, min, 0, 0, loc)
	}
	cases := []struct {
		w    schema.MaintenanceWindow
		t    time.Time
		open bool
		next time.Time
	}{
		{schema.MaintenanceWindow{Start: "09:00", End: "17:00"}, at(2026, 3, 2, 9, 0, time.UTC), true, at(2026, 3, 3, 9, 0, time.UTC)},
		{schema.MaintenanceWindow{Start: "09:00", End: "17:00"}, at(2026, 3, 2, 17, 0, time.UTC), false, at(2026, 3, 3, 9, 0, time.UTC)},
		{schema.MaintenanceWindow{Start: "09:00", End: "17:00"}, at(2026, 3, 2, 8, 59, time.UTC), false, at(2026, 3, 2, 9, 0, time.UTC)},
		// Past midnight: belongs to the day it starts on.
		{schema.MaintenanceWindow{Days: []string{"fri"}, Start: "22:00", End: "04:00"}, at(2026, 3, 7, 2, 0, time.UTC), true, at(2026, 3, 13, 22, 0, time.UTC)},
		{schema.MaintenanceWindow{Days: []string{"fri"}, Start: "22:00", End: "04:00"}, at(2026, 3, 6, 2, 0, time.UTC), false, at(2026, 3, 6, 22, 0, time.UTC)},
		{schema.MaintenanceWindow{Days: []string{"fri"}, Start: "22:00", End: "04:00"}, at(2026, 3, 6, 23, 0, time.UTC), true, at(2026, 3, 13, 22, 0, time.UTC)},
		{schema.MaintenanceWindow{Days: []string{"fri"}, Start: "22:00", End: "04:00"}, at(2026, 3, 7, 4, 0, time.UTC), false, at(2026, 3, 13, 22, 0, time.UTC)},
		// Time zone: 22:00 Berlin is 21:00 UTC in winter, 20:00 in summer.
		{schema.MaintenanceWindow{Start: "22:00", End: "23:00", TimeZone: "Europe/Berlin"}, at(2026, 3, 2, 21, 30, time.UTC), true, at(2026, 3, 3, 22, 0, berlin)},
		{schema.MaintenanceWindow{Start: "22:00", End: "23:00", TimeZone: "Europe/Berlin"}, at(2026, 7, 2, 20, 30, time.UTC), true, at(2026, 7, 3, 22, 0, berlin)},
		{schema.MaintenanceWindow{Start: "22:00", End: "23:00", TimeZone: "Europe/Berlin"}, at(2026, 7, 2, 21, 30, time.UTC), false, at(2026, 7, 3, 22, 0, berlin)},
		// start == end: a whole day from start.
		{schema.MaintenanceWindow{Days: []string{"sun"}, Start: "06:00", End: "06:00"}, at(2026, 3, 9, 5, 59, time.UTC), true, at(2026, 3, 15, 6, 0, time.UTC)},
		{schema.MaintenanceWindow{Days: []string{"sun"}, Start: "06:00", End: "06:00"}, at(2026, 3, 9, 6, 0, time.UTC), false, at(2026, 3, 15, 6, 0, time.UTC)},
	}
	for _, c := range cases {
		w, err := compileWindow(c.w)
		if err != nil {
			t.Fatal(err)
		}
		if got := w.open(c.t); got != c.open {
			t.Errorf("%+v open at %s = %v, want %v", c.w, c.t, got, c.open)
		}
		if got := w.next(c.t); !got.Equal(c.next) {
			t.Errorf("%+v next after %s = %s, want %s", c.w, c.t, got, c.next)
		}
	}
	for _, bad := range []schema.MaintenanceWindow{{Start: "9:00", End: "10:00"}, {Start: "24:00", End: "10:00"}, {Start: "09:00", End: "10:00", Days: []string{"monday"}}, {Start: "09:00", End: "10:00", TimeZone: "Mars/Olympus"}} {
		if _, err := compileWindow(bad); err == nil {
			t.Errorf("compileWindow(%+v) succeeded", bad)
		}
	}
}

func TestCompileInfo(t *testing.T) {
	f := &schema.Fleet{
		Devices:   append(declare("pi", 10, "rpi4"), append(declare("old", 5, "rpi3"), declare("any", 5, "")...)...),
		Artifacts: []schema.Artifact{artifact("app", "1", "rpi4")},
		Groups: []schema.DeviceGroup{
			{Meta: schema.Meta{Name: "pis"}, Spec: schema.DeviceGroupSpec{Selector: &schema.Selector{Inventory: map[string]schema.Match{"device_type": {Equal: ptr("rpi4")}}}}},
			{Meta: schema.Meta{Name: "lab"}, Spec: schema.DeviceGroupSpec{Selector: &schema.Selector{Inventory: map[string]schema.Match{"hostname": {Glob: "lab-*"}}}}},
			{Meta: schema.Meta{Name: "macs"}, Spec: schema.DeviceGroupSpec{Selector: &schema.Selector{Identity: map[string]schema.Match{"mac": {Glob: "pi-000*"}}}}},
		},
		Rollouts: []schema.Rollout{
			rollout("everyone", "app", all(), count("canary", 3), pct("half", 50), pct("all", 100)),
			rollout("by-type", "app", schema.Target{Groups: []string{"pis"}}, pct("a", 10), pct("b", 100)),
			rollout("by-host", "app", schema.Target{Groups: []string{"lab"}}, count("a", 2), pct("b", 50), pct("c", 100)),
			rollout("by-mac", "app", schema.Target{Groups: []string{"macs"}}, count("a", 50)),
			rollout("broken", "nope", all(), pct("all", 100)),
		},
	}
	f.Rollouts[1].Spec.Priority = 1
	f.Rollouts[2].Spec.Priority = 2
	f.Rollouts[3].Spec.Priority = 3
	p := Compile(f, []store.RolloutRecord{{Name: "everyone", Generation: 2}})
	if got := p.Problems(); len(got) != 1 || got[0] != `rollout broken: unknown artifact "nope"` {
		t.Errorf("Problems = %q", got)
	}
	check := func(name string, exact bool, size int, limits ...int64) {
		t.Helper()
		in, ok := p.Rollout(name)
		if !ok {
			t.Fatalf("no rollout %s", name)
		}
		var got []int64
		for _, ph := range in.Phases {
			got = append(got, ph.Limit)
		}
		if in.Exact != exact || in.Size != size || fmt.Sprint(got) != fmt.Sprint(limits) {
			t.Errorf("%s: exact %v size %d limits %v; want %v %d %v", name, in.Exact, in.Size, got, exact, size, limits)
		}
	}
	// rpi3 devices are certainly incompatible: not counted. Devices of
	// unknown type are.
	check("everyone", true, 15, 3, 5, 7)
	// device_type selector: exact for the declared types, unknown types
	// must report first.
	check("by-type", false, 15, 2, 13)
	check("by-host", false, 15, 2, 6, 7)
	check("by-mac", true, 10, 10)
	if in, _ := p.Rollout("everyone"); in.Generation != (store.GenerationRef{Rollout: "everyone", Generation: 2}) {
		t.Errorf("generation = %v", in.Generation)
	}
	var order []string
	for _, in := range p.Rollouts() {
		order = append(order, in.Name)
	}
	if fmt.Sprint(order) != "[by-mac by-host by-type everyone]" {
		t.Errorf("priority order %v", order)
	}
}

// TestOpenTarget: a selector over reported inventory admits by position
// (percent) and by arrival (count).
func TestOpenTarget(t *testing.T) {
	f := &schema.Fleet{
		Devices:   declare("d", 1000, "rpi4"),
		Artifacts: []schema.Artifact{artifact("app", "1", "rpi4")},
		Rollouts: []schema.Rollout{rollout("open", "app", schema.Target{Selector: &schema.Selector{Inventory: map[string]schema.Match{"site": {Equal: ptr("north")}}}},
			count("first", 3), pct("ten", 10), pct("all", 100))},
	}
	h := newHarness(t, f, t0)
	if in, _ := h.plan.Rollout("open"); in.Exact || in.Size != 1000 {
		t.Fatalf("info %+v", in)
	}
	north := func(i int) *Device {
		d := device(&f.Devices[i], "old")
		d.Inventory["site"] = "north"
		return d
	}
	// Not matching: not targeted.
	if dec, _ := h.poll(device(&f.Devices[0], "old")); dec.Reason != ReasonNotTargeted {
		t.Fatalf("south device: %s", dec)
	}
	// The first three north devices to ask fill the count phase, whatever
	// their position.
	var admitted []*Device
	for i := 0; len(admitted) < 3; i++ {
		d := north(i)
		dec, ok := h.poll(d)
		if !ok || dec.Phase != 0 {
			t.Fatalf("device %d: %s", i, dec)
		}
		admitted = append(admitted, d)
	}
	g := store.GenerationRef{Rollout: "open", Generation: 1}
	for _, d := range admitted {
		h.report(d, g, store.StateSuccess)
	}
	// Phase "ten" takes exactly the north devices below position 0.1.
	var want, got int
	for i := 3; i < 1000; i++ {
		d := north(i)
		if Position("open", d.ID) < 0.1 {
			want++
		}
		if dec, ok := h.poll(d); ok {
			if dec.Phase != 1 || Position("open", d.ID) >= 0.1 {
				t.Fatalf("%s at %.3f: %s", d.ID, Position("open", d.ID), dec)
			}
			got++
		} else if dec.Reason != ReasonWaitPhase {
			t.Fatalf("%s: %s", d.ID, dec)
		}
	}
	if got != want || got == 0 {
		t.Errorf("phase ten admitted %d, want %d", got, want)
	}
}
