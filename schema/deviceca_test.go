package schema

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
	"testing/fstest"
	"time"
)

// testCA makes a self-signed certificate, a CA unless notCA, valid from
// notBefore to notAfter, and returns its PEM.
func testCA(t testing.TB, cn string, notCA bool, notBefore, notAfter time.Time) (string, *x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: notBefore, NotAfter: notAfter,
		BasicConstraintsValid: true, IsCA: !notCA,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	if notCA {
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), cert, key
}

func validCA(t testing.TB, cn string) string {
	pemText, _, _ := testCA(t, cn, false, time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour))
	return pemText
}

// indent prefixes every line of s with n spaces.
func indent(s string, n int) string {
	pad := strings.Repeat(" ", n)
	return pad + strings.ReplaceAll(strings.TrimSpace(s), "\n", "\n"+pad)
}

func caManifest(name, certField, extra string) string {
	return fmt.Sprintf(`apiVersion: gitfleet.io/v1
kind: DeviceCA
metadata:
  name: %s
spec:
%s
  identity:
    serial: subject.commonName
%s`, name, certField, extra)
}

func inlineCert(pemText string) string { return "  certificate: |\n" + indent(pemText, 4) }

func TestDeviceCALoad(t *testing.T) {
	caPEM := validCA(t, "Factory A")
	fsys := fstest.MapFS{
		"fleet/ca.yaml": {Data: []byte(caManifest("factory-a", "  certificateFile: pki/factory-a.pem",
			"  deviceType: board-x\n  revoked: [\"0x0A\", \"1f:02\", \"255\", 0x77, 4096]\n  revokedFile: pki/revoked.txt\n"))},
		"fleet/ca2.yaml":    {Data: []byte(caManifest("factory-b", inlineCert(validCA(t, "Factory B")), ""))},
		"pki/factory-a.pem": {Data: []byte(caPEM)},
		"pki/revoked.txt":   {Data: []byte("\uFEFF# revoked in 2026\n\n0xDEADbeef\n  1234  \n00:ff # lost in transit\n")},
	}
	f, err := Load(fsys)
	if err != nil {
		t.Fatal(err)
	}
	ca := f.DeviceCA("factory-a")
	if ca == nil || len(f.DeviceCAs) != 2 {
		t.Fatalf("DeviceCAs = %v", f.DeviceCAs)
	}
	if ca.Spec.Certificate != caPEM || len(ca.Certificates()) != 1 || ca.Certificates()[0].Subject.CommonName != "Factory A" {
		t.Errorf("certificate not loaded from its file: %q", ca.Spec.Certificate)
	}
	for _, s := range []string{"a", "1f02", "ff", "deadbeef", "4d2", "77", "1000"} {
		if !ca.Revoked(s) {
			t.Errorf("serial %s not revoked", s)
		}
	}
	if ca.Revoked("1234") || ca.Revoked("0") || ca.RevokedCount() != 7 {
		t.Errorf("revoked set wrong: count %d", ca.RevokedCount())
	}
	if b := f.DeviceCA("factory-b"); b == nil || b.RevokedCount() != 0 || b.Pool() == nil {
		t.Errorf("factory-b = %+v", b)
	}
}

func TestDeviceCAErrors(t *testing.T) {
	now := time.Now()
	expired, _, _ := testCA(t, "Old", false, now.Add(-48*time.Hour), now.Add(-time.Hour))
	notYet, _, _ := testCA(t, "Future", false, now.Add(time.Hour), now.Add(48*time.Hour))
	leaf, _, _ := testCA(t, "Leaf", true, now.Add(-time.Hour), now.Add(time.Hour))
	good := validCA(t, "Good")
	for _, tc := range []struct {
		name  string
		files fstest.MapFS
		want  []string // substrings of the errors, in order
	}{
		{"bad PEM", fstest.MapFS{"ca.yaml": {Data: []byte(caManifest("a", "  certificate: not a certificate", ""))}},
			[]string{"ca.yaml:6:", "no PEM \"CERTIFICATE\" block"}},
		{"garbage after PEM", fstest.MapFS{"ca.yaml": {Data: []byte(caManifest("a", inlineCert(good+"trailing"), ""))}},
			[]string{"ca.yaml:6:", "not PEM after certificate 1"}},
		{"not a CA", fstest.MapFS{"ca.yaml": {Data: []byte(caManifest("a", inlineCert(leaf), ""))}},
			[]string{"ca.yaml:6:", "is not a CA certificate"}},
		{"expired", fstest.MapFS{"ca.yaml": {Data: []byte(caManifest("a", inlineCert(expired), ""))}},
			[]string{"ca.yaml:6:", "expired on"}},
		{"not yet valid", fstest.MapFS{"ca.yaml": {Data: []byte(caManifest("a", inlineCert(notYet), ""))}},
			[]string{"ca.yaml:6:", "is not valid before"}},
		{"missing file", fstest.MapFS{"ca.yaml": {Data: []byte(caManifest("a", "  certificateFile: pki/none.pem", ""))}},
			[]string{"ca.yaml:6:", "does not exist"}},
		{"bad PEM in file", fstest.MapFS{
			"ca.yaml":    {Data: []byte(caManifest("a", "  certificateFile: pki/ca.pem", ""))},
			"pki/ca.pem": {Data: []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")}},
			[]string{"ca.yaml:6:", "pki/ca.pem: certificate 1:"}},
		{"both certificate fields", fstest.MapFS{"ca.yaml": {Data: []byte(caManifest("a", inlineCert(good)+"\n  certificateFile: x.pem", ""))}},
			[]string{"set certificate or certificateFile, not both"}},
		{"duplicate names", fstest.MapFS{
			"a.yaml": {Data: []byte(caManifest("a", inlineCert(good), ""))},
			"b.yaml": {Data: []byte(caManifest("a", inlineCert(validCA(t, "Other")), ""))}},
			[]string{"b.yaml:4:", "duplicate DeviceCA name \"a\"; first declared at a.yaml:1"}},
		{"same certificate twice", fstest.MapFS{
			"a.yaml": {Data: []byte(caManifest("a", inlineCert(good), ""))},
			"b.yaml": {Data: []byte(caManifest("b", inlineCert(good), ""))}},
			[]string{"b.yaml:", "the same CA certificate (CN=Good) as DeviceCA a at a.yaml:1"}},
		{"bad inline serial", fstest.MapFS{"ca.yaml": {Data: []byte(caManifest("a", inlineCert(good), "  revoked:\n    - \"12\"\n    - 3F1A\n"))}},
			[]string{"ca.yaml:", "\"3F1A\" is neither decimal nor hex: write hex as 0x3F1A"}},
		{"bad serial in file", fstest.MapFS{
			"ca.yaml":     {Data: []byte(caManifest("a", inlineCert(good), "  revokedFile: revoked.txt\n"))},
			"revoked.txt": {Data: []byte("0x01\n# comment\n0xZZ\n")}},
			[]string{"revoked.txt:3:1", "\"Z\" is not a hex digit"}},
		{"name attribute needed", fstest.MapFS{"ca.yaml": {Data: []byte(caManifest("a", inlineCert(good), "    mac: subject.serialNumber\n"))}},
			[]string{"ca.yaml:", "identity has 2 attributes: set nameAttribute"}},
		{"name attribute unknown", fstest.MapFS{"ca.yaml": {Data: []byte(caManifest("a", inlineCert(good), "  nameAttribute: mac\n"))}},
			[]string{"ca.yaml:", "nameAttribute \"mac\" is not one of the identity attributes (serial)"}},
		{"unknown certificate field", fstest.MapFS{"ca.yaml": {Data: []byte(strings.Replace(caManifest("a", inlineCert(good), ""), "subject.commonName", "subject.email", 1))}},
			[]string{"ca.yaml:", "identity.serial"}},
		{"a device named as the DeviceCA names its devices", fstest.MapFS{
			"ca.yaml":      {Data: []byte(caManifest("factory", inlineCert(good), ""))},
			"devs.devices": {Data: []byte(DeviceListHeader + "\nfactory 	tofu mac=1\nfactory-lab1 tofu mac=2\nfactoryx-1 tofu mac=3\n")}},
			[]string{"devs.devices:3:1: metadata.name: device \"factory-lab1\" has a name DeviceCA \"factory\" (ca.yaml:1:1) gives the devices it admits (factory-<serial>): rename the device, or the DeviceCA"}},
		{"DeviceCA names overlap", fstest.MapFS{
			"a.yaml": {Data: []byte(caManifest("line", inlineCert(good), ""))},
			"b.yaml": {Data: []byte(caManifest("line-b", inlineCert(validCA(t, "Other")), ""))},
			"c.yaml": {Data: []byte(caManifest("lineb", inlineCert(validCA(t, "Third")), ""))}},
			[]string{"b.yaml:4:", "DeviceCA \"line-b\" names its devices line-b-…, which DeviceCA \"line\" (a.yaml:1:1) names its devices too (line-…)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := Load(tc.files)
			if err == nil {
				t.Fatalf("loaded: %+v", f.DeviceCAs)
			}
			msg := err.Error()
			at := 0
			for _, w := range tc.want {
				i := strings.Index(msg[at:], w)
				if i < 0 {
					t.Fatalf("error %q lacks %q (after offset %d)", msg, w, at)
				}
				at += i
			}
			if n := strings.Count(msg, "\n") + 1; strings.HasPrefix(tc.name, "a device named") && n != 1 {
				t.Errorf("%d errors, want 1 (factory and factoryx-1 are not a DeviceCA's names): %s", n, msg)
			}
			kept := map[string]bool{"duplicate names": true, "same certificate twice": true, "a device named as the DeviceCA names its devices": true, "DeviceCA names overlap": true}
			if !kept[tc.name] && len(f.DeviceCAs) != 0 {
				t.Errorf("an invalid DeviceCA is in the fleet: %v", f.DeviceCAs)
			}
		})
	}
}

// A commit that changes only the revoked file (or the certificate file)
// changes the loaded DeviceCA, also when the manifest file comes from the
// cache.
func TestDeviceCACachedFiles(t *testing.T) {
	c := NewCache()
	fsys := fstest.MapFS{
		"ca.yaml":     {Data: []byte(caManifest("a", inlineCert(validCA(t, "A")), "  revokedFile: revoked.txt\n"))},
		"revoked.txt": {Data: []byte("0x01\n")},
	}
	f, err := LoadCached(fsys, c)
	if err != nil {
		t.Fatal(err)
	}
	if ca := f.DeviceCA("a"); !ca.Revoked("1") || ca.Revoked("2") {
		t.Fatalf("first load: revoked 1 %v, 2 %v", ca.Revoked("1"), ca.Revoked("2"))
	}
	fsys["revoked.txt"] = &fstest.MapFile{Data: []byte("0x01\n0x02\n")}
	f, err = LoadCached(fsys, c)
	if err != nil {
		t.Fatal(err)
	}
	if ca := f.DeviceCA("a"); !ca.Revoked("2") {
		t.Fatal("a serial added to the revoked file is not revoked after the next load")
	}
	fsys["revoked.txt"] = &fstest.MapFile{Data: []byte("0x01\nbad\n")}
	if _, err := LoadCached(fsys, c); err == nil || !strings.Contains(err.Error(), "revoked.txt:2:1") {
		t.Fatalf("bad revoked file after a cached load: %v", err)
	}
}

func TestDeviceCAIdentify(t *testing.T) {
	ca := &DeviceCA{Meta: Meta{Name: "fab"}, Spec: DeviceCASpec{Identity: map[string]string{
		"serial": CertCommonName, "batch": CertOrganizationalUnit, "cert": CertSerialNumber, "sn": CertSubjectSerial}, NameAttribute: "serial"}}
	cert := &x509.Certificate{SerialNumber: big.NewInt(0xbeef), Subject: pkix.Name{CommonName: "SN0042", SerialNumber: "X-7", OrganizationalUnit: []string{"batch-3"}}}
	id, name, err := ca.Identify(cert)
	if err != nil {
		t.Fatal(err)
	}
	if name != "fab-SN0042" || id["serial"] != "SN0042" || id["batch"] != "batch-3" || id["cert"] != "beef" || id["sn"] != "X-7" {
		t.Errorf("Identify = %v, %q", id, name)
	}
	cert.Subject.SerialNumber = ""
	if _, _, err := ca.Identify(cert); err == nil || !strings.Contains(err.Error(), "no subject.serialNumber (identity attribute sn)") {
		t.Errorf("missing field: %v", err)
	}
	cert.Subject.SerialNumber = "X-7"
	cert.Subject.CommonName = "02:00:00:00:00:01"
	if _, _, err := ca.Identify(cert); err == nil || !strings.Contains(err.Error(), "is not a valid name") {
		t.Errorf("unusable name: %v", err)
	}
}

func TestParseSerial(t *testing.T) {
	for _, tc := range []struct{ in, want, err string }{
		{"0", "0", ""},
		{"255", "ff", ""},
		{"0xFF", "ff", ""},
		{"0x00ff", "ff", ""},
		{"00:FF", "ff", ""},
		{"1:2", "102", ""},
		{"1461501637330902918203684832716283019655932542975", "ffffffffffffffffffffffffffffffffffffffff", ""},
		{"1461501637330902918203684832716283019655932542976", "", "longer than 20 bytes"},
		{"0x" + strings.Repeat("f", 41), "", "longer than 20 bytes"},
		{"ff", "", "neither decimal nor hex"},
		{"0x", "", "no digits"},
		{"0xg1", "", "not a hex digit"},
		{"1::2", "", "one or two hex digits"},
		{"-1", "", "neither decimal nor hex"},
		{"", "", "empty"},
	} {
		got, err := ParseSerial(tc.in)
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("ParseSerial(%q) error %v, want %q", tc.in, err, tc.err)
		case tc.err == "" && (err != nil || got != tc.want):
			t.Errorf("ParseSerial(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

// BenchmarkDeviceCARevoked100k loads a DeviceCA with a revoked file of
// 100,000 serials.
func BenchmarkDeviceCARevoked100k(b *testing.B) {
	var sb strings.Builder
	for i := range 100_000 {
		fmt.Fprintf(&sb, "0x%040x\n", uint64(i)*2654435761+1)
	}
	fsys := fstest.MapFS{
		"ca.yaml":     {Data: []byte(caManifest("a", inlineCert(validCA(b, "A")), "  revokedFile: revoked.txt\n"))},
		"revoked.txt": {Data: []byte(sb.String())},
	}
	b.ReportAllocs()
	for b.Loop() {
		f, err := Load(fsys)
		if err != nil {
			b.Fatal(err)
		}
		if f.DeviceCAs[0].RevokedCount() != 100_000 {
			b.Fatal(f.DeviceCAs[0].RevokedCount())
		}
	}
}

// An unquoted serial too large for 64 bits is refused at its position;
// quoted, it is read exactly.
func TestDeviceCABigSerial(t *testing.T) {
	big := "1461501637330902918203684832716283019655932542975"
	load := func(revoked string) (*Fleet, error) {
		return Load(fstest.MapFS{"ca.yaml": {Data: []byte(caManifest("a", inlineCert(validCA(t, "A")), "  revoked: ["+revoked+"]\n"))}})
	}
	if _, err := load(big); err == nil || !strings.Contains(err.Error(), "ca.yaml:18:") {
		t.Errorf("unquoted big serial: %v", err)
	}
	f, err := load(`"` + big + `"`)
	if err != nil {
		t.Fatal(err)
	}
	if !f.DeviceCAs[0].Revoked(strings.Repeat("f", 40)) {
		t.Error("quoted big serial not revoked")
	}
}

// The check that no device is named as a DeviceCA names its devices is
// remembered with the devices shared between loads, and made again when
// the DeviceCAs' names change: a rename that puts a listed device under a
// DeviceCA's names is refused though no device file changed, and the
// next valid load is served.
func TestDeviceCANamesCheckedOnRename(t *testing.T) {
	c := NewCache()
	ca := inlineCert(validCA(t, "A"))
	fsys := newHashFS(fstest.MapFS{
		"ca.yaml":       {Data: []byte(caManifest("factory", ca, ""))},
		"devs.devices":  {Data: []byte(DeviceListHeader + "\nline-7 tofu mac=1\nline-8 tofu mac=2\n")},
		"rollout.yaml":  rolloutFile(1),
		"artifact.yaml": {Data: []byte("apiVersion: gitfleet.io/v1\nkind: Artifact\nmetadata: {name: app}\nspec:\n  source: app.mender\n  deviceTypes: [sim]\n")},
	})
	if _, err := LoadCached(fsys, c); err != nil {
		t.Fatal(err)
	}
	for step, tc := range []struct {
		file, ca string
		want     string // "" for a valid load
	}{
		{"rollout.yaml", "", ""},
		{"ca.yaml", "line", `devs.devices:2:1: metadata.name: device "line-7" has a name DeviceCA "line"`},
		{"ca.yaml", "factory", ""},
		{"ca.yaml", "line", `devs.devices:3:1: metadata.name: device "line-8" has a name DeviceCA "line"`},
	} {
		if tc.file == "rollout.yaml" {
			fsys.set("rollout.yaml", rolloutFile(2))
		} else {
			fsys.set("ca.yaml", &fstest.MapFile{Data: []byte(caManifest(tc.ca, ca, ""))})
		}
		f, err := LoadCached(fsys, c)
		switch {
		case tc.want == "" && (err != nil || f.Device("line-7") == nil):
			t.Fatalf("step %d: %v", step, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Fatalf("step %d: got %v, want %s", step, err, tc.want)
		}
	}
}
