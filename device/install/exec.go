package install

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"syscall"
	"time"
)

// Command is a process to start.
type Command struct {
	Path   string   // executable
	Args   []string // arguments after the executable's name
	Dir    string   // working directory; "" = the agent's
	Env    []string // environment; nil = the agent's
	Stdout io.Writer
	Stderr io.Writer
}

// Process is a started Command.
type Process interface {
	// Wait waits for the process to exit. A non-zero exit status is an
	// error that has an ExitCode() int method (as *exec.ExitError has).
	Wait() error
}

// Exec starts processes. Modules, state scripts and the health check run
// through it, so that tests can fake them.
type Exec interface {
	// Start starts c. When ctx is done the process (and everything it
	// started) is asked to stop and, after a grace period, killed.
	Start(ctx context.Context, c Command) (Process, error)
}

// OSExec is the real Exec: each process in its own process group, which
// gets SIGTERM when the context is done and SIGKILL KillGrace later.
type OSExec struct {
	// KillGrace is the time between SIGTERM and SIGKILL. Default 1 minute,
	// as the Mender client gives update modules.
	KillGrace time.Duration
}

var _ Exec = OSExec{}

// Start implements Exec.
func (o OSExec) Start(ctx context.Context, c Command) (Process, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	grace := o.KillGrace
	if grace <= 0 {
		grace = time.Minute
	}
	cmd := exec.Command(c.Path, c.Args...)
	cmd.Dir = c.Dir
	cmd.Env = c.Env
	cmd.Stdout = c.Stdout
	cmd.Stderr = c.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// Stop waiting for output of grandchildren that keep the pipes open
	// once the process itself has exited.
	cmd.WaitDelay = time.Second
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &osProcess{cmd: cmd, done: make(chan struct{})}
	go p.watch(ctx, grace)
	return p, nil
}

type osProcess struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func (p *osProcess) watch(ctx context.Context, grace time.Duration) {
	select {
	case <-p.done:
		return
	case <-ctx.Done():
	}
	pid := p.cmd.Process.Pid
	_ = syscall.Kill(-pid, syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
	case <-t.C:
		_ = syscall.Kill(-pid, syscall.SIGKILL)
	}
}

func (p *osProcess) Wait() error {
	err := p.cmd.Wait()
	close(p.done)
	return err
}

// exitCode returns the exit status an error from Process.Wait carries, or
// -1 when it carries none (killed by a signal, failed to start).
func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var ec interface{ ExitCode() int }
	if errors.As(err, &ec) {
		return ec.ExitCode()
	}
	return -1
}

// run starts c and waits for it.
func run(ctx context.Context, x Exec, c Command) error {
	p, err := x.Start(ctx, c)
	if err != nil {
		return fmt.Errorf("start %s: %w", c.Path, err)
	}
	return p.Wait()
}
