package controller_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/controller"
	"github.com/gitfleet/gitfleet/controller/deviceapi"
	"github.com/gitfleet/gitfleet/controller/store"
)

func operatorManifest(token string, access string) string {
	sum := sha256.Sum256([]byte(token))
	return `apiVersion: gitfleet.io/v1
kind: Operator
metadata: {name: alice}
spec:
  tokenSHA256: ` + hex.EncodeToString(sum[:]) + `
  access:
` + access + "\n"
}

// The operator routes answer operator credentials and never the
// management token; the sessions and operators views answer the
// management token only.
func TestOperatorAPI(t *testing.T) {
	var st store.Store
	tc := startController(t, func(o *controller.Options, _ *controller.ServerOptions) { st = o.Store })
	sha := tc.Repo.Commit(map[string]string{"operators/alice.yaml": operatorManifest("alice-token", "    - groups: [sims]\n      fileTransfer: true")}, "alice may reach the sims")
	tc.Trigger()
	await(t, tc, "alice's commit live", func() bool { return tc.Live().Commit.SHA == sha })
	// Changed has one reader, the relay of remote sessions: that a commit
	// going live signals it shows in TestRemoteRoutes (a session ended by
	// the commit that removes its operator).

	// mender-cli login: Basic, the answer is the token as text.
	req, _ := http.NewRequest(http.MethodPost, tc.URL+"/api/management/v1/useradm/auth/login", nil)
	req.SetBasicAuth("alice", "alice-token")
	rsp, err := tc.client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	tokb, _ := io.ReadAll(rsp.Body)
	rsp.Body.Close()
	tok := string(tokb)
	if rsp.StatusCode != http.StatusOK || !strings.HasPrefix(tok, "gfo1.") {
		t.Fatalf("login: %d %s", rsp.StatusCode, tok)
	}
	// A device of the sims group authenticated (its inventory says
	// gitfleet-sim): it is listed.
	ctx := context.Background()
	id := deviceapi.DeviceID(deviceapi.Attributes{"mac": "02:00:00:00:00:01"})
	if _, err := st.SeeDevice(ctx, store.Device{ID: id, Identity: json.RawMessage(`{"mac":"02:00:00:00:00:01"}`), KeyFingerprint: strings.Repeat("a", 64),
		Status: store.DeviceAccepted, LastSeen: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := st.SetInventory(ctx, id, json.RawMessage(`{"device_type":"gitfleet-sim"}`)); err != nil {
		t.Fatal(err)
	}
	var devs []struct {
		ID     string `json:"id"`
		Status string `json:"status"`
	}
	if code, body := tc.do(t, http.MethodGet, "/api/management/v2/devauth/devices", tok, &devs); code != http.StatusOK || len(devs) != 1 || devs[0].ID != id {
		t.Fatalf("devices: %d %s", code, body)
	}
	// The management token is not an operator's.
	if code, _ := tc.do(t, http.MethodGet, "/api/management/v2/devauth/devices", "", nil); code != http.StatusUnauthorized {
		t.Errorf("devices with the management token: %d", code)
	}
	// And an operator's token is not the management token.
	if code, _ := tc.do(t, http.MethodGet, "/api/management/v1/sessions", tok, nil); code != http.StatusUnauthorized {
		t.Errorf("sessions with an operator token: %d", code)
	}

	// Sessions recorded by the relay are listed, by operator, by device
	// name or ID, open only.
	rs := st
	now := time.Now()
	for i, s := range []store.RemoteSession{
		{ID: "s1", Operator: "alice", Device: id, Kind: "terminal", Commit: sha, Started: now.Add(-time.Hour), RecordInput: true},
		{ID: "s2", Operator: "alice", Device: id, Kind: "terminal", Commit: sha, Started: now.Add(-time.Minute)},
	} {
		if ok, _, err := rs.StartSession(ctx, s, time.Hour, 0, 0); err != nil || !ok {
			t.Fatalf("session %d: %v %v", i, ok, err)
		}
	}
	if err := rs.EndSession(ctx, "s1", now.Add(-50*time.Minute), "closed", store.RemoteTraffic{ToDevice: 10, FromDevice: 2000}, []byte("uptime\n<script>x</script>\x1b[2J")); err != nil {
		t.Fatal(err)
	}
	var out struct {
		Sessions []controller.SessionView `json:"sessions"`
	}
	if code, body := tc.do(t, http.MethodGet, "/api/management/v1/sessions?device=sim-001", "", &out); code != http.StatusOK || len(out.Sessions) != 2 ||
		out.Sessions[0].ID != "s2" || out.Sessions[1].Input != "uptime\n<script>x</script>\x1b[2J" || out.Sessions[1].DeviceName != "sim-001" || out.Sessions[1].Traffic.FromDevice != 2000 {
		t.Fatalf("sessions of sim-001: %d %s", code, body)
	}
	if code, body := tc.do(t, http.MethodGet, "/api/management/v1/sessions?operator=alice&open=true", "", &out); code != http.StatusOK || len(out.Sessions) != 1 || out.Sessions[0].ID != "s2" {
		t.Fatalf("open sessions of alice: %d %s", code, body)
	}
	if code, _ := tc.do(t, http.MethodGet, "/api/management/v1/sessions?open=maybe", "", nil); code != http.StatusBadRequest {
		t.Errorf("open=maybe: %d", code)
	}

	// The dashboard's page: the typed input of the recorded session only,
	// escaped (no markup, no terminal escape).
	rsp, page := tc.dashDo(t, http.MethodGet, "/ui/sessions?operator=alice", nil, tc.bearer())
	if rsp.StatusCode != http.StatusOK || !strings.Contains(page, "sim-001") || strings.Contains(page, "<script>x") ||
		strings.Contains(page, "\x1b") || !strings.Contains(page, `uptime\n&lt;script&gt;x&lt;/script&gt;\x1b[2J`) || strings.Count(page, `class="session-input"`) != 1 {
		t.Errorf("sessions page: %d\n%s", rsp.StatusCode, page)
	}
	if rsp, _ := tc.dashDo(t, http.MethodGet, "/ui/sessions", nil, nil); rsp.StatusCode != http.StatusUnauthorized {
		t.Errorf("sessions page without a token: %d", rsp.StatusCode)
	}

	// The operator's audit: manifest, commits, sessions.
	var v controller.OperatorView
	if code, body := tc.do(t, http.MethodGet, "/api/management/v1/operators/alice", "", &v); code != http.StatusOK || !v.Declared ||
		v.Manifest == nil || v.Manifest.File != "operators/alice.yaml" || len(v.Commits) != 1 || v.Commits[0].SHA != sha || len(v.Sessions) != 2 || !v.Token {
		t.Fatalf("operator audit: %d %s", code, body)
	}
	if code, body := tc.do(t, http.MethodGet, "/api/management/v1/operators/alcie", "", nil); code != http.StatusNotFound || !strings.Contains(body, "alice") {
		t.Errorf("unknown operator: %d %s", code, body)
	}

	// Removed from Git: the session token stops working; the audit still
	// shows the sessions.
	gone := tc.Repo.Commit(map[string]string{"operators/alice.yaml": ""}, "alice leaves")
	tc.Trigger()
	await(t, tc, "alice removed", func() bool { return tc.Live().Commit.SHA == gone })
	if code, body := tc.do(t, http.MethodGet, "/api/management/v2/devauth/devices", tok, nil); code != http.StatusUnauthorized || !strings.Contains(body, "not declared") {
		t.Errorf("devices after alice left Git: %d %s", code, body)
	}
	v = controller.OperatorView{}
	if code, body := tc.do(t, http.MethodGet, "/api/management/v1/operators/alice", "", &v); code != http.StatusOK || v.Declared || len(v.Sessions) != 2 {
		t.Errorf("audit of a removed operator: %d %s", code, body)
	}
}
