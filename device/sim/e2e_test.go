package sim_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/artifact"
	"github.com/gitfleet/gitfleet/device/bootenv"
	"github.com/gitfleet/gitfleet/device/sim"
)

// agentBinary is gitfleet-agent, built once for the package's tests.
var agentBinary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "gitfleet-agent-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	agentBinary = filepath.Join(dir, "gitfleet-agent")
	out, err := exec.Command("go", "build", "-o", agentBinary, "github.com/gitfleet/gitfleet/cmd/gitfleet-agent").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build gitfleet-agent: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// menderServer is a minimal Mender device API: it checks the signed auth
// request, hands out a token, offers one deployment, records statuses,
// logs and inventory, and serves artifacts like a presigned store (no
// Authorization, Range answered with 206).
type menderServer struct {
	t   *testing.T
	srv *httptest.Server

	mu        sync.Mutex
	token     string
	artifacts map[string][]byte
	dep       struct{ id, name string }
	statuses  map[string][]string
	logs      map[string][]map[string]any
	inventory []map[string]any
	downloads []string // Range headers of artifact requests
	dropFirst bool     // break the first artifact download halfway
	uri       string   // when set, the source uri deployments/next sends
}

func newMenderServer(t *testing.T) *menderServer {
	s := &menderServer{t: t, token: "token-1", artifacts: map[string][]byte{}, statuses: map[string][]string{}, logs: map[string][]map[string]any{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/devices/v1/authentication/auth_requests", s.auth)
	mux.HandleFunc("POST /api/devices/v2/deployments/device/deployments/next", s.authorized(s.next))
	mux.HandleFunc("PUT /api/devices/v1/deployments/device/deployments/{id}/status", s.authorized(s.status))
	mux.HandleFunc("PUT /api/devices/v1/deployments/device/deployments/{id}/log", s.authorized(s.log))
	mux.HandleFunc("PUT /api/devices/v1/inventory/device/attributes", s.authorized(s.inv))
	mux.HandleFunc("GET /download/{name}", s.download)
	s.srv = httptest.NewTLSServer(mux)
	t.Cleanup(s.srv.Close)
	return s
}

// certFile writes the server's certificate for ServerCertificate.
func (s *menderServer) certFile(dir string) string {
	p := filepath.Join(dir, "server.crt")
	b := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.srv.Certificate().Raw})
	if err := os.WriteFile(p, b, 0o644); err != nil {
		s.t.Fatal(err)
	}
	return p
}

func (s *menderServer) auth(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	var req struct {
		IDData string `json:"id_data"`
		PubKey string `json:"pubkey"`
	}
	if err := json.Unmarshal(body, &req); err != nil || !json.Valid([]byte(req.IDData)) {
		http.Error(w, "bad request", 400)
		return
	}
	blk, _ := pem.Decode([]byte(req.PubKey))
	if blk == nil {
		http.Error(w, "no key", 400)
		return
	}
	pub, err := x509.ParsePKIXPublicKey(blk.Bytes)
	ec, ok := pub.(*ecdsa.PublicKey)
	if err != nil || !ok {
		http.Error(w, "not an ECDSA key", 400)
		return
	}
	sig, err := base64.StdEncoding.DecodeString(r.Header.Get("X-MEN-Signature"))
	sum := sha256.Sum256(body)
	if err != nil || !ecdsa.VerifyASN1(ec, sum[:], sig) {
		http.Error(w, "bad signature", 401)
		return
	}
	s.mu.Lock()
	tok := s.token
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/jwt")
	io.WriteString(w, tok)
}

func (s *menderServer) authorized(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		ok := r.Header.Get("Authorization") == "Bearer "+s.token
		s.mu.Unlock()
		if !ok {
			http.Error(w, "unauthorized", 401)
			return
		}
		h(w, r)
	}
}

func (s *menderServer) next(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Provides map[string]string `json:"device_provides"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Provides["device_type"] == "" {
		http.Error(w, "bad request", 400)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	id, name := s.dep.id, s.dep.name
	if id == "" || s.done(id) {
		w.WriteHeader(204)
		return
	}
	uri := s.srv.URL + "/download/" + name + "?X-Sig=secret"
	if s.uri != "" {
		uri = s.uri
	}
	json.NewEncoder(w).Encode(map[string]any{
		"id": id,
		"artifact": map[string]any{
			"artifact_name":           name,
			"source":                  map[string]string{"uri": uri, "expire": time.Now().Add(time.Hour).Format(time.RFC3339)},
			"device_types_compatible": []string{"sim"},
		},
	})
}

func (s *menderServer) done(id string) bool {
	for _, st := range s.statuses[id] {
		if st == "success" || st == "failure" || st == "already-installed" {
			return true
		}
	}
	return false
}

func (s *menderServer) status(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Status string `json:"status"`
	}
	json.NewDecoder(r.Body).Decode(&req)
	s.mu.Lock()
	s.statuses[r.PathValue("id")] = append(s.statuses[r.PathValue("id")], req.Status)
	s.mu.Unlock()
	w.WriteHeader(204)
}

func (s *menderServer) log(w http.ResponseWriter, r *http.Request) {
	var req map[string]any
	json.NewDecoder(r.Body).Decode(&req)
	s.mu.Lock()
	s.logs[r.PathValue("id")] = append(s.logs[r.PathValue("id")], req)
	s.mu.Unlock()
	w.WriteHeader(204)
}

func (s *menderServer) inv(w http.ResponseWriter, r *http.Request) {
	var attrs []map[string]any
	json.NewDecoder(r.Body).Decode(&attrs)
	s.mu.Lock()
	s.inventory = attrs
	s.mu.Unlock()
	w.WriteHeader(200)
}

func (s *menderServer) download(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "" || r.URL.Query().Get("X-Sig") != "secret" {
		http.Error(w, "forbidden", 403)
		return
	}
	s.mu.Lock()
	data, ok := s.artifacts[r.PathValue("name")]
	s.downloads = append(s.downloads, r.Header.Get("Range"))
	drop := s.dropFirst
	s.dropFirst = false
	s.mu.Unlock()
	if !ok {
		http.NotFound(w, r)
		return
	}
	if drop {
		w.Header().Set("Content-Length", fmt.Sprint(len(data)))
		w.WriteHeader(200)
		w.Write(data[:len(data)/2])
		w.(http.Flusher).Flush()
		if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
			conn.Close()
		}
		return
	}
	http.ServeContent(w, r, "", time.Unix(0, 0), bytes.NewReader(data))
}

func (s *menderServer) deploy(id, name string, data []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.artifacts[name] = data
	s.dep.id, s.dep.name = id, name
}

// await waits for the deployment's final status.
func (s *menderServer) await(t *testing.T, d *sim.Device, id string) string {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		s.mu.Lock()
		sts := append([]string(nil), s.statuses[id]...)
		s.mu.Unlock()
		for _, st := range sts {
			if st == "success" || st == "failure" {
				// Let the agent remove its record.
				for i := 0; i < 100; i++ {
					if rec, _ := d.Record(); rec == nil {
						break
					}
					time.Sleep(20 * time.Millisecond)
				}
				return st
			}
		}
		if err := d.Err(); err != nil {
			t.Fatalf("agent stopped: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no outcome for %s; statuses %v", id, s.statuses[id])
	return ""
}

// signedArtifact builds a rootfs-image artifact signed by priv.
func signedArtifact(t *testing.T, dir, name string, image []byte, priv []byte) []byte {
	t.Helper()
	img := filepath.Join(dir, name+".img")
	if err := os.WriteFile(img, image, 0o644); err != nil {
		t.Fatal(err)
	}
	signer, err := artifact.LoadSigner(priv)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	err = artifact.Write(context.Background(), &buf, artifact.Spec{
		Name:        name,
		DeviceTypes: []string{"sim"},
		Payloads:    []artifact.PayloadSpec{artifact.RootfsImage(artifact.FileSpec{Path: img}, name, artifact.Software{})},
		Signer:      signer,
		TempDir:     dir,
	})
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

type e2e struct {
	srv      *menderServer
	dev      *sim.Device
	dir      string
	priv     []byte
	otherKey []byte
	log      *bytes.Buffer
}

func newE2E(t *testing.T) *e2e {
	t.Helper()
	srv := newMenderServer(t)
	base := t.TempDir()
	priv, pub, err := artifact.GenerateKey(artifact.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	other, _, err := artifact.GenerateKey(artifact.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	pubPath := filepath.Join(base, "artifact.pub")
	os.WriteFile(pubPath, pub, 0o644)
	dir := filepath.Join(base, "device")
	os.Mkdir(dir, 0o755)
	logBuf := &syncBuffer{}
	dev, err := sim.New(dir, sim.Options{
		AgentBinary:        agentBinary,
		ServerURL:          srv.srv.URL,
		ServerCertificate:  srv.certFile(base),
		ArtifactName:       "release-1",
		Image:              []byte("release-1 image"),
		ArtifactVerifyKeys: []string{pubPath},
		// The health check of the simulated image: it fails when the
		// booted partition says "unhealthy".
		HealthCheck: []string{"/bin/sh", "-c", `! grep -q unhealthy "$(cat booted)"`},
		Log:         logBuf,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		dev.Kill()
		if t.Failed() {
			t.Logf("agent log:\n%s", logBuf.String())
		}
	})
	return &e2e{srv: srv, dev: dev, dir: base, priv: priv, otherKey: other, log: &logBuf.Buffer}
}

type syncBuffer struct {
	mu sync.Mutex
	bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.Buffer.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.Buffer.String()
}

func TestEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the agent")
	}
	t.Run("update installs, reboots into B and commits", func(t *testing.T) {
		e := newE2E(t)
		e.srv.dropFirst = true // and the download resumes
		e.srv.deploy("dep-1", "release-2", signedArtifact(t, e.dir, "release-2", []byte("release-2 image"), e.priv))
		if err := e.dev.Start(); err != nil {
			t.Fatal(err)
		}
		if got := e.srv.await(t, e.dev, "dep-1"); got != "success" {
			t.Fatalf("outcome %s; statuses %v; log %v", got, e.srv.statuses["dep-1"], e.srv.logs["dep-1"])
		}
		if err := e.dev.Stop(); err != nil {
			t.Fatal(err)
		}
		if e.dev.Booted() != "B" || e.dev.ArtifactName() != "release-2" || e.dev.Reboots() != 1 {
			t.Errorf("booted %s, artifact %s, reboots %d", e.dev.Booted(), e.dev.ArtifactName(), e.dev.Reboots())
		}
		st, err := bootenv.ReadState(context.Background(), e.dev.Env())
		if err != nil || st.Part != sim.PartB || st.UpgradeAvailable {
			t.Errorf("env %+v, %v", st, err)
		}
		if got := strings.Join(e.srv.statuses["dep-1"], " "); got != "downloading installing rebooting installing success" {
			t.Errorf("statuses %s", got)
		}
		if len(e.srv.downloads) < 2 || !strings.HasPrefix(e.srv.downloads[1], "bytes=") {
			t.Errorf("download requests %q: no resume", e.srv.downloads)
		}
		// A power cycle keeps B.
		if got, _ := e.dev.Boot(); got != "B" {
			t.Errorf("after a power cycle: %s", got)
		}
		inv := fmt.Sprint(e.srv.inventory)
		for _, want := range []string{"device_type", "sim", "update_modules", "rootfs-image"} {
			if !strings.Contains(inv, want) {
				t.Errorf("inventory %s lacks %s", inv, want)
			}
		}
	})
	t.Run("failing health check reboots back into A and reports failure", func(t *testing.T) {
		e := newE2E(t)
		e.srv.deploy("dep-2", "release-3", signedArtifact(t, e.dir, "release-3", []byte("release-3 unhealthy image"), e.priv))
		if err := e.dev.Start(); err != nil {
			t.Fatal(err)
		}
		if got := e.srv.await(t, e.dev, "dep-2"); got != "failure" {
			t.Fatalf("outcome %s", got)
		}
		e.dev.Stop()
		if e.dev.Booted() != "A" || e.dev.ArtifactName() != "release-1" || e.dev.Reboots() != 2 {
			t.Errorf("booted %s, artifact %s, reboots %d", e.dev.Booted(), e.dev.ArtifactName(), e.dev.Reboots())
		}
		st, _ := bootenv.ReadState(context.Background(), e.dev.Env())
		if st.Part != sim.PartA || st.UpgradeAvailable {
			t.Errorf("env %+v", st)
		}
		if logs := fmt.Sprint(e.srv.logs["dep-2"]); !strings.Contains(logs, "health check") {
			t.Errorf("deployment log %s", logs)
		}
	})
	t.Run("wrongly signed artifact is refused before the boot switch", func(t *testing.T) {
		e := newE2E(t)
		e.srv.deploy("dep-3", "release-4", signedArtifact(t, e.dir, "release-4", []byte("release-4 image"), e.otherKey))
		if err := e.dev.Start(); err != nil {
			t.Fatal(err)
		}
		if got := e.srv.await(t, e.dev, "dep-3"); got != "failure" {
			t.Fatalf("outcome %s", got)
		}
		e.dev.Stop()
		if e.dev.Reboots() != 0 || e.dev.Booted() != "A" {
			t.Errorf("reboots %d, booted %s", e.dev.Reboots(), e.dev.Booted())
		}
		b, _ := os.ReadFile(e.dev.PartitionPath("B"))
		if bytes.Contains(b, []byte("release-4")) {
			t.Errorf("partition B received the payload of a wrongly signed artifact")
		}
		if logs := fmt.Sprint(e.srv.logs["dep-3"]); !strings.Contains(logs, "signature") {
			t.Errorf("deployment log %s", logs)
		}
	})
}
