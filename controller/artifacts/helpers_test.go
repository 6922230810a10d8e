package artifacts

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"io/fs"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/artifact"
	"github.com/gitfleet/gitfleet/schema"
)

// clock is a settable Options.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Unix(1_800_000_000, 0)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// testKey is a signing key made once per name in this test binary.
type testKey struct {
	name     string
	priv     []byte
	pub      []byte
	signer   *artifact.Signer
	manifest schema.SigningKey
}

var (
	keysMu sync.Mutex
	keys   = map[string]*testKey{}
)

func key(t testing.TB, name string) *testKey {
	t.Helper()
	keysMu.Lock()
	defer keysMu.Unlock()
	if k := keys[name]; k != nil {
		return k
	}
	priv, pub, err := artifact.GenerateKey(artifact.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	s, err := artifact.LoadSigner(priv)
	if err != nil {
		t.Fatal(err)
	}
	k := &testKey{name: name, priv: priv, pub: pub, signer: s, manifest: schema.SigningKey{
		Meta: schema.Meta{APIVersion: schema.APIVersion, Kind: schema.KindSigningKey, Name: name},
		Spec: schema.SigningKeySpec{Algorithm: schema.AlgorithmECDSAP256, PublicKey: string(pub)},
	}}
	keys[name] = k
	return k
}

func fleetKeys(t testing.TB, names ...string) []schema.SigningKey {
	var out []schema.SigningKey
	for _, n := range names {
		out = append(out, key(t, n).manifest)
	}
	return out
}

// build writes a module-image artifact to memory.
type build struct {
	name        string
	deviceTypes []string
	signer      *testKey // nil: unsigned
	payload     []byte
	provides    map[string]string
}

func (b build) bytes(t testing.TB) []byte {
	t.Helper()
	dts := b.deviceTypes
	if dts == nil {
		dts = []string{"board-a"}
	}
	payload := b.payload
	if payload == nil {
		payload = bytes.Repeat([]byte("payload "+b.name+"\n"), 100)
	}
	p := artifact.ModuleImage("app", []artifact.FileSpec{{Name: "app.bin", Open: func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(payload)), nil
	}}}, b.name, artifact.Software{})
	for k, v := range b.provides {
		p.Provides[k] = v
	}
	spec := artifact.Spec{Name: b.name, DeviceTypes: dts, Payloads: []artifact.PayloadSpec{p}, TempDir: t.TempDir()}
	if b.signer != nil {
		spec.Signer = b.signer.signer
	}
	var buf bytes.Buffer
	if err := artifact.Write(context.Background(), &buf, spec); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func sum(data []byte) string {
	s := sha256.Sum256(data)
	return hex.EncodeToString(s[:])
}

// manifest returns an Artifact manifest.
func manifest(name, source string, mod ...func(*schema.ArtifactSpec)) schema.Artifact {
	a := schema.Artifact{
		Meta: schema.Meta{APIVersion: schema.APIVersion, Kind: schema.KindArtifact, Name: name},
		Spec: schema.ArtifactSpec{Source: source, DeviceTypes: []string{"board-a"}},
	}
	for _, m := range mod {
		m(&a.Spec)
	}
	return a
}

func signedBy(names ...string) func(*schema.ArtifactSpec) {
	return func(s *schema.ArtifactSpec) { s.SignedBy = names }
}

func withSHA(d string) func(*schema.ArtifactSpec) {
	return func(s *schema.ArtifactSpec) { s.SHA256 = d }
}

// env is a cache over a temporary store and an https server.
type env struct {
	t     testing.TB
	store string
	dir   string
	clock *clock
	cache *Cache
	srv   *httptest.Server
	files sync.Map // https path → []byte
	gets  atomic.Int64
	// serve, when set, answers https requests instead of the file map.
	serve atomic.Pointer[http.HandlerFunc]
}

var downloadKey = bytes.Repeat([]byte("k"), 32)

func newEnv(t testing.TB, mod ...func(*Options)) *env {
	t.Helper()
	e := &env{t: t, store: t.TempDir(), dir: t.TempDir(), clock: newClock()}
	e.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.gets.Add(1)
		if f := e.serve.Load(); f != nil {
			(*f)(w, r)
			return
		}
		data, ok := e.files.Load(r.URL.Path)
		if !ok {
			http.NotFound(w, r)
			return
		}
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(data.([]byte)))
	}))
	e.srv.Config.ErrorLog = log.New(io.Discard, "", 0) // dropped connections are on purpose
	e.srv.StartTLS()
	t.Cleanup(e.srv.Close)
	opts := Options{
		Dir: e.dir, StoreDir: e.store, HTTPClient: e.srv.Client(), Now: e.clock.Now,
		DownloadKeys: [][]byte{downloadKey}, MaxSize: 1 << 20,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	for _, m := range mod {
		m(&opts)
	}
	c, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	e.cache = c
	return e
}

// put writes data into the artifact store at the slash path p.
func (e *env) put(p string, data []byte) {
	e.t.Helper()
	full := filepath.Join(e.store, filepath.FromSlash(p))
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		e.t.Fatal(err)
	}
	if err := os.WriteFile(full, data, 0o644); err != nil {
		e.t.Fatal(err)
	}
}

// host serves data over https at p and returns its URL.
func (e *env) host(p string, data []byte) string {
	e.files.Store(p, data)
	return e.srv.URL + p
}

// blobs lists the cached files.
func (e *env) blobs() []string {
	e.t.Helper()
	ents, err := os.ReadDir(filepath.Join(e.dir, blobDir))
	if err != nil {
		e.t.Fatal(err)
	}
	var out []string
	for _, de := range ents {
		out = append(out, de.Name())
	}
	return out
}

// tmpFiles lists tmp/.
func (e *env) tmpFiles() []string {
	var out []string
	_ = filepath.WalkDir(filepath.Join(e.dir, tmpDir), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			out = append(out, strings.TrimPrefix(p, e.dir))
		}
		return nil
	})
	return out
}

// needTool returns the path of a real peer tool; without it the test is
// skipped, or fails when CI=true.
func needTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is required in CI: %v", name, err)
		}
		t.Skipf("%s not installed", name)
	}
	return p
}

func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// serve runs one request through h.
func serve(h http.Handler, method, target string, hdr http.Header) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, target, nil)
	for k, v := range hdr {
		r.Header[k] = v
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}
