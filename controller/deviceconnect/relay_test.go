package deviceconnect

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gitfleet/gitfleet/device/remote/wire"
	"github.com/gorilla/websocket"
)

func fullGrant() Grant {
	return Grant{Terminal: true, FileTransfer: true, PortForward: true}
}

func TestShellRelayedBothWays(t *testing.T) {
	sessions, auth := newMemSessions(), newFakeAuth()
	auth.set("alice", "dev1", Grant{Terminal: true, RecordInput: true})
	events := &eventLog{}
	rp := startReplica(t, "a", sessions, auth, func(o *Options) { o.Events = events.add })
	dev := connectDevice(t, rp, "dev1")

	// What mender-cli terminal asks first.
	rsp, err := rp.client().Do(operatorReq(t, "GET", rp.srv.URL+ManagementPrefix+"/devices/dev1", "alice", nil))
	if err != nil {
		t.Fatal(err)
	}
	var st struct{ Status string }
	json.NewDecoder(rsp.Body).Decode(&st)
	rsp.Body.Close()
	if rsp.StatusCode != 200 || st.Status != "connected" {
		t.Fatalf("device status: %d %+v", rsp.StatusCode, st)
	}

	op := mustSession(t, rp, "alice", "dev1")
	sid := startShell(t, op)
	if sid == "" {
		t.Fatal("the relay gave the shell no session ID")
	}
	typeText(op, sid, "uname -a\n")
	out := op.next(is(wire.ProtoShell, wire.TypeShell))
	if string(out.Body) != "echo:uname -a\n" {
		t.Fatalf("output %q", out.Body)
	}
	if !int64Prop(out, wire.PropStatus) {
		t.Fatalf("the device's status reached the operator as % x, not as the int64 mender-cli reads", out.Header.Properties[wire.PropStatus])
	}
	// The device saw the operator's messages stamped with the session
	// and the operator.
	for _, m := range dev.received(func(m *wire.Msg) bool { return m.Header.Proto == wire.ProtoShell }) {
		if m.Header.SessionID != sid || strProp(m, wire.PropUserID) != "alice" {
			t.Fatalf("device got %s/%s with sid %q user %q; want %q alice", protoName(m.Header.Proto), m.Header.MsgType, m.Header.SessionID, strProp(m, wire.PropUserID), sid)
		}
	}
	// Terminal size properties pass unchanged.
	newMsg := dev.received(is(wire.ProtoShell, wire.TypeNew))[0]
	if intProp(newMsg, "terminal_width") != 80 {
		t.Fatalf("terminal_width did not pass: %v", newMsg.Header.Properties)
	}

	// A message larger than mender-connect reads is refused, not relayed
	// (it would close the device's connection).
	typeText(op, sid, strings.Repeat("x", 9000))
	if m := op.next(is(wire.ProtoShell, wire.TypeShell)); intProp(m, wire.PropStatus) != wire.ShellError || !strings.Contains(string(m.Body), "at most 8192 bytes") {
		t.Fatalf("an oversized message: status %d %q", intProp(m, wire.PropStatus), m.Body)
	}
	typeText(op, sid, "still\n")
	if out := op.next(is(wire.ProtoShell, wire.TypeShell)); string(out.Body) != "echo:still\n" {
		t.Fatalf("after an oversized message: %q", out.Body)
	}

	// mender-cli's exit: stop the shell, close.
	op.send(&wire.Msg{Header: wire.Header{Proto: wire.ProtoShell, MsgType: wire.TypeStop, SessionID: sid}})
	op.next(is(wire.ProtoShell, wire.TypeStop))
	op.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	rec := endedSession(t, sessions, "alice")
	if rec.Reason != ReasonClosed || rec.Kind != KindTerminal || rec.Device != "dev1" || rec.Commit != "c0ffee" || rec.Replica != "a" || rec.Source != "127.0.0.1" {
		t.Fatalf("record: %+v", rec)
	}
	if rec.Input != "uname -a\nstill\n" {
		t.Fatalf("recorded input %q", rec.Input)
	}
	if !slices.Equal(rec.Protocols, []string{"shell"}) {
		t.Fatalf("protocols %v", rec.Protocols)
	}
	if rec.Traffic.ToDevice == 0 || rec.Traffic.FromDevice == 0 {
		t.Fatalf("traffic not counted: %+v", rec.Traffic)
	}
	// The session's events, one of each, told apart by the session.
	started, ended := events.of(EventStarted), events.of(EventEnded)
	if len(started) != 1 || len(ended) != 1 {
		t.Fatalf("events: %d started, %d ended", len(started), len(ended))
	}
	for _, e := range []store.Event{started[0], ended[0]} {
		if e.Subject != "device/dev1" || e.Commit != "c0ffee" || e.Occurrence != rec.ID || !strings.Contains(e.Message, "alice") {
			t.Fatalf("event %+v", e)
		}
	}
	if want := fmt.Sprintf("ended: closed (protocols used: shell; %d bytes to the device, %d from it)", rec.Traffic.ToDevice, rec.Traffic.FromDevice); !strings.Contains(ended[0].Message, want) {
		t.Fatalf("ended says %q, want %q", ended[0].Message, want)
	}
}

func operatorReq(t testing.TB, method, url, operator string, body io.Reader) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	if operator != "" {
		req.Header.Set("Authorization", "Bearer tok-"+operator)
	}
	return req
}

func TestOperatorLeavingStopsTheDeviceShell(t *testing.T) {
	sessions, auth := newMemSessions(), newFakeAuth()
	auth.set("alice", "dev1", fullGrant())
	rp := startReplica(t, "a", sessions, auth, nil)
	dev := connectDevice(t, rp, "dev1")
	op := mustSession(t, rp, "alice", "dev1")
	sid := startShell(t, op)
	op.ws.Close() // the operator's connection drops
	waitFor(t, "the device to get a shell stop and a close", func() bool {
		stops := dev.received(func(m *wire.Msg) bool { return is(wire.ProtoShell, wire.TypeStop)(m) && m.Header.SessionID == sid })
		closes := dev.received(func(m *wire.Msg) bool { return is(wire.ProtoControl, wire.TypeClose)(m) && m.Header.SessionID == sid })
		return len(stops) == 1 && len(closes) == 1 && intProp(stops[0], wire.PropStatus) == wire.ShellError
	})
	if rec := endedSession(t, sessions, "alice"); rec.Reason != ReasonClosed {
		t.Fatalf("reason %q", rec.Reason)
	}
}

func TestDeviceDisconnectEndsTheSession(t *testing.T) {
	sessions, auth := newMemSessions(), newFakeAuth()
	auth.set("alice", "dev1", fullGrant())
	rp := startReplica(t, "a", sessions, auth, nil)
	dev := connectDevice(t, rp, "dev1")
	op := mustSession(t, rp, "alice", "dev1")
	startShell(t, op)
	dev.p.ws.Close()
	stop := op.next(is(wire.ProtoShell, wire.TypeStop))
	if !strings.Contains(string(stop.Body), "device disconnected") {
		t.Fatalf("stop says %q", stop.Body)
	}
	var ce *websocket.CloseError
	if err := op.closed(); !errors.As(err, &ce) || ce.Code != websocket.CloseGoingAway {
		t.Fatalf("operator's websocket ended with %v", err)
	}
	if rec := endedSession(t, sessions, "alice"); rec.Reason != ReasonDeviceDisconnected {
		t.Fatalf("reason %q", rec.Reason)
	}
	waitFor(t, "the device's presence cleared", func() bool {
		_, ok, _ := sessions.Connected(context.Background(), "dev1")
		return !ok
	})
	// It reconnects: a new session works.
	dev.connect(rp)
	op2 := mustSession(t, rp, "alice", "dev1")
	sid := startShell(t, op2)
	typeText(op2, sid, "again\n")
	if out := op2.next(is(wire.ProtoShell, wire.TypeShell)); string(out.Body) != "echo:again\n" {
		t.Fatalf("after reconnecting: %q", out.Body)
	}
}

func TestRefusedProtocolNeverReachesTheDevice(t *testing.T) {
	sessions, auth := newMemSessions(), newFakeAuth()
	auth.set("bob", "dev1", Grant{Terminal: true})
	rp := startReplica(t, "a", sessions, auth, nil)
	dev := connectDevice(t, rp, "dev1")
	op := mustSession(t, rp, "bob", "dev1")
	sid := startShell(t, op)
	// Within a terminal session, what bob may not do is refused, message
	// by message, and the session goes on.
	pf := &wire.Msg{Header: wire.Header{Proto: wire.ProtoPortForward, MsgType: "new", SessionID: sid}, Body: wire.MustMarshal(map[string]any{"remote_host": "127.0.0.1", "remote_port": 22, "protocol": "tcp"})}
	pf.SetProp(wire.PropConnectionID, "c1")
	op.send(pf)
	if m := op.next(is(wire.ProtoPortForward, wire.TypeError)); !strings.Contains(string(m.Body), "port forwarding") {
		t.Fatalf("port forward error says %q", m.Body)
	}
	if m := op.next(is(wire.ProtoPortForward, wire.TypeStop)); strProp(m, wire.PropConnectionID) != "c1" {
		t.Fatalf("stop for connection %q", strProp(m, wire.PropConnectionID))
	}
	ctl := op.next(is(wire.ProtoControl, wire.TypeError))
	var ce wire.ControlError
	if err := decodeBody(ctl, &ce); err != nil || ce.Close || !strings.Contains(ce.Error, "forbidden: operator bob may not use port forwarding") {
		t.Fatalf("control error %+v %v", ce, err)
	}
	ft := &wire.Msg{Header: wire.Header{Proto: wire.ProtoFileTransfer, MsgType: wire.TypeStat, SessionID: sid}, Body: wire.MustMarshal(wire.Path{Path: ptr("/etc/shadow")})}
	op.send(ft)
	op.next(is(wire.ProtoFileTransfer, wire.TypeError))
	op.send(&wire.Msg{Header: wire.Header{Proto: wire.ProtoMenderClient, MsgType: "check-update"}})
	op.next(func(m *wire.Msg) bool {
		return is(wire.ProtoControl, wire.TypeError)(m) && strings.Contains(string(m.Body), "menderclient")
	})
	typeText(op, sid, "id\n")
	if out := op.next(is(wire.ProtoShell, wire.TypeShell)); string(out.Body) != "echo:id\n" {
		t.Fatalf("the shell after refusals: %q", out.Body)
	}
	if got := dev.received(func(m *wire.Msg) bool {
		return m.Header.Proto != wire.ProtoShell && m.Header.Proto != wire.ProtoControl
	}); len(got) != 0 {
		t.Fatalf("the device got refused messages: %s/%s", protoName(got[0].Header.Proto), got[0].Header.MsgType)
	}
	op.ws.Close()
	// The record lists the shell bob used, never what was refused.
	if rec := endedSession(t, sessions, "bob"); !slices.Equal(rec.Protocols, []string{"shell"}) {
		t.Fatalf("protocols recorded %v", rec.Protocols)
	}
}

// A session opened for what the grant refuses (mender-cli port-forward
// without portForward) ends with the reason, so the operator's program
// stops and says why.
func TestSessionOpenedForARefusedProtocolEnds(t *testing.T) {
	sessions, auth := newMemSessions(), newFakeAuth()
	auth.set("bob", "dev1", Grant{Terminal: true})
	rp := startReplica(t, "a", sessions, auth, nil)
	dev := connectDevice(t, rp, "dev1")
	op := mustSession(t, rp, "bob", "dev1")
	// mender-cli port-forward's handshake passes (control), then its
	// first connection is refused.
	op.send(&wire.Msg{Header: wire.Header{Proto: wire.ProtoControl, MsgType: wire.TypeOpen}, Body: wire.MustMarshal(wire.Open{Versions: []int{1}})})
	sid := op.next(is(wire.ProtoControl, wire.TypeAccept)).Header.SessionID
	pf := &wire.Msg{Header: wire.Header{Proto: wire.ProtoPortForward, MsgType: "new", SessionID: sid}}
	pf.SetProp(wire.PropConnectionID, "c1")
	op.send(pf)
	op.next(is(wire.ProtoPortForward, wire.TypeError))
	var ce *websocket.CloseError
	if err := op.closed(); !errors.As(err, &ce) || ce.Code != websocket.ClosePolicyViolation || !strings.Contains(ce.Text, "may not use port forwarding") {
		t.Fatalf("closed with %v", err)
	}
	if rec := endedSession(t, sessions, "bob"); rec.Reason != ReasonRefused {
		t.Fatalf("reason %q", rec.Reason)
	}
	waitFor(t, "the device's session closed", func() bool {
		return len(dev.received(func(m *wire.Msg) bool { return is(wire.ProtoControl, wire.TypeClose)(m) && m.Header.SessionID == sid })) == 1
	})
	if got := dev.received(func(m *wire.Msg) bool { return m.Header.Proto == wire.ProtoPortForward }); len(got) != 0 {
		t.Fatal("the refused port forward reached the device")
	}
}

func ptr[T any](v T) *T { return &v }

func decodeBody(m *wire.Msg, v any) error { return msgpackUnmarshal(m.Body, v) }

func TestOperatorAuthentication(t *testing.T) {
	sessions, auth := newMemSessions(), newFakeAuth()
	auth.set("alice", "dev1", fullGrant())
	events := &eventLog{}
	rp := startReplica(t, "a", sessions, auth, func(o *Options) { o.Events = events.add })
	connectDevice(t, rp, "dev1")
	base := rp.srv.URL + ManagementPrefix + "/devices/"
	cases := []struct {
		name, method, url, operator string
		want                        int
		says                        string
	}{
		{"no token", "GET", base + "dev1", "", 401, "unauthenticated"},
		{"no token connect", "GET", base + "dev1/connect", "", 401, "unauthenticated"},
		{"no token download", "GET", base + "dev1/download?path=/etc/hostname", "", 401, "unauthenticated"},
		{"no token upload", "PUT", base + "dev1/upload", "", 401, "unauthenticated"},
		{"other operator", "GET", base + "dev1", "mallory", 403, "may not connect to device dev1"},
		{"other operator connect", "GET", base + "dev1/connect", "mallory", 403, "may not connect"},
		{"other operator download", "GET", base + "dev1/download?path=/etc/hostname", "mallory", 403, "may not connect"},
		{"other device", "GET", base + "dev2", "alice", 403, "may not connect to device dev2"},
		{"relative path", "GET", base + "dev1/download?path=etc/hostname", "alice", 400, "absolute"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rsp, err := rp.client().Do(operatorReq(t, tc.method, tc.url, tc.operator, nil))
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(rsp.Body)
			rsp.Body.Close()
			if rsp.StatusCode != tc.want || !strings.Contains(string(b), tc.says) {
				t.Fatalf("%d %s; want %d with %q", rsp.StatusCode, b, tc.want, tc.says)
			}
		})
	}
	// The websocket with a forbidden operator: refused before upgrading.
	_, rsp, err := openSession(t, rp, "mallory", "dev1", nil)
	if err == nil || rsp == nil || rsp.StatusCode != 403 {
		t.Fatalf("mallory's websocket: %v %v", err, rsp)
	}
	// No session was recorded for any of these; each refusal of an
	// authenticated operator is an event (mallory ×4, alice on dev2).
	if ss, _ := sessions.Sessions(context.Background(), store.RemoteSessionFilter{}, 100); len(ss) != 0 {
		t.Fatalf("sessions recorded: %+v", ss)
	}
	refused := events.of(EventRefused)
	if len(refused) != 5 || len(events.of(EventStarted)) != 0 {
		t.Fatalf("%d refused events (want 5), %d started", len(refused), len(events.of(EventStarted)))
	}
	if e := refused[0]; e.Subject != "device/dev1" || !strings.Contains(e.Message, "operator mallory refused") || e.Occurrence == refused[1].Occurrence {
		t.Fatalf("refused event %+v", e)
	}
	// A device that is not connected.
	auth.set("alice", "dev2", fullGrant())
	rsp2, _ := rp.client().Do(operatorReq(t, "GET", base+"dev2", "alice", nil))
	var st struct{ Status string }
	json.NewDecoder(rsp2.Body).Decode(&st)
	rsp2.Body.Close()
	if rsp2.StatusCode != 200 || st.Status != "disconnected" {
		t.Fatalf("dev2: %d %+v", rsp2.StatusCode, st)
	}
	if _, rsp, err := openSession(t, rp, "alice", "dev2", nil); err == nil || rsp.StatusCode != 404 {
		t.Fatalf("connect to a disconnected device: %v %v", err, rsp)
	}
	rsp3, _ := rp.client().Do(operatorReq(t, "GET", base+"dev2/download?path=/x", "alice", nil))
	rsp3.Body.Close()
	if rsp3.StatusCode != 409 {
		t.Fatalf("download from a disconnected device: %d", rsp3.StatusCode)
	}
	// A device without a token.
	if _, rsp, err := dialer().Dial(rp.wsURL(DevicePath), nil); err == nil || rsp.StatusCode != 401 {
		t.Fatalf("device without a token: %v", err)
	}
}

func TestCrossSiteOriginRefused(t *testing.T) {
	sessions, auth := newMemSessions(), newFakeAuth()
	auth.set("alice", "dev1", fullGrant())
	rp := startReplica(t, "a", sessions, auth, nil)
	connectDevice(t, rp, "dev1")
	_, rsp, err := openSession(t, rp, "alice", "dev1", http.Header{"Origin": {"https://evil.example"}})
	if err == nil || rsp == nil || rsp.StatusCode != http.StatusForbidden {
		t.Fatalf("cross-site origin: %v %v", err, rsp)
	}
	host := strings.TrimPrefix(rp.srv.URL, "https://")
	p, _, err := openSession(t, rp, "alice", "dev1", http.Header{"Origin": {"https://" + host}})
	if err != nil {
		t.Fatalf("same-origin: %v", err)
	}
	startShell(t, p)
}

func TestSessionLimits(t *testing.T) {
	sessions, auth := newMemSessions(), newFakeAuth()
	auth.set("alice", "dev1", Grant{Terminal: true, FileTransfer: true, DeviceSessions: 1})
	auth.set("bob", "dev1", Grant{Terminal: true, FileTransfer: true, DeviceSessions: 1})
	auth.set("carol", "dev2", Grant{Terminal: true, OperatorSessions: 1})
	auth.set("carol", "dev3", Grant{Terminal: true, OperatorSessions: 1})
	rp := startReplica(t, "a", sessions, auth, nil)
	dev1 := connectDevice(t, rp, "dev1")
	connectDevice(t, rp, "dev2")
	connectDevice(t, rp, "dev3")
	dev1.p.send(&wire.Msg{}) // a message without a session: ignored

	first := mustSession(t, rp, "alice", "dev1")
	startShell(t, first)
	// mender-cli terminal: refused in the shell protocol.
	second := mustSession(t, rp, "bob", "dev1")
	second.send(&wire.Msg{Header: wire.Header{Proto: wire.ProtoShell, MsgType: wire.TypeNew}})
	rsp := second.next(is(wire.ProtoShell, wire.TypeNew))
	if intProp(rsp, wire.PropStatus) != wire.ShellError || !int64Prop(rsp, wire.PropStatus) || !strings.Contains(string(rsp.Body), "device dev1 already has the 1 concurrent remote sessions") {
		t.Fatalf("refusal: status %d %q", intProp(rsp, wire.PropStatus), rsp.Body)
	}
	second.closed()
	// A download: 429.
	r, _ := rp.client().Do(operatorReq(t, "GET", rp.srv.URL+ManagementPrefix+"/devices/dev1/download?path=/x", "bob", nil))
	b, _ := io.ReadAll(r.Body)
	r.Body.Close()
	if r.StatusCode != http.StatusTooManyRequests || !strings.Contains(string(b), "concurrent remote sessions") {
		t.Fatalf("download over the limit: %d %s", r.StatusCode, b)
	}
	// The operator's limit, across devices; port-forward's handshake gets
	// a control error.
	c1 := mustSession(t, rp, "carol", "dev2")
	startShell(t, c1)
	c2 := mustSession(t, rp, "carol", "dev3")
	c2.send(&wire.Msg{Header: wire.Header{Proto: wire.ProtoControl, MsgType: wire.TypeOpen}, Body: wire.MustMarshal(wire.Open{Versions: []int{1}})})
	var ce wire.ControlError
	if err := decodeBody(c2.next(is(wire.ProtoControl, wire.TypeError)), &ce); err != nil || !ce.Close || !strings.Contains(ce.Error, "operator carol already has the 1 concurrent") {
		t.Fatalf("operator limit: %+v %v", ce, err)
	}
	// Closing the first session frees the device.
	first.ws.Close()
	endedSession(t, sessions, "alice")
	third := mustSession(t, rp, "bob", "dev1")
	startShell(t, third)
}

func TestIdleTimeout(t *testing.T) {
	sessions, auth := newMemSessions(), newFakeAuth()
	auth.set("alice", "dev1", Grant{Terminal: true, IdleTimeout: 300 * time.Millisecond})
	rp := startReplica(t, "a", sessions, auth, nil)
	dev := connectDevice(t, rp, "dev1")
	op := mustSession(t, rp, "alice", "dev1")
	sid := startShell(t, op)
	stop := op.next(is(wire.ProtoShell, wire.TypeStop))
	if !strings.Contains(string(stop.Body), "idle") {
		t.Fatalf("stop says %q", stop.Body)
	}
	op.closed()
	if rec := endedSession(t, sessions, "alice"); rec.Reason != ReasonIdle {
		t.Fatalf("reason %q", rec.Reason)
	}
	waitFor(t, "the device's shell stopped", func() bool {
		return len(dev.received(func(m *wire.Msg) bool { return is(wire.ProtoShell, wire.TypeStop)(m) && m.Header.SessionID == sid })) == 1
	})
}

func TestChangedEndsSessions(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(a *fakeAuth)
		reason string
	}{
		{"operator removed", func(a *fakeAuth) { a.remove("alice") }, ReasonOperatorRemoved},
		{"device unlisted", func(a *fakeAuth) {
			a.mu.Lock()
			delete(a.grants, "alice/dev1")
			a.mu.Unlock()
		}, ReasonAccessRevoked},
		{"terminal taken away", func(a *fakeAuth) { a.set("alice", "dev1", Grant{FileTransfer: true}) }, ReasonAccessRevoked},
		{"expired", func(a *fakeAuth) {
			a.set("alice", "dev1", Grant{Terminal: true, Expires: time.Now().Add(-time.Second)})
		}, ReasonExpired},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sessions, auth := newMemSessions(), newFakeAuth()
			auth.set("alice", "dev1", fullGrant())
			auth.set("bob", "dev1", fullGrant())
			rp := startReplica(t, "a", sessions, auth, nil)
			dev := connectDevice(t, rp, "dev1")
			op := mustSession(t, rp, "alice", "dev1")
			sid := startShell(t, op)
			other := mustSession(t, rp, "bob", "dev1")
			otherSid := startShell(t, other)
			// An unrelated commit changes nothing.
			auth.signal()
			typeText(op, sid, "still here\n")
			op.next(is(wire.ProtoShell, wire.TypeShell))

			tc.change(auth)
			auth.signal()
			stop := op.next(is(wire.ProtoShell, wire.TypeStop))
			if !strings.Contains(string(stop.Body), "access ended") {
				t.Fatalf("stop says %q", stop.Body)
			}
			var ce *websocket.CloseError
			if err := op.closed(); !errors.As(err, &ce) || ce.Code != websocket.ClosePolicyViolation || !strings.Contains(ce.Text, "access ended") {
				t.Fatalf("operator's websocket ended with %v", err)
			}
			if rec := endedSession(t, sessions, "alice"); rec.Reason != tc.reason {
				t.Fatalf("reason %q, want %q", rec.Reason, tc.reason)
			}
			waitFor(t, "the device told to stop and close", func() bool {
				return len(dev.received(func(m *wire.Msg) bool { return is(wire.ProtoShell, wire.TypeStop)(m) && m.Header.SessionID == sid })) == 1 &&
					len(dev.received(func(m *wire.Msg) bool { return is(wire.ProtoControl, wire.TypeClose)(m) && m.Header.SessionID == sid })) == 1
			})
			// Bob's session goes on.
			typeText(other, otherSid, "bob\n")
			if out := other.next(is(wire.ProtoShell, wire.TypeShell)); string(out.Body) != "echo:bob\n" {
				t.Fatalf("bob's session: %q", out.Body)
			}
		})
	}
}

func TestPortForwardRelayed(t *testing.T) {
	sessions, auth := newMemSessions(), newFakeAuth()
	auth.set("alice", "dev1", Grant{PortForward: true})
	rp := startReplica(t, "a", sessions, auth, nil)
	dev := connectDevice(t, rp, "dev1")
	op := mustSession(t, rp, "alice", "dev1")
	// mender-cli port-forward's handshake.
	op.send(&wire.Msg{Header: wire.Header{Proto: wire.ProtoControl, MsgType: wire.TypeOpen}, Body: wire.MustMarshal(wire.Open{Versions: []int{1}})})
	acc := op.next(is(wire.ProtoControl, wire.TypeAccept))
	sid := acc.Header.SessionID
	pf := &wire.Msg{Header: wire.Header{Proto: wire.ProtoPortForward, MsgType: "new", SessionID: sid}}
	pf.SetProp(wire.PropConnectionID, "conn-1")
	op.send(pf)
	op.next(is(wire.ProtoPortForward, "new"))
	fw := &wire.Msg{Header: wire.Header{Proto: wire.ProtoPortForward, MsgType: "forward", SessionID: sid}, Body: []byte("hello")}
	fw.SetProp(wire.PropConnectionID, "conn-1")
	op.send(fw)
	got := op.next(is(wire.ProtoPortForward, "forward"))
	if string(got.Body) != "HELLO" || strProp(got, wire.PropConnectionID) != "conn-1" {
		t.Fatalf("forwarded back %q on %q", got.Body, strProp(got, wire.PropConnectionID))
	}
	// The device answers pings; the relay passes them through.
	op.send(&wire.Msg{Header: wire.Header{Proto: wire.ProtoControl, MsgType: wire.TypePing, SessionID: sid}})
	op.next(is(wire.ProtoControl, wire.TypePong))
	op.send(&wire.Msg{Header: wire.Header{Proto: wire.ProtoControl, MsgType: wire.TypeClose, SessionID: sid}})
	op.ws.Close()
	rec := endedSession(t, sessions, "alice")
	if !slices.Equal(rec.Protocols, []string{"portforward"}) {
		t.Fatalf("protocols %v", rec.Protocols)
	}
	if n := len(dev.received(is(wire.ProtoPortForward, "forward"))); n != 1 {
		t.Fatalf("device got %d forwards", n)
	}
}

func TestFileDownloadAndUpload(t *testing.T) {
	sessions, auth := newMemSessions(), newFakeAuth()
	auth.set("alice", "dev1", Grant{FileTransfer: true})
	auth.set("bob", "dev1", Grant{Terminal: true})
	rp := startReplica(t, "a", sessions, auth, nil)
	dev := connectDevice(t, rp, "dev1")
	content := make([]byte, 300_000) // 74 chunks of 4 KiB: several windows
	rand.Read(content)
	os.WriteFile(dev.local("/data.bin"), content, 0o640)
	os.Mkdir(dev.local("/adir"), 0o755)
	base := rp.srv.URL + ManagementPrefix + "/devices/dev1"

	rsp, err := rp.client().Do(operatorReq(t, "GET", base+"/download?path=/data.bin", "alice", nil))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rsp.Body)
	rsp.Body.Close()
	if rsp.StatusCode != 200 || !bytes.Equal(got, content) {
		t.Fatalf("download: %d, %d bytes (want %d)", rsp.StatusCode, len(got), len(content))
	}
	h := rsp.Header
	if h.Get("X-MEN-FILE-MODE") != "640" || h.Get("X-MEN-FILE-SIZE") != "300000" || h.Get("X-MEN-FILE-PATH") != "/data.bin" ||
		h.Get("X-MEN-FILE-UID") != "1000" || h.Get("Content-Type") != "application/octet-stream" {
		t.Fatalf("headers %v", h)
	}
	rec := endedSession(t, sessions, "alice")
	if rec.Kind != KindDownload || rec.Reason != ReasonClosed || rec.Traffic.FromDevice < int64(len(content)) || !slices.Equal(rec.Protocols, []string{"filetransfer"}) {
		t.Fatalf("download record %+v", rec)
	}

	for _, tc := range []struct {
		path string
		want int
		says string
	}{
		{"/missing", 404, "no such file or directory"},
		{"/adir", 400, "not a regular file"},
	} {
		rsp, _ := rp.client().Do(operatorReq(t, "GET", base+"/download?path="+tc.path, "alice", nil))
		b, _ := io.ReadAll(rsp.Body)
		rsp.Body.Close()
		if rsp.StatusCode != tc.want || !strings.Contains(string(b), tc.says) {
			t.Fatalf("%s: %d %s", tc.path, rsp.StatusCode, b)
		}
	}

	upload := func(operator, path string, data []byte) (int, string) {
		var body bytes.Buffer
		mw := multipart.NewWriter(&body)
		mw.WriteField("path", path)
		fw, _ := mw.CreateFormFile("file", "/home/op/local.bin")
		fw.Write(data)
		mw.WriteField("mode", "600")
		mw.Close()
		req := operatorReq(t, "PUT", base+"/upload", operator, &body)
		req.Header.Set("Content-Type", mw.FormDataContentType())
		rsp, err := rp.client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(rsp.Body)
		rsp.Body.Close()
		return rsp.StatusCode, string(b)
	}
	up := make([]byte, 500_000)
	rand.Read(up)
	if code, b := upload("alice", "/uploaded.bin", up); code != 201 {
		t.Fatalf("upload: %d %s", code, b)
	}
	if onDevice, _ := os.ReadFile(dev.local("/uploaded.bin")); !bytes.Equal(onDevice, up) {
		t.Fatalf("the device has %d bytes, want %d", len(onDevice), len(up))
	}
	if code, _ := upload("alice", "/empty", nil); code != 201 {
		t.Fatalf("empty upload: %d", code)
	}
	if code, b := upload("alice", "/forbidden/x", []byte("x")); code != 403 || !strings.Contains(b, "access denied") {
		t.Fatalf("upload the device refuses: %d %s", code, b)
	}
	if code, b := upload("bob", "/x", []byte("x")); code != 403 || !strings.Contains(b, "fileTransfer") {
		t.Fatalf("upload without file transfer: %d %s", code, b)
	}
	if code, b := upload("alice", "relative", []byte("x")); code != 400 || !strings.Contains(b, "absolute") {
		t.Fatalf("relative upload path: %d %s", code, b)
	}
	ss, _ := sessions.Sessions(context.Background(), store.RemoteSessionFilter{Operator: "alice"}, 100)
	var uploads int
	for _, s := range ss {
		if s.Kind == KindUpload {
			uploads++
			if s.Ended.IsZero() {
				t.Fatalf("upload session still open: %+v", s)
			}
		}
	}
	if uploads != 3 {
		t.Fatalf("%d upload sessions recorded, want 3", uploads)
	}
	// Device disabled file transfer.
	dev.mu.Lock()
	dev.protocols = []uint16{wire.ProtoShell}
	dev.mu.Unlock()
	rsp, _ = rp.client().Do(operatorReq(t, "GET", base+"/download?path=/data.bin", "alice", nil))
	b, _ := io.ReadAll(rsp.Body)
	rsp.Body.Close()
	if rsp.StatusCode != http.StatusBadGateway || !strings.Contains(string(b), "disabled on the device") {
		t.Fatalf("download from a device without file transfer: %d %s", rsp.StatusCode, b)
	}
}

func TestBandwidthCap(t *testing.T) {
	// The cap is a floor on the time a transfer takes (the limiter
	// cannot let it go faster; a slow machine only makes it slower).
	const bps = 64 << 10
	sessions, auth := newMemSessions(), newFakeAuth()
	auth.set("alice", "dev1", Grant{FileTransfer: true, BytesPerSecond: bps})
	rp := startReplica(t, "a", sessions, auth, nil)
	dev := connectDevice(t, rp, "dev1")
	content := make([]byte, 3*bps)
	os.WriteFile(dev.local("/f"), content, 0o644)
	start := time.Now()
	rsp, err := rp.client().Do(operatorReq(t, "GET", rp.srv.URL+ManagementPrefix+"/devices/dev1/download?path=/f", "alice", nil))
	if err != nil {
		t.Fatal(err)
	}
	n, _ := io.Copy(io.Discard, rsp.Body)
	rsp.Body.Close()
	took := time.Since(start)
	if n != int64(len(content)) {
		t.Fatalf("got %d bytes", n)
	}
	// One second's worth passes at once (the burst); the rest at the
	// rate: at least 2 s for 3 s's worth.
	if floor := 2 * time.Second * 9 / 10; took < floor {
		t.Fatalf("3×%d bytes at %d B/s took %v, less than %v: the cap was not applied", bps, bps, took, floor)
	}
}

func TestTwoReplicasShareOneStore(t *testing.T) {
	sessions := newMemSessions()
	testTwoReplicas(t, sessions, sessions)
}

// testTwoReplicas puts the device on one replica and the operator on
// another, each with its own handle on one store.
func testTwoReplicas(t *testing.T, sa, sb store.RemoteSessions) {
	auth := newFakeAuth()
	auth.set("alice", "dev1", fullGrant())
	a := startReplica(t, "a", sa, auth, nil)
	b := startReplica(t, "b", sb, auth, nil)
	sessions := sb
	dev := connectDevice(t, a, "dev1")
	op := mustSession(t, b, "alice", "dev1")
	sid := startShell(t, op)
	typeText(op, sid, "hostname\n")
	if out := op.next(is(wire.ProtoShell, wire.TypeShell)); string(out.Body) != "echo:hostname\n" {
		t.Fatalf("output %q", out.Body)
	}
	content := []byte(strings.Repeat("replicated ", 20000))
	os.WriteFile(dev.local("/r"), content, 0o644)
	rsp, err := b.client().Do(operatorReq(t, "GET", b.srv.URL+ManagementPrefix+"/devices/dev1/download?path=/r", "alice", nil))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rsp.Body)
	rsp.Body.Close()
	if rsp.StatusCode != 200 || !bytes.Equal(got, content) {
		t.Fatalf("download across replicas: %d, %d bytes", rsp.StatusCode, len(got))
	}
	// Access revoked: the operator's replica ends it, the device's
	// replica passes the stop on.
	auth.remove("alice")
	auth.signal()
	op.next(is(wire.ProtoShell, wire.TypeStop))
	op.closed()
	waitFor(t, "the device told to stop", func() bool {
		return len(dev.received(func(m *wire.Msg) bool { return is(wire.ProtoShell, wire.TypeStop)(m) && m.Header.SessionID == sid })) == 1
	})
	if a.relay.OpenSessions() != 0 {
		t.Fatalf("the device's replica serves %d sessions", a.relay.OpenSessions())
	}
	// The device disconnects while another operator's session is open
	// on replica b.
	auth.set("bob", "dev1", fullGrant())
	op2 := mustSession(t, b, "bob", "dev1")
	startShell(t, op2)
	dev.p.ws.Close()
	op2.next(is(wire.ProtoShell, wire.TypeStop))
	op2.closed()
	if rec := endedSession(t, sessions, "bob"); rec.Reason != ReasonDeviceDisconnected || rec.Replica != "b" {
		t.Fatalf("bob's record %+v", rec)
	}
}

// An upload lasts as long as the device takes it, under a server that
// gives request bodies a deadline (as controller.Bounded does): each read
// of the body moves the deadline on. The grant's cap makes the upload
// last longer than that deadline (the cap is a floor on its duration).
func TestUploadOutlastsABodyDeadline(t *testing.T) {
	const bps = 64 << 10
	const bodyDeadline = 300 * time.Millisecond
	sessions, auth := newMemSessions(), newFakeAuth()
	auth.set("alice", "dev1", Grant{FileTransfer: true, BytesPerSecond: bps})
	bounded := func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(bodyDeadline))
			h.ServeHTTP(w, r)
		})
	}
	rp := startReplicaWrapped(t, "a", sessions, auth, nil, bounded)
	dev := connectDevice(t, rp, "dev1")
	data := make([]byte, 3*bps)
	rand.Read(data)
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	mw.WriteField("path", "/big")
	fw, _ := mw.CreateFormFile("file", "big")
	fw.Write(data)
	mw.Close()
	req := operatorReq(t, "PUT", rp.srv.URL+ManagementPrefix+"/devices/dev1/upload", "alice", &body)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	start := time.Now()
	rsp, err := rp.client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rsp.Body)
	rsp.Body.Close()
	took := time.Since(start)
	if rsp.StatusCode != http.StatusCreated {
		t.Fatalf("upload: %d %s", rsp.StatusCode, b)
	}
	if took < 2*time.Second*9/10 {
		t.Fatalf("3×%d bytes at %d B/s took %v: the cap was not applied to uploads", bps, bps, took)
	}
	if onDevice, _ := os.ReadFile(dev.local("/big")); !bytes.Equal(onDevice, data) {
		t.Fatalf("the device has %d bytes, want %d", len(onDevice), len(data))
	}
}

// Keep-alives are not traffic: a session where only pings pass is idle.
func TestPingsDoNotKeepASessionOpen(t *testing.T) {
	sessions, auth := newMemSessions(), newFakeAuth()
	auth.set("alice", "dev1", Grant{Terminal: true, IdleTimeout: 500 * time.Millisecond})
	rp := startReplica(t, "a", sessions, auth, nil)
	dev := connectDevice(t, rp, "dev1")
	op := mustSession(t, rp, "alice", "dev1")
	sid := startShell(t, op)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { // mender-connect's session pings, and mender-cli's answers
		defer close(done)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				dev.reply(&wire.Msg{Header: wire.Header{Proto: wire.ProtoControl, SessionID: sid}}, wire.TypePing, nil, nil)
				dev.reply(&wire.Msg{Header: wire.Header{Proto: wire.ProtoShell, SessionID: sid}}, wire.TypePing, nil, map[string]any{"timeout": 60})
			}
		}
	}()
	defer func() { close(stop); <-done }()
	op.next(func(m *wire.Msg) bool {
		return is(wire.ProtoShell, wire.TypeStop)(m) && strings.Contains(string(m.Body), "idle")
	})
	if rec := endedSession(t, sessions, "alice"); rec.Reason != ReasonIdle {
		t.Fatalf("reason %q", rec.Reason)
	}
}

// A grant's expiry ends the session when it passes, with no new commit.
func TestExpiryEndsTheSession(t *testing.T) {
	sessions, auth := newMemSessions(), newFakeAuth()
	auth.set("alice", "dev1", Grant{Terminal: true, Expires: time.Now().Add(500 * time.Millisecond)})
	rp := startReplica(t, "a", sessions, auth, func(o *Options) { o.SessionLease = 300 * time.Millisecond })
	connectDevice(t, rp, "dev1")
	op := mustSession(t, rp, "alice", "dev1")
	startShell(t, op)
	stop := op.next(is(wire.ProtoShell, wire.TypeStop))
	if !strings.Contains(string(stop.Body), "expired") {
		t.Fatalf("stop says %q", stop.Body)
	}
	if rec := endedSession(t, sessions, "alice"); rec.Reason != ReasonExpired {
		t.Fatalf("reason %q", rec.Reason)
	}
	// And no new session opens.
	rsp, err := rp.client().Do(operatorReq(t, "GET", rp.srv.URL+ManagementPrefix+"/devices/dev1", "alice", nil))
	if err != nil {
		t.Fatal(err)
	}
	rsp.Body.Close()
	if rsp.StatusCode != http.StatusForbidden {
		t.Fatalf("after expiry: %d", rsp.StatusCode)
	}
}

// A device that connects again while its old connection looks open (a
// network change): the newer connection wins, the old one is closed and
// the sessions on it end.
func TestDeviceReconnectReplacesItsConnection(t *testing.T) {
	sessions, auth := newMemSessions(), newFakeAuth()
	auth.set("alice", "dev1", fullGrant())
	rp := startReplica(t, "a", sessions, auth, func(o *Options) {
		o.PresenceTTL, o.SessionLease = 600*time.Millisecond, 600*time.Millisecond
	})
	dev := connectDevice(t, rp, "dev1")
	old := dev.p
	op := mustSession(t, rp, "alice", "dev1")
	startShell(t, op)
	before, _, _ := sessions.Connected(context.Background(), "dev1")
	dev.connect(rp) // a second connection; the first is still open
	waitFor(t, "the newer connection recorded", func() bool {
		c, ok, _ := sessions.Connected(context.Background(), "dev1")
		return ok && c.Conn != before.Conn
	})
	var ce *websocket.CloseError
	if err := old.closed(); !errors.As(err, &ce) || ce.Code != websocket.CloseGoingAway {
		t.Fatalf("the old connection ended with %v", err)
	}
	op.next(is(wire.ProtoShell, wire.TypeStop))
	if rec := endedSession(t, sessions, "alice"); rec.Reason != ReasonDeviceDisconnected {
		t.Fatalf("reason %q", rec.Reason)
	}
	// The old connection's close did not clear the new one's record,
	// and a new session reaches the device on it.
	if _, ok, _ := sessions.Connected(context.Background(), "dev1"); !ok {
		t.Fatal("the device shows as disconnected")
	}
	op2 := mustSession(t, rp, "alice", "dev1")
	sid := startShell(t, op2)
	typeText(op2, sid, "new\n")
	if out := op2.next(is(wire.ProtoShell, wire.TypeShell)); string(out.Body) != "echo:new\n" {
		t.Fatalf("on the new connection: %q", out.Body)
	}
}

// An operator may name the device by its declared name; the grant gives
// its ID, which the session is relayed to and recorded with.
func TestDeviceNamedByName(t *testing.T) {
	sessions, auth := newMemSessions(), newFakeAuth()
	auth.set("alice", "dev1", Grant{Terminal: true})
	auth.set("alice", "pi-1", Grant{Terminal: true, Device: "dev1"})
	rp := startReplica(t, "a", sessions, auth, nil)
	connectDevice(t, rp, "dev1")
	rsp, err := rp.client().Do(operatorReq(t, "GET", rp.srv.URL+ManagementPrefix+"/devices/pi-1", "alice", nil))
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		ID     string `json:"device_id"`
		Status string
	}
	json.NewDecoder(rsp.Body).Decode(&st)
	rsp.Body.Close()
	if st.Status != "connected" || st.ID != "dev1" {
		t.Fatalf("pi-1: %+v", st)
	}
	op := mustSession(t, rp, "alice", "pi-1")
	sid := startShell(t, op)
	typeText(op, sid, "hi\n")
	op.next(is(wire.ProtoShell, wire.TypeShell))
	op.ws.Close()
	if rec := endedSession(t, sessions, "alice"); rec.Device != "dev1" {
		t.Fatalf("recorded device %q", rec.Device)
	}
}

// TestDeviceCannotWriteIntoAnotherDevicesSession: a device that learns
// the session ID of another device's session (it is only random, not
// secret, once logged) cannot put output in front of that session's
// operator: the relay routes a device's frames only to sessions with
// that device.
func TestDeviceCannotWriteIntoAnotherDevicesSession(t *testing.T) {
	sessions, auth := newMemSessions(), newFakeAuth()
	auth.set("alice", "dev1", Grant{Terminal: true})
	rp := startReplica(t, "a", sessions, auth, nil)
	connectDevice(t, rp, "dev1")
	evil := connectDevice(t, rp, "dev2")
	op := mustSession(t, rp, "alice", "dev1")
	sid := startShell(t, op)
	forged := &wire.Msg{Header: wire.Header{Proto: wire.ProtoShell, MsgType: wire.TypeShell, SessionID: sid}, Body: []byte("FORGED by dev2\n")}
	forged.SetProp(wire.PropStatus, int64(1))
	evil.p.send(forged)
	// What dev1 answers afterwards arrives; the forged frame never does.
	typeText(op, sid, "after\n")
	out := op.next(is(wire.ProtoShell, wire.TypeShell))
	if string(out.Body) != "echo:after\n" {
		t.Fatalf("the operator of dev1's session got %q from the relay", out.Body)
	}
}
