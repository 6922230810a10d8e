package main

import (
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gitfleet/gitfleet/schema"
)

// A fake management API with one pending device whose identity needs
// quoting, and the CLI against it over TLS.
func TestDevicesPendingAndAccept(t *testing.T) {
	fp := strings.Repeat("ab", 32)
	dev := store.Device{
		ID: "0123456789abcdef0123456789abcdef", Status: store.DevicePending, KeyFingerprint: fp,
		Identity:  json.RawMessage(`{"mac":"dc:a6:32:00:00:07","note":"a: \"b\" #c"}`),
		FirstSeen: time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC), LastSeen: time.Date(2025, 6, 1, 12, 5, 0, 0, time.UTC),
	}
	other := strings.Repeat("cd", 32)
	clash := store.Conflict{ID: dev.ID, KeyFingerprint: other, BoundKey: fp, Count: 3, Identity: dev.Identity,
		FirstSeen: dev.FirstSeen, LastSeen: dev.LastSeen}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer s3cret" {
			w.WriteHeader(http.StatusUnauthorized)
			w.Write([]byte(`{"error":"a valid bearer token is required"}`))
			return
		}
		switch r.URL.Path {
		case "/api/management/v1/devices/pending":
			json.NewEncoder(w).Encode(map[string]any{"devices": []store.Device{dev}})
		case "/api/management/v1/devices/" + dev.ID:
			json.NewEncoder(w).Encode(dev)
		case "/api/management/v1/devices/conflicts":
			json.NewEncoder(w).Encode(map[string]any{"conflicts": []store.Conflict{clash}})
		default:
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`{"error":"no device"}`))
		}
	}))
	defer srv.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644)
	conn := []string{"--server", srv.URL, "--token", "s3cret", "--ca-cert", ca}

	out := mustGitfleet(t, append([]string{"devices", "pending"}, conn...)...)
	if !strings.Contains(out, dev.ID) || !strings.Contains(out, "abababababababab…") || !strings.Contains(out, "2025-06-01T12:05:00Z") {
		t.Fatalf("pending output:\n%s", out)
	}
	if _, _, err := gitfleet(t, "devices", "pending", "--server", srv.URL, "--token", "wrong", "--ca-cert", ca); err == nil || !strings.Contains(err.Error(), "check --token") {
		t.Fatalf("wrong token: %v", err)
	}
	if _, _, err := gitfleet(t, "devices", "pending", "--server", srv.URL, "--token", "s3cret"); err == nil {
		t.Fatal("an untrusted certificate was accepted")
	}

	// Conflicts list both fingerprints.
	out = mustGitfleet(t, append([]string{"devices", "conflicts"}, conn...)...)
	if !strings.Contains(out, dev.ID) || !strings.Contains(out, other) || !strings.Contains(out, fp) {
		t.Fatalf("conflicts output:\n%s", out)
	}

	// Printed, then written into a checkout; the loader reads it back. The
	// manifest names the bound key, and the conflicting one is called out.
	out, errOut, err := gitfleet(t, append([]string{"devices", "accept", dev.ID}, conn...)...)
	if err != nil || !strings.Contains(out, "name: \"mac-dc-a6-32-00-00-07\"") || !strings.Contains(out, "publicKeySHA256: "+fp) || strings.Contains(out, other) {
		t.Fatalf("manifest (%v):\n%s", err, out)
	}
	if !strings.Contains(errOut, "warning") || !strings.Contains(errOut, other) {
		t.Fatalf("accept of a device with a key conflict does not warn:\n%s", errOut)
	}
	checkout := t.TempDir()
	mustGitfleet(t, append([]string{"devices", "accept", dev.ID, "--write", checkout, "--name", "lab-7", "--device-type", "rpi4"}, conn...)...)
	if _, _, err := gitfleet(t, append([]string{"devices", "accept", dev.ID, "--write", checkout, "--name", "lab-7"}, conn...)...); err == nil {
		t.Fatal("overwrote an existing manifest without --force")
	}
	fleet, err := schema.Load(os.DirFS(checkout))
	if err != nil {
		t.Fatalf("load written manifest: %v", err)
	}
	if len(fleet.Devices) != 1 {
		t.Fatalf("devices %+v", fleet.Devices)
	}
	d := fleet.Devices[0]
	if d.Name != "lab-7" || d.Spec.PublicKeySHA256 != fp || d.Spec.DeviceType != "rpi4" ||
		d.Spec.Identity["mac"] != "dc:a6:32:00:00:07" || d.Spec.Identity["note"] != `a: "b" #c` {
		t.Fatalf("loaded %+v", d)
	}
	if _, _, err := gitfleet(t, append([]string{"devices", "accept", "ffff"}, conn...)...); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("unknown device: %v", err)
	}
}

func TestDeviceName(t *testing.T) {
	for _, tc := range []struct {
		identity map[string]string
		want     string
	}{
		{map[string]string{"hostname": "pi 4/lab"}, "pi-4-lab"},
		{map[string]string{"serial": "X1", "mac": "00:11"}, "X1"},
		{map[string]string{"mac": "DC:A6"}, "mac-dc-a6"},
		{map[string]string{"cpu": "x"}, "device-0123456789ab"},
		{map[string]string{"hostname": "---"}, "device-0123456789ab"},
	} {
		if got := deviceName("0123456789abcdef", tc.identity); got != tc.want {
			t.Errorf("%v → %q, want %q", tc.identity, got, tc.want)
		}
	}
}
