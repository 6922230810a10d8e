// Package redistest starts real Redis servers for tests: a single server, or
// a three-node Redis Cluster, on free loopback ports, each in its own
// temporary directory, stopped by PID when the test ends.
//
//	addr, restart := redistest.Start(t)
//	s := newStoreOn(addr)
//	…
//	restart() // same port, same data directory: state survives
//
// When redis-server is not installed the test is skipped, unless CI=true,
// where a missing server fails it. Every wait has a deadline.
package redistest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// startLimit bounds waiting for a server to answer, to stop, or for a
// cluster to form.
const startLimit = 20 * time.Second

// Binaries returns the paths of redis-server and redis-cli, skipping the
// test when they are missing (failing it when CI=true).
func Binaries(t testing.TB) (server, cli string) {
	t.Helper()
	server, err := exec.LookPath("redis-server")
	if err == nil {
		cli, err = exec.LookPath("redis-cli")
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("redis-server and redis-cli are required when CI=true (Debian: apt-get install redis-server): %v", err)
		}
		t.Skipf("redis-server/redis-cli not installed: %v", err)
	}
	return server, cli
}

// Start starts a redis-server on a free 127.0.0.1 port with an append-only
// file fsynced on every write, and returns its address and a function that
// restarts it (SIGTERM, wait, start again on the same port and directory).
// The server is killed when the test ends. Extra redis-server arguments
// override the defaults (e.g. "--appendfsync", "everysec" for benchmarks).
func Start(t testing.TB, extra ...string) (addr string, restart func()) {
	t.Helper()
	bin, _ := Binaries(t)
	dir := t.TempDir()
	var srv *server
	var err error
	for range 5 { // another process may grab the free port first
		srv = &server{bin: bin, dir: dir, port: freePort(t, false)}
		srv.args = []string{
			"--port", strconv.Itoa(srv.port), "--bind", "127.0.0.1",
			"--dir", dir, "--daemonize", "no", "--save", "",
			"--appendonly", "yes", "--appendfsync", "always",
		}
		srv.args = append(srv.args, extra...)
		if err = srv.start(); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.kill)
	return srv.addr(), func() {
		t.Helper()
		if err := srv.stop(); err != nil {
			t.Fatal(err)
		}
		if err := srv.start(); err != nil {
			t.Fatalf("restart: %v", err)
		}
	}
}

// StartCluster starts a three-node Redis Cluster (three masters, no
// replicas) on free loopback ports, waits until every node reports
// cluster_state:ok, and returns the nodes' addresses. The nodes are killed
// when the test ends.
func StartCluster(t testing.TB) []string {
	t.Helper()
	bin, cli := Binaries(t)
	var addrs []string
	for i := range 3 {
		dir := filepath.Join(t.TempDir(), fmt.Sprint("node", i))
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		var srv *server
		var err error
		for range 5 {
			srv = &server{bin: bin, dir: dir, port: freePort(t, true)}
			srv.args = []string{
				"--port", strconv.Itoa(srv.port), "--bind", "127.0.0.1",
				"--dir", dir, "--daemonize", "no", "--save", "", "--appendonly", "no",
				"--cluster-enabled", "yes", "--cluster-config-file", filepath.Join(dir, "nodes.conf"),
				"--cluster-node-timeout", "5000",
			}
			if err = srv.start(); err == nil {
				break
			}
		}
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(srv.kill)
		addrs = append(addrs, srv.addr())
	}

	ctx, cancel := context.WithTimeout(context.Background(), startLimit)
	defer cancel()
	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	for _, a := range addrs {
		waitFor(t, ctx, "cluster_state:ok on "+a, func(ctx context.Context) error {
			c := goredis.NewClient(&goredis.Options{Addr: a, MaxRetries: -1, Protocol: 2, DisableIdentity: true})
			defer c.Close()
			info, err := c.ClusterInfo(ctx).Result()
			if err != nil {
				return err
			}
			if !strings.Contains(info, "cluster_state:ok") || !strings.Contains(info, "cluster_slots_ok:16384") {
				return errors.New("not ok yet")
			}
			return nil
		})
	}
	return addrs
}

// server is one redis-server process.
type server struct {
	bin, dir string
	port     int
	args     []string
	cmd      *exec.Cmd
	exited   chan struct{}
	log      bytes.Buffer // only read after exited is closed
}

func (s *server) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// start runs the server and waits until it answers PING.
func (s *server) start() error {
	s.log.Reset()
	s.cmd = exec.Command(s.bin, s.args...)
	s.cmd.Dir = s.dir
	s.cmd.Stdout, s.cmd.Stderr = &s.log, &s.log
	s.cmd.SysProcAttr = sysProcAttr()
	if err := s.cmd.Start(); err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	exited := make(chan struct{})
	s.exited = exited
	cmd := s.cmd
	go func() { cmd.Wait(); close(exited) }()

	ctx, cancel := context.WithTimeout(context.Background(), startLimit)
	defer cancel()
	c := goredis.NewClient(&goredis.Options{Addr: s.addr(), MaxRetries: -1, Protocol: 2, DisableIdentity: true, DialTimeout: time.Second})
	defer c.Close()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		err := c.Ping(ctx).Err()
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("redis-server on port %d exited: %s\n%s", s.port, cmd.ProcessState, tail(s.log.String()))
		case <-ctx.Done():
			s.kill()
			return fmt.Errorf("redis-server on port %d did not answer PING within %v: %v", s.port, startLimit, err)
		case <-tick.C:
		}
	}
}

// stop asks the server to shut down (it flushes its append-only file) and
// waits for it, killing it if it takes longer than startLimit.
func (s *server) stop() error {
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return fmt.Errorf("stop redis-server pid %d: %w", s.cmd.Process.Pid, err)
	}
	select {
	case <-s.exited:
		return nil
	case <-time.After(startLimit):
		s.kill()
		return fmt.Errorf("redis-server pid %d ignored SIGTERM for %v; killed", s.cmd.Process.Pid, startLimit)
	}
}

// kill kills the server by PID and waits for it to exit.
func (s *server) kill() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	select {
	case <-s.exited:
		return
	default:
	}
	s.cmd.Process.Kill()
	select {
	case <-s.exited:
	case <-time.After(startLimit):
	}
}

// freePort returns a loopback port nobody listens on; for cluster nodes the
// cluster bus port (port+10000) must be free too.
func freePort(t testing.TB, cluster bool) int {
	t.Helper()
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if !cluster {
			return port
		}
		if port+10000 > 65535 {
			continue
		}
		bus, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port+10000)))
		if err != nil {
			continue
		}
		bus.Close()
		return port
	}
	t.Fatal("no free loopback port pair for a cluster node")
	return 0
}

func waitFor(t testing.TB, ctx context.Context, what string, fn func(context.Context) error) {
	t.Helper()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		err := fn(ctx)
		if err == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v (last error: %v)", what, ctx.Err(), err)
		case <-tick.C:
		}
	}
}

func tail(s string) string {
	if len(s) > 2000 {
		return "…" + s[len(s)-2000:]
	}
	return s
}
