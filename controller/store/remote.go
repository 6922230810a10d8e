package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// RemoteSessions is what remote terminal, file transfer and port
// forwarding sessions need from the store: a message bus that pairs an
// operator's connection with a device's connection when they reached
// different replicas, each device's connection presence, the limits on
// concurrent sessions, and the record of every session for auditors.
//
// Implementations pass storetest's remote-session tests; the embedded
// store's bus is process-local (one controller), Redis's crosses replicas.
type RemoteSessions interface {
	// Publish sends msg (at most MaxRemoteMessage bytes) to every current
	// subscriber of topic, on any replica. Delivery is at most once; the
	// messages of one publisher to one topic arrive in order. Publishing
	// to a topic nobody subscribes to is not an error: the message is
	// gone. Publish copies msg; the caller may reuse it.
	Publish(ctx context.Context, topic string, msg []byte) error
	// Subscribe receives what is published to topic from the moment it
	// returns until the Subscription ends. It ends, and its C is closed,
	// when it is closed, when ctx ends, when the store is closed, when the
	// subscriber falls more than RemoteBufferBytes (or
	// RemoteBufferMessages messages) behind — a slow subscriber is still
	// ended, since a stream with a silent gap would be worse than one that
	// visibly ends, but only once it is megabytes behind, not after a
	// burst of small messages — and, for a store with a server, when the
	// connection to it breaks. Messages already buffered are still
	// delivered before C closes, except after Close. A subscriber that sees
	// C close without having closed it should end what it relays (and
	// still call Close: what an ended subscription holds is released when
	// it is received or the subscription closed). Each message is the
	// subscriber's own copy, never nil.
	Subscribe(ctx context.Context, topic string) (Subscription, error)

	// SetConnected records that device holds the deviceconnect connection
	// conn until ttl from now (a later call renews it; Since stays while
	// the record names conn, and a call naming another conn replaces the
	// record: the latest connection wins). A zero ttl clears it (the
	// connection closed), but only while the record still names conn: an
	// old connection's close does not clear a newer one. A negative ttl,
	// an empty or over-long device or conn is ErrInvalid.
	SetConnected(ctx context.Context, device, conn string, ttl time.Duration) error
	// Connected returns the device's current connection record, ok false
	// when it has none (never connected, closed or expired).
	Connected(ctx context.Context, device string) (c RemoteConnection, ok bool, err error)

	// StartSession records s as open, with a lease until s.Started+lease
	// (renewed by TouchSession), if the device has fewer than deviceLimit
	// and the operator fewer than operatorLimit open sessions whose lease
	// has not run out (a limit ≤ 0 is no limit). ok is false, and
	// nothing is written, when a limit is reached; limit then says which
	// ("device" or "operator"; "device" when both are). The check and the
	// write are atomic, so replicas together never exceed a limit. Leases
	// are compared with the calling replica's clock. An ID already
	// recorded is ErrInvalid.
	StartSession(ctx context.Context, s RemoteSession, lease time.Duration, deviceLimit, operatorLimit int) (ok bool, limit string, err error)
	// TouchSession renews an open session's lease (until lease from the
	// store's clock) and adds to its byte counters; input (what the
	// operator typed, which the caller passes only when the operator's
	// manifest asks for it to be recorded) is appended to the session's
	// recorded input and sets the record's RecordInput (a new commit may
	// start recording mid-session), capped at MaxRecordedInput bytes
	// (the rest is dropped and InputTruncated set). A session that has
	// ended or whose lease ran out is not renewed (it no longer counts
	// against the limits and may not come back): the counters and input
	// are still added, and the error wraps ErrSessionEnded, so the caller
	// should end what it relays. An unknown id is ErrNotFound.
	// protocols (RemoteProtocols names) the session has used are added
	// to the record's Protocols.
	TouchSession(ctx context.Context, id string, lease time.Duration, delta RemoteTraffic, input []byte, protocols ...string) error
	// EndSession closes session id with reason (not empty) at end, adding
	// the last counters and input as TouchSession does. Ending a session
	// twice keeps the first end and adds nothing (so a retried EndSession
	// counts nothing twice). An unknown id is ErrNotFound.
	EndSession(ctx context.Context, id string, end time.Time, reason string, delta RemoteTraffic, input []byte, protocols ...string) error
	// Session returns one session record, or ErrNotFound.
	Session(ctx context.Context, id string) (RemoteSession, error)
	// Sessions returns up to limit (1…MaxPage; larger is clamped) session
	// records, newest start first (equal starts: greater ID first), that match f at
	// the store's clock. The store keeps the last Bounds.MaxRemoteSessions
	// (default MaxRemoteSessions) records by start; older ones are
	// dropped, whether they are open or not.
	Sessions(ctx context.Context, f RemoteSessionFilter, limit int) ([]RemoteSession, error)
}

// Subscription is a Subscribe's stream of messages.
type Subscription interface {
	// C yields the messages; it is closed when the subscription ends.
	C() <-chan []byte
	// Close ends the subscription.
	Close() error
}

// Limits of RemoteSessions.
const (
	MaxRemoteMessage  = 1 << 20 // bytes in one published message
	MaxRecordedInput  = 1 << 20 // bytes of typed input kept per session
	MaxRemoteSessions = 10000   // session records kept (the default of Bounds.MaxRemoteSessions)
	// RemoteBufferBytes is how many bytes of messages a Subscription
	// holds for a subscriber that has not received them yet; a message
	// that would take it past this ends the subscription instead (what it
	// holds is still delivered). RemoteBufferMessages bounds the count
	// the same way (for floods of tiny messages).
	RemoteBufferBytes    = 8 << 20
	RemoteBufferMessages = 1 << 16
)

// ErrSessionEnded: TouchSession on a session that has ended or whose
// lease ran out. The caller should end what it relays.
var ErrSessionEnded = errors.New("store: remote session ended")

// RemoteConnection is where a device's deviceconnect connection is held.
type RemoteConnection struct {
	Device  string    `json:"device"`
	Conn    string    `json:"conn"`    // the connection's ID (replica and a random part)
	Since   time.Time `json:"since"`   // when this connection was first recorded
	Expires time.Time `json:"expires"` // when the record lapses unless renewed
}

// RemoteTraffic is bytes through a session.
type RemoteTraffic struct {
	ToDevice   int64 `json:"to_device"`
	FromDevice int64 `json:"from_device"`
}

// Add returns t+o.
func (t RemoteTraffic) Add(o RemoteTraffic) RemoteTraffic {
	return RemoteTraffic{t.ToDevice + o.ToDevice, t.FromDevice + o.FromDevice}
}

// RemoteSession is the record of one remote session.
type RemoteSession struct {
	ID       string    `json:"id"`
	Operator string    `json:"operator"`
	Device   string    `json:"device"`
	Kind     string    `json:"kind"`   // terminal, download, upload (a terminal session may also forward ports and transfer files)
	Commit   string    `json:"commit"` // the live commit whose Operator manifest allowed it
	Replica  string    `json:"replica,omitempty"`
	Source   string    `json:"source,omitempty"` // the operator's address
	Started  time.Time `json:"started"`
	Ended    time.Time `json:"ended,omitzero"`
	Reason   string    `json:"reason,omitempty"` // why it ended: closed, idle, operator-removed, access-revoked, device-disconnected, limit, error: …
	// Protocols used (RemoteProtocols): shell, filetransfer,
	// portforward, menderclient.
	Protocols      []string      `json:"protocols,omitempty"`
	Traffic        RemoteTraffic `json:"traffic"`
	RecordInput    bool          `json:"record_input,omitempty"`
	Input          string        `json:"input,omitempty"` // typed input, when recorded
	InputTruncated bool          `json:"input_truncated,omitempty"`
	Lease          time.Time     `json:"lease,omitzero"` // an open session whose lease ran out is counted as ended
}

// Open reports whether the session is open at now: not ended and its
// lease not run out.
func (s RemoteSession) Open(now time.Time) bool {
	return s.Ended.IsZero() && now.Before(s.Lease)
}

// RemoteSessionFilter selects session records; empty fields match all.
type RemoteSessionFilter struct {
	Operator string
	Device   string
	OpenOnly bool
}

// Matches reports whether s passes f at now.
func (f RemoteSessionFilter) Matches(s RemoteSession, now time.Time) bool {
	return (f.Operator == "" || f.Operator == s.Operator) &&
		(f.Device == "" || f.Device == s.Device) &&
		(!f.OpenOnly || s.Open(now))
}

// ValidateRemoteSession checks what StartSession is given.
func ValidateRemoteSession(s RemoteSession, lease time.Duration) error {
	switch {
	case s.ID == "" || len(s.ID) > 128:
		return fmt.Errorf("%w: session ID must be 1…128 bytes", ErrInvalid)
	case s.Operator == "" || s.Device == "":
		return fmt.Errorf("%w: session %s needs an operator and a device", ErrInvalid, s.ID)
	case len(s.Operator) > 256:
		return fmt.Errorf("%w: session %s: operator name longer than 256 bytes", ErrInvalid, s.ID)
	case len(s.Device) > 256 || strings.ContainsAny(s.Device, "{}"):
		return fmt.Errorf("%w: session %s: device ID %q (1…256 bytes, no braces)", ErrInvalid, s.ID, s.Device)
	case s.Started.IsZero():
		return fmt.Errorf("%w: session %s has no start time", ErrInvalid, s.ID)
	case !knownProtocols(s.Protocols):
		return fmt.Errorf("%w: session %s: protocols %v (each one of %s)", ErrInvalid, s.ID, s.Protocols, strings.Join(RemoteProtocols, ", "))
	case !s.Ended.IsZero() || s.Reason != "":
		return fmt.Errorf("%w: session %s: a session starts open (no end time or reason)", ErrInvalid, s.ID)
	case s.Input != "" || s.InputTruncated:
		return fmt.Errorf("%w: session %s: input is recorded by TouchSession and EndSession, not at start", ErrInvalid, s.ID)
	case s.Traffic.ToDevice < 0 || s.Traffic.FromDevice < 0:
		return fmt.Errorf("%w: session %s: negative byte counts %+v", ErrInvalid, s.ID, s.Traffic)
	case len(s.Kind)+len(s.Commit)+len(s.Replica)+len(s.Source)+len(strings.Join(s.Protocols, ",")) > 4096:
		return fmt.Errorf("%w: session %s: kind, commit, replica, source and protocols exceed 4096 bytes", ErrInvalid, s.ID)
	case lease <= 0:
		return fmt.Errorf("%w: session %s: lease must be positive", ErrInvalid, s.ID)
	}
	return nil
}

// ValidateConnection checks SetConnected's arguments.
func ValidateConnection(device, conn string, ttl time.Duration) error {
	switch {
	case device == "" || len(device) > 256 || strings.ContainsAny(device, "{}"):
		return fmt.Errorf("%w: device ID %q (1…256 bytes, no braces)", ErrInvalid, device)
	case conn == "" || len(conn) > 256:
		return fmt.Errorf("%w: device %s: connection ID must be 1…256 bytes", ErrInvalid, device)
	case ttl < 0:
		return fmt.Errorf("%w: device %s: negative connection TTL %v (0 clears the record)", ErrInvalid, device, ttl)
	}
	return nil
}

// RemoteProtocols are the protocols a session record lists, in the
// order it lists them.
var RemoteProtocols = []string{"shell", "filetransfer", "portforward", "menderclient"}

// ProtocolMask returns protocols as a bit set over RemoteProtocols, or
// ErrInvalid naming one it does not know.
func ProtocolMask(protocols []string) (uint, error) {
	var m uint
	for _, p := range protocols {
		i := slices.Index(RemoteProtocols, p)
		if i < 0 {
			return 0, fmt.Errorf("%w: protocol %q (one of %s)", ErrInvalid, p, strings.Join(RemoteProtocols, ", "))
		}
		m |= 1 << i
	}
	return m, nil
}

func knownProtocols(ps []string) bool { _, err := ProtocolMask(ps); return err == nil }

// ProtocolNames returns the RemoteProtocols in mask, in their order.
func ProtocolNames(mask uint) []string {
	var out []string
	for i, p := range RemoteProtocols {
		if mask&(1<<i) != 0 {
			out = append(out, p)
		}
	}
	return out
}

// MergeProtocols returns the protocols in a or b, in RemoteProtocols
// order (unknown names are dropped).
func MergeProtocols(a, b []string) []string {
	var m uint
	for _, p := range append(slices.Clone(a), b...) {
		if i := slices.Index(RemoteProtocols, p); i >= 0 {
			m |= 1 << i
		}
	}
	return ProtocolNames(m)
}

// ValidateSessionUpdate checks what TouchSession (end zero) and
// EndSession are given.
func ValidateSessionUpdate(id string, lease time.Duration, end time.Time, reason string, delta RemoteTraffic, ending bool, protocols ...string) error {
	if _, err := ProtocolMask(protocols); err != nil {
		return fmt.Errorf("session %s: %w", id, err)
	}
	switch {
	case id == "" || len(id) > 128:
		return fmt.Errorf("%w: session ID must be 1…128 bytes", ErrInvalid)
	case delta.ToDevice < 0 || delta.FromDevice < 0:
		return fmt.Errorf("%w: session %s: negative byte counts %+v", ErrInvalid, id, delta)
	case !ending && lease <= 0:
		return fmt.Errorf("%w: session %s: lease must be positive", ErrInvalid, id)
	case ending && end.IsZero():
		return fmt.Errorf("%w: session %s: no end time", ErrInvalid, id)
	case ending && (reason == "" || len(reason) > 1024):
		return fmt.Errorf("%w: session %s: end reason must be 1…1024 bytes", ErrInvalid, id)
	}
	return nil
}

// RecordInput returns how much of in a session that has recorded have
// bytes of input keeps, and whether the rest is dropped.
func RecordInput(have int, in []byte) (keep []byte, truncated bool) {
	room := max(MaxRecordedInput-have, 0)
	if len(in) <= room {
		return in, false
	}
	return in[:room], true
}

// ValidateTopic checks a Publish/Subscribe topic and message.
func ValidateTopic(topic string, msg []byte) error {
	if topic == "" || len(topic) > 256 {
		return fmt.Errorf("%w: topic must be 1…256 bytes", ErrInvalid)
	}
	if len(msg) > MaxRemoteMessage {
		return fmt.Errorf("%w: message of %d bytes on %s (limit %d)", ErrInvalid, len(msg), topic, MaxRemoteMessage)
	}
	return nil
}
