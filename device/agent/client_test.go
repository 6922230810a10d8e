package agent

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func TestClient(t *testing.T) {
	var mu sync.Mutex
	var calls []string
	auths, token := 0, ""
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/devices/v1/authentication/auth_requests", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if r.Header.Get("X-MEN-Signature") == "" {
			http.Error(w, "unsigned", 401)
			return
		}
		auths++
		token = "tok" + string(rune('0'+auths))
		w.Write([]byte(token))
	})
	check := func(w http.ResponseWriter, r *http.Request) bool {
		mu.Lock()
		defer mu.Unlock()
		calls = append(calls, r.Method+" "+r.URL.Path)
		if r.Header.Get("Authorization") != "Bearer "+token {
			http.Error(w, "expired", 401)
			return false
		}
		return true
	}
	// v2 is missing: the client falls back to v1.
	mux.HandleFunc("POST /api/devices/v1/deployments/device/deployments/next", func(w http.ResponseWriter, r *http.Request) {
		if check(w, r) {
			w.Write([]byte(`{"id":"d1","artifact":{"artifact_name":"r2","source":{"uri":"https://s/a?sig=x"},"device_types_compatible":["sim"]}}`))
		}
	})
	mux.HandleFunc("PUT /api/devices/v1/deployments/device/deployments/{id}/status", func(w http.ResponseWriter, r *http.Request) {
		if check(w, r) {
			if r.PathValue("id") == "aborted" {
				http.Error(w, `{"error":"the deployment was aborted"}`, 409)
				return
			}
			w.WriteHeader(204)
		}
	})
	srv := httptest.NewTLSServer(mux)
	defer srv.Close()
	key, pub, err := LoadOrCreateKey(filepath.Join(t.TempDir(), "device.key"))
	if err != nil {
		t.Fatal(err)
	}
	c := NewClient(ClientOptions{ServerURL: srv.URL, HTTP: srv.Client(), Key: key, PublicKeyPEM: pub,
		Identity: func(context.Context) (map[string]string, error) {
			return map[string]string{"mac": "02:00:00:00:00:01"}, nil
		}})
	ctx := context.Background()
	dep, err := c.Next(ctx, map[string]string{"device_type": "sim", "artifact_name": "r1"})
	if err != nil || dep == nil || dep.ID != "d1" || dep.URI != "https://s/a?sig=x" {
		t.Fatalf("Next = %+v, %v", dep, err)
	}
	if err := c.Status(ctx, "d1", StatusDownloading, ""); err != nil {
		t.Fatal(err)
	}
	if auths != 1 {
		t.Errorf("%d auth requests; the token is reused until 401", auths)
	}
	// The server forgets the token: one 401, one new auth request, the
	// call is repeated.
	mu.Lock()
	token = "rotated"
	mu.Unlock()
	if err := c.Status(ctx, "d1", StatusInstalling, ""); err != nil {
		t.Fatal(err)
	}
	if auths != 2 {
		t.Errorf("%d auth requests after a 401, want 2", auths)
	}
	if err := c.Status(ctx, "aborted", StatusInstalling, ""); !errors.Is(err, ErrAborted) {
		t.Errorf("409: %v", err)
	}
	got := strings.Join(calls, "\n")
	if !strings.Contains(got, "POST /api/devices/v1/deployments/device/deployments/next") {
		t.Errorf("no v1 fallback: %s", got)
	}
}

func TestDeviceKeyCreatedOnce(t *testing.T) {
	p := filepath.Join(t.TempDir(), "k", "device.key")
	_, pub1, err := LoadOrCreateKey(p)
	if err != nil {
		t.Fatal(err)
	}
	_, pub2, err := LoadOrCreateKey(p)
	if err != nil || string(pub1) != string(pub2) {
		t.Fatalf("key changed or failed: %v", err)
	}
	if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key mode %v, %v", fi.Mode(), err)
	}
}
