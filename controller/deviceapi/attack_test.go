package deviceapi

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/controller/clientip"
	"github.com/gitfleet/gitfleet/controller/reconcile"
	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gitfleet/gitfleet/controller/store/redis"
	"github.com/gitfleet/gitfleet/controller/store/redistest"
	"github.com/gitfleet/gitfleet/schema"
	goredis "github.com/redis/go-redis/v9"
	"golang.org/x/time/rate"
)

// TestAttackDeviceKeys: a device's key is bound, and nothing an
// unauthenticated caller sends changes what the store holds about a device.
func TestAttackDeviceKeys(t *testing.T) {
	mac := map[string]string{"mac": "02:00:00:00:00:0a"}
	cases := []struct {
		name     string
		manifest func(owner *testDevice) schema.Device
		// attacker's id_data; nil: the owner's identity
		identity map[string]any
		wantCode int
		// wantConflict: the attacker's key is listed as a conflict
		wantConflict bool
	}{
		{"second key for a trust-on-first-use device → 401, key stays, conflict listed",
			func(*testDevice) schema.Device { return manifest("dev-a", 1, mac, "") }, nil, http.StatusUnauthorized, true},
		{"attacker key with a pinned device's identity → 401, record unchanged, conflict listed",
			func(o *testDevice) schema.Device { return manifest("dev-a", 1, mac, o.fingerprint()) }, nil, http.StatusUnauthorized, true},
		{"list-valued mac for a string identity → 401, not admitted",
			func(*testDevice) schema.Device { return manifest("dev-a", 1, mac, "") },
			map[string]any{"mac": []any{"02:00:00:00:00:0a"}}, http.StatusUnauthorized, false},
		{"number-valued identity for a string identity → 401, not admitted",
			func(*testDevice) schema.Device { return manifest("dev-a", 1, map[string]string{"serial": "7"}, "") },
			map[string]any{"serial": 7}, http.StatusUnauthorized, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			owner := newDevice(t, "ecdsa", map[string]any{"mac": mac["mac"], "serial": "7"})
			owner.identity = map[string]any{}
			for k, v := range tc.manifest(owner).Spec.Identity {
				owner.identity[k] = v
			}
			e.setFleet(tc.manifest(owner))
			if code, _ := owner.auth(e); code != http.StatusOK {
				t.Fatalf("owner: %d, want 200", code)
			}
			inv := []byte(`[{"name":"artifact_name","value":"rel-1"}]`)
			if code, b, _ := e.do(http.MethodPut, inventoryPath, owner.token, inv, nil); code != http.StatusOK {
				t.Fatalf("owner inventory: %d %s", code, b)
			}
			before, err := e.store.Device(ctx(), owner.id())
			if err != nil {
				t.Fatal(err)
			}
			e.clock.Add(time.Second)

			attacker := newDevice(t, "ecdsa", owner.identity)
			if tc.identity != nil {
				attacker.identity = tc.identity
			}
			if code, _ := attacker.auth(e); code != tc.wantCode {
				t.Fatalf("attacker: %d, want %d", code, tc.wantCode)
			}
			after, err := e.store.Device(ctx(), owner.id())
			if err != nil || !bytes.Equal(after.Inventory, before.Inventory) || after.KeyFingerprint != before.KeyFingerprint ||
				after.Status != before.Status || !after.LastSeen.Equal(before.LastSeen) {
				t.Fatalf("owner's record changed:\nbefore %+v\nafter  %+v (%v)", before, after, err)
			}
			conflicts, err := e.store.Conflicts(ctx(), 10)
			if err != nil {
				t.Fatal(err)
			}
			listed := len(conflicts) == 1 && conflicts[0].KeyFingerprint == attacker.fingerprint() && conflicts[0].BoundKey == owner.fingerprint()
			if listed != tc.wantConflict {
				t.Fatalf("conflicts %+v, want listed %v", conflicts, tc.wantConflict)
			}
			// The owner still gets in.
			if code, _ := owner.auth(e); code != http.StatusOK {
				t.Fatalf("owner after the attack: %d, want 200", code)
			}
		})
	}
}

// TestAttackUnauthenticatedFlood: what callers without an accepted key can
// make the controller store is bounded, on a real redis-server, and
// accepted devices keep working when the bound is reached.
func TestAttackUnauthenticatedFlood(t *testing.T) {
	addr, _ := redistest.Start(t)
	const maxPending = 1_000
	st, err := redis.New(redis.Options{Addrs: []string{addr}, Prefix: "flood", Bounds: store.Bounds{MaxPending: maxPending}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	pinned := newDevice(t, "ed25519", map[string]any{"mac": "02:00:00:00:00:01"})
	tofu := newDevice(t, "ed25519", map[string]any{"mac": "02:00:00:00:00:02"})
	var snap reconcile.Snapshot
	snap.Commit.SHA = fmt.Sprintf("%040x", 1)
	snap.Fleet = &schema.Fleet{Devices: []schema.Device{
		manifest("pinned", 1, pinned.identityStrings(), pinned.fingerprint()),
		manifest("tofu", 2, tofu.identityStrings(), ""),
	}}
	newAPIWith := func(r rate.Limit, clients clientip.Resolver) http.Handler {
		api, err := New(Options{Store: st, Live: func() *reconcile.Snapshot { return &snap }, UnknownRate: r, UnknownBurst: 20, Clients: clients})
		if err != nil {
			t.Fatal(err)
		}
		return api.Handler()
	}
	newAPI := func(r rate.Limit) http.Handler { return newAPIWith(r, clientip.Resolver{}) }
	_, attackerKey, _ := ed25519.GenerateKey(rand.Reader)
	attack := func(h http.Handler, i int, source string) int {
		return authDirect(t, h, attackerKey, map[string]any{"mac": fmt.Sprintf("flood-%d", i)}, source)
	}
	attackVia := func(h http.Handler, i int, source, xff string) int {
		return authVia(t, h, attackerKey, map[string]any{"mac": fmt.Sprintf("flood-xff-%d", i)}, source, xff)
	}

	t.Run("a new X-Forwarded-For on every request to dodge the per-source limit, no proxy trusted → ignored, 429", func(t *testing.T) {
		h := newAPI(DefaultUnknownRate)
		for i := range 20 {
			attackVia(h, i, "192.0.2.5:1000", fmt.Sprintf("203.0.113.%d", i))
		}
		if code := attackVia(h, 20, "192.0.2.5:1000", "203.0.113.99"); code != http.StatusTooManyRequests {
			t.Fatalf("beyond the burst: %d, want 429", code)
		}
	})
	t.Run("behind a trusted proxy, a client beyond its burst → 429, another client through the same proxy → 401 (pending)", func(t *testing.T) {
		trusted, _ := clientip.ParseTrusted([]string{"10.0.0.0/8"})
		h := newAPIWith(DefaultUnknownRate, clientip.Resolver{Trusted: trusted})
		for i := range 20 {
			attackVia(h, 100+i, "10.0.0.1:1000", "203.0.113.1")
		}
		if code := attackVia(h, 120, "10.0.0.1:1000", "203.0.113.1"); code != http.StatusTooManyRequests {
			t.Fatalf("client beyond its burst: %d, want 429", code)
		}
		if code := attackVia(h, 121, "10.0.0.1:1000", "203.0.113.2"); code != http.StatusUnauthorized {
			t.Fatalf("another client through the proxy: %d, want 401", code)
		}
	})

	t.Run("one source beyond its burst → 429, nothing recorded", func(t *testing.T) {
		h := newAPI(DefaultUnknownRate)
		for i := range 20 {
			if code := attack(h, i, "192.0.2.1:1000"); code != http.StatusUnauthorized {
				t.Fatalf("request %d within the burst: %d, want 401 (pending)", i, code)
			}
		}
		if code := attack(h, 20, "192.0.2.1:1001"); code != http.StatusTooManyRequests {
			t.Fatalf("beyond the burst: %d, want 429", code)
		}
		if _, err := st.Device(ctx(), identityID(t, map[string]any{"mac": "flood-20"})); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("refused request recorded: %v", err)
		}
		if code := attack(h, 21, "192.0.2.2:1000"); code != http.StatusUnauthorized {
			t.Fatalf("another source: %d, want 401", code)
		}
	})

	t.Run("10,300 distinct identities → at most MaxPending device keys (SCAN), then 503", func(t *testing.T) {
		h := newAPI(rate.Inf) // the store's bound alone
		full := 0
		for i := range 10_300 {
			switch code := attack(h, 1000+i, "198.51.100.7:1"); code {
			case http.StatusUnauthorized:
			case http.StatusServiceUnavailable:
				full++
			default:
				t.Fatalf("request %d: %d", i, code)
			}
		}
		if n := countKeys(t, addr, "flood:{d:*"); n > maxPending {
			t.Fatalf("%d device keys in Redis after the flood, want ≤ %d", n, maxPending)
		}
		if full < 10_300-maxPending {
			t.Fatalf("%d refused as full, want ≥ %d", full, 10_300-maxPending)
		}
	})

	t.Run("accepted devices authenticate while the pending records are full → 200", func(t *testing.T) {
		h := newAPI(rate.Inf)
		for _, d := range []*testDevice{pinned, tofu} {
			if code := authDirect(t, h, d.signer.(ed25519.PrivateKey), d.identity, "203.0.113.9:1"); code != http.StatusOK {
				t.Fatalf("%v: %d, want 200", d.identity, code)
			}
		}
	})
}

// TestAttackLogFlood: a device cannot flood the controller's log with
// deployment log uploads; over its rate its logs are dropped (answered
// 204, so the status report the client sends next is not held back).
func TestAttackLogFlood(t *testing.T) {
	e, d, _ := deploymentEnv(t, 10)
	var logs bytes.Buffer
	e.api.log = slog.New(slog.NewTextHandler(&syncWriter{w: &logs}, nil))
	if code, b, _ := e.do(http.MethodPost, nextV2, d.token, v2Body("hello-1.0", "qemux86-64"), nil); code != http.StatusOK {
		t.Fatalf("next: %d %s", code, b)
	}
	path := logPath(DeploymentID(gen1))
	upload := func(marker string) int {
		body := []byte(`{"messages":[{"timestamp":"t","level":"error","message":"` + marker + `"}]}`)
		code, _, _ := e.do(http.MethodPut, path, d.token, body, nil)
		return code
	}
	for i := range DefaultLogBurst {
		if code := upload(fmt.Sprintf("within-burst-%d", i)); code != http.StatusNoContent {
			t.Fatalf("upload %d within the burst: %d", i, code)
		}
	}
	t.Run("log uploads beyond the per-device burst → 204, not written to the controller's log", func(t *testing.T) {
		for i := range 50 {
			if code := upload(fmt.Sprintf("flood-%d", i)); code != http.StatusNoContent {
				t.Fatalf("upload beyond the burst: %d, want 204", code)
			}
		}
		out := logs.String()
		if !strings.Contains(out, "within-burst-0") {
			t.Fatalf("uploads within the burst were not logged:\n%s", out)
		}
		if strings.Contains(out, "flood-") {
			t.Fatalf("uploads beyond the burst reached the log:\n%s", out)
		}
		if n := strings.Count(out, "deployment log dropped"); n != 1 {
			t.Fatalf("%d 'dropped' lines for 50 dropped uploads, want 1", n)
		}
	})
	t.Run("the status report after a dropped log → accepted", func(t *testing.T) {
		if code, b, _ := e.do(http.MethodPut, statusPath(DeploymentID(gen1)), d.token, []byte(`{"status":"failure"}`), nil); code != http.StatusNoContent {
			t.Fatalf("status: %d %s", code, b)
		}
	})
}

// syncWriter serialises writes to w.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func (d *testDevice) identityStrings() map[string]string {
	out := map[string]string{}
	for k, v := range d.identity {
		out[k] = v.(string)
	}
	return out
}

func identityID(t *testing.T, identity map[string]any) string {
	b, _ := json.Marshal(identity)
	id, err := decodeIdentity(b)
	if err != nil {
		t.Fatal(err)
	}
	return id.ID()
}

// authDirect sends a signed auth request straight to h from source.
func authDirect(t *testing.T, h http.Handler, key ed25519.PrivateKey, identity map[string]any, source string) int {
	t.Helper()
	return authVia(t, h, key, identity, source, "")
}

// authVia is authDirect with an X-Forwarded-For header (when not "").
func authVia(t *testing.T, h http.Handler, key ed25519.PrivateKey, identity map[string]any, source, xff string) int {
	t.Helper()
	d := &testDevice{t: t, signer: key, alg: "ed25519", identity: identity}
	body := d.authBody()
	req := httptest.NewRequest(http.MethodPost, "/api/devices/v1/authentication/auth_requests", bytes.NewReader(body))
	req.RemoteAddr = source
	if xff != "" {
		req.Header.Set("X-Forwarded-For", xff)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-MEN-Signature", base64.StdEncoding.EncodeToString(ed25519.Sign(key, body)))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Code
}

func countKeys(t *testing.T, addr, pattern string) int {
	c := goredis.NewClient(&goredis.Options{Addr: addr})
	defer c.Close()
	n := 0
	iter := c.Scan(t.Context(), 0, pattern, 1000).Iterator()
	for iter.Next(t.Context()) {
		n++
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	return n
}
