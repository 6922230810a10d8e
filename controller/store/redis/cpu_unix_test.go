//go:build unix

package redis_test

import (
	"syscall"
	"testing"
	"time"
)

// clientCPU is the CPU time this process used so far.
func clientCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
