package deviceapi

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/artifact"
	"github.com/gitfleet/gitfleet/controller/artifacts"
	"github.com/gitfleet/gitfleet/controller/reconcile"
	"github.com/gitfleet/gitfleet/controller/rollout"
	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gitfleet/gitfleet/controller/store/embedded"
	"github.com/gitfleet/gitfleet/schema"
)

// env is a device API over TLS on a real embedded store, with a Snapshot
// the test swaps, a fake rollout plan and a fake artifact cache.
type env struct {
	t     *testing.T
	store *embedded.Store
	seen  *countingStore // what the API's store calls were
	api   *API
	srv   *httptest.Server
	snap  atomic.Pointer[reconcile.Snapshot]
	plan  *fakePlan
	arts  *fakeArtifacts
	clock *fakeClock

	commits int
}

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func newEnv(t *testing.T) *env {
	t.Helper()
	clock := &fakeClock{now: time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)}
	// The store keeps the API's clock (admission times, deadlines), as in
	// production where both read the wall clock.
	st, err := embedded.Open(filepath.Join(t.TempDir(), embedded.FileName), embedded.Options{NoSync: true, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e := &env{t: t, store: st, plan: &fakePlan{}, arts: &fakeArtifacts{entries: map[string]*artifacts.Entry{}},
		clock: clock}
	e.seen = &countingStore{Store: st}
	e.api, err = New(Options{
		Store:     e.seen,
		Live:      e.snap.Load,
		Artifacts: e.arts,
		PublicURL: "https://gitfleet.test",
		Compile:   func(*schema.Fleet, []store.RolloutRecord) Planner { return e.plan },
		Now:       e.clock.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	e.srv = httptest.NewTLSServer(e.api.Handler())
	t.Cleanup(e.srv.Close)
	return e
}

// countingStore counts the device API's deployment reads; with
// noChanges set its change list is empty (a generation recorded before
// change lists existed).
type countingStore struct {
	*embedded.Store
	deploymentReads atomic.Int64
	noChanges       atomic.Bool
}

func (c *countingStore) Deployment(ctx context.Context, g store.GenerationRef, device string) (store.Deployment, error) {
	c.deploymentReads.Add(1)
	return c.Store.Deployment(ctx, g, device)
}

func (c *countingStore) Changes(ctx context.Context, g store.GenerationRef, from int64, max int) ([]store.Change, error) {
	if c.noChanges.Load() {
		return nil, nil
	}
	return c.Store.Changes(ctx, g, from, max)
}

// setFleet publishes a new Snapshot declaring these devices.
func (e *env) setFleet(devices ...schema.Device) *reconcile.Snapshot {
	e.commits++
	s := &reconcile.Snapshot{
		Commit: store.CommitRecord{SHA: fmt.Sprintf("%040x", e.commits)},
		Fleet:  &schema.Fleet{Devices: devices},
	}
	e.snap.Store(s)
	return s
}

// manifest is a Device manifest; with an identity and no fingerprint it
// trusts the first key (the only form without a key validate accepts).
func manifest(name string, line int, identity map[string]string, fp string) schema.Device {
	d := schema.Device{Spec: schema.DeviceSpec{Identity: identity, PublicKeySHA256: fp, TrustOnFirstUse: fp == "" && len(identity) > 0}}
	d.Name, d.Kind, d.APIVersion = name, "Device", "gitfleet.io/v1"
	d.Source = schema.Source{File: "devices/lab.yaml", Line: line}
	return d
}

// do sends a request with an optional bearer token and returns status and body.
func (e *env) do(method, path, token string, body []byte, hdr map[string]string) (int, []byte, http.Header) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, bytes.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b, resp.Header
}

// testDevice is a device with a key and an identity that signs its auth
// requests as the Mender client does.
type testDevice struct {
	t        *testing.T
	signer   crypto.Signer
	alg      string
	identity map[string]any
	token    string
}

func newDevice(t *testing.T, alg string, identity map[string]any) *testDevice {
	t.Helper()
	var (
		k   crypto.Signer
		err error
	)
	switch alg {
	case "rsa":
		k, err = rsa.GenerateKey(rand.Reader, 2048)
	case "ecdsa":
		k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "ed25519":
		_, k, err = ed25519.GenerateKey(rand.Reader)
	default:
		t.Fatalf("key type %s", alg)
	}
	if err != nil {
		t.Fatal(err)
	}
	return &testDevice{t: t, signer: k, alg: alg, identity: identity}
}

func (d *testDevice) pubPEM() string {
	der, err := x509.MarshalPKIXPublicKey(d.signer.Public())
	if err != nil {
		d.t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

func (d *testDevice) fingerprint() string {
	fp, err := artifact.Fingerprint(d.signer.Public())
	if err != nil {
		d.t.Fatal(err)
	}
	return fp
}

func (d *testDevice) ident() Identity {
	b, _ := json.Marshal(d.identity)
	id, err := decodeIdentity(b)
	if err != nil {
		d.t.Fatal(err)
	}
	return id
}

func (d *testDevice) id() string { return d.ident().ID() }

// authBody is the JSON body the Mender client sends (id_data as a string).
func (d *testDevice) authBody() []byte {
	id, _ := json.Marshal(d.identity)
	b, _ := json.Marshal(AuthRequest{IDData: string(id), PubKey: d.pubPEM(), TenantToken: ""})
	return append(b, '\n') // the client's json.Encoder adds one
}

func (d *testDevice) sign(body []byte) string {
	var (
		sig []byte
		err error
	)
	switch k := d.signer.(type) {
	case ed25519.PrivateKey:
		sig = ed25519.Sign(k, body)
	default:
		sum := sha256.Sum256(body)
		sig, err = k.Sign(rand.Reader, sum[:], crypto.SHA256) // PKCS#1 v1.5 / ASN.1 ECDSA
	}
	if err != nil {
		d.t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(sig)
}

// auth posts a signed auth request; on 200 it keeps the token.
func (d *testDevice) auth(e *env) (int, http.Header) {
	d.t.Helper()
	body := d.authBody()
	code, b, h := e.do(http.MethodPost, "/api/devices/v1/authentication/auth_requests", "", body,
		map[string]string{"X-MEN-Signature": d.sign(body)})
	if code == http.StatusOK {
		d.token = string(b)
	}
	return code, h
}

// fakePlan answers from functions the test sets.
type fakePlan struct {
	mu        sync.Mutex
	route     func(d *rollout.Device) (store.GenerationRef, rollout.Reason, bool)
	next      func(in rollout.NextInput) rollout.Decision
	onStatus  func(in rollout.StatusInput) rollout.StatusDecision
	watchedBy func(check string) []store.GenerationRef
	seen      []rollout.NextInput
	statuses  []rollout.StatusInput
}

func (p *fakePlan) Route(d *rollout.Device) (store.GenerationRef, rollout.Reason, bool) {
	if p.route == nil {
		return store.GenerationRef{}, rollout.ReasonNotTargeted, false
	}
	return p.route(d)
}

func (p *fakePlan) Next(in rollout.NextInput) rollout.Decision {
	p.mu.Lock()
	p.seen = append(p.seen, in)
	p.mu.Unlock()
	if p.next == nil {
		return rollout.Decision{Reason: rollout.ReasonNotTargeted}
	}
	return p.next(in)
}

func (p *fakePlan) WatchedBy(check string) []store.GenerationRef {
	if p.watchedBy == nil {
		return nil
	}
	return p.watchedBy(check)
}

func (p *fakePlan) OnStatus(in rollout.StatusInput) rollout.StatusDecision {
	p.mu.Lock()
	p.statuses = append(p.statuses, in)
	p.mu.Unlock()
	if p.onStatus == nil {
		return rollout.StatusDecision{}
	}
	return p.onStatus(in)
}

// fakeArtifacts serves entries by name and signs URLs trivially.
type fakeArtifacts struct {
	mu      sync.Mutex
	entries map[string]*artifacts.Entry
	refused map[string]error // artifacts the cache refuses, with why
}

func (f *fakeArtifacts) Lookup(name string) (*artifacts.Entry, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.refused[name]; err != nil {
		return nil, err
	}
	if e := f.entries[name]; e != nil {
		return e, nil
	}
	return nil, &artifacts.Error{Name: name, Kind: artifacts.ErrPending}
}

func (f *fakeArtifacts) PresignURL(base string, e *artifacts.Entry, device string, ttl time.Duration) (string, time.Time) {
	return base + artifacts.DownloadPath + e.Digest + "?device=" + device, time.Date(2025, 6, 1, 13, 0, 0, 0, time.UTC)
}

func ctx() context.Context { return context.Background() }

func rolloutManifest(name string, retries int) schema.Rollout {
	r := schema.Rollout{Spec: schema.RolloutSpec{Artifact: "hello-2", Retries: retries}}
	r.Name, r.Kind, r.APIVersion = name, "Rollout", "gitfleet.io/v1"
	return r
}
