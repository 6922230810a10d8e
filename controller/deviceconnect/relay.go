// Package deviceconnect relays Mender's remote terminal, file transfer and
// port forwarding between the stock mender-connect on devices and the
// stock mender-cli of operators.
//
// A device opens one websocket (GET /api/devices/v1/deviceconnect/connect,
// with its device token) and keeps it open; an operator opens a session
// websocket per terminal or port forward (GET
// /api/management/v1/deviceconnect/devices/{id}/connect), or asks for a
// file (GET …/download?path=) or sends one (PUT …/upload), and the relay
// runs the file transfer protocol with the device itself. The two ends may
// be on different replicas: they meet on the store's message bus (see
// bus.go), and the device's presence, the open sessions and their limits
// are kept in the store (store.RemoteSessions).
//
// Who may do what comes from an Authorizer (access.go): every operator
// request is authenticated, every session needs a Grant for its device,
// and every message the operator sends needs the Grant's permission for
// its protocol (shell: Terminal, file transfer: FileTransfer, port
// forward: PortForward); a refused message is answered with an error and
// never reaches the device. When the Authorizer signals a change, every
// session this replica serves is checked again and ended at once when its
// grant is gone or lost the protocol in use.
//
// Every session is recorded in the store: kind, operator, device, the
// commit that granted it, the operator's address, start, end and why,
// bytes each way, the protocols used and, when the grant asks for it, what
// the operator typed.
package deviceconnect

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gorilla/websocket"
)

// Options configure a Relay.
type Options struct {
	// Sessions is the store's bus, presence and session records.
	// Required.
	Sessions store.RemoteSessions
	// Authorizer authenticates operators and grants access. Required.
	Authorizer Authorizer
	// Replica names this controller in session records and connection
	// IDs. Default: the host name.
	Replica string
	Logger  *slog.Logger
	// PresenceTTL is how long a device's connection record lasts unless
	// renewed; it is renewed every third of it. Default 60s.
	PresenceTTL time.Duration
	// SessionLease is how long a session record stays open unless
	// renewed (a replica that dies leaves its sessions counted for at
	// most this long); sessions are renewed, with their byte counts,
	// every third of it. Default 60s.
	SessionLease time.Duration
	// PingInterval is the period of websocket pings to both peers; a
	// peer silent for three of them is gone. Default 30s.
	PingInterval time.Duration
	// TransferTimeout bounds each wait for the device during a download
	// or an upload (the grant's idle timeout, when shorter, wins).
	// Default 60s.
	TransferTimeout time.Duration
	// Events, when set, is given the events of sessions:
	// session.started, session.ended and session.refused, with the
	// subject "device/<ID>" and the commit that granted (or refused)
	// access (the controller appends them to its event log, which
	// notifies).
	Events func(ctx context.Context, e store.Event)
	// Source returns the operator's address for the session record.
	// Default: the connection's peer (behind a proxy, give one that
	// believes the proxy's X-Forwarded-For).
	Source func(*http.Request) string
}

// Relay serves the device and operator ends of deviceconnect. Create it
// with New, mount its handlers, and call Run.
type Relay struct {
	opts     Options
	log      *slog.Logger
	upgrader websocket.Upgrader

	mu       sync.Mutex
	sessions map[string]*session // the sessions this replica serves, by ID
}

// New checks opts and builds a Relay; it starts nothing.
func New(opts Options) (*Relay, error) {
	if opts.Sessions == nil || opts.Authorizer == nil {
		return nil, errors.New("deviceconnect: Sessions and Authorizer are required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Replica == "" {
		opts.Replica = "replica"
	}
	if opts.PresenceTTL <= 0 {
		opts.PresenceTTL = time.Minute
	}
	if opts.SessionLease <= 0 {
		opts.SessionLease = time.Minute
	}
	if opts.PingInterval <= 0 {
		opts.PingInterval = 30 * time.Second
	}
	if opts.TransferTimeout <= 0 {
		opts.TransferTimeout = time.Minute
	}
	if opts.Source == nil {
		opts.Source = peerOf
	}
	r := &Relay{opts: opts, log: opts.Logger, sessions: map[string]*session{}}
	r.upgrader = websocket.Upgrader{
		HandshakeTimeout: 10 * time.Second,
		Subprotocols:     []string{"protomsg/msgpack"},
		CheckOrigin:      sameOrigin,
		Error: func(w http.ResponseWriter, req *http.Request, status int, reason error) {
			writeError(w, status, "websocket: "+reason.Error())
		},
	}
	return r, nil
}

// maxFrame bounds one websocket message from either peer (it travels in
// one bus message, with its envelope).
const maxFrame = store.MaxRemoteMessage - 4096

// Run re-checks the open sessions this replica serves whenever the
// Authorizer signals a change, until ctx ends; then it ends them all.
func (r *Relay) Run(ctx context.Context) {
	changed := r.opts.Authorizer.Changed()
	for {
		select {
		case <-ctx.Done():
			for _, s := range r.open() {
				s.end("controller-shutdown", "the controller is shutting down")
			}
			return
		case <-changed:
			r.recheck(ctx)
		}
	}
}

// recheck asks for every open session's grant again and ends those that
// lost it.
func (r *Relay) recheck(ctx context.Context) {
	for _, s := range r.open() {
		g, err := r.opts.Authorizer.Grant(ctx, s.rec.Operator, s.rec.Device)
		if reason, msg := s.revoked(g, err, time.Now()); reason != "" {
			r.log.Info("remote session ended: access changed", "session", s.rec.ID, "operator", s.rec.Operator, "device_id", s.rec.Device, "reason", reason)
			s.end(reason, msg)
			continue
		}
		s.setGrant(g)
	}
}

func (r *Relay) open() []*session {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*session, 0, len(r.sessions))
	for _, s := range r.sessions {
		out = append(out, s)
	}
	return out
}

func (r *Relay) track(s *session) {
	r.mu.Lock()
	r.sessions[s.rec.ID] = s
	r.mu.Unlock()
}

func (r *Relay) untrack(s *session) {
	r.mu.Lock()
	delete(r.sessions, s.rec.ID)
	r.mu.Unlock()
}

// Event kinds (schema's session.* events).
const (
	EventStarted = "session.started"
	EventEnded   = "session.ended"
	EventRefused = "session.refused"
)

// event hands an event to Options.Events. occurrence tells events of one
// kind on one device and commit apart (a session's ID, or a fresh one for
// a refusal).
func (r *Relay) event(kind, device, commit, msg, occurrence string) {
	if r.opts.Events == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r.opts.Events(ctx, store.Event{Time: time.Now(), Commit: commit, Kind: kind, Subject: "device/" + device,
		Message: msg, Occurrence: occurrence})
}

// refused records a refusal of operator on device.
func (r *Relay) refused(operator, device, commit, why string) {
	r.event(EventRefused, device, commit, fmt.Sprintf("operator %s refused: %s", operator, why), newID())
}

// OpenSessions is how many sessions this replica serves now.
func (r *Relay) OpenSessions() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.sessions)
}

// newID returns a random ID of 16 bytes, hex-encoded, in the form of a
// UUID (mender-cli shows session IDs as the Mender server makes them).
func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// sameOrigin refuses a cross-site websocket upgrade (a page in a browser
// opening a session with the operator's credentials): a request with an
// Origin must name the host it was sent to. mender-cli and mender-connect
// send no Origin.
func sameOrigin(req *http.Request) bool {
	origin := req.Header.Get("Origin")
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false
	}
	return strings.EqualFold(u.Host, req.Host)
}

// writeError answers {"error": msg}, as the Mender server does.
func writeError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

// operatorOf authenticates req; on failure it has answered 401.
// authorize answers an operator's request for the device in its path:
// the device's ID, the operator and their grant for it, or ok false once
// it has answered 400, 401 or 403.
func (r *Relay) authorize(w http.ResponseWriter, req *http.Request) (device, op string, g Grant, ok bool) {
	if device, ok = deviceParam(w, req); !ok {
		return "", "", Grant{}, false
	}
	if op, ok = r.operatorOf(w, req); !ok {
		return "", "", Grant{}, false
	}
	if g, ok = r.grantOf(w, req, op, device); !ok {
		return "", "", Grant{}, false
	}
	return g.deviceID(device), op, g, true
}

func (r *Relay) operatorOf(w http.ResponseWriter, req *http.Request) (string, bool) {
	op, err := r.opts.Authorizer.Operator(req)
	if err != nil {
		w.Header().Set("WWW-Authenticate", `Bearer realm="gitfleet"`)
		msg := err.Error()
		if !errors.Is(err, ErrUnauthenticated) {
			r.log.Warn("operator authentication failed", "err", err)
			msg = "operator authentication failed"
		}
		writeError(w, http.StatusUnauthorized, msg+": send an operator's token as Authorization: Bearer (mender-cli login --token)")
		return "", false
	}
	return op, true
}

// grantOf asks for operator's grant on device; on failure it has answered
// 403 (or 503 when the Authorizer failed otherwise).
func (r *Relay) grantOf(w http.ResponseWriter, req *http.Request, operator, device string) (Grant, bool) {
	g, err := r.opts.Authorizer.Grant(req.Context(), operator, device)
	if err != nil {
		if errors.Is(err, ErrForbidden) {
			writeError(w, http.StatusForbidden, err.Error())
			r.refused(operator, device, "", err.Error())
		} else {
			r.log.Error("remote access check failed", "operator", operator, "device_id", device, "err", err)
			writeError(w, http.StatusServiceUnavailable, "the access check failed; try again later")
		}
		return Grant{}, false
	}
	if !g.Expires.IsZero() && !time.Now().Before(g.Expires) {
		msg := fmt.Sprintf("forbidden: operator %s expired at %s", operator, g.Expires.UTC().Format(time.RFC3339))
		writeError(w, http.StatusForbidden, msg)
		r.refused(operator, device, g.Commit, msg)
		return Grant{}, false
	}
	return g, true
}

// deviceParam reads and checks the {id} path value.
func deviceParam(w http.ResponseWriter, req *http.Request) (string, bool) {
	id := req.PathValue("id")
	if id == "" || len(id) > 256 || strings.ContainsAny(id, "{}/") {
		writeError(w, http.StatusBadRequest, "bad device ID in the path")
		return "", false
	}
	return id, true
}

// peerOf is the host of a request's peer.
func peerOf(req *http.Request) string {
	host, _, err := net.SplitHostPort(req.RemoteAddr)
	if err != nil {
		return req.RemoteAddr
	}
	return host
}

// Handler serves the device and operator routes on their own, for tests
// and tools; deviceOf authenticates a device's request (the controller
// mounts the handlers with its device API's authentication instead).
func (r *Relay) Handler(deviceOf func(*http.Request) (string, error)) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+DevicePath, func(w http.ResponseWriter, req *http.Request) {
		id, err := deviceOf(req)
		if err != nil {
			writeError(w, http.StatusUnauthorized, err.Error())
			return
		}
		r.ServeDevice(w, req, id)
	})
	mux.HandleFunc("GET "+ManagementPrefix+"/devices/{id}", r.DeviceStatus)
	mux.HandleFunc("GET "+ManagementPrefix+"/devices/{id}/connect", r.Connect)
	mux.HandleFunc("GET "+ManagementPrefix+"/devices/{id}/download", r.Download)
	mux.HandleFunc("PUT "+ManagementPrefix+"/devices/{id}/upload", r.Upload)
	return mux
}

// Routes.
const (
	DevicePath       = "/api/devices/v1/deviceconnect/connect"
	ManagementPrefix = "/api/management/v1/deviceconnect"
)

// DeviceStatus answers GET …/devices/{id}: {"device_id", "status"} with
// status "connected" or "disconnected", as mender-cli expects, to an
// operator granted the device.
func (r *Relay) DeviceStatus(w http.ResponseWriter, req *http.Request) {
	device, _, _, ok := r.authorize(w, req)
	if !ok {
		return
	}
	c, connected, err := r.opts.Sessions.Connected(req.Context(), device)
	if err != nil {
		r.log.Error("device presence unavailable", "device_id", device, "err", err)
		writeError(w, http.StatusServiceUnavailable, "store unavailable; try again later")
		return
	}
	out := map[string]any{"device_id": device, "status": "disconnected"}
	if connected {
		out["status"] = "connected"
		out["connected_since"] = c.Since.UTC()
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	_ = json.NewEncoder(w).Encode(out)
}

// deviceID is the ID of the device a request named.
func (g Grant) deviceID(named string) string {
	if g.Device != "" {
		return g.Device
	}
	return named
}
