package redis

import (
	"context"
	"fmt"
	"strconv"

	"github.com/gitfleet/gitfleet/controller/store"
	goredis "github.com/redis/go-redis/v9"
)

// Alert keys share the generation's {r:NAME:GEN} tag: a hash of counts per
// check and a set of "check|device" members, changed together by one
// script so a repeated raise or clear counts once.
func (k keys) genAlertCounts(g store.GenerationRef) string {
	return k.prefix + ":{r:" + g.Rollout + ":" + strconv.FormatInt(g.Generation, 10) + "}:al"
}

func (k keys) genAlertMembers(g store.GenerationRef) string {
	return k.genAlertCounts(g) + ":m"
}

// KEYS[1] counts, KEYS[2] members; ARGV[1] check, ARGV[2] member, ARGV[3]
// "1" to raise, "0" to clear. Returns 1 when something changed.
var setAlertScript = goredis.NewScript(`
if ARGV[3] == '1' then
  if redis.call('SADD', KEYS[2], ARGV[2]) == 1 then
    redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
    return 1
  end
  return 0
end
if redis.call('SREM', KEYS[2], ARGV[2]) == 1 then
  if redis.call('HINCRBY', KEYS[1], ARGV[1], -1) <= 0 then
    redis.call('HDEL', KEYS[1], ARGV[1])
  end
  return 1
end
return 0
`)

// SetAlert raises or clears an alert on a device of a generation.
func (s *Store) SetAlert(ctx context.Context, g store.GenerationRef, device, check string, raised bool) (bool, error) {
	if err := store.ValidateAlert(g, device, check); err != nil {
		return false, err
	}
	flag := "0"
	if raised {
		flag = "1"
	}
	n, err := setAlertScript.Run(ctx, s.c, []string{s.k.genAlertCounts(g), s.k.genAlertMembers(g)}, check, check+"|"+device, flag).Int()
	if err != nil {
		return false, fmt.Errorf("redis: set alert %s on %s in %s: %w", check, device, g, err)
	}
	return n == 1, nil
}

// AlertCounts returns how many devices of g have each alert raised.
func (s *Store) AlertCounts(ctx context.Context, g store.GenerationRef) (map[string]int64, error) {
	if err := store.ValidateGeneration(g, nil); err != nil {
		return nil, err
	}
	all, err := s.c.HGetAll(ctx, s.k.genAlertCounts(g)).Result()
	if err != nil {
		return nil, fmt.Errorf("redis: alert counts of %s: %w", g, err)
	}
	out := make(map[string]int64, len(all))
	for check, v := range all {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("redis: alert counts of %s: bad count %s=%q", g, check, v)
		}
		if n > 0 {
			out[check] = n
		}
	}
	return out, nil
}
