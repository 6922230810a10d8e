package storetest

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/gitfleet/gitfleet/controller/store"
)

func testDevices(t *testing.T, s store.Store) {
	ctx := t.Context()
	if _, err := s.Device(ctx, "d1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Device(unknown): err = %v, want ErrNotFound", err)
	}
	if err := s.SetInventory(ctx, "d1", json.RawMessage(`[]`)); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("SetInventory(unknown): err = %v, want ErrNotFound", err)
	}
	pendingAre(t, s)

	id1 := json.RawMessage(`{"mac": "52:54:00:12:34:56", "serial":"A1"}`)
	d1 := store.Device{ID: "d1", Identity: id1, KeyFingerprint: "SHA256:aaa", Status: store.DevicePending, LastSeen: at(1)}
	seeDevice(t, s, d1, true)
	d1.KeyFingerprint, d1.LastSeen = "SHA256:bbb", at(2) // a new key, later
	seeDevice(t, s, d1, false)
	inv := json.RawMessage(`[{"name": "device_type", "value": "raspberrypi4"}, {"name":"kernel","value":"6.1"}]`)
	must(t, "SetInventory", s.SetInventory(ctx, "d1", inv))
	d1.LastSeen = at(3)
	seeDevice(t, s, d1, false) // inventory survives a new auth request
	want1 := d1
	want1.FirstSeen, want1.Inventory = at(1), inv
	deviceIs(t, s, want1)

	seeDevice(t, s, store.Device{ID: "d2", Status: store.DevicePending, LastSeen: at(4)}, true)
	seeDevice(t, s, store.Device{ID: "d3", Status: store.DeviceAccepted, LastSeen: at(5)}, true)
	pendingAre(t, s, "d2", "d1")
	seeDevice(t, s, store.Device{ID: "d2", Status: store.DeviceAccepted, LastSeen: at(6)}, false)
	pendingAre(t, s, "d1")
	seeDevice(t, s, store.Device{ID: "d3", Status: store.DevicePending, LastSeen: at(7)}, false)
	pendingAre(t, s, "d3", "d1")

	for name, d := range map[string]store.Device{
		"no ID":          {Status: store.DevicePending},
		"braces in ID":   {ID: "{x}", Status: store.DevicePending},
		"no status":      {ID: "d9"},
		"identity !JSON": {ID: "d9", Status: store.DevicePending, Identity: json.RawMessage("{mac")},
	} {
		if _, err := s.SeeDevice(ctx, d); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("SeeDevice(%s): err = %v, want ErrInvalid", name, err)
		}
	}
	if err := s.SetInventory(ctx, "d1", json.RawMessage("[")); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("SetInventory(not JSON): err = %v, want ErrInvalid", err)
	}
}

func seeDevice(t *testing.T, s store.Store, d store.Device, wantCreated bool) {
	t.Helper()
	created, err := s.SeeDevice(t.Context(), d)
	must(t, "SeeDevice", err)
	if created != wantCreated {
		t.Errorf("SeeDevice(%s) created = %v, want %v", d.ID, created, wantCreated)
	}
}

func deviceIs(t *testing.T, s store.Store, want store.Device) {
	t.Helper()
	got, err := s.Device(t.Context(), want.ID)
	must(t, "Device", err)
	diff(t, "Device "+want.ID, want, got)
}

func pendingAre(t *testing.T, s store.Store, ids ...string) {
	t.Helper()
	got, err := s.PendingDevices(t.Context(), 100)
	must(t, "PendingDevices", err)
	var gotIDs []string
	for _, d := range got {
		gotIDs = append(gotIDs, d.ID)
		if d.Status != store.DevicePending {
			t.Errorf("PendingDevices lists %s with status %s", d.ID, d.Status)
		}
	}
	diff(t, "PendingDevices", ids, gotIDs)
}
