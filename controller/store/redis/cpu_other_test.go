//go:build !unix

package redis_test

import (
	"testing"
	"time"
)

// clientCPU is not measured here: the benchmark reports 0 client-µs/alert.
func clientCPU(*testing.B) time.Duration { return 0 }
