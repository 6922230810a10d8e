package e2e

import (
	"os"
	"os/exec"
	"strings"
	"testing"

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
	f.refusals(dir, func() string {
		if strings.Contains(a.Logs(), "bob") {
			return "the agent logged something of bob's"
		}
		return ""
	})
	f.sessionsCLI(first, 4)
	f.removal(first)
}
