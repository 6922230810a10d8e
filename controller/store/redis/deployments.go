package redis

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/gitfleet/gitfleet/controller/store"
	goredis "github.com/redis/go-redis/v9"
)

// generation keys: counters and device deployments of one rollout
// generation share the {r:NAME:GEN} tag, so one script can touch both and
// generations spread over a cluster.
func (k keys) genCounts(g store.GenerationRef) string {
	return k.prefix + ":{r:" + g.Rollout + ":" + strconv.FormatInt(g.Generation, 10) + "}:n"
}

func (k keys) genDevices(g store.GenerationRef) string {
	return k.prefix + ":{r:" + g.Rollout + ":" + strconv.FormatInt(g.Generation, 10) + "}:dev"
}

// genLog is the generation's change list (store.Deployments.Changes):
// "phase|state|device" entries pushed by the admit and report scripts.
func (k keys) genLog(g store.GenerationRef) string {
	return k.prefix + ":{r:" + g.Rollout + ":" + strconv.FormatInt(g.Generation, 10) + "}:log"
}

var admitScript = goredis.NewScript(`
-- KEYS[1] counters hash, KEYS[2] devices hash, KEYS[3] change list
-- ARGV[1] phase, ARGV[2] limit, ARGV[3] device, ARGV[4] now (Unix ms)
local cur = redis.call('HGET', KEYS[2], ARGV[3])
if cur then return cur end
if redis.call('HEXISTS', KEYS[1], 'x') == 1 then return '' end
local field = 'a' .. ARGV[1]
if tonumber(redis.call('HGET', KEYS[1], field) or '0') >= tonumber(ARGV[2]) then return '' end
redis.call('HINCRBY', KEYS[1], field, 1)
local rec = ARGV[1] .. '|admitted|0|' .. ARGV[4]
redis.call('HSET', KEYS[2], ARGV[3], rec)
redis.call('RPUSH', KEYS[3], ARGV[1] .. '|admitted|' .. ARGV[3])
return rec
`)

// Admit admits a device into a phase if there is room (one script).
func (s *Store) Admit(ctx context.Context, g store.GenerationRef, phase int, limit int64, device string) (store.Deployment, bool, error) {
	if err := store.ValidateAdmit(g, phase, limit, device); err != nil {
		return store.Deployment{}, false, err
	}
	rec, err := admitScript.Run(ctx, s.c, []string{s.k.genCounts(g), s.k.genDevices(g), s.k.genLog(g)}, phase, limit, device, s.opts.Now().UnixMilli()).Text()
	if err != nil {
		return store.Deployment{}, false, fmt.Errorf("redis: admit %s to %s: %w", device, g, err)
	}
	if rec == "" {
		return store.Deployment{}, false, nil
	}
	d, err := store.ParseDeployment(rec)
	if err != nil {
		return store.Deployment{}, false, fmt.Errorf("redis: admit %s to %s: %w", device, g, err)
	}
	return d, true, nil
}

var reportScript = goredis.NewScript(`
-- KEYS[1] counters hash, KEYS[2] devices hash, KEYS[3] change list
-- ARGV[1] device, ARGV[2] state, ARGV[3] retries
-- Returns {0|1 changed, record}; {-1, ''} when the device was never admitted.
local cur = redis.call('HGET', KEYS[2], ARGV[1])
if not cur then return {-1, ''} end
local phase, state, attempts, since = string.match(cur, '^(%d+)|([^|]*)|(%d+)(.*)$')
if not phase or not (since == '' or string.match(since, '^|%d+$')) then
  return redis.error_reply('malformed deployment ' .. cur)
end
attempts = tonumber(attempts)
if state == 'success' or state == 'failure' or state == 'timeout' then return {0, cur} end
local st = ARGV[2]
if st == 'timeout' then
  redis.call('HINCRBY', KEYS[1], 't' .. phase, 1)
  redis.call('RPUSH', KEYS[3], phase .. '|timeout|' .. ARGV[1])
elseif st == 'failure' and attempts < tonumber(ARGV[3]) then
  st, attempts = 'retrying', attempts + 1
elseif st == 'success' then
  redis.call('HINCRBY', KEYS[1], 's' .. phase, 1)
  redis.call('RPUSH', KEYS[3], phase .. '|success|' .. ARGV[1])
elseif st == 'failure' then
  redis.call('HINCRBY', KEYS[1], 'f' .. phase, 1)
  redis.call('RPUSH', KEYS[3], phase .. '|failure|' .. ARGV[1])
end
local rec = phase .. '|' .. st .. '|' .. attempts .. since
if rec == cur then return {0, cur} end
redis.call('HSET', KEYS[2], ARGV[1], rec)
return {1, rec}
`)

// Report moves a device's deployment to state, counting final states once
// (one script).
func (s *Store) Report(ctx context.Context, g store.GenerationRef, device, state string, retries int) (store.Deployment, bool, error) {
	if err := store.ValidateReport(g, device, state, retries); err != nil {
		return store.Deployment{}, false, err
	}
	res, err := reportScript.Run(ctx, s.c, []string{s.k.genCounts(g), s.k.genDevices(g), s.k.genLog(g)}, device, state, retries).Slice()
	if err != nil {
		return store.Deployment{}, false, fmt.Errorf("redis: report %s in %s: %w", device, g, err)
	}
	if len(res) != 2 {
		return store.Deployment{}, false, fmt.Errorf("redis: report %s in %s: script returned %d values", device, g, len(res))
	}
	status, _ := res[0].(int64)
	rec, _ := res[1].(string)
	if status < 0 {
		return store.Deployment{}, false, fmt.Errorf("%w: device %s not admitted to %s", store.ErrNotFound, device, g)
	}
	d, err := store.ParseDeployment(rec)
	if err != nil {
		return store.Deployment{}, false, fmt.Errorf("redis: report %s in %s: %w", device, g, err)
	}
	return d, status == 1, nil
}

// Deployment returns a device's deployment.
func (s *Store) Deployment(ctx context.Context, g store.GenerationRef, device string) (store.Deployment, error) {
	if err := store.ValidateGeneration(g, &device); err != nil {
		return store.Deployment{}, err
	}
	rec, err := s.c.HGet(ctx, s.k.genDevices(g), device).Result()
	if errors.Is(err, goredis.Nil) {
		return store.Deployment{}, fmt.Errorf("%w: device %s not admitted to %s", store.ErrNotFound, device, g)
	}
	if err != nil {
		return store.Deployment{}, fmt.Errorf("redis: deployment of %s in %s: %w", device, g, err)
	}
	d, err := store.ParseDeployment(rec)
	if err != nil {
		return store.Deployment{}, fmt.Errorf("redis: deployment of %s in %s: %w", device, g, err)
	}
	return d, nil
}

// Changes returns a range of the generation's change list (LRANGE).
func (s *Store) Changes(ctx context.Context, g store.GenerationRef, from int64, max int) ([]store.Change, error) {
	if err := store.ValidateChanges(g, from, max); err != nil {
		return nil, err
	}
	recs, err := s.c.LRange(ctx, s.k.genLog(g), from, from+int64(max)-1).Result()
	if err != nil {
		return nil, fmt.Errorf("redis: changes of %s: %w", g, err)
	}
	out := make([]store.Change, len(recs))
	for i, rec := range recs {
		if out[i], err = store.ParseChange(rec); err != nil {
			return nil, fmt.Errorf("redis: changes of %s at %d: %w", g, from+int64(i), err)
		}
	}
	return out, nil
}

// Progress returns a generation's counts per phase.
func (s *Store) Progress(ctx context.Context, g store.GenerationRef) (store.Progress, error) {
	if err := store.ValidateGeneration(g, nil); err != nil {
		return store.Progress{}, err
	}
	all, err := s.c.HGetAll(ctx, s.k.genCounts(g)).Result()
	if err != nil {
		return store.Progress{}, fmt.Errorf("redis: progress of %s: %w", g, err)
	}
	var p store.Progress
	for field, v := range all {
		if field == "x" {
			p.Aborted = v
			continue
		}
		phase, err1 := strconv.Atoi(field[1:])
		n, err2 := strconv.ParseInt(v, 10, 64)
		if err1 != nil || err2 != nil || phase < 0 || phase >= store.MaxPhases {
			return store.Progress{}, fmt.Errorf("redis: progress of %s: bad counter %s=%q", g, field, v)
		}
		for len(p.Phases) <= phase {
			p.Phases = append(p.Phases, store.PhaseCounts{})
		}
		switch field[0] {
		case 'a':
			p.Phases[phase].Admitted = n
		case 's':
			p.Phases[phase].Succeeded = n
		case 'f':
			p.Phases[phase].Failed = n
		case 't':
			p.Phases[phase].TimedOut = n
		case 'c':
			p.Phases[phase].Completed = time.UnixMilli(n)
		}
	}
	return p, nil
}

// Abort marks a generation aborted (HSETNX).
func (s *Store) Abort(ctx context.Context, g store.GenerationRef, reason string) (bool, error) {
	if err := store.ValidateAbort(g, reason); err != nil {
		return false, err
	}
	if reason == "" {
		reason = "aborted"
	}
	first, err := s.c.HSetNX(ctx, s.k.genCounts(g), "x", reason).Result()
	if err != nil {
		return false, fmt.Errorf("redis: abort %s: %w", g, err)
	}
	return first, nil
}

// CompletePhase records when a phase completed: HSETNX and HGET of field
// c<phase> in one MULTI, so every caller reads the first writer's moment.
func (s *Store) CompletePhase(ctx context.Context, g store.GenerationRef, phase int, at time.Time) (time.Time, bool, error) {
	if err := store.ValidatePhase(g, phase, at); err != nil {
		return time.Time{}, false, err
	}
	key, field := s.k.genCounts(g), "c"+strconv.Itoa(phase)
	var set *goredis.BoolCmd
	var get *goredis.StringCmd
	_, err := s.c.TxPipelined(ctx, func(p goredis.Pipeliner) error {
		set = p.HSetNX(ctx, key, field, at.UnixMilli())
		get = p.HGet(ctx, key, field)
		return nil
	})
	if err != nil {
		return time.Time{}, false, fmt.Errorf("redis: complete phase %d of %s: %w", phase, g, err)
	}
	ms, err := strconv.ParseInt(get.Val(), 10, 64)
	if err != nil {
		return time.Time{}, false, fmt.Errorf("redis: complete phase %d of %s: bad time %q", phase, g, get.Val())
	}
	return time.UnixMilli(ms), set.Val(), nil
}
