package main

import (
	"os"
	"testing"
	"testing/fstest"
	"time"

	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gitfleet/gitfleet/schema"
)

// The storm's checks are valid MonitorChecks for the whole fleet, each
// with a log probe and severity error.
func TestChecksYAMLLoads(t *testing.T) {
	fl, err := schema.Load(fstest.MapFS{"fleet/checks.yaml": {Data: checksYAML(10)}})
	if err != nil {
		t.Fatalf("the storm's MonitorChecks do not load: %v", err)
	}
	if len(fl.Checks) != 10 {
		t.Fatalf("%d checks loaded, want 10", len(fl.Checks))
	}
	for j, ch := range fl.Checks {
		if ch.Name != checkName(j) || ch.Spec.Log == nil || ch.Spec.Severity != schema.SeverityError || !ch.Spec.Target.All {
			t.Errorf("check %d: %+v, want %s with a log probe, severity error, target all", j, ch, checkName(j))
		}
	}
}

// A device's storm events pass the store's validation in batches of any
// size, and every alert of the device is a distinct record.
func TestStormEventsAreDistinctAndValid(t *testing.T) {
	c := config{checks: 10, alertsPerDevice: 25}
	f := newFleet(3)
	t0 := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	seen := map[[2]string]bool{}
	var events []store.AlertEvent
	for a := range c.alertsPerDevice {
		e := stormEvent(c, f, 2, a, t0)
		events = append(events, store.AlertEvent{Seq: e.Seq, Check: e.Check, Key: e.Key, Kind: string(e.Kind),
			Severity: string(e.Severity), Evidence: e.Evidence, Time: e.Time})
		k := [2]string{e.Check, e.Key}
		if seen[k] {
			t.Fatalf("alert %d repeats check %s key %s", a, e.Check, e.Key)
		}
		seen[k] = true
		if !isStormCheck(e.Check, c.checks) {
			t.Fatalf("alert %d is for %s, not a storm check", a, e.Check)
		}
	}
	if err := store.ValidateAlertEvents(alertDevice(f, 2), events); err != nil {
		t.Fatal(err)
	}
	if events[0].Seq != 1 {
		t.Fatalf("first Seq %d, want 1", events[0].Seq)
	}
}

// cpuTime reads this process's CPU time from /proc, and it grows as the
// process works.
func TestCPUTimeGrows(t *testing.T) {
	before := cpuTime(os.Getpid())
	deadline := time.Now().Add(30 * time.Second)
	x := 0
	for cpuTime(os.Getpid()) <= before {
		if time.Now().After(deadline) {
			t.Fatalf("cpuTime stays at %s while the process computes", before)
		}
		for i := range 1_000_000 {
			x ^= i
		}
	}
	_ = x
	if cpuTime(-1) != 0 {
		t.Fatal("cpuTime of no process is not 0")
	}
}
