package e2e

// A stock Mender device with remote access: Debian's mender 3.4 daemon
// and mender-connect 2.1 beside it, as a device runs them.
//
// What the two need, read from their source (mender-connect 2.1.0) and
// observed:
//
//   - mender-connect has no server settings of its own: it asks the client
//     on the D-Bus system bus (io.mender.AuthenticationManager, method
//     GetJwtToken on /io/mender/AuthenticationManager, interface
//     io.mender.Authentication1) for the device token and a server URL,
//     and follows its JwtTokenStateChange signal. The 3.4 client answers
//     with its local proxy's URL (http://127.0.0.1:PORT), which forwards
//     to the server over the client's own TLS (mender.conf's
//     ServerCertificate): mender-connect dials
//     ws://127.0.0.1:PORT/api/devices/v1/deviceconnect/connect with
//     "Authorization: Bearer <device token>" and the proxy turns it into
//     the websocket the controller sees.
//   - It reads /etc/mender/mender-connect.conf (and the fallback
//     /var/lib/mender/mender-connect.conf) unless --config is given; it
//     runs here in its own private mount namespace over the same device
//     directories as the client (testdata/mender/ns-exec.sh), so both
//     read the device's files and never the machine's.
//   - ShellCommand must be an absolute path listed in /etc/shells; User
//     must exist. Terminal.Disable, FileTransfer.Disable and
//     PortForward.Disable remove those protocols: a shell request is then
//     answered with a shell message of status error ("unknown message
//     protocol and type").
//
// The private bus is a dbus-daemon of type "system" with a policy that
// lets root own io.mender.* names and anyone call them and receive their
// signals, and nothing more.

import (
	"bufio"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// remoteTools are what a remote access test runs besides the Mender client.
var remoteTools = []string{"mender-connect", "mender-cli", "dbus-daemon"}

// RequireRemote skips the test unless the stock client, mender-connect,
// mender-cli and dbus-daemon can run here (RequireMender's conditions plus
// those programs). When CI=true it fails instead.
func RequireRemote(t testing.TB) {
	t.Helper()
	RequireMender(t)
	var missing []string
	for _, tool := range remoteTools {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := "remote access test needs " + strings.Join(missing, ", ") + " (scripts/test-deps: apt-get install mender-connect mender-cli dbus)"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// remoteBus is a private D-Bus daemon of type "system".
type remoteBus struct {
	Addr string
	cmd  *exec.Cmd
	logs *lockedBuffer
}

// startRemoteBus runs a private system bus with the policy the Mender
// client and mender-connect need: the client (root) owns io.mender.*,
// anyone calls it.
func startRemoteBus(t testing.TB) *remoteBus { return startDBus(t, menderBusPolicy) }

const menderBusPolicy = `  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Peer"/>
    <allow send_destination="io.mender.AuthenticationManager"/>
    <allow send_destination="io.mender.UpdateManager"/>
    <allow receive_type="method_call"/>
    <allow receive_type="signal"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
  </policy>
  <policy user="root">
    <allow own_prefix="io.mender"/>
  </policy>
`

// startDBus runs dbus-daemon, of type "system", on a socket in a
// temporary directory with policy (the <policy> elements of its
// configuration), and kills it (by PID) at cleanup.
func startDBus(t testing.TB, policy string) *remoteBus {
	t.Helper()
	dir := t.TempDir()
	sock := filepath.Join(dir, "system_bus_socket")
	conf := filepath.Join(dir, "bus.conf")
	writeFile(t, conf, []byte(`<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=`+sock+`</listen>
  <auth>EXTERNAL</auth>
`+policy+`</busconfig>
`), 0o644)
	b := &remoteBus{logs: &lockedBuffer{}}
	b.cmd = exec.Command("dbus-daemon", "--config-file="+conf, "--nofork", "--print-address=1")
	b.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	out, err := b.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	b.cmd.Stderr = b.logs
	if err := b.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		if sc.Scan() {
			addr <- strings.TrimSpace(sc.Text())
		}
		for sc.Scan() {
		}
		b.cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		b.cmd.Process.Kill()
		<-exited
	})
	select {
	case b.Addr = <-addr:
	case <-exited:
		t.Fatalf("dbus-daemon exited at start: %v\n%s", b.cmd.ProcessState, b.logs)
	case <-time.After(Deadline):
		t.Fatalf("dbus-daemon printed no address within %s:\n%s", Deadline, b.logs)
	}
	return b
}

// RemoteConnectConf is the part of mender-connect.conf a test sets.
type RemoteConnectConf struct {
	ShellCommand        string   // default /bin/bash
	ShellArguments      []string // default --noprofile --norc
	User                string   // default root
	DisableTerminal     bool
	DisableFileTransfer bool
	DisablePortForward  bool
}

// json renders it as mender-connect.conf.
func (c RemoteConnectConf) json() []byte {
	if c.ShellCommand == "" {
		c.ShellCommand = "/bin/bash"
	}
	if c.ShellArguments == nil {
		c.ShellArguments = []string{"--noprofile", "--norc"}
	}
	if c.User == "" {
		c.User = "root"
	}
	conf := map[string]any{
		"ShellCommand":             c.ShellCommand,
		"ShellArguments":           c.ShellArguments,
		"User":                     c.User,
		"ReconnectIntervalSeconds": 1,
		"Terminal":                 map[string]any{"Disable": c.DisableTerminal, "Width": 200, "Height": 50},
		"FileTransfer":             map[string]any{"Disable": c.DisableFileTransfer},
		"PortForward":              map[string]any{"Disable": c.DisablePortForward},
		// The client's inventory/update bindings are not under test.
		"MenderClient": map[string]any{"Disable": true},
		"Limits": map[string]any{
			"Enabled": false,
		},
	}
	b, _ := json.MarshalIndent(conf, "", "  ")
	return b
}

// RemoteDevice is a stock Mender device with mender-connect: the client,
// its private bus, and mender-connect.
type RemoteDevice struct {
	*Mender
	Bus *remoteBus
	// KeyPEM is the device key written before the client starts, so the
	// Device manifest accepting it can be committed first.
	KeyPEM      []byte
	Fingerprint string

	t       testing.TB
	mu      sync.Mutex
	connect *remoteProc
}

// remoteProc is one mender-connect process.
type remoteProc struct {
	cmd    *exec.Cmd
	logs   *lockedBuffer
	exited chan struct{}
	stop   sync.Once
}

// RemoteDeviceKey makes the device key a RemoteDevice will use (RSA 2048,
// PKCS#1 PEM, as the client keeps it in /var/lib/mender/mender-agent.pem)
// and returns it with the SHA-256 of its DER public key, as a Device
// manifest's publicKeySHA256 names it.
func RemoteDeviceKey(t testing.TB) (keyPEM []byte, fingerprint string) {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(der)
	return pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}), hex.EncodeToString(sum[:])
}

// StartRemoteDevice starts a private bus, the stock client (with keyPEM as
// its key and its D-Bus API on) against c, and mender-connect with conf.
// Everything is killed at cleanup; logs of all of them are attached to a
// failure.
func StartRemoteDevice(t testing.TB, c *Controller, identity map[string]string, keyPEM []byte, conf RemoteConnectConf) *RemoteDevice {
	t.Helper()
	bus := startRemoteBus(t)
	keyFile := filepath.Join(t.TempDir(), "mender-agent.pem")
	writeFile(t, keyFile, keyPEM, 0o600)
	connConf := filepath.Join(t.TempDir(), "mender-connect.conf")
	writeFile(t, connConf, conf.json(), 0o644)
	m := StartMender(t, c.URL(), c.CertPEM(), MenderOptions{
		Identity:    identity,
		DBusAddress: bus.Addr,
		LogLevel:    "info",
		Install: map[string]string{
			"data/mender-agent.pem":   keyFile,
			"etc/mender-connect.conf": connConf,
		},
	})
	os.Chmod(filepath.Join(m.Root, "data", "mender-agent.pem"), 0o600)
	d := &RemoteDevice{Mender: m, Bus: bus, KeyPEM: keyPEM, t: t}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("dbus-daemon log:\n%s", tailLines(bus.logs.String(), 20))
			t.Logf("mender-connect log (tail):\n%s", tailLines(d.ConnectLogs(), 80))
		}
	})
	// mender-connect asks the client for its token once at start and
	// then follows the client's signal; a client that does not own its
	// bus name yet is not followed (GDBus binds the signal to the owner),
	// so mender-connect starts once the client has its token and its
	// local proxy, as a device's service order has it.
	m.AwaitLog(`Local proxy started`)
	d.StartConnect()
	return d
}

// StartConnect starts mender-connect (after stopping a running one) in a
// private mount namespace over the device's directories, with trace logs
// (every message it gets, with the operator's name as user_id),
// on the device's bus.
func (d *RemoteDevice) StartConnect() {
	d.t.Helper()
	d.StopConnect()
	p := &remoteProc{logs: &lockedBuffer{}, exited: make(chan struct{})}
	p.cmd = exec.Command("unshare", "--mount", "--propagation", "private", "--",
		"/bin/sh", filepath.Join(testdataDir(), "mender", "ns-exec.sh"), d.Root,
		"mender-connect", "--trace", "daemon")
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	p.cmd.Env = append(os.Environ(), "DBUS_SYSTEM_BUS_ADDRESS="+d.Bus.Addr)
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	go func() {
		p.cmd.Wait()
		close(p.exited)
	}()
	d.mu.Lock()
	d.connect = p
	d.mu.Unlock()
	d.t.Cleanup(func() { p.kill(d.t) })
}

// StopConnect ends mender-connect and the shells it started (its process
// group).
func (d *RemoteDevice) StopConnect() {
	d.mu.Lock()
	p := d.connect
	d.mu.Unlock()
	if p != nil {
		p.kill(d.t)
	}
}

// kill sends SIGTERM to the process group, SIGKILL after 10 seconds.
func (p *remoteProc) kill(t testing.TB) {
	p.stop.Do(func() { stopGroup(t, "mender-connect", p.cmd.Process.Pid, p.exited) })
}

// ConnectPID is the current mender-connect's PID (its shells' parent).
func (d *RemoteDevice) ConnectPID() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.connect.cmd.Process.Pid
}

// ConnectLogs returns what the current mender-connect logged so far.
func (d *RemoteDevice) ConnectLogs() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.connect == nil {
		return ""
	}
	return d.connect.logs.String()
}

// SetConnectConf rewrites the device's mender-connect.conf; it takes
// effect at the next StartConnect.
func (d *RemoteDevice) SetConnectConf(conf RemoteConnectConf) {
	writeFile(d.t, filepath.Join(d.Root, "etc", "mender-connect.conf"), conf.json(), 0o644)
}

// AwaitConnectLog waits until mender-connect's log matches expr, failing
// at Deadline or when it exits.
func (d *RemoteDevice) AwaitConnectLog(expr string) {
	d.t.Helper()
	re := regexp.MustCompile(expr)
	d.mu.Lock()
	p := d.connect
	d.mu.Unlock()
	deadline := time.Now().Add(Deadline)
	for !re.MatchString(p.logs.String()) {
		select {
		case <-p.exited:
			d.t.Fatalf("mender-connect exited (%v) while waiting for %s:\n%s\nclient:\n%s", p.cmd.ProcessState, expr,
				tailLines(p.logs.String(), 60), tailLines(d.Logs(), 30))
		default:
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("mender-connect: no %s within %s:\n%s\nclient:\n%s", expr, Deadline,
				tailLines(p.logs.String(), 60), tailLines(d.Logs(), 30))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// connectedRE is what mender-connect logs when its websocket is up.
var connectedRE = regexp.MustCompile(`Connection established with http://127\.0\.0\.1:`)

// Connections counts the times the current mender-connect connected.
func (d *RemoteDevice) Connections() int {
	return len(connectedRE.FindAllStringIndex(d.ConnectLogs(), -1))
}

// AwaitConnections waits until the current mender-connect has connected
// n times (it retries a dropped connection after its D-Bus wait of 10 s).
func (d *RemoteDevice) AwaitConnections(n int) {
	d.t.Helper()
	d.mu.Lock()
	p := d.connect
	d.mu.Unlock()
	deadline := time.Now().Add(Deadline)
	for d.Connections() < n {
		select {
		case <-p.exited:
			d.t.Fatalf("mender-connect exited (%v) before connecting %d times:\n%s", p.cmd.ProcessState, n, tailLines(p.logs.String(), 60))
		default:
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("mender-connect: not connected %d times within %s:\n%s", n, Deadline, tailLines(p.logs.String(), 60))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// deviceManifest is the Device manifest that accepts a device (the stock
// client or gitfleet-agent) by its identity and key fingerprint.
func deviceManifest(name string, identity map[string]string, fingerprint string) map[string]string {
	var ident strings.Builder
	for _, k := range slices.Sorted(maps.Keys(identity)) {
		fmt.Fprintf(&ident, "    %s: %q\n", k, identity[k])
	}
	return map[string]string{"devices/" + name + ".yaml": fmt.Sprintf(`apiVersion: gitfleet.io/v1
kind: Device
metadata:
  name: %s
spec:
  identity:
%s  publicKeySHA256: %q
  deviceType: %s
`, name, ident.String(), fingerprint, MenderDeviceType)}
}
