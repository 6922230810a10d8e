package e2e

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	benchAgentOnce sync.Once
	benchAgentPath string
	benchAgentErr  error
)

// BenchAgentBinary builds cmd/gitfleet-agent once per test process and returns
// its path.
func BenchAgentBinary(t testing.TB) string {
	t.Helper()
	benchAgentOnce.Do(func() {
		dir, err := os.MkdirTemp("", "gitfleet-e2e-agent-")
		if err != nil {
			benchAgentErr = err
			return
		}
		benchAgentPath = filepath.Join(dir, "gitfleet-agent")
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Join(filepath.Dir(file), "..", "..")
		cmd := exec.Command("go", "build", "-o", benchAgentPath, "./cmd/gitfleet-agent")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			benchAgentErr = fmt.Errorf("go build gitfleet-agent: %v\n%s", err, out)
		}
	})
	if benchAgentErr != nil {
		t.Fatal(benchAgentErr)
	}
	return benchAgentPath
}

// ProcUsage is what the kernel accounts to one process: its CPU time (its
// own plus that of the children it has waited for: update modules,
// identity and inventory scripts) and its resident memory.
type ProcUsage struct {
	CPU      time.Duration // user + system
	RSS      int64         // VmRSS, bytes (0 once the process has exited)
	PeakRSS  int64         // VmHWM, or ru_maxrss after exit, bytes
	Measured string        // "proc" (a live process) or "rusage" (after exit)
}

// userHZ is the unit of the clock-tick fields of /proc/PID/stat: USER_HZ,
// 100 on every Linux architecture's user ABI.
const userHZ = 100

// ReadProcUsage reads a live process's usage from /proc/PID/stat and
// /proc/PID/status.
func ReadProcUsage(pid int) (ProcUsage, error) {
	u := ProcUsage{Measured: "proc"}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return u, err
	}
	// The command name (field 2) may hold spaces; fields resume after ')'.
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return u, fmt.Errorf("/proc/%d/stat: no ')'", pid)
	}
	f := strings.Fields(s[i+1:]) // f[0] is field 3 (state)
	if len(f) < 15 {
		return u, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	var ticks int64
	for _, k := range []int{14, 15, 16, 17} { // utime stime cutime cstime
		v, err := strconv.ParseInt(f[k-3], 10, 64)
		if err != nil {
			return u, fmt.Errorf("/proc/%d/stat field %d: %w", pid, k, err)
		}
		ticks += v
	}
	u.CPU = time.Duration(ticks) * time.Second / userHZ
	status, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return u, err
	}
	defer status.Close()
	sc := bufio.NewScanner(status)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		kb, _ := strconv.ParseInt(fields[1], 10, 64)
		switch fields[0] {
		case "VmRSS:":
			u.RSS = kb << 10
		case "VmHWM:":
			u.PeakRSS = kb << 10
		}
	}
	return u, sc.Err()
}

// ExitedUsage is the CPU time of a process that has been waited for, from
// wait4's rusage (itself and the children it waited for). It leaves
// PeakRSS zero: ru_maxrss is useless for a child of a Go program, because
// Go forks with CLONE_VM and exec records the hiwater mark of the mm it
// leaves — the parent's — in the child's maxrss. Use SamplePeakRSS.
func ExitedUsage(ps *os.ProcessState) ProcUsage {
	return ProcUsage{CPU: ps.UserTime() + ps.SystemTime(), Measured: "rusage"}
}

// SamplePeakRSS reads the process's VmHWM (the peak of its own address
// space) every interval until stop is called, and stop returns the
// highest value read. Call it right after Start and stop it after Wait;
// growth in the last interval before exit can escape it.
func SamplePeakRSS(pid int, every time.Duration) (stop func() int64) {
	done := make(chan struct{})
	result := make(chan int64, 1)
	go func() {
		var peak int64
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			if u, err := ReadProcUsage(pid); err == nil {
				peak = max(peak, u.PeakRSS)
			}
			select {
			case <-done:
				result <- peak
				return
			case <-t.C:
			}
		}
	}()
	return func() int64 {
		close(done)
		return <-result
	}
}

// TreeUsage is what the kernel accounts to a process and its live
// descendants (the commands a daemon keeps running, such as the
// "@command" sources of log checks, and their own children).
type TreeUsage struct {
	// CPU is user + system time of every process in the tree, each with
	// the children it has waited for (cutime, cstime): the whole tree's
	// CPU since each process started, less only descendants reaped by
	// something outside the tree.
	CPU time.Duration
	// Own is the root process's share of CPU: itself and the children it
	// waited for.
	Own ProcUsage
	// DescendantRSS is the VmRSS of the live descendants, summed, bytes.
	DescendantRSS int64
	// Descendants counts the live descendants.
	Descendants int
}

// ReadTreeUsage reads the usage of the live process pid and its live
// descendants, found by their parent PIDs in /proc/*/stat.
func ReadTreeUsage(pid int) (TreeUsage, error) {
	own, err := ReadProcUsage(pid)
	if err != nil {
		return TreeUsage{}, err
	}
	u := TreeUsage{CPU: own.CPU, Own: own}
	children := map[int][]int{}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return u, err
	}
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil {
			continue // exited meanwhile
		}
		s := string(stat)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:]) // f[1] is field 4 (ppid)
		if len(f) < 2 {
			continue
		}
		if ppid, err := strconv.Atoi(f[1]); err == nil {
			children[ppid] = append(children[ppid], p)
		}
	}
	queue := append([]int(nil), children[pid]...)
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		d, err := ReadProcUsage(p)
		if err != nil {
			continue // exited meanwhile: its time is now its parent's
		}
		u.CPU += d.CPU
		u.DescendantRSS += d.RSS
		u.Descendants++
		queue = append(queue, children[p]...)
	}
	return u, nil
}
