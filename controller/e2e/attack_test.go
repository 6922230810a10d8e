package e2e

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/controller/gitsource/gittest"
	goredis "github.com/redis/go-redis/v9"
)

// TestAttackThroughServe tries the attacks of the security review against
// the real `gitfleet serve` (Redis store, fleet repository over HTTPS), so
// that the defences are proven wired through the binary's flags and
// defaults, not only in their packages. Each subtest is one attack and the
// refusal expected; they share one controller and run in order.
func TestAttackThroughServe(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: runs gitfleet serve and Redis")
	}
	work := t.TempDir()
	storeDir := filepath.Join(work, "artifact-store")
	priv, pub := generateKey(t)
	const maxPending = 40
	env, c := agentFleet(t, storeDir, map[string][]byte{"release": pub},
		"--max-pending-devices", fmt.Sprint(maxPending),
		// The flood below comes from one address; the per-source limit
		// has its own subtest, so make room here.
		"--device-auth-rate", "1000", "--device-auth-burst", "1000",
		"--policy-timeout", "2s")
	rel := WriteRootfsArtifact(t, storeDir, "rel-2", TestImage("rel-2", 64<<10, true), priv)

	devA := NewSimDevice("https://"+c.Addr, c.client, "dev-a", map[string]string{"mac": "02:00:00:00:00:0a"}, AgentDeviceType, "rel-1", nil)
	devB := NewSimDevice("https://"+c.Addr, c.client, "dev-b", map[string]string{"mac": "02:00:00:00:00:0b"}, AgentDeviceType, "rel-1", nil)
	devices := func(withB bool) map[string]string {
		b := fmt.Sprintf("    - name: dev-b\n      identity: {mac: %q}\n      publicKeySHA256: %s\n      deviceType: %s\n",
			devB.Identity["mac"], devB.Fingerprint(), AgentDeviceType)
		if !withB {
			b = ""
		}
		return map[string]string{"devices/lab.yaml": fmt.Sprintf(`apiVersion: gitfleet.io/v1
kind: Device
metadata:
  name: lab
spec:
  devices:
    - name: dev-a
      identity: {mac: %q}
      trustOnFirstUse: true
      deviceType: %s
%s`, devA.Identity["mac"], AgentDeviceType, b)}
	}
	fleet := merge(devices(true), ArtifactManifest(rel, "2.0.0", "release"), RolloutManifest("rel-2", "rel-2", []string{"dev-a", "dev-b"}, false))
	env.CommitAndServe(c, fleet, "two lab devices and a rollout")
	ctx := t.Context()
	for _, d := range []*SimDevice{devA, devB} {
		if err := d.Authenticate(ctx); err != nil {
			t.Fatalf("%s: %v", d.Name, err)
		}
	}
	dep, err := devB.Next(ctx)
	if err != nil || dep == nil {
		t.Fatalf("dev-b's deployment: %v %v", dep, err)
	}
	uriB := dep.Artifact.Source.URI

	t.Run("unknown path → 404 JSON; wrong method → 405 JSON with Allow", func(t *testing.T) {
		for _, tc := range []struct {
			method, path string
			want         int
		}{
			{http.MethodGet, "/no/such/path", http.StatusNotFound},
			{http.MethodGet, "/api/devices/v1/authentication/auth_requests", http.StatusMethodNotAllowed},
			{http.MethodDelete, "/hooks", http.StatusMethodNotAllowed},
		} {
			req, _ := http.NewRequestWithContext(ctx, tc.method, "https://"+c.Addr+tc.path, nil)
			resp, err := c.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			var msg map[string]any
			if resp.StatusCode != tc.want || json.Unmarshal(b, &msg) != nil || len(msg) == 0 {
				t.Errorf("%s %s: HTTP %d %q, want %d with a JSON error", tc.method, tc.path, resp.StatusCode, b, tc.want)
			}
			if tc.want == http.StatusMethodNotAllowed && resp.Header.Get("Allow") == "" {
				t.Errorf("%s %s: 405 without Allow", tc.method, tc.path)
			}
		}
	})

	t.Run("second key claiming a trust-on-first-use device's identity → 401, listed as a conflict, the device keeps working", func(t *testing.T) {
		_, key, _ := ed25519.GenerateKey(rand.Reader)
		impostor := NewSimDevice("https://"+c.Addr, c.client, "impostor", devA.Identity, AgentDeviceType, "rel-1", key)
		if err := impostor.Authenticate(ctx); !errors.Is(err, ErrPending) {
			t.Fatalf("impostor: %v, want 401", err)
		}
		var out struct {
			Conflicts []map[string]any `json:"conflicts"`
		}
		if err := c.getJSON("/api/management/v1/devices/conflicts", &out); err != nil {
			t.Fatal(err)
		}
		if b, _ := json.Marshal(out); !bytes.Contains(b, []byte(impostor.Fingerprint())) || !bytes.Contains(b, []byte(devA.Fingerprint())) {
			t.Fatalf("conflicts do not name both keys: %s", b)
		}
		if err := devA.Authenticate(ctx); err != nil {
			t.Fatalf("dev-a after the impostor: %v", err)
		}
		var rec map[string]any
		if err := c.getJSON("/api/management/v1/devices/"+devA.ID(), &rec); err != nil {
			t.Fatal(err)
		}
		if b, _ := json.Marshal(rec); !bytes.Contains(b, []byte(devA.Fingerprint())) || bytes.Contains(b, []byte(impostor.Fingerprint())) {
			t.Fatalf("dev-a's record changed: %s", b)
		}
	})

	t.Run("list-valued identity equal to a declared MAC once flattened → 401", func(t *testing.T) {
		body, _ := json.Marshal(map[string]any{"id_data": `{"mac":["02:00:00:00:00:0a"]}`, "pubkey": devA.pubPEM})
		sig := signBody(t, devA, body)
		if code := post(t, c, "/api/devices/v1/authentication/auth_requests", body, map[string]string{"X-MEN-Signature": sig}); code != http.StatusUnauthorized {
			t.Fatalf("HTTP %d, want 401", code)
		}
	})

	t.Run(fmt.Sprintf("signed auth requests of 300 unknown identities → at most %d device records in Redis, then 503", maxPending), func(t *testing.T) {
		refused := 0
		for i := range 300 {
			_, key, _ := ed25519.GenerateKey(rand.Reader)
			d := NewSimDevice("https://"+c.Addr, c.client, "flood", map[string]string{"mac": fmt.Sprintf("0e:%010x", i)}, AgentDeviceType, "x", key)
			body, sig, _ := d.AuthBody()
			switch code := post(t, c, "/api/devices/v1/authentication/auth_requests", body, map[string]string{"X-MEN-Signature": sig}); code {
			case http.StatusUnauthorized:
			case http.StatusServiceUnavailable:
				refused++
			default:
				t.Fatalf("request %d: HTTP %d", i, code)
			}
		}
		// dev-a, dev-b, the pending ones, nothing else.
		if n := redisKeys(t, env.RedisAddr, "gf:{d:*}"); n > maxPending+2 {
			t.Fatalf("%d device records in Redis after the flood, want ≤ %d", n, maxPending+2)
		}
		if refused < 300-maxPending {
			t.Fatalf("%d requests refused, want ≥ %d", refused, 300-maxPending)
		}
		if err := devB.Authenticate(ctx); err != nil {
			t.Fatalf("an accepted device while the pending records are full: %v", err)
		}
	})

	t.Run("300 forged webhooks, then a signed one → the signed one is accepted and its commit goes live", func(t *testing.T) {
		sha := env.Commit(map[string]string{"README.md": "after the forgeries\n"}, "readme")
		for i := range 300 {
			if code := env.Push(c, sha, true); code != http.StatusUnauthorized && code != http.StatusTooManyRequests {
				t.Fatalf("forgery %d: HTTP %d", i, code)
			}
		}
		if code := env.Push(c, sha, false); code != http.StatusAccepted {
			t.Fatalf("signed webhook after 300 forgeries: HTTP %d, want 202", code)
		}
		c.AwaitServing(sha)
	})

	t.Run("2,000 one-byte ranges in one download request → never more bytes than the artifact", func(t *testing.T) {
		var ranges []string
		for i := range 2000 {
			ranges = append(ranges, fmt.Sprintf("%d-%d", i*3, i*3))
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, uriB, nil)
		req.Header.Set("Range", "bytes="+strings.Join(ranges, ","))
		resp, err := c.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		n, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if n > rel.Size || strings.HasPrefix(resp.Header.Get("Content-Type"), "multipart/") {
			t.Fatalf("HTTP %d, %d bytes (%s) for a %d-byte artifact", resp.StatusCode, n, resp.Header.Get("Content-Type"), rel.Size)
		}
		// One range, as clients resume, still works.
		req, _ = http.NewRequestWithContext(ctx, http.MethodGet, uriB, nil)
		req.Header.Set("Range", "bytes=100-")
		resp, err = c.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		n, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusPartialContent || n != rel.Size-100 {
			t.Fatalf("resume: HTTP %d, %d bytes, want 206 and %d", resp.StatusCode, n, rel.Size-100)
		}
	})

	t.Run("presigned URL whose signature is altered → 403", func(t *testing.T) {
		forged := strings.Replace(uriB, "device=dev-b", "device=dev-a", 1)
		if code := get(t, c, forged); code != http.StatusForbidden {
			t.Fatalf("URL for another device: HTTP %d, want 403", code)
		}
	})

	t.Run("plain HTTP → 400; TLS 1.1 → handshake refused", func(t *testing.T) {
		conn, err := net.DialTimeout("tcp", c.Addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(Deadline))
		fmt.Fprintf(conn, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
		b, _ := io.ReadAll(io.LimitReader(conn, 4096))
		conn.Close()
		if !bytes.HasPrefix(b, []byte("HTTP/1.0 400")) && !bytes.HasPrefix(b, []byte("HTTP/1.1 400")) {
			t.Fatalf("plain HTTP answered %q", b)
		}
		tc, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", c.Addr,
			&tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11})
		if err == nil {
			tc.Close()
			t.Fatal("a TLS 1.1 handshake succeeded")
		}
	})

	t.Run("a policy that runs for hours pushed → commit refused naming the file and budget; the next commit goes live", func(t *testing.T) {
		hostile := env.Commit(map[string]string{"policies/hostile.cue": "import \"list\"\nfleet: _\npolicy: slow: violations: [\n" +
			"\tfor a in list.Range(0, 100, 1) for b in list.Range(0, 100, 1)\n" +
			"\tfor c in list.Range(0, 100, 1) for d in list.Range(0, 100, 1)\n" +
			"\tif a+b+c+d < 0 {message: \"x\"}]\n"}, "a slow policy")
		if code := env.Push(c, hostile, false); code != http.StatusAccepted {
			t.Fatalf("signed webhook: HTTP %d", code)
		}
		st := c.AwaitRefused(hostile)
		if errs := strings.Join(st.Refused.Errors, "\n"); !strings.Contains(errs, "policies/hostile.cue") || !strings.Contains(errs, "budget") {
			t.Fatalf("refusal does not name the file and the budget:\n%s", errs)
		}
		fixed := env.Repo.Apply(gittest.Change{Remove: []string{"policies/hostile.cue"}, Message: "remove the slow policy"})
		if code := env.Push(c, fixed, false); code != http.StatusAccepted {
			t.Fatalf("signed webhook: HTTP %d", code)
		}
		c.AwaitServing(fixed)
	})

	t.Run("device removed from Git → its token and its presigned URL stop working", func(t *testing.T) {
		if code := get(t, c, uriB); code != http.StatusOK {
			t.Fatalf("dev-b's URL before the removal: HTTP %d", code)
		}
		sha := env.Commit(merge(devices(false), RolloutManifest("rel-2", "rel-2", []string{"dev-a"}, false)), "remove dev-b")
		if code := env.Push(c, sha, false); code != http.StatusAccepted {
			t.Fatalf("signed webhook: HTTP %d", code)
		}
		c.AwaitServing(sha)
		if code := get(t, c, uriB); code != http.StatusForbidden {
			t.Fatalf("dev-b's URL after the removal: HTTP %d, want 403", code)
		}
		if _, err := devB.Next(ctx); err == nil || !strings.Contains(err.Error(), "unexpected 401") {
			t.Fatalf("dev-b's token after the removal: %v, want 401", err)
		}
	})

	t.Run("secrets given to serve (repository token, webhook secret, management token) → never in its logs", func(t *testing.T) {
		logs := c.Logs()
		for name, s := range map[string]string{"repository token": "repo-token", "webhook secret": env.WebhookSecret, "management token": env.Token} {
			if strings.Contains(logs, s) {
				t.Errorf("the %s %q appears in the controller's logs", name, s)
			}
		}
	})
}

// post sends body to the controller without credentials and returns the
// status.
func post(t *testing.T, c *Controller, path string, body []byte, hdr map[string]string) int {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, "https://"+c.Addr+path, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	return resp.StatusCode
}

// get fetches uri and returns the status (the body is discarded).
func get(t *testing.T, c *Controller, uri string) int {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, uri, nil)
	resp, err := c.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// signBody signs body with d's key, as X-MEN-Signature.
func signBody(t *testing.T, d *SimDevice, body []byte) string {
	t.Helper()
	sig, err := d.sign(body)
	if err != nil {
		t.Fatal(err)
	}
	return sig
}

// redisKeys counts the keys matching pattern.
func redisKeys(t *testing.T, addr, pattern string) int {
	t.Helper()
	r := goredis.NewClient(&goredis.Options{Addr: addr})
	defer r.Close()
	n := 0
	it := r.Scan(context.Background(), 0, pattern, 1000).Iterator()
	for it.Next(context.Background()) {
		n++
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return n
}
