package deviceapi

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/controller/artifacts"
	"github.com/gitfleet/gitfleet/controller/rollout"
	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gitfleet/gitfleet/controller/store/embedded"
	"github.com/gitfleet/gitfleet/schema"
)

// TestStockMenderClient runs Debian's mender 3.4 client against the device
// API (with a fake rollout plan and artifact cache, and a plain file server
// for the artifact) to check the protocol, not the rollout: it bootstraps
// and shows up pending; once accepted it authenticates, sends its
// inventory, polls, downloads a module-image artifact built by
// mender-artifact, installs it with an update module and reports each
// status through success; a second deployment whose module fails ends as
// failure. The client's fixed paths (/etc/mender, /usr/share/mender) are
// tmpfs mounts in a private mount namespace (unshare -m), so the machine's
// own are never touched. Needs root, unshare, mender and mender-artifact;
// skipped otherwise (and in -short).
func TestStockMenderClient(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	for _, tool := range []string{"mender", "mender-artifact", "unshare"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	if os.Getuid() != 0 {
		t.Skip("needs root for a private mount namespace")
	}
	if err := exec.Command("unshare", "-m", "true").Run(); err != nil {
		t.Skipf("unshare -m: %v", err)
	}

	dir := t.TempDir()
	st, err := embedded.Open(filepath.Join(dir, embedded.FileName), embedded.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	e := &env{t: t, store: st, plan: &fakePlan{}, arts: &fakeArtifacts{entries: map[string]*artifacts.Entry{}},
		clock: &fakeClock{now: time.Now()}}
	var handler http.Handler
	e.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { handler.ServeHTTP(w, r) }))
	api, err := New(Options{Store: st, Live: e.snap.Load, Artifacts: &fileArtifacts{e.arts}, Now: time.Now,
		PublicURL: "https://" + e.srv.Listener.Addr().String(),
		Compile:   func(*schema.Fleet, []store.RolloutRecord) Planner { return e.plan }})
	if err != nil {
		t.Fatal(err)
	}
	e.api = api
	files := http.StripPrefix("/files/", http.FileServer(http.Dir(filepath.Join(dir, "files"))))
	mux := http.NewServeMux()
	mux.Handle("/files/", files)
	mux.Handle("/", api.Handler())
	var (
		mu   sync.Mutex
		seen []string
	)
	handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &codeRecorder{ResponseWriter: w, code: 200}
		mux.ServeHTTP(rec, r)
		mu.Lock()
		seen = append(seen, fmt.Sprintf("%s %s %d", r.Method, r.URL.Path, rec.code))
		mu.Unlock()
	})
	e.srv.StartTLS()
	defer e.srv.Close()
	e.setFleet()

	// The device's world: config, data dir, identity and inventory
	// scripts, update modules, artifact_info.
	root := filepath.Join(dir, "root")
	write := func(path, content string, mode os.FileMode) {
		t.Helper()
		p := filepath.Join(root, path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
	}
	write("share/identity/mender-device-identity", "#!/bin/sh\necho mac=02:00:00:00:00:42\necho serial=GF-42\n", 0o755)
	write("share/inventory/mender-inventory-test", "#!/bin/sh\necho hostname=stock-client\necho ips=10.0.0.1\necho ips=10.0.0.2\n", 0o755)
	write("share/modules/v3/gftest-ok", "#!/bin/sh\ncase \"$1\" in NeedsArtifactReboot) echo No;; SupportsRollback) echo No;; esac\nexit 0\n", 0o755)
	write("share/modules/v3/gftest-fail", "#!/bin/sh\ncase \"$1\" in NeedsArtifactReboot) echo No;; SupportsRollback) echo No;; ArtifactInstall) exit 1;; esac\nexit 0\n", 0o755)
	write("etc/artifact_info", "artifact_name=hello-1.0\n", 0o644)
	write("data/device_type", "device_type=qemux86-64\n", 0o644)
	cert := filepath.Join(dir, "server.crt")
	os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: e.srv.Certificate().Raw}), 0o644)
	conf, _ := json.Marshal(map[string]any{
		"ServerURL": e.srv.URL, "ServerCertificate": cert,
		"UpdatePollIntervalSeconds": 1, "InventoryPollIntervalSeconds": 1, "RetryPollIntervalSeconds": 1,
		"DeviceTypeFile": filepath.Join(root, "data/device_type"),
		"DBus":           map[string]any{"Enabled": false},
	})
	write("mender.conf", string(conf), 0o644)

	// Two artifacts made by mender-artifact, ≥ 4 KiB as the client demands.
	payload := filepath.Join(dir, "payload.bin")
	junk := make([]byte, 16<<10)
	rand.Read(junk)
	os.WriteFile(payload, junk, 0o644)
	os.MkdirAll(filepath.Join(dir, "files"), 0o755)
	for _, a := range []struct{ name, module string }{{"hello-2.0", "gftest-ok"}, {"hello-3.0", "gftest-fail"}} {
		out, err := exec.Command("mender-artifact", "write", "module-image", "-T", a.module, "-n", a.name,
			"-t", "qemux86-64", "-f", payload, "-o", filepath.Join(dir, "files", a.name+".mender")).CombinedOutput()
		if err != nil {
			t.Fatalf("mender-artifact: %v\n%s", err, out)
		}
		e.arts.entries[a.name] = &artifacts.Entry{Name: a.name, Digest: a.name + ".mender", ArtifactName: a.name, DeviceTypes: []string{"qemux86-64"}}
	}

	mender := func(ctx context.Context, args ...string) *exec.Cmd {
		script := strings.Join([]string{
			"set -e",
			"mount --make-rprivate /",
			"mount -t tmpfs gf /usr/share/mender && cp -a " + root + "/share/. /usr/share/mender/",
			"mount -t tmpfs gf /etc/mender && cp -a " + root + "/etc/. /etc/mender/",
			`exec mender --no-syslog -l debug -c ` + filepath.Join(root, "mender.conf") + ` -d ` + filepath.Join(root, "data") + ` "$@"`,
		}, "\n")
		cmd := exec.CommandContext(ctx, "unshare", append([]string{"-m", "sh", "-c", script, "mender"}, args...)...)
		cmd.WaitDelay = 5 * time.Second
		return cmd
	}

	// 1. Bootstrap: pending.
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	out, err := mender(ctx, "bootstrap").CombinedOutput()
	pending, _ := st.PendingDevices(ctx, 10)
	if len(pending) != 1 {
		t.Fatalf("after bootstrap (err %v), pending %v; client said:\n%s", err, pending, tail(out))
	}
	p := pending[0]
	t.Logf("pending device %s identity %s key %s", p.ID, p.Identity, p.KeyFingerprint[:16])

	// 2. A commit accepts it (identity + key); a rollout offers hello-2.0.
	var ident map[string]string
	json.Unmarshal(p.Identity, &ident)
	e.setFleet(manifest("stock-1", 1, ident, p.KeyFingerprint))
	g := store.GenerationRef{Rollout: "stock", Generation: 1}
	artifactOf := func() string { mu.Lock(); defer mu.Unlock(); return e.arts.entries["current"].Name }
	e.arts.entries["current"] = e.arts.entries["hello-2.0"]
	e.plan.route = func(d *rollout.Device) (store.GenerationRef, rollout.Reason, bool) { return g, "", true }
	e.plan.next = func(in rollout.NextInput) rollout.Decision {
		name := artifactOf()
		switch {
		case in.Device.Provides["artifact_name"] == name:
			return rollout.Decision{Action: rollout.Installed, Generation: g, Limit: 10, Artifact: "current", ArtifactName: name}
		case in.Deployment == nil || in.Deployment.State == store.StateRetrying:
			return rollout.Decision{Action: rollout.Admit, Generation: g, Limit: 10, Artifact: "current", ArtifactName: name}
		case in.Deployment.State == store.StateSuccess || in.Deployment.State == store.StateFailure:
			return rollout.Decision{Reason: rollout.ReasonDone}
		}
		return rollout.Decision{Action: rollout.Resume, Generation: g, Artifact: "current", ArtifactName: name}
	}

	daemon := mender(ctx, "daemon")
	var log bytes.Buffer
	daemon.Stdout, daemon.Stderr = &log, &log
	if err := daemon.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cancel()
		daemon.Wait()
		if t.Failed() {
			t.Logf("client log:\n%s", tail(log.Bytes()))
			mu.Lock()
			t.Logf("requests: %v", seen)
			mu.Unlock()
		}
	}()
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for !cond() {
			if ctx.Err() != nil {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	waitFor("inventory", func() bool {
		d, err := st.Device(ctx, p.ID)
		return err == nil && InventoryAttributes(d.Inventory)["hostname"] == "stock-client"
	})
	waitFor("hello-2.0 to succeed", func() bool {
		d, err := st.Deployment(ctx, g, "stock-1")
		return err == nil && d.State == store.StateSuccess
	})
	d, _ := st.Device(ctx, p.ID)
	if inv := InventoryAttributes(d.Inventory); inv["ips"] != "10.0.0.1,10.0.0.2" || inv["device_type"] != "qemux86-64" {
		t.Errorf("inventory %s", d.Inventory)
	}

	// 3. A new generation with an artifact whose install fails.
	mu.Lock()
	g = store.GenerationRef{Rollout: "stock", Generation: 2}
	e.arts.entries["current"] = e.arts.entries["hello-3.0"]
	mu.Unlock()
	waitFor("hello-3.0 to fail", func() bool {
		d, err := st.Deployment(ctx, store.GenerationRef{Rollout: "stock", Generation: 2}, "stock-1")
		return err == nil && d.State == store.StateFailure
	})
	// The client may upload its log after the failure status.
	waitFor("the failed deployment's log", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, s := range seen {
			if strings.HasPrefix(s, "PUT /api/devices/v1/deployments/device/deployments/stock-g2/log ") {
				return true
			}
		}
		return false
	})
	mu.Lock()
	defer mu.Unlock()
	t.Logf("%d requests; first: %s", len(seen), strings.Join(seen[:min(len(seen), 40)], ", "))
	for _, want := range []string{
		"POST /api/devices/v1/authentication/auth_requests",
		"POST /api/devices/v2/deployments/device/deployments/next",
		"PUT /api/devices/v1/deployments/device/deployments/stock-g1/status",
		"GET /files/hello-2.0.mender",
		"PUT /api/devices/v1/deployments/device/deployments/stock-g2/log",
	} {
		found := false
		for _, s := range seen {
			found = found || strings.HasPrefix(s, want+" ")
		}
		if !found {
			t.Errorf("the client never sent %s", want)
		}
	}
}

// fileArtifacts presigns URLs to the test's plain file server.
type fileArtifacts struct{ *fakeArtifacts }

func (f *fileArtifacts) PresignURL(base string, e *artifacts.Entry, device string, ttl time.Duration) (string, time.Time) {
	return base + "/files/" + e.Digest, time.Now().Add(time.Hour)
}

func tail(b []byte) string {
	if len(b) > 8000 {
		b = b[len(b)-8000:]
	}
	return fmt.Sprintf("%s", b)
}

type codeRecorder struct {
	http.ResponseWriter
	code int
}

func (c *codeRecorder) WriteHeader(code int) { c.code = code; c.ResponseWriter.WriteHeader(code) }
