package deviceapi

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	"github.com/gitfleet/gitfleet/controller/artifacts"
	"github.com/gitfleet/gitfleet/controller/reconcile"
	"github.com/gitfleet/gitfleet/controller/rollout"
	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gitfleet/gitfleet/controller/store/embedded"
	"github.com/gitfleet/gitfleet/controller/store/redis"
	"github.com/gitfleet/gitfleet/controller/store/redistest"
	"github.com/gitfleet/gitfleet/schema"
)

// testCA is a CA that issues device certificates.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  string
}

func newTestCA(t *testing.T, cn string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC), NotAfter: time.Now().AddDate(5, 0, 0),
		BasicConstraintsValid: true, IsCA: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, pem: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))}
}

// issue signs a client certificate for pub with subject CN cn and the
// given serial, valid until notAfter.
func (ca *testCA) issue(t *testing.T, pub crypto.PublicKey, cn string, serial int64, notAfter time.Time) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC), NotAfter: notAfter,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return cert
}

// loadCAFleet loads DeviceCA manifests (YAML) with the real loader, with
// the Device manifests devices.
func loadCAFleet(t *testing.T, files map[string]string) *schema.Fleet {
	t.Helper()
	fsys := fstest.MapFS{}
	for k, v := range files {
		fsys[k] = &fstest.MapFile{Data: []byte(v)}
	}
	f, err := schema.Load(fsys)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func caYAML(name string, ca *testCA, revoked ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: gitfleet.io/v1\nkind: DeviceCA\nmetadata:\n  name: %s\nspec:\n  certificate: |\n", name)
	for _, l := range strings.Split(strings.TrimSpace(ca.pem), "\n") {
		b.WriteString("    " + l + "\n")
	}
	b.WriteString("  identity:\n    serial: subject.commonName\n  deviceType: board-x\n")
	if len(revoked) > 0 {
		fmt.Fprintf(&b, "  revoked: [%s]\n", strings.Join(revoked, ", "))
	}
	return b.String()
}

// certEnv is a device API on a store, over a TLS server that asks for
// client certificates (as the controller's server does when the live
// commit declares a DeviceCA).
type certEnv struct {
	api     *API
	store   Store
	srv     *httptest.Server
	snap    atomic.Pointer[reconcile.Snapshot]
	plan    *fakePlan
	clock   *fakeClock
	commits int
}

// certStores are the stores the certificate admission tests run on: the
// embedded store, a redis-server and a three-node Redis Cluster (started
// by the test; skipped without redis-server unless CI=true).
var certStores = []struct {
	name string
	open func(t *testing.T, clock *fakeClock) Store
}{
	{"embedded", func(t *testing.T, clock *fakeClock) Store {
		st, err := embedded.Open(filepath.Join(t.TempDir(), embedded.FileName), embedded.Options{NoSync: true, Now: clock.Now})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	}},
	{"redis", func(t *testing.T, clock *fakeClock) Store {
		addr, _ := redistest.Start(t)
		st, err := redis.New(redis.Options{Addrs: []string{addr}, Prefix: "certs", Now: clock.Now})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	}},
	{"redis-cluster", func(t *testing.T, clock *fakeClock) Store {
		st, err := redis.New(redis.Options{Addrs: redistest.StartCluster(t), Cluster: true, Prefix: "certs", Now: clock.Now})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	}},
}

// eachStore runs f on every store of certStores; open gives a new API
// (and server) over the store, which its cases share.
func eachStore(t *testing.T, f func(t *testing.T, open func(*testing.T) *certEnv)) {
	for _, sc := range certStores {
		t.Run(sc.name, func(t *testing.T) {
			clock := &fakeClock{now: time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)}
			st := sc.open(t, clock)
			f(t, func(t *testing.T) *certEnv { return newCertEnv(t, st, clock) })
		})
	}
}

func newCertEnv(t *testing.T, st Store, clock *fakeClock) *certEnv {
	t.Helper()
	e := &certEnv{store: st, plan: &fakePlan{}, clock: clock}
	var err error
	e.api, err = New(Options{
		Store:     st,
		Live:      e.snap.Load,
		Artifacts: &fakeArtifacts{entries: map[string]*artifacts.Entry{}},
		PublicURL: "https://gitfleet.test",
		Compile:   func(*schema.Fleet, []store.RolloutRecord) Planner { return e.plan },
		Now:       clock.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	e.srv = httptest.NewUnstartedServer(e.api.Handler())
	e.srv.TLS = &tls.Config{ClientAuth: tls.RequestClientCert}
	e.srv.StartTLS()
	t.Cleanup(e.srv.Close)
	return e
}

func (e *certEnv) setCAFleet(f *schema.Fleet) {
	e.commits++
	e.snap.Store(&reconcile.Snapshot{Commit: store.CommitRecord{SHA: fmt.Sprintf("%040x", e.commits)}, Fleet: f})
}

// do sends a request presenting cert (and its key, signer) when cert is
// set; a new connection for every request.
func (e *certEnv) do(t *testing.T, cert *x509.Certificate, signer crypto.Signer, method, path, token string, body []byte, hdr map[string]string) (int, string) {
	t.Helper()
	cfg := &tls.Config{RootCAs: e.srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{{Certificate: [][]byte{cert.Raw}, PrivateKey: signer, Leaf: cert}}
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true}}
	req, _ := http.NewRequest(method, e.srv.URL+path, bytes.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// authWith posts d's signed auth request presenting cert (whose key is
// certKey); on 200 d keeps the token.
func (e *certEnv) authWith(t *testing.T, d *testDevice, cert *x509.Certificate, certKey crypto.Signer) (int, string) {
	t.Helper()
	body := d.authBody()
	code, b := e.do(t, cert, certKey, http.MethodPost, "/api/devices/v1/authentication/auth_requests", "", body,
		map[string]string{"X-MEN-Signature": d.sign(body), "Content-Type": "application/json"})
	if code == http.StatusOK {
		d.token = b
	}
	return code, b
}

func (e *certEnv) poll(t *testing.T, d *testDevice, cert *x509.Certificate) (int, string) {
	t.Helper()
	return e.do(t, cert, d.signer, http.MethodPost, "/api/devices/v2/deployments/device/deployments/next", d.token,
		[]byte(`{"device_provides":{"device_type":"board-x","artifact_name":"factory"}}`), map[string]string{"Content-Type": "application/json"})
}

// TestCertAdmission: a device with a certificate of a DeviceCA, signing
// with the certificate's key, is admitted without a Device manifest, under
// the certificate's name and identity; a serial revoked by a later commit
// is refused at the next call with the token it holds, and again when it
// authenticates, with a device.refused event. On the embedded store, Redis
// and a three-node Redis Cluster.
func TestCertAdmission(t *testing.T) {
	eachStore(t, func(t *testing.T, open func(*testing.T) *certEnv) { testCertAdmission(t, open(t)) })
}

func testCertAdmission(t *testing.T, e *certEnv) {
	ca := newTestCA(t, "Factory A")
	e.setCAFleet(loadCAFleet(t, map[string]string{"ca.yaml": caYAML("factory-a", ca)}))
	d := newDevice(t, "ecdsa", map[string]any{"serial": "SN0001"})
	cert := ca.issue(t, d.signer.Public(), "SN0001", 0x1234, time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))

	// Without its certificate the device is merely pending.
	if code, _ := e.authWith(t, d, nil, nil); code != http.StatusUnauthorized {
		t.Fatalf("without certificate: %d, want 401", code)
	}
	if code, b := e.authWith(t, d, cert, d.signer); code != http.StatusOK {
		t.Fatalf("with certificate: %d %s", code, b)
	}
	var seen string
	e.plan.route = func(dev *rollout.Device) (store.GenerationRef, rollout.Reason, bool) {
		seen = fmt.Sprintf("%s %v", dev.ID, dev.Identity)
		return store.GenerationRef{}, rollout.ReasonNotTargeted, false
	}
	if code, b := e.poll(t, d, cert); code != http.StatusNoContent {
		t.Fatalf("poll: %d %s", code, b)
	}
	if seen != "factory-a-SN0001 map[serial:SN0001]" {
		t.Errorf("the rollout engine saw %q", seen)
	}
	rec, err := e.store.Device(ctx(), d.id())
	if err != nil || rec.Status != store.DeviceAccepted || rec.KeyFingerprint != d.fingerprint() {
		t.Fatalf("store record %+v, %v", rec, err)
	}
	// The token works without presenting the certificate again (a
	// resumed or proxied connection); revocation is by the token.
	if code, _ := e.poll(t, d, nil); code != http.StatusNoContent {
		t.Fatalf("poll without certificate: %d", code)
	}

	// A commit revokes the serial: the token it holds is refused, and so
	// is authenticating again.
	e.setCAFleet(loadCAFleet(t, map[string]string{"ca.yaml": caYAML("factory-a", ca, `"0x1234"`)}))
	if code, _ := e.poll(t, d, cert); code != http.StatusUnauthorized {
		t.Fatalf("poll after revocation: %d, want 401", code)
	}
	old := d.token
	if code, b := e.authWith(t, d, cert, d.signer); code != http.StatusUnauthorized || !strings.Contains(b, "serial 0x1234 of DeviceCA factory-a is revoked") {
		t.Fatalf("auth after revocation: %d %s", code, b)
	}
	if d.token != old {
		t.Fatal("a token was issued")
	}
	evs, err := e.store.RecentEvents(ctx(), 100)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, ev := range evs {
		if ev.Kind == schema.EventDeviceRefused && ev.Subject == d.id() && strings.Contains(ev.Message, "revoked") {
			found = true
		}
	}
	if !found {
		t.Errorf("no device.refused event: %+v", evs)
	}
	// Removing the DeviceCA from Git refuses its tokens too.
	e.setCAFleet(loadCAFleet(t, map[string]string{"ca.yaml": caYAML("factory-a", ca)}))
	if code, _ := e.authWith(t, d, cert, d.signer); code != http.StatusOK {
		t.Fatalf("auth after un-revoking: %d", code)
	}
	e.setCAFleet(&schema.Fleet{})
	if code, _ := e.poll(t, d, nil); code != http.StatusUnauthorized {
		t.Fatalf("poll after the DeviceCA was removed: %d, want 401", code)
	}
}

// TestAttackCertAdmission: each way of misusing a certificate is refused
// with 401 and changes nothing in the store.
func TestAttackCertAdmission(t *testing.T) {
	valid := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	cases := []struct {
		name string
		// make returns the device and the certificate and key it presents.
		make func(t *testing.T, ca, other *testCA) (*testDevice, *x509.Certificate, crypto.Signer)
		want string
	}{
		{"certificate of another CA", func(t *testing.T, ca, other *testCA) (*testDevice, *x509.Certificate, crypto.Signer) {
			d := newDevice(t, "ecdsa", map[string]any{"serial": "SN1"})
			return d, other.issue(t, d.signer.Public(), "SN1", 7, valid), d.signer
		}, "not a valid certificate of any DeviceCA"},
		{"expired certificate", func(t *testing.T, ca, _ *testCA) (*testDevice, *x509.Certificate, crypto.Signer) {
			d := newDevice(t, "ecdsa", map[string]any{"serial": "SN1"})
			return d, ca.issue(t, d.signer.Public(), "SN1", 7, time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)), d.signer
		}, "expired"},
		{"auth request not signed with the certificate's key", func(t *testing.T, ca, _ *testCA) (*testDevice, *x509.Certificate, crypto.Signer) {
			d := newDevice(t, "ecdsa", map[string]any{"serial": "SN1"})
			thief := newDevice(t, "ecdsa", nil)
			// The thief holds a stolen certificate and its key for TLS,
			// but signs the auth request with a key of its own.
			return d, ca.issue(t, thief.signer.Public(), "SN1", 7, valid), thief.signer
		}, "not with the certificate's key"},
		{"valid certificate claiming another identity", func(t *testing.T, ca, _ *testCA) (*testDevice, *x509.Certificate, crypto.Signer) {
			d := newDevice(t, "ecdsa", map[string]any{"serial": "SN2"})
			return d, ca.issue(t, d.signer.Public(), "SN1", 7, valid), d.signer
		}, "is not the identity the certificate holds"},
		{"extra identity attribute", func(t *testing.T, ca, _ *testCA) (*testDevice, *x509.Certificate, crypto.Signer) {
			d := newDevice(t, "ecdsa", map[string]any{"serial": "SN1", "mac": "02:00:00:00:00:01"})
			return d, ca.issue(t, d.signer.Public(), "SN1", 7, valid), d.signer
		}, "is not the identity the certificate holds"},
		{"revoked serial", func(t *testing.T, ca, _ *testCA) (*testDevice, *x509.Certificate, crypto.Signer) {
			d := newDevice(t, "ecdsa", map[string]any{"serial": "SN1"})
			return d, ca.issue(t, d.signer.Public(), "SN1", 0xdead, valid), d.signer
		}, "serial 0xdead of DeviceCA factory-a is revoked"},
	}
	eachStore(t, func(t *testing.T, open func(*testing.T) *certEnv) {
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				e := open(t)
				ca, other := newTestCA(t, "Factory A"), newTestCA(t, "Elsewhere")
				e.setCAFleet(loadCAFleet(t, map[string]string{"ca.yaml": caYAML("factory-a", ca, `"0xDEAD"`)}))
				d, cert, key := tc.make(t, ca, other)
				code, b := e.authWith(t, d, cert, key)
				if code != http.StatusUnauthorized || !strings.Contains(b, tc.want) {
					t.Fatalf("auth: %d %s; want 401 with %q", code, b, tc.want)
				}
				if d.token != "" {
					t.Fatal("a token was issued")
				}
				if _, err := e.store.Device(ctx(), d.id()); !errors.Is(err, store.ErrNotFound) {
					t.Errorf("the store holds a record of the refused device: %v", err)
				}
			})
		}
	})
}

// TestCertRevokedTokenCheckAllocatesNothing: the revocation hook the
// token check calls does not allocate.
func TestCertRevokedTokenCheckAllocatesNothing(t *testing.T) {
	e := newCertEnv(t, certStores[0].open(t, &fakeClock{now: time.Now()}), &fakeClock{now: time.Now()})
	ca := newTestCA(t, "Factory A")
	e.setCAFleet(loadCAFleet(t, map[string]string{"ca.yaml": caYAML("factory-a", ca, `"0x10"`)}))
	claim := certClaim("factory-a", "11")
	if e.api.revokedCert(claim) || !e.api.revokedCert(certClaim("factory-a", "10")) || !e.api.revokedCert("other/11") {
		t.Fatal("revocation answers wrong")
	}
	if n := testing.AllocsPerRun(100, func() { e.api.revokedCert(claim) }); n != 0 {
		t.Errorf("revokedCert allocates %v times", n)
	}
}
