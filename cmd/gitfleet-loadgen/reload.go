package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// reloadResult is one commit's way to being served.
type reloadResult struct {
	took time.Duration // from POST reconcile to the answer "live"
	cpu  time.Duration // gitfleet serve's CPU time meanwhile
	peak int64         // its peak RSS afterwards
}

// measureReloads commits n changes to the rollout (the last phase's
// abort.maxFailures), each followed by POST /api/management/v1/reconcile,
// which fetches and waits until the commit is live: the time that takes,
// and the CPU gitfleet serve spent meanwhile, are the per-commit reload
// cost of a fleet this size.
func measureReloads(ctx context.Context, srv *server, n int) ([]reloadResult, error) {
	client := &http.Client{Timeout: 3 * time.Minute, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: srv.pool}}}
	var out []reloadResult
	for i := range n {
		y := strings.Replace(rolloutYAML, "requiresApproval: true}", fmt.Sprintf("requiresApproval: true, abort: {maxFailures: %d}}", 100+i), 1)
		if y == rolloutYAML {
			return nil, fmt.Errorf("reload: the rollout's last phase is not where it was")
		}
		if err := os.WriteFile(filepath.Join(srv.repo, "fleet/rollout.yaml"), []byte(y), 0o644); err != nil {
			return nil, err
		}
		git := exec.CommandContext(ctx, "git", "-c", "user.name=gitfleet-loadgen", "-c", "user.email=loadgen@gitfleet.invalid",
			"commit", "-q", "-am", fmt.Sprintf("rollout: abort after %d failures", 100+i))
		git.Dir = srv.repo
		if b, err := git.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("git commit: %v\n%s", err, b)
		}
		head, err := exec.CommandContext(ctx, "git", "-C", srv.repo, "rev-parse", "HEAD").Output()
		if err != nil {
			return nil, err
		}
		cpu0 := cpuOf(srv.proc.Process.Pid)
		start := time.Now()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+srv.addr+"/api/management/v1/reconcile?wait=2m", nil)
		req.Header.Set("Authorization", "Bearer "+managementToken)
		resp, err := client.Do(req)
		if err != nil {
			return nil, fmt.Errorf("reconcile: %w", err)
		}
		var r struct {
			Outcome string `json:"outcome"`
			Serving *struct {
				SHA string `json:"sha"`
			} `json:"serving"`
			Errors []string `json:"errors"`
		}
		err = json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&r)
		resp.Body.Close()
		took := time.Since(start)
		if err != nil || resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("reconcile: %s, %v", resp.Status, err)
		}
		if r.Outcome != "live" || r.Serving == nil || r.Serving.SHA != strings.TrimSpace(string(head)) {
			return nil, fmt.Errorf("reconcile of commit %d: outcome %q %v, not live", i+1, r.Outcome, r.Errors)
		}
		_, peak := rssOf(srv.proc.Process.Pid)
		res := reloadResult{took: took, cpu: cpuOf(srv.proc.Process.Pid) - cpu0, peak: peak}
		fmt.Printf("  commit %d live after %s (CPU %s)\n", i+1, res.took.Round(time.Millisecond), res.cpu.Round(time.Millisecond))
		out = append(out, res)
	}
	return out, nil
}

// cpuOf returns a process's user and system CPU time so far.
func cpuOf(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// After the command name in parentheses: state is field 3, utime 14, stime 15.
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(fields[11], 10, 64)
	st, _ := strconv.ParseInt(fields[12], 10, 64)
	return time.Duration(u+st) * (time.Second / 100) // USER_HZ is 100 on Linux
}
