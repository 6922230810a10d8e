package embedded

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/gitfleet/gitfleet/controller/store"
	bolt "go.etcd.io/bbolt"
)

// Devices' alert records (store.DeviceAlerts) live in three buckets:
//
//	dalerts      "DEVICE|CHECK|KEY" → store.AlertRecord JSON
//	dalerts.dev  device → last applied Seq and its record count (2×8 bytes)
//	dalerts.t    change time (unix ms, 8 bytes) + "DEVICE|CHECK|KEY" → nothing:
//	             the fleet-wide listing, the newest MaxAlerts, its size in
//	             meta "dalerts.n"
//
// RecordAlerts is one write transaction, so a device's Seq moves with its
// records and every event is applied once.
var (
	bDevAlerts    = []byte("dalerts")
	bDevAlertSeq  = []byte("dalerts.dev")
	bDevAlertList = []byte("dalerts.t")
	kDevAlertN    = "dalerts.n"
)

func listKey(changed int64, member string) []byte { return append(u64(uint64(changed)), member...) }

// alertTx is the alert buckets of one transaction.
type alertTx struct{ recs, devs, list, meta *bolt.Bucket }

func alertBuckets(tx *bolt.Tx) alertTx {
	return alertTx{tx.Bucket(bDevAlerts), tx.Bucket(bDevAlertSeq), tx.Bucket(bDevAlertList), tx.Bucket(bMeta)}
}

// device returns device's last applied Seq and record count.
func (b alertTx) device(id string) (seq, count uint64) {
	if v := b.devs.Get([]byte(id)); len(v) == 16 {
		return binary.BigEndian.Uint64(v[:8]), binary.BigEndian.Uint64(v[8:])
	}
	return 0, 0
}

func (b alertTx) get(member string) (store.AlertRecord, bool, error) {
	v := b.recs.Get([]byte(member))
	if v == nil {
		return store.AlertRecord{}, false, nil
	}
	var r store.AlertRecord
	if err := json.Unmarshal(v, &r); err != nil {
		return r, false, fmt.Errorf("alert record %q: %w", member, err)
	}
	return r, true, nil
}

// unlist removes member's listing entry at changed, if it is there.
func (b alertTx) unlist(changed int64, member string) error {
	k := listKey(changed, member)
	if b.list.Get(k) == nil {
		return nil
	}
	if err := b.list.Delete(k); err != nil {
		return err
	}
	return b.meta.Put([]byte(kDevAlertN), u64(counter(b.meta, kDevAlertN)-1))
}

func (b alertTx) relist(old, changed int64, member string, existed bool) error {
	if existed {
		if old == changed {
			return nil
		}
		if err := b.unlist(old, member); err != nil {
			return err
		}
	}
	if err := b.list.Put(listKey(changed, member), nil); err != nil {
		return err
	}
	return incr(b.meta, kDevAlertN)
}

// trimList drops the least recently changed listing entries beyond max.
func (b alertTx) trimList(max int) error {
	n := counter(b.meta, kDevAlertN)
	if n <= uint64(max) {
		return nil
	}
	c := b.list.Cursor()
	for k, _ := c.First(); k != nil && n > uint64(max); k, _ = c.First() {
		if err := c.Delete(); err != nil {
			return err
		}
		n--
	}
	return b.meta.Put([]byte(kDevAlertN), u64(n))
}

// storedAlert is a record with its name, for the per-device bound and the
// per-device listing.
type storedAlert struct {
	member string
	rec    store.AlertRecord
}

// deviceRecords returns all of device's records.
func (b alertTx) deviceRecords(device string) ([]storedAlert, error) {
	var out []storedAlert
	prefix := []byte(device + "|")
	c := b.recs.Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		var r store.AlertRecord
		if err := json.Unmarshal(v, &r); err != nil {
			return nil, fmt.Errorf("alert record %q: %w", k, err)
		}
		out = append(out, storedAlert{string(k), r})
	}
	return out, nil
}

// dropOrder sorts the records a full device loses first: closed ones, then
// the least recently changed.
func dropOrder(a, b storedAlert) int {
	ac, bc := a.rec.State == store.AlertClosed, b.rec.State == store.AlertClosed
	switch {
	case ac && !bc:
		return -1
	case bc && !ac:
		return 1
	case a.rec.Changed != b.rec.Changed:
		return cmp.Compare(a.rec.Changed, b.rec.Changed)
	}
	return strings.Compare(a.member, b.member)
}

// batchEntry is one record a batch of events touches.
type batchEntry struct {
	rec     store.AlertRecord
	existed bool  // there was a record before the batch
	prev    int64 // its change time then
	dirty   bool  // the batch writes it
}

// RecordAlerts applies a device's events in one write transaction.
func (s *Store) RecordAlerts(ctx context.Context, device string, events []store.AlertEvent) ([]store.Alert, uint64, error) {
	if err := store.ValidateAlertEvents(device, events); err != nil {
		return nil, 0, err
	}
	now := s.opts.Now()
	var changed []store.Alert
	var last uint64
	err := s.update(ctx, "record alerts of device "+device, func(tx *bolt.Tx) error {
		changed = nil
		b := alertBuckets(tx)
		seq, count := b.device(device)
		last = seq
		if len(events) == 0 || events[len(events)-1].Seq <= seq {
			return nil
		}
		batch := map[string]*batchEntry{}
		var order []string // members the batch writes, in order
		for _, e := range events {
			if e.Seq <= seq {
				continue
			}
			m := store.AlertMember(device, e.Check, e.Key)
			en := batch[m]
			if en == nil {
				r, ok, err := b.get(m)
				if err != nil {
					return err
				}
				en = &batchEntry{rec: r, existed: ok, prev: r.Changed}
				batch[m] = en
			}
			var cur store.Alert
			if en.existed || en.dirty {
				cur = en.rec.Alert(device, e.Check, e.Key)
			}
			next, ch := e.Apply(device, cur)
			if !ch && !en.existed && !en.dirty {
				continue // e.g. cleared for a record never raised
			}
			t := en.rec.Changed
			if ch {
				t = store.AlertChangeTime(t, e.Time, now)
				changed = append(changed, next)
			}
			en.rec = store.NewAlertRecord(next, t)
			if !en.dirty {
				en.dirty = true
				order = append(order, m)
			}
		}
		last = events[len(events)-1].Seq
		for _, m := range order {
			en := batch[m]
			if err := putJSON(b.recs, []byte(m), en.rec); err != nil {
				return err
			}
			if err := b.relist(en.prev, en.rec.Changed, m, en.existed); err != nil {
				return err
			}
			if !en.existed {
				count++
			}
		}
		if count > store.MaxAlertsPerDevice {
			all, err := b.deviceRecords(device)
			if err != nil {
				return err
			}
			slices.SortFunc(all, dropOrder)
			for _, d := range all[:len(all)-store.MaxAlertsPerDevice] {
				if err := b.recs.Delete([]byte(d.member)); err != nil {
					return err
				}
				if err := b.unlist(d.rec.Changed, d.member); err != nil {
					return err
				}
			}
			count = store.MaxAlertsPerDevice
		}
		if err := b.trimList(s.opts.MaxAlerts); err != nil {
			return err
		}
		return b.devs.Put([]byte(device), append(u64(last), u64(count)...))
	})
	if err != nil {
		return nil, 0, err
	}
	return changed, last, nil
}

// ListAlerts returns the records matching f, the most recently changed
// first: a device's records from dalerts, the fleet's from the listing.
func (s *Store) ListAlerts(ctx context.Context, f store.AlertFilter) ([]store.Alert, error) {
	f, err := store.ValidateAlertFilter(f)
	if err != nil {
		return nil, err
	}
	var out []store.Alert
	err = s.view(ctx, "list alerts", func(tx *bolt.Tx) error {
		b := alertBuckets(tx)
		if f.Device != "" {
			all, err := b.deviceRecords(f.Device)
			if err != nil {
				return err
			}
			slices.SortFunc(all, func(x, y storedAlert) int { return -listOrder(x, y) })
			for _, sa := range all {
				if a, ok := decodeMember(sa); ok && f.Matches(a) {
					if out = append(out, a); len(out) == f.Limit {
						break
					}
				}
			}
			return nil
		}
		c := b.list.Cursor()
		for k, _ := c.Last(); k != nil && len(out) < f.Limit; k, _ = c.Prev() {
			m := string(k[8:])
			r, ok, err := b.get(m)
			if err != nil {
				return err
			}
			if !ok {
				continue
			}
			if a, ok := decodeMember(storedAlert{m, r}); ok && f.Matches(a) {
				out = append(out, a)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// listOrder orders records as the listing does: by change time, then name.
func listOrder(a, b storedAlert) int {
	if a.rec.Changed != b.rec.Changed {
		return cmp.Compare(a.rec.Changed, b.rec.Changed)
	}
	return strings.Compare(a.member, b.member)
}

func decodeMember(sa storedAlert) (store.Alert, bool) {
	device, check, key, ok := store.ParseAlertMember(sa.member)
	return sa.rec.Alert(device, check, key), ok
}
