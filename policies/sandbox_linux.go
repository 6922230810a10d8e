package policies

import (
	"bufio"
	"bytes"
	"os"
	"runtime/debug"
	"strconv"
	"syscall"
)

// childAttr makes the child die with the process that started it.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// limitSelf applies, in the child, the limits the parent set in its
// environment: its address space may grow by the memory budget from what
// it took to start, and its CPU time is capped (SIGXCPU, then SIGKILL).
func limitSelf() {
	if n, err := strconv.ParseInt(os.Getenv(childMemEnv), 10, 64); err == nil && n > 0 {
		debug.SetMemoryLimit(n) // the collector works harder before the hard limit
		if cur := vmSize(); cur > 0 {
			lim := uint64(cur + n)
			_ = syscall.Setrlimit(syscall.RLIMIT_AS, &syscall.Rlimit{Cur: lim, Max: lim})
		}
	}
	if s, err := strconv.ParseUint(os.Getenv(childCPUEnv), 10, 64); err == nil && s > 0 {
		_ = syscall.Setrlimit(syscall.RLIMIT_CPU, &syscall.Rlimit{Cur: s, Max: s + 1})
	}
}

// vmSize returns the address space of this process in bytes, or 0.
func vmSize() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := bytes.CutPrefix(sc.Bytes(), []byte("VmSize:")); ok {
			kb, err := strconv.ParseInt(string(bytes.TrimSpace(bytes.TrimSuffix(bytes.TrimSpace(rest), []byte("kB")))), 10, 64)
			if err != nil {
				return 0
			}
			return kb << 10
		}
	}
	return 0
}
