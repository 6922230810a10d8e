package operators

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	"github.com/gitfleet/gitfleet/controller/deviceapi"
	"github.com/gitfleet/gitfleet/controller/deviceconnect"
	"github.com/gitfleet/gitfleet/controller/reconcile"
	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gitfleet/gitfleet/controller/store/embedded"
	"github.com/gitfleet/gitfleet/schema"
	"github.com/labstack/echo/v5"
	"golang.org/x/crypto/ssh"
)

const aliceToken = "alice-personal-token"

func sha(s string) string { return tokenHash(s) }

// env is an Access over a real embedded store and a fleet the test can
// change (as commits going live would).
type env struct {
	t     *testing.T
	a     *Access
	st    *embedded.Store
	live  atomic.Pointer[reconcile.Snapshot]
	clock atomic.Int64 // unix seconds
	srv   *httptest.Server
	key   ssh.Signer // alice's SSH key
	seq   int
}

const devices = `apiVersion: gitfleet.io/v1
kind: Device
metadata: {name: pi-1}
spec: {identity: {mac: "02:00:00:00:00:01"}, trustOnFirstUse: true}
---
apiVersion: gitfleet.io/v1
kind: Device
metadata: {name: pi-2}
spec: {identity: {mac: "02:00:00:00:00:02"}, trustOnFirstUse: true}
---
apiVersion: gitfleet.io/v1
kind: Device
metadata: {name: pi-3}
spec: {identity: {mac: "02:00:00:00:00:03"}, trustOnFirstUse: true}
---
apiVersion: gitfleet.io/v1
kind: DeviceGroup
metadata: {name: lab}
spec: {members: [pi-1], remoteSessions: 1}
---
apiVersion: gitfleet.io/v1
kind: DeviceGroup
metadata: {name: eu}
spec:
  selector: {inventory: {region: eu}}
  remoteSessions: 5
---
apiVersion: gitfleet.io/v1
kind: DeviceGroup
metadata: {name: vault}
spec: {members: [pi-3], remoteSessions: 0}
---
apiVersion: gitfleet.io/v1
kind: Artifact
metadata: {name: app-2}
spec: {source: artifacts/app-2.mender, artifactName: app-2.0, deviceTypes: [pi4], signedBy: []}
`

func aliceManifest(tokenHash, key, access string) string {
	return fmt.Sprintf(`apiVersion: gitfleet.io/v1
kind: Operator
metadata: {name: alice}
spec:
  tokenSHA256: %s
  sshPublicKey: %s
  access:
%s
  limits: {sessions: 3, idleTimeout: 5m, bandwidth: 1MiB}
`, tokenHash, key, access)
}

const aliceAccess = `    - groups: [lab]
      fileTransfer: true
    - groups: [eu]
      portForward: true
      recordInput: true`

const bob = `apiVersion: gitfleet.io/v1
kind: Operator
metadata: {name: bob}
spec:
  tokenSHA256: ` + "81b637d8fcd2c6da6359e6963113a1170de795e4b725b84d1e0b4cfd9ec58ce9" + `
  expires: "2020-01-01T00:00:00Z"
  access: [{devices: [pi-1]}]
`

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t}
	e.clock.Store(time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC).Unix())
	st, err := embedded.Open(filepath.Join(t.TempDir(), embedded.FileName), embedded.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e.st = st
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	if e.key, err = ssh.NewSignerFromKey(priv); err != nil {
		t.Fatal(err)
	}
	a, err := New(Options{Live: e.live.Load, Store: st, Now: func() time.Time { return time.Unix(e.clock.Load(), 0) }})
	if err != nil {
		t.Fatal(err)
	}
	e.a = a
	e.commit(aliceManifest(sha(aliceToken), e.authorizedKey(), aliceAccess), bob)
	ctx := context.Background()
	for i, region := range []string{"us", "eu", "eu"} {
		id := e.id(i + 1)
		identity, _ := json.Marshal(map[string]string{"mac": fmt.Sprintf("02:00:00:00:00:0%d", i+1)})
		if _, err := st.SeeDevice(ctx, store.Device{ID: id, Identity: identity, KeyFingerprint: fmt.Sprintf("%064d", i+1),
			Status: store.DeviceAccepted, LastSeen: time.Now()}); err != nil {
			t.Fatal(err)
		}
		if err := st.SetInventory(ctx, id, json.RawMessage(`{"region":"`+region+`","device_type":"pi4"}`)); err != nil {
			t.Fatal(err)
		}
	}
	ec := echo.New()
	ec.HTTPErrorHandler = deviceapi.JSONErrors
	a.Register(ec)
	e.srv = httptest.NewServer(ec)
	t.Cleanup(e.srv.Close)
	return e
}

func (e *env) authorizedKey() string {
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(e.key.PublicKey()))) + " alice@laptop"
}

// id returns the device ID of pi-N.
func (e *env) id(n int) string {
	return deviceapi.DeviceID(deviceapi.Attributes{"mac": fmt.Sprintf("02:00:00:00:00:0%d", n)})
}

// commit makes a fleet of the devices and these operator manifests live.
func (e *env) commit(ops ...string) {
	e.t.Helper()
	fsys := fstest.MapFS{"fleet.yaml": {Data: []byte(devices)}}
	for i, o := range ops {
		fsys[fmt.Sprintf("operators/%d.yaml", i)] = &fstest.MapFile{Data: []byte(o)}
	}
	f, err := schema.Load(fsys)
	if err != nil {
		e.t.Fatal(err)
	}
	e.seq++
	e.live.Store(&reconcile.Snapshot{Commit: store.CommitRecord{SHA: fmt.Sprintf("%040d", e.seq)}, Fleet: f})
	e.a.Notify()
}

func (e *env) request(method, path, bearer string, body string) (*http.Response, string) {
	e.t.Helper()
	req, _ := http.NewRequest(method, e.srv.URL+path, strings.NewReader(body))
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	return e.do(req)
}

func (e *env) do(req *http.Request) (*http.Response, string) {
	e.t.Helper()
	rsp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer rsp.Body.Close()
	b, _ := io.ReadAll(rsp.Body)
	return rsp, string(b)
}

func (e *env) auth(tok string) (string, error) {
	req := httptest.NewRequest("GET", "/", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	return e.a.Operator(req)
}

// login logs alice in as mender-cli does and returns the session token.
func (e *env) login(user, pass string) (int, string) {
	e.t.Helper()
	req, _ := http.NewRequest("POST", e.srv.URL+LoginPath, nil)
	req.SetBasicAuth(user, pass)
	req.Header.Set("Content-Type", "application/json")
	rsp, body := e.do(req)
	return rsp.StatusCode, body
}

func TestPersonalAccessToken(t *testing.T) {
	e := newEnv(t)
	if op, err := e.auth(aliceToken); err != nil || op != "alice" {
		t.Fatalf("alice's token: %q, %v", op, err)
	}
	_, err := e.auth("not-a-token")
	if !errors.Is(err, deviceconnect.ErrUnauthenticated) || !strings.Contains(err.Error(), "sha256sum") {
		t.Errorf("unknown token: %v", err)
	}
	if _, err := e.auth("bob"); !errors.Is(err, deviceconnect.ErrUnauthenticated) || !strings.Contains(err.Error(), "expired on 2020-01-01") {
		t.Errorf("expired operator's token: %v", err)
	}
	req := httptest.NewRequest("GET", "/", nil)
	if _, err := e.a.Operator(req); !errors.Is(err, deviceconnect.ErrUnauthenticated) {
		t.Errorf("no token: %v", err)
	}
}

func TestSessionTokenRevokedByGit(t *testing.T) {
	e := newEnv(t)
	code, tok := e.login("alice", aliceToken)
	if code != http.StatusOK || !strings.HasPrefix(tok, tokenPrefix) {
		t.Fatalf("login: %d %q", code, tok)
	}
	if op, err := e.auth(tok); err != nil || op != "alice" {
		t.Fatalf("session token: %q, %v", op, err)
	}
	if code, body := e.login("alice", "wrong"); code != http.StatusUnauthorized || !strings.Contains(body, "wrong credential") {
		t.Errorf("wrong password: %d %s", code, body)
	}
	if code, _ := e.login("bob", "bob"); code != http.StatusUnauthorized {
		t.Errorf("expired operator logged in: %d", code)
	}
	// A token whose MAC does not match is refused.
	forged := tok[:len(tok)-4] + "AAAA"
	if _, err := e.auth(forged); !errors.Is(err, deviceconnect.ErrUnauthenticated) {
		t.Errorf("forged token: %v", err)
	}

	// The token's hash changes in Git: the session token stops working.
	e.commit(aliceManifest(sha("a-new-token"), e.authorizedKey(), aliceAccess))
	if _, err := e.auth(tok); err == nil || !strings.Contains(err.Error(), "changed in Git") {
		t.Errorf("after the token changed: %v", err)
	}
	e.commit(aliceManifest(sha(aliceToken), e.authorizedKey(), aliceAccess))
	if _, err := e.auth(tok); err != nil {
		t.Errorf("after the token came back: %v", err)
	}
	// The operator leaves Git.
	e.commit(bob)
	if _, err := e.auth(tok); err == nil || !strings.Contains(err.Error(), "not declared") {
		t.Errorf("after alice was removed: %v", err)
	}
	// Session tokens expire.
	e.commit(aliceManifest(sha(aliceToken), e.authorizedKey(), aliceAccess))
	e.clock.Add(int64(DefaultSessionTTL / time.Second))
	if _, err := e.auth(tok); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Errorf("after its TTL: %v", err)
	}
}

func (e *env) sshLogin(signer ssh.Signer, operator string, challenge string) (int, string) {
	e.t.Helper()
	sig, err := signer.Sign(rand.Reader, SignedData(challenge))
	if err != nil {
		e.t.Fatal(err)
	}
	js, _ := json.Marshal(SSHLogin{Operator: operator, Challenge: challenge, Signature: base64.StdEncoding.EncodeToString(ssh.Marshal(sig))})
	rsp, body := e.request("POST", SSHLoginPath, "", string(js))
	return rsp.StatusCode, body
}

func (e *env) challenge(operator string) string {
	e.t.Helper()
	rsp, body := e.request("POST", ChallengePath, "", `{"operator":"`+operator+`"}`)
	var c Challenge
	if rsp.StatusCode != http.StatusOK || json.Unmarshal([]byte(body), &c) != nil {
		e.t.Fatalf("challenge: %d %s", rsp.StatusCode, body)
	}
	return c.Challenge
}

func TestSSHLogin(t *testing.T) {
	e := newEnv(t)
	c := e.challenge("alice")
	code, body := e.sshLogin(e.key, "alice", c)
	var s Session
	if code != http.StatusOK || json.Unmarshal([]byte(body), &s) != nil || s.Operator != "alice" {
		t.Fatalf("ssh login: %d %s", code, body)
	}
	if op, err := e.auth(s.Token); err != nil || op != "alice" {
		t.Fatalf("ssh session token: %q %v", op, err)
	}
	// The same signed challenge again: a replay.
	if code, body := e.sshLogin(e.key, "alice", c); code != http.StatusUnauthorized || !strings.Contains(body, "used already") {
		t.Errorf("replay: %d %s", code, body)
	}
	// Another key.
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	otherSigner, _ := ssh.NewSignerFromKey(other)
	if code, body := e.sshLogin(otherSigner, "alice", e.challenge("alice")); code != http.StatusUnauthorized || !strings.Contains(body, "not by the SSH key") {
		t.Errorf("wrong key: %d %s", code, body)
	}
	// A challenge issued for another operator.
	if code, body := e.sshLogin(e.key, "alice", e.challenge("bob")); code != http.StatusUnauthorized || !strings.Contains(body, "another operator") {
		t.Errorf("challenge of bob: %d %s", code, body)
	}
	// A stale challenge.
	stale := e.challenge("alice")
	e.clock.Add(int64(ChallengeTTL/time.Second) + 1)
	if code, body := e.sshLogin(e.key, "alice", stale); code != http.StatusUnauthorized || !strings.Contains(body, "expired") {
		t.Errorf("stale challenge: %d %s", code, body)
	}
	// The SSH key changes in Git: the session token stops working; the
	// token hash changing does not touch an SSH session.
	e.commit(aliceManifest(sha("another"), e.authorizedKey(), aliceAccess))
	if _, err := e.auth(s.Token); err != nil {
		t.Errorf("ssh session after the token hash changed: %v", err)
	}
	e.commit(aliceManifest(sha(aliceToken), strings.TrimSpace(string(ssh.MarshalAuthorizedKey(otherSigner.PublicKey()))), aliceAccess))
	if _, err := e.auth(s.Token); err == nil || !strings.Contains(err.Error(), "SSH key") {
		t.Errorf("ssh session after the key changed: %v", err)
	}
}

func TestFailedLoginsLimited(t *testing.T) {
	e := newEnv(t)
	for i := 0; i < loginBurst; i++ {
		if code, _ := e.login("alice", "guess"); code != http.StatusUnauthorized {
			t.Fatalf("attempt %d: %d", i, code)
		}
	}
	if code, _ := e.login("alice", aliceToken); code != http.StatusTooManyRequests {
		t.Errorf("after %d failures the right token got %d, want 429", loginBurst, code)
	}
	rsp, _ := e.request("GET", DevicesPath, aliceToken, "")
	if rsp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("listing from a blocked source: %d", rsp.StatusCode)
	}
}

func TestGrant(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	// pi-1: a static member of lab (file transfer, at most 1 session).
	g, err := e.a.Grant(ctx, "alice", e.id(1))
	if err != nil {
		t.Fatal(err)
	}
	want := deviceconnect.Grant{Operator: "alice", Commit: fmt.Sprintf("%040d", 1), Device: e.id(1), Terminal: true, FileTransfer: true,
		OperatorSessions: 3, DeviceSessions: 1, IdleTimeout: 5 * time.Minute, BytesPerSecond: 1 << 20}
	if g != want {
		t.Errorf("pi-1 grant = %+v\nwant %+v", g, want)
	}
	// The same device by name.
	if g2, err := e.a.Grant(ctx, "alice", "pi-1"); err != nil || g2 != want {
		t.Errorf("pi-1 by name: %+v %v", g2, err)
	}
	// pi-2: matched by eu's selector on its inventory (port forward,
	// input recorded, eu's limit of 5).
	g, err = e.a.Grant(ctx, "alice", e.id(2))
	if err != nil || g.FileTransfer || !g.PortForward || !g.RecordInput || g.DeviceSessions != 5 {
		t.Errorf("pi-2 grant = %+v, %v", g, err)
	}
	// pi-3 is in eu by inventory too, but in vault, which allows none.
	if _, err := e.a.Grant(ctx, "alice", e.id(3)); !errors.Is(err, deviceconnect.ErrForbidden) || !strings.Contains(err.Error(), "vault") {
		t.Errorf("pi-3: %v", err)
	}
	// Moved out of eu: pi-2 is no longer covered.
	if err := e.st.SetInventory(ctx, e.id(2), json.RawMessage(`{"region":"us"}`)); err != nil {
		t.Fatal(err)
	}
	_, err = e.a.Grant(ctx, "alice", e.id(2))
	if !errors.Is(err, deviceconnect.ErrForbidden) || !strings.Contains(err.Error(), "not listed for operator alice in operators/0.yaml:1") {
		t.Errorf("pi-2 out of eu: %v", err)
	}
	// Listed by name in an access entry.
	e.commit(aliceManifest(sha(aliceToken), e.authorizedKey(), "    - devices: [pi-2]"), bob)
	if g, err := e.a.Grant(ctx, "alice", e.id(2)); err != nil || g.FileTransfer || g.PortForward || g.DeviceSessions != 2 {
		t.Errorf("pi-2 by name: %+v %v", g, err)
	}
	if _, err := e.a.Grant(ctx, "bob", "pi-1"); !errors.Is(err, deviceconnect.ErrExpired) || !strings.Contains(err.Error(), "expired on 2020-01-01") {
		t.Errorf("bob: %v", err)
	}
	if _, err := e.a.Grant(ctx, "mallory", "pi-1"); !errors.Is(err, deviceconnect.ErrOperatorRemoved) {
		t.Errorf("unknown operator: %v", err)
	}
	if _, err := e.a.Grant(ctx, "alice", "0123456789abcdef0123456789abcdef"); !errors.Is(err, deviceconnect.ErrForbidden) {
		t.Errorf("unknown device: %v", err)
	}
}

func TestChangedSignalled(t *testing.T) {
	e := newEnv(t)
	select {
	case <-e.a.Changed():
	default:
		t.Fatal("Changed not signalled after a commit went live")
	}
	select {
	case <-e.a.Changed():
		t.Fatal("Changed signalled twice for one commit")
	default:
	}
	e.commit(bob)
	select {
	case <-e.a.Changed():
	default:
		t.Fatal("Changed not signalled after the next commit")
	}
}

// mender-cli 1.9's shapes (client/devices and client/deployments).
type cliDevice struct {
	ID           string `json:"id"`
	IdentityData struct {
		Mac string `json:"mac"`
	} `json:"identity_data"`
	Status    string `json:"status"`
	CreatedTs string `json:"created_ts"`
	UpdatedTs string `json:"updated_ts"`
	AuthSets  []struct {
		ID     string `json:"id"`
		PubKey string `json:"pubkey"`
		Status string `json:"status"`
		Ts     string `json:"ts"`
	} `json:"auth_sets"`
	Decommissioning bool `json:"decommissioning"`
}

type cliArtifact struct {
	ID                    string   `json:"id"`
	Name                  string   `json:"name"`
	DeviceTypesCompatible []string `json:"device_types_compatible"`
	Info                  struct {
		Format  string `json:"format"`
		Version int    `json:"version"`
	} `json:"info"`
	Signed           bool `json:"signed"`
	ArtifactProvides struct {
		ArtifactName string `json:"artifact_name"`
	} `json:"artifact_provides"`
	Modified time.Time `json:"modified"`
}

func TestListings(t *testing.T) {
	e := newEnv(t)
	_, tok := e.login("alice", aliceToken)
	rsp, body := e.request("GET", DevicesPath, tok, "")
	var devs []cliDevice
	if rsp.StatusCode != http.StatusOK || json.Unmarshal([]byte(body), &devs) != nil {
		t.Fatalf("devices: %d %s", rsp.StatusCode, body)
	}
	// pi-1 (lab), pi-2 and pi-3 (eu by inventory); vault refuses
	// sessions to pi-3, but it is covered and listed.
	if len(devs) != 3 || devs[0].ID != e.id(1) || devs[1].ID != e.id(2) || devs[0].IdentityData.Mac != "02:00:00:00:00:01" ||
		devs[0].Status != "accepted" || len(devs[0].AuthSets) != 1 || devs[0].CreatedTs == "" {
		t.Errorf("devices = %s", body)
	}
	rsp, body = e.request("GET", DevicesPath+"?page=2&per_page=2", tok, "")
	if err := json.Unmarshal([]byte(body), &devs); err != nil || rsp.StatusCode != 200 || len(devs) != 1 || devs[0].ID != e.id(3) {
		t.Errorf("page 2: %s", body)
	}
	if rsp, _ := e.request("GET", DevicesPath+"?per_page=0", tok, ""); rsp.StatusCode != http.StatusBadRequest {
		t.Errorf("per_page=0: %d", rsp.StatusCode)
	}
	// Another operator's listing is theirs: only pi-2 when listed alone.
	e.commit(aliceManifest(sha(aliceToken), e.authorizedKey(), "    - devices: [pi-2]"))
	_, body = e.request("GET", DevicesPath, aliceToken, "")
	if err := json.Unmarshal([]byte(body), &devs); err != nil || len(devs) != 1 || devs[0].ID != e.id(2) {
		t.Errorf("alice listed for pi-2 only: %s", body)
	}
	rsp, body = e.request("GET", DevicesPath, "", "")
	if rsp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "Bearer") {
		t.Errorf("no token: %d %s", rsp.StatusCode, body)
	}
	rsp, body = e.request("GET", ArtifactsPath, tok, "")
	var arts []cliArtifact
	if rsp.StatusCode != http.StatusOK || json.Unmarshal([]byte(body), &arts) != nil || len(arts) != 1 ||
		arts[0].Name != "app-2.0" || arts[0].ArtifactProvides.ArtifactName != "app-2.0" || arts[0].Info.Format != "mender" || arts[0].DeviceTypesCompatible[0] != "pi4" {
		t.Errorf("artifacts: %d %s", rsp.StatusCode, body)
	}
}
