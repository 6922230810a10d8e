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
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/controller"
	"github.com/gitfleet/gitfleet/controller/gitsource/gittest"
	"github.com/gitfleet/gitfleet/controller/store"
)

// remoteOperator is an Operator manifest: name, the SHA-256 of token, and
// one access entry for devices.
func remoteOperator(name, token string, devices []string, fileTransfer, portForward, recordInput bool) map[string]string {
	sum := sha256.Sum256([]byte(token))
	return map[string]string{"operators/" + name + ".yaml": fmt.Sprintf(`apiVersion: gitfleet.io/v1
kind: Operator
metadata:
  name: %s
spec:
  tokenSHA256: %s
  access:
    - devices: [%s]
      fileTransfer: %t
      portForward: %t
      recordInput: %t
  limits:
    sessions: 4
`, name, hex.EncodeToString(sum[:]), strings.Join(devices, ", "), fileTransfer, portForward, recordInput)}
}

// remoteSessions reads the session records from the management API.
func (c *Controller) remoteSessions() ([]store.RemoteSession, error) {
	var out struct {
		Sessions []store.RemoteSession `json:"sessions"`
	}
	err := c.getJSON("/api/management/v1/sessions?limit=100", &out)
	return out.Sessions, err
}

// awaitSession waits until a session record satisfies ok and returns it.
func (c *Controller) awaitSession(what string, ok func(store.RemoteSession) bool) store.RemoteSession {
	c.env.t.Helper()
	var (
		found   store.RemoteSession
		last    []store.RemoteSession
		lastErr error
	)
	c.awaitFunc("session record "+what, func() bool {
		last, lastErr = c.remoteSessions()
		for _, s := range last {
			if ok(s) {
				found = s
				return true
			}
		}
		return false
	}, func() string { return fmt.Sprintf("last error %v\nsessions: %+v", lastErr, last) })
	return found
}

// awaitLive waits until c serves sha, failing at once if it refuses it.
func (c *Controller) awaitLive(sha string) {
	c.env.t.Helper()
	st := c.Await(fmt.Sprintf("serving or refusing %.12s", sha), func(st controller.Status) bool {
		return (st.Serving != nil && st.Serving.SHA == sha) || (st.Refused != nil && st.Refused.SHA == sha)
	})
	if st.Serving == nil || st.Serving.SHA != sha {
		c.env.t.Fatalf("controller %s refused %.12s: %q", c.Name, sha, st.Refused.Errors)
	}
}

// shellsOf lists the processes whose parent is pid (mender-connect's
// shells).
func shellsOf(pid int) []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid …; comm may hold spaces and parentheses.
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			pids = append(pids, child)
		}
	}
	return pids
}

// startEchoServer listens on 127.0.0.1 and echoes what each connection
// sends; closed at cleanup.
func startEchoServer(t testing.TB) int {
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

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// randomFile writes n random bytes to path and returns them.
func randomFile(t testing.TB, path string, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	writeFile(t, path, b, 0o644)
	return b
}

// remoteFleet is the fleet of the remote tests: the device (by a Device
// manifest the caller gives), a second, never started, device, and three
// operators: ada may reach the device with everything and her input
// recorded; bob only the other device; cy the device, terminal only.
type remoteFleet struct {
	t                           *testing.T
	env                         *Env
	c                           *Controller
	device                      string // its Device manifest's name
	id                          string // its device ID, set by the caller once it runs
	work                        string
	adaToken, bobToken, cyToken string
	ada                         *MenderCLI
	sha                         string // the commit with the operators
}

// openTerminal starts mender-cli terminal to device id and waits until
// its shell answers a command. mender-connect 2.1 now and then loses a new
// shell's output for good (its MenderShell.Start starts the goroutine that
// pumps the shell's output before it marks the shell running; when the
// goroutine runs first it sees the shell not running and returns), so a
// terminal whose shell stays silent for 15 seconds is ended and opened
// again, at most three times, and the loss is logged.
func openTerminal(t *testing.T, cli *MenderCLI, id string) *RemoteCLIProc {
	t.Helper()
	for try := 1; ; try++ {
		term := cli.Start("terminal", id)
		term.Type(fmt.Sprintf("echo ready-$((%d*2))\n", try))
		if term.Printed(fmt.Sprintf("ready-%d", 2*try), 15*time.Second) {
			return term
		}
		if done, err := term.Exited(); done || try == 3 {
			t.Fatalf("mender-cli terminal %s: the shell did not answer (try %d, exited %t %v):\n%s", id, try, done, err, term.Output())
		}
		t.Logf("mender-cli terminal %s: the shell stayed silent for 15 s (mender-connect lost its output); opening another (try %d)", id, try+1)
		term.Kill()
	}
}

// newRemoteFleet commits device (its manifest files, named name) with the
// operators to env and waits until c serves it.
func newRemoteFleet(t *testing.T, env *Env, c *Controller, name string, device map[string]string) *remoteFleet {
	t.Helper()
	f := &remoteFleet{t: t, env: env, c: c, device: name, work: t.TempDir(),
		adaToken: "ada-pat-" + rand.Text(), bobToken: "bob-pat-" + rand.Text(), cyToken: "cy-pat-" + rand.Text()}
	f.sha = env.Commit(merge(
		device,
		map[string]string{"devices/remote-other.yaml": `apiVersion: gitfleet.io/v1
kind: Device
metadata:
  name: remote-other
spec:
  identity: {mac: "02:00:00:00:16:fe"}
  trustOnFirstUse: true
`, "groups/remote-lab.yaml": `apiVersion: gitfleet.io/v1
kind: DeviceGroup
metadata:
  name: remote-lab
spec:
  members: [` + name + `]
  remoteSessions: 4
`},
		remoteOperator("ada", f.adaToken, []string{name}, true, true, true),
		remoteOperator("bob", f.bobToken, []string{"remote-other"}, true, true, false),
		remoteOperator("cy", f.cyToken, []string{name}, false, false, false),
	), name+" and its operators")
	env.Push(c, f.sha, false)
	c.awaitLive(f.sha)
	f.ada = NewMenderCLI(t, c.URL(), c.CertPEM(), f.adaToken)
	return f
}

// listings: mender-cli devices list shows the device, artifacts list
// answers, and mender-cli login with ada's name and token works.
func (f *remoteFleet) listings() {
	t, c, id := f.t, f.c, f.id
	t.Helper()
	if out := f.ada.MustRun("devices", "list"); !strings.Contains(out, "ID: "+id) {
		t.Fatalf("mender-cli devices list does not show %s:\n%s", id, out)
	}
	out := f.ada.MustRun("artifacts", "list")
	t.Logf("artifacts list: %q", strings.TrimSpace(out))
	loginCLI := NewMenderCLI(t, c.URL(), c.CertPEM(), "")
	if out, err := loginCLI.Login("ada", f.adaToken); err != nil {
		t.Fatalf("mender-cli login as ada: %v\n%s", err, out)
	}
	if out := loginCLI.MustRun("devices", "list"); !strings.Contains(out, "ID: "+id) {
		t.Fatalf("after mender-cli login, devices list does not show %s:\n%s", id, out)
	}
}

// terminal: a command typed into mender-cli terminal runs on the device
// and its output comes back; the shell's parent is the program called
// parent (mender-connect, gitfleet-agent). It returns the session record.
func (f *remoteFleet) terminal(dir, parent string) store.RemoteSession {
	t, id := f.t, f.id
	t.Helper()
	term := openTerminal(t, f.ada, id)
	term.Type("echo marker-$((6*7))\n")
	term.AwaitOutput("marker-42")
	proof := filepath.Join(dir, "from-terminal")
	term.Type("echo \"$$ $PPID $(id -u)\" > " + proof + "\n")
	var shellPID, ppid, uid int
	deadline := time.Now().Add(Deadline)
	for {
		b, err := os.ReadFile(proof)
		if n, _ := fmt.Sscan(string(b), &shellPID, &ppid, &uid); err == nil && n == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the terminal's shell did not write %s within %s:\n%s", proof, Deadline, term.Output())
		}
		time.Sleep(50 * time.Millisecond)
	}
	comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", ppid))
	if got := strings.TrimSpace(string(comm)); got == "" || !strings.HasPrefix(parent, got) {
		t.Fatalf("the terminal's shell (pid %d, uid %d) has parent %d %q, not %s", shellPID, uid, ppid, got, parent)
	}
	t.Logf("terminal: marker-42 came back; the shell (pid %d, uid %d) is %s's (pid %d) child", shellPID, uid, parent, ppid)
	// CTRL+] ends mender-cli's session.
	time.Sleep(200 * time.Millisecond)
	term.Type("\x1d")
	if err := term.AwaitExit(Deadline); err != nil {
		t.Logf("mender-cli terminal ended with %v", err)
	}
	first := f.c.awaitSession("of ada's terminal, ended", func(s store.RemoteSession) bool {
		return s.Operator == "ada" && !s.Ended.IsZero() && strings.Contains(s.Input, "marker-$((6*7))")
	})
	if first.Device != f.device && first.Device != id {
		t.Errorf("session device %q", first.Device)
	}
	if first.Kind != "terminal" || first.Started.IsZero() || first.Ended.Before(first.Started) || first.Traffic.ToDevice == 0 || first.Traffic.FromDevice == 0 || !first.RecordInput {
		t.Errorf("session record of ada's terminal: %+v", first)
	}
	t.Logf("session %s: %s on %s, %s → %s (%s), %d bytes to the device, %d from it, input %q",
		first.ID, first.Operator, first.Device, first.Started.Format(time.RFC3339Nano), first.Ended.Format(time.RFC3339Nano), first.Reason,
		first.Traffic.ToDevice, first.Traffic.FromDevice, first.Input)
	return first
}

// copies: mender-cli cp both ways, byte for byte, through dir on the
// device.
func (f *remoteFleet) copies(dir string) {
	t, id := f.t, f.id
	t.Helper()
	up := randomFile(t, filepath.Join(f.work, "up.bin"), 300<<10)
	onDevice := filepath.Join(dir, "uploaded.bin")
	if out, err := f.ada.Run("cp", filepath.Join(f.work, "up.bin"), id+":"+onDevice); err != nil {
		t.Errorf("mender-cli cp up: %v\n%s", err, out)
	} else if got, err := os.ReadFile(onDevice); err != nil || !bytes.Equal(got, up) {
		t.Errorf("uploaded %d bytes; the device has %d (%v), equal %t", len(up), len(got), err, bytes.Equal(got, up))
	}
	down := randomFile(t, filepath.Join(dir, "down.bin"), 300<<10)
	local := filepath.Join(f.work, "down.bin")
	if out, err := f.ada.Run("cp", id+":"+filepath.Join(dir, "down.bin"), local); err != nil {
		t.Errorf("mender-cli cp down: %v\n%s", err, out)
	} else if got, err := os.ReadFile(local); err != nil || !bytes.Equal(got, down) {
		t.Errorf("downloaded %d bytes of %d (%v), equal %t", len(got), len(down), err, bytes.Equal(got, down))
	}
	t.Logf("cp: %d bytes up and %d down", len(up), len(down))
}

// portForward: mender-cli port-forward to an echo server on the device's
// loopback.
func (f *remoteFleet) portForward() {
	t, id := f.t, f.id
	t.Helper()
	echoPort := startEchoServer(t)
	localPort := freePort(t)
	pf := f.ada.Start("port-forward", id, fmt.Sprintf("%d:%d", localPort, echoPort))
	pf.AwaitOutput("Forwarding from")
	var conn net.Conn
	deadline := time.Now().Add(Deadline)
	for {
		var err error
		conn, err = net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", localPort), time.Second)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("port forward: dial 127.0.0.1:%d: %v\n%s", localPort, err, pf.Output())
		}
		time.Sleep(50 * time.Millisecond)
	}
	defer conn.Close()
	payload := make([]byte, 64<<10)
	rand.Read(payload)
	conn.SetDeadline(time.Now().Add(Deadline))
	go conn.Write(payload)
	echoed := make([]byte, len(payload))
	if _, err := io.ReadFull(conn, echoed); err != nil || !bytes.Equal(echoed, payload) {
		t.Fatalf("port forward: %v; echoed equal %t\n%s", err, bytes.Equal(echoed, payload), pf.Output())
	}
	pf.Kill()
	t.Logf("port-forward: %d bytes round-tripped through 127.0.0.1:%d → device 127.0.0.1:%d", len(payload), localPort, echoPort)
}

// refusals: bob, whose manifest lacks the device, and an unknown token
// are refused by mender-cli and past its pre-check; nothing they send
// reaches dir, and reached (what the device side saw) stays false.
func (f *remoteFleet) refusals(dir string, reached func() string) {
	t, c, id := f.t, f.c, f.id
	t.Helper()
	bob := NewMenderCLI(t, c.URL(), c.CertPEM(), f.bobToken)
	if out := bob.MustRun("devices", "list"); strings.Contains(out, id) {
		t.Errorf("bob's devices list shows %s, which his manifest lacks:\n%s", id, out)
	}
	bt := bob.Start("terminal", id)
	bt.Type("echo bob-was-here > " + filepath.Join(dir, "bob") + "\n")
	if err := bt.AwaitExit(Deadline); err == nil {
		t.Errorf("bob's terminal to %s succeeded:\n%s", id, bt.Output())
	}
	if out, err := bob.Run("cp", filepath.Join(f.work, "up.bin"), id+":"+filepath.Join(dir, "bob.bin")); err == nil {
		t.Errorf("bob's cp to %s succeeded:\n%s", id, out)
	}
	stranger := NewMenderCLI(t, c.URL(), c.CertPEM(), "not-a-token")
	if out, err := stranger.Run("devices", "list"); err == nil {
		t.Errorf("devices list with an unknown token succeeded:\n%s", out)
	}
	st := stranger.Start("terminal", id)
	if err := st.AwaitExit(Deadline); err == nil {
		t.Errorf("terminal with an unknown token succeeded:\n%s", st.Output())
	}
	// Past mender-cli's pre-check, straight to the session websocket.
	if err := tryShell(c, f.bobToken, id); err == nil {
		t.Errorf("bob's shell websocket to %s was accepted", id)
	} else {
		t.Logf("bob's shell websocket: %v", err)
	}
	if err := tryShell(c, "not-a-token", id); err == nil {
		t.Errorf("a shell websocket with an unknown token was accepted")
	}
	for _, name := range []string{"bob", "bob.bin"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
			t.Errorf("a refused operator's %s reached the device", name)
		}
	}
	if what := reached(); what != "" {
		t.Errorf("after the refusals, on the device: %s", what)
	}
	if ss, err := c.remoteSessions(); err == nil {
		for _, s := range ss {
			if s.Operator == "bob" {
				t.Errorf("bob has a session record: %+v", s)
			}
		}
	}
	t.Logf("refused: bob (%s), an unknown token (%s)", lastLine(bt.Output()), lastLine(st.Output()))
}

// sessionsCLI: gitfleet sessions --json shows ada's sessions as the API
// does.
func (f *remoteFleet) sessionsCLI(first store.RemoteSession, want int) {
	t, c := f.t, f.c
	t.Helper()
	caFile := filepath.Join(f.work, "controller.crt")
	writeFile(t, caFile, c.CertPEM(), 0o644)
	cli := exec.Command(Binary(t), "sessions", "--server", c.URL(), "--ca-cert", caFile, "--operator", "ada", "--json")
	cli.Env = append(os.Environ(), "GITFLEET_TOKEN="+f.env.Token, "XDG_CONFIG_HOME="+f.work)
	cliOut, err := cli.Output()
	if err != nil {
		t.Fatalf("gitfleet sessions: %v\n%s", err, cliOut)
	}
	var listed []store.RemoteSession
	if err := json.Unmarshal(cliOut, &listed); err != nil {
		t.Fatalf("gitfleet sessions --json: %v\n%s", err, cliOut)
	}
	var kinds, protocols []string
	found := false
	for _, s := range listed {
		kinds = append(kinds, s.Kind)
		protocols = append(protocols, strings.Join(s.Protocols, "+"))
		if s.Operator != "ada" {
			t.Errorf("gitfleet sessions --operator ada lists %s's session %s", s.Operator, s.ID)
		}
		if s.ID == first.ID {
			found = s.Input == first.Input && s.Ended.Equal(first.Ended) && s.Traffic == first.Traffic
		}
	}
	if !found {
		t.Errorf("gitfleet sessions --json does not show ada's first terminal as the API does:\n%s", cliOut)
	}
	// ada's sessions: the terminal, the two copies, the port forward.
	if !slices.Contains(kinds, "upload") || !slices.Contains(kinds, "download") || len(listed) < want {
		t.Errorf("ada's sessions: kinds %v, want at least %d: a terminal, an upload, a download and the port forward's", kinds, want)
	}
	t.Logf("gitfleet sessions --operator ada: %d sessions, kinds %v, protocols %v", len(listed), kinds, protocols)
}

// removal: removing ada from Git (a commit, a webhook to each controller)
// ends her open terminal: mender-cli ends and the record says why.
func (f *remoteFleet) removal(first store.RemoteSession, others ...*Controller) {
	t, c, id := f.t, f.c, f.id
	t.Helper()
	term := openTerminal(t, f.ada, id)
	term.Type("echo still-$((40+2))\n")
	term.AwaitOutput("still-42")
	open := c.awaitSession("of ada's second terminal, open", func(s store.RemoteSession) bool {
		return s.Operator == "ada" && s.Ended.IsZero() && s.ID != first.ID && s.Kind == "terminal" && strings.Contains(s.Input, "still-$((40+2))")
	})
	sha := f.env.Repo.Apply(gittest.Change{Remove: []string{"operators/ada.yaml"}, Message: "ada leaves"})
	for _, o := range append([]*Controller{c}, others...) {
		f.env.Push(o, sha, false)
	}
	c.awaitLive(sha)
	if err := term.AwaitExit(Deadline); err == nil {
		t.Logf("mender-cli terminal ended cleanly after the removal")
	} else {
		t.Logf("mender-cli terminal ended after the removal: %v", err)
	}
	ended := c.awaitSession("of ada's second terminal, ended", func(s store.RemoteSession) bool {
		return s.ID == open.ID && !s.Ended.IsZero()
	})
	if ended.Reason != "operator-removed" {
		t.Errorf("ada's session ended with reason %q, want operator-removed", ended.Reason)
	}
	if out, err := f.ada.Run("devices", "list"); err == nil {
		t.Errorf("ada, removed, still lists devices:\n%s", out)
	}
	t.Logf("removed: ada's terminal ended (%s)", ended.Reason)
}

// TestRemoteTerminalStock is issue 16's proof with the stock peers:
// Debian's mender 3.4 client and mender-connect 2.1 on a simulated device
// (private mount namespace, private D-Bus bus), Debian's mender-cli 1.9 as
// the operator, through `gitfleet serve` and Operator manifests in Git.
//
//   - mender-cli devices list shows the device, artifacts list answers,
//     and mender-cli login with the operator's name and token works;
//   - a command typed into mender-cli terminal runs on the device (a shell
//     whose parent is mender-connect) and its output comes back;
//   - mender-cli cp both ways, byte for byte;
//   - mender-cli port-forward to an echo server on the device's loopback;
//   - an operator whose manifest lacks the device, and an unknown token,
//     are refused, and nothing of theirs reaches mender-connect;
//   - the same device reached through a second replica (one Redis);
//   - the session records: who, device, start, end, bytes, typed input,
//     in the management API and gitfleet sessions;
//   - removing the operator from Git ends their open terminal;
//   - a device whose mender-connect.conf disables the terminal refuses.
func TestRemoteTerminalStock(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: runs the stock Mender client, mender-connect and mender-cli")
	}
	RequireRemote(t)
	guard := hostMenderDirs(t)

	work := t.TempDir()
	_, pub := GenerateSigningKey(t, filepath.Join(work, "keys", "release"))
	env := newEnv(t, menderFleet(t, pub))
	c := env.StartController("a")
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("controller a log (tail):\n%s", tailLines(c.Logs(), 80))
		}
	})
	c.AwaitServing(env.Repo.Head())

	ident := map[string]string{"mac": "02:00:00:00:16:01"}
	keyPEM, fp := RemoteDeviceKey(t)
	f := newRemoteFleet(t, env, c, "remote-1", deviceManifest("remote-1", ident, fp))
	d := StartRemoteDevice(t, c, ident, keyPEM, RemoteConnectConf{})
	f.id = d.ID()
	c.AwaitDevice(f.id, "accepted", func(dv store.Device) bool { return dv.Status == store.DeviceAccepted })
	// mender-connect got the token over D-Bus and dialled the controller
	// through the client's local proxy.
	d.AwaitConnectLog(`Connection established with http://127\.0\.0\.1:`)
	c.AwaitLog(`"msg":"device connected for remote sessions".*"device_id":"` + f.id + `"`)
	t.Logf("device %s connected: mender-connect (pid %d) through the client's proxy", f.id, d.ConnectPID())

	f.listings()
	first := f.terminal(d.Out, "mender-connect")
	conns := d.Connections()
	f.copies(d.Out)
	f.portForward()
	if n := d.Connections(); n != conns {
		t.Errorf("mender-connect connected %d more times during the copies and the forward (it drops its connection on a protocol error)", n-conns)
	}
	connectPID := d.ConnectPID()
	// Shells of ended sessions may still be stopping (mender-connect
	// gives a shell seconds to exit): only new ones count.
	before := shellsOf(connectPID)
	f.refusals(d.Out, func() string {
		var what []string
		// mender-connect logs every message it gets with the
		// operator's name (user_id).
		if strings.Contains(d.ConnectLogs(), "user_id:bob") {
			what = append(what, "a message of bob's reached mender-connect")
		}
		for _, pid := range shellsOf(connectPID) {
			if !slices.Contains(before, pid) {
				what = append(what, fmt.Sprintf("mender-connect started a shell (pid %d)", pid))
			}
		}
		return strings.Join(what, "; ")
	})

	// The same device through a second replica on the same Redis: the
	// device is connected to a, cy's terminal goes to b.
	b := env.StartController("b")
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("controller b log (tail):\n%s", tailLines(b.Logs(), 60))
		}
	})
	b.AwaitServing(f.sha)
	cy := NewMenderCLI(t, b.URL(), b.CertPEM(), f.cyToken)
	ct := openTerminal(t, cy, f.id)
	ct.Type("echo replica-$((7*6))\n")
	ct.AwaitOutput("replica-42")
	time.Sleep(200 * time.Millisecond)
	ct.Type("\x1d")
	ct.AwaitExit(Deadline)
	t.Logf("replica b: cy's terminal reached the device connected to replica a")

	f.sessionsCLI(first, 4)
	f.removal(first, b)

	// A device that disables the terminal in mender-connect.conf.
	d.SetConnectConf(RemoteConnectConf{DisableTerminal: true})
	d.StartConnect()
	d.AwaitConnectLog(`Connection established with http://127\.0\.0\.1:`)
	connectPID = d.ConnectPID()
	ct = cy.Start("terminal", f.id)
	ct.Type("echo disabled-was-here > " + filepath.Join(d.Out, "disabled") + "\n")
	if err := ct.AwaitExit(Deadline); err == nil {
		t.Errorf("a terminal to a device that disables it succeeded:\n%s", ct.Output())
	}
	if _, err := os.Stat(filepath.Join(d.Out, "disabled")); err == nil {
		t.Errorf("a shell ran on a device that disables the terminal")
	}
	if pids := shellsOf(connectPID); len(pids) != 0 {
		t.Errorf("mender-connect with the terminal disabled has shells %v", pids)
	}
	t.Logf("terminal disabled on the device: %s", lastLine(ct.Output()))

	d.StopConnect()
	d.Stop()
	guard()
}

// lastLine is the last non-empty line of s.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
