package redis

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/gitfleet/gitfleet/controller/store"
	goredis "github.com/redis/go-redis/v9"
)

// A device is one small hash under its own tag, so a million devices spread
// over a cluster; the pending index is one sorted set under {fleet}. The two
// are written one after the other (not one script: they are in different
// slots), and readers skip index entries whose device is no longer pending.
func (k keys) device(id string) string { return k.prefix + ":{d:" + id + "}" }
func (k keys) pending() string         { return k.fleet("pending") }

var seeDeviceScript = goredis.NewScript(`
-- KEYS[1] device hash; ARGV[1] identity, ARGV[2] key fingerprint, ARGV[3] status, ARGV[4] seen (unix ms)
local created = redis.call('HSETNX', KEYS[1], 'f', ARGV[4])
redis.call('HSET', KEYS[1], 'i', ARGV[1], 'k', ARGV[2], 's', ARGV[3], 'l', ARGV[4])
return created
`)

var statusCode = map[store.DeviceStatus]string{store.DevicePending: "p", store.DeviceAccepted: "a"}

// SeeDevice records an authentication request.
func (s *Store) SeeDevice(ctx context.Context, d store.Device) (bool, error) {
	if err := d.Validate(); err != nil {
		return false, err
	}
	if d.LastSeen.IsZero() {
		d.LastSeen = s.opts.Now()
	}
	seen := d.LastSeen.UnixMilli()
	created, err := seeDeviceScript.Run(ctx, s.c, []string{s.k.device(d.ID)},
		string(d.Identity), d.KeyFingerprint, statusCode[d.Status], seen).Int()
	if err != nil {
		return false, fmt.Errorf("redis: see device %s: %w", d.ID, err)
	}
	if d.Status == store.DevicePending {
		_, err = s.c.TxPipelined(ctx, func(p goredis.Pipeliner) error {
			p.ZAdd(ctx, s.k.pending(), goredis.Z{Score: float64(seen), Member: d.ID})
			p.ZRemRangeByRank(ctx, s.k.pending(), 0, -store.MaxPending-1)
			return nil
		})
	} else {
		err = s.c.ZRem(ctx, s.k.pending(), d.ID).Err()
	}
	if err != nil {
		return false, fmt.Errorf("redis: see device %s: pending list: %w", d.ID, err)
	}
	return created == 1, nil
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
	if h["s"] == "a" {
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
		if len(h) == 0 || h["s"] != "p" {
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
