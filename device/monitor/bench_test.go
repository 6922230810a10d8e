package monitor

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// BenchmarkAllProbes runs every probe at its default interval against the
// real /proc and /sys, one simulated minute per iteration (sixty one-second
// Steps of an injected clock), and reports the CPU time that minute cost
// (cpu-ms/min, and %core, the share of one core) with its allocations.
//
//	go test -run '^$' -bench BenchmarkAllProbes -benchtime 20x ./device/monitor
func BenchmarkAllProbes(b *testing.B) {
	dir := b.TempDir()
	applog := filepath.Join(dir, "app.log")
	auth := filepath.Join(dir, "auth.log")
	os.WriteFile(applog, nil, 0o644)
	os.WriteFile(auth, nil, 0o644)
	pid1, _ := os.ReadFile("/proc/1/comm")
	iface := "lo"
	if _, err := os.Stat("/sys/class/net/eth0"); err == nil {
		iface = "eth0"
	}
	checks := []Check{
		{Name: "log", Log: &Log{Path: applog, Pattern: "ERROR|CRITICAL"}},
		{Name: "service", Service: &Service{Name: strings.TrimSpace(string(pid1))}},
		{Name: "ports", ListeningPorts: &ListeningPorts{Allow: []int{22}}},
		{Name: "setuid", Setuid: &Setuid{Paths: []string{"/usr/bin", "/usr/sbin", "/usr/local/bin"}}},
		{Name: "files", FileChange: &FileChange{Paths: []string{"/bin/sh", "/usr/bin/env", "/etc/passwd"}}},
		{Name: "restart", ProcessRestart: &ProcessRestart{Name: strings.TrimSpace(string(pid1))}},
		{Name: "traffic", Traffic: &Traffic{Interface: iface, MaxBytes: 1 << 40}},
		{Name: "wifi", Wifi: &Wifi{}},
		{Name: "root", RootLogin: &RootLogin{Log: auth}},
		{Name: "deploys", FailedDeployments: &FailedDeployments{}},
		{Name: "inject", LibraryInjection: &LibraryInjection{}},
	}
	clk := newClock()
	m, err := New(Options{Now: clk.Now, StatePath: filepath.Join(dir, "state.json")})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	if err := m.SetChecks(checks); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	m.Step(ctx) // first scans: baselines and digests
	b.ReportAllocs()
	b.ResetTimer()
	start := cpuTime()
	for range b.N {
		for range 60 {
			clk.Add(time.Second)
			if _, err := m.Step(ctx); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.StopTimer()
	perMin := (cpuTime() - start) / time.Duration(b.N)
	b.ReportMetric(float64(perMin.Microseconds())/1000, "cpu-ms/min")
	b.ReportMetric(100*perMin.Seconds()/60, "%core")
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	b.ReportMetric(float64(ru.Maxrss)/1024, "maxrss-MiB") // the whole test binary's peak
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
