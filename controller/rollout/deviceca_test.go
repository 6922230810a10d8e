package rollout

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/controller/store"
)

// caDoc is a DeviceCA manifest with a fresh CA certificate.
func caDoc(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		BasicConstraintsValid: true, IsCA: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	p := strings.TrimSpace(string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	return `apiVersion: gitfleet.io/v1
kind: DeviceCA
metadata: {name: factory}
spec:
  identity: {serial: subject.commonName}
  certificate: |
    ` + strings.ReplaceAll(p, "\n", "\n    ") + "\n"
}

const certFleet = `
apiVersion: gitfleet.io/v1
kind: Artifact
metadata: {name: app}
spec: {source: a.mender, deviceTypes: [board]}
---
apiVersion: gitfleet.io/v1
kind: Device
metadata: {name: lab-1}
spec: {identity: {serial: "LAB1"}, deviceType: board, trustOnFirstUse: true}
---
apiVersion: gitfleet.io/v1
kind: DeviceGroup
metadata: {name: line}
spec: {selector: {identity: {serial: {glob: "SN*"}}}}
---
apiVersion: gitfleet.io/v1
kind: Rollout
metadata: {name: a-named}
spec:
  artifact: app
  priority: 2
  target: {devices: [lab-1]}
  phases: [{name: all, percent: 100, abort: {maxFailures: 0}}]
---
apiVersion: gitfleet.io/v1
kind: Rollout
metadata: {name: b-line}
spec:
  artifact: app
  priority: 1
  target: {groups: [line]}
  phases:
    - {name: canary, percent: 50, abort: {maxFailures: 0}}
    - {name: rest, percent: 100, abort: {maxFailures: 0}}
`

// TestDeviceCARouting: in a fleet with a DeviceCA, a device no manifest
// declares is routed by the selectors of open targets; without a DeviceCA
// it is routed nowhere, as before.
func TestDeviceCARouting(t *testing.T) {
	records := []store.RolloutRecord{{Name: "a-named", Generation: 1}, {Name: "b-line", Generation: 1}}
	with := Compile(loadFleet(t, certFleet+"---\n"+caDoc(t)), records)
	without := Compile(loadFleet(t, certFleet), records)
	if len(with.Problems()) > 0 {
		t.Fatal(with.Problems())
	}
	for _, tc := range []struct {
		id, serial  string
		withCA, was string // rollout routed to, with and without a DeviceCA
	}{
		{"factory-SN1", "SN1", "b-line", ""},
		{"factory-XY1", "XY1", "", ""},          // the selector does not match
		{"lab-1", "LAB1", "a-named", "a-named"}, // declared: unchanged
	} {
		d := &Device{ID: tc.id, Identity: map[string]string{"serial": tc.serial}, DeviceType: "board"}
		for _, c := range []struct {
			p    *Plan
			want string
		}{{with, tc.withCA}, {without, tc.was}} {
			g, _, ok := c.p.Route(d)
			if got := map[bool]string{true: g.Rollout}[ok]; got != c.want {
				t.Errorf("%s (DeviceCA %v): routed to %q, want %q", tc.id, c.p == with, got, c.want)
			}
		}
	}
	if with.NeedsInventory("factory-SN1") || without.NeedsInventory("factory-SN1") {
		t.Error("NeedsInventory of an undeclared device: want false, no open target selects on inventory")
	}
	if info := with.byName["a-named"]; !info.exact || info.open {
		t.Error("a target of named devices must stay closed")
	}
	// The 50 % canary of the open target takes the devices whose key
	// falls in the first half, whatever their number.
	in, out := 0, 0
	for i := range 200 {
		d := &Device{ID: fmt.Sprintf("factory-SN%d", i), Identity: map[string]string{"serial": fmt.Sprintf("SN%d", i)}, DeviceType: "board",
			Provides: map[string]string{"artifact_name": "factory"}}
		dec := with.Next(NextInput{Device: d, Now: time.Now(), Generation: store.GenerationRef{Rollout: "b-line", Generation: 1}})
		switch {
		case dec.Action == Admit && dec.Phase == 0:
			in++
		case dec.Action == Admit:
			t.Fatalf("%s admitted to phase %d before the canary completed", d.ID, dec.Phase)
		default:
			out++
		}
	}
	if in < 60 || out < 60 {
		t.Errorf("canary of 200 devices: %d admitted, %d not; want about half each", in, out)
	}
}

// An undeclared device's inventory is needed only when an open target
// that routing may ask before one that takes every device selects on
// inventory: a fleet of certificate-admitted devices rolled out to all
// reads no inventory at its polls.
func TestUndeclaredNeedsInventory(t *testing.T) {
	rollout := func(name string, priority int, target string) string {
		return fmt.Sprintf(`---
apiVersion: gitfleet.io/v1
kind: Rollout
metadata: {name: %s}
spec:
  artifact: app
  priority: %d
  target: %s
  phases: [{name: all, percent: 100, abort: {maxFailures: 0}}]
`, name, priority, target)
	}
	const byInventory = `---
apiVersion: gitfleet.io/v1
kind: DeviceGroup
metadata: {name: berlin}
spec: {selector: {inventory: {site: berlin}}}
`
	ca := caDoc(t)
	for _, tc := range []struct {
		name  string
		fleet string
		want  bool
	}{
		{"identity selector only", certFleet + "---\n" + ca, false},
		{"all", certFleet + rollout("c-all", 5, "{all: true}") + "---\n" + ca, false},
		{"inventory selector", certFleet + byInventory + rollout("c-berlin", 5, "{groups: [berlin]}") + "---\n" + ca, true},
		{"inventory selector after all", certFleet + byInventory + rollout("c-all", 5, "{all: true}") + rollout("d-berlin", 4, "{groups: [berlin]}") + "---\n" + ca, false},
		{"inventory selector, no DeviceCA", certFleet + byInventory + rollout("c-berlin", 5, "{groups: [berlin]}"), false},
	} {
		p := Compile(loadFleet(t, tc.fleet), nil)
		if len(p.Problems()) > 0 {
			t.Fatalf("%s: %v", tc.name, p.Problems())
		}
		if got := p.NeedsInventory("factory-SN1"); got != tc.want {
			t.Errorf("%s: NeedsInventory of an undeclared device = %v, want %v", tc.name, got, tc.want)
		}
	}
}
