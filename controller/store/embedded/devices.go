package embedded

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	"github.com/gitfleet/gitfleet/controller/store"
	bolt "go.etcd.io/bbolt"
)

// Devices live in bucket "devices" (ID → record JSON); bucket "pending"
// indexes pending devices by last seen (unix ms, 8 bytes big endian, then
// the ID), with its size in meta "pending.n" so the bound is cheap to
// check. Key conflicts live in bucket "conflicts" ("ID KEY" → Conflict
// JSON), indexed alike in "conflicts.t" with its size in "conflicts.n".
// Every write that adds a pending or conflict record first sweeps up to
// sweepPerWrite expired ones (oldest first), so expiry needs no timer.

var (
	bDeviceRecs = []byte("devices")
	bPending    = []byte("pending")
	bConflicts  = []byte("conflicts")
	bConflictT  = []byte("conflicts.t")
	kPendingN   = "pending.n"
	kConflictN  = "conflicts.n"
)

type device struct {
	Identity  []byte `json:"i,omitempty"`
	Key       string `json:"k,omitempty"`
	Status    string `json:"s"`
	Inventory []byte `json:"v,omitempty"`
	FirstSeen int64  `json:"f"`
	LastSeen  int64  `json:"l"`
}

func (d device) public(id string) store.Device {
	out := store.Device{ID: id, KeyFingerprint: d.Key, Status: store.DeviceStatus(d.Status),
		FirstSeen: time.UnixMilli(d.FirstSeen), LastSeen: time.UnixMilli(d.LastSeen)}
	if len(d.Identity) > 0 {
		out.Identity = json.RawMessage(d.Identity)
	}
	if len(d.Inventory) > 0 {
		out.Inventory = json.RawMessage(d.Inventory)
	}
	return out
}

func timeKey(ms int64, id string) []byte { return append(u64(uint64(ms)), id...) }

type deviceTx struct {
	recs, pending, conflicts, conflictT, meta *bolt.Bucket
}

func deviceBuckets(tx *bolt.Tx) (deviceTx, error) {
	if !tx.Writable() {
		return deviceTx{tx.Bucket(bDeviceRecs), tx.Bucket(bPending), tx.Bucket(bConflicts), tx.Bucket(bConflictT), tx.Bucket(bMeta)}, nil
	}
	var d deviceTx
	var err error
	for _, b := range []struct {
		p    **bolt.Bucket
		name []byte
	}{{&d.recs, bDeviceRecs}, {&d.pending, bPending}, {&d.conflicts, bConflicts}, {&d.conflictT, bConflictT}} {
		if *b.p, err = tx.CreateBucketIfNotExists(b.name); err != nil {
			return d, err
		}
	}
	d.meta = tx.Bucket(bMeta)
	return d, nil
}

func (b deviceTx) get(id string) (device, bool, error) {
	v := b.recs.Get([]byte(id))
	if v == nil {
		return device{}, false, nil
	}
	var rec device
	if err := json.Unmarshal(v, &rec); err != nil {
		return device{}, false, fmt.Errorf("device %s: %w", id, err)
	}
	return rec, true, nil
}

// unindex removes a pending record's index entry.
func (b deviceTx) unindex(id string, rec device) error {
	if rec.Status != string(store.DevicePending) {
		return nil
	}
	k := timeKey(rec.LastSeen, id)
	if b.pending.Get(k) == nil {
		return nil
	}
	if err := b.pending.Delete(k); err != nil {
		return err
	}
	return b.meta.Put([]byte(kPendingN), u64(counter(b.meta, kPendingN)-1))
}

func (b deviceTx) index(id string, rec device) error {
	if err := b.pending.Put(timeKey(rec.LastSeen, id), nil); err != nil {
		return err
	}
	return incr(b.meta, kPendingN)
}

// sweep drops up to sweepPerWrite pending and conflict records last seen
// before cutoff (unix ms).
func (b deviceTx) sweep(cutoff int64) error {
	c := b.pending.Cursor()
	for i, k := 0, []byte(nil); i < sweepPerWrite; i++ {
		if k, _ = c.First(); k == nil || int64(binary.BigEndian.Uint64(k[:8])) >= cutoff {
			break
		}
		id := string(k[8:])
		if err := c.Delete(); err != nil {
			return err
		}
		if err := b.meta.Put([]byte(kPendingN), u64(counter(b.meta, kPendingN)-1)); err != nil {
			return err
		}
		if rec, ok, err := b.get(id); err != nil {
			return err
		} else if ok && rec.Status == string(store.DevicePending) {
			if err := b.recs.Delete([]byte(id)); err != nil {
				return err
			}
		}
	}
	c = b.conflictT.Cursor()
	for i, k := 0, []byte(nil); i < sweepPerWrite; i++ {
		if k, _ = c.First(); k == nil || int64(binary.BigEndian.Uint64(k[:8])) >= cutoff {
			break
		}
		if err := b.dropConflict(c, k); err != nil {
			return err
		}
	}
	return nil
}

func (b deviceTx) dropConflict(c *bolt.Cursor, k []byte) error {
	name := bytes.Clone(k[8:])
	if err := c.Delete(); err != nil {
		return err
	}
	if err := b.conflicts.Delete(name); err != nil {
		return err
	}
	return b.meta.Put([]byte(kConflictN), u64(counter(b.meta, kConflictN)-1))
}

// conflict records a request with key d.KeyFingerprint for a device whose
// record holds bound.
func (s *Store) conflict(b deviceTx, d store.Device, bound string) error {
	name := []byte(d.ID + " " + d.KeyFingerprint)
	seen := d.LastSeen.UnixMilli()
	c := store.Conflict{ID: d.ID, Identity: d.Identity, KeyFingerprint: d.KeyFingerprint, BoundKey: bound, Count: 1,
		FirstSeen: time.UnixMilli(seen), LastSeen: time.UnixMilli(seen)}
	if v := b.conflicts.Get(name); v != nil {
		var old store.Conflict
		if err := json.Unmarshal(v, &old); err != nil {
			return err
		}
		if err := b.conflictT.Delete(timeKey(old.LastSeen.UnixMilli(), string(name))); err != nil {
			return err
		}
		c.Count, c.FirstSeen = old.Count+1, old.FirstSeen
	} else if err := incr(b.meta, kConflictN); err != nil {
		return err
	}
	if err := putJSON(b.conflicts, name, c); err != nil {
		return err
	}
	if err := b.conflictT.Put(timeKey(seen, string(name)), nil); err != nil {
		return err
	}
	cur := b.conflictT.Cursor() // drop the oldest beyond the bound
	for k, _ := cur.First(); k != nil && counter(b.meta, kConflictN) > uint64(s.opts.MaxConflicts); k, _ = cur.First() {
		if err := b.dropConflict(cur, k); err != nil {
			return err
		}
	}
	return nil
}

// SeeDevice records an authentication request.
func (s *Store) SeeDevice(ctx context.Context, d store.Device) (bool, error) {
	return s.seeDevice(ctx, d, false)
}

// BindDevice accepts a device by trust on first use.
func (s *Store) BindDevice(ctx context.Context, d store.Device) (bool, error) {
	d.Status = store.DeviceAccepted
	return s.seeDevice(ctx, d, true)
}

func (s *Store) seeDevice(ctx context.Context, d store.Device, bind bool) (bool, error) {
	if err := d.Validate(); err != nil {
		return false, err
	}
	if d.LastSeen.IsZero() {
		d.LastSeen = s.opts.Now()
	}
	seen := d.LastSeen.UnixMilli()
	var created bool
	var refused error
	err := s.update(ctx, "see device "+d.ID, func(tx *bolt.Tx) error {
		created, refused = false, nil
		b, err := deviceBuckets(tx)
		if err != nil {
			return err
		}
		rec, ok, err := b.get(d.ID)
		if err != nil {
			return err
		}
		pinned := d.Status == store.DeviceAccepted && !bind
		switch {
		case ok && !pinned && rec.Key != d.KeyFingerprint:
			refused = store.ErrKeyConflict
			if err := b.sweep(seen - s.opts.PendingTTL.Milliseconds()); err != nil {
				return err
			}
			return s.conflict(b, d, rec.Key)
		case ok && d.Status == store.DevicePending && rec.Status == string(store.DeviceAccepted):
			return nil // the device's own key, but no longer accepted: the record stays as it is
		case !ok && d.Status == store.DevicePending:
			if err := b.sweep(seen - s.opts.PendingTTL.Milliseconds()); err != nil {
				return err
			}
			if counter(b.meta, kPendingN) >= uint64(s.opts.MaxPending) {
				refused = store.ErrFull
				return nil
			}
		}
		if err := b.unindex(d.ID, rec); err != nil {
			return err
		}
		if !ok {
			created = true
			rec.FirstSeen = seen
		}
		rec.Identity, rec.Key, rec.Status, rec.LastSeen = d.Identity, d.KeyFingerprint, string(d.Status), seen
		if err := putJSON(b.recs, []byte(d.ID), rec); err != nil {
			return err
		}
		if d.Status == store.DevicePending {
			return b.index(d.ID, rec)
		}
		return nil
	})
	if err != nil {
		return false, err
	}
	if refused != nil {
		return false, fmt.Errorf("%w: device %s", refused, d.ID)
	}
	return created, nil
}

// Device returns a device.
func (s *Store) Device(ctx context.Context, id string) (store.Device, error) {
	if err := store.ValidateInventory(id, nil); err != nil {
		return store.Device{}, err
	}
	var out store.Device
	err := s.view(ctx, "device "+id, func(tx *bolt.Tx) error {
		b, _ := deviceBuckets(tx)
		if b.recs == nil {
			return fmt.Errorf("%w: device %s", store.ErrNotFound, id)
		}
		rec, ok, err := b.get(id)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%w: device %s", store.ErrNotFound, id)
		}
		out = rec.public(id)
		return nil
	})
	return out, err
}

// SetInventory replaces a known device's inventory.
func (s *Store) SetInventory(ctx context.Context, id string, inv json.RawMessage) error {
	if err := store.ValidateInventory(id, inv); err != nil {
		return err
	}
	return s.update(ctx, "set inventory of "+id, func(tx *bolt.Tx) error {
		b, err := deviceBuckets(tx)
		if err != nil {
			return err
		}
		rec, ok, err := b.get(id)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%w: device %s", store.ErrNotFound, id)
		}
		rec.Inventory = inv
		return putJSON(b.recs, []byte(id), rec)
	})
}

// PendingDevices returns the newest pending devices.
func (s *Store) PendingDevices(ctx context.Context, limit int) ([]store.Device, error) {
	limit, err := store.PageLimit(limit)
	if err != nil {
		return nil, err
	}
	var out []store.Device
	err = s.view(ctx, "pending devices", func(tx *bolt.Tx) error {
		b, _ := deviceBuckets(tx)
		if b.pending == nil {
			return nil
		}
		c := b.pending.Cursor()
		for k, _ := c.Last(); k != nil && len(out) < limit; k, _ = c.Prev() {
			id := string(k[8:])
			rec, ok, err := b.get(id)
			if err != nil {
				return err
			}
			if ok {
				out = append(out, rec.public(id))
			}
		}
		return nil
	})
	return out, err
}

// Conflicts returns the most recently seen key conflicts.
func (s *Store) Conflicts(ctx context.Context, limit int) ([]store.Conflict, error) {
	limit, err := store.PageLimit(limit)
	if err != nil {
		return nil, err
	}
	var out []store.Conflict
	err = s.view(ctx, "conflicts", func(tx *bolt.Tx) error {
		b, _ := deviceBuckets(tx)
		if b.conflictT == nil {
			return nil
		}
		c := b.conflictT.Cursor()
		for k, _ := c.Last(); k != nil && len(out) < limit; k, _ = c.Prev() {
			var cf store.Conflict
			if err := json.Unmarshal(b.conflicts.Get(k[8:]), &cf); err != nil {
				return fmt.Errorf("conflict %s: %w", k[8:], err)
			}
			out = append(out, cf)
		}
		return nil
	})
	return out, err
}
