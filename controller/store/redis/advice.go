package redis

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"

	goredis "github.com/redis/go-redis/v9"
)

// Advice checks the server settings Gitfleet's data depends on and returns
// one sentence per setting to change, each saying what it costs and how
// to fix it (serve logs them as warnings). Settings it may not read
// (CONFIG disabled, as on some managed services) are skipped. On a
// cluster every master is checked.
//
//   - maxmemory-policy must be noeviction: an evicting Redis silently
//     drops deployment records, change lists and rollout counters, which
//     the controller cannot rebuild.
//   - hash-max-listpack-value (hash-max-ziplist-value before Redis 7)
//     should be at least 1024: a device's record (its inventory is a few
//     hundred bytes) then stays in the compact listpack encoding, about
//     555 bytes per device instead of about 977.
func (s *Store) Advice(ctx context.Context) []string {
	var (
		mu  sync.Mutex
		out []string
	)
	check := func(c *goredis.Client) {
		addr := c.Options().Addr
		add := func(format string, args ...any) {
			mu.Lock()
			defer mu.Unlock()
			out = append(out, fmt.Sprintf("redis %s: "+format, append([]any{addr}, args...)...))
		}
		if v, ok := configGet(ctx, c, "maxmemory-policy"); ok && v != "noeviction" {
			add("maxmemory-policy is %s: under memory pressure Redis would evict deployment records and rollout counters the controller cannot rebuild; set maxmemory-policy noeviction", v)
		}
		v, ok := configGet(ctx, c, "hash-max-listpack-value")
		if !ok {
			v, ok = configGet(ctx, c, "hash-max-ziplist-value")
		}
		if n, err := strconv.Atoi(v); ok && err == nil && n < 1024 {
			add("hash-max-listpack-value is %d: each device record takes about 977 bytes instead of about 555; set hash-max-listpack-value 1024 (redis.conf or CONFIG SET)", n)
		}
	}
	switch c := s.c.(type) {
	case *goredis.ClusterClient:
		_ = c.ForEachMaster(ctx, func(ctx context.Context, m *goredis.Client) error {
			check(m)
			return nil
		})
	case *goredis.Client:
		check(c)
	}
	slices.Sort(out)
	return out
}

// configGet reads one setting; ok is false when it cannot be read.
func configGet(ctx context.Context, c *goredis.Client, name string) (string, bool) {
	m, err := c.ConfigGet(ctx, name).Result()
	if err != nil {
		return "", false
	}
	v, ok := m[name]
	return v, ok
}
