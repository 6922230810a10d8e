package main

import (
	"bufio"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestServeLogsJSON runs the real `gitfleet serve` against a real
// redis-server, kills the server under it (so go-redis reports failed
// dials) while the repository is unreachable (so the Git source reports
// failed fetches with a retry wait), and reads everything serve wrote:
// nothing on stdout, and on stderr only JSON objects with time, level and
// msg, durations written as Go durations, go-redis's own lines among them
// with component=redis.
func TestServeLogsJSON(t *testing.T) {
	redisBin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("redis-server is required when CI=true (Debian: apt-get install redis-server): %v", err)
		}
		t.Skipf("redis-server not installed: %v", err)
	}
	bin := gitfleetBinary(t)
	dir := t.TempDir()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	redisAddr := ln.Addr().String()
	ln.Close()
	_, port, _ := net.SplitHostPort(redisAddr)
	redisSrv := exec.Command(redisBin, "--port", port, "--bind", "127.0.0.1", "--dir", dir,
		"--save", "", "--appendonly", "no", "--daemonize", "no")
	if err := redisSrv.Start(); err != nil {
		t.Fatal(err)
	}
	redisDone := make(chan struct{})
	go func() { redisSrv.Wait(); close(redisDone) }()
	killRedis := func() {
		redisSrv.Process.Kill()
		<-redisDone
	}
	t.Cleanup(killRedis)
	awaitDial(t, redisAddr)

	serve := exec.Command(bin, "serve",
		"--repo", "file://"+filepath.Join(dir, "no-such-repo"),
		"--redis", "redis://"+redisAddr,
		"--listen", "127.0.0.1:0", "--public-url", "https://gitfleet.test",
		"--data-dir", filepath.Join(dir, "data"), "--poll-interval", "1s", "--log-level", "debug")
	var stdout, stderr lockedBuf
	serve.Stdout, serve.Stderr = &stdout, &stderr
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	serveDone := make(chan error, 1)
	go func() { serveDone <- serve.Wait() }()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			serve.Process.Kill()
			<-serveDone
		}
	})

	await := func(what string) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for !strings.Contains(stderr.String(), what) {
			if time.Now().After(deadline) {
				t.Fatalf("serve did not log %s within a minute:\n%s", what, stderr.String())
			}
			select {
			case err := <-serveDone:
				stopped = true
				t.Fatalf("serve exited (%v) before logging %s:\n%s", err, what, stderr.String())
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	await(`"msg":"serving HTTPS"`)
	await(`"msg":"fetch failed"`)
	killRedis()
	await(`"component":"redis"`)

	serve.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-serveDone:
		stopped = true
		if err != nil {
			t.Errorf("serve after SIGTERM: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("serve did not stop after SIGTERM:\n%s", stderr.String())
	}

	if out := stdout.String(); out != "" {
		t.Errorf("serve wrote to stdout: %q", out)
	}
	var retries, redisLines int
	sc := bufio.NewScanner(strings.NewReader(stderr.String()))
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Errorf("not a JSON object: %q (%v)", line, err)
			continue
		}
		for _, k := range []string{"time", "level", "msg"} {
			if _, ok := rec[k].(string); !ok {
				t.Errorf("no string %q in %s", k, line)
			}
		}
		if rec["msg"] == "fetch failed" {
			retries++
			s, ok := rec["retry_in"].(string)
			if d, err := time.ParseDuration(s); !ok || err != nil || d <= 0 {
				t.Errorf("retry_in %#v is not a duration string: %s", rec["retry_in"], line)
			}
		}
		if rec["component"] == "redis" {
			redisLines++
			if msg, _ := rec["msg"].(string); !strings.Contains(msg, "dial") {
				t.Errorf("go-redis line without the dial failure: %s", line)
			}
		}
	}
	if retries == 0 || redisLines == 0 {
		t.Errorf("%d fetch failures and %d go-redis lines logged, want some of each", retries, redisLines)
	}
	if n := strings.Count(stderr.String(), "\n"); n < 5 {
		t.Errorf("only %d lines:\n%s", n, stderr.String())
	}
}

// awaitDial waits until addr accepts TCP connections.
func awaitDial(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not accept connections: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
