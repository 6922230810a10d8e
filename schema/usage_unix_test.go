//go:build unix

package schema

import (
	"syscall"
	"testing"
	"time"
)

func rusage() syscall.Rusage {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru
}

func cpuTime(ru syscall.Rusage) time.Duration {
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportUsage reports, beside the wall time the benchmark measures, the
// CPU time per op since start (user and system, all threads: on a shared
// machine it varies less than wall time) and the peak resident set size
// of the test process so far (fleet generation included).
func reportUsage(b *testing.B, start syscall.Rusage) {
	end := rusage()
	b.ReportMetric((cpuTime(end)-cpuTime(start)).Seconds()/float64(b.N), "cpu-s/op")
	b.ReportMetric(float64(end.Maxrss)/1024, "peak-RSS-MB") // Maxrss is in KiB on Linux
}
