package main

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/gitfleet/gitfleet/controller"
	"github.com/gitfleet/gitfleet/controller/deviceapi"
	"github.com/gitfleet/gitfleet/controller/store"
)

// goldenOperatorKey is a fixed ed25519 key, so that its fingerprint is
// the same in every run's output.
func goldenOperatorKey(t *testing.T) (ed25519.PrivateKey, ssh.Signer) {
	seed := sha256.Sum256([]byte("gitfleet golden operator key"))
	priv := ed25519.NewKeyFromSeed(seed[:])
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return priv, s
}

func goldenOperator(t *testing.T) string {
	_, s := goldenOperatorKey(t)
	sum := sha256.Sum256([]byte("alice-token"))
	return `apiVersion: gitfleet.io/v1
kind: Operator
metadata: {name: alice}
spec:
  tokenSHA256: ` + hex.EncodeToString(sum[:]) + `
  sshPublicKey: ` + strings.TrimSpace(string(ssh.MarshalAuthorizedKey(s.PublicKey()))) + ` alice@laptop
  expires: "2031-01-01T00:00:00Z"
  access:
    - groups: [lab]
      fileTransfer: true
      recordInput: true
    - devices: [sim-002]
      portForward: true
  limits: {sessions: 3, bandwidth: 1MiB}
`
}

// sessionsServer is a controller serving the golden fleet and an
// Operator, with two sessions of alice recorded: one to sim-001 that
// ended, with typed input holding a terminal escape, and one still open
// to sim-002.
func sessionsServer(t *testing.T) ([]string, string) {
	t.Helper()
	files := map[string]string{"operators/alice.yaml": goldenOperator(t)}
	for k, v := range goldenFleet {
		files[k] = v
	}
	var url string
	conn, _ := mgmtServer(t, files, func(c *controller.Controller) bool { return c.Live().Fleet.Operator("alice") != nil },
		func(ctx context.Context, st store.Store, c *controller.Controller) {
			rs := st
			id := func(n string) string { return deviceapi.DeviceID(deviceapi.Attributes{"mac": "02:00:00:00:00:0" + n}) }
			sha := c.Live().Commit.SHA
			now := time.Now()
			for _, n := range []string{"1", "2"} {
				if _, err := st.SeeDevice(ctx, store.Device{ID: id(n), Identity: json.RawMessage(`{"mac":"02:00:00:00:00:0` + n + `"}`),
					KeyFingerprint: strings.Repeat(n, 64), Status: store.DeviceAccepted, FirstSeen: now, LastSeen: now}); err != nil {
					t.Fatal(err)
				}
			}
			for _, s := range []store.RemoteSession{
				{ID: "3f9c2a71e5d04b8a", Operator: "alice", Device: id("1"), Kind: "terminal", Commit: sha, Source: "192.0.2.7", Started: now.Add(-2 * time.Hour), RecordInput: true, Protocols: []string{"shell"}},
				{ID: "8e1d44c0a9b7f312", Operator: "alice", Device: id("2"), Kind: "terminal", Commit: sha, Source: "192.0.2.7", Started: now.Add(-time.Minute), Protocols: []string{"portforward"}},
			} {
				if ok, _, err := rs.StartSession(ctx, s, time.Hour, 0, 0); err != nil || !ok {
					t.Fatalf("start %s: %v %v", s.ID, ok, err)
				}
			}
			if err := rs.EndSession(ctx, "3f9c2a71e5d04b8a", now.Add(-110*time.Minute), "closed",
				store.RemoteTraffic{ToDevice: 42, FromDevice: 1 << 20}, []byte("uptime\r\x1b[31mrm -rf /tmp/x\r")); err != nil {
				t.Fatal(err)
			}
		})
	for i, a := range conn {
		if a == "--server" {
			url = conn[i+1]
		}
	}
	return conn, url
}

// TestGoldenSessions: gitfleet sessions, audit operator and a device's
// audit with its sessions, as text and --json.
func TestGoldenSessions(t *testing.T) {
	conn, _ := sessionsServer(t)
	for _, c := range []struct {
		name string
		args []string
	}{
		{"sessions", []string{"sessions", "--input"}},
		{"sessions-open", []string{"sessions", "--open", "--device", "sim-002"}},
		{"audit-operator", []string{"audit", "operator", "alice"}},
		{"audit-device-sessions", []string{"audit", "sim-001", "--device"}},
	} {
		for _, asJSON := range []bool{false, true} {
			args, file := c.args, c.name+".txt"
			if asJSON {
				args, file = append(append([]string{}, c.args...), "--json"), c.name+".json"
			}
			t.Run(file, func(t *testing.T) {
				stdout, stderr, err := gitfleet(t, append(append([]string{}, args...), conn...)...)
				if err != nil {
					t.Fatalf("gitfleet %s: %v\n%s", strings.Join(args, " "), err, stderr)
				}
				if asJSON && !json.Valid([]byte(stdout)) {
					t.Fatalf("--json printed no JSON:\n%s", stdout)
				}
				if !asJSON && strings.Contains(stdout, "\x1b") {
					t.Fatalf("a terminal escape reached the output:\n%q", stdout)
				}
				got := "$ gitfleet " + strings.Join(args, " ") + "\n" + normalize(stdout, !asJSON)
				if stderr != "" {
					got += "-- stderr --\n" + normalize(stderr, true)
				}
				compareGolden(t, filepath.Join("testdata", "golden", file), got)
			})
		}
	}
	if _, stderr, err := gitfleet(t, append([]string{"sessions", "--operator", "bob"}, conn...)...); err != nil || !strings.Contains(stderr, "no remote sessions recorded (of operator bob)") {
		t.Errorf("sessions of bob: %v %q", err, stderr)
	}
	if _, _, err := gitfleet(t, append([]string{"audit", "operator", "alcie"}, conn...)...); err == nil {
		t.Error("audit of an unknown operator succeeded")
	}
}

// gitfleet login --ssh-key: the session token is written where mender-cli
// reads it and works as an operator's bearer token; a key that is not the
// operator's is refused.
func TestLoginSSHKey(t *testing.T) {
	conn, url := sessionsServer(t)
	priv, _ := goldenOperatorKey(t)
	dir := t.TempDir()
	block, err := ssh.MarshalPrivateKey(priv, "alice@laptop")
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "id_ed25519")
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	var ca string
	for i, a := range conn {
		if a == "--ca-cert" {
			ca = conn[i+1]
		}
	}
	t.Setenv("XDG_CACHE_HOME", filepath.Join(dir, "cache"))
	stdout, stderr, err := gitfleet(t, "login", "--ssh-key", keyFile, "--operator", "alice", "--server", url, "--ca-cert", ca)
	if err != nil {
		t.Fatalf("login: %v\n%s", err, stderr)
	}
	tok, err := os.ReadFile(filepath.Join(dir, "cache", "mender", "authtoken"))
	if err != nil || string(tok) != strings.TrimSpace(stdout) || !strings.Contains(stderr, "logged in as operator alice") {
		t.Fatalf("token file %q (%v), stdout %q, stderr %q", tok, err, stdout, stderr)
	}
	// The token lists alice's devices, as mender-cli devices list asks.
	pemCA, _ := os.ReadFile(ca)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pemCA)
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	req, _ := http.NewRequest("GET", url+"/api/management/v2/devauth/devices", nil)
	req.Header.Set("Authorization", "Bearer "+string(tok))
	rsp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var devs []struct {
		ID string `json:"id"`
	}
	json.NewDecoder(rsp.Body).Decode(&devs)
	rsp.Body.Close()
	if rsp.StatusCode != 200 || len(devs) != 2 { // sim-001 (lab) and sim-002 (listed); sim-004 of lab never seen
		t.Errorf("devices with the SSH session token: %d %v", rsp.StatusCode, devs)
	}

	// Another key: refused, nothing written.
	_, other, _ := ed25519.GenerateKey(nil)
	block, _ = ssh.MarshalPrivateKey(other, "")
	otherFile := filepath.Join(dir, "other")
	os.WriteFile(otherFile, pem.EncodeToMemory(block), 0o600)
	_, stderr, err = gitfleet(t, "login", "--ssh-key", otherFile, "--operator", "alice", "--server", url, "--ca-cert", ca, "--mender-token", filepath.Join(dir, "t2"))
	if err == nil || !strings.Contains(stderr+err.Error(), "not by the SSH key") {
		t.Errorf("another key: %v %s", err, stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "t2")); err == nil {
		t.Error("a refused login wrote a token")
	}
	// The public key given by mistake.
	os.WriteFile(keyFile+".pub", ssh.MarshalAuthorizedKey(mustSigner(t, priv).PublicKey()), 0o644)
	if _, _, err := gitfleet(t, "login", "--ssh-key", keyFile+".pub", "--operator", "alice", "--server", url, "--ca-cert", ca); err == nil || !strings.Contains(err.Error(), "public key") {
		t.Errorf("public key as --ssh-key: %v", err)
	}
}

func mustSigner(t *testing.T, k ed25519.PrivateKey) ssh.Signer {
	s, err := ssh.NewSignerFromKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// An expired Operator validates (time passing must not block a commit)
// with a warning at its spec.expires.
func TestValidateWarnsExpiredOperator(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "f.yaml"), []byte(`apiVersion: gitfleet.io/v1
kind: Device
metadata: {name: pi-1}
spec: {identity: {mac: "1"}, trustOnFirstUse: true}
---
apiVersion: gitfleet.io/v1
kind: Operator
metadata: {name: bob}
spec:
  tokenSHA256: 81b637d8fcd2c6da6359e6963113a1170de795e4b725b84d1e0b4cfd9ec58ce9
  expires: "2020-01-01T00:00:00Z"
  access: [{devices: [pi-1]}]
`), 0o644)
	stdout, _, err := gitfleet(t, "validate", dir)
	if err != nil || !strings.Contains(stdout, "f.yaml:11:12: warn: spec.expires: operator bob expired on 2020-01-01T00:00:00Z") || !strings.Contains(stdout, "1 warning") {
		t.Errorf("validate: %v\n%s", err, stdout)
	}
}
