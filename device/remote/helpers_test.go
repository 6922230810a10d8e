package remote

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/device/remote/wire"
	"github.com/gorilla/websocket"
	"github.com/vmihailenco/msgpack/v5"
)

// wait bounds every wait in these tests.
const wait = 20 * time.Second

// fakeServer is the controller's side of the device websocket: an
// httptest TLS server that upgrades GET /api/devices/v1/deviceconnect/connect
// when the bearer token is the one it accepts.
type fakeServer struct {
	srv   *httptest.Server
	conns chan *peer
	// accept is the token the server accepts.
	accept  atomic.Value // string
	refused atomic.Int64 // 401 answers
	// silent: connections are upgraded and then neither read nor
	// written (a controller that hangs); counted in silentConns.
	silent      atomic.Bool
	silentConns atomic.Int64
}

func startServer(t *testing.T) *fakeServer {
	t.Helper()
	fs := &fakeServer{conns: make(chan *peer, 8)}
	fs.accept.Store("token-1")
	up := websocket.Upgrader{}
	stop := make(chan struct{})
	fs.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/devices/v1/deviceconnect/connect" {
			http.NotFound(w, r)
			return
		}
		if r.Header.Get("Authorization") != "Bearer "+fs.accept.Load().(string) {
			fs.refused.Add(1)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		if fs.silent.Load() {
			fs.silentConns.Add(1)
			<-stop
			ws.Close()
			return
		}
		p := &peer{t: t, ws: ws, in: make(chan *wire.Msg, 256), closed: make(chan struct{})}
		go p.read()
		fs.conns <- p
		<-p.closed
	}))
	t.Cleanup(fs.srv.Close)
	t.Cleanup(func() { close(stop) }) // first: ends the silent handlers
	return fs
}

// peer is one device connection as the server sees it: the operator's
// side of every session.
type peer struct {
	t      *testing.T
	ws     *websocket.Conn
	wm     sync.Mutex
	in     chan *wire.Msg
	closed chan struct{}
}

func (p *peer) read() {
	defer close(p.closed)
	for {
		_, b, err := p.ws.ReadMessage()
		if err != nil {
			return
		}
		m, err := wire.Decode(b)
		if err != nil {
			p.t.Errorf("device sent a malformed message: %v", err)
			return
		}
		p.in <- m
	}
}

func (p *peer) send(m *wire.Msg) {
	p.t.Helper()
	p.wm.Lock()
	defer p.wm.Unlock()
	if err := p.ws.WriteMessage(websocket.BinaryMessage, m.Encode()); err != nil {
		p.t.Fatalf("write to the device: %v", err)
	}
}

// next returns the next message of session sid that ok accepts, skipping
// others of that session (nil ok: any).
func (p *peer) next(sid string, ok func(*wire.Msg) bool) *wire.Msg {
	p.t.Helper()
	deadline := time.After(wait)
	for {
		select {
		case m := <-p.in:
			if m.Header.SessionID != sid {
				continue
			}
			if ok == nil || ok(m) {
				return m
			}
		case <-p.closed:
			p.t.Fatalf("the device closed the connection while waiting in session %s", sid)
		case <-deadline:
			p.t.Fatalf("no expected message in session %s within %s", sid, wait)
		}
	}
}

// is matches a protocol and message type.
func is(proto uint16, typ string) func(*wire.Msg) bool {
	return func(m *wire.Msg) bool { return m.Header.Proto == proto && m.Header.MsgType == typ }
}

// open opens session sid with a control open and checks the accept.
func (p *peer) open(sid string) wire.Accept {
	p.t.Helper()
	p.send(wire.New(wire.ProtoControl, wire.TypeOpen, sid).WithBody(wire.MustMarshal(wire.Open{Versions: []int{1}})))
	m := p.next(sid, func(m *wire.Msg) bool { return m.Header.Proto == wire.ProtoControl })
	if m.Header.MsgType != wire.TypeAccept {
		p.t.Fatalf("open answered with %q: %s", m.Header.MsgType, errText(m))
	}
	var acc wire.Accept
	if err := msgpack.Unmarshal(m.Body, &acc); err != nil {
		p.t.Fatal(err)
	}
	return acc
}

// errText is an error message's text (control, file transfer, port
// forward or shell).
func errText(m *wire.Msg) string {
	switch m.Header.Proto {
	case wire.ProtoShell:
		return string(m.Body)
	case wire.ProtoControl:
		var e wire.ControlError
		_ = msgpack.Unmarshal(m.Body, &e)
		return e.Error
	}
	var e wire.TypedError
	_ = msgpack.Unmarshal(m.Body, &e)
	if e.Error == nil {
		return ""
	}
	return *e.Error
}

// client starts a Client against fs with opts (ServerURL, TLS and the
// token source filled in) and stops it at cleanup.
func startClient(t *testing.T, fs *fakeServer, opts Options) (*Client, *tokens) {
	t.Helper()
	toks := &tokens{}
	opts.ServerURL = fs.srv.URL
	opts.TLS = &tls.Config{RootCAs: fs.srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs}
	opts.Token = toks.get
	opts.Invalidate = toks.invalidate
	if opts.MaxRetry == 0 {
		opts.MaxRetry = 50 * time.Millisecond
	}
	opts.Logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	c, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(wait):
			t.Errorf("Run did not return within %s of its context's end", wait)
		}
	})
	return c, toks
}

// tokens is the agent's token cache: token-N, N growing after each
// invalidation.
type tokens struct {
	mu          sync.Mutex
	n           int
	invalidated int
}

func (tk *tokens) get(context.Context) (string, error) {
	tk.mu.Lock()
	defer tk.mu.Unlock()
	if tk.n == 0 {
		tk.n = 1
	}
	return fmt.Sprintf("token-%d", tk.n), nil
}

func (tk *tokens) invalidate(tok string) {
	tk.mu.Lock()
	defer tk.mu.Unlock()
	if tok == fmt.Sprintf("token-%d", tk.n) {
		tk.n++
		tk.invalidated++
	}
}

// connect waits for the device's connection.
func (fs *fakeServer) connect(t *testing.T) *peer {
	t.Helper()
	select {
	case p := <-fs.conns:
		return p
	case <-time.After(wait):
		t.Fatalf("the device did not connect within %s", wait)
		return nil
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

var _ io.Writer = testWriter{}
