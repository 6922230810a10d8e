package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	goredis "github.com/redis/go-redis/v9"
)

// procs are the processes this run started; each is stopped by its own
// PID (SIGTERM, then SIGKILL after 10 s).
type procs struct {
	mu   sync.Mutex
	list []*exec.Cmd
	done map[*exec.Cmd]chan struct{}
}

func (p *procs) start(cmd *exec.Cmd) error {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", filepath.Base(cmd.Path), err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done == nil {
		p.done = map[*exec.Cmd]chan struct{}{}
	}
	done := make(chan struct{})
	p.list = append(p.list, cmd)
	p.done[cmd] = done
	go func() { cmd.Wait(); close(done) }()
	return nil
}

// exited returns a channel closed when cmd has exited.
func (p *procs) exited(cmd *exec.Cmd) <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.done[cmd]
}

func (p *procs) stop(cmd *exec.Cmd) {
	done := p.exited(cmd)
	if done == nil || cmd.Process == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-done
	}
}

func (p *procs) stopAll() {
	p.mu.Lock()
	list := append([]*exec.Cmd(nil), p.list...)
	p.mu.Unlock()
	for i := len(list) - 1; i >= 0; i-- {
		p.stop(list[i])
	}
}

type redisProc struct {
	addr string
	proc *exec.Cmd
}

// startRedis starts a redis-server on a free loopback port without
// persistence and waits (at most 20 s) until it answers.
func startRedis(ctx context.Context, p *procs, dir string, extra ...string) (*redisProc, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, fmt.Errorf("redis-server is required (Debian: apt-get install redis-server): %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	args := append([]string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", dir,
		"--daemonize", "no", "--save", "", "--appendonly", "no", "--logfile", filepath.Join(dir, "redis.log")}, extra...)
	cmd := exec.Command(bin, args...)
	if err := p.start(cmd); err != nil {
		return nil, err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	c := goredis.NewClient(&goredis.Options{Addr: addr})
	defer c.Close()
	deadline := time.Now().Add(20 * time.Second)
	for c.Ping(ctx).Err() != nil {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return nil, fmt.Errorf("redis-server on %s does not answer", addr)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return &redisProc{addr: addr, proc: cmd}, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// buildGitfleet builds cmd/gitfleet of the module this program is run in.
func buildGitfleet(ctx context.Context, dir string) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	mod := strings.TrimSpace(string(out))
	if err != nil || mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("cannot find the gitfleet module (run from the repository, or give -gitfleet): %v", err)
	}
	bin := filepath.Join(dir, "gitfleet")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/gitfleet")
	cmd.Dir = filepath.Dir(mod)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/gitfleet: %v\n%s", err, out)
	}
	return bin, nil
}

// scanFor reads r line by line into log, sending the first submatch of
// the first line containing marker (the text after it up to the next
// quote) on found.
func scanFor(r io.Reader, log io.Writer, marker string, found chan<- string) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	sent := false
	for sc.Scan() {
		line := sc.Text()
		fmt.Fprintln(log, line)
		if i := strings.Index(line, marker); i >= 0 && !sent {
			rest := line[i+len(marker):]
			if j := strings.IndexAny(rest, "\" \n"); j >= 0 {
				rest = rest[:j]
			}
			found <- rest
			sent = true
		}
	}
	io.Copy(io.Discard, r)
}
