package e2e

// Debian's mender-cli 1.9 as the operator's tool.
//
// What it does, read from its source (1.9.0):
//
//   - Every command takes --server URL and --token-value TOKEN (else the
//     token `mender-cli login` saved in $XDG_CACHE_HOME/mender/authtoken).
//     TLS is Go's with the system roots, so SSL_CERT_FILE makes it trust
//     the controller's certificate without --skip-verify.
//   - devices list: GET /api/management/v2/devauth/devices, printing
//     "ID: …" and "Status: …" per device. artifacts list: GET
//     /api/management/v1/deployments/artifacts.
//   - terminal DEVICE_ID: GET /api/management/v1/deviceconnect/devices/ID
//     (it goes on only when "status" is "connected"), then the websocket
//     …/devices/ID/connect, a shell "new" message, and the shell stream.
//     With stdin not a terminal it sends what it reads as typed input; at
//     the end of stdin it keeps the session open. It ends when the device
//     (or the relay) sends a shell "stop", when a shell "new" comes back
//     with status error, or on SIGINT/SIGTERM; a closed websocket alone
//     does not end it.
//   - cp: PUT …/deviceconnect/devices/ID/upload (multipart: path, file,
//     mode; 201) and GET …/devices/ID/download?path= (200 with
//     X-MEN-FILE-MODE, X-MEN-FILE-SIZE, application/octet-stream).
//   - port-forward DEVICE_ID LOCAL:REMOTE: prints "Forwarding from …",
//     listens on 127.0.0.1:LOCAL and opens a port-forward stream over the
//     …/connect websocket per accepted connection.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// MenderCLI runs mender-cli as one operator against one controller.
type MenderCLI struct {
	Server string // https://127.0.0.1:PORT
	Token  string // --token-value; "" uses the token saved by Login
	Home   string // HOME and XDG_CACHE_HOME of the tool
	caFile string
	t      testing.TB
}

// NewMenderCLI prepares mender-cli for server, trusting certPEM through
// SSL_CERT_FILE, with a HOME of its own.
func NewMenderCLI(t testing.TB, server string, certPEM []byte, token string) *MenderCLI {
	t.Helper()
	home := t.TempDir()
	ca := filepath.Join(home, "controller-ca.pem")
	writeFile(t, ca, certPEM, 0o644)
	return &MenderCLI{Server: server, Token: token, Home: home, caFile: ca, t: t}
}

// command builds mender-cli ARGS with the server and token flags.
func (m *MenderCLI) command(ctx context.Context, args ...string) *exec.Cmd {
	full := []string{"--server", m.Server}
	if m.Token != "" {
		full = append(full, "--token-value", m.Token)
	}
	full = append(full, args...)
	cmd := exec.CommandContext(ctx, "mender-cli", full...)
	cmd.Env = append(os.Environ(), "HOME="+m.Home, "XDG_CACHE_HOME="+filepath.Join(m.Home, ".cache"),
		"SSL_CERT_FILE="+m.caFile, "SSL_CERT_DIR=/nonexistent")
	cmd.Dir = m.Home
	// Killed with the test process; its own group so a timeout kills it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// Run runs mender-cli ARGS to its end (bounded by Deadline) and returns
// its combined output and error.
func (m *MenderCLI) Run(args ...string) (string, error) {
	m.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Deadline)
	defer cancel()
	cmd := m.command(ctx, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("mender-cli %s: not done within %s (killed): %w", strings.Join(args, " "), Deadline, err)
	}
	return out.String(), err
}

// MustRun runs mender-cli ARGS and fails the test unless it succeeds.
func (m *MenderCLI) MustRun(args ...string) string {
	m.t.Helper()
	out, err := m.Run(args...)
	if err != nil {
		m.t.Fatalf("mender-cli %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// Login runs `mender-cli login --username USER --password PASS`, which
// saves the token it gets for the commands that follow without
// --token-value.
func (m *MenderCLI) Login(user, pass string) (string, error) {
	saved := m.Token
	m.Token = ""
	defer func() { m.Token = saved }()
	return m.Run("login", "--username", user, "--password", pass)
}

// RemoteCLIProc is a long-running mender-cli (terminal, port-forward).
type RemoteCLIProc struct {
	Args   []string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	out    *lockedBuffer
	exited chan struct{}
	err    error
	once   sync.Once
	t      testing.TB
}

// Start starts mender-cli ARGS with its stdin a pipe (not a terminal).
// It is killed (its process group) at cleanup; its output is attached to a
// failure.
func (m *MenderCLI) Start(args ...string) *RemoteCLIProc {
	m.t.Helper()
	cmd := m.command(context.Background(), args...)
	cmd.Cancel, cmd.WaitDelay = nil, 0
	p := &RemoteCLIProc{Args: args, cmd: cmd, out: &lockedBuffer{}, exited: make(chan struct{}), t: m.t}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	stdin, err := cmd.StdinPipe()
	if err != nil {
		m.t.Fatal(err)
	}
	p.stdin = stdin
	if err := cmd.Start(); err != nil {
		m.t.Fatal(err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	m.t.Cleanup(func() {
		p.Kill()
		if m.t.Failed() {
			m.t.Logf("mender-cli %s output (tail):\n%s", strings.Join(args, " "), tailLines(p.Output(), 40))
		}
	})
	return p
}

// Type writes s to the process's stdin.
func (p *RemoteCLIProc) Type(s string) {
	p.t.Helper()
	if _, err := io.WriteString(p.stdin, s); err != nil {
		p.t.Fatalf("mender-cli %s: writing stdin: %v\n%s", strings.Join(p.Args, " "), err, p.Output())
	}
}

// Output is what it printed so far.
func (p *RemoteCLIProc) Output() string { return p.out.String() }

// Exited reports whether it has ended, and its error.
func (p *RemoteCLIProc) Exited() (bool, error) {
	select {
	case <-p.exited:
		return true, p.err
	default:
		return false, nil
	}
}

// AwaitOutput waits until its output contains s, failing at Deadline or
// when it exits first.
func (p *RemoteCLIProc) AwaitOutput(s string) {
	p.t.Helper()
	deadline := time.Now().Add(Deadline)
	for !strings.Contains(p.Output(), s) {
		select {
		case <-p.exited:
			if strings.Contains(p.Output(), s) {
				return
			}
			p.t.Fatalf("mender-cli %s exited (%v) before printing %q:\n%s", strings.Join(p.Args, " "), p.err, s, p.Output())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("mender-cli %s: no %q within %s:\n%s", strings.Join(p.Args, " "), s, Deadline, p.Output())
		}
	}
}

// Printed reports whether its output contains s within d (false also
// when it exits first without printing it).
func (p *RemoteCLIProc) Printed(s string, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for !strings.Contains(p.Output(), s) {
		select {
		case <-p.exited:
			return strings.Contains(p.Output(), s)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return false
		}
	}
	return true
}

// AwaitExit waits until it ends (within d) and returns its error.
func (p *RemoteCLIProc) AwaitExit(d time.Duration) error {
	p.t.Helper()
	select {
	case <-p.exited:
		return p.err
	case <-time.After(d):
		p.t.Fatalf("mender-cli %s still running after %s:\n%s", strings.Join(p.Args, " "), d, p.Output())
		return nil
	}
}

// Kill ends it (SIGKILL to its process group) and waits.
func (p *RemoteCLIProc) Kill() {
	p.once.Do(func() {
		p.stdin.Close()
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.exited
	})
}
