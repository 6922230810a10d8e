package rollout

import (
	"testing"
	"testing/fstest"

	"github.com/gitfleet/gitfleet/schema"
)

// inventoryFleet has a rollout for a static group and, below it, one
// selecting on inventory.
const inventoryFleet = `
apiVersion: gitfleet.io/v1
kind: Artifact
metadata: {name: app}
spec: {source: a.mender, deviceTypes: [board]}
---
apiVersion: gitfleet.io/v1
kind: Device
metadata: {name: lab}
spec:
  devices:
    - {name: static-1, identity: {mac: "01"}, deviceType: board, trustOnFirstUse: true}
    - {name: open-1, identity: {mac: "02"}, deviceType: board, trustOnFirstUse: true}
    - {name: other-1, identity: {mac: "03"}, deviceType: board, trustOnFirstUse: true}
---
apiVersion: gitfleet.io/v1
kind: DeviceGroup
metadata: {name: statics}
spec: {members: [static-1]}
---
apiVersion: gitfleet.io/v1
kind: Rollout
metadata: {name: a-static}
spec:
  artifact: app
  priority: 2
  target: {groups: [statics]}
  phases: [{name: all, percent: 100, abort: {maxFailures: 0}}]
---
apiVersion: gitfleet.io/v1
kind: Rollout
metadata: {name: b-by-inventory}
spec:
  artifact: app
  priority: 1
  target: {selector: {inventory: {site: berlin}}}
  phases: [{name: all, percent: 100, abort: {maxFailures: 0}}]
`

func TestNeedsInventory(t *testing.T) {
	fleet := loadFleet(t, inventoryFleet)
	p := Compile(fleet, nil)
	for id, want := range map[string]bool{
		"static-1": false, // the higher-priority static rollout takes it first
		"open-1":   true,  // only its inventory can tell whether b targets it
		"unknown":  false, // not declared: routed nowhere
	} {
		if got := p.NeedsInventory(id); got != want {
			t.Errorf("NeedsInventory(%s) = %v, want %v", id, got, want)
		}
	}
}

func loadFleet(t *testing.T, yaml string) *schema.Fleet {
	t.Helper()
	fleet, err := schema.Load(fstest.MapFS{"fleet.yaml": {Data: []byte(yaml)}})
	if err != nil {
		t.Fatal(err)
	}
	return fleet
}

// A device found by the manifest that admitted it (Device.Declared) is
// routed exactly as one found by name; a Declared that is not the
// fleet's own declaration of the device is ignored.
func TestDeclaredHint(t *testing.T) {
	fleet := loadFleet(t, inventoryFleet)
	p := Compile(fleet, nil)
	static, open := fleet.Device("static-1"), fleet.Device("open-1")
	if static == nil || open == nil {
		t.Fatal("devices not loaded")
	}
	route := func(d *Device) string {
		g, _, ok := p.Route(d)
		if !ok && g.Rollout == "" {
			return ""
		}
		return g.Rollout
	}
	for _, tc := range []struct {
		name string
		d    *Device
		want string
	}{
		{"by name", &Device{ID: "static-1", DeviceType: "board"}, "a-static"},
		{"by its manifest", &Device{ID: "static-1", DeviceType: "board", Declared: static}, "a-static"},
		{"another device's manifest", &Device{ID: "static-1", DeviceType: "board", Declared: open}, "a-static"},
		{"a copy of its manifest", &Device{ID: "static-1", DeviceType: "board", Declared: new(*static)}, "a-static"},
		{"not targeted, by its manifest", &Device{ID: "open-1", DeviceType: "board", Declared: open}, ""},
		{"a manifest the fleet does not hold", &Device{ID: "ca-SN1", DeviceType: "board", Declared: &schema.Device{Meta: schema.Meta{Name: "ca-SN1"}}}, ""},
	} {
		if got := route(tc.d); got != tc.want {
			t.Errorf("%s: routed to %q, want %q", tc.name, got, tc.want)
		}
		if p.index(tc.d) != p.index(&Device{ID: tc.d.ID}) {
			t.Errorf("%s: index %d, by name %d", tc.name, p.index(tc.d), p.index(&Device{ID: tc.d.ID}))
		}
	}
}
