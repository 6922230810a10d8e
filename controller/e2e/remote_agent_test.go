package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gitfleet/gitfleet/device/agent"
)

// TestRemoteTerminalAgent is TestRemoteTerminalStock's operator side with
// gitfleet-agent's built-in remote terminal in mender-connect's place (a
// simulated device whose configuration enables RemoteTerminal with port
// forwarding), and Debian's mender-cli 1.9 as the operator: listings and
// login, a typed command in the agent's shell, cp both ways, a port
// forward, refusals, the session records, and removing the operator from
// Git ending their terminal.
func TestRemoteTerminalAgent(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: runs gitfleet-agent and mender-cli")
	}
	if _, err := exec.LookPath("mender-cli"); err != nil {
		msg := "needs mender-cli (scripts/test-deps: apt-get install mender-cli)"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	_, pub := generateKey(t)
	env := newEnv(t, t.TempDir())
	c := env.StartController("a")
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("controller a log (tail):\n%s", tailLines(c.Logs(), 80))
		}
	})
	c.AwaitServing(env.Repo.Head())

	a := NewAgent(t, c, AgentOptions{Name: "agent-remote-1", Image: TestImage("remote-1", 1<<20, true), ArtifactName: "remote-1",
		VerifyKeys: [][]byte{pub},
		Configure: func(cfg *agent.Config) {
			cfg.RemoteTerminal = &agent.RemoteTerminal{Enabled: true, PortForward: true}
		}})
	f := newRemoteFleet(t, env, c, a.Name, a.Manifest())
	f.id = a.ID()
	if err := a.Start(); err != nil {
		t.Fatalf("start agent: %v", err)
	}
	c.AwaitDevice(f.id, "accepted", func(dv store.Device) bool { return dv.Status == store.DeviceAccepted })
	c.AwaitLog(`"msg":"device connected for remote sessions".*"device_id":"` + f.id + `"`)

	dir := t.TempDir()
	f.listings()
	first := f.terminal(dir, "gitfleet-agent")
	f.copies(dir)
	f.portForward()
	agentRefusesWhatItsConfigurationDoes(t, env, c, f, a, pub)
	f.refusals(dir, func() string {
		if strings.Contains(a.Logs(), "bob") {
			return "the agent logged something of bob's"
		}
		return ""
	})
	f.sessionsCLI(first, 4)
	f.removal(first)
}

// agentRefusesWhatItsConfigurationDoes: the device's own configuration
// has the last word, whatever the Operator manifests allow.
//
//   - A port forward to an address outside the agent's PortForwardAllow
//     (127.0.0.2 is loopback too, but the default list allows 127.0.0.1,
//     ::1 and localhost only) is refused on the device: the service there
//     gets no connection.
//   - A second agent that leaves RemoteTerminal off (the default), which
//     ada's manifest lists, is never connected for remote sessions: her
//     terminal and cp fail and nothing reaches it.
func agentRefusesWhatItsConfigurationDoes(t *testing.T, env *Env, c *Controller, f *remoteFleet, a *Agent, pub []byte) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatalf("listen on 127.0.0.2: %v", err)
	}
	t.Cleanup(func() { ln.Close() })
	var conns atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			c.Close()
		}
	}()
	target := ln.Addr().(*net.TCPAddr).Port
	local := freePort(t)
	pf := f.ada.Start("port-forward", f.id, fmt.Sprintf("%d:127.0.0.2:%d", local, target))
	pf.AwaitOutput("Forwarding from")
	var conn net.Conn
	for deadline := time.Now().Add(Deadline); ; time.Sleep(50 * time.Millisecond) {
		if conn, err = net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", local), time.Second); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("port forward: dial 127.0.0.1:%d: %v\n%s", local, err, pf.Output())
		}
	}
	conn.SetDeadline(time.Now().Add(Deadline))
	conn.Write([]byte("knock"))
	awaitAgentLog(t, a, "port forward refused")
	conn.Close()
	pf.Kill()
	if n := conns.Load(); n != 0 {
		t.Fatalf("127.0.0.2:%d, outside the agent's PortForwardAllow, got %d connections", target, n)
	}
	t.Logf("port-forward to 127.0.0.2:%d (outside PortForwardAllow): refused by the agent, no connection made", target)

	off := NewAgent(t, c, AgentOptions{Name: "agent-remote-off", Image: TestImage("remote-1", 1<<20, true), ArtifactName: "remote-1",
		VerifyKeys: [][]byte{pub}}) // RemoteTerminal left as it comes: off
	sha := env.Commit(merge(off.Manifest(), remoteOperator("ada", f.adaToken, []string{f.device, off.Name}, true, true, true)),
		"agent-remote-off, which ada may reach")
	env.Push(c, sha, false)
	c.awaitLive(sha)
	if err := off.Start(); err != nil {
		t.Fatalf("start agent-remote-off: %v", err)
	}
	c.AwaitDevice(off.ID(), "accepted", func(dv store.Device) bool { return dv.Status == store.DeviceAccepted })
	work := t.TempDir()
	term := f.ada.Start("terminal", off.ID())
	term.Type("echo off-was-here > " + filepath.Join(work, "off") + "\n")
	if err := term.AwaitExit(Deadline); err == nil {
		t.Errorf("a terminal to agent-remote-off (remote terminal off) succeeded:\n%s", term.Output())
	}
	src := filepath.Join(work, "up")
	os.WriteFile(src, []byte("payload"), 0o644)
	if out, err := f.ada.Run("cp", src, off.ID()+":"+filepath.Join(work, "off.bin")); err == nil {
		t.Errorf("cp to agent-remote-off (remote terminal off) succeeded:\n%s", out)
	}
	for _, name := range []string{"off", "off.bin"} {
		if _, err := os.Stat(filepath.Join(work, name)); err == nil {
			t.Errorf("%s reached agent-remote-off, whose remote terminal is off", name)
		}
	}
	if strings.Contains(off.Logs(), "remote terminal: connected") {
		t.Errorf("agent-remote-off, with the remote terminal off, connected for remote sessions")
	}
	t.Logf("agent-remote-off (remote terminal off) refused: %s", strings.TrimSpace(lastLine(term.Output())))
}

// awaitAgentLog waits until a's log has substr.
func awaitAgentLog(t *testing.T, a *Agent, substr string) {
	t.Helper()
	for deadline := time.Now().Add(Deadline); !strings.Contains(a.Logs(), substr); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s never logged %q:\n%s", a.Name, substr, tailLines(a.Logs(), 40))
		}
	}
}
