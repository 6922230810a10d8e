package redis_test

import (
	"cmp"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gitfleet/gitfleet/controller/store/redis"
	"github.com/gitfleet/gitfleet/controller/store/redistest"
	goredis "github.com/redis/go-redis/v9"
)

// benchStore is a store on a fresh redis-server with the default event
// bound. The server fsyncs its append-only file once a second, as
// production servers usually do; with GITFLEET_BENCH_FSYNC=always (the
// tests' setting) every op waits for an fsync, which dominates.
func benchStore(b *testing.B) *redis.Store {
	s, _ := benchServer(b)
	return s
}

// benchServer is benchStore with the server's address.
func benchServer(b *testing.B) (*redis.Store, string) {
	fsync := cmp.Or(os.Getenv("GITFLEET_BENCH_FSYNC"), "everysec")
	addr, _ := redistest.Start(b, "--appendfsync", fsync)
	s, err := redis.New(redis.Options{Addrs: []string{addr}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s, addr
}

// BenchmarkSetLive moves the live commit forward one commit per op (one
// EVALSHA of the compare-and-set script).
func BenchmarkSetLive(b *testing.B) {
	s := benchStore(b)
	ctx := b.Context()
	rec := store.CommitRecord{Branch: "main", Author: "Ann <ann@example.com>", Message: "rollouts: canary",
		Committed: time.Now(), Loaded: time.Now(), Manifests: map[string]int{"Rollout": 3, "Artifact": 5, "Device": 1000}}
	prev := ""
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		rec.SHA = fmt.Sprintf("%040x", i)
		ok, err := s.SetLive(ctx, rec, prev)
		if err != nil || !ok {
			b.Fatalf("SetLive = %v, %v", ok, err)
		}
		prev = rec.SHA
	}
}

// BenchmarkAppendEvent appends distinct events to a log trimmed at the
// default 10,000 (the dedupe check, XADD MAXLEN and the dedupe key in one
// script).
func BenchmarkAppendEvent(b *testing.B) {
	s := benchStore(b)
	ctx := b.Context()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		_, added, err := s.AppendEvent(ctx, store.Event{Commit: "c1", Author: "ann", Kind: "rollout.started",
			Subject: fmt.Sprint("rollout/r", i), Message: "generation 1 of rollout r started"})
		if err != nil || !added {
			b.Fatalf("AppendEvent = %v, %v", added, err)
		}
	}
}

// BenchmarkFirstDelivery records new delivery IDs (SET NX PX), serially and
// from parallel goroutines (replicas' webhook handlers).
func BenchmarkFirstDelivery(b *testing.B) {
	s := benchStore(b)
	ctx := b.Context()
	var n atomic.Int64
	b.Run("serial", func(b *testing.B) {
		for b.Loop() {
			if _, err := s.FirstDelivery(ctx, fmt.Sprint("delivery-", n.Add(1)), time.Minute); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := s.FirstDelivery(ctx, fmt.Sprint("delivery-", n.Add(1)), time.Minute); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// BenchmarkRecordAlerts ingests batches of 10 alert events from many
// devices, as the device API would: each goroutine stands for a stream of
// devices of its own (so each device's Seq grows in order), and a batch
// raises, re-raises with new evidence and clears conditions of a few
// checks. Each batch is two round trips: a read of the device's hash, then
// the |seq-checked write with the fleet-wide listing's update.
//
// alerts/s counts events recorded. On a shared machine it depends on what
// else runs, so the benchmark also reports the CPU time one alert costs
// the Redis server (its INFO used_cpu_*) and this process (getrusage: the
// client, the benchmark loop and the GC): 1e6 divided by the server's
// figure is what one Redis core could ingest.
func BenchmarkRecordAlerts(b *testing.B) {
	s, addr := benchServer(b)
	raw := goredis.NewClient(&goredis.Options{Addr: addr})
	b.Cleanup(func() { raw.Close() })
	ctx := b.Context()
	const batch, devicesPerWorker = 10, 256
	var workers atomic.Int64
	// Names made once, so the loop measures the store, not fmt.
	var checks, keys, evidence [20]string
	for i := range checks {
		checks[i], keys[i], evidence[i] = fmt.Sprint("check", i%5), fmt.Sprint("/dev/sd", i%7), fmt.Sprint("usage ", 80+i, "%")
	}
	run := func(b *testing.B, parallelism int) {
		b.ReportAllocs()
		b.SetParallelism(parallelism)
		server0, client0 := serverCPU(b, raw), clientCPU(b)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			w := workers.Add(1)
			devices := make([]string, devicesPerWorker)
			for d := range devices {
				devices[d] = fmt.Sprintf("bench-%d-%d", w, d)
			}
			seqs := make([]uint64, devicesPerWorker)
			evs := make([]store.AlertEvent, batch)
			kinds := []string{store.AlertRaised, store.AlertRaised, store.AlertCleared}
			for n := 0; pb.Next(); n++ {
				d := n % devicesPerWorker
				for i := range evs {
					seqs[d]++
					q := seqs[d]
					evs[i] = store.AlertEvent{Seq: q, Check: checks[q%5], Key: keys[q%7],
						Kind: kinds[q%3], Severity: "warning", Evidence: evidence[q%20], Time: time.Now()}
				}
				if _, _, err := s.RecordAlerts(ctx, devices[d], evs); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.StopTimer()
		alerts := float64(b.N * batch)
		b.ReportMetric(alerts/b.Elapsed().Seconds(), "alerts/s")
		b.ReportMetric((serverCPU(b, raw)-server0).Seconds()*1e6/alerts, "server-µs/alert")
		b.ReportMetric((clientCPU(b)-client0).Seconds()*1e6/alerts, "client-µs/alert")
	}
	// SetParallelism(1): GOMAXPROCS goroutines; 8: eight times as many
	// requests in flight, as on a busy controller.
	b.Run("parallel1", func(b *testing.B) { run(b, 1) })
	b.Run("parallel8", func(b *testing.B) { run(b, 8) })
}

// serverCPU is the CPU time the Redis server used so far.
func serverCPU(b *testing.B, c *goredis.Client) time.Duration {
	info, err := c.Info(b.Context(), "cpu").Result()
	if err != nil {
		b.Fatal(err)
	}
	var total float64
	for line := range strings.Lines(info) {
		k, v, _ := strings.Cut(strings.TrimSpace(line), ":")
		if k == "used_cpu_user" || k == "used_cpu_sys" {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				b.Fatalf("INFO cpu: %s: %v", line, err)
			}
			total += f
		}
	}
	return time.Duration(total * float64(time.Second))
}
