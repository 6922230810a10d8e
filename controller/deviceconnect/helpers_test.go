package deviceconnect

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gitfleet/gitfleet/device/remote/wire"
	"github.com/gorilla/websocket"
	"github.com/vmihailenco/msgpack/v5"
)

// fakeAuth is an Authorizer of fixed tokens ("tok-<operator>") and grants.
type fakeAuth struct {
	mu      sync.Mutex
	grants  map[string]Grant // operator/device → grant
	removed map[string]bool
	changed []chan struct{} // one per Changed caller (one per replica)
}

func newFakeAuth() *fakeAuth {
	return &fakeAuth{grants: map[string]Grant{}, removed: map[string]bool{}}
}

func (a *fakeAuth) Operator(r *http.Request) (string, error) {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	op, ok2 := strings.CutPrefix(tok, "tok-")
	if !ok || !ok2 || op == "" {
		return "", fmt.Errorf("%w: no valid operator token", ErrUnauthenticated)
	}
	return op, nil
}

func (a *fakeAuth) Grant(ctx context.Context, operator, device string) (Grant, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.removed[operator] {
		return Grant{}, fmt.Errorf("%w: operator %s", ErrOperatorRemoved, operator)
	}
	g, ok := a.grants[operator+"/"+device]
	if !ok {
		return Grant{}, fmt.Errorf("%w: operator %s may not connect to device %s", ErrForbidden, operator, device)
	}
	return g, nil
}

func (a *fakeAuth) Changed() <-chan struct{} {
	a.mu.Lock()
	defer a.mu.Unlock()
	c := make(chan struct{}, 1)
	a.changed = append(a.changed, c)
	return c
}

func (a *fakeAuth) set(operator, device string, g Grant) {
	a.mu.Lock()
	g.Operator = operator
	if g.Commit == "" {
		g.Commit = "c0ffee"
	}
	a.grants[operator+"/"+device] = g
	a.mu.Unlock()
}

func (a *fakeAuth) remove(operator string) {
	a.mu.Lock()
	a.removed[operator] = true
	a.mu.Unlock()
}

func (a *fakeAuth) signal() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, c := range a.changed {
		select {
		case c <- struct{}{}:
		default:
		}
	}
}

// replica is one relay behind an httptest TLS server.
type replica struct {
	relay *Relay
	srv   *httptest.Server
}

func startReplica(t testing.TB, name string, sessions store.RemoteSessions, auth Authorizer, tweak func(*Options)) *replica {
	t.Helper()
	return startReplicaWrapped(t, name, sessions, auth, tweak, nil)
}

// startReplicaWrapped serves the relay's handler through wrap.
func startReplicaWrapped(t testing.TB, name string, sessions store.RemoteSessions, auth Authorizer, tweak func(*Options), wrap func(http.Handler) http.Handler) *replica {
	t.Helper()
	if wrap == nil {
		wrap = func(h http.Handler) http.Handler { return h }
	}
	opts := Options{Sessions: sessions, Authorizer: auth, Replica: name,
		PresenceTTL: 3 * time.Second, SessionLease: 3 * time.Second, PingInterval: time.Second, TransferTimeout: 10 * time.Second}
	if tweak != nil {
		tweak(&opts)
	}
	r, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.Run(ctx) }()
	srv := httptest.NewTLSServer(wrap(r.Handler(func(req *http.Request) (string, error) {
		tok, _ := strings.CutPrefix(req.Header.Get("Authorization"), "Bearer ")
		dev, ok := strings.CutPrefix(tok, "dev-")
		if !ok {
			return "", errors.New("a device token is required")
		}
		return dev, nil
	})))
	t.Cleanup(func() {
		cancel()
		<-done
		srv.CloseClientConnections()
		srv.Close()
	})
	return &replica{relay: r, srv: srv}
}

func (rp *replica) wsURL(path string) string {
	return "wss" + strings.TrimPrefix(rp.srv.URL, "https") + path
}

func (rp *replica) client() *http.Client { return rp.srv.Client() }

func dialer() *websocket.Dialer {
	return &websocket.Dialer{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, HandshakeTimeout: 5 * time.Second}
}

// wsPeer is a websocket end speaking ProtoMsg.
type wsPeer struct {
	t    testing.TB
	ws   *websocket.Conn
	wmu  sync.Mutex
	msgs chan *wire.Msg
	err  chan error // the read's end
}

func newPeer(t testing.TB, ws *websocket.Conn) *wsPeer {
	p := &wsPeer{t: t, ws: ws, msgs: make(chan *wire.Msg, 1024), err: make(chan error, 1)}
	go func() {
		for {
			_, b, err := ws.ReadMessage()
			if err != nil {
				p.err <- err
				close(p.msgs)
				return
			}
			m, err := wire.Decode(b)
			if err != nil {
				p.err <- err
				close(p.msgs)
				return
			}
			p.msgs <- m
		}
	}()
	t.Cleanup(func() { ws.Close() })
	return p
}

func (p *wsPeer) send(m *wire.Msg) {
	p.t.Helper()
	p.wmu.Lock()
	defer p.wmu.Unlock()
	if err := p.ws.WriteMessage(websocket.BinaryMessage, m.Encode()); err != nil {
		p.t.Fatalf("send: %v", err)
	}
}

// next returns the next message that match accepts, failing the test
// after 10 s.
func (p *wsPeer) next(match func(*wire.Msg) bool) *wire.Msg {
	p.t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case m, ok := <-p.msgs:
			if !ok {
				p.t.Fatalf("connection closed while waiting: %v", <-p.err)
			}
			if match == nil || match(m) {
				return m
			}
		case <-deadline:
			p.t.Fatal("no message within 10s")
		}
	}
}

// closed waits for the connection's end and returns its error.
func (p *wsPeer) closed() error {
	p.t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case _, ok := <-p.msgs:
			if !ok {
				err := <-p.err
				p.err <- err
				return err
			}
		case <-deadline:
			p.t.Fatal("connection still open after 10s")
		}
	}
}

func is(proto uint16, typ string) func(*wire.Msg) bool {
	return func(m *wire.Msg) bool { return m.Header.Proto == proto && m.Header.MsgType == typ }
}

func strProp(m *wire.Msg, name string) string {
	var s string
	m.Prop(name, &s)
	return s
}

func intProp(m *wire.Msg, name string) int64 {
	var n int64
	m.Prop(name, &n)
	return n
}

// fakeDevice answers like mender-connect: sessions, shell (an echo),
// file transfer on a directory standing for its root, port forward (an
// echo in capitals).
type fakeDevice struct {
	t         testing.TB
	id        string
	root      string
	protocols []uint16
	p         *wsPeer

	mu   sync.Mutex
	seen []*wire.Msg // every message received
	acks map[string]chan int64
	// onShell, when set, sees shell input first; true: it answered.
	onShell func(m *wire.Msg) bool
}

func connectDevice(t testing.TB, rp *replica, id string) *fakeDevice {
	t.Helper()
	d := &fakeDevice{t: t, id: id, root: t.TempDir(), protocols: []uint16{wire.ProtoShell, wire.ProtoFileTransfer, wire.ProtoPortForward}, acks: map[string]chan int64{}}
	d.connect(rp)
	return d
}

func (d *fakeDevice) connect(rp *replica) {
	d.t.Helper()
	h := http.Header{"Authorization": {"Bearer dev-" + d.id}}
	ws, rsp, err := dialer().Dial(rp.wsURL(DevicePath), h)
	if err != nil {
		d.t.Fatalf("device connect: %v", err)
	}
	rsp.Body.Close()
	ws.SetReadLimit(8192) // as mender-connect
	d.p = newPeer(d.t, ws)
	go d.serve(d.p)
	// Connected once the relay recorded it.
	waitFor(d.t, "device "+d.id+" connected", func() bool {
		_, ok, _ := rp.relay.opts.Sessions.Connected(context.Background(), d.id)
		return ok
	})
}

func (d *fakeDevice) received(match func(*wire.Msg) bool) []*wire.Msg {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []*wire.Msg
	for _, m := range d.seen {
		if match == nil || match(m) {
			out = append(out, m)
		}
	}
	return out
}

func (d *fakeDevice) reply(req *wire.Msg, typ string, body []byte, props map[string]any) {
	m := &wire.Msg{Header: wire.Header{Proto: req.Header.Proto, MsgType: typ, SessionID: req.Header.SessionID}, Body: body}
	for k, v := range props {
		m.SetProp(k, v)
	}
	d.p.wmu.Lock()
	defer d.p.wmu.Unlock()
	_ = d.p.ws.WriteMessage(websocket.BinaryMessage, m.Encode()) // the test may be over
}

func (d *fakeDevice) ftError(req *wire.Msg, err error) {
	s := err.Error()
	typ := req.Header.MsgType
	d.reply(req, wire.TypeError, wire.MustMarshal(wire.TypedError{Error: &s, MessageType: &typ}), nil)
}

func (d *fakeDevice) serve(p *wsPeer) {
	for m := range p.msgs {
		d.mu.Lock()
		d.seen = append(d.seen, m)
		d.mu.Unlock()
		switch m.Header.Proto {
		case wire.ProtoControl:
			switch m.Header.MsgType {
			case wire.TypeOpen:
				d.mu.Lock()
				protocols := d.protocols
				d.mu.Unlock()
				d.reply(m, wire.TypeAccept, wire.MustMarshal(wire.Accept{Version: 1, Protocols: protocols}), nil)
			case wire.TypePing:
				d.reply(m, wire.TypePong, nil, nil)
			}
		case wire.ProtoShell:
			switch m.Header.MsgType {
			case wire.TypeNew:
				// As mender-connect: the status in the fewest bytes.
				d.reply(m, wire.TypeNew, []byte("Shell started"), map[string]any{wire.PropStatus: int(wire.ShellNormal)})
			case wire.TypeShell:
				d.mu.Lock()
				hook := d.onShell
				d.mu.Unlock()
				if hook != nil && hook(m) {
					continue
				}
				d.reply(m, wire.TypeShell, append([]byte("echo:"), m.Body...), map[string]any{wire.PropStatus: int(wire.ShellNormal)})
			case wire.TypeStop:
				d.reply(m, wire.TypeStop, nil, map[string]any{wire.PropStatus: int(wire.ShellNormal)})
			}
		case wire.ProtoPortForward:
			switch m.Header.MsgType {
			case "new":
				d.reply(m, "new", nil, map[string]any{wire.PropConnectionID: strProp(m, wire.PropConnectionID)})
			case "forward":
				d.reply(m, "forward", []byte(strings.ToUpper(string(m.Body))), map[string]any{wire.PropConnectionID: strProp(m, wire.PropConnectionID)})
			}
		case wire.ProtoFileTransfer:
			d.fileTransfer(m)
		}
	}
}

func (d *fakeDevice) local(p string) string { return filepath.Join(d.root, filepath.FromSlash(p)) }

func (d *fakeDevice) fileTransfer(m *wire.Msg) {
	switch m.Header.MsgType {
	case wire.TypeStat:
		var req wire.Path
		_ = msgpack.Unmarshal(m.Body, &req)
		st, err := os.Stat(d.local(*req.Path))
		if err != nil {
			d.ftError(m, fmt.Errorf("failed to get file info from path '%s': %w", *req.Path, err))
			return
		}
		mode, size, uid := uint32(st.Mode()), st.Size(), uint32(1000)
		d.reply(m, wire.TypeFileInfo, wire.MustMarshal(wire.FileInfo{Path: req.Path, Size: &size, Mode: &mode, UID: &uid, GID: &uid}), nil)
	case wire.TypeGetFile:
		var req wire.Path
		_ = msgpack.Unmarshal(m.Body, &req)
		f, err := os.Open(d.local(*req.Path))
		if err != nil {
			d.ftError(m, fmt.Errorf("failed to open file for reading: %w", err))
			return
		}
		acks := make(chan int64, 64)
		d.mu.Lock()
		d.acks[m.Header.SessionID] = acks
		d.mu.Unlock()
		go d.sendFile(m, f, acks)
	case wire.TypeAck:
		d.mu.Lock()
		acks := d.acks[m.Header.SessionID]
		d.mu.Unlock()
		if acks != nil {
			acks <- intProp(m, wire.PropOffset)
		}
	case wire.TypePutFile:
		var req wire.UploadRequest
		_ = msgpack.Unmarshal(m.Body, &req)
		if strings.Contains(*req.Path, "forbidden") {
			d.ftError(m, errors.New("access denied: the file's path is not allowed"))
			return
		}
		f, err := os.Create(d.local(*req.Path) + ".part")
		if err != nil {
			d.ftError(m, fmt.Errorf("failed to create target file: %w", err))
			return
		}
		f.Close()
		d.reply(m, wire.TypeAck, nil, map[string]any{wire.PropOffset: int64(0)})
	case wire.TypeChunk:
		// Upload chunks: append to the one file being written.
		matches, _ := filepath.Glob(filepath.Join(d.root, "*.part"))
		if len(matches) != 1 {
			d.ftError(m, errors.New("no file transfer in progress"))
			return
		}
		part := matches[0]
		off := intProp(m, wire.PropOffset)
		if len(m.Body) == 0 {
			os.Rename(part, strings.TrimSuffix(part, ".part"))
			d.reply(m, wire.TypeAck, nil, map[string]any{wire.PropOffset: off})
			return
		}
		f, _ := os.OpenFile(part, os.O_WRONLY|os.O_APPEND, 0)
		f.Write(m.Body)
		f.Close()
		d.reply(m, wire.TypeAck, nil, map[string]any{wire.PropOffset: off}) // as mender-connect: the chunk's offset
	}
}

// sendFile streams f in 4 KiB chunks, at most 20 ahead of the last ack,
// as mender-connect does.
func (d *fakeDevice) sendFile(req *wire.Msg, f *os.File, acks chan int64) {
	defer f.Close()
	var off, acked int64
	buf := make([]byte, 4096)
	for {
		for off > acked+20*4096 {
			acked = <-acks
		}
		n, err := f.Read(buf)
		if n > 0 {
			d.reply(req, wire.TypeChunk, append([]byte(nil), buf[:n]...), map[string]any{wire.PropOffset: off})
			off += int64(n)
		}
		if err == io.EOF {
			break
		}
	}
	d.reply(req, wire.TypeChunk, nil, map[string]any{wire.PropOffset: off})
	for acked < off {
		acked = <-acks
	}
}

// operator opens a session websocket as mender-cli does.
func openSession(t testing.TB, rp *replica, operator, device string, h http.Header) (*wsPeer, *http.Response, error) {
	t.Helper()
	if h == nil {
		h = http.Header{}
	}
	if operator != "" {
		h.Set("Authorization", "Bearer tok-"+operator)
	}
	ws, rsp, err := dialer().Dial(rp.wsURL(ManagementPrefix+"/devices/"+device+"/connect"), h)
	if err != nil {
		return nil, rsp, err
	}
	return newPeer(t, ws), rsp, nil
}

func mustSession(t testing.TB, rp *replica, operator, device string) *wsPeer {
	t.Helper()
	p, rsp, err := openSession(t, rp, operator, device, nil)
	if err != nil {
		body := ""
		if rsp != nil {
			b, _ := io.ReadAll(rsp.Body)
			body = fmt.Sprintf(" (%d %s)", rsp.StatusCode, b)
		}
		t.Fatalf("open session: %v%s", err, body)
	}
	return p
}

// startShell sends "new" and returns the session ID the relay gave it.
func startShell(t testing.TB, op *wsPeer) string {
	t.Helper()
	m := &wire.Msg{Header: wire.Header{Proto: wire.ProtoShell, MsgType: wire.TypeNew}}
	m.SetProp("terminal_width", 80)
	m.SetProp("terminal_height", 24)
	op.send(m)
	rsp := op.next(is(wire.ProtoShell, wire.TypeNew))
	if st := intProp(rsp, wire.PropStatus); st != wire.ShellNormal {
		t.Fatalf("shell not started: status %d: %s", st, rsp.Body)
	}
	return rsp.Header.SessionID
}

func typeText(op *wsPeer, sid, text string) {
	op.send(&wire.Msg{Header: wire.Header{Proto: wire.ProtoShell, MsgType: wire.TypeShell, SessionID: sid}, Body: []byte(text)})
}

// waitFor polls cond for up to 10 s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// sessionRecord waits for the one session of operator to end and returns
// its record.
func endedSession(t testing.TB, sessions store.RemoteSessions, operator string) store.RemoteSession {
	t.Helper()
	var got store.RemoteSession
	waitFor(t, "the session of "+operator+" to end", func() bool {
		ss, err := sessions.Sessions(context.Background(), store.RemoteSessionFilter{Operator: operator}, 10)
		if err != nil || len(ss) == 0 || ss[0].Ended.IsZero() {
			return false
		}
		got = ss[0]
		return true
	})
	return got
}

func msgpackUnmarshal(b []byte, v any) error { return msgpack.Unmarshal(b, v) }

// int64Prop reports whether a property is encoded as an int64, the only
// integer encoding mender-cli recognizes in a shell message's status.
func int64Prop(m *wire.Msg, name string) bool {
	raw := m.Header.Properties[name]
	return len(raw) == 9 && raw[0] == 0xd3
}

// eventLog records what the relay gives Options.Events.
type eventLog struct {
	mu     sync.Mutex
	events []store.Event
}

func (l *eventLog) add(_ context.Context, e store.Event) {
	l.mu.Lock()
	l.events = append(l.events, e)
	l.mu.Unlock()
}

func (l *eventLog) of(kind string) []store.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []store.Event
	for _, e := range l.events {
		if e.Kind == kind {
			out = append(out, e)
		}
	}
	return out
}
