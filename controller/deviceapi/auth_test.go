package deviceapi

import (
	"bytes"
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
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/controller/store"
)

const inventoryPath = "/api/devices/v1/inventory/device/attributes"

// The whole admission story, for each key type the API accepts: unknown →
// pending; a commit accepts it → token; the token works; the device is
// removed from Git → the same token gets 401 and so does a new auth.
func TestAdmissionLifecycle(t *testing.T) {
	for _, alg := range []string{"rsa", "ecdsa", "ed25519"} {
		t.Run(alg, func(t *testing.T) {
			e := newEnv(t)
			d := newDevice(t, alg, map[string]any{"mac": "dc:a6:32:00:00:01", "serial": "A1"})

			// No commit served yet: come back later, nothing recorded.
			if code, _ := d.auth(e); code != http.StatusServiceUnavailable {
				t.Fatalf("auth before any commit: %d, want 503", code)
			}
			if _, err := e.store.Device(ctx(), d.id()); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("recorded before any commit: %v", err)
			}
			e.setFleet(manifest("other", 1, map[string]string{"mac": "x"}, ""))
			if code, h := d.auth(e); code != http.StatusUnauthorized || !strings.Contains(h.Get("WWW-Authenticate"), "Bearer") {
				t.Fatalf("unknown device: %d, want 401 with WWW-Authenticate", code)
			}
			pending, err := e.store.PendingDevices(ctx(), 10)
			if err != nil || len(pending) != 1 {
				t.Fatalf("pending = %v, %v; want the device", pending, err)
			}
			p := pending[0]
			if p.ID != d.id() || p.KeyFingerprint != d.fingerprint() || p.Status != store.DevicePending {
				t.Fatalf("pending record %+v; want id %s key %s", p, d.id(), d.fingerprint())
			}
			if got := InventoryAttributes(p.Identity); got["mac"] != "dc:a6:32:00:00:01" || got["serial"] != "A1" {
				t.Fatalf("pending identity %s", p.Identity)
			}

			// A commit accepts it by identity and key.
			e.setFleet(manifest("lab-1", 3, map[string]string{"mac": "dc:a6:32:00:00:01", "serial": "A1"}, d.fingerprint()))
			body := d.authBody()
			code, tok, h := e.do(http.MethodPost, "/api/devices/v1/authentication/auth_requests", "", body,
				map[string]string{"X-MEN-Signature": d.sign(body)})
			if code != http.StatusOK || h.Get("Content-Type") != "application/jwt" || strings.Count(string(tok), ".") != 2 {
				t.Fatalf("accepted device: %d %q %q", code, h.Get("Content-Type"), tok)
			}
			d.token = string(tok)
			if pending, _ := e.store.PendingDevices(ctx(), 10); len(pending) != 0 {
				t.Fatalf("still pending after acceptance: %v", pending)
			}
			rec, err := e.store.Device(ctx(), d.id())
			if err != nil || rec.Status != store.DeviceAccepted {
				t.Fatalf("device record %+v, %v", rec, err)
			}

			// The token works.
			inv := []byte(`[{"name":"device_type","value":"qemux86-64"}]`)
			if code, b, _ := e.do(http.MethodPatch, inventoryPath, d.token, inv, nil); code != http.StatusOK {
				t.Fatalf("inventory with a fresh token: %d %s", code, b)
			}

			// A commit that only changes something else keeps it working.
			e.setFleet(manifest("lab-1", 3, map[string]string{"mac": "dc:a6:32:00:00:01", "serial": "A1"}, d.fingerprint()),
				manifest("lab-2", 9, map[string]string{"mac": "other"}, ""))
			if code, _, _ := e.do(http.MethodPatch, inventoryPath, d.token, inv, nil); code != http.StatusOK {
				t.Fatalf("after an unrelated commit: %d", code)
			}

			// Removed from Git: the token stops working at once.
			e.setFleet(manifest("lab-2", 9, map[string]string{"mac": "other"}, ""))
			if code, _, _ := e.do(http.MethodPatch, inventoryPath, d.token, inv, nil); code != http.StatusUnauthorized {
				t.Fatalf("token of a removed device: %d, want 401", code)
			}
			if code, _ := d.auth(e); code != http.StatusUnauthorized {
				t.Fatalf("auth of a removed device: %d, want 401", code)
			}
		})
	}
}

// Admission by identity (trust on first use), by key alone, and a key
// manifest whose identity differs.
func TestAdmissionRule(t *testing.T) {
	e := newEnv(t)
	d := newDevice(t, "ecdsa", map[string]any{"mac": "01", "cpu": "a,b"})
	other := newDevice(t, "ecdsa", map[string]any{"mac": "01"})
	impostor := newDevice(t, "ecdsa", map[string]any{"mac": "01"})
	cases := []struct {
		name  string
		fleet []string // "identity", "key", "key+wrong-identity", "subset"
		want  int
	}{
		{"identity equal", []string{"identity"}, http.StatusOK},
		{"key alone", []string{"key"}, http.StatusOK},
		{"key with another identity", []string{"key+wrong-identity"}, http.StatusUnauthorized},
		{"identity subset is not equal", []string{"subset"}, http.StatusUnauthorized},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			switch tc.fleet[0] {
			case "identity":
				e.setFleet(manifest("d", 1, map[string]string{"mac": "01", "cpu": "a,b"}, ""))
			case "key":
				e.setFleet(manifest("d", 1, nil, strings.ToUpper(d.fingerprint())))
			case "key+wrong-identity":
				e.setFleet(manifest("d", 1, map[string]string{"mac": "02"}, d.fingerprint()))
			case "subset":
				e.setFleet(manifest("d", 1, map[string]string{"mac": "01"}, ""))
			}
			if code, _ := d.auth(e); code != tc.want {
				t.Fatalf("auth: %d, want %d", code, tc.want)
			}
		})
	}
	// The trust-on-first-use manifest {"mac": "01"} admits the device
	// whose identity is exactly that, with the first key it brings; then
	// that key only.
	e.setFleet(manifest("d", 1, map[string]string{"mac": "01"}, ""))
	if code, _ := other.auth(e); code != http.StatusOK {
		t.Fatalf("exact identity, first key: %d", code)
	}
	if code, _ := other.auth(e); code != http.StatusOK {
		t.Fatalf("exact identity, bound key again: %d", code)
	}
	if code, _ := impostor.auth(e); code != http.StatusUnauthorized {
		t.Fatalf("exact identity, another key: %d, want 401", code)
	}
}

// TestAttackAuthRequests: forged, malformed and oversized authentication
// requests are refused and record nothing.
func TestAttackAuthRequests(t *testing.T) {
	e := newEnv(t)
	d := newDevice(t, "rsa", map[string]any{"mac": "01"})
	e.setFleet(manifest("d", 1, map[string]string{"mac": "01"}, ""))
	impostor := newDevice(t, "rsa", map[string]any{"mac": "01"})
	good := d.authBody()
	weak, _ := rsa.GenerateKey(rand.Reader, 1024)
	weakDER, _ := x509.MarshalPKIXPublicKey(&weak.PublicKey)
	weakBody, _ := json.Marshal(AuthRequest{IDData: `{"mac":"01"}`, PubKey: string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: weakDER}))})

	cases := []struct {
		name string
		body []byte
		sig  string
		want int
	}{
		{"signed by another key → 401", good, impostor.sign(good), http.StatusUnauthorized},
		{"no signature → 401", good, "", http.StatusUnauthorized},
		{"signature not base64 → 401", good, "%%%", http.StatusUnauthorized},
		{"body changed after signing → 401", append(bytes.Clone(good[:len(good)-1]), ' ', '\n'), d.sign(good), http.StatusUnauthorized},
		{"body not JSON → 400", []byte("hello"), d.sign([]byte("hello")), http.StatusBadRequest},
		{"id_data not an object → 400", mustAuthBody(t, `"mac"`, d.pubPEM()), "", http.StatusBadRequest},
		{"id_data nested object → 400", mustAuthBody(t, `{"a":{"b":1}}`, d.pubPEM()), "", http.StatusBadRequest},
		{"id_data empty → 400", mustAuthBody(t, `{}`, d.pubPEM()), "", http.StatusBadRequest},
		{"pubkey garbage → 400", mustAuthBody(t, `{"mac":"01"}`, "not a key"), "", http.StatusBadRequest},
		{"RSA key of 1024 bits → 400", weakBody, "", http.StatusBadRequest},
		{"trailing data after the JSON → 400", append(bytes.Clone(good), []byte("{}")...), "", http.StatusBadRequest},
		{"oversized body → 413", bytes.Repeat([]byte(" "), MaxAuthBody+1), "", http.StatusRequestEntityTooLarge},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			hdr := map[string]string{}
			if tc.sig != "" {
				hdr["X-MEN-Signature"] = tc.sig
			}
			code, b, _ := e.do(http.MethodPost, "/api/devices/v1/authentication/auth_requests", "", tc.body, hdr)
			if code != tc.want {
				t.Fatalf("%d %s, want %d", code, b, tc.want)
			}
			var msg map[string]string
			if json.Unmarshal(b, &msg) != nil || msg["error"] == "" {
				t.Fatalf("error body %q is not {\"error\": …}", b)
			}
		})
	}
	// None of them recorded anything.
	if _, err := e.store.Device(ctx(), d.id()); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a refused request recorded the device: %v", err)
	}
	if code, _ := d.auth(e); code != http.StatusOK {
		t.Fatalf("good request after refusals: %d", code)
	}
}

func mustAuthBody(t *testing.T, idData, pub string) []byte {
	b, err := json.Marshal(AuthRequest{IDData: idData, PubKey: pub})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestAttackForgedTokens: device tokens that were forged, tampered with,
// signed with another algorithm or key, or expired are refused.
func TestAttackForgedTokens(t *testing.T) {
	e := newEnv(t)
	d := newDevice(t, "ed25519", map[string]any{"mac": "01"})
	e.setFleet(manifest("d", 1, map[string]string{"mac": "01"}, ""))
	if code, _ := d.auth(e); code != http.StatusOK {
		t.Fatal(code)
	}
	inv := []byte(`[{"name":"a","value":"b"}]`)
	call := func(tok string) int {
		code, _, _ := e.do(http.MethodPut, inventoryPath, tok, inv, nil)
		return code
	}
	if c := call(d.token); c != http.StatusOK {
		t.Fatalf("fresh token: %d", c)
	}
	key, _ := e.api.tokenKey(ctx())
	claims, err := verifyToken(key, d.token, e.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	if claims.Subject != d.id() || claims.Key != d.fingerprint() || !claims.Device || claims.ID == "" ||
		claims.Expires-claims.IssuedAt != int64((7*24*time.Hour)/time.Second) {
		t.Fatalf("claims %+v", claims)
	}
	otherKey := bytes.Repeat([]byte{7}, 32)
	wrongKey, _ := signToken(otherKey, claims)
	parts := strings.Split(d.token, ".")
	tampered := claims
	tampered.Identity = Attributes{"mac": "02"}
	tp, _ := json.Marshal(tampered)
	none := b64([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + parts[1] + "."
	hs512 := b64([]byte(`{"alg":"HS512","typ":"JWT"}`)) + "." + parts[1] + "." + parts[2]

	for name, tok := range map[string]string{
		"token signed with another key → 401":           wrongKey,
		"payload changed (another identity) → 401":      parts[0] + "." + b64(tp) + "." + parts[2],
		"alg none, no signature → 401":                  none,
		"header naming another algorithm (HS512) → 401": hs512,
		"token of two parts → 401":                      parts[0] + "." + parts[1],
		"garbage token → 401":                           "x",
		"signature replaced by zero bytes → 401":        parts[0] + "." + parts[1] + "." + base64.RawURLEncoding.EncodeToString(make([]byte, 32)),
		"no token → 401":                                "",
	} {
		t.Run(name, func(t *testing.T) {
			if c := call(tok); c != http.StatusUnauthorized {
				t.Errorf("%d, want 401", c)
			}
		})
	}

	// Expired: a week and a second later.
	e.clock.Add(7*24*time.Hour + time.Second)
	t.Run("expired token → 401", func(t *testing.T) {
		if c := call(d.token); c != http.StatusUnauthorized {
			t.Fatalf("expired token: %d, want 401", c)
		}
	})
	if code, _ := d.auth(e); code != http.StatusOK || call(d.token) != http.StatusOK {
		t.Fatalf("re-authentication after expiry: %d", code)
	}
}

// Two API instances on one store (two replicas) accept each other's tokens.
func TestTokensAcrossReplicas(t *testing.T) {
	e := newEnv(t)
	d := newDevice(t, "ecdsa", map[string]any{"mac": "01"})
	e.setFleet(manifest("d", 1, map[string]string{"mac": "01"}, ""))
	if code, _ := d.auth(e); code != http.StatusOK {
		t.Fatal(code)
	}
	other, err := New(Options{Store: e.store, Live: e.snap.Load, Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	k1, _ := e.api.tokenKey(ctx())
	k2, err := other.tokenKey(ctx())
	if err != nil || !bytes.Equal(k1, k2) {
		t.Fatalf("replicas disagree on the token key: %v", err)
	}
	if _, err := verifyToken(k2, d.token, e.clock.Now()); err != nil {
		t.Fatal(err)
	}
}

func TestDeviceIDStable(t *testing.T) {
	a, _ := decodeIdentity([]byte(`{"b":"2","a":["x","y"],"n":3}`))
	b, _ := decodeIdentity([]byte(`{ "n": 3, "a": ["x", "y"], "b": "2" }`))
	if a.ID() != b.ID() || len(a.ID()) != 32 {
		t.Fatalf("IDs differ: %s %s", a.ID(), b.ID())
	}
	if got := string(a.Canonical()); got != `{"a":["x","y"],"b":"2","n":3}` {
		t.Fatalf("canonical %s", got)
	}
	// No flattening: the list is not the string "x,y".
	flat, _ := decodeIdentity([]byte(`{"b":"2","a":"x,y","n":"3"}`))
	if flat.ID() == a.ID() || flat.Typed || !a.Typed {
		t.Fatalf("typed and string identities collide: %s %v %v", flat.ID(), flat.Typed, a.Typed)
	}
	// An identity of strings keeps the ID it always had.
	if flat.ID() != DeviceID(flat.Strings) {
		t.Fatalf("string identity ID %s, DeviceID %s", flat.ID(), DeviceID(flat.Strings))
	}
}

// Signature encodings other clients use: ECDSA as raw r‖s, Ed25519 over
// the body's SHA-256.
func TestSignatureVariants(t *testing.T) {
	body := []byte(`{"id_data":"{}"}`)
	sum := sha256.Sum256(body)
	ek, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	r, s, _ := ecdsa.Sign(rand.Reader, ek, sum[:])
	raw := make([]byte, 64)
	r.FillBytes(raw[:32])
	s.FillBytes(raw[32:])
	if err := verifySignature(&ek.PublicKey, body, base64.StdEncoding.EncodeToString(raw)); err != nil {
		t.Errorf("ECDSA r‖s: %v", err)
	}
	_, edk, _ := ed25519.GenerateKey(rand.Reader)
	if err := verifySignature(edk.Public(), body, base64.StdEncoding.EncodeToString(ed25519.Sign(edk, sum[:]))); err != nil {
		t.Errorf("Ed25519 over the digest: %v", err)
	}
	if err := verifySignature(edk.Public(), body, base64.StdEncoding.EncodeToString(ed25519.Sign(edk, []byte("other")))); err == nil {
		t.Error("Ed25519 over other bytes verified")
	}
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	der, _ := x509.MarshalPKIXPublicKey(&p384.PublicKey)
	if _, _, err := parseDeviceKey(string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))); !errors.Is(err, ErrBadRequest) {
		t.Errorf("P-384 key: %v, want refused", err)
	}
}
