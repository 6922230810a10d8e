// Package remote is gitfleet-agent's built-in remote terminal: the device
// side of Mender's deviceconnect, which mender-connect implements for the
// Mender client. The agent keeps one websocket open to the controller
// (GET /api/devices/v1/deviceconnect/connect, with the device's token);
// operators reach the device through the controller's relay with the stock
// mender-cli: a shell on a pseudo-terminal (terminal), files both ways
// (cp) and TCP connections to allowed host:ports (port-forward).
//
// The model: the controller relays messages of sessions, each named by a
// session ID (sid). A Client routes each session's messages to a session,
// which holds at most one shell, one file transfer at a time and the port
// forward connections opened in it. A session ends when the operator's
// side closes it, when it stays idle for Options.IdleTimeout, or when the
// websocket drops; ending it stops its shell (the process group) and
// closes its connections. Everything is bounded: message size, chunk
// size, sessions (Options.MaxSessions), connections per session.
//
// The device decides locally what it offers: a protocol that Options
// leaves off is not in the session's accept and every message of it is
// answered with an error; the agent does not run a Client at all unless
// its configuration enables the remote terminal.
package remote

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/gitfleet/gitfleet/device/remote/wire"
	"github.com/gorilla/websocket"
)

// Limits.
const (
	// maxMessage bounds one websocket message from the controller (the
	// relay's own bound is 1 MiB less a little).
	maxMessage = 1 << 20
	// chunkSize is the body of one file chunk or port forward message the
	// device sends.
	chunkSize = 16 << 10
	// maxSessionsLimit caps Options.MaxSessions.
	maxSessionsLimit = 64
	// maxForwards bounds the port forward connections of one session.
	maxForwards = 16
	// queueLen is a session's inbound queue; a session that does not take
	// its messages within queueWait is ended.
	queueLen  = 64
	queueWait = 30 * time.Second
)

// Options configure a Client.
type Options struct {
	// ServerURL is the controller ("https://…"); the websocket is
	// wss://HOST/api/devices/v1/deviceconnect/connect (ws:// for http).
	ServerURL string
	// TLS is the client TLS configuration (trusted roots); nil: the
	// system's.
	TLS *tls.Config
	// Token returns the device's current token; Invalidate drops token
	// after the controller refused it (401), so that the next Token
	// authenticates again. Required: Token.
	Token      func(ctx context.Context) (string, error)
	Invalidate func(token string)

	// Terminal, FileTransfer and PortForward select the protocols the
	// device offers.
	Terminal     bool
	FileTransfer bool
	PortForward  bool
	// Shell is the shell's absolute path; default /bin/sh.
	Shell string
	// User runs shells as this user (the agent must run as root to use
	// another user than its own), and file transfer with this user's
	// filesystem identity (see asUser). Default: the agent's user.
	User string
	// PortForwardAllow lists the host:port a port forward may reach; the
	// port may be "*". None: every port forward is refused.
	PortForwardAllow []string
	// IdleTimeout ends a session without traffic (keep-alives aside) for
	// this long. Default 15 minutes.
	IdleTimeout time.Duration
	// MaxSessions bounds the sessions open at once; beyond it a session is
	// refused. Default 4, at most 64.
	MaxSessions int

	// PingInterval is the websocket keep-alive; a connection without any
	// message for three intervals is dropped and dialled again. Default
	// 30 s.
	PingInterval time.Duration
	// MaxRetry caps the backoff between connection attempts. Default 5
	// minutes.
	MaxRetry time.Duration
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// Client is the device's deviceconnect connection.
type Client struct {
	opts  Options
	url   string
	allow []hostPort
	log   *slog.Logger
	// The user shells run as.
	uid, gid uint32
	groups   []uint32
	home     string
	userName string
	asRoot   bool // the agent runs as root: shells switch to uid/gid
}

// ErrOptions marks Options a Client cannot run with.
var ErrOptions = errors.New("remote: invalid options")

// New checks opts and returns a client; Run connects.
func New(opts Options) (*Client, error) {
	if opts.Token == nil {
		return nil, fmt.Errorf("%w: no token source", ErrOptions)
	}
	if opts.Shell == "" {
		opts.Shell = "/bin/sh"
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = 15 * time.Minute
	}
	if opts.MaxSessions <= 0 {
		opts.MaxSessions = 4
	}
	if opts.PingInterval <= 0 {
		opts.PingInterval = 30 * time.Second
	}
	if opts.MaxRetry <= 0 {
		opts.MaxRetry = 5 * time.Minute
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	c := &Client{opts: opts, log: opts.Logger}
	var errs []error
	u, err := url.Parse(opts.ServerURL)
	switch {
	case err != nil || u.Host == "":
		errs = append(errs, fmt.Errorf("server URL %q is not a URL", opts.ServerURL))
	case u.Scheme == "https":
		u.Scheme = "wss"
	case u.Scheme == "http":
		u.Scheme = "ws"
	default:
		errs = append(errs, fmt.Errorf("server URL %q is not http(s)", opts.ServerURL))
	}
	if err == nil {
		u.Path = strings.TrimRight(u.Path, "/") + "/api/devices/v1/deviceconnect/connect"
		u.RawQuery, u.Fragment = "", ""
		c.url = u.String()
	}
	if !filepath.IsAbs(opts.Shell) {
		errs = append(errs, fmt.Errorf("shell %q is not an absolute path", opts.Shell))
	}
	if opts.MaxSessions > maxSessionsLimit {
		errs = append(errs, fmt.Errorf("MaxSessions %d is more than %d", opts.MaxSessions, maxSessionsLimit))
	}
	for _, a := range opts.PortForwardAllow {
		hp, err := ParseAllow(a)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		c.allow = append(c.allow, hp)
	}
	if err := c.lookupUser(); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("%w: %w", ErrOptions, errors.Join(errs...))
	}
	return c, nil
}

// lookupUser resolves Options.User (or the agent's own user).
func (c *Client) lookupUser() error {
	euid := os.Geteuid()
	c.asRoot = euid == 0
	var (
		u   *user.User
		err error
	)
	if c.opts.User == "" {
		u, err = user.LookupId(strconv.Itoa(euid))
		if err != nil {
			// No passwd entry (a container): the agent's ids, / as home.
			c.uid, c.gid, c.home, c.userName = uint32(euid), uint32(os.Getegid()), "/", strconv.Itoa(euid)
			return nil
		}
	} else if u, err = user.Lookup(c.opts.User); err != nil {
		return fmt.Errorf("user %q: %v", c.opts.User, err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return fmt.Errorf("user %q has ids %s:%s, not numbers", u.Username, u.Uid, u.Gid)
	}
	if !c.asRoot && int(uid) != euid {
		return fmt.Errorf("user %q: the agent runs as uid %d and cannot start shells as another user; run it as root or leave User empty", c.opts.User, euid)
	}
	c.uid, c.gid, c.home, c.userName = uint32(uid), uint32(gid), u.HomeDir, u.Username
	if ids, err := u.GroupIds(); err == nil {
		for _, id := range ids {
			if n, err := strconv.ParseUint(id, 10, 32); err == nil {
				c.groups = append(c.groups, uint32(n))
			}
		}
	}
	return nil
}

// hostPort is one PortForwardAllow entry.
type hostPort struct {
	host string // lowercased, without brackets
	port string // a number or "*"
}

// ParseAllow parses a PortForwardAllow entry: HOST:PORT, with PORT a
// number (1–65535) or "*" (IPv6 hosts in brackets: "[::1]:22").
func ParseAllow(s string) (hostPort, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil || host == "" {
		return hostPort{}, fmt.Errorf("port forward allow entry %q is not HOST:PORT (e.g. 127.0.0.1:8080 or 127.0.0.1:*)", s)
	}
	if port != "*" {
		if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
			return hostPort{}, fmt.Errorf("port forward allow entry %q: port %q is neither 1–65535 nor *", s, port)
		}
	}
	return hostPort{host: strings.ToLower(host), port: port}, nil
}

// allowed reports whether a port forward may reach host:port.
func (c *Client) allowed(host string, port uint16) bool {
	host = strings.ToLower(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"))
	p := strconv.Itoa(int(port))
	for _, a := range c.allow {
		if a.host == host && (a.port == "*" || a.port == p) {
			return true
		}
	}
	return false
}

// protocols are the protocols the device accepts.
func (c *Client) protocols() []uint16 {
	var out []uint16
	if c.opts.Terminal {
		out = append(out, wire.ProtoShell)
	}
	if c.opts.FileTransfer {
		out = append(out, wire.ProtoFileTransfer)
	}
	if c.opts.PortForward {
		out = append(out, wire.ProtoPortForward)
	}
	return out
}

// errUnauthorized: the controller refused the token.
var errUnauthorized = errors.New("remote: the controller refused the device's token")

// Run keeps the connection to the controller until ctx ends: it dials,
// serves sessions, and dials again with a backoff (at most MaxRetry)
// when the connection drops or cannot be made; a refused token is
// dropped and the next attempt authenticates again.
func (c *Client) Run(ctx context.Context) error {
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval = min(time.Second, c.opts.MaxRetry)
	bo.MaxInterval = c.opts.MaxRetry
	for ctx.Err() == nil {
		start := time.Now()
		err := c.connectOnce(ctx)
		if ctx.Err() != nil {
			break
		}
		if time.Since(start) > time.Minute {
			bo.Reset() // it was up for a while: a fresh start
		}
		wait := bo.NextBackOff()
		if errors.Is(err, errUnauthorized) {
			c.log.Info("remote terminal: the controller refused the device's token; authenticating again", "retry_in", wait.Round(time.Millisecond))
		} else {
			c.log.Warn("remote terminal: connection to the controller lost or refused", "err", err, "retry_in", wait.Round(time.Millisecond))
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
	}
	return nil
}

// connectOnce dials and serves one connection until it ends.
func (c *Client) connectOnce(ctx context.Context) error {
	tctx, cancel := context.WithTimeout(ctx, time.Minute)
	tok, err := c.opts.Token(tctx)
	cancel()
	if err != nil {
		return fmt.Errorf("device token: %w", err)
	}
	d := websocket.Dialer{
		Proxy:            http.ProxyFromEnvironment,
		TLSClientConfig:  c.opts.TLS,
		HandshakeTimeout: 30 * time.Second,
		ReadBufferSize:   32 << 10,
		WriteBufferSize:  32 << 10,
	}
	hdr := http.Header{"Authorization": {"Bearer " + tok}}
	ws, resp, err := d.DialContext(ctx, c.url, hdr)
	if err != nil {
		if resp != nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusUnauthorized {
				if c.opts.Invalidate != nil {
					c.opts.Invalidate(tok)
				}
				return errUnauthorized
			}
			return fmt.Errorf("dial %s: %s", c.url, resp.Status)
		}
		return fmt.Errorf("dial %s: %w", c.url, err)
	}
	c.log.Info("remote terminal: connected to the controller", "url", c.url)
	conn := &conn{c: c, ws: ws, sessions: map[string]*session{}}
	err = conn.serve(ctx)
	c.log.Info("remote terminal: disconnected", "reason", err)
	return err
}

// conn is one websocket to the controller.
type conn struct {
	c  *Client
	ws *websocket.Conn
	wm sync.Mutex // one writer at a time

	mu       sync.Mutex
	sessions map[string]*session
	closed   bool
}

// send writes m; an error means the connection is gone.
func (cn *conn) send(m *wire.Msg) error {
	b := m.Encode()
	cn.wm.Lock()
	defer cn.wm.Unlock()
	_ = cn.ws.SetWriteDeadline(time.Now().Add(cn.c.opts.PingInterval))
	if err := cn.ws.WriteMessage(websocket.BinaryMessage, b); err != nil {
		_ = cn.ws.Close() // the reader ends, and with it every session
		return err
	}
	return nil
}

// serve reads until the connection ends, then ends every session.
func (cn *conn) serve(ctx context.Context) error {
	ping := cn.c.opts.PingInterval
	alive := func() { _ = cn.ws.SetReadDeadline(time.Now().Add(3 * ping)) }
	alive()
	cn.ws.SetReadLimit(maxMessage)
	cn.ws.SetPongHandler(func(string) error { alive(); return nil })
	cn.ws.SetPingHandler(func(msg string) error {
		alive()
		err := cn.ws.WriteControl(websocket.PongMessage, []byte(msg), time.Now().Add(ping))
		if errors.Is(err, websocket.ErrCloseSent) {
			return nil
		}
		return err
	})
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(ping)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				cn.wm.Lock()
				_ = cn.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseGoingAway, "the agent stops"), time.Now().Add(time.Second))
				cn.wm.Unlock()
				_ = cn.ws.Close()
				return
			case <-done:
				return
			case <-t.C:
				if cn.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(ping)) != nil {
					_ = cn.ws.Close()
					return
				}
			}
		}
	}()
	var err error
	for {
		var b []byte
		_, b, err = cn.ws.ReadMessage()
		if err != nil {
			break
		}
		alive()
		m, derr := wire.Decode(b)
		if derr != nil {
			cn.c.log.Warn("remote terminal: malformed message from the controller", "err", derr)
			continue
		}
		cn.route(m)
	}
	close(done)
	_ = cn.ws.Close()
	wg.Wait()
	cn.mu.Lock()
	cn.closed = true
	all := make([]*session, 0, len(cn.sessions))
	for _, s := range cn.sessions {
		all = append(all, s)
	}
	cn.mu.Unlock()
	for _, s := range all {
		s.end("the device's connection to the controller closed", false)
	}
	for _, s := range all {
		<-s.done
	}
	return err
}

// opens reports whether m may start a session.
func opens(m *wire.Msg) bool {
	switch m.Header.Proto {
	case wire.ProtoControl:
		return m.Header.MsgType == wire.TypeOpen
	case wire.ProtoShell:
		return m.Header.MsgType == wire.TypeNew
	case wire.ProtoFileTransfer:
		return m.Header.MsgType == wire.TypeStat || m.Header.MsgType == wire.TypeGetFile || m.Header.MsgType == wire.TypePutFile
	case wire.ProtoPortForward:
		return m.Header.MsgType == wire.TypeNew
	}
	return false
}

// route hands m to its session, starting one when m opens it.
func (cn *conn) route(m *wire.Msg) {
	sid := m.Header.SessionID
	if sid == "" {
		if m.Header.Proto == wire.ProtoControl && m.Header.MsgType == wire.TypePing {
			_ = cn.send(wire.New(wire.ProtoControl, wire.TypePong, ""))
		}
		return
	}
	cn.mu.Lock()
	s, ok := cn.sessions[sid]
	if !ok && !cn.closed && opens(m) {
		if len(cn.sessions) >= cn.c.opts.MaxSessions {
			cn.mu.Unlock()
			cn.c.log.Warn("remote terminal: session refused: too many sessions", "session", sid, "max", cn.c.opts.MaxSessions)
			cn.refuse(m, fmt.Sprintf("the device refuses the session: %d sessions are open, its limit (RemoteTerminal.MaxSessions)", cn.c.opts.MaxSessions))
			return
		}
		s = cn.newSession(sid, m.StringProp(wire.PropUserID))
		cn.sessions[sid] = s
		ok = true
	}
	cn.mu.Unlock()
	if !ok {
		switch {
		case m.Header.Proto == wire.ProtoControl && m.Header.MsgType == wire.TypePing:
			_ = cn.send(wire.New(wire.ProtoControl, wire.TypePong, sid))
		case m.Header.Proto == wire.ProtoControl, m.KeepAlive():
			// a close, error or pong of a session that ended
		case m.Header.Proto == wire.ProtoShell && m.Header.MsgType == wire.TypeStop:
		case m.Header.Proto == wire.ProtoPortForward && (m.Header.MsgType == wire.TypeStop || m.Header.MsgType == wire.TypeAck):
		default:
			cn.refuse(m, "no such session on the device (it ended)")
		}
		return
	}
	s.deliver(m)
}

// remove forgets s.
func (cn *conn) remove(s *session) {
	cn.mu.Lock()
	if cn.sessions[s.id] == s {
		delete(cn.sessions, s.id)
	}
	cn.mu.Unlock()
}

// refuse answers m with an error in its own protocol (as the operator's
// tool expects it) and a control error that closes the session.
func (cn *conn) refuse(m *wire.Msg, why string) {
	sid := m.Header.SessionID
	typ := m.Header.MsgType
	switch m.Header.Proto {
	case wire.ProtoShell:
		_ = cn.send(wire.New(wire.ProtoShell, typ, sid).With(wire.PropStatus, wire.ShellError).WithBody([]byte(why)))
	case wire.ProtoFileTransfer:
		_ = cn.send(wire.New(wire.ProtoFileTransfer, wire.TypeError, sid).WithBody(wire.MustMarshal(wire.TypedError{Error: &why, MessageType: &typ})))
	case wire.ProtoPortForward:
		rsp := wire.New(wire.ProtoPortForward, wire.TypeError, sid).WithBody(wire.MustMarshal(wire.TypedError{Error: &why, MessageType: &typ}))
		if id := m.StringProp(wire.PropConnectionID); id != "" {
			rsp.With(wire.PropConnectionID, id)
		}
		_ = cn.send(rsp)
	}
	_ = cn.send(wire.New(wire.ProtoControl, wire.TypeError, sid).WithBody(wire.MustMarshal(wire.ControlError{Error: why, Close: true, MessageProto: m.Header.Proto, MessageType: typ})))
}
