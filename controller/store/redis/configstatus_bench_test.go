package redis_test

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gitfleet/gitfleet/controller/store/redis"
	"github.com/gitfleet/gitfleet/controller/store/redistest"
	goredis "github.com/redis/go-redis/v9"
)

// configReport is device i's report in the benchmarks: applied mostly,
// every tenth device failed with a 200-byte output, every twentieth
// drifted.
func configReport(device string, i int) store.ConfigStatus {
	r := store.ConfigStatus{Device: device, Digest: "sha256:" + strings.Repeat(fmt.Sprintf("%x", i%16), 64),
		State: "applied", Via: "agent", Reported: time.Now()}
	switch {
	case i%10 == 0:
		r.State, r.Script, r.ExitCode, r.Output = "failed", "10-network", 2, strings.Repeat("ip: RTNETLINK answers: File exists\n", 6)[:200]
	case i%20 == 5:
		r.State, r.FileDigest = "drifted", "sha256:"+strings.Repeat("f", 64)
	}
	return r
}

// BenchmarkConfigStatusOf reads the reports of a 10,000-device fleet in
// one call (ten pipelines of store.MaxPage HMGETs), as a dashboard page or
// an export of the fleet's configuration state would: on one server, and
// on a three-node cluster, where go-redis sends each node its share of a
// page at once. devices/s is the figure to compare; server-µs/device is
// the Redis CPU one device costs (summed over the cluster's nodes).
func BenchmarkConfigStatusOf(b *testing.B) {
	const fleet = 10_000
	names := make([]string, fleet)
	for i := range names {
		names[i] = fmt.Sprintf("gw-%05d", i)
	}
	run := func(b *testing.B, s *redis.Store, servers []*goredis.Client) {
		ctx := b.Context()
		// Reported by 8 writers, as replicas would.
		var wg sync.WaitGroup
		var failed atomic.Pointer[error]
		for w := range 8 {
			wg.Go(func() {
				for i := w; i < fleet; i += 8 {
					if _, err := s.SetConfigStatus(ctx, configReport(names[i], i)); err != nil {
						failed.Store(&err)
						return
					}
				}
			})
		}
		wg.Wait()
		if err := failed.Load(); err != nil {
			b.Fatal(*err)
		}
		b.ReportAllocs()
		server0, client0 := clusterCPU(b, servers), clientCPU(b)
		b.ResetTimer()
		for b.Loop() {
			got, err := s.ConfigStatusOf(ctx, names)
			if err != nil {
				b.Fatal(err)
			}
			if len(got) != fleet {
				b.Fatalf("ConfigStatusOf(%d devices) returned %d", fleet, len(got))
			}
		}
		b.StopTimer()
		devices := float64(b.N * fleet)
		b.ReportMetric(devices/b.Elapsed().Seconds(), "devices/s")
		b.ReportMetric((clusterCPU(b, servers)-server0).Seconds()*1e6/devices, "server-µs/device")
		b.ReportMetric((clientCPU(b)-client0).Seconds()*1e6/devices, "client-µs/device")
	}
	b.Run("standalone", func(b *testing.B) {
		s, addr := benchServer(b)
		run(b, s, rawClients(b, addr))
	})
	b.Run("cluster", func(b *testing.B) {
		addrs := redistest.StartCluster(b)
		s, err := redis.New(redis.Options{Addrs: addrs, Cluster: true})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { s.Close() })
		run(b, s, rawClients(b, addrs...))
	})
}

// BenchmarkSetConfigStatus records reports from parallel goroutines
// (replicas' device API handlers), each for 1,000 devices of its own, on
// one server: most reports repeat the device's last one (a device
// confirming its configuration); every tenth pass over a goroutine's
// devices reports another digest, and the pass after it the first one
// again. changed/report is the share of reports that changed the record,
// a device's first report included (so it is higher in short runs).
// Each report is one EVALSHA; the server fsyncs its append-only file once
// a second (GITFLEET_BENCH_FSYNC, see benchServer).
func BenchmarkSetConfigStatus(b *testing.B) {
	s, addr := benchServer(b)
	servers := rawClients(b, addr)
	ctx := b.Context()
	const devicesPerWorker = 1_000
	var workers atomic.Int64
	run := func(b *testing.B, parallelism int) {
		var changes atomic.Int64
		b.ReportAllocs()
		b.SetParallelism(parallelism)
		server0, client0 := clusterCPU(b, servers), clientCPU(b)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			w := workers.Add(1)
			reports := make([]store.ConfigStatus, devicesPerWorker)
			for d := range reports {
				reports[d] = configReport(fmt.Sprintf("gw-%d-%d", w, d), d)
			}
			for n := 0; pb.Next(); n++ {
				d := n % devicesPerWorker
				r := reports[d]
				r.Reported = time.Now()
				if n/devicesPerWorker%10 == 9 {
					r.Digest = "sha256:" + strings.Repeat("e", 64)
				}
				changed, err := s.SetConfigStatus(ctx, r)
				if err != nil {
					b.Error(err)
					return
				}
				if changed {
					changes.Add(1)
				}
			}
		})
		b.StopTimer()
		reports := float64(b.N)
		b.ReportMetric(reports/b.Elapsed().Seconds(), "reports/s")
		b.ReportMetric((clusterCPU(b, servers)-server0).Seconds()*1e6/reports, "server-µs/report")
		b.ReportMetric((clientCPU(b)-client0).Seconds()*1e6/reports, "client-µs/report")
		b.ReportMetric(float64(changes.Load())/reports, "changed/report")
	}
	// SetParallelism(1): GOMAXPROCS goroutines; 8: eight times as many
	// reports in flight, as on a busy controller.
	b.Run("parallel1", func(b *testing.B) { run(b, 1) })
	b.Run("parallel8", func(b *testing.B) { run(b, 8) })
}

// rawClients are plain clients of each server, for INFO.
func rawClients(b *testing.B, addrs ...string) []*goredis.Client {
	out := make([]*goredis.Client, len(addrs))
	for i, a := range addrs {
		out[i] = goredis.NewClient(&goredis.Options{Addr: a})
		b.Cleanup(func() { out[i].Close() })
	}
	return out
}

// clusterCPU is the CPU time the servers used so far, summed.
func clusterCPU(b *testing.B, servers []*goredis.Client) time.Duration {
	var total time.Duration
	for _, c := range servers {
		total += serverCPU(b, c)
	}
	return total
}
