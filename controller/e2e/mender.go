package e2e

// The stock Mender client as a test peer.
//
// StartMender runs Debian's mender 3.4 daemon (`mender daemon`) as a
// device of its own: its fixed paths — /etc/mender (mender.conf,
// artifact_info, the server certificate, the artifact verify key),
// /usr/share/mender (identity and inventory scripts, update modules) and
// /var/lib/mender (its key, state database, device_type) — are bind mounts
// of one temporary directory per device, made by testdata/mender/ns-exec.sh
// inside a private mount namespace (`unshare --mount --propagation
// private`). The mounts vanish with the namespace; the machine's own
// directories are never written. Several devices can run at once.
//
// What the 3.4 client needs and does, as observed against a logging stub
// (see also the device API's doc):
//
//   - No rootfs A/B configuration: with only update modules it logs "No dual
//     rootfs configuration present" and goes on. DBus must be disabled in
//     mender.conf (the Debian build links GLib D-Bus) unless a bus is
//     given (MenderOptions.DBusAddress): then it answers
//     io.mender.AuthenticationManager's GetJwtToken with its token and the
//     server URL, on a private bus the test starts.
//   - It makes its own device key, /var/lib/mender/mender-agent.pem, RSA 3072.
//   - Authentication: POST v1/authentication/auth_requests with an empty
//     "Authorization: Bearer " header, X-MEN-Signature (RSA PKCS#1 v1.5,
//     SHA-256 of the exact body) and the body
//     {"id_data":"{\"mac\":\"…\"}","tenant_token":"","pubkey":"<PKIX PEM>"}.
//     A 401 is retried at the next state (about every poll interval). It
//     authenticates again at ArtifactCommit even with a valid token.
//   - Each poll: PUT v1/inventory/device/attributes (device_type,
//     artifact_name, mender_client_version and the inventory scripts'
//     attributes, in random order); POST v2 …/deployments/next with
//     {"device_provides":{…},"update_control_map":true}, on 404 POST v1
//     with the provides flat, on every poll again.
//   - A deployment: status downloading, GET source.uri (no Authorization),
//     downloading, downloading, installing, (auth request), installing,
//     success; on an install failure: downloading ×3, installing, failure,
//     then PUT …/log with {"messages":[{level, message, timestamp}]}.
//   - The artifact's name must be the one next announced; after a failed
//     install without rollback support the client calls itself
//     "<name>_INCONSISTENT".

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/controller/deviceapi"
	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gitfleet/gitfleet/controller/store/redis"
)

// MenderDeviceType is the device type test clients report by default.
const MenderDeviceType = "gitfleet-test"

// Update module types in testdata/mender/modules: MenderModuleOK copies the
// payload's files into the device's Out directory, MenderModuleFail fails
// in ArtifactInstall (and rolls back, so the client keeps its previous
// artifact name).
const (
	MenderModuleOK   = "gitfleet-test"
	MenderModuleFail = "gitfleet-test-fail"
)

// menderTools are what a stock client test runs.
var menderTools = []string{"mender", "mender-artifact", "unshare", "mount"}

// RequireMender skips the test unless the stock Mender client can run
// here: root, mender, mender-artifact, unshare and mount installed, the
// client's fixed directories present, and private mount namespaces
// allowed. When CI=true it fails instead, so CI cannot pass by skipping.
func RequireMender(t testing.TB) {
	t.Helper()
	var missing []string
	for _, tool := range menderTools {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool+" not installed")
		}
	}
	if os.Geteuid() != 0 {
		missing = append(missing, "not root (bind mounts in a private mount namespace need it)")
	}
	for _, dir := range []string{"/etc/mender", "/usr/share/mender"} {
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			missing = append(missing, dir+" missing (apt-get install mender-client)")
		}
	}
	if len(missing) == 0 {
		if out, err := exec.Command("unshare", "--mount", "--propagation", "private", "true").CombinedOutput(); err != nil {
			missing = append(missing, fmt.Sprintf("unshare --mount: %v %s", err, bytes.TrimSpace(out)))
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := "stock Mender client test needs: " + strings.Join(missing, "; ")
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// MenderOptions describe one test device.
type MenderOptions struct {
	// Identity is what the identity script prints. Default
	// mac=02:00:00:00:00:42.
	Identity map[string]string
	// DeviceType goes into /var/lib/mender/device_type. Default
	// MenderDeviceType.
	DeviceType string
	// ArtifactName is the factory artifact_info. Default "factory".
	ArtifactName string
	// VerifyKey is a PEM public key; when set, the client verifies
	// artifacts with it (ArtifactVerifyKey) and refuses unsigned ones.
	VerifyKey []byte
	// PollSeconds is UpdatePollIntervalSeconds and
	// InventoryPollIntervalSeconds. Default 1.
	PollSeconds int
	// LogLevel of the client. Default "debug".
	LogLevel string
	// DBusAddress, when set, turns the client's D-Bus API on
	// (io.mender.AuthenticationManager, which inventory scripts such as
	// Mender Configure's ask for the device token) on that bus, given to
	// the client as DBUS_SYSTEM_BUS_ADDRESS.
	DBusAddress string
	// Env is added to the environment of the client, and so of its
	// inventory scripts and update modules.
	Env []string
	// Install copies files into the device's directories before the
	// client starts: a path relative to Root (e.g.
	// "share/modules/v3/mender-configure") → the file to copy there,
	// installed executable.
	Install map[string]string
}

// Mender is one running stock `mender daemon`.
type Mender struct {
	// Root holds the device's directories: etc (/etc/mender), share
	// (/usr/share/mender), data (/var/lib/mender).
	Root string
	// Out is where the test update modules write: the payload files and
	// states.log, one line per update module call.
	Out      string
	Identity map[string]string

	t      testing.TB
	cmd    *exec.Cmd
	logs   *lockedBuffer
	exited chan struct{}
	stop   sync.Once
}

// testdataDir is controller/e2e/testdata.
func testdataDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "testdata")
}

// StartMender prepares a device directory and starts `mender daemon`
// against serverURL (https://host:port), trusting the server certificate
// certPEM. The client is killed (its whole process group) at cleanup.
func StartMender(t testing.TB, serverURL string, certPEM []byte, opts MenderOptions) *Mender {
	t.Helper()
	if opts.Identity == nil {
		opts.Identity = map[string]string{"mac": "02:00:00:00:00:42"}
	}
	if opts.DeviceType == "" {
		opts.DeviceType = MenderDeviceType
	}
	if opts.ArtifactName == "" {
		opts.ArtifactName = "factory"
	}
	if opts.PollSeconds <= 0 {
		opts.PollSeconds = 1
	}
	if opts.LogLevel == "" {
		opts.LogLevel = "debug"
	}
	root := t.TempDir()
	m := &Mender{Root: root, Out: filepath.Join(root, "out"), Identity: opts.Identity, t: t,
		logs: &lockedBuffer{}, exited: make(chan struct{})}
	src := filepath.Join(testdataDir(), "mender")
	copyFiles(t, filepath.Join(src, "identity"), filepath.Join(root, "share", "identity"))
	copyFiles(t, filepath.Join(src, "inventory"), filepath.Join(root, "share", "inventory"))
	copyFiles(t, filepath.Join(src, "modules"), filepath.Join(root, "share", "modules", "v3"))
	for _, d := range []string{"etc", "data", "out"} {
		mkdir(t, filepath.Join(root, d))
	}
	var ident strings.Builder
	for _, k := range slices.Sorted(maps.Keys(opts.Identity)) {
		fmt.Fprintf(&ident, "%s=%s\n", k, opts.Identity[k])
	}
	conf := map[string]any{
		"ServerURL":                    strings.TrimSuffix(serverURL, "/"),
		"ServerCertificate":            "/etc/mender/server.crt",
		"UpdatePollIntervalSeconds":    opts.PollSeconds,
		"InventoryPollIntervalSeconds": opts.PollSeconds,
		"RetryPollIntervalSeconds":     1,
		"ModuleTimeoutSeconds":         30,
		"DBus":                         map[string]any{"Enabled": opts.DBusAddress != ""},
	}
	if opts.VerifyKey != nil {
		conf["ArtifactVerifyKey"] = "/etc/mender/artifact-verify-key.pem"
		writeFile(t, filepath.Join(root, "etc", "artifact-verify-key.pem"), opts.VerifyKey, 0o644)
	}
	confJSON, _ := json.MarshalIndent(conf, "", "  ")
	writeFile(t, filepath.Join(root, "etc", "mender.conf"), confJSON, 0o600)
	writeFile(t, filepath.Join(root, "etc", "server.crt"), certPEM, 0o644)
	writeFile(t, filepath.Join(root, "etc", "artifact_info"), []byte("artifact_name="+opts.ArtifactName+"\n"), 0o644)
	writeFile(t, filepath.Join(root, "etc", "gitfleet-test-identity"), []byte(ident.String()), 0o644)
	writeFile(t, filepath.Join(root, "etc", "gitfleet-test-out"), []byte(m.Out+"\n"), 0o644)
	writeFile(t, filepath.Join(root, "data", "device_type"), []byte("device_type="+opts.DeviceType+"\n"), 0o644)
	for _, rel := range slices.Sorted(maps.Keys(opts.Install)) {
		data, err := os.ReadFile(opts.Install[rel])
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(root, filepath.FromSlash(rel)), data, 0o755)
	}

	m.cmd = exec.Command("unshare", "--mount", "--propagation", "private", "--",
		"/bin/sh", filepath.Join(src, "ns-exec.sh"), root,
		"mender", "--no-syslog", "--log-level", opts.LogLevel, "daemon")
	m.cmd.Stdout, m.cmd.Stderr = m.logs, m.logs
	if opts.DBusAddress != "" || len(opts.Env) > 0 {
		m.cmd.Env = append(os.Environ(), opts.Env...)
		if opts.DBusAddress != "" {
			m.cmd.Env = append(m.cmd.Env, "DBUS_SYSTEM_BUS_ADDRESS="+opts.DBusAddress)
		}
	}
	// Its own process group, so Stop reaches update modules too; and
	// killed if the test process dies first.
	m.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := m.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		m.cmd.Wait()
		close(m.exited)
	}()
	t.Cleanup(func() {
		m.Stop()
		if t.Failed() {
			t.Logf("mender client %s log (tail):\n%s", m.ID(), tailLines(m.Logs(), 60))
		}
	})
	return m
}

// Stop ends the client and its children (SIGTERM to its process group,
// SIGKILL after 10 seconds) and waits for it.
func (m *Mender) Stop() {
	m.stop.Do(func() { stopGroup(m.t, "mender client", m.cmd.Process.Pid, m.exited) })
}

// stopGroup ends the process group of pid (SIGTERM, SIGKILL after 10
// seconds) and waits until exited is closed; then it kills what is left of
// the group (children that escaped would still hold a namespace).
func stopGroup(t testing.TB, what string, pid int, exited <-chan struct{}) {
	syscall.Kill(-pid, syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		syscall.Kill(-pid, syscall.SIGKILL)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			t.Errorf("%s (pid %d) did not exit after SIGKILL", what, pid)
		}
	}
	syscall.Kill(-pid, syscall.SIGKILL)
}

// PID of the client process.
func (m *Mender) PID() int { return m.cmd.Process.Pid }

// Logs returns what the client logged so far.
func (m *Mender) Logs() string { return m.logs.String() }

// ID is the device ID the controller derives from the identity.
func (m *Mender) ID() string { return deviceapi.DeviceID(deviceapi.Attributes(m.Identity)) }

// KeyFingerprint is the SHA-256 (hex) of the DER public key of the key the
// client made, as Device manifests' publicKeySHA256 names it; "" before the
// client has made its key.
func (m *Mender) KeyFingerprint() string {
	data, err := os.ReadFile(filepath.Join(m.Root, "data", "mender-agent.pem"))
	if err != nil {
		return ""
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return ""
	}
	var pub any
	if k, err := x509.ParsePKCS1PrivateKey(block.Bytes); err == nil {
		pub = k.Public()
	} else if k, err := x509.ParsePKCS8PrivateKey(block.Bytes); err == nil {
		signer, ok := k.(crypto.Signer)
		if !ok {
			return ""
		}
		pub = signer.Public()
	} else if k, err := x509.ParseECPrivateKey(block.Bytes); err == nil {
		pub = k.Public()
	} else {
		return ""
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

// Installed returns the content of a file an update module wrote into Out.
func (m *Mender) Installed(name string) (string, bool) {
	b, err := os.ReadFile(filepath.Join(m.Out, name))
	return string(b), err == nil
}

// ModuleStates lists the update module calls so far, in order
// ("ArtifactInstall", "fail:ArtifactInstall", …).
func (m *Mender) ModuleStates() []string {
	b, _ := os.ReadFile(filepath.Join(m.Out, "states.log"))
	return strings.Fields(string(b))
}

// DeploymentLogs returns the client's own per-deployment logs
// (/var/lib/mender/deployments.*.log), concatenated.
func (m *Mender) DeploymentLogs() string {
	paths, _ := filepath.Glob(filepath.Join(m.Root, "data", "deployments.*.log"))
	var b strings.Builder
	for _, p := range paths {
		data, _ := os.ReadFile(p)
		b.Write(data)
	}
	return b.String()
}

// Await polls cond until it holds, failing the test at Deadline or when
// the client exits.
func (m *Mender) Await(what string, cond func() bool) {
	m.t.Helper()
	deadline := time.Now().Add(Deadline)
	for !cond() {
		select {
		case <-m.exited:
			m.t.Fatalf("mender client exited (%v) while waiting for %s:\n%s", m.cmd.ProcessState, what, tailLines(m.Logs(), 60))
		default:
		}
		if time.Now().After(deadline) {
			m.t.Fatalf("mender client: not %s within %s; update module calls %v\nlog:\n%s", what, Deadline, m.ModuleStates(), tailLines(m.Logs(), 60))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// AwaitLog waits until the client's log matches the regular expression.
func (m *Mender) AwaitLog(expr string) {
	m.t.Helper()
	re := regexp.MustCompile(expr)
	m.Await("logging "+expr, func() bool { return re.MatchString(m.Logs()) })
}

// AwaitInstalled waits until an update module wrote file with content.
func (m *Mender) AwaitInstalled(file, content string) {
	m.t.Helper()
	m.Await(fmt.Sprintf("installed %s = %q", file, content), func() bool {
		got, ok := m.Installed(file)
		return ok && got == content
	})
}

// MenderArtifact is an artifact file written by mender-artifact.
type MenderArtifact struct {
	Name   string // artifact_name
	Path   string
	SHA256 string // hex of the file
}

// MenderArtifactSpec describes a module-image artifact.
type MenderArtifactSpec struct {
	Name       string            // artifact_name
	Module     string            // update module type, e.g. MenderModuleOK
	DeviceType string            // default MenderDeviceType
	Files      map[string]string // payload file name → content
	Key        string            // private key file to sign with; "" leaves it unsigned
}

// WriteMenderArtifact builds a module-image artifact with the stock
// mender-artifact tool into dir/NAME.mender. The client wants artifacts of
// at least a few KiB, which mender-artifact's tar and compression padding
// provide even for tiny payloads.
func WriteMenderArtifact(t testing.TB, dir string, spec MenderArtifactSpec) MenderArtifact {
	t.Helper()
	if spec.DeviceType == "" {
		spec.DeviceType = MenderDeviceType
	}
	mkdir(t, dir)
	payload := t.TempDir()
	args := []string{"write", "module-image", "-T", spec.Module, "-n", spec.Name, "-t", spec.DeviceType}
	for _, name := range slices.Sorted(maps.Keys(spec.Files)) {
		p := filepath.Join(payload, name)
		writeFile(t, p, []byte(spec.Files[name]), 0o644)
		args = append(args, "-f", p)
	}
	out := filepath.Join(dir, spec.Name+".mender")
	args = append(args, "-o", out)
	if spec.Key != "" {
		args = append(args, "-k", spec.Key)
	}
	if b, err := exec.Command("mender-artifact", args...).CombinedOutput(); err != nil {
		t.Fatalf("mender-artifact %s: %v\n%s", strings.Join(args, " "), err, b)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return MenderArtifact{Name: spec.Name, Path: out, SHA256: hex.EncodeToString(h.Sum(nil))}
}

// GenerateSigningKey makes an ECDSA P-256 key pair with `gitfleet keys
// generate` (a type both mender-artifact and the 3.4 client accept) at
// prefix.key and prefix.pub, and returns the private key's path and the
// public key's PEM.
func GenerateSigningKey(t testing.TB, prefix string) (keyPath string, pubPEM []byte) {
	t.Helper()
	mkdir(t, filepath.Dir(prefix))
	if b, err := exec.Command(Binary(t), "keys", "generate", "--type", "ecdsa", "--out", prefix).CombinedOutput(); err != nil {
		t.Fatalf("gitfleet keys generate: %v\n%s", err, b)
	}
	pub, err := os.ReadFile(prefix + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	return prefix + ".key", pub
}

// CertPEM is the controller's (development) TLS certificate, for devices to
// trust.
func (c *Controller) CertPEM() []byte {
	b, err := os.ReadFile(filepath.Join(c.DataDir, "dev-tls.crt"))
	if err != nil {
		c.env.t.Fatal(err)
	}
	return b
}

// URL is the controller's base URL.
func (c *Controller) URL() string { return "https://" + c.Addr }

// DeviceAPIServed reports whether the controller answers the device API:
// an empty auth request gets 400 or 401 when it does, 404 when the routes
// are missing.
func (c *Controller) DeviceAPIServed() (bool, int) {
	resp, err := c.client.Post(c.URL()+"/api/devices/v1/authentication/auth_requests", "application/json", strings.NewReader("{}"))
	if err != nil {
		c.env.t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode != http.StatusNotFound && resp.StatusCode != http.StatusMethodNotAllowed, resp.StatusCode
}

// PendingDevices lists the devices the management API reports pending.
func (c *Controller) PendingDevices() ([]store.Device, error) {
	var out struct {
		Devices []store.Device `json:"devices"`
	}
	err := c.getJSON("/api/management/v1/devices/pending?limit=1000", &out)
	return out.Devices, err
}

// Device reads what the store knows of one device (by device ID).
func (c *Controller) Device(id string) (store.Device, error) {
	var d store.Device
	err := c.getJSON("/api/management/v1/devices/"+id, &d)
	return d, err
}

// AwaitDevice waits until the device's record satisfies ok.
func (c *Controller) AwaitDevice(id, what string, ok func(store.Device) bool) store.Device {
	c.env.t.Helper()
	var last store.Device
	var lastErr error
	c.awaitFunc(fmt.Sprintf("device %s %s", id, what), func() bool {
		last, lastErr = c.Device(id)
		return lastErr == nil && ok(last)
	}, func() string {
		b, _ := json.MarshalIndent(last, "", "  ")
		return fmt.Sprintf("last error %v\ndevice: %s", lastErr, b)
	})
	return last
}

// AwaitPending waits until the device with ID id is listed pending.
func (c *Controller) AwaitPending(id string) store.Device {
	c.env.t.Helper()
	var found store.Device
	var lastErr error
	c.awaitFunc("device "+id+" pending", func() bool {
		devs, err := c.PendingDevices()
		lastErr = err
		for _, d := range devs {
			if d.ID == id {
				found = d
				return true
			}
		}
		return false
	}, func() string { return fmt.Sprintf("last error %v", lastErr) })
	return found
}

// Inventory decodes a device record's inventory into name → value (values
// that are lists are joined with ",").
func Inventory(d store.Device) map[string]string {
	out := map[string]string{}
	var attrs []struct {
		Name  string `json:"name"`
		Value any    `json:"value"`
	}
	if json.Unmarshal(d.Inventory, &attrs) == nil {
		for _, a := range attrs {
			out[a.Name] = fmt.Sprint(a.Value)
		}
		return out
	}
	var obj map[string]any
	if json.Unmarshal(d.Inventory, &obj) == nil {
		for k, v := range obj {
			out[k] = fmt.Sprint(v)
		}
	}
	return out
}

// RolloutRecord reads one rollout's record from the management API.
func (c *Controller) RolloutRecord(name string) (store.RolloutRecord, error) {
	var out struct {
		Rollouts []store.RolloutRecord `json:"rollouts"`
	}
	if err := c.getJSON("/api/management/v1/rollouts", &out); err != nil {
		return store.RolloutRecord{}, err
	}
	for _, r := range out.Rollouts {
		if r.Name == name && !r.Stopped {
			return r, nil
		}
	}
	return store.RolloutRecord{}, fmt.Errorf("no running rollout %q among %d", name, len(out.Rollouts))
}

// stores holds one store client per Env (see Env.Store).
var stores sync.Map // *Env → store.Store

// Store opens the Redis store the controllers share, for what the
// management API does not show yet (one device's deployment, a
// generation's progress). One client per Env, closed at cleanup.
func (e *Env) Store() store.Store {
	e.t.Helper()
	if s, ok := stores.Load(e); ok {
		return s.(store.Store)
	}
	s, err := redis.New(redis.Options{URL: "redis://" + e.RedisAddr})
	if err != nil {
		e.t.Fatal(err)
	}
	if prev, loaded := stores.LoadOrStore(e, store.Store(s)); loaded {
		s.Close()
		return prev.(store.Store)
	}
	e.t.Cleanup(func() {
		stores.Delete(e)
		s.Close()
	})
	return s
}

// AwaitDeployment waits until the device (by its Device manifest name) is
// in state in the current generation of rollout, and returns that
// generation.
func (c *Controller) AwaitDeployment(rollout, device, state string) store.GenerationRef {
	c.env.t.Helper()
	st := c.env.Store()
	var (
		g       store.GenerationRef
		last    store.Deployment
		lastErr error
	)
	c.awaitFunc(fmt.Sprintf("deployment of %s to %s %s", rollout, device, state), func() bool {
		rec, err := c.RolloutRecord(rollout)
		if err != nil {
			lastErr = err
			return false
		}
		g = store.GenerationRef{Rollout: rec.Name, Generation: rec.Generation}
		last, lastErr = st.Deployment(c.env.t.Context(), g, device)
		return lastErr == nil && last.State == state
	}, func() string { return fmt.Sprintf("generation %s, deployment %+v, last error %v", g, last, lastErr) })
	return g
}

// Progress reads a generation's progress from the store.
func (c *Controller) Progress(g store.GenerationRef) store.Progress {
	c.env.t.Helper()
	p, err := c.env.Store().Progress(c.env.t.Context(), g)
	if err != nil {
		c.env.t.Fatalf("progress of %s: %v", g, err)
	}
	return p
}

// AwaitEvent waits for an event of kind whose subject or message contains
// about, and returns it.
func (c *Controller) AwaitEvent(kind, about string) map[string]any {
	c.env.t.Helper()
	var found map[string]any
	var seen []string
	c.awaitFunc(fmt.Sprintf("event %s about %s", kind, about), func() bool {
		evs, err := c.Events()
		if err != nil {
			return false
		}
		seen = seen[:0]
		for _, ev := range evs {
			k, _ := ev["kind"].(string)
			s, _ := ev["subject"].(string)
			msg, _ := ev["message"].(string)
			seen = append(seen, k+" "+s)
			if k == kind && (strings.Contains(s, about) || strings.Contains(msg, about)) {
				found = ev
				return true
			}
		}
		return false
	}, func() string { return "events: " + strings.Join(seen, "; ") })
	return found
}

// AwaitLog waits until a line of the controller's log matches the regular
// expression.
func (c *Controller) AwaitLog(expr string) {
	c.env.t.Helper()
	re := regexp.MustCompile(expr)
	c.awaitFunc("logging "+expr, func() bool {
		for _, line := range strings.Split(c.Logs(), "\n") {
			if re.MatchString(line) {
				return true
			}
		}
		return false
	}, func() string { return "" })
}

// awaitFunc polls ok until Deadline, then fails with describe() and the
// controller's log.
func (c *Controller) awaitFunc(what string, ok func() bool, describe func() string) {
	c.env.t.Helper()
	deadline := time.Now().Add(Deadline)
	for !ok() {
		if time.Now().After(deadline) {
			c.env.t.Fatalf("controller %s: not %s within %s\n%s\nlogs:\n%s", c.Name, what, Deadline, describe(), tailLines(c.Logs(), 40))
		}
		select {
		case <-c.exited:
			c.env.t.Fatalf("controller %s exited while waiting for %s:\n%s", c.Name, what, tailLines(c.Logs(), 40))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func mkdir(t testing.TB, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
}

func writeFile(t testing.TB, path string, data []byte, mode os.FileMode) {
	t.Helper()
	mkdir(t, filepath.Dir(path))
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
}

// copyFiles copies the regular files of src into dst, keeping their modes
// (the scripts must stay executable).
func copyFiles(t testing.TB, src, dst string) {
	t.Helper()
	mkdir(t, dst)
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		data, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		// Git keeps the executable bit, but a checkout made without it
		// (an archive, a umask) must not break the test.
		writeFile(t, filepath.Join(dst, e.Name()), data, 0o755)
	}
}
