package deviceapi

import (
	"net/http"
	"slices"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/gitfleet/gitfleet/schema"
)

// The device API emits the rollout events of the schema's #Event list
// under exactly those names, each once: paused, phase_opened,
// phase_completed, awaiting_approval, completed; and device.pending for a
// new pending device.
func TestEventVocabulary(t *testing.T) {
	fleetWith := func(settings string) *schema.Fleet {
		fleet, err := schema.Load(fstest.MapFS{
			"artifact.yaml": {Data: []byte("apiVersion: gitfleet.io/v1\nkind: Artifact\nmetadata: {name: hello-2}\nspec:\n  source: artifacts/hello-2.mender\n  deviceTypes: [qemux86-64]\n")},
			"rollout.yaml": {Data: []byte("apiVersion: gitfleet.io/v1\nkind: Rollout\nmetadata: {name: hello}\nspec:\n  artifact: hello-2\n  target: {all: true}\n" + settings +
				"  phases:\n    - {name: canary, count: 1}\n    - {name: rest, percent: 100, requiresApproval: true}\n")},
			"devices.yaml": {Data: []byte("apiVersion: gitfleet.io/v1\nkind: Device\nmetadata: {name: lab}\nspec:\n  devices:\n    - {name: dev-0, identity: {mac: \"00\"}, trustOnFirstUse: true}\n    - {name: dev-1, identity: {mac: \"01\"}, trustOnFirstUse: true}\n")},
		})
		if err != nil {
			t.Fatal(err)
		}
		return fleet
	}
	e := newFleetEnv(t, fleetWith("  paused: true\n"), 2)
	poll := func(dev int) int {
		t.Helper()
		code, _, _ := e.do(http.MethodPost, nextV2, e.devs[dev].token, v2Body("hello-1", "qemux86-64"), nil)
		return code
	}
	report := func(dev int, status string) {
		t.Helper()
		if code, b, _ := e.do(http.MethodPut, statusPath("hello-g1"), e.devs[dev].token, []byte(`{"status":"`+status+`"}`), nil); code != http.StatusNoContent {
			t.Fatalf("status %s: %d %s", status, code, b)
		}
	}
	// Paused: polls admit nobody and say so once.
	for range 2 {
		if code := poll(0); code != http.StatusNoContent {
			t.Fatalf("paused poll: %d", code)
		}
	}
	e.publish(fleetWith(""))
	// The canary, the first device by rank, then the gate of "rest".
	var canary, other int
	if poll(0) == http.StatusOK {
		canary, other = 0, 1
	} else if poll(1) == http.StatusOK {
		canary, other = 1, 0
	} else {
		t.Fatal("no device admitted into the canary")
	}
	report(canary, "success")
	for range 2 {
		if code := poll(other); code != http.StatusNoContent {
			t.Fatalf("poll before approval: %d", code)
		}
	}
	e.publish(fleetWith("  approvedPhases: [rest]\n"))
	if code := poll(other); code != http.StatusOK {
		t.Fatalf("poll after approval: %d", code)
	}
	report(other, "success")
	// A device nobody declared authenticates twice: pending, announced once.
	stranger := newDevice(t, "ed25519", map[string]any{"mac": "99"})
	for range 2 {
		if code, _ := stranger.auth(e.env); code != http.StatusUnauthorized {
			t.Fatalf("stranger auth: %d", code)
		}
	}

	evs, err := e.store.RecentEvents(ctx(), 100)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, ev := range evs {
		if !schema.IsEvent(ev.Kind) {
			t.Errorf("event kind %q is not in the schema's #Event list", ev.Kind)
		}
		got = append(got, ev.Kind+" "+ev.Subject)
	}
	want := []string{
		"rollout.paused hello/g1",
		"rollout.phase_opened hello/g1/phase0",
		"rollout.phase_completed hello/g1/phase0",
		"rollout.awaiting_approval hello/g1/phase1",
		"rollout.phase_opened hello/g1/phase1",
		"rollout.phase_completed hello/g1/phase1",
		"rollout.completed hello/g1",
		"device.pending " + stranger.id(),
	}
	if !slices.Equal(got, want) {
		t.Errorf("events:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}
