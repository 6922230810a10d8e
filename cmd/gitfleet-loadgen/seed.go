package main

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gitfleet/gitfleet/controller/store/redis"
	goredis "github.com/redis/go-redis/v9"
)

// memReport is Redis's memory for the device records.
type memReport struct {
	settings  string
	devices   int
	before    int64 // INFO used_memory before seeding
	after     int64
	sampleKey int64 // MEMORY USAGE (SAMPLES 0) of one device hash
	encoding  string
	took      time.Duration
}

func (m memReport) perDevice() float64 { return float64(m.after-m.before) / float64(m.devices) }

func (m memReport) String() string {
	return fmt.Sprintf("%.0f B (used_memory delta %d MiB / %d devices; one device hash %d B, %s encoding) with %s; seeded in %s (%.0f devices/s)",
		m.perDevice(), (m.after-m.before)>>20, m.devices, m.sampleKey, m.encoding, m.settings, m.took.Round(time.Millisecond),
		float64(m.devices)/m.took.Seconds())
}

// seed registers every device of f as accepted, with its identity, its
// key's fingerprint (as the device API binds a trustOnFirstUse device's
// first key) and an inventory, through the store API (SeeDevice and
// SetInventory, as the device API writes them), from workers goroutines.
func seed(ctx context.Context, addr string, f *fleet, workers int, settings string) (memReport, error) {
	raw := redisClient(addr, workers)
	defer raw.Close()
	st, err := redis.New(redis.Options{Client: raw})
	if err != nil {
		return memReport{}, err
	}
	m := memReport{settings: settings, devices: f.n}
	if m.before, err = usedMemory(ctx, raw); err != nil {
		return m, err
	}
	f.fingerprint(0) // derive the keys before the clock starts
	start := time.Now()
	var (
		next, done atomic.Int64
		wg         sync.WaitGroup
		errOnce    sync.Once
		firstErr   error
	)
	stop := make(chan struct{})
	go func() {
		t := time.NewTicker(5 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				d := done.Load()
				fmt.Printf("  seeding (%s): %d of %d devices, %.0f/s\n", settings, d, f.n, float64(d)/time.Since(start).Seconds())
			}
		}
	}()
	now := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= f.n || ctx.Err() != nil {
					return
				}
				id := f.id(i)
				_, err := st.SeeDevice(ctx, store.Device{ID: id, Identity: f.identity(i).Canonical(),
					KeyFingerprint: f.fingerprint(i), Status: store.DeviceAccepted, LastSeen: now})
				if err == nil {
					err = st.SetInventory(ctx, id, f.inventory(i))
				}
				if err != nil {
					errOnce.Do(func() { firstErr = err })
					return
				}
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	close(stop)
	m.took = time.Since(start)
	if firstErr == nil {
		firstErr = ctx.Err()
	}
	if firstErr != nil {
		return m, fmt.Errorf("seeding devices: %w", firstErr)
	}
	if m.after, err = usedMemory(ctx, raw); err != nil {
		return m, err
	}
	key := "gf:{d:" + f.id(f.n/2) + "}"
	m.sampleKey, _ = raw.MemoryUsage(ctx, key, 0).Result()
	m.encoding, _ = raw.ObjectEncoding(ctx, key).Result()
	fmt.Printf("  seeded %d devices (%s) in %s: %.0f B/device\n", f.n, settings, m.took.Round(time.Millisecond), m.perDevice())
	return m, nil
}

// usedMemory returns INFO used_memory, summed over the masters of a
// cluster.
func usedMemory(ctx context.Context, c goredis.UniversalClient) (int64, error) {
	if cc, ok := c.(*goredis.ClusterClient); ok {
		var mu sync.Mutex
		var sum int64
		err := cc.ForEachMaster(ctx, func(ctx context.Context, n *goredis.Client) error {
			v, err := usedMemory(ctx, n)
			mu.Lock()
			sum += v
			mu.Unlock()
			return err
		})
		return sum, err
	}
	info, err := c.Info(ctx, "memory").Result()
	if err != nil {
		return 0, fmt.Errorf("redis INFO memory: %w", err)
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "used_memory:"); ok {
			return strconv.ParseInt(v, 10, 64)
		}
	}
	return 0, fmt.Errorf("redis INFO memory has no used_memory")
}

// redisClient is a client of addr: one host:port, or the comma-separated
// nodes of a cluster.
func redisClient(addr string, pool int) goredis.UniversalClient {
	if nodes := strings.Split(addr, ","); len(nodes) > 1 {
		return goredis.NewClusterClient(&goredis.ClusterOptions{Addrs: nodes, PoolSize: pool})
	}
	return goredis.NewClient(&goredis.Options{Addr: addr, PoolSize: pool})
}

// commandStats returns Redis's calls per command (INFO commandstats),
// summed over the nodes of a cluster.
func commandStats(ctx context.Context, addr string) (map[string]int64, error) {
	out := map[string]int64{}
	for _, node := range strings.Split(addr, ",") {
		c := goredis.NewClient(&goredis.Options{Addr: node})
		info, err := c.Info(ctx, "commandstats").Result()
		c.Close()
		if err != nil {
			return nil, err
		}
		addCommandStats(out, info)
	}
	return out, nil
}

func addCommandStats(out map[string]int64, info string) {
	for _, line := range strings.Split(info, "\n") {
		// cmdstat_hgetall:calls=123,usec=…
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":calls=")
		if !ok {
			continue
		}
		calls, _, _ := strings.Cut(rest, ",")
		n, _ := strconv.ParseInt(calls, 10, 64)
		out[strings.TrimPrefix(name, "cmdstat_")] += n
	}
}

// perPollStats describes the Redis commands per poll between two
// commandStats, busiest first.
func perPollStats(before, after map[string]int64, polls int64) string {
	type kv struct {
		k string
		v int64
	}
	var list []kv
	var total int64
	for k, v := range after {
		if d := v - before[k]; d > 0 && k != "info" {
			list = append(list, kv{k, d})
			total += d
		}
	}
	if polls == 0 {
		return "-"
	}
	slices.SortFunc(list, func(a, b kv) int { return int(b.v - a.v) })
	var parts []string
	for _, e := range list {
		parts = append(parts, fmt.Sprintf("%s %.2f", e.k, float64(e.v)/float64(polls)))
	}
	return fmt.Sprintf("%.2f commands (%s)", float64(total)/float64(polls), strings.Join(parts, ", "))
}
