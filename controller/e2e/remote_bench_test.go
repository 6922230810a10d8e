package e2e

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gitfleet/gitfleet/device/agent"
)

// ptyShell is the same shell on a local pty.
type ptyShell struct {
	cmd *exec.Cmd
	f   *os.File
	out chan []byte
	err error
}

func startPtyShell(tb testing.TB) *ptyShell {
	tb.Helper()
	cmd := exec.Command("/bin/bash", "--noprofile", "--norc")
	f, err := pty.StartWithSize(cmd, &pty.Winsize{Cols: 200, Rows: 50})
	if err != nil {
		tb.Fatal(err)
	}
	s := &ptyShell{cmd: cmd, f: f, out: make(chan []byte, 64)}
	tb.Cleanup(s.Close)
	go func() {
		defer close(s.out)
		for {
			buf := make([]byte, 32<<10)
			n, err := f.Read(buf)
			if n > 0 {
				s.out <- buf[:n]
			}
			if err != nil {
				s.err = err
				return
			}
		}
	}()
	return s
}

func (s *ptyShell) Type(p []byte) error { _, err := s.f.Write(p); return err }

func (s *ptyShell) Read(deadline time.Time) ([]byte, error) {
	return readChan(s.out, deadline, func() error { return s.err })
}

func (s *ptyShell) Close() {
	if s.cmd.Process != nil {
		s.cmd.Process.Kill()
		s.cmd.Wait()
	}
	s.f.Close()
}

// readUntil reads s's output until it contains marker, returning the
// bytes read.
func readUntil(s shellConn, marker string) (int, error) {
	return readUntilWithin(s, marker, Deadline)
}

// readUntilWithin is readUntil with a deadline of d.
func readUntilWithin(s shellConn, marker string, d time.Duration) (int, error) {
	deadline := time.Now().Add(d)
	var tail []byte
	n := 0
	for {
		b, err := s.Read(deadline)
		if err != nil {
			return n, fmt.Errorf("after %d bytes, no %q: %w", n, marker, err)
		}
		n += len(b)
		tail = append(tail, b...)
		if bytes.Contains(tail, []byte(marker)) {
			return n, nil
		}
		if len(tail) > 4096 {
			tail = tail[len(tail)-len(marker):]
		}
	}
}

// throughput runs one command printing size bytes of base64 (76-column
// lines, as a terminal shows a file) and reads to its end marker.
func throughput(b *testing.B, s shellConn, size int) {
	b.SetBytes(int64(size) * 4 / 3)
	for i := 0; i < b.N; i++ {
		mark := fmt.Sprintf("end-%d-", i)
		// The marker is computed so that the typed command's echo does
		// not contain it.
		cmd := fmt.Sprintf("head -c %d /dev/zero | base64; echo %s$((%d+1))\n", size, mark, i)
		if err := s.Type([]byte(cmd)); err != nil {
			b.Fatal(err)
		}
		if _, err := readUntil(s, fmt.Sprintf("%s%d", mark, i+1)); err != nil {
			b.Fatal(err)
		}
	}
}

// keystrokes types one character and waits for its echo, then erases it
// and waits for that echo: two round trips per op, reported per keystroke.
func keystrokes(b *testing.B, s shellConn) {
	var total time.Duration
	for i := 0; i < b.N; i++ {
		for _, key := range []string{"x", "\x7f"} {
			start := time.Now()
			if err := s.Type([]byte(key)); err != nil {
				b.Fatal(err)
			}
			deadline := time.Now().Add(Deadline)
			for {
				out, err := s.Read(deadline)
				if err != nil {
					b.Fatalf("keystroke %q: no echo: %v", key, err)
				}
				if key != "x" || bytes.Contains(out, []byte("x")) {
					break
				}
			}
			total += time.Since(start)
		}
	}
	b.ReportMetric(float64(total.Microseconds())/float64(2*b.N), "µs/keystroke")
}

// settle drains a fresh shell's prompt.
func settle(b *testing.B, s shellConn) {
	b.Helper()
	if err := s.Type([]byte("echo ready-$((20+1))\n")); err != nil {
		b.Fatal(err)
	}
	if _, err := readUntil(s, "ready-21"); err != nil {
		b.Fatal(err)
	}
	// The prompt after the output, and anything else pending.
	for {
		if _, err := s.Read(time.Now().Add(200 * time.Millisecond)); err != nil {
			return
		}
	}
}

// BenchmarkRemoteTerminal measures a terminal session through gitfleet
// serve and Debian's mender-connect 2.1 (with the stock mender 3.4 client's
// proxy), and through gitfleet serve and gitfleet-agent's built-in
// terminal, beside the same shell (bash) on a local pty, in the same run:
// throughput/* is output bytes per second of `head -c 1MiB /dev/zero |
// base64` read to its end by an operator websocket client (the protocol
// mender-cli terminal speaks); keystroke/* is the round trip of one typed
// character to its echo.
//
//	go test -run '^$' -bench BenchmarkRemoteTerminal -benchtime 10x ./controller/e2e
func BenchmarkRemoteTerminal(b *testing.B) {
	RequireRemote(b)
	const size = 1 << 20

	// The local pty first, while the machine is quiet of the others.
	local := startPtyShell(b)
	b.Run("throughput/local-pty", func(b *testing.B) { settle(b, local); b.ResetTimer(); throughput(b, local, size) })
	b.Run("keystroke/local-pty", func(b *testing.B) { settle(b, local); b.ResetTimer(); keystrokes(b, local) })

	// One device, one operator, seeded in the fleet's first commit.
	ident := map[string]string{"mac": "02:00:00:00:16:99"}
	keyPEM, fp := RemoteDeviceKey(b)
	token := "bench-pat-" + rand.Text()
	seed := b.TempDir()
	for path, content := range merge(deviceManifest("bench-1", ident, fp),
		remoteOperator("bench", token, []string{"bench-1"}, false, false, false)) {
		writeFile(b, filepath.Join(seed, path), []byte(content), 0o644)
	}
	env := newEnv(b, seed)
	c := env.StartController("a", "--log-level", "info")
	c.AwaitServing(env.Repo.Head())
	b.Cleanup(func() {
		if b.Failed() {
			b.Logf("controller log (tail):\n%s", tailLines(c.Logs(), 40))
		}
	})
	d := StartRemoteDevice(b, c, ident, keyPEM, RemoteConnectConf{})
	c.AwaitDevice(d.ID(), "accepted", func(dv store.Device) bool { return dv.Status == store.DeviceAccepted })
	d.AwaitConnections(1)
	remote := dialShell(b, c, token, d.ID())
	defer remote.Close()
	b.Run("throughput/gitfleet+mender-connect", func(b *testing.B) { settle(b, remote); b.ResetTimer(); throughput(b, remote, size) })
	b.Run("keystroke/gitfleet+mender-connect", func(b *testing.B) { settle(b, remote); b.ResetTimer(); keystrokes(b, remote) })
	remote.Close()
	d.StopConnect()
	d.Stop()

	// gitfleet-agent's built-in terminal in mender-connect's place, with
	// bash as its shell.
	a := NewAgent(b, c, AgentOptions{Name: "agent-bench-1", Image: TestImage("bench-1", 1<<20, true), ArtifactName: "bench-1",
		Configure: func(cfg *agent.Config) {
			cfg.RemoteTerminal = &agent.RemoteTerminal{Enabled: true, ShellCommand: "/bin/bash"}
		}})
	sha := env.Commit(merge(a.Manifest(), remoteOperator("bench", token, []string{"bench-1", a.Name}, false, false, false)), "the agent too")
	env.Push(c, sha, false)
	c.AwaitServing(sha)
	if err := a.Start(); err != nil {
		b.Fatal(err)
	}
	c.AwaitLog(`"msg":"device connected for remote sessions".*"device_id":"` + a.ID() + `"`)
	viaAgent := dialShell(b, c, token, a.ID())
	defer viaAgent.Close()
	b.Run("throughput/gitfleet+agent", func(b *testing.B) { settle(b, viaAgent); b.ResetTimer(); throughput(b, viaAgent, size) })
	b.Run("keystroke/gitfleet+agent", func(b *testing.B) { settle(b, viaAgent); b.ResetTimer(); keystrokes(b, viaAgent) })
}
