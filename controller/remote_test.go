package controller_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/controller"
	"github.com/gitfleet/gitfleet/controller/deviceapi"
	"github.com/gitfleet/gitfleet/controller/gitsource/gittest"
	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gorilla/websocket"
)

// The deviceconnect routes are served outside the management token's
// group: operators authenticate with their own credentials, devices with
// their device token, and the session websocket upgrades through the
// server's bounds (stall writer, echo's response).
func TestRemoteRoutes(t *testing.T) {
	var st store.Store
	tc := startController(t, func(o *controller.Options, _ *controller.ServerOptions) { st = o.Store })
	rs, ok := st.(store.RemoteSessions)
	if !ok {
		t.Fatal("the embedded store does not implement store.RemoteSessions")
	}
	if tc.Remote() == nil {
		t.Fatal("the relay is off")
	}
	sha := tc.Repo.Commit(map[string]string{"operators/alice.yaml": operatorManifest("alice-token", "    - groups: [sims]\n      fileTransfer: true")}, "alice may reach the sims")
	tc.Trigger()
	await(t, tc, "alice's commit live", func() bool { return tc.Live().Commit.SHA == sha })
	ctx := context.Background()
	id := deviceapi.DeviceID(deviceapi.Attributes{"mac": "02:00:00:00:00:01"})
	if _, err := st.SeeDevice(ctx, store.Device{ID: id, Identity: json.RawMessage(`{"mac":"02:00:00:00:00:01"}`), KeyFingerprint: strings.Repeat("a", 64),
		Status: store.DeviceAccepted, LastSeen: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := st.SetInventory(ctx, id, json.RawMessage(`{"device_type":"gitfleet-sim"}`)); err != nil {
		t.Fatal(err)
	}
	base := "/api/management/v1/deviceconnect/devices/" + id

	// Without an operator's token (the management token is not one).
	if code, body := tc.do(t, http.MethodGet, base, "", nil); code != http.StatusUnauthorized || strings.Contains(body, "management") {
		t.Fatalf("with the management token: %d %s", code, body)
	}
	// A device needs its device token.
	req, _ := http.NewRequest(http.MethodGet, tc.URL+"/api/devices/v1/deviceconnect/connect", nil)
	rsp, err := tc.client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	rsp.Body.Close()
	if rsp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("device connect without a token: %d", rsp.StatusCode)
	}
	// Alice, with her personal access token.
	var dev struct{ Status string }
	if code, body := tc.do(t, http.MethodGet, base, "alice-token", &dev); code != http.StatusOK || dev.Status != "disconnected" {
		t.Fatalf("status: %d %s", code, body)
	}
	if code, body := tc.do(t, http.MethodGet, "/api/management/v1/deviceconnect/devices/someone-else", "alice-token", nil); code != http.StatusForbidden {
		t.Fatalf("a device alice may not reach: %d %s", code, body)
	}
	// The device's connection, as its replica records it.
	if err := rs.SetConnected(ctx, id, "test/1", time.Minute); err != nil {
		t.Fatal(err)
	}
	if code, body := tc.do(t, http.MethodGet, base, "alice-token", &dev); code != http.StatusOK || dev.Status != "connected" {
		t.Fatalf("status: %d %s", code, body)
	}
	d := websocket.Dialer{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, HandshakeTimeout: deadline}
	ws, wrsp, err := d.Dial("wss://"+tc.Addr+base+"/connect", http.Header{"Authorization": {"Bearer alice-token"}})
	if err != nil {
		var b []byte
		if wrsp != nil {
			b, _ = io.ReadAll(wrsp.Body)
		}
		t.Fatalf("session websocket: %v %s", err, b)
	}
	defer ws.Close()
	var open []store.RemoteSession
	await(t, tc, "the session recorded", func() bool {
		open, _ = rs.Sessions(ctx, store.RemoteSessionFilter{Operator: "alice", OpenOnly: true}, 10)
		return len(open) == 1
	})
	if s := open[0]; s.Device != id || s.Kind != "terminal" || s.Commit != sha {
		t.Fatalf("session %+v", s)
	}
	ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	await(t, tc, "the session ended", func() bool {
		s, err := rs.Session(ctx, open[0].ID)
		return err == nil && s.Reason == "closed"
	})

	// A commit that removes alice ends her open session at once: the
	// commit going live signals the operator access's Changed, and the
	// relay checks its sessions again.
	ws2, _, err := d.Dial("wss://"+tc.Addr+base+"/connect", http.Header{"Authorization": {"Bearer alice-token"}})
	if err != nil {
		t.Fatalf("second session: %v", err)
	}
	defer ws2.Close()
	await(t, tc, "the second session recorded", func() bool {
		open, _ = rs.Sessions(ctx, store.RemoteSessionFilter{Operator: "alice", OpenOnly: true}, 10)
		return len(open) == 1
	})
	gone := tc.Repo.Apply(gittest.Change{Remove: []string{"operators/alice.yaml"}, Message: "alice leaves"})
	tc.Trigger()
	await(t, tc, "the removal live", func() bool { return tc.Live().Commit.SHA == gone })
	ws2.SetReadDeadline(time.Now().Add(deadline))
	var closeErr *websocket.CloseError
	for {
		if _, _, err := ws2.ReadMessage(); err != nil {
			if !errors.As(err, &closeErr) {
				t.Fatalf("the session ended without a close frame: %v", err)
			}
			break
		}
	}
	if closeErr.Code != websocket.ClosePolicyViolation || !strings.Contains(closeErr.Text, "alice") {
		t.Fatalf("closed with %d %q", closeErr.Code, closeErr.Text)
	}
	await(t, tc, "the session recorded as operator-removed", func() bool {
		s, err := rs.Session(ctx, open[0].ID)
		return err == nil && s.Reason == "operator-removed"
	})
	// The sessions' events are in the event log (the end's right after
	// the record's).
	kinds := map[string]int{}
	await(t, tc, "the sessions' events", func() bool {
		var evs struct {
			Events []store.Event `json:"events"`
		}
		if code, body := tc.do(t, http.MethodGet, "/api/management/v1/events?limit=100", "", &evs); code != http.StatusOK {
			t.Fatalf("events: %d %s", code, body)
		}
		kinds = map[string]int{}
		for _, e := range evs.Events {
			switch {
			case strings.HasPrefix(e.Kind, "session.") && e.Subject == "device/"+id:
				kinds[e.Kind]++
			case e.Kind == "session.refused" && e.Subject == "device/someone-else":
				kinds["refused someone-else"]++
			}
		}
		return kinds["session.ended"] == 2
	})
	if kinds["session.started"] != 2 || kinds["refused someone-else"] != 1 {
		t.Fatalf("session events %v", kinds)
	}
}
