package storetest

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

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
	d1.LastSeen = at(2) // the same key, later
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
	// A pending request for an accepted device, even with its own key,
	// leaves the record alone.
	seeDevice(t, s, store.Device{ID: "d3", Status: store.DevicePending, LastSeen: at(7)}, false)
	pendingAre(t, s, "d1")
	deviceIs(t, s, store.Device{ID: "d3", Status: store.DeviceAccepted, FirstSeen: at(5), LastSeen: at(5)})

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

// testDeviceKeyStays: what an unauthenticated request with another key
// sends never changes a device's record; it is recorded as a conflict.
func testDeviceKeyStays(t *testing.T, s store.Store) {
	ctx := t.Context()
	idA := json.RawMessage(`{"mac":"52:54:00:00:00:0a"}`)
	a := store.Device{ID: "dev-a", Identity: idA, KeyFingerprint: "k1", Status: store.DeviceAccepted, LastSeen: at(1)}
	seeDevice(t, s, a, true)
	inv := json.RawMessage(`{"artifact_name":"rel-1"}`)
	must(t, "SetInventory", s.SetInventory(ctx, "dev-a", inv))
	want := a
	want.FirstSeen, want.Inventory = at(1), inv

	attack := store.Device{ID: "dev-a", Identity: idA, KeyFingerprint: "k2", Status: store.DevicePending, LastSeen: at(2)}
	if _, err := s.SeeDevice(ctx, attack); !errors.Is(err, store.ErrKeyConflict) {
		t.Fatalf("SeeDevice(pending, another key): err = %v, want ErrKeyConflict", err)
	}
	attack.LastSeen = at(3)
	if _, err := s.BindDevice(ctx, attack); !errors.Is(err, store.ErrKeyConflict) {
		t.Fatalf("BindDevice(another key): err = %v, want ErrKeyConflict", err)
	}
	deviceIs(t, s, want)
	pendingAre(t, s)
	conflictsAre(t, s, store.Conflict{ID: "dev-a", Identity: idA, KeyFingerprint: "k2", BoundKey: "k1", Count: 2, FirstSeen: at(2), LastSeen: at(3)})

	// Its own key, no longer accepted: still left alone.
	seeDevice(t, s, store.Device{ID: "dev-a", Identity: idA, KeyFingerprint: "k1", Status: store.DevicePending, LastSeen: at(4)}, false)
	deviceIs(t, s, want)

	// Git names the new key: it replaces the old one.
	pin := store.Device{ID: "dev-a", Identity: idA, KeyFingerprint: "k2", Status: store.DeviceAccepted, LastSeen: at(5)}
	seeDevice(t, s, pin, false)
	want.KeyFingerprint, want.LastSeen = "k2", at(5)
	deviceIs(t, s, want)

	// A pending record keeps its first key too.
	seeDevice(t, s, store.Device{ID: "dev-b", KeyFingerprint: "k1", Status: store.DevicePending, LastSeen: at(6)}, true)
	if _, err := s.SeeDevice(ctx, store.Device{ID: "dev-b", KeyFingerprint: "k3", Status: store.DevicePending, LastSeen: at(7)}); !errors.Is(err, store.ErrKeyConflict) {
		t.Fatalf("SeeDevice(pending record, another key): err = %v, want ErrKeyConflict", err)
	}
	deviceIs(t, s, store.Device{ID: "dev-b", KeyFingerprint: "k1", Status: store.DevicePending, FirstSeen: at(6), LastSeen: at(6)})
}

// testDeviceBindRace: of many first requests with different keys, exactly
// one binds its key.
func testDeviceBindRace(t *testing.T, s store.Store) {
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		winners  []string
		failures []error
	)
	for i := range racers {
		wg.Go(func() {
			key := fmt.Sprintf("key-%d", i)
			_, err := s.BindDevice(t.Context(), store.Device{ID: "tofu", KeyFingerprint: key, Status: store.DeviceAccepted, LastSeen: at(1)})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				winners = append(winners, key)
			case !errors.Is(err, store.ErrKeyConflict):
				failures = append(failures, err)
			}
		})
	}
	wg.Wait()
	if len(failures) > 0 || len(winners) != 1 {
		t.Fatalf("BindDevice race: winners %v, errors %v; want exactly one winner", winners, failures)
	}
	got, err := s.Device(t.Context(), "tofu")
	must(t, "Device", err)
	if got.KeyFingerprint != winners[0] || got.Status != store.DeviceAccepted {
		t.Errorf("Device after the race: key %q status %s, want %q accepted", got.KeyFingerprint, got.Status, winners[0])
	}
	cs, err := s.Conflicts(t.Context(), 100)
	must(t, "Conflicts", err)
	if len(cs) != min(racers-1, MaxConflicts) {
		t.Errorf("Conflicts after the race: %d, want %d", len(cs), min(racers-1, MaxConflicts))
	}
	seeDevice(t, s, store.Device{ID: "tofu", KeyFingerprint: winners[0], Status: store.DeviceAccepted, LastSeen: at(2)}, false)
}

// testDeviceBindAfterPending: a pending record's key is the first key.
func testDeviceBindAfterPending(t *testing.T, s store.Store) {
	ctx := t.Context()
	seeDevice(t, s, store.Device{ID: "p1", KeyFingerprint: "k1", Status: store.DevicePending, LastSeen: at(1)}, true)
	pendingAre(t, s, "p1")
	if _, err := s.BindDevice(ctx, store.Device{ID: "p1", KeyFingerprint: "k2", LastSeen: at(2)}); !errors.Is(err, store.ErrKeyConflict) {
		t.Fatalf("BindDevice(pending record, another key): err = %v, want ErrKeyConflict", err)
	}
	created, err := s.BindDevice(ctx, store.Device{ID: "p1", KeyFingerprint: "k1", LastSeen: at(3)})
	must(t, "BindDevice", err)
	if created {
		t.Error("BindDevice(pending record, its key) created = true")
	}
	deviceIs(t, s, store.Device{ID: "p1", KeyFingerprint: "k1", Status: store.DeviceAccepted, FirstSeen: at(1), LastSeen: at(3)})
	pendingAre(t, s)
}

// testPendingBound: at most MaxPending pending records; accepted devices
// are unaffected; records expire PendingTTL after they were last seen.
func testPendingBound(t *testing.T, s store.Store) {
	ctx := t.Context()
	var ids []string
	for i := range MaxPending {
		id := fmt.Sprintf("p%02d", i)
		seeDevice(t, s, store.Device{ID: id, KeyFingerprint: "k", Status: store.DevicePending, LastSeen: at(i)}, true)
		ids = append([]string{id}, ids...)
	}
	over := store.Device{ID: "over", KeyFingerprint: "k", Status: store.DevicePending, LastSeen: at(MaxPending)}
	if _, err := s.SeeDevice(ctx, over); !errors.Is(err, store.ErrFull) {
		t.Fatalf("SeeDevice(pending beyond MaxPending): err = %v, want ErrFull", err)
	}
	if _, err := s.Device(ctx, "over"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Device(refused pending): err = %v, want ErrNotFound", err)
	}
	// A known pending device is seen again; accepted devices come in.
	seeDevice(t, s, store.Device{ID: "p00", KeyFingerprint: "k", Status: store.DevicePending, LastSeen: at(MaxPending + 1)}, false)
	ids = append([]string{"p00"}, ids[:len(ids)-1]...)
	seeDevice(t, s, store.Device{ID: "acc", KeyFingerprint: "k", Status: store.DeviceAccepted, LastSeen: at(MaxPending + 2)}, true)
	seeDevice(t, s, store.Device{ID: "tofu", KeyFingerprint: "k", Status: store.DeviceAccepted, LastSeen: at(MaxPending + 2)}, true)
	if _, err := s.BindDevice(ctx, store.Device{ID: "tofu2", KeyFingerprint: "k", LastSeen: at(MaxPending + 2)}); err != nil {
		t.Errorf("BindDevice while the pending records are full: %v", err)
	}
	pendingAre(t, s, ids...)

	// PendingTTL later every old record has expired: a new one fits, and
	// the expired ones are gone.
	later := at(MaxPending + 2).Add(PendingTTL + time.Second)
	seeDevice(t, s, store.Device{ID: "new", KeyFingerprint: "k", Status: store.DevicePending, LastSeen: later}, true)
	pendingAre(t, s, "new")
	for _, id := range ids {
		if _, err := s.Device(ctx, id); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Device(%s) after its PendingTTL: err = %v, want ErrNotFound", id, err)
		}
	}
	if _, err := s.Device(ctx, "acc"); err != nil {
		t.Errorf("Device(accepted) after PendingTTL: %v", err)
	}
}

// testConflictsBound: at most MaxConflicts, the newest; expired ones go.
func testConflictsBound(t *testing.T, s store.Store) {
	ctx := t.Context()
	seeDevice(t, s, store.Device{ID: "dev", KeyFingerprint: "good", Status: store.DeviceAccepted, LastSeen: at(0)}, true)
	var want []store.Conflict
	for i := range MaxConflicts + 3 {
		d := store.Device{ID: "dev", KeyFingerprint: fmt.Sprintf("bad%d", i), Status: store.DevicePending, LastSeen: at(i + 1)}
		if _, err := s.SeeDevice(ctx, d); !errors.Is(err, store.ErrKeyConflict) {
			t.Fatalf("SeeDevice(another key): err = %v, want ErrKeyConflict", err)
		}
		want = append([]store.Conflict{{ID: "dev", KeyFingerprint: d.KeyFingerprint, BoundKey: "good", Count: 1, FirstSeen: d.LastSeen, LastSeen: d.LastSeen}}, want...)
	}
	conflictsAre(t, s, want[:MaxConflicts]...)
	later := at(MaxConflicts + 3).Add(PendingTTL + time.Second)
	d := store.Device{ID: "dev", KeyFingerprint: "late", Status: store.DevicePending, LastSeen: later}
	if _, err := s.SeeDevice(ctx, d); !errors.Is(err, store.ErrKeyConflict) {
		t.Fatalf("SeeDevice(another key): err = %v, want ErrKeyConflict", err)
	}
	conflictsAre(t, s, store.Conflict{ID: "dev", KeyFingerprint: "late", BoundKey: "good", Count: 1, FirstSeen: later, LastSeen: later})
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

func conflictsAre(t *testing.T, s store.Store, want ...store.Conflict) {
	t.Helper()
	got, err := s.Conflicts(t.Context(), 100)
	must(t, "Conflicts", err)
	diff(t, "Conflicts", want, got)
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
