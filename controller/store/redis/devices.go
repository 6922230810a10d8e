package redis

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/gitfleet/gitfleet/controller/store"
	goredis "github.com/redis/go-redis/v9"
)

// A device is one small hash under its own tag, so a million devices spread
// over a cluster; the pending index and the conflicts are under {fleet}.
// The device hash and the index are in different slots, so they are written
// by separate scripts, in an order that keeps the bound: a new pending
// record first takes a place in the index (refused when MaxPending are
// taken), then is created in its hash, which expires PendingTTL after it was
// last seen. Whatever decides between keys (first key sticks, trust on
// first use) is one script over the device hash alone, so it is atomic on
// standalone Redis and on a cluster alike. Readers skip index entries whose
// device is gone or no longer pending.
func (k keys) device(id string) string { return k.prefix + ":{d:" + id + "}" }
func (k keys) pending() string         { return k.fleet("pending") }
func (k keys) conflicts() string       { return k.fleet("conflicts") }
func (k keys) conflictRecs() string    { return k.fleet("conflicts:rec") }

// sweepPerWrite bounds the expired records one write removes.
const sweepPerWrite = 64

// Outcomes of deviceScript.
const (
	devAbsent   = 0 // touch: no record
	devCreated  = 1
	devUpdated  = 2
	devLeft     = 3 // pending request for an accepted device with its own key: left alone
	devConflict = 4 // another key is bound; the second result is that key
)

var deviceScript = goredis.NewScript(`
-- KEYS[1] device hash; ARGV[1] identity, ARGV[2] key fingerprint,
-- ARGV[3] mode: pin (Git names this key), bind (trust on first use),
-- pending (create if absent), touch (pending, but do not create);
-- ARGV[4] seen (unix ms), ARGV[5] pending TTL (ms)
local k = redis.call('HGET', KEYS[1], 'k')
local mode = ARGV[3]
if k and mode ~= 'pin' and k ~= ARGV[2] then return {4, k} end
if mode == 'pin' or mode == 'bind' then
  local created = redis.call('HSETNX', KEYS[1], 'f', ARGV[4])
  redis.call('HSET', KEYS[1], 'i', ARGV[1], 'k', ARGV[2], 's', 'a', 'l', ARGV[4])
  redis.call('PERSIST', KEYS[1])
  if created == 1 then return {1, ''} end
  return {2, ''}
end
if k then
  if redis.call('HGET', KEYS[1], 's') == 'a' then return {3, k} end
  redis.call('HSET', KEYS[1], 'i', ARGV[1], 'l', ARGV[4])
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
  return {2, k}
end
if mode == 'touch' then return {0, ''} end
redis.call('HSETNX', KEYS[1], 'f', ARGV[4])
redis.call('HSET', KEYS[1], 'i', ARGV[1], 'k', ARGV[2], 's', 'p', 'l', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return {1, ''}
`)

var reservePendingScript = goredis.NewScript(`
-- KEYS[1] pending index; ARGV[1] device ID, ARGV[2] seen, ARGV[3] cutoff
-- (expired before), ARGV[4] max pending, ARGV[5] sweep at most
-- Returns {1 placed or 0 full, swept IDs}.
local swept = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[3], 'LIMIT', 0, tonumber(ARGV[5]))
if #swept > 0 then redis.call('ZREM', KEYS[1], unpack(swept)) end
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then
  return {0, swept}
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
return {1, swept}
`)

var dropExpiredScript = goredis.NewScript(`
-- KEYS[1] device hash; ARGV[1] cutoff (unix ms)
if redis.call('HGET', KEYS[1], 's') == 'p' and tonumber(redis.call('HGET', KEYS[1], 'l') or '0') < tonumber(ARGV[1]) then
  redis.call('DEL', KEYS[1])
end
return 0
`)

var conflictScript = goredis.NewScript(`
-- KEYS[1] conflicts index, KEYS[2] conflict records; ARGV[1] "ID KEY",
-- ARGV[2] record JSON, ARGV[3] seen, ARGV[4] cutoff, ARGV[5] max,
-- ARGV[6] sweep at most. A record is "count|first seen|JSON".
local swept = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[4], 'LIMIT', 0, tonumber(ARGV[6]))
if #swept > 0 then
  redis.call('ZREM', KEYS[1], unpack(swept))
  redis.call('HDEL', KEYS[2], unpack(swept))
end
local count, first = 1, ARGV[3]
local old = redis.call('HGET', KEYS[2], ARGV[1])
if old then
  local c, f = string.match(old, '^(%d+)|(%d+)|')
  if c then count, first = tonumber(c) + 1, f end
end
redis.call('HSET', KEYS[2], ARGV[1], count .. '|' .. first .. '|' .. ARGV[2])
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
local over = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[5])
if over > 0 then
  local drop = redis.call('ZRANGE', KEYS[1], 0, over - 1)
  redis.call('ZREM', KEYS[1], unpack(drop))
  redis.call('HDEL', KEYS[2], unpack(drop))
end
return count
`)

var statusCode = map[store.DeviceStatus]string{store.DevicePending: "p", store.DeviceAccepted: "a"}

func (s *Store) runDevice(ctx context.Context, d store.Device, mode string) (code int64, bound string, err error) {
	res, err := deviceScript.Run(ctx, s.c, []string{s.k.device(d.ID)},
		string(d.Identity), d.KeyFingerprint, mode, d.LastSeen.UnixMilli(), s.opts.PendingTTL.Milliseconds()).Slice()
	if err != nil {
		return 0, "", fmt.Errorf("redis: see device %s: %w", d.ID, err)
	}
	if len(res) != 2 {
		return 0, "", fmt.Errorf("redis: see device %s: script returned %d values", d.ID, len(res))
	}
	code, _ = res[0].(int64)
	bound, _ = res[1].(string)
	return code, bound, nil
}

// SeeDevice records an authentication request.
func (s *Store) SeeDevice(ctx context.Context, d store.Device) (bool, error) {
	if err := d.Validate(); err != nil {
		return false, err
	}
	if d.LastSeen.IsZero() {
		d.LastSeen = s.opts.Now()
	}
	if d.Status == store.DeviceAccepted {
		return s.accept(ctx, d, "pin")
	}
	code, bound, err := s.runDevice(ctx, d, "touch")
	if err != nil {
		return false, err
	}
	if code == devAbsent {
		cutoff := d.LastSeen.Add(-s.opts.PendingTTL).UnixMilli()
		res, err := reservePendingScript.Run(ctx, s.c, []string{s.k.pending()},
			d.ID, d.LastSeen.UnixMilli(), cutoff, s.opts.MaxPending, sweepPerWrite).Slice()
		if err != nil || len(res) != 2 {
			return false, fmt.Errorf("redis: see device %s: pending index: %v", d.ID, err)
		}
		swept, _ := res[1].([]any)
		for _, id := range swept {
			id, _ := id.(string)
			if err := dropExpiredScript.Run(ctx, s.c, []string{s.k.device(id)}, cutoff).Err(); err != nil {
				return false, fmt.Errorf("redis: drop expired device %s: %w", id, err)
			}
		}
		if placed, _ := res[0].(int64); placed == 0 {
			return false, fmt.Errorf("%w: device %s", store.ErrFull, d.ID)
		}
		if code, bound, err = s.runDevice(ctx, d, "pending"); err != nil {
			return false, err
		}
		if code == devLeft { // accepted meanwhile by another replica
			if err := s.c.ZRem(ctx, s.k.pending(), d.ID).Err(); err != nil {
				return false, fmt.Errorf("redis: see device %s: pending index: %w", d.ID, err)
			}
		}
	} else if code == devUpdated {
		if err := s.c.ZAdd(ctx, s.k.pending(), goredis.Z{Score: float64(d.LastSeen.UnixMilli()), Member: d.ID}).Err(); err != nil {
			return false, fmt.Errorf("redis: see device %s: pending index: %w", d.ID, err)
		}
	}
	if code == devConflict {
		return false, s.conflict(ctx, d, bound)
	}
	return code == devCreated, nil
}

// BindDevice accepts a device by trust on first use.
func (s *Store) BindDevice(ctx context.Context, d store.Device) (bool, error) {
	d.Status = store.DeviceAccepted
	if err := d.Validate(); err != nil {
		return false, err
	}
	if d.LastSeen.IsZero() {
		d.LastSeen = s.opts.Now()
	}
	return s.accept(ctx, d, "bind")
}

func (s *Store) accept(ctx context.Context, d store.Device, mode string) (bool, error) {
	code, bound, err := s.runDevice(ctx, d, mode)
	if err != nil {
		return false, err
	}
	if code == devConflict {
		return false, s.conflict(ctx, d, bound)
	}
	if err := s.c.ZRem(ctx, s.k.pending(), d.ID).Err(); err != nil {
		return false, fmt.Errorf("redis: see device %s: pending index: %w", d.ID, err)
	}
	return code == devCreated, nil
}

// conflictRecord is a Conflict as stored, without its count and first
// seen (the script keeps those).
type conflictRecord struct {
	Identity json.RawMessage `json:"i,omitempty"`
	Bound    string          `json:"b"`
	Last     int64           `json:"l"`
}

// conflict records a key conflict and returns ErrKeyConflict.
func (s *Store) conflict(ctx context.Context, d store.Device, bound string) error {
	rec, err := json.Marshal(conflictRecord{Identity: d.Identity, Bound: bound, Last: d.LastSeen.UnixMilli()})
	if err != nil {
		return err
	}
	err = conflictScript.Run(ctx, s.c, []string{s.k.conflicts(), s.k.conflictRecs()},
		d.ID+" "+d.KeyFingerprint, rec, d.LastSeen.UnixMilli(), d.LastSeen.Add(-s.opts.PendingTTL).UnixMilli(),
		s.opts.MaxConflicts, sweepPerWrite).Err()
	if err != nil {
		return fmt.Errorf("redis: record key conflict of device %s: %w", d.ID, err)
	}
	return fmt.Errorf("%w: device %s", store.ErrKeyConflict, d.ID)
}

// Conflicts returns the most recently seen key conflicts.
func (s *Store) Conflicts(ctx context.Context, limit int) ([]store.Conflict, error) {
	limit, err := store.PageLimit(limit)
	if err != nil {
		return nil, err
	}
	names, err := s.c.ZRevRange(ctx, s.k.conflicts(), 0, int64(limit-1)).Result()
	if err != nil {
		return nil, fmt.Errorf("redis: conflicts: %w", err)
	}
	if len(names) == 0 {
		return nil, nil
	}
	vals, err := s.c.HMGet(ctx, s.k.conflictRecs(), names...).Result()
	if err != nil {
		return nil, fmt.Errorf("redis: conflicts: %w", err)
	}
	var out []store.Conflict
	for i, name := range names {
		v, _ := vals[i].(string)
		parts := strings.SplitN(v, "|", 3)
		if len(parts) != 3 {
			continue // dropped since the index was read
		}
		count, err1 := strconv.ParseInt(parts[0], 10, 64)
		first, err2 := strconv.ParseInt(parts[1], 10, 64)
		var rec conflictRecord
		err3 := json.Unmarshal([]byte(parts[2]), &rec)
		if err := errors.Join(err1, err2, err3); err != nil {
			return nil, fmt.Errorf("redis: conflict %s: %w", name, err)
		}
		id, key, _ := strings.Cut(name, " ")
		out = append(out, store.Conflict{ID: id, Identity: rec.Identity, KeyFingerprint: key, BoundKey: rec.Bound,
			Count: count, FirstSeen: time.UnixMilli(first), LastSeen: time.UnixMilli(rec.Last)})
	}
	return out, nil
}

// Device returns a device.
func (s *Store) Device(ctx context.Context, id string) (store.Device, error) {
	if err := store.ValidateInventory(id, nil); err != nil {
		return store.Device{}, err
	}
	h, err := s.c.HGetAll(ctx, s.k.device(id)).Result()
	if err != nil {
		return store.Device{}, fmt.Errorf("redis: device %s: %w", id, err)
	}
	if len(h) == 0 {
		return store.Device{}, fmt.Errorf("%w: device %s", store.ErrNotFound, id)
	}
	return decodeDevice(id, h)
}

func decodeDevice(id string, h map[string]string) (store.Device, error) {
	d := store.Device{ID: id, KeyFingerprint: h["k"], Status: store.DevicePending}
	if h["s"] == statusCode[store.DeviceAccepted] {
		d.Status = store.DeviceAccepted
	}
	if v := h["i"]; v != "" {
		d.Identity = json.RawMessage(v)
	}
	if v := h["v"]; v != "" {
		d.Inventory = json.RawMessage(v)
	}
	f, err1 := strconv.ParseInt(h["f"], 10, 64)
	l, err2 := strconv.ParseInt(h["l"], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return store.Device{}, fmt.Errorf("redis: device %s: %w", id, err)
	}
	d.FirstSeen, d.LastSeen = time.UnixMilli(f), time.UnixMilli(l)
	return d, nil
}

var setInventoryScript = goredis.NewScript(`
-- KEYS[1] device hash; ARGV[1] inventory JSON
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[1])
return 1
`)

// SetInventory replaces a known device's inventory.
func (s *Store) SetInventory(ctx context.Context, id string, inv json.RawMessage) error {
	if err := store.ValidateInventory(id, inv); err != nil {
		return err
	}
	n, err := setInventoryScript.Run(ctx, s.c, []string{s.k.device(id)}, string(inv)).Int()
	if err != nil {
		return fmt.Errorf("redis: set inventory of %s: %w", id, err)
	}
	if n == 0 {
		return fmt.Errorf("%w: device %s", store.ErrNotFound, id)
	}
	return nil
}

// PendingDevices returns the newest pending devices.
func (s *Store) PendingDevices(ctx context.Context, limit int) ([]store.Device, error) {
	limit, err := store.PageLimit(limit)
	if err != nil {
		return nil, err
	}
	ids, err := s.c.ZRevRange(ctx, s.k.pending(), 0, int64(limit-1)).Result()
	if err != nil {
		return nil, fmt.Errorf("redis: pending devices: %w", err)
	}
	cmds := make([]*goredis.MapStringStringCmd, len(ids))
	_, err = s.c.Pipelined(ctx, func(p goredis.Pipeliner) error {
		for i, id := range ids {
			cmds[i] = p.HGetAll(ctx, s.k.device(id))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("redis: pending devices: %w", err)
	}
	var out []store.Device
	for i, id := range ids {
		h := cmds[i].Val()
		if len(h) == 0 || h["s"] != statusCode[store.DevicePending] {
			continue // accepted (or gone) since the index was read
		}
		d, err := decodeDevice(id, h)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, nil
}
