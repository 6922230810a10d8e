package store

import (
	"context"
	"fmt"
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
	// messages of one publisher to one topic arrive in order.
	Publish(ctx context.Context, topic string, msg []byte) error
	// Subscribe receives what is published to topic from the moment it
	// returns until the Subscription is closed or ctx ends.
	Subscribe(ctx context.Context, topic string) (Subscription, error)

	// SetConnected records that device holds a deviceconnect connection
	// on replica until ttl from now (a later call renews it). A zero ttl
	// clears it (the connection closed), but only while the record still
	// names conn: an old connection's close does not clear a newer one.
	SetConnected(ctx context.Context, device, conn string, ttl time.Duration) error
	// Connected returns the device's current connection record, ok false
	// when it has none (never connected, closed or expired).
	Connected(ctx context.Context, device string) (c RemoteConnection, ok bool, err error)

	// StartSession records s as open, with a lease until s.Started+lease
	// (renewed by TouchSession), if the device has fewer than deviceLimit
	// and the operator fewer than operatorLimit open sessions whose lease
	// has not run out (a limit ≤ 0 is no limit). ok is false, and
	// nothing is written, when a limit is reached; limit then says which
	// ("device" or "operator"). The check and the write are atomic, so
	// replicas together never exceed a limit.
	StartSession(ctx context.Context, s RemoteSession, lease time.Duration, deviceLimit, operatorLimit int) (ok bool, limit string, err error)
	// TouchSession renews an open session's lease and adds to its byte
	// counters; input (what the operator typed, when the operator's
	// manifest asks for it to be recorded) is appended to the session's
	// recorded input, which is capped at MaxRecordedInput bytes (the rest
	// is dropped and InputTruncated set).
	TouchSession(ctx context.Context, id string, lease time.Duration, delta RemoteTraffic, input []byte) error
	// EndSession closes session id with reason at end, adding the last
	// counters. Ending a session twice keeps the first end.
	EndSession(ctx context.Context, id string, end time.Time, reason string, delta RemoteTraffic, input []byte) error
	// Session returns one session record.
	Session(ctx context.Context, id string) (RemoteSession, error)
	// Sessions returns up to limit (1…MaxPage) session records, newest
	// start first, that match f. The store keeps the last MaxRemoteSessions
	// records.
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
	MaxRemoteSessions = 10000   // session records kept
)

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
	// Protocols used: shell, filetransfer, portforward.
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
	case s.Started.IsZero():
		return fmt.Errorf("%w: session %s has no start time", ErrInvalid, s.ID)
	case lease <= 0:
		return fmt.Errorf("%w: session %s: lease must be positive", ErrInvalid, s.ID)
	}
	return nil
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
