package embedded

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/gitfleet/gitfleet/controller/store"
	bolt "go.etcd.io/bbolt"
)

// Devices live in bucket "devices" (ID → record JSON); bucket "pending"
// indexes pending devices by last seen (unix ms, 8 bytes big endian, then
// the ID), with its size in meta "pending.n" so trimming is cheap.

var (
	bDeviceRecs = []byte("devices")
	bPending    = []byte("pending")
	kPendingN   = []byte("pending.n")
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

func pendingKey(seen int64, id string) []byte { return append(u64(uint64(seen)), id...) }

func deviceBuckets(tx *bolt.Tx) (recs, pending *bolt.Bucket, err error) {
	if !tx.Writable() {
		return tx.Bucket(bDeviceRecs), tx.Bucket(bPending), nil
	}
	if recs, err = tx.CreateBucketIfNotExists(bDeviceRecs); err != nil {
		return nil, nil, err
	}
	pending, err = tx.CreateBucketIfNotExists(bPending)
	return recs, pending, err
}

// SeeDevice records an authentication request.
func (s *Store) SeeDevice(ctx context.Context, d store.Device) (bool, error) {
	if err := d.Validate(); err != nil {
		return false, err
	}
	if d.LastSeen.IsZero() {
		d.LastSeen = s.opts.Now()
	}
	created := false
	err := s.update(ctx, "see device "+d.ID, func(tx *bolt.Tx) error {
		recs, pending, err := deviceBuckets(tx)
		if err != nil {
			return err
		}
		meta := tx.Bucket(bMeta)
		n := counter(meta, string(kPendingN))
		var rec device
		if v := recs.Get([]byte(d.ID)); v != nil {
			if err := json.Unmarshal(v, &rec); err != nil {
				return err
			}
			if rec.Status == string(store.DevicePending) {
				if err := pending.Delete(pendingKey(rec.LastSeen, d.ID)); err != nil {
					return err
				}
				n--
			}
		} else {
			created = true
			rec.FirstSeen = d.LastSeen.UnixMilli()
		}
		rec.Identity, rec.Key, rec.Status, rec.LastSeen = d.Identity, d.KeyFingerprint, string(d.Status), d.LastSeen.UnixMilli()
		if err := putJSON(recs, []byte(d.ID), rec); err != nil {
			return err
		}
		if d.Status == store.DevicePending {
			if err := pending.Put(pendingKey(rec.LastSeen, d.ID), nil); err != nil {
				return err
			}
			n++
		}
		c := pending.Cursor() // drop the oldest beyond the bound from the index
		for k, _ := c.First(); k != nil && n > store.MaxPending; k, _ = c.First() {
			if err := c.Delete(); err != nil {
				return err
			}
			n--
		}
		return meta.Put(kPendingN, u64(n))
	})
	return created, err
}

// Device returns a device.
func (s *Store) Device(ctx context.Context, id string) (store.Device, error) {
	if err := store.ValidateInventory(id, nil); err != nil {
		return store.Device{}, err
	}
	var out store.Device
	err := s.view(ctx, "device "+id, func(tx *bolt.Tx) error {
		recs, _, _ := deviceBuckets(tx)
		var v []byte
		if recs != nil {
			v = recs.Get([]byte(id))
		}
		if v == nil {
			return fmt.Errorf("%w: device %s", store.ErrNotFound, id)
		}
		var rec device
		if err := json.Unmarshal(v, &rec); err != nil {
			return err
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
		recs, _, err := deviceBuckets(tx)
		if err != nil {
			return err
		}
		v := recs.Get([]byte(id))
		if v == nil {
			return fmt.Errorf("%w: device %s", store.ErrNotFound, id)
		}
		var rec device
		if err := json.Unmarshal(v, &rec); err != nil {
			return err
		}
		rec.Inventory = inv
		return putJSON(recs, []byte(id), rec)
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
		recs, pending, _ := deviceBuckets(tx)
		if pending == nil {
			return nil
		}
		c := pending.Cursor()
		for k, _ := c.Last(); k != nil && len(out) < limit; k, _ = c.Prev() {
			id := string(k[8:])
			var rec device
			if err := json.Unmarshal(recs.Get([]byte(id)), &rec); err != nil {
				return fmt.Errorf("device %s: %w", id, err)
			}
			out = append(out, rec.public(id))
		}
		return nil
	})
	return out, err
}
