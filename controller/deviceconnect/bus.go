package deviceconnect

import (
	"github.com/gitfleet/gitfleet/device/remote/wire"
	"github.com/vmihailenco/msgpack/v5"
)

// Replicas pair a device's connection with an operator's through the
// store's message bus (store.RemoteSessions), never through memory, since
// the two may have reached different replicas:
//
//   - the replica holding a device's websocket subscribes to the device's
//     topic and writes what arrives there to the device; it publishes each
//     message the device sends to the topic of the message's session;
//   - the replica serving an operator's session subscribes to the
//     session's topic and writes what arrives to the operator (or reads it
//     itself, for a download or an upload); it publishes what the operator
//     sends, stamped with the session ID, to the device's topic.
//
// Every bus message is an envelope.

func deviceTopic(device string) string { return "deviceconnect:device:" + device }
func sessionTopic(sid string) string   { return "deviceconnect:session:" + sid }

// Envelope kinds.
const (
	envFrame = "frame" // Msg is a ProtoMsg for the peer
	envGone  = "gone"  // the device's connection closed (Reason says why)
)

// envelope is one bus message.
type envelope struct {
	Kind   string `msgpack:"k"`
	Device string `msgpack:"d"`
	// Conn: on the device topic, the device connection the session was
	// opened on (a newer connection ignores the frames of an old
	// session); on a session topic, the connection that sent it.
	Conn string `msgpack:"c,omitempty"`
	// Rate caps, in bytes per second, what the device sends in this
	// session (operator to device envelopes; 0: none). The device's
	// replica applies it before reading on, so a fast device is slowed
	// down rather than its messages dropped.
	Rate   int64  `msgpack:"r,omitempty"`
	Reason string `msgpack:"why,omitempty"`
	Msg    []byte `msgpack:"m,omitempty"`
}

func (e *envelope) marshal() []byte { return wire.MustMarshal(e) }

func decodeEnvelope(b []byte) (envelope, error) {
	var e envelope
	err := msgpack.Unmarshal(b, &e)
	return e, err
}
