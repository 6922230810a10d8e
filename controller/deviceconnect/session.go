package deviceconnect

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gitfleet/gitfleet/device/remote/wire"
	"golang.org/x/time/rate"
)

// Session kinds, as recorded.
const (
	KindTerminal = "terminal" // a session websocket: shell, port forward, file transfer
	KindDownload = "download"
	KindUpload   = "upload"
)

// End reasons, as recorded (an "error: …" reason carries its cause).
const (
	ReasonClosed             = "closed"
	ReasonIdle               = "idle"
	ReasonOperatorRemoved    = "operator-removed"
	ReasonAccessRevoked      = "access-revoked"
	ReasonExpired            = "expired"
	ReasonDeviceDisconnected = "device-disconnected"
	ReasonShutdown           = "controller-shutdown"
	// The operator's first message asked for what the grant does not
	// allow (a port forward without portForward, …).
	ReasonRefused = "refused"
)

// session is one operator session this replica serves.
type session struct {
	r    *Relay
	rec  store.RemoteSession
	conn string // the device's connection when the session opened

	mu           sync.Mutex
	grant        Grant
	protocols    map[string]bool     // used so far
	delta        store.RemoteTraffic // not yet recorded
	total        store.RemoteTraffic // recorded
	input        []byte
	lastActivity time.Time
	lastTouch    time.Time
	toDevice     *rate.Limiter
	bps          int64 // the grant's BytesPerSecond toDevice was made for

	done    chan struct{}
	endOnce sync.Once
	reason  string // why it ended (recorded)
	endMsg  string // the same, for people
}

func (r *Relay) newSession(kind, operator, device, source, conn string, g Grant) *session {
	now := time.Now()
	s := &session{
		r: r,
		rec: store.RemoteSession{
			ID: newID(), Operator: operator, Device: device, Kind: kind, Commit: g.Commit,
			Replica: r.opts.Replica, Source: source, Started: now, RecordInput: g.RecordInput,
		},
		conn:         conn,
		grant:        g,
		protocols:    map[string]bool{},
		lastActivity: now,
		lastTouch:    now,
		toDevice:     limiter(g.BytesPerSecond),
		bps:          g.BytesPerSecond,
		done:         make(chan struct{}),
	}
	return s
}

// start records the session in the store under the grant's limits; a
// refusal says which limit.
func (s *session) start(ctx context.Context) (refused string, err error) {
	g := s.currentGrant()
	ok, which, err := s.r.opts.Sessions.StartSession(ctx, s.rec, s.r.opts.SessionLease, g.DeviceSessions, g.OperatorSessions)
	if err != nil {
		return "", fmt.Errorf("record the session: %w", err)
	}
	if !ok {
		switch which {
		case "device":
			refused = fmt.Sprintf("device %s already has the %d concurrent remote sessions its operators' access allows; close one and try again", s.rec.Device, g.DeviceSessions)
		case "operator":
			refused = fmt.Sprintf("operator %s already has the %d concurrent remote sessions the Operator manifest allows; close one and try again", s.rec.Operator, g.OperatorSessions)
		default:
			refused = fmt.Sprintf("a session limit (%s) is reached; close a session and try again", which)
		}
		s.r.refused(s.rec.Operator, s.rec.Device, g.Commit, refused)
		return refused, nil
	}
	s.r.track(s)
	s.r.event(EventStarted, s.rec.Device, s.rec.Commit, fmt.Sprintf("operator %s opened %s session %s from %s", s.rec.Operator, article(s.rec.Kind), s.rec.ID, s.rec.Source), s.rec.ID)
	return "", nil
}

// finish records the end of the session.
func (s *session) finish() {
	s.r.untrack(s)
	s.end(ReasonClosed, "the session closed")
	s.mu.Lock()
	delta, input := s.delta, s.input
	s.delta, s.input = store.RemoteTraffic{}, nil
	reason := s.reason
	recorded := store.MergeProtocols(nil, s.usedProtocols())
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.r.opts.Sessions.EndSession(ctx, s.rec.ID, time.Now(), reason, delta, input, recorded...); err != nil {
		s.r.log.Error("cannot record the end of a remote session", "session", s.rec.ID, "err", err)
	}
	s.mu.Lock()
	total := s.total.Add(delta)
	used := s.usedProtocols()
	s.mu.Unlock()
	protocols := "none"
	if len(used) > 0 {
		protocols = strings.Join(used, ", ")
	}
	s.r.event(EventEnded, s.rec.Device, s.rec.Commit, fmt.Sprintf("operator %s's %s session %s ended: %s (protocols used: %s; %d bytes to the device, %d from it)",
		s.rec.Operator, s.rec.Kind, s.rec.ID, reason, protocols, total.ToDevice, total.FromDevice), s.rec.ID)
	s.r.log.Info("remote session ended", "session", s.rec.ID, "kind", s.rec.Kind, "operator", s.rec.Operator, "device_id", s.rec.Device,
		"reason", reason, "protocols", used, "to_device", total.ToDevice, "from_device", total.FromDevice)
}

// end ends the session (the first call wins).
func (s *session) end(reason, msg string) {
	s.endOnce.Do(func() {
		s.mu.Lock()
		s.reason, s.endMsg = reason, msg
		s.mu.Unlock()
		close(s.done)
	})
}

func (s *session) ended() (reason, msg string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reason, s.endMsg
}

func (s *session) currentGrant() Grant {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.grant
}

func (s *session) setGrant(g Grant) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.grant = g
	if g.BytesPerSecond != s.bps {
		s.bps, s.toDevice = g.BytesPerSecond, limiter(g.BytesPerSecond)
	}
}

// allowed reports whether the grant lets the operator use proto; the
// reason names what is missing.
func (g Grant) allowed(proto uint16) (bool, string) {
	switch proto {
	case wire.ProtoControl:
		return true, ""
	case wire.ProtoShell:
		return g.Terminal, "the remote terminal (terminal)"
	case wire.ProtoFileTransfer:
		return g.FileTransfer, "file transfer (fileTransfer)"
	case wire.ProtoPortForward:
		return g.PortForward, "port forwarding (portForward)"
	}
	return false, "protocol " + protoName(proto)
}

// revoked checks a session against its operator's grant now: the reason
// to end it and a message for the operator, or "" to keep it. A failure
// of the Authorizer other than a refusal keeps the session.
func (s *session) revoked(g Grant, err error, now time.Time) (reason, msg string) {
	switch {
	case errors.Is(err, ErrExpired):
		return ReasonExpired, "access ended: " + err.Error()
	case errors.Is(err, ErrOperatorRemoved):
		return ReasonOperatorRemoved, "access ended: " + err.Error()
	case errors.Is(err, ErrForbidden):
		return ReasonAccessRevoked, "access ended: " + err.Error()
	case err != nil:
		s.r.log.Warn("cannot check a remote session's access again; it stays open", "session", s.rec.ID, "err", err)
		return "", ""
	case !g.Expires.IsZero() && !now.Before(g.Expires):
		return ReasonExpired, fmt.Sprintf("access ended: operator %s expired at %s", s.rec.Operator, g.Expires.UTC().Format(time.RFC3339))
	}
	s.mu.Lock()
	used := s.usedProtocols()
	s.mu.Unlock()
	for _, p := range used {
		if ok, what := g.allowed(protoByName(p)); !ok {
			return ReasonAccessRevoked, fmt.Sprintf("access ended: operator %s may no longer use %s on device %s", s.rec.Operator, what, s.rec.Device)
		}
	}
	return "", ""
}

// usedProtocols lists the protocols used so far, sorted (s.mu held).
func (s *session) usedProtocols() []string {
	used := make([]string, 0, len(s.protocols))
	for p := range s.protocols {
		used = append(used, p)
	}
	slices.Sort(used)
	return used
}

func protoByName(name string) uint16 {
	switch name {
	case "shell":
		return wire.ProtoShell
	case "filetransfer":
		return wire.ProtoFileTransfer
	case "portforward":
		return wire.ProtoPortForward
	}
	return 0
}

// used records that the session used proto.
func (s *session) used(proto uint16) {
	if proto == wire.ProtoControl {
		return
	}
	s.mu.Lock()
	s.protocols[protoName(proto)] = true
	s.mu.Unlock()
}

// count adds traffic (and typed input) to what the next touch records.
func (s *session) count(toDevice, fromDevice int, input []byte, active bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.delta.ToDevice += int64(toDevice)
	s.delta.FromDevice += int64(fromDevice)
	// Recorded while the grant asks for it (a session started without
	// it is never recorded: its record says so).
	if len(input) > 0 && s.rec.RecordInput && s.grant.RecordInput && len(s.input) < store.MaxRecordedInput {
		s.input = append(s.input, input...)
	}
	if active {
		s.lastActivity = time.Now()
	}
}

// tickEvery is how often tick runs: often enough for the idle timeout and
// the lease.
func (s *session) tickEvery() time.Duration {
	d := s.r.opts.SessionLease / 3
	if idle := s.currentGrant().IdleTimeout; idle > 0 && idle/4 < d {
		d = idle / 4
	}
	return max(d, 10*time.Millisecond)
}

// tick ends an idle or expired session, or one whose device connection
// is gone, and renews the session's record with its counters.
func (s *session) tick(ctx context.Context) {
	now := time.Now()
	g := s.currentGrant()
	s.mu.Lock()
	idleFor := now.Sub(s.lastActivity)
	touchDue := now.Sub(s.lastTouch) >= s.r.opts.SessionLease/3
	s.mu.Unlock()
	if g.IdleTimeout > 0 && idleFor >= g.IdleTimeout {
		s.end(ReasonIdle, fmt.Sprintf("the session was idle for %s (the Operator manifest's idle timeout)", g.IdleTimeout))
		return
	}
	if !g.Expires.IsZero() && !now.Before(g.Expires) {
		s.end(ReasonExpired, fmt.Sprintf("access ended: operator %s expired at %s", s.rec.Operator, g.Expires.UTC().Format(time.RFC3339)))
		return
	}
	if !touchDue {
		return
	}
	if c, ok, err := s.r.opts.Sessions.Connected(ctx, s.rec.Device); err == nil && (!ok || c.Conn != s.conn) {
		s.end(ReasonDeviceDisconnected, "the device disconnected")
		return
	}
	s.mu.Lock()
	delta, input := s.delta, s.input
	s.delta, s.input = store.RemoteTraffic{}, nil
	s.total = s.total.Add(delta)
	s.lastTouch = now
	recorded := store.MergeProtocols(nil, s.usedProtocols())
	s.mu.Unlock()
	err := s.r.opts.Sessions.TouchSession(ctx, s.rec.ID, s.r.opts.SessionLease, delta, input, recorded...)
	switch {
	case errors.Is(err, store.ErrSessionEnded) || errors.Is(err, store.ErrNotFound):
		s.end("error: the session's record ended", "the session's record in the store ended")
	case err != nil:
		// Counted again at the next touch.
		s.mu.Lock()
		s.total = store.RemoteTraffic{ToDevice: s.total.ToDevice - delta.ToDevice, FromDevice: s.total.FromDevice - delta.FromDevice}
		s.delta = s.delta.Add(delta)
		s.input = append(input, s.input...)
		s.mu.Unlock()
		s.r.log.Warn("cannot renew a remote session's record", "session", s.rec.ID, "err", err)
	}
}

// limiter returns a limiter of bps bytes per second (none when bps ≤ 0).
func limiter(bps int64) *rate.Limiter {
	if bps <= 0 {
		return rate.NewLimiter(rate.Inf, 0)
	}
	return rate.NewLimiter(rate.Limit(bps), int(min(bps, 1<<30)))
}

// waitBytes waits until lim lets n bytes through.
func waitBytes(ctx context.Context, lim *rate.Limiter, n int) error {
	if lim == nil || lim.Limit() == rate.Inf {
		return nil
	}
	for n > 0 {
		k := min(n, lim.Burst())
		if err := lim.WaitN(ctx, k); err != nil {
			return err
		}
		n -= k
	}
	return nil
}

// article: "a terminal", "a download", "an upload".
func article(kind string) string {
	if kind != "" && strings.ContainsRune("aeiou", rune(kind[0])) {
		return "an " + kind
	}
	return "a " + kind
}
