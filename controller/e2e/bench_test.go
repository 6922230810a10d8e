package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// writeFleet writes a valid fleet of n manifests into dir: one artifact,
// n/20 groups of static members, as many rollouts (one per 5 groups, with
// disjoint targets) and a Device manifest per remaining slot.
func writeFleet(t testing.TB, dir string, n int) (groups int) {
	t.Helper()
	groups = n / 20
	rollouts := groups / 5
	devices := n - 1 - groups - rollouts
	write := func(name, body string) {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("artifacts/app.yaml", "apiVersion: gitfleet.io/v1\nkind: Artifact\nmetadata: {name: app-2}\nspec:\n  source: artifacts/app-2.mender\n  sha256: "+strings.Repeat("ab", 32)+"\n  deviceTypes: [board]\n")
	for d := 0; d < devices; d++ {
		write(fmt.Sprintf("devices/dev-%04d.yaml", d), fmt.Sprintf("apiVersion: gitfleet.io/v1\nkind: Device\nmetadata: {name: dev-%04d}\nspec:\n  identity: {mac: \"02:00:00:00:%02x:%02x\"}\n  trustOnFirstUse: true\n  deviceType: board\n", d, d/256, d%256))
	}
	for g := 0; g < groups; g++ {
		write(fmt.Sprintf("groups/g%03d.yaml", g), groupYAML(g, devices, groups, 0))
	}
	for r := 0; r < rollouts; r++ {
		var targets []string
		for g := r * 5; g < r*5+5; g++ {
			targets = append(targets, fmt.Sprintf("g%03d", g))
		}
		write(fmt.Sprintf("rollouts/r%03d.yaml", r), fmt.Sprintf("apiVersion: gitfleet.io/v1\nkind: Rollout\nmetadata: {name: r%03d}\nspec:\n  artifact: app-2\n  target: {groups: [%s]}\n  phases:\n    - {name: canary, count: 1, abort: {maxFailures: 0}}\n    - {name: all, percent: 100, abort: {maxFailurePercent: 10, minSample: 5}}\n", r, strings.Join(targets, ", ")))
	}
	return groups
}

// groupYAML is group g's manifest; shift moves its members by one device so
// that each benchmark commit changes something real.
func groupYAML(g, devices, groups, shift int) string {
	per := devices / groups
	var members []string
	for d := g * per; d < (g+1)*per-1; d++ {
		members = append(members, fmt.Sprintf("dev-%04d", d+(shift%2)))
	}
	return fmt.Sprintf("apiVersion: gitfleet.io/v1\nkind: DeviceGroup\nmetadata: {name: g%03d}\nspec:\n  members: [%s]\n", g, strings.Join(members, ", "))
}

// BenchmarkWebhookToLive measures, for a fleet repository of 1,000
// manifests, the time from posting a signed push webhook to the controller
// serving the pushed commit (fetch over HTTPS, load, validate, policies,
// store), polling the management API every 2 ms:
//
//	go test ./controller/e2e -run '^$' -bench WebhookToLive -benchtime 40x
//
// It reports the median and p99 over the b.N pushes and the controller's
// resident memory (current and peak).
func BenchmarkWebhookToLive(b *testing.B) {
	env := newBenchEnv(b, 1000)
	// Pushes come faster than the default per-source webhook rate (1/s).
	c := env.StartController("bench", "--webhook-rate", "1000", "--webhook-burst", "1000")
	c.AwaitServing(env.Repo.Head())
	devices, groups := 1000-1-50-10, 50
	var lat []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		sha := env.Commit(map[string]string{fmt.Sprintf("groups/g%03d.yaml", i%groups): groupYAML(i%groups, devices, groups, i/groups+1)}, fmt.Sprintf("bench %d", i))
		b.StartTimer()
		start := time.Now()
		env.Push(c, sha, false)
		for {
			st, err := c.Status()
			if err == nil && st.Serving != nil && st.Serving.SHA == sha {
				break
			}
			if time.Since(start) > Deadline {
				b.Fatalf("commit %d not live within %s:\n%s", i, Deadline, tailLines(c.Logs(), 30))
			}
			time.Sleep(2 * time.Millisecond)
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(lat)
	pct := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	cur, peak := c.RSS()
	b.ReportMetric(float64(pct(0.5).Milliseconds()), "p50-ms")
	b.ReportMetric(float64(pct(0.99).Milliseconds()), "p99-ms")
	b.ReportMetric(float64(lat[len(lat)-1].Milliseconds()), "max-ms")
	b.ReportMetric(float64(cur)/(1<<20), "rss-MiB")
	b.ReportMetric(float64(peak)/(1<<20), "peak-rss-MiB")
	if p := os.Getenv("GITFLEET_BENCH_LOG"); p != "" {
		// The controller's JSON log, to split latency into fetch and reconcile.
		os.WriteFile(p, []byte(c.Logs()), 0o644)
	}
}

// newBenchEnv is an Env whose repository holds a generated fleet of n
// manifests.
func newBenchEnv(t testing.TB, n int) *Env {
	t.Helper()
	dir := t.TempDir()
	writeFleet(t, dir, n)
	return newEnv(t, dir)
}
