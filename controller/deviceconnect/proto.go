package deviceconnect

import (
	"errors"
	"fmt"

	"github.com/vmihailenco/msgpack/v5"
)

// The message protocol of Mender's deviceconnect, as mender-connect and
// mender-cli speak it: every websocket binary message is one msgpack
// ProtoMsg, a header naming the protocol, the message type and the
// session, with optional properties, and a body.

// Protocols of a ProtoMsg.
const (
	protoShell        uint16 = 1
	protoFileTransfer uint16 = 2
	protoPortForward  uint16 = 3
	protoMenderClient uint16 = 4
	protoControl      uint16 = 0xFFFF
)

// Message types used here.
const (
	// control
	typePing   = "ping"
	typePong   = "pong"
	typeOpen   = "open"
	typeAccept = "accept"
	typeClose  = "close"
	typeError  = "error"
	// shell
	typeShell = "shell"
	typeNew   = "new"
	typeStop  = "stop"
	// file transfer
	typeStat     = "stat"
	typeFileInfo = "file_info"
	typeGetFile  = "get_file"
	typePutFile  = "put_file"
	typeChunk    = "file_chunk"
	typeAck      = "ack"
)

// Shell message status (the "status" property), int64 as mender-cli
// expects it.
const (
	shellNormal int64 = 1
	shellError  int64 = 2
)

// protocolVersion is the only deviceconnect protocol version there is.
const protocolVersion = 1

// Property names.
const (
	propUserID       = "user_id"
	propStatus       = "status"
	propOffset       = "offset"
	propConnectionID = "connection_id"
)

// header is a ProtoMsg header. Properties stay encoded: the relay adds its
// own and passes the peer's on byte for byte, so their msgpack types (which
// both peers check) never change on the way.
type header struct {
	Proto      uint16                        `msgpack:"proto"`
	MsgType    string                        `msgpack:"typ,omitempty"`
	SessionID  string                        `msgpack:"sid,omitempty"`
	Properties map[string]msgpack.RawMessage `msgpack:"props,omitempty"`
}

// protoMsg is one deviceconnect message.
type protoMsg struct {
	Header header `msgpack:"hdr"`
	Body   []byte `msgpack:"body,omitempty"`
}

// errMalformed: a websocket message that is not a ProtoMsg.
var errMalformed = errors.New("deviceconnect: malformed message")

func decodeMsg(b []byte) (*protoMsg, error) {
	var m protoMsg
	if err := msgpack.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%w: %v", errMalformed, err)
	}
	return &m, nil
}

func (m *protoMsg) encode() []byte {
	b, err := msgpack.Marshal(m)
	if err != nil {
		// Only strings, numbers, bytes and raw messages: cannot fail.
		panic("deviceconnect: encode: " + err.Error())
	}
	return b
}

// setProp sets a property to v's msgpack encoding.
func (m *protoMsg) setProp(name string, v any) {
	b, err := msgpack.Marshal(v)
	if err != nil {
		panic("deviceconnect: encode property: " + err.Error())
	}
	if m.Header.Properties == nil {
		m.Header.Properties = map[string]msgpack.RawMessage{}
	}
	m.Header.Properties[name] = b
}

// prop decodes a property into v; false when it is missing or of another
// type.
func (m *protoMsg) prop(name string, v any) bool {
	raw, ok := m.Header.Properties[name]
	return ok && msgpack.Unmarshal(raw, v) == nil
}

// offset returns the "offset" property (file transfer).
func (m *protoMsg) offset() (int64, bool) {
	var o int64
	return o, m.prop(propOffset, &o)
}

// Bodies.

// controlError is the body of a control error message.
type controlError struct {
	Error        string `msgpack:"err"`
	Close        bool   `msgpack:"close"`
	MessageProto uint16 `msgpack:"msgproto,omitempty"`
	MessageType  string `msgpack:"msgtype,omitempty"`
	MessageID    string `msgpack:"msgid,omitempty"`
}

type openBody struct {
	Versions []int `msgpack:"versions"`
}

type acceptBody struct {
	Version   int      `msgpack:"version"`
	Protocols []uint16 `msgpack:"protocols"`
}

// ftError is the body of a file transfer error message.
type ftError struct {
	Error       *string `msgpack:"err"`
	MessageType *string `msgpack:"msgtype,omitempty"`
	MessageID   *string `msgpack:"msgid,omitempty"`
}

type statFile struct {
	Path *string `msgpack:"path"`
}

type getFile struct {
	Path *string `msgpack:"path,omitempty"`
}

// fileInfo is the device's answer to stat.
type fileInfo struct {
	Path *string `msgpack:"path"`
	Size *int64  `msgpack:"size,omitempty"`
	UID  *uint32 `msgpack:"uid,omitempty"`
	GID  *uint32 `msgpack:"gid,omitempty"`
	Mode *uint32 `msgpack:"mode,omitempty"`
	// modtime is a timestamp extension; not needed here.
}

type uploadRequest struct {
	SrcPath *string `msgpack:"src_path,omitempty"`
	Path    *string `msgpack:"path"`
	Size    *int64  `msgpack:"size,omitempty"`
	UID     *uint32 `msgpack:"uid,omitempty"`
	GID     *uint32 `msgpack:"gid,omitempty"`
	Mode    *uint32 `msgpack:"mode,omitempty"`
}

func mustMarshal(v any) []byte {
	b, err := msgpack.Marshal(v)
	if err != nil {
		panic("deviceconnect: encode: " + err.Error())
	}
	return b
}

// protoName names a protocol in messages and session records.
func protoName(p uint16) string {
	switch p {
	case protoShell:
		return "shell"
	case protoFileTransfer:
		return "filetransfer"
	case protoPortForward:
		return "portforward"
	case protoMenderClient:
		return "menderclient"
	case protoControl:
		return "control"
	}
	return fmt.Sprintf("0x%04X", p)
}

// activity reports whether m is traffic rather than a keep-alive: the idle
// timeout counts only traffic.
func (m *protoMsg) activity() bool {
	switch m.Header.Proto {
	case protoControl, protoShell:
		return m.Header.MsgType != typePing && m.Header.MsgType != typePong
	}
	return true
}

// widenInts re-encodes the named integer properties of m as int64 and
// reports whether any changed. mender-connect encodes a shell message's
// "status" (and its ping's "timeout") in the fewest bytes, while
// mender-cli only recognizes them as int64: without this, mender-cli
// never sees that the device refused a shell (it waits forever instead
// of reporting the device's error).
func (m *protoMsg) widenInts(names ...string) bool {
	changed := false
	for _, name := range names {
		raw, ok := m.Header.Properties[name]
		if !ok || (len(raw) == 9 && raw[0] == 0xd3) {
			continue
		}
		var n int64
		if msgpack.Unmarshal(raw, &n) != nil {
			continue
		}
		m.setProp(name, n)
		changed = true
	}
	return changed
}
