package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// startCluster starts three redis-server nodes in cluster mode on free
// loopback ports (no persistence, no replicas), joins them with
// redis-cli --cluster create, and waits (at most a minute) until every
// node reports cluster_state:ok with all 16,384 slots. It returns the
// nodes' addresses.
func startCluster(ctx context.Context, p *procs, dir string) ([]string, error) {
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		return nil, fmt.Errorf("redis-cli is required for -cluster (Debian: apt-get install redis-tools): %w", err)
	}
	var addrs []string
	for i := range 3 {
		d := filepath.Join(dir, fmt.Sprint("node", i))
		rd, err := startRedis(ctx, p, d, "--hash-max-listpack-value", "1024",
			"--cluster-enabled", "yes", "--cluster-config-file", filepath.Join(d, "nodes.conf"), "--cluster-node-timeout", "5000")
		if err != nil {
			return nil, err
		}
		addrs = append(addrs, rd.addr)
	}
	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("redis-cli --cluster create: %v\n%s", err, out)
	}
	deadline := time.Now().Add(time.Minute)
	for _, a := range addrs {
		c := goredis.NewClient(&goredis.Options{Addr: a})
		for {
			info, err := c.ClusterInfo(ctx).Result()
			if err == nil && strings.Contains(info, "cluster_state:ok") && strings.Contains(info, "cluster_slots_ok:16384") {
				break
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				c.Close()
				return nil, fmt.Errorf("redis cluster node %s not ok within a minute: %v", a, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		c.Close()
	}
	fmt.Printf("Redis Cluster of 3 masters: %s\n", strings.Join(addrs, " "))
	return addrs, nil
}

// runCluster is -cluster: the fleet in a three-node Redis Cluster, two
// gitfleet serve replicas sharing it, and kept-alive polls from -clients
// clients, first all to replica A, then all to B, then half to each (a
// round-robin balancer): how the polls and the CPU divide between them.
func runCluster(ctx context.Context, c config, dir string, procs *procs) error {
	f := newFleet(c.devices)
	f.lists = c.deviceLists
	nodes, err := startCluster(ctx, procs, filepath.Join(dir, "cluster"))
	if err != nil {
		return err
	}
	addr := strings.Join(nodes, ",")
	mem, err := seed(ctx, addr, f, c.seeders, "Redis Cluster, 3 masters")
	if err != nil {
		return err
	}
	repo, artifacts, err := writeRepo(ctx, filepath.Join(dir, "fleet"), f, 0, nil)
	if err != nil {
		return err
	}
	bin := c.gitfleet
	if bin == "" {
		if bin, err = buildGitfleet(ctx, dir); err != nil {
			return err
		}
	}
	var reps []*server
	pool := x509.NewCertPool()
	for _, name := range []string{"a", "b"} {
		s, err := startServe(ctx, procs, bin, filepath.Join(dir, "serve-"+name), repo, artifacts, addr, f, c.startTimeout, "")
		if err != nil {
			return err
		}
		pem, err := os.ReadFile(s.certFile)
		if err != nil {
			return err
		}
		pool.AppendCertsFromPEM(pem)
		reps = append(reps, s)
	}
	for _, s := range reps {
		s.pool = pool
	}
	deps, err := seedDeployments(ctx, addr, f, c.seeders, strings.TrimPrefix(repo, "file://"))
	if err != nil {
		return err
	}
	toks, err := prepareTokens(ctx, addr, reps[0], nil, f, deps.probe, c.authSample)
	if err != nil {
		return err
	}

	// Each replica builds its indexes of the rollout at its first poll
	// (replica A did during the token step): warm B the same way, so
	// that no measured poll waits for that.
	warm := &http.Client{Timeout: 3 * time.Minute, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	for _, s := range reps {
		start := time.Now()
		code, body, err := poll(ctx, warm, "https://"+s.addr, toks.all[deps.probe])
		if err != nil || code != http.StatusOK {
			return fmt.Errorf("warming replica %s: %d %s %v", s.addr, code, body, err)
		}
		fmt.Printf("  replica %s answered its first poll in %s\n", s.addr, time.Since(start).Round(time.Millisecond))
	}
	warm.CloseIdleConnections()

	type run struct {
		name string
		r    result
		cpu  []time.Duration // per replica
		cmds string
	}
	var runs []run
	for _, sel := range []struct {
		name  string
		addrs []string
	}{
		{"replica A alone", []string{reps[0].addr}},
		{"replica B alone", []string{reps[1].addr}},
		{"A and B, round robin", []string{reps[0].addr, reps[1].addr}},
	} {
		cpu0 := []time.Duration{cpuOf(reps[0].proc.Process.Pid), cpuOf(reps[1].proc.Process.Pid)}
		before, _ := commandStats(ctx, addr)
		r, err := drive(ctx, driveOptions{mode: "keepalive", target: sel.name, addrs: sel.addrs, ca: pool,
			clients: c.clients, duration: c.duration, warmup: c.warmup, tokens: toks})
		if err != nil {
			return err
		}
		after, _ := commandStats(ctx, addr)
		rn := run{name: sel.name, r: r, cmds: perPollStats(before, after, r.all)}
		for i, s := range reps {
			rn.cpu = append(rn.cpu, cpuOf(s.proc.Process.Pid)-cpu0[i])
		}
		fmt.Printf("  %-22s %8.0f polls/s  p50 %7s  p99 %7s  (%d polls, %d errors; CPU A %s, B %s; Redis per poll: %s)\n",
			sel.name, r.rate, fmtDur(r.p50), fmtDur(r.p99), r.polls, r.errors,
			rn.cpu[0].Round(time.Millisecond), rn.cpu[1].Round(time.Millisecond), rn.cmds)
		runs = append(runs, rn)
	}

	fmt.Println()
	fmt.Printf("gitfleet-loadgen -cluster report: %d devices in a 3-node Redis Cluster, 2 gitfleet serve replicas, %d clients (kept-alive HTTP/1.1), %s per run, %d CPUs\n",
		c.devices, c.clients, c.duration, runtime.NumCPU())
	fmt.Printf("%-22s %10s %10s %10s %9s %9s %14s %14s\n", "polls to", "polls/s", "A polls/s", "B polls/s", "p50", "p99", "CPU A/poll", "CPU B/poll")
	for _, rn := range runs {
		secs := rn.r.measured.Seconds()
		var a, b float64
		if len(rn.r.perAddr) == 2 {
			a, b = float64(rn.r.perAddr[0])/secs, float64(rn.r.perAddr[1])/secs
		} else if strings.Contains(rn.name, "A") {
			a = rn.r.rate
		} else {
			b = rn.r.rate
		}
		// CPU per poll is over all the polls the replica answered,
		// the warm-up's included: the CPU was measured over both.
		perPoll := func(cpu time.Duration, share float64) string {
			if share == 0 {
				return "-"
			}
			n := float64(rn.r.all) * share / (a + b)
			return fmtDur(time.Duration(float64(cpu) / n))
		}
		fmt.Printf("%-22s %10.0f %10.0f %10.0f %9s %9s %14s %14s\n", rn.name, rn.r.rate, a, b, fmtDur(rn.r.p50), fmtDur(rn.r.p99),
			perPoll(rn.cpu[0], a), perPoll(rn.cpu[1], b))
	}
	if len(runs) == 3 {
		both, alone := runs[2].r.rate, (runs[0].r.rate+runs[1].r.rate)/2
		fmt.Printf("two replicas: %.2f× one replica's polls/s on this machine (%d CPUs shared by both replicas, 3 Redis nodes and the load generator)\n",
			both/alone, runtime.NumCPU())
	}
	fmt.Printf("Redis memory per device: %s\n", mem)
	fmt.Printf("                         + %s\n", deps)
	fmt.Printf("replicas ready in %s and %s\n", reps[0].ready.Round(time.Millisecond), reps[1].ready.Round(time.Millisecond))
	return nil
}
