package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"io"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/gitfleet/gitfleet/artifact"
	"github.com/gitfleet/gitfleet/controller/deviceapi"
	"github.com/gitfleet/gitfleet/schema"
)

// fleet names the simulated devices: device i is declared as d<i> with
// the identity {mac: 02:xx:xx:xx:xx:xx} (i in the last three bytes) and
// an Ed25519 key derived from its name.
//
// In a DeviceCA fleet (ca set, -device-ca) no device is declared: device
// i holds a client certificate of the DeviceCA ca with subject serial
// number d<i> and certificate serial certBase+i, for its Ed25519 key, so
// the controller admits it as "<ca>-d<i>" with the identity {serial: d<i>}
// (deviceCAYAML).
type fleet struct {
	n      int
	lists  bool   // declared in device-list files (*.devices) rather than Device manifests
	ca     string // the DeviceCA that admits every device; "" when they are declared in Git
	fpOnce sync.Once
	fps    [][sha256.Size]byte // by device, computed once
}

func newFleet(n int) *fleet {
	if n > 1<<24 {
		panic("at most 16,777,216 devices")
	}
	return &fleet{n: n}
}

func (f *fleet) name(i int) string { return fmt.Sprintf("d%07d", i) }
func (f *fleet) mac(i int) string {
	return fmt.Sprintf("02:00:00:%02x:%02x:%02x", i>>16&0xff, i>>8&0xff, i&0xff)
}

// identity is device i's id_data: its MAC address, or in a DeviceCA fleet
// the attribute the DeviceCA reads from its certificate.
func (f *fleet) identity(i int) deviceapi.Attributes {
	if f.ca != "" {
		return deviceapi.Attributes{caIdentityAttr: f.name(i)}
	}
	return deviceapi.Attributes{"mac": f.mac(i)}
}

// device is the name the controller knows device i by (rollout.Device.ID,
// the device argument of store.Admit and Report, what rollout.Key hashes):
// its name in Git, or "<DeviceCA>-<serial>" as schema.DeviceCA.Identify
// names a device a DeviceCA admits.
func (f *fleet) device(i int) string {
	if f.ca != "" {
		return f.ca + "-" + f.name(i)
	}
	return f.name(i)
}

// certBase is the certificate serial number of device 0 of a DeviceCA
// fleet (the polling clients' certificates have serials from 1000).
const certBase = 1 << 32

// certSerial is device i's certificate serial number in a DeviceCA fleet.
func (f *fleet) certSerial(i int) *big.Int { return big.NewInt(certBase + int64(i)) }

// certClaim is the gf.crt claim of device i's token in a DeviceCA fleet,
// "<DeviceCA>/<serial in lowercase hex>" as the device API writes it after
// admitting the certificate; "" in a fleet declared in Git.
func (f *fleet) certClaim(i int) string {
	if f.ca == "" {
		return ""
	}
	return f.ca + "/" + schema.SerialHex(f.certSerial(i))
}

// id is the controller's device ID (deviceapi.DeviceID of the identity).
func (f *fleet) id(i int) string { return deviceapi.DeviceID(f.identity(i)) }

// key is device i's Ed25519 key, derived from its name.
func (f *fleet) key(i int) ed25519.PrivateKey {
	seed := sha256.Sum256([]byte("gitfleet-loadgen\x00" + f.name(i)))
	return ed25519.NewKeyFromSeed(seed[:])
}

// fingerprint is the hex SHA-256 of device i's public key (PKIX DER, as
// artifact.Fingerprint and the device API compute it): the key the store
// binds to the device, so that its signed auth requests are accepted.
func (f *fleet) fingerprint(i int) string {
	f.fpOnce.Do(func() {
		start := time.Now()
		f.fps = make([][sha256.Size]byte, f.n)
		var wg sync.WaitGroup
		workers := runtime.GOMAXPROCS(0)
		for w := range workers {
			wg.Go(func() {
				for i := w; i < f.n; i += workers {
					der, err := x509.MarshalPKIXPublicKey(f.key(i).Public())
					if err != nil {
						panic(err) // an Ed25519 key always marshals
					}
					f.fps[i] = sha256.Sum256(der)
				}
			})
		}
		wg.Wait()
		fmt.Printf("  %d device keys derived in %s\n", f.n, time.Since(start).Round(time.Millisecond))
	})
	return hex.EncodeToString(f.fps[i][:])
}

// inventory is a typical Mender inventory, as the device API stores it
// (an object with sorted keys).
func (f *fleet) inventory(i int) []byte {
	return fmt.Appendf(nil, `{"artifact_name":"app-1","cpu_model":"Cortex-A72","device_type":"sim","hostname":"%s",`+
		`"ipv4_eth0":"10.%d.%d.%d/8","kernel":"Linux version 6.1.0-rpi7-rpi-v8","mem_total_kB":"3884628",`+
		`"mender_client_version":"3.4.0","os":"Debian GNU/Linux 12 (bookworm)","rootfs-image.version":"2026.03.1"}`,
		f.name(i), i>>16&0xff, i>>8&0xff, i&0xff)
}

const devicesPerManifest = 10_000

const rolloutName = "fleet"

const rolloutYAML = `apiVersion: gitfleet.io/v1
kind: Rollout
metadata: {name: ` + rolloutName + `}
spec:
  artifact: app-2
  target: {all: true}
  phases:
    - {name: canary, count: 10}
    - {name: half, percent: 50}
    - {name: all, percent: 100, requiresApproval: true}
`

// checkName names the alert storm's MonitorCheck j (0 ≤ j < -checks).
func checkName(j int) string { return fmt.Sprintf("storm-%02d", j) }

// checksYAML declares n MonitorChecks for the whole fleet, each with a log
// probe, in one multi-document file.
func checksYAML(n int) []byte {
	var b bytes.Buffer
	for j := range n {
		if j > 0 {
			b.WriteString("---\n")
		}
		fmt.Fprintf(&b, "apiVersion: gitfleet.io/v1\nkind: MonitorCheck\nmetadata: {name: %s}\nspec:\n  target: {all: true}\n  severity: error\n"+
			"  log: {path: /var/log/app%d.log, pattern: ERROR}\n", checkName(j), j)
	}
	return b.Bytes()
}

// writeRepo writes the fleet repository (Device manifests, a signing key,
// a signed artifact's manifest, the rollout and, with checks > 0, that
// many MonitorChecks; with pki, the test CA as a DeviceCA) and commits it
// with git; the artifact file goes to a separate artifact store. A
// DeviceCA fleet (f.ca) declares no device at all. It returns the
// repository's file:// URL and the store directory.
func writeRepo(ctx context.Context, dir string, f *fleet, checks int, pki *clientPKI) (repoURL, storeDir string, err error) {
	repo, storeDir := filepath.Join(dir, "repo"), filepath.Join(dir, "artifacts")
	for _, d := range []string{filepath.Join(repo, "devices"), filepath.Join(repo, "fleet"), storeDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return "", "", err
		}
	}
	write := func(name string, data []byte) error { return os.WriteFile(filepath.Join(repo, name), data, 0o644) }
	if f.ca != "" && pki == nil {
		return "", "", fmt.Errorf("a DeviceCA fleet needs the test CA (clientPKI)")
	}
	declared := f.n
	if f.ca != "" {
		declared = 0 // admitted by the DeviceCA, declared nowhere
	}
	var b bytes.Buffer
	for i := 0; i < declared; i++ {
		switch {
		case i%devicesPerManifest != 0:
		case f.lists:
			fmt.Fprintf(&b, "%s\n# name, key, identity, options\n", schema.DeviceListHeader)
		default:
			fmt.Fprintf(&b, "apiVersion: gitfleet.io/v1\nkind: Device\nmetadata: {name: sims-%04d}\nspec:\n  devices:\n", i/devicesPerManifest)
		}
		if f.lists {
			fmt.Fprintf(&b, "%s tofu mac=%s +deviceType=sim\n", f.name(i), f.mac(i))
		} else {
			fmt.Fprintf(&b, "    - {name: %s, identity: {mac: %q}, trustOnFirstUse: true, deviceType: sim}\n", f.name(i), f.mac(i))
		}
		if (i+1)%devicesPerManifest == 0 || i+1 == declared {
			ext := ".yaml"
			if f.lists {
				ext = schema.DeviceListExt
			}
			if err := write(fmt.Sprintf("devices/sims-%04d%s", i/devicesPerManifest, ext), b.Bytes()); err != nil {
				return "", "", err
			}
			b.Reset()
		}
	}

	// A signed module-image artifact.
	priv, pub, err := artifact.GenerateKey(artifact.ECDSAP256)
	if err != nil {
		return "", "", err
	}
	signer, err := artifact.LoadSigner(priv)
	if err != nil {
		return "", "", err
	}
	payload := make([]byte, 64<<10)
	rand.Read(payload)
	p := artifact.ModuleImage("app", []artifact.FileSpec{{Name: "app.bin", Open: func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(payload)), nil
	}}}, "app-2", artifact.Software{})
	var art bytes.Buffer
	if err := artifact.Write(ctx, &art, artifact.Spec{Name: "app-2", DeviceTypes: []string{"sim"},
		Payloads: []artifact.PayloadSpec{p}, Signer: signer, TempDir: dir}); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(filepath.Join(storeDir, "app-2.mender"), art.Bytes(), 0o644); err != nil {
		return "", "", err
	}
	files := map[string]string{
		"fleet/key.yaml": "apiVersion: gitfleet.io/v1\nkind: SigningKey\nmetadata: {name: release}\nspec:\n  algorithm: ecdsa-p256\n  publicKey: |\n    " +
			strings.ReplaceAll(strings.TrimSpace(string(pub)), "\n", "\n    ") + "\n",
		"fleet/artifact.yaml": "apiVersion: gitfleet.io/v1\nkind: Artifact\nmetadata: {name: app-2}\nspec:\n  source: app-2.mender\n  version: \"2\"\n  deviceTypes: [sim]\n  signedBy: [release]\n",
		"fleet/rollout.yaml":  rolloutYAML,
	}
	if checks > 0 {
		files["fleet/checks.yaml"] = string(checksYAML(checks))
	}
	if pki != nil {
		files["fleet/loadgen-ca.pem"] = string(pki.caPEM)
		files["fleet/deviceca.yaml"] = deviceCAYAML
	}
	for name, data := range files {
		if err := write(name, []byte(data)); err != nil {
			return "", "", err
		}
	}
	for _, args := range [][]string{
		{"init", "-q", "-b", "main"},
		{"add", "-A"},
		{"-c", "user.name=gitfleet-loadgen", "-c", "user.email=loadgen@gitfleet.invalid", "commit", "-q", "-m", fmt.Sprintf("%d simulated devices", f.n)},
	} {
		cmd := exec.CommandContext(ctx, "git", args...)
		cmd.Dir = repo
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", "", fmt.Errorf("git %s: %v\n%s", args[0], err, out)
		}
	}
	return "file://" + repo, storeDir, nil
}
