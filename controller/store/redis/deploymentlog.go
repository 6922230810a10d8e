package redis

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/gitfleet/gitfleet/controller/store"
	goredis "github.com/redis/go-redis/v9"
)

// genDeviceLog is device's deployment log in g: a string (the encoded
// store.DeploymentLog) expiring store.DeploymentLogTTL after it was
// stored, in the generation's hash slot.
func (k keys) genDeviceLog(g store.GenerationRef, device string) string {
	return k.prefix + ":{r:" + g.Rollout + ":" + strconv.FormatInt(g.Generation, 10) + "}:devlog:" + device
}

var setLogScript = goredis.NewScript(`
-- KEYS[1] devices hash, KEYS[2] the log key; ARGV[1] device, ARGV[2] log, ARGV[3] TTL (ms)
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
return 1
`)

// SetDeploymentLog stores a device's deployment log, bounded, for
// store.DeploymentLogTTL.
func (s *Store) SetDeploymentLog(ctx context.Context, g store.GenerationRef, device string, l store.DeploymentLog) (store.DeploymentLog, error) {
	if err := store.ValidateGeneration(g, &device); err != nil {
		return store.DeploymentLog{}, err
	}
	l.Stored = s.opts.Now().UTC().Truncate(1e6)
	l = store.BoundLog(l)
	rec, err := store.EncodeDeploymentLog(l)
	if err != nil {
		return store.DeploymentLog{}, err
	}
	ok, err := setLogScript.Run(ctx, s.c, []string{s.k.genDevices(g), s.k.genDeviceLog(g, device)},
		device, rec, store.DeploymentLogTTL.Milliseconds()).Int()
	if err != nil {
		return store.DeploymentLog{}, fmt.Errorf("redis: deployment log of %s in %s: %w", device, g, err)
	}
	if ok == 0 {
		return store.DeploymentLog{}, fmt.Errorf("%w: device %s not admitted to %s", store.ErrNotFound, device, g)
	}
	return l, nil
}

// DeploymentLog returns a device's stored deployment log.
func (s *Store) DeploymentLog(ctx context.Context, g store.GenerationRef, device string) (store.DeploymentLog, error) {
	if err := store.ValidateGeneration(g, &device); err != nil {
		return store.DeploymentLog{}, err
	}
	rec, err := s.c.Get(ctx, s.k.genDeviceLog(g, device)).Bytes()
	if errors.Is(err, goredis.Nil) {
		return store.DeploymentLog{}, fmt.Errorf("%w: no deployment log of %s in %s", store.ErrNotFound, device, g)
	}
	if err != nil {
		return store.DeploymentLog{}, fmt.Errorf("redis: deployment log of %s in %s: %w", device, g, err)
	}
	l, err := store.ParseDeploymentLog(rec)
	if err != nil {
		return store.DeploymentLog{}, fmt.Errorf("redis: deployment log of %s in %s: %w", device, g, err)
	}
	return l, nil
}
