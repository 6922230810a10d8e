package main

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/artifact"
	"github.com/gitfleet/gitfleet/controller/deviceapi"
	"github.com/gitfleet/gitfleet/controller/rollout"
	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gitfleet/gitfleet/schema"
)

// writeCARepo writes the -device-ca fleet repository of n devices and
// returns the fleet, its test CA and the repository's work tree.
func writeCARepo(t *testing.T, n int) (*fleet, *clientPKI, string) {
	t.Helper()
	dir := t.TempDir()
	pki, err := newClientPKI(dir, 2)
	if err != nil {
		t.Fatal(err)
	}
	pki.always = true
	f := newFleet(n)
	f.ca = caName
	url, _, err := writeRepo(context.Background(), filepath.Join(dir, "fleet"), f, 0, pki)
	if err != nil {
		t.Fatal(err)
	}
	return f, pki, strings.TrimPrefix(url, "file://")
}

// The -device-ca repository loads as the controller loads it, declares no
// device and one DeviceCA, and what the load generator seeds and mints
// for a device is what that DeviceCA makes of the device's certificate:
// the certificate verifies for client authentication, Identify gives the
// identity and name the store records and the rollout ranks, its serial
// is the token's gf.crt, its key the fingerprint the store binds (the key
// admitCert requires the auth request to be signed with).
func TestDeviceCAFleetIsWhatTheDeviceCAAdmits(t *testing.T) {
	f, pki, repo := writeCARepo(t, 50)
	fl, err := schema.Load(os.DirFS(repo))
	if err != nil {
		t.Fatalf("the -device-ca repository does not load: %v", err)
	}
	if len(fl.Devices) != 0 {
		t.Errorf("the -device-ca repository declares %d devices, want none", len(fl.Devices))
	}
	ca := fl.DeviceCA(caName)
	if len(fl.DeviceCAs) != 1 || ca == nil {
		t.Fatalf("DeviceCAs %d, %s among them: %v; want exactly DeviceCA %s", len(fl.DeviceCAs), caName, ca != nil, caName)
	}
	key := make([]byte, 32)
	for _, i := range []int{0, 7, 49} {
		cert, err := pki.deviceCert(f, i)
		if err != nil {
			t.Fatal(err)
		}
		leaf := cert.Leaf
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Errorf("device %d: its certificate does not verify under the DeviceCA: %v", i, err)
		}
		identity, name, err := ca.Identify(leaf)
		if err != nil {
			t.Fatalf("device %d: Identify: %v", i, err)
		}
		if !maps.Equal(identity, map[string]string(f.identity(i))) || name != f.device(i) {
			t.Errorf("device %d: the DeviceCA admits %s %v; the load generator seeds %s %v", i, name, identity, f.device(i), f.identity(i))
		}
		if id := deviceapi.DeviceID(identity); id != f.id(i) {
			t.Errorf("device %d: device ID %s from the certificate, %s seeded", i, id, f.id(i))
		}
		if want := ca.Name + "/" + schema.SerialHex(leaf.SerialNumber); f.certClaim(i) != want {
			t.Errorf("device %d: gf.crt %q, the certificate's %q", i, f.certClaim(i), want)
		}
		if fp, err := artifact.Fingerprint(leaf.PublicKey); err != nil || fp != f.fingerprint(i) {
			t.Errorf("device %d: certificate key %s (%v), seeded key %s", i, fp, err, f.fingerprint(i))
		}

		// The minted token says so.
		parts := strings.Split(mint(key, f, i, time.Now()), ".")
		payload, err := base64.RawURLEncoding.DecodeString(parts[1])
		if err != nil {
			t.Fatal(err)
		}
		var cl deviceapi.Claims
		if err := json.Unmarshal(payload, &cl); err != nil {
			t.Fatal(err)
		}
		if cl.Cert != f.certClaim(i) || cl.Subject != f.id(i) || !maps.Equal(cl.Identity, f.identity(i)) || cl.Key != f.fingerprint(i) || !cl.Device {
			t.Errorf("device %d: minted claims %s", i, payload)
		}
	}
}

// sameClaims tells a token of a certificate-admitted device from one of a
// declared device, and takes two tokens of one device issued at different
// moments.
func TestSameClaims(t *testing.T) {
	key := make([]byte, 32)
	f := newFleet(3)
	f.ca = caName
	declared := newFleet(3)
	now := time.Now()
	if err := sameClaims(mint(key, f, 1, now), mint(key, f, 1, now.Add(time.Hour))); err != nil {
		t.Errorf("two tokens of one device: %v", err)
	}
	if err := sameClaims(mint(key, f, 1, now), mint(key, declared, 1, now)); err == nil {
		t.Error("a DeviceCA device's token and a declared device's token have the same claims")
	}
	if err := sameClaims(mint(key, f, 1, now), mint(key, f, 2, now)); err == nil {
		t.Error("the tokens of two devices have the same claims")
	}
}

// The rollout's progress of a DeviceCA fleet is seeded as the controller's
// plan admits devices to its open target: the count phase takes the
// first ten devices that ask, the 50 % phase the later ones whose
// position is below one half, and nobody else.
func TestOpenSeatsFollowTheOpenTarget(t *testing.T) {
	const n = 2000
	f, _, repo := writeCARepo(t, n)
	g := store.GenerationRef{Rollout: rolloutName, Generation: 1}
	seats, err := openSeats(repo, []store.RolloutRecord{{Name: rolloutName, Generation: 1}}, g, f)
	if err != nil {
		t.Fatal(err)
	}
	in := map[int]bool{}
	for r, s := range seats {
		in[s.i] = true
		switch {
		case r < 10:
			if s.phase != 0 || s.i != r || s.limit != 10 {
				t.Errorf("seat %d: %+v, want device %d in phase 0 (the canary, 10)", r, s, r)
			}
		case s.phase != 1:
			t.Errorf("seat %d: %+v, want phase 1", r, s)
		case rollout.Position(rolloutName, f.device(s.i)) >= 0.5:
			t.Errorf("device %s admitted into the 50 %% phase at position %.3f", f.device(s.i), rollout.Position(rolloutName, f.device(s.i)))
		}
	}
	if half := len(seats) - 10; half < n*4/10 || half > n*6/10 {
		t.Errorf("%d of %d devices in the 50 %% phase", half, n-10)
	}
	for i := 10; i < n; i++ {
		if !in[i] && rollout.Position(rolloutName, f.device(i)) < 0.5 {
			t.Errorf("device %s at position %.3f is not admitted into the 50 %% phase", f.device(i), rollout.Position(rolloutName, f.device(i)))
		}
	}
}
