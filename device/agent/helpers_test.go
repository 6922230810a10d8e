package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/artifact"
	"github.com/gitfleet/gitfleet/device/install"
)

// testKey is one signing key shared by the tests (key generation is slow
// for RSA; ECDSA is quick, but one is enough).
var (
	keyOnce            sync.Once
	testSigner         *artifact.Signer
	otherSigner        *artifact.Signer
	testKeyPub, keyErr = []byte(nil), error(nil)
)

func signers(t testing.TB) (*artifact.Signer, *artifact.Signer) {
	t.Helper()
	keyOnce.Do(func() {
		priv, pub, err := artifact.GenerateKey(artifact.ECDSAP256)
		if err != nil {
			keyErr = err
			return
		}
		testKeyPub = pub
		if testSigner, keyErr = artifact.LoadSigner(priv); keyErr != nil {
			return
		}
		priv2, _, err := artifact.GenerateKey(artifact.ECDSAP256)
		if err != nil {
			keyErr = err
			return
		}
		otherSigner, keyErr = artifact.LoadSigner(priv2)
	})
	if keyErr != nil {
		t.Fatal(keyErr)
	}
	return testSigner, otherSigner
}

// buildArtifact writes a signed rootfs-image artifact carrying image.
func buildArtifact(t testing.TB, dir, name string, image []byte, signer *artifact.Signer) string {
	t.Helper()
	img := filepath.Join(dir, name+".ext4")
	if err := os.WriteFile(img, image, 0o644); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name+".mender")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	spec := artifact.Spec{
		Name:        name,
		DeviceTypes: []string{"sim"},
		Payloads:    []artifact.PayloadSpec{artifact.RootfsImage(artifact.FileSpec{Path: img}, name, artifact.Software{})},
		Signer:      signer,
		TempDir:     dir,
		Compression: artifact.None,
	}
	if err := artifact.Write(context.Background(), f, spec); err != nil {
		t.Fatal(err)
	}
	return path
}

// fakeDevice is an A/B device in memory: the partitions, the boot
// variables, and which partition runs. Its installers behave like
// device/install's Rootfs; boot() behaves like U-Boot's bootcount logic.
type fakeDevice struct {
	mu        sync.Mutex
	parts     [2][]byte // partitions 0 (A) and 1 (B)
	running   int       // partition that booted
	bootPart  int       // mender_boot_part
	upgrade   bool      // upgrade_available
	bootcount int
	bootlimit int
	target    int  // partition the download went to (the installer's own record)
	verified  bool // download complete and checked
	calls     []string
	bootID    int

	// crash, when set, is consulted before (after=false) and after
	// (after=true) every installer call; returning true kills the agent
	// there (its context is cancelled).
	crash  func(method string, after bool) bool
	cancel context.CancelFunc
	// fail makes an installer method fail.
	fail map[string]error
}

func newFakeDevice(image []byte) *fakeDevice {
	d := &fakeDevice{bootlimit: 1, fail: map[string]error{}}
	d.parts[0] = image
	return d
}

// boot is the bootloader: boot mender_boot_part; during a trial count the
// boot and fall back once bootcount passes bootlimit.
func (d *fakeDevice) boot() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.upgrade {
		d.bootcount++
		if d.bootcount > d.bootlimit {
			d.bootPart = 1 - d.bootPart
			d.upgrade = false
		}
	}
	d.running = d.bootPart
	d.bootID++
}

func (d *fakeDevice) image() []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.parts[d.running]
}

type fakeInstaller struct{ d *fakeDevice }

func (d *fakeDevice) installer(ctx context.Context) func(install.Payload) (install.Installer, error) {
	return func(p install.Payload) (install.Installer, error) {
		if p.Header.Payloads[p.Index].Type != "rootfs-image" {
			return nil, fmt.Errorf("unsupported payload %q", p.Header.Payloads[p.Index].Type)
		}
		return &fakeInstaller{d: d}, nil
	}
}

var errCrash = context.Canceled

func (f *fakeInstaller) call(name string, work func() error) error {
	d := f.d
	d.mu.Lock()
	d.calls = append(d.calls, name)
	crash, fail := d.crash, d.fail[name]
	d.mu.Unlock()
	if crash != nil && crash(name, false) {
		d.cancel()
		return errCrash
	}
	if fail != nil {
		return fail
	}
	if err := work(); err != nil {
		return err
	}
	if crash != nil && crash(name, true) {
		d.cancel()
		return errCrash
	}
	return nil
}

func (f *fakeInstaller) Download(ctx context.Context, files install.Files) error {
	return f.call("Download", func() error {
		d := f.d
		d.mu.Lock()
		d.verified = false
		d.target = 1 - d.running
		d.mu.Unlock()
		file, err := files.Next()
		if err != nil {
			return err
		}
		var buf bytes.Buffer
		if _, err := io.Copy(&buf, file); err != nil {
			// A partial image lands in the inactive partition.
			d.mu.Lock()
			d.parts[d.target] = buf.Bytes()
			d.mu.Unlock()
			return err
		}
		d.mu.Lock()
		d.parts[d.target] = buf.Bytes()
		d.verified = true
		d.mu.Unlock()
		return nil
	})
}

func (f *fakeInstaller) ArtifactInstall(ctx context.Context) error {
	return f.call("ArtifactInstall", func() error {
		d := f.d
		d.mu.Lock()
		defer d.mu.Unlock()
		if !d.verified {
			return errors.New("not downloaded")
		}
		d.bootPart, d.upgrade, d.bootcount = d.target, true, 0
		return nil
	})
}

func (f *fakeInstaller) NeedsArtifactReboot(ctx context.Context) (install.Reboot, error) {
	return install.RebootAutomatic, f.call("NeedsArtifactReboot", func() error { return nil })
}

func (f *fakeInstaller) ArtifactReboot(ctx context.Context) error {
	return f.call("ArtifactReboot", func() error { return nil })
}

func (f *fakeInstaller) ArtifactVerifyReboot(ctx context.Context) error {
	return f.call("ArtifactVerifyReboot", func() error {
		d := f.d
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.running != d.target {
			return fmt.Errorf("running partition %d, expected %d", d.running, d.target)
		}
		if !d.upgrade {
			return errors.New("no upgrade on trial")
		}
		return nil
	})
}

func (f *fakeInstaller) ArtifactCommit(ctx context.Context) error {
	return f.call("ArtifactCommit", func() error {
		d := f.d
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.running != d.target {
			return errors.New("commit of a partition that is not running")
		}
		d.upgrade, d.bootcount = false, 0
		return nil
	})
}

func (f *fakeInstaller) SupportsRollback(ctx context.Context) (bool, error) {
	return true, nil
}

func (f *fakeInstaller) ArtifactRollback(ctx context.Context) error {
	return f.call("ArtifactRollback", func() error {
		d := f.d
		d.mu.Lock()
		defer d.mu.Unlock()
		d.bootPart, d.upgrade, d.bootcount = 1-d.target, false, 0
		return nil
	})
}

func (f *fakeInstaller) ArtifactRollbackReboot(ctx context.Context) error {
	return f.call("ArtifactRollbackReboot", func() error { return nil })
}

func (f *fakeInstaller) ArtifactVerifyRollbackReboot(ctx context.Context) error {
	return f.call("ArtifactVerifyRollbackReboot", func() error {
		d := f.d
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.running == d.target {
			return errors.New("still running the new partition")
		}
		return nil
	})
}

func (f *fakeInstaller) ArtifactFailure(ctx context.Context) error {
	return f.call("ArtifactFailure", func() error { return nil })
}

func (f *fakeInstaller) Cleanup(ctx context.Context) error {
	return f.call("Cleanup", func() error { return nil })
}

// fakeServer is the device API in memory.
type fakeServer struct {
	mu       sync.Mutex
	next     *Deployment
	statuses []string
	logs     [][]LogMessage
	inv      []Attribute
	// abortAt answers 409 from this status on.
	abortAt string
	aborted bool
	down    bool
	polls   int // Next calls
	// logErr is what Log answers (the log is not kept then).
	logErr error
}

func (s *fakeServer) nextCalls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.polls
}

func (s *fakeServer) Next(ctx context.Context, provides map[string]string) (*Deployment, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.polls++
	if s.down {
		return nil, ErrServer
	}
	if s.next == nil {
		return nil, nil
	}
	d := *s.next
	return &d, nil
}

func (s *fakeServer) Status(ctx context.Context, id, status, substate string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down {
		return ErrServer
	}
	if status == s.abortAt {
		s.aborted = true
	}
	if s.aborted && status != StatusSuccess && status != StatusFailure {
		s.statuses = append(s.statuses, status+"(409)")
		return ErrAborted
	}
	s.statuses = append(s.statuses, status)
	if status == StatusSuccess || status == StatusFailure || status == StatusAlreadyInstalled {
		s.next = nil
	}
	return nil
}

func (s *fakeServer) Log(ctx context.Context, id string, msgs []LogMessage) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.logErr != nil {
		return s.logErr
	}
	s.logs = append(s.logs, msgs)
	return nil
}

func (s *fakeServer) Inventory(ctx context.Context, attrs []Attribute) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.inv = attrs
	return nil
}

func (s *fakeServer) final() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, st := range s.statuses {
		if st == StatusSuccess || st == StatusFailure {
			out = append(out, st)
		}
	}
	return out
}

// fakeCommands answers the health check.
type fakeCommands struct {
	healthy func() bool
}

func (c fakeCommands) Output(ctx context.Context, argv []string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if argv[0] == "healthcheck" && c.healthy != nil && !c.healthy() {
		return nil, errors.New("exit status 1")
	}
	return nil, nil
}

// testEnv is one device with its data dir, the fake server and helpers to
// run the agent process by process.
type testEnv struct {
	t      *testing.T
	dir    string
	dev    *fakeDevice
	server *fakeServer
	cfg    Config
	opts   func(*Options)
	files  *httptest.Server // serves local artifact files over https
}

// fileURL is an https URL at which the test's file server serves the
// local file path (the agent reads a server's deployment only over https).
func (e *testEnv) fileURL(path string) string {
	if e.files == nil {
		e.files = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			f, err := os.Open(r.URL.Path)
			if err != nil {
				http.NotFound(w, r)
				return
			}
			defer f.Close()
			http.ServeContent(w, r, "", time.Time{}, f)
		}))
		e.t.Cleanup(e.files.Close)
	}
	return e.files.URL + (&url.URL{Path: path}).EscapedPath()
}

func newTestEnv(t *testing.T, current string) *testEnv {
	t.Helper()
	dir := t.TempDir()
	signers(t)
	pub := filepath.Join(dir, "artifact-key.pub")
	if err := os.WriteFile(pub, testKeyPub, 0o644); err != nil {
		t.Fatal(err)
	}
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	e := &testEnv{t: t, dir: dir, dev: newFakeDevice([]byte("old image")), server: &fakeServer{}}
	e.cfg = Config{
		DataDir:             filepath.Join(dir, "data"),
		DeviceTypeFile:      write("device_type", "device_type=sim\n"),
		ArtifactInfoFile:    write("artifact_info", "artifact_name="+current+"\n"),
		ArtifactVerifyKeys:  []string{pub},
		BootEnv:             "file",
		BootEnvFile:         filepath.Join(dir, "env"),
		BootIDFile:          filepath.Join(dir, "boot_id"),
		HealthCheck:         []string{"healthcheck"},
		InventoryScriptsDir: filepath.Join(dir, "inventory"),
	}
	e.bootStep()
	return e
}

// bootStep runs the bootloader and gives the boot a new ID.
func (e *testEnv) bootStep() {
	e.dev.boot()
	if err := os.WriteFile(e.cfg.BootIDFile, fmt.Appendf(nil, "boot-%d\n", e.dev.bootID), 0o644); err != nil {
		e.t.Fatal(err)
	}
}

// agent starts a new agent "process" with its own context; the device's
// crash hook cancels it.
func (e *testEnv) agent() (*Agent, context.Context) {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	e.t.Cleanup(cancel)
	e.dev.mu.Lock()
	e.dev.cancel = cancel
	e.dev.mu.Unlock()
	opts := Options{
		Config:     e.cfg,
		Server:     e.server,
		Installers: e.dev.installer(ctx),
		Commands:   fakeCommands{healthy: func() bool { return !bytes.Contains(e.dev.image(), []byte("unhealthy")) }},
		Rebooter:   ExitRebooter{},
		Logger:     slog.New(slog.NewTextHandler(io.Discard, nil)),
		Sleep:      func(ctx context.Context, d time.Duration) error { return ctx.Err() },
	}
	if e.files != nil {
		opts.Download.HTTP = e.files.Client()
	}
	if e.opts != nil {
		e.opts(&opts)
	}
	a, err := New(opts)
	if err != nil {
		e.t.Fatal(err)
	}
	return a, ctx
}

// deploy makes the server offer artifact name from uri; a local path is
// served over https (fileURL).
func (e *testEnv) deploy(name, uri string) {
	if !strings.HasPrefix(uri, "https://") && !strings.HasPrefix(uri, "http://") {
		if !filepath.IsAbs(uri) {
			uri = filepath.Join(e.dir, uri)
		}
		uri = e.fileURL(uri)
	}
	e.server.mu.Lock()
	e.server.next = &Deployment{ID: "dep-" + name, ArtifactName: name, URI: uri}
	e.server.mu.Unlock()
}

// runToEnd runs agent processes (CheckUpdate after each boot step) until
// the deployment is over; it fails after too many boots.
func (e *testEnv) runToEnd() {
	e.t.Helper()
	for boots := 0; boots < 20; boots++ {
		a, ctx := e.agent()
		_, err := a.CheckUpdate(ctx)
		rec, lerr := a.Record()
		if lerr != nil {
			e.t.Fatal(lerr)
		}
		if err == nil && rec == nil {
			return
		}
		if err != nil && rec == nil && errors.Is(err, ErrFailed) {
			return // the deployment ended in failure (the tests check which)
		}
		if err != nil && !errors.Is(err, ErrRebooting) && !isStop(err) {
			e.t.Fatalf("CheckUpdate: %v", err)
		}
		e.bootStep()
	}
	e.t.Fatal("deployment did not end after 20 boots")
}
