package redis

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/gitfleet/gitfleet/controller/store"
	goredis "github.com/redis/go-redis/v9"
)

// A device's alert records are one hash under the device's tag,
// gf:{d:ID}:al: field "|seq" holds the last applied event Seq (no record
// field starts with '|': check names are never empty) and field
// "CHECK|KEY" a record. RecordAlerts reads "|seq" and the fields its events
// touch, applies the events in Go with store.AlertEvent.Apply (the one state
// machine), and writes the results with casAlertsScript, which writes only
// if "|seq" is still what was read. Every write moves "|seq" forward, so
// "|seq" is the hash's version: of replicas applying the same events at
// once, one write lands and the others read again and find the events
// applied.
//
// The fleet-wide listing gf:{fleet}:alerts is in another slot, so not in
// the same script: its entries for the changed records (ZADD GT) and its
// trim to MaxAlerts are sent in the same round trip as the write, which
// makes a batch two round trips in all. The records are what counts; the
// listing is kept on a best-effort basis. A write that loses the race has
// sent entries too, which for the same batch are the winner's; entries
// whose record is gone are skipped by readers, and the entries of the
// records a full device drops are removed after the write. A failure to
// update the listing is not RecordAlerts' error: the records are written,
// and an error would make the device send the batch again, which changes
// nothing, so the changes would never be announced. The listing then lacks
// the change until the record's next one.
func (k keys) deviceAlerts(id string) string { return k.device(id) + ":al" }
func (k keys) alertList() string             { return k.fleet("alerts") }

const seqField = "|seq"

// maxAlertAttempts bounds RecordAlerts' read-apply-write rounds. Each round
// some writer wins, so only a device whose batches arrive at many replicas
// at once needs more than two.
const maxAlertAttempts = 32

// alertListPage is how many listing entries ListAlerts reads at a time.
const alertListPage = 256

var casAlertsScript = goredis.NewScript(`
-- KEYS[1] device alerts hash; ARGV[1] "|seq" as read ('' for none),
-- ARGV[2] the new seq, ARGV[3] n fields to delete, ARGV[4…3+n] those
-- fields, then field, value pairs to set. Returns 1 if written, 0 if
-- "|seq" changed since it was read.
if (redis.call('HGET', KEYS[1], '|seq') or '') ~= ARGV[1] then return 0 end
local n = tonumber(ARGV[3])
if n > 0 then redis.call('HDEL', KEYS[1], unpack(ARGV, 4, 3 + n)) end
-- One HSET of "|seq", the new seq and the pairs: the two ARGV slots
-- before the pairs (used up) take "|seq" and its value.
ARGV[3 + n] = ARGV[2]
ARGV[2 + n] = '|seq'
redis.call('HSET', KEYS[1], unpack(ARGV, 2 + n, #ARGV))
return 1
`)

func decodeAlertRecord(device, field, v string) (store.AlertRecord, error) {
	var r store.AlertRecord
	if err := json.Unmarshal([]byte(v), &r); err != nil {
		return r, fmt.Errorf("redis: alert record %q of device %s: %w", field, device, err)
	}
	return r, nil
}

// batchEntry is one record a batch of events touches.
type batchEntry struct {
	field   string
	rec     store.AlertRecord
	existed bool  // there was a record before the batch
	prev    int64 // its change time then
	dirty   bool  // the batch writes it
}

// RecordAlerts applies a device's events: read, apply in Go, write if the
// device's "|seq" did not move meanwhile, else again.
func (s *Store) RecordAlerts(ctx context.Context, device string, events []store.AlertEvent) ([]store.Alert, uint64, error) {
	if err := store.ValidateAlertEvents(device, events); err != nil {
		return nil, 0, err
	}
	key := s.k.deviceAlerts(device)
	fields := make([]string, 1, 1+len(events))
	fields[0] = seqField
	index := make(map[string]int, len(events)) // field → position in fields
	for _, e := range events {
		f := e.Check + "|" + e.Key
		if _, ok := index[f]; !ok {
			index[f] = len(fields)
			fields = append(fields, f)
		}
	}
	for range maxAlertAttempts {
		changed, last, done, err := s.recordAlertsOnce(ctx, device, key, fields, index, events)
		if err != nil {
			return nil, 0, fmt.Errorf("redis: record alerts of device %s: %w", device, err)
		}
		if done {
			return changed, last, nil
		}
	}
	return nil, 0, fmt.Errorf("redis: record alerts of device %s: its records changed under %d attempts in a row (other replicas writing them); retry later", device, maxAlertAttempts)
}

// recordAlertsOnce is one round of RecordAlerts; done is false when another
// writer changed the device's records since they were read.
func (s *Store) recordAlertsOnce(ctx context.Context, device, key string, fields []string, index map[string]int, events []store.AlertEvent) (changed []store.Alert, last uint64, done bool, err error) {
	var vals *goredis.SliceCmd
	var hlen *goredis.IntCmd
	if _, err := s.c.Pipelined(ctx, func(p goredis.Pipeliner) error {
		vals, hlen = p.HMGet(ctx, key, fields...), p.HLen(ctx, key)
		return nil
	}); err != nil {
		return nil, 0, false, err
	}
	read := vals.Val()
	seqText, hasSeq := read[0].(string)
	var seq uint64
	if hasSeq {
		if seq, err = strconv.ParseUint(seqText, 10, 64); err != nil {
			return nil, 0, false, fmt.Errorf("last seq %q: %w", seqText, err)
		}
	}
	if len(events) == 0 || events[len(events)-1].Seq <= seq {
		return nil, seq, true, nil
	}

	now := s.opts.Now()
	batch := make([]*batchEntry, len(fields)) // by position in fields
	var order []*batchEntry                   // entries the batch writes, in order
	for _, e := range events {
		if e.Seq <= seq {
			continue
		}
		i := index[e.Check+"|"+e.Key]
		en := batch[i]
		if en == nil {
			en = &batchEntry{field: fields[i]}
			if v, ok := read[i].(string); ok {
				if en.rec, err = decodeAlertRecord(device, fields[i], v); err != nil {
					return nil, 0, false, err
				}
				en.existed, en.prev = true, en.rec.Changed
			}
			batch[i] = en
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
			order = append(order, en)
		}
	}
	last = events[len(events)-1].Seq

	count := int(hlen.Val())
	if hasSeq {
		count--
	}
	for _, en := range order {
		if !en.existed {
			count++
		}
	}
	var drops []string
	if count > store.MaxAlertsPerDevice {
		if drops, err = s.alertsToDrop(ctx, device, key, order, count-store.MaxAlertsPerDevice); err != nil {
			return nil, 0, false, err
		}
	}
	dropped := make(map[string]bool, len(drops))
	args := make([]any, 0, 3+len(drops)+2*len(order))
	args = append(args, seqText, last, len(drops))
	for _, f := range drops {
		args = append(args, f)
		dropped[f] = true
	}
	for _, en := range order {
		if dropped[en.field] {
			continue
		}
		enc, err := json.Marshal(en.rec)
		if err != nil {
			return nil, 0, false, err
		}
		args = append(args, en.field, enc)
	}
	// The write and the listing's update go in one round trip.
	adds := listEntries(device, order, dropped)
	list := s.k.alertList()
	var cas *goredis.Cmd
	_, _ = s.c.Pipelined(ctx, func(p goredis.Pipeliner) error {
		cas = p.EvalSha(ctx, casAlertsScript.Hash(), []string{key}, args...)
		if len(adds) > 0 {
			p.ZAddGT(ctx, list, adds...)
			p.ZRemRangeByRank(ctx, list, 0, -int64(s.opts.MaxAlerts)-1)
		}
		return nil
	})
	ok, err := cas.Int()
	if goredis.HasErrorPrefix(err, "NOSCRIPT") { // a restarted server: load it, then read again
		if err := casAlertsScript.Load(ctx, s.c).Err(); err != nil {
			return nil, 0, false, fmt.Errorf("load script: %w", err)
		}
		return nil, 0, false, nil
	}
	if err != nil || ok == 0 {
		return nil, 0, false, err
	}
	if len(drops) > 0 {
		members := make([]any, len(drops))
		for i, f := range drops {
			check, k, _ := strings.Cut(f, "|")
			members[i] = store.AlertMember(device, check, k)
		}
		_ = s.c.ZRem(ctx, list, members...).Err() // best effort, as above
	}
	return changed, last, true, nil
}

// alertsToDrop returns the fields of the n records device loses to stay
// within MaxAlertsPerDevice after the batch (written, its new state): the
// closed ones first, then the least recently changed. Only a full device
// pays for reading all its records.
func (s *Store) alertsToDrop(ctx context.Context, device, key string, written []*batchEntry, n int) ([]string, error) {
	all, err := s.c.HGetAll(ctx, key).Result()
	if err != nil {
		return nil, err
	}
	delete(all, seqField)
	recs := make([]batchEntry, 0, len(all)+len(written))
	for _, en := range written {
		recs = append(recs, *en)
		delete(all, en.field)
	}
	for f, v := range all {
		r, err := decodeAlertRecord(device, f, v)
		if err != nil {
			return nil, err
		}
		recs = append(recs, batchEntry{field: f, rec: r})
	}
	slices.SortFunc(recs, func(a, b batchEntry) int {
		ac, bc := a.rec.State == store.AlertClosed, b.rec.State == store.AlertClosed
		switch {
		case ac && !bc:
			return -1
		case bc && !ac:
			return 1
		case a.rec.Changed != b.rec.Changed:
			return cmp.Compare(a.rec.Changed, b.rec.Changed)
		}
		return strings.Compare(a.field, b.field)
	})
	drops := make([]string, 0, n)
	for _, r := range recs[:min(n, len(recs))] {
		drops = append(drops, r.field)
	}
	return drops, nil
}

// listEntries returns the fleet-wide listing entries of the records a
// batch changed, at their change time. They are added with ZADD GT, so a
// slower replica's older time never moves an entry back.
func listEntries(device string, order []*batchEntry, dropped map[string]bool) []goredis.Z {
	var adds []goredis.Z
	for _, en := range order {
		if !dropped[en.field] && (!en.existed || en.rec.Changed != en.prev) {
			check, k, _ := strings.Cut(en.field, "|")
			adds = append(adds, goredis.Z{Score: float64(en.rec.Changed), Member: store.AlertMember(device, check, k)})
		}
	}
	return adds
}

// ListAlerts returns the records matching f, the most recently changed
// first: a device's from its hash, the fleet's from the listing (page by
// page, skipping entries whose record is gone).
func (s *Store) ListAlerts(ctx context.Context, f store.AlertFilter) ([]store.Alert, error) {
	f, err := store.ValidateAlertFilter(f)
	if err != nil {
		return nil, err
	}
	if f.Device != "" {
		return s.deviceAlertList(ctx, f)
	}
	list := s.k.alertList()
	var out []store.Alert
	seen := map[string]bool{} // entries move up while we page
	for start := int64(0); len(out) < f.Limit; start += alertListPage {
		members, err := s.c.ZRevRange(ctx, list, start, start+alertListPage-1).Result()
		if err != nil {
			return nil, fmt.Errorf("redis: list alerts: %w", err)
		}
		if len(members) == 0 {
			break
		}
		type entry struct{ device, check, key string }
		entries := make([]entry, 0, len(members))
		cmds := make([]*goredis.StringCmd, 0, len(members))
		_, err = s.c.Pipelined(ctx, func(p goredis.Pipeliner) error {
			for _, m := range members {
				device, check, key, ok := store.ParseAlertMember(m)
				if !ok || seen[m] {
					continue
				}
				seen[m] = true
				entries = append(entries, entry{device, check, key})
				cmds = append(cmds, p.HGet(ctx, s.k.deviceAlerts(device), check+"|"+key))
			}
			return nil
		})
		if err != nil && !errors.Is(err, goredis.Nil) {
			return nil, fmt.Errorf("redis: list alerts: %w", err)
		}
		for i, c := range cmds {
			v, err := c.Result()
			if errors.Is(err, goredis.Nil) {
				continue // dropped since the listing was written
			}
			if err != nil {
				return nil, fmt.Errorf("redis: list alerts: %w", err)
			}
			e := entries[i]
			r, err := decodeAlertRecord(e.device, e.check+"|"+e.key, v)
			if err != nil {
				return nil, err
			}
			if a := r.Alert(e.device, e.check, e.key); f.Matches(a) {
				if out = append(out, a); len(out) == f.Limit {
					break
				}
			}
		}
		if len(members) < alertListPage {
			break
		}
	}
	return out, nil
}

// deviceAlertList lists one device's records from its hash.
func (s *Store) deviceAlertList(ctx context.Context, f store.AlertFilter) ([]store.Alert, error) {
	all, err := s.c.HGetAll(ctx, s.k.deviceAlerts(f.Device)).Result()
	if err != nil {
		return nil, fmt.Errorf("redis: list alerts of device %s: %w", f.Device, err)
	}
	delete(all, seqField)
	type listed struct {
		member  string
		changed int64
		alert   store.Alert
	}
	var found []listed
	for field, v := range all {
		r, err := decodeAlertRecord(f.Device, field, v)
		if err != nil {
			return nil, err
		}
		check, key, _ := strings.Cut(field, "|")
		if a := r.Alert(f.Device, check, key); f.Matches(a) {
			found = append(found, listed{store.AlertMember(f.Device, check, key), r.Changed, a})
		}
	}
	slices.SortFunc(found, func(a, b listed) int {
		if a.changed != b.changed {
			return cmp.Compare(b.changed, a.changed)
		}
		return strings.Compare(b.member, a.member)
	})
	out := make([]store.Alert, 0, min(len(found), f.Limit))
	for _, l := range found[:min(len(found), f.Limit)] {
		out = append(out, l.alert)
	}
	if len(out) == 0 {
		return nil, nil
	}
	return out, nil
}
