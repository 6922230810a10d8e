package e2e

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/controller/store"
)

// factoryPKI is a device CA and one device certificate it issued, as a
// factory provisions them, written to dir: ca.pem, device.crt, device.key
// (the device's RSA key, which is also its Mender auth key).
func factoryPKI(t *testing.T, dir, serialCN string, serial int64) (caPEM []byte) {
	t.Helper()
	caKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Gitfleet Test Factory CA", Organization: []string{"Test"}},
		NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(1, 0, 0),
		BasicConstraintsValid: true, IsCA: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	devKey, err := rsa.GenerateKey(rand.Reader, 3072)
	if err != nil {
		t.Fatal(err)
	}
	devTmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: serialCN},
		NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(1, 0, 0),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	devDER, err := x509.CreateCertificate(rand.Reader, devTmpl, caCert, &devKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	writeFile(t, filepath.Join(dir, "ca.pem"), caPEM, 0o644)
	writeFile(t, filepath.Join(dir, "device.crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: devDER}), 0o644)
	writeFile(t, filepath.Join(dir, "device.key"), pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(devKey)}), 0o600)
	return caPEM
}

// menderCertConf is the mender.conf StartMender writes, plus the client
// certificate: HttpsClient.Certificate and HttpsClient.Key (mender 3.4
// reads both, presents the certificate in every TLS handshake and, as no
// Security.AuthPrivateKey is set, signs its auth requests with that key).
func menderCertConf(t *testing.T, path, serverURL string) {
	conf := map[string]any{
		"ServerURL":                    serverURL,
		"ServerCertificate":            "/etc/mender/server.crt",
		"UpdatePollIntervalSeconds":    1,
		"InventoryPollIntervalSeconds": 1,
		"RetryPollIntervalSeconds":     1,
		"ModuleTimeoutSeconds":         30,
		"DBus":                         map[string]any{"Enabled": false},
		"ArtifactVerifyKey":            "/etc/mender/artifact-verify-key.pem",
		"HttpsClient":                  map[string]any{"Certificate": "/etc/mender/device.crt", "Key": "/etc/mender/device.key"},
	}
	b, _ := json.MarshalIndent(conf, "", "  ")
	writeFile(t, path, b, 0o600)
}

// TestStockMenderDeviceCA: a DeviceCA committed to Git admits the stock
// mender 3.4 client by its factory certificate, with no Device manifest;
// a rollout to a group that selects it by identity updates it; a commit
// adding its serial to the revocation list gets it refused (401) at its
// next call, and the refusal is a device.refused event.
func TestStockMenderDeviceCA(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: runs the stock Mender client")
	}
	RequireMender(t)
	guard := hostMenderDirs(t)

	work := t.TempDir()
	key, pub := GenerateSigningKey(t, filepath.Join(work, "keys", "release"))
	storeDir := filepath.Join(work, "artifact-store")
	good := WriteMenderArtifact(t, storeDir, MenderArtifactSpec{
		Name: "hello-1", Module: MenderModuleOK, Key: key,
		Files: map[string]string{"hello.txt": "hello from a factory certificate\n"},
	})
	pki := filepath.Join(work, "pki")
	caPEM := factoryPKI(t, pki, "SN0042", 0x4242)

	env := newEnv(t, menderFleet(t, pub))
	c := env.StartController("a", menderServeFlags(storeDir)...)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("controller log (tail):\n%s", tailLines(c.logs.String(), 80))
		}
	})
	c.AwaitServing(env.Repo.Head())

	// The DeviceCA: its certificate and an empty revocation list.
	sha := env.Commit(map[string]string{
		"pki/factory.pem": string(caPEM),
		"pki/revoked.txt": "# revoked device certificates, one serial a line\n",
		"devices/factory.yaml": `apiVersion: gitfleet.io/v1
kind: DeviceCA
metadata:
  name: factory
spec:
  certificateFile: pki/factory.pem
  identity:
    serial: subject.commonName
  deviceType: ` + MenderDeviceType + `
  revokedFile: pki/revoked.txt
`}, "trust the factory CA")
	env.Push(c, sha, false)
	c.AwaitServing(sha)

	conf := filepath.Join(work, "mender.conf")
	menderCertConf(t, conf, c.URL())
	m := StartMender(t, c.URL(), c.CertPEM(), MenderOptions{
		VerifyKey: pub,
		Identity:  map[string]string{"serial": "SN0042"},
		Install: map[string]string{
			"etc/mender.conf": conf,
			"etc/device.crt":  filepath.Join(pki, "device.crt"),
			"etc/device.key":  filepath.Join(pki, "device.key"),
		},
	})
	d := c.AwaitDevice(m.ID(), "accepted by its certificate with its inventory", func(d store.Device) bool {
		return d.Status == store.DeviceAccepted && Inventory(d)["artifact_name"] == "factory"
	})
	if fp := m.KeyFingerprint(); fp != "" {
		t.Logf("note: the client made a key of its own (%s); the certificate's key is the one bound", fp)
	}
	t.Logf("admitted by certificate: device %s, key %.16s…", d.ID, d.KeyFingerprint)

	// A rollout to a group that selects the device by its identity.
	files := menderRollout("hello", "factory-SN0042", good, "1")
	files["rollouts/hello.yaml"] = fmt.Sprintf(`apiVersion: gitfleet.io/v1
kind: Rollout
metadata:
  name: hello
spec:
  artifact: %s
  target:
    groups: [factory-line]
  phases:
    - name: all
      percent: 100
      abort:
        maxFailures: 0
`, good.Name)
	files["groups/factory-line.yaml"] = `apiVersion: gitfleet.io/v1
kind: DeviceGroup
metadata:
  name: factory-line
spec:
  selector:
    identity:
      serial: {glob: "SN*"}
`
	sha = env.Commit(files, "roll out hello-1 to the factory line")
	env.Push(c, sha, false)
	c.AwaitServing(sha)
	m.AwaitInstalled("hello.txt", "hello from a factory certificate\n")
	c.AwaitDeployment("hello", "factory-SN0042", store.StateSuccess)
	c.AwaitDevice(m.ID(), "reporting hello-1", func(d store.Device) bool { return Inventory(d)["artifact_name"] == "hello-1" })

	// Revoke its serial: the next call is refused, and so is
	// authenticating again.
	before := len(m.Logs())
	sha = env.Commit(map[string]string{"pki/revoked.txt": "# revoked device certificates, one serial a line\n0x4242\n"}, "revoke SN0042")
	env.Push(c, sha, false)
	c.AwaitServing(sha)
	ev := c.AwaitEvent("device.refused", m.ID())
	t.Logf("event: %v", ev["message"])
	c.AwaitLog(`"msg":"client certificate refused".*serial 0x4242 of DeviceCA factory is revoked`)
	rejected := regexp.MustCompile(`authentication request rejected`)
	m.Await("refused after the revocation", func() bool { return rejected.MatchString(m.Logs()[before:]) })

	m.Stop()
	guard()
}
