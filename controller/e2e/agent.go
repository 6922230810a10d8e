package e2e

// Gitfleet's own agent as a test peer.
//
// StartAgent runs a simulated A/B device (device/sim: two partition files,
// a bootloader environment file, U-Boot's bootcount logic as the boot
// step) whose agent is the real gitfleet-agent binary, built once per
// test process by AgentBinary. The device's Device manifest is its
// identity as the agent reports it (the sim's identity script prints
// mac=…), so it can be declared in Git before the device first starts.
// Rootfs-image artifacts are written with the artifact package
// (WriteRootfsArtifact) into the controller's --artifact-store. CutProxy
// is a TCP proxy between an agent and the controller that drops one
// connection in the middle of a body.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/artifact"
	"github.com/gitfleet/gitfleet/controller/deviceapi"
	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gitfleet/gitfleet/device/agent"
	"github.com/gitfleet/gitfleet/device/sim"
)

// AgentDeviceType is the device type simulated devices report.
const AgentDeviceType = "sim"

var (
	agentOnce sync.Once
	agentPath string
	agentErr  error
)

// AgentBinary builds cmd/gitfleet-agent once per test process and returns
// its path.
func AgentBinary(t testing.TB) string {
	t.Helper()
	agentOnce.Do(func() {
		dir, err := os.MkdirTemp("", "gitfleet-e2e-agent-")
		if err != nil {
			agentErr = err
			return
		}
		agentPath = filepath.Join(dir, "gitfleet-agent")
		_, file, _, _ := runtime.Caller(0)
		cmd := exec.Command("go", "build", "-o", agentPath, "./cmd/gitfleet-agent")
		cmd.Dir = filepath.Join(filepath.Dir(file), "..", "..")
		if out, err := cmd.CombinedOutput(); err != nil {
			agentErr = fmt.Errorf("go build gitfleet-agent: %v\n%s", err, out)
		}
	})
	if agentErr != nil {
		t.Fatal(agentErr)
	}
	return agentPath
}

// TestImage returns size bytes of an image: a first line naming it
// ("gitfleet test image NAME healthy|unhealthy"), then pseudo-random bytes
// seeded by the name. The agents' health check (ImageHealthCheck) fails
// on an image whose first line says unhealthy.
func TestImage(name string, size int, healthy bool) []byte {
	word := "healthy"
	if !healthy {
		word = "unhealthy"
	}
	head := fmt.Sprintf("gitfleet test image %s %s\n", name, word)
	seed := sha256.Sum256([]byte(name))
	rng := rand.NewChaCha8(seed)
	img := make([]byte, size)
	rng.Read(img)
	copy(img, head)
	return img
}

// ImageHealthCheck is the agent's HealthCheck for TestImage images: it
// fails when the booted partition's first line says unhealthy (the agent
// runs it in the device directory, where "booted" names the partition).
var ImageHealthCheck = []string{"/bin/sh", "-c", `! head -n 1 "$(cat booted)" | grep -q unhealthy`}

// RootfsArtifact is a signed rootfs-image artifact in an artifact store.
type RootfsArtifact struct {
	Name   string // artifact_name
	File   string // its file name in the store
	SHA256 string // hex of the file
	Size   int64
	Image  []byte
}

// WriteRootfsArtifact writes a rootfs-image artifact of image, named name
// and signed with the PEM private key privPEM, to storeDir/NAME.mender.
func WriteRootfsArtifact(t testing.TB, storeDir, name string, image, privPEM []byte) RootfsArtifact {
	t.Helper()
	mkdir(t, storeDir)
	tmp := t.TempDir()
	img := filepath.Join(tmp, name+".img")
	writeFile(t, img, image, 0o644)
	signer, err := artifact.LoadSigner(privPEM)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := artifact.Write(context.Background(), &buf, artifact.Spec{
		Name:        name,
		DeviceTypes: []string{AgentDeviceType},
		Payloads:    []artifact.PayloadSpec{artifact.RootfsImage(artifact.FileSpec{Path: img}, name, artifact.Software{})},
		Signer:      signer,
		TempDir:     tmp,
	}); err != nil {
		t.Fatalf("write artifact %s: %v", name, err)
	}
	file := name + ".mender"
	writeFile(t, filepath.Join(storeDir, file), buf.Bytes(), 0o644)
	sum := sha256.Sum256(buf.Bytes())
	return RootfsArtifact{Name: name, File: file, SHA256: hex.EncodeToString(sum[:]), Size: int64(buf.Len()), Image: image}
}

// SigningKeyManifest declares a SigningKey named name.
func SigningKeyManifest(name string, pubPEM []byte) map[string]string {
	return map[string]string{"keys/" + name + ".yaml": fmt.Sprintf(`apiVersion: gitfleet.io/v1
kind: SigningKey
metadata:
  name: %s
spec:
  algorithm: ecdsa-p256
  publicKey: |
%s`, name, indent(string(pubPEM), "    "))}
}

// ArtifactManifest declares a in the artifact store, pinned by its sha256
// and signed by key.
func ArtifactManifest(a RootfsArtifact, version, key string) map[string]string {
	return map[string]string{"artifacts/" + a.Name + ".yaml": fmt.Sprintf(`apiVersion: gitfleet.io/v1
kind: Artifact
metadata:
  name: %[1]s
spec:
  source: %[2]s
  sha256: %[3]s
  artifactName: %[1]s
  version: %[4]q
  deviceTypes: [%[5]s]
  signedBy: [%[6]s]
  minSignatures: 1
`, a.Name, a.File, a.SHA256, version, AgentDeviceType, key)}
}

// RolloutManifest rolls artifact out to devices in one phase; with
// abortAtFirstFailure the phase aborts at its first failure.
func RolloutManifest(name, artifactName string, devices []string, abortAtFirstFailure bool) map[string]string {
	abort := ""
	if abortAtFirstFailure {
		abort = "      abort:\n        maxFailures: 0\n"
	}
	return map[string]string{"rollouts/" + name + ".yaml": fmt.Sprintf(`apiVersion: gitfleet.io/v1
kind: Rollout
metadata:
  name: %s
spec:
  artifact: %s
  target:
    devices: [%s]
  phases:
    - name: all
      percent: 100
%s`, name, artifactName, strings.Join(devices, ", "), abort)}
}

// AgentOptions describe one simulated device.
type AgentOptions struct {
	// Name is its Device manifest's name. Required.
	Name string
	// Identity is what its identity script prints; default
	// mac=02:00:00:00:0a:<n>, n from the name's hash.
	Identity map[string]string
	// ServerURL is where the agent reaches the controller; default the
	// controller's URL (a CutProxy's URL puts the proxy in between).
	ServerURL string
	// Image is the initial content of partition A; ArtifactName its name.
	Image        []byte
	ArtifactName string
	// VerifyKeys are the PEM public keys the agent trusts.
	VerifyKeys [][]byte
	// HealthCheck; default ImageHealthCheck.
	HealthCheck []string
	// Bootable is the boot step's check of a partition's content (see
	// sim.Options).
	Bootable func([]byte) bool
	// UpdatePollSeconds; default 1.
	UpdatePollSeconds int
	// MonitorRoot is the directory the agent's monitoring checks see as
	// "/"; default "/".
	MonitorRoot string
	// Configure, when set, changes the agent's configuration last.
	Configure func(*agent.Config)
}

// Agent is one simulated device running gitfleet-agent.
type Agent struct {
	*sim.Device
	Name     string
	Identity map[string]string
	logs     *lockedBuffer
	t        testing.TB
}

// StartAgent creates a simulated device trusting c's certificate and
// starts its agent. The agent's process group is killed at cleanup.
func StartAgent(t testing.TB, c *Controller, opts AgentOptions) *Agent {
	t.Helper()
	a := NewAgent(t, c, opts)
	if err := a.Start(); err != nil {
		t.Fatalf("start agent %s: %v", a.Name, err)
	}
	return a
}

// NewAgent creates a simulated device without starting it.
func NewAgent(t testing.TB, c *Controller, opts AgentOptions) *Agent {
	t.Helper()
	if opts.Identity == nil {
		h := sha256.Sum256([]byte(opts.Name))
		opts.Identity = map[string]string{"mac": fmt.Sprintf("02:00:00:%02x:%02x:%02x", h[0], h[1], h[2])}
	}
	if opts.ServerURL == "" {
		opts.ServerURL = c.URL()
	}
	if opts.HealthCheck == nil {
		opts.HealthCheck = ImageHealthCheck
	}
	base := t.TempDir()
	certPath := filepath.Join(base, "server.crt")
	writeFile(t, certPath, c.CertPEM(), 0o644)
	var keys []string
	for i, k := range opts.VerifyKeys {
		p := filepath.Join(base, fmt.Sprintf("artifact-key-%d.pub", i))
		writeFile(t, p, k, 0o644)
		keys = append(keys, p)
	}
	dir := filepath.Join(base, "device")
	mkdir(t, dir)
	logs := &lockedBuffer{}
	dev, err := sim.New(dir, sim.Options{
		AgentBinary:        AgentBinary(t),
		ServerURL:          opts.ServerURL,
		ServerCertificate:  certPath,
		DeviceType:         AgentDeviceType,
		ArtifactName:       opts.ArtifactName,
		Image:              opts.Image,
		Identity:           opts.Identity,
		ArtifactVerifyKeys: keys,
		HealthCheck:        opts.HealthCheck,
		Bootable:           opts.Bootable,
		UpdatePollSeconds:  opts.UpdatePollSeconds,
		Log:                logs,
		Config: func(c *agent.Config) {
			if opts.MonitorRoot != "" {
				c.MonitorRoot = opts.MonitorRoot
			}
			if opts.Configure != nil {
				opts.Configure(c)
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	a := &Agent{Device: dev, Name: opts.Name, Identity: opts.Identity, logs: logs, t: t}
	t.Cleanup(func() {
		dev.Kill() // SIGKILL to the agent's process group, by its PID
		if t.Failed() {
			t.Logf("agent %s log (tail):\n%s", a.Name, tailLines(a.Logs(), 60))
		}
	})
	return a
}

// Logs returns what the agent printed so far.
func (a *Agent) Logs() string { return a.logs.String() }

// ID is the device ID the controller derives from the identity.
func (a *Agent) ID() string { return deviceapi.DeviceID(deviceapi.Attributes(a.Identity)) }

// Manifest is the Device manifest that admits the agent: its identity,
// exactly as the agent reports it, binding the first key the agent
// authenticates with (trustOnFirstUse: the agent makes its key when it
// first starts).
func (a *Agent) Manifest() map[string]string {
	var ident strings.Builder
	for _, k := range slices.Sorted(maps.Keys(a.Identity)) {
		fmt.Fprintf(&ident, "    %s: %q\n", k, a.Identity[k])
	}
	return map[string]string{"devices/" + a.Name + ".yaml": fmt.Sprintf(`apiVersion: gitfleet.io/v1
kind: Device
metadata:
  name: %s
spec:
  identity:
%s  trustOnFirstUse: true
  deviceType: %s
`, a.Name, ident.String(), AgentDeviceType)}
}

// PartitionDigest is the SHA-256 (hex) of the first n bytes of partition
// "A" or "B" (n < 0: all of it).
func (a *Agent) PartitionDigest(part string, n int) string {
	a.t.Helper()
	b, err := os.ReadFile(a.PartitionPath(part))
	if err != nil {
		a.t.Fatal(err)
	}
	if n >= 0 && n <= len(b) {
		b = b[:n]
	}
	return digest(b)
}

// BootEnv returns the bootloader environment's variables.
func (a *Agent) BootEnv() map[string]string {
	a.t.Helper()
	vars, err := a.Env().Get(context.Background())
	if err != nil {
		a.t.Fatal(err)
	}
	return vars
}

func digest(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// Outcome reads the state of the agent's deployment in rollout's current
// generation ("" while the controller has none).
func (a *Agent) Outcome(c *Controller, rollout string) (string, error) {
	rec, err := c.RolloutRecord(rollout)
	if err != nil {
		return "", err
	}
	d, err := c.env.Store().Deployment(a.t.Context(), store.GenerationRef{Rollout: rec.Name, Generation: rec.Generation}, a.Name)
	if errors.Is(err, store.ErrNotFound) {
		return "", nil
	}
	return d.State, err
}

// AwaitOutcome waits until the controller has recorded a final outcome
// (success or failure) of the agent's deployment in rollout and the agent
// has finished with it (no state record), and returns the outcome.
func (a *Agent) AwaitOutcome(c *Controller, rollout string) string {
	a.t.Helper()
	o, err := a.awaitOutcome(c, rollout)
	if err != nil {
		a.t.Fatal(err)
	}
	return o
}

// awaitOutcome is AwaitOutcome for any goroutine: it returns an error
// instead of failing the test.
func (a *Agent) awaitOutcome(c *Controller, rollout string) (string, error) {
	deadline := time.Now().Add(Deadline)
	var state string
	var lastErr error
	for {
		state, lastErr = a.Outcome(c, rollout)
		if state == store.StateSuccess || state == store.StateFailure {
			if rec, err := a.Record(); err == nil && rec == nil {
				return state, nil
			}
		}
		if err := a.Err(); err != nil {
			return "", fmt.Errorf("agent %s stopped: %v\n%s", a.Name, err, tailLines(a.Logs(), 40))
		}
		if time.Now().After(deadline) {
			rec, recErr := a.Record()
			return "", fmt.Errorf("agent %s: no outcome of %s within %s: controller says %q (%v); state record %+v (%v)\nagent log:\n%s",
				a.Name, rollout, Deadline, state, lastErr, rec, recErr, tailLines(a.Logs(), 40))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// CommitAndServe commits files, pushes the commit to c and waits until c
// serves it.
func (e *Env) CommitAndServe(c *Controller, files map[string]string, msg string) string {
	e.t.Helper()
	sha := e.Commit(files, msg)
	if code := e.Push(c, sha, false); code/100 != 2 {
		e.t.Fatalf("push %.12s: HTTP %d", sha, code)
	}
	c.AwaitServing(sha)
	return sha
}

// CutProxy relays TCP connections to a target and, once, drops the first
// connection that has carried more than CutAfter bytes from the target: a
// download broken in the middle of its body (the bytes are TLS records,
// so the proxy only counts them).
type CutProxy struct {
	Addr string
	ln   net.Listener

	tmu      sync.Mutex // guards target and cutAfter
	target   string
	cutAfter int64

	cut     atomic.Bool
	conns   atomic.Int64
	relayed atomic.Int64

	mu   sync.Mutex
	open map[net.Conn]struct{}
	wg   sync.WaitGroup
}

// StartCutProxy listens on a free loopback port; it is closed, its
// connections with it, at cleanup.
func StartCutProxy(t testing.TB, target string, cutAfter int64) *CutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &CutProxy{Addr: ln.Addr().String(), target: target, cutAfter: cutAfter, ln: ln, open: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(p.Close)
	return p
}

// URL is the proxy's https URL.
func (p *CutProxy) URL() string { return "https://" + p.Addr }

// Retarget sets the target and the cut for the connections accepted from
// now on: for a proxy started before the controller it fronts, whose
// address (say, its --public-url) the controller must know at start.
func (p *CutProxy) Retarget(target string, cutAfter int64) {
	p.tmu.Lock()
	defer p.tmu.Unlock()
	p.target, p.cutAfter = target, cutAfter
}

// Cut reports whether the proxy has dropped its connection.
func (p *CutProxy) Cut() bool { return p.cut.Load() }

// Conns counts the connections accepted; Relayed the bytes relayed from
// the target.
func (p *CutProxy) Conns() int64   { return p.conns.Load() }
func (p *CutProxy) Relayed() int64 { return p.relayed.Load() }

// Close stops listening, closes every connection and waits for the relays.
func (p *CutProxy) Close() {
	p.ln.Close()
	p.mu.Lock()
	for c := range p.open {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *CutProxy) track(c net.Conn, add bool) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !add {
		delete(p.open, c)
		return true
	}
	if p.open == nil {
		return false
	}
	p.open[c] = struct{}{}
	return true
}

func (p *CutProxy) serve() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.conns.Add(1)
		p.wg.Add(1)
		go p.relay(client)
	}
}

func (p *CutProxy) relay(client net.Conn) {
	defer p.wg.Done()
	p.tmu.Lock()
	target, cutAfter := p.target, p.cutAfter
	p.tmu.Unlock()
	server, err := net.DialTimeout("tcp", target, 10*time.Second)
	if err != nil {
		client.Close()
		return
	}
	p.track(client, true)
	p.track(server, true)
	defer func() {
		client.Close()
		server.Close()
		p.track(client, false)
		p.track(server, false)
	}()
	done := make(chan struct{})
	go func() {
		defer close(done)
		io.Copy(server, client)
		server.Close()
	}()
	var n int64
	buf := make([]byte, 32<<10)
	for {
		k, err := server.Read(buf)
		if k > 0 {
			if n+int64(k) > cutAfter && p.cut.CompareAndSwap(false, true) {
				part := cutAfter - n
				client.Write(buf[:part])
				p.relayed.Add(part)
				p.drop(client, server, done)
				return
			}
			if _, werr := client.Write(buf[:k]); werr != nil {
				break
			}
			n += int64(k)
			p.relayed.Add(int64(k))
		}
		if err != nil {
			break
		}
	}
	client.Close()
	server.Close()
	<-done
}

// drop ends a connection mid-body the way a broken link looks to the
// client: no more bytes, then end of stream. It half-closes (FIN) rather
// than closing, and reads the client's side until it closes: closing with
// unread bytes would send a reset, which makes the client's kernel discard
// what it has received but not yet read, and the client would resume
// further back than the proxy counted.
func (p *CutProxy) drop(client, server net.Conn, done <-chan struct{}) {
	server.Close()
	if tc, ok := client.(*net.TCPConn); ok {
		tc.CloseWrite()
	}
	client.SetReadDeadline(time.Now().Add(Deadline))
	<-done // the copy to the server ends at the client's next byte or its close
	io.Copy(io.Discard, client)
	client.Close()
}

// indent prefixes every line of s (for output quoted in failures).
func indent(s, prefix string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		lines[i] = prefix + l
	}
	return strings.Join(lines, "\n") + "\n"
}
