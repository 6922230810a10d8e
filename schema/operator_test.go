package schema

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"
	"testing/fstest"
	"time"
)

func TestParseByteRate(t *testing.T) {
	for in, want := range map[string]ByteRate{
		"1000": 1000, "1MiB": 1 << 20, "1MiB/s": 1 << 20, "512 KiB": 512 << 10, "2MB": 2_000_000, "1.5KiB/s": 1536, "1GiB": 1 << 30,
	} {
		got, err := ParseByteRate(in)
		if err != nil || got != want {
			t.Errorf("ParseByteRate(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"0", "-5", "1 parsec", "MiB", "0.1B", ""} {
		if _, err := ParseByteRate(in); err == nil {
			t.Errorf("ParseByteRate(%q) accepted", in)
		}
	}
}

func TestOperatorLoaded(t *testing.T) {
	token := "s3cret-token"
	sum := sha256.Sum256([]byte(token))
	ca := validCA(t, "Factory")
	fsys := fstest.MapFS{
		"ca.yaml": {Data: []byte(caManifest("factory", inlineCert(ca), ""))},
		"devices.yaml": {Data: []byte(`apiVersion: gitfleet.io/v1
kind: Device
metadata: {name: pi-1}
spec: {identity: {mac: "1"}, trustOnFirstUse: true}
`)},
		"op.yaml": {Data: []byte(`apiVersion: gitfleet.io/v1
kind: Operator
metadata: {name: alice}
spec:
  tokenSHA256: ` + hex.EncodeToString(sum[:]) + `
  sshPublicKey: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJaHf/6d61iwIRa1glDb3HhsrzznXvTmwsd9gYvAK5Qw alice@laptop
  expires: "2030-06-01T12:00:00+02:00"
  access:
    - devices: [pi-1, factory-0042]
`)},
	}
	f, err := Load(fsys)
	if err != nil {
		t.Fatal(err)
	}
	o := f.Operator("alice")
	if o == nil {
		t.Fatal("no operator alice")
	}
	if !o.TokenMatches(token) || o.TokenMatches("other") || o.TokenMatches("") {
		t.Error("TokenMatches wrong")
	}
	if o.SSHKey() == nil || o.SSHKey().Type() != "ssh-ed25519" {
		t.Errorf("SSHKey = %v", o.SSHKey())
	}
	exp := time.Date(2030, 6, 1, 10, 0, 0, 0, time.UTC)
	if !o.ExpiresAt().Equal(exp) || o.Expired(exp.Add(-time.Second)) || !o.Expired(exp) {
		t.Errorf("ExpiresAt = %v", o.ExpiresAt())
	}
	l := o.Spec.Limits.Effective()
	if l.Sessions != DefaultOperatorSessions || l.IdleTimeout.Duration != DefaultIdleTimeout || l.Bandwidth != 0 {
		t.Errorf("Effective = %+v", l)
	}
	// A DeviceCA device that is not declared otherwise is a valid
	// reference only by the CA's prefix.
	fsys["op.yaml"].Data = []byte(strings.Replace(string(fsys["op.yaml"].Data), "factory-0042", "factry-0042", 1))
	if _, err := Load(fsys); err == nil || !strings.Contains(err.Error(), `unknown Device "factry-0042"`) {
		t.Errorf("unknown CA device: %v", err)
	}
}
