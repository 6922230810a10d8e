package e2e

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/controller/store"
)

// agentOperator is an Operator manifest granting name (token's SHA-256)
// the terminal, file transfer and port forwarding on devices.
func agentOperator(name, token string, devices []string) map[string]string {
	sum := sha256.Sum256([]byte(token))
	return map[string]string{"operators/" + name + ".yaml": fmt.Sprintf(`apiVersion: gitfleet.io/v1
kind: Operator
metadata:
  name: %s
spec:
  tokenSHA256: %s
  access:
    - devices: [%s]
      fileTransfer: true
      portForward: true
  limits:
    sessions: 4
`, name, hex.EncodeToString(sum[:]), strings.Join(devices, ", "))}
}

// enableRemote adds "RemoteTerminal": rt to the simulated device's
// agent.json.
func enableRemote(t *testing.T, a *Agent, rt map[string]any) {
	t.Helper()
	b, err := os.ReadFile(a.ConfigPath())
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	cfg["RemoteTerminal"] = rt
	if b, err = json.MarshalIndent(cfg, "", "  "); err != nil {
		t.Fatal(err)
	}
	writeFile(t, a.ConfigPath(), b, 0o644)
}

// loopbackEcho listens on 127.0.0.1 and echoes every connection; closed
// at cleanup.
func loopbackEcho(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

// awaitLog waits until the agent's log matches expr.
func (a *Agent) awaitLog(expr string) {
	a.t.Helper()
	re := regexp.MustCompile(expr)
	deadline := time.Now().Add(Deadline)
	for !re.MatchString(a.Logs()) {
		if err := a.Err(); err != nil {
			a.t.Fatalf("agent %s stopped (%v) before logging %q:\n%s", a.Name, err, expr, tailLines(a.Logs(), 40))
		}
		if time.Now().After(deadline) {
			a.t.Fatalf("agent %s: no %q in its log within %s:\n%s", a.Name, expr, Deadline, tailLines(a.Logs(), 40))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestRemoteAgent is issue 16's proof with gitfleet-agent in
// mender-connect's place: two simulated devices run the real
// gitfleet-agent binary against a real `gitfleet serve`, and an operator
// declared in Git uses Debian's mender-cli 1.9.
//
//   - term-1 enables the remote terminal: a command typed into
//     mender-cli terminal runs in a shell whose parent is the agent, and
//     its output comes back; mender-cli cp both ways, byte for byte; a
//     port forward to an echo service on the device's loopback; the
//     session records;
//   - term-2 leaves it disabled (the default): the operator's terminal
//     and cp fail and nothing runs on the device.
func TestRemoteAgent(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: runs gitfleet serve, Redis, two agents and mender-cli")
	}
	if _, err := exec.LookPath("mender-cli"); err != nil {
		msg := "TestRemoteAgent needs mender-cli (scripts/test-deps: apt-get install mender-cli)"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	work := t.TempDir()
	env, c := agentFleet(t, filepath.Join(work, "artifact-store"), nil)

	image := TestImage("rel-1", 1<<20, true)
	on := NewAgent(t, c, AgentOptions{Name: "term-1", Image: image, ArtifactName: "rel-1"})
	off := NewAgent(t, c, AgentOptions{Name: "term-2", Image: image, ArtifactName: "rel-1"})
	// Port forwards may reach the echo service only; another service on
	// the device's loopback counts the connections it gets.
	echoPort := loopbackEcho(t)
	forbidden, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { forbidden.Close() })
	var forbiddenConns atomic.Int64
	go func() {
		for {
			c, err := forbidden.Accept()
			if err != nil {
				return
			}
			forbiddenConns.Add(1)
			c.Close()
		}
	}()
	enableRemote(t, on, map[string]any{"Enabled": true, "PortForward": true, "IdleTimeoutSeconds": 120,
		"PortForwardAllow": []string{fmt.Sprintf("127.0.0.1:%d", echoPort)}})

	token := "ops-pat-" + rand.Text()
	sha := env.Commit(merge(on.Manifest(), off.Manifest(), agentOperator("ops", token, []string{"term-1", "term-2"}),
		map[string]string{"groups/remote-agents.yaml": `apiVersion: gitfleet.io/v1
kind: DeviceGroup
metadata:
  name: remote-agents
spec:
  members: [term-1, term-2]
  remoteSessions: 4
`}), "two agents and their operator")
	env.Push(c, sha, false)
	c.AwaitServing(sha)
	for _, a := range []*Agent{on, off} {
		if err := a.Start(); err != nil {
			t.Fatal(err)
		}
		c.AwaitDevice(a.ID(), "accepted", func(d store.Device) bool { return d.Status == store.DeviceAccepted })
	}
	on.awaitLog(`remote terminal: connected to the controller`)
	id, offID := on.ID(), off.ID()
	ops := NewMenderCLI(t, c.URL(), c.CertPEM(), token)

	// 1. A terminal: the command runs in the agent's shell.
	term := ops.Start("terminal", id)
	term.Type("echo marker-$((6*7))\n")
	term.AwaitOutput("marker-42")
	proof := filepath.Join(work, "from-terminal")
	term.Type(`echo "$$ $PPID $(cat /proc/$PPID/comm)" > ` + proof + "\n")
	var shellPID, parent int
	var comm string
	deadline := time.Now().Add(Deadline)
	for {
		b, _ := os.ReadFile(proof)
		if n, _ := fmt.Sscan(string(b), &shellPID, &parent, &comm); n == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the terminal's shell did not write %s:\n%s", proof, term.Output())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if comm != "gitfleet-agent" {
		t.Fatalf("the terminal's shell (pid %d) has parent %d %q, not gitfleet-agent", shellPID, parent, comm)
	}
	time.Sleep(200 * time.Millisecond)
	term.Type("\x1d") // CTRL+] ends mender-cli's session
	if err := term.AwaitExit(Deadline); err != nil {
		t.Logf("mender-cli terminal ended with %v", err)
	}
	t.Logf("terminal: marker-42 came back from a shell (pid %d) of gitfleet-agent (pid %d)", shellPID, parent)
	// The session's end stops the shell.
	for deadline := time.Now().Add(Deadline); processAlive(shellPID); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the shell (pid %d) still runs after the session ended", shellPID)
		}
	}

	// 2. cp both ways, byte for byte, with the mode.
	up := make([]byte, 300<<10+17)
	rand.Read(up)
	writeFile(t, filepath.Join(work, "up.bin"), up, 0o640)
	onDevice := filepath.Join(work, "device-side", "uploaded.bin")
	mkdir(t, filepath.Dir(onDevice))
	ops.MustRun("cp", filepath.Join(work, "up.bin"), id+":"+onDevice)
	if got, err := os.ReadFile(onDevice); err != nil || !bytes.Equal(got, up) {
		t.Fatalf("uploaded %d bytes; the device has %d (%v), equal %t", len(up), len(got), err, bytes.Equal(got, up))
	}
	fi, _ := os.Stat(onDevice)
	down := make([]byte, 500<<10+3)
	rand.Read(down)
	writeFile(t, filepath.Join(work, "device-side", "down.bin"), down, 0o644)
	local := filepath.Join(work, "down.bin")
	ops.MustRun("cp", id+":"+filepath.Join(work, "device-side", "down.bin"), local)
	if got, err := os.ReadFile(local); err != nil || !bytes.Equal(got, down) {
		t.Fatalf("downloaded %d bytes of %d (%v), equal %t", len(got), len(down), err, bytes.Equal(got, down))
	}
	t.Logf("cp: %d bytes up (mode %v on the device) and %d down, identical", len(up), fi.Mode().Perm(), len(down))
	if out, err := ops.Run("cp", id+":"+filepath.Join(work, "device-side", "missing"), filepath.Join(work, "missing")); err == nil {
		t.Errorf("cp of a missing file succeeded:\n%s", out)
	}

	// 3. A port forward to an echo service on the device's loopback.
	localPort := freeLoopbackPort(t)
	pf := ops.Start("port-forward", id, fmt.Sprintf("%d:%d", localPort, echoPort))
	pf.AwaitOutput("Forwarding from")
	conn := dialForward(t, localPort, pf)
	payload := make([]byte, 64<<10)
	rand.Read(payload)
	go conn.Write(payload)
	echoed := make([]byte, len(payload))
	if _, err := io.ReadFull(conn, echoed); err != nil || !bytes.Equal(echoed, payload) {
		t.Fatalf("port forward: %v; echoed equal %t\n%s", err, bytes.Equal(echoed, payload), pf.Output())
	}
	conn.Close()
	pf.Kill()
	t.Logf("port-forward: %d bytes round-tripped through 127.0.0.1:%d → device 127.0.0.1:%d", len(payload), localPort, echoPort)
	// A port PortForwardAllow does not list is refused on the device.
	forbiddenPort := forbidden.Addr().(*net.TCPAddr).Port
	localPort = freeLoopbackPort(t)
	pf = ops.Start("port-forward", id, fmt.Sprintf("%d:%d", localPort, forbiddenPort))
	pf.AwaitOutput("Forwarding from")
	conn = dialForward(t, localPort, pf)
	conn.Write([]byte("knock"))
	on.awaitLog(fmt.Sprintf(`port forward refused.*127\.0\.0\.1:%d is not allowed`, forbiddenPort))
	conn.Close()
	pf.Kill()
	if n := forbiddenConns.Load(); n != 0 {
		t.Errorf("the service on 127.0.0.1:%d, not in PortForwardAllow, got %d connections", forbiddenPort, n)
	}
	t.Logf("port-forward to 127.0.0.1:%d (not in PortForwardAllow): refused by the device, no connection made", forbiddenPort)

	// 4. term-2 leaves the remote terminal off: refused, nothing runs.
	if strings.Contains(off.Logs(), "remote terminal: connected") {
		t.Errorf("term-2, with the remote terminal off, connected for remote sessions")
	}
	refused := ops.Start("terminal", offID)
	refused.Type("echo off-was-here > " + filepath.Join(work, "off") + "\n")
	if err := refused.AwaitExit(Deadline); err == nil {
		t.Errorf("a terminal to term-2 (remote terminal off) succeeded:\n%s", refused.Output())
	}
	if out, err := ops.Run("cp", filepath.Join(work, "up.bin"), offID+":"+filepath.Join(work, "off.bin")); err == nil {
		t.Errorf("cp to term-2 (remote terminal off) succeeded:\n%s", out)
	}
	for _, f := range []string{"off", "off.bin"} {
		if _, err := os.Stat(filepath.Join(work, f)); err == nil {
			t.Errorf("%s reached term-2, whose remote terminal is off", f)
		}
	}
	t.Logf("term-2 (off) refused: %s", strings.TrimSpace(lastOutputLine(refused.Output())))

	// 5. The controller recorded the sessions on term-1.
	var sessions struct {
		Sessions []store.RemoteSession `json:"sessions"`
	}
	if err := c.getJSON("/api/management/v1/sessions?limit=100", &sessions); err != nil {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	for _, s := range sessions.Sessions {
		if s.Operator == "ops" && (s.Device == "term-1" || s.Device == id) {
			kinds[s.Kind]++
		}
	}
	if kinds["terminal"] < 2 || kinds["upload"] < 1 || kinds["download"] < 1 {
		t.Errorf("session records of ops on term-1 by kind: %v (want terminal ×2 — the shell and the port forward —, upload, download)", kinds)
	}
	t.Logf("session records on term-1: %v", kinds)
}

// freeLoopbackPort returns a loopback TCP port that was free a moment ago.
func freeLoopbackPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// dialForward connects to mender-cli port-forward's local port.
func dialForward(t *testing.T, port int, pf *RemoteCLIProc) net.Conn {
	t.Helper()
	for deadline := time.Now().Add(Deadline); ; time.Sleep(50 * time.Millisecond) {
		conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
		if err == nil {
			conn.SetDeadline(time.Now().Add(Deadline))
			return conn
		}
		if time.Now().After(deadline) {
			t.Fatalf("port forward: dial 127.0.0.1:%d: %v\n%s", port, err, pf.Output())
		}
	}
}

// processAlive reports whether pid runs (and is not a zombie).
func processAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i > 0 && i+2 < len(b) && b[i+2] != 'Z'
}

func lastOutputLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
