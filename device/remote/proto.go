package remote

import (
	"errors"
	"fmt"

	"github.com/vmihailenco/msgpack/v5"
)

// The message protocol of Mender's deviceconnect, as mender-connect and
// mender-cli speak it (the facts are read from their public source): each
// websocket binary message is one msgpack ProtoMsg, a header naming the
// protocol, the message type and the session, with optional properties,
// and a body.
//
// Integers in properties are written as msgpack int64, because the peers
// decode properties into interface{} and compare against int64.

// Protocols of a ProtoMsg.
const (
	protoShell        uint16 = 1
	protoFileTransfer uint16 = 2
	protoPortForward  uint16 = 3
	protoControl      uint16 = 0xFFFF
)

// Message types.
const (
	// control
	typePing   = "ping"
	typePong   = "pong"
	typeOpen   = "open"
	typeAccept = "accept"
	typeClose  = "close"
	typeError  = "error"
	// shell
	typeShell  = "shell"
	typeNew    = "new" // also port forward
	typeStop   = "stop"
	typeResize = "resize"
	// file transfer
	typeStat     = "stat"
	typeFileInfo = "file_info"
	typeGetFile  = "get_file"
	typePutFile  = "put_file"
	typeChunk    = "file_chunk"
	typeAck      = "ack" // also port forward
	// port forward
	typeForward = "forward"
)

// Shell message status (the "status" property).
const (
	shellNormal int64 = 1
	shellError  int64 = 2
)

// protocolVersion is the only deviceconnect protocol version there is.
const protocolVersion = 1

// Property names.
const (
	propStatus       = "status"
	propOffset       = "offset"
	propConnectionID = "connection_id"
	propWidth        = "terminal_width"
	propHeight       = "terminal_height"
	propUserID       = "user_id"
)

type header struct {
	Proto      uint16                        `msgpack:"proto"`
	MsgType    string                        `msgpack:"typ,omitempty"`
	SessionID  string                        `msgpack:"sid,omitempty"`
	Properties map[string]msgpack.RawMessage `msgpack:"props,omitempty"`
}

// message is one ProtoMsg.
type message struct {
	Header header `msgpack:"hdr"`
	Body   []byte `msgpack:"body,omitempty"`
}

// errMalformed: a websocket message that is not a ProtoMsg.
var errMalformed = errors.New("remote: malformed message")

func decode(b []byte) (*message, error) {
	var m message
	if err := msgpack.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%w: %v", errMalformed, err)
	}
	return &m, nil
}

func (m *message) encode() []byte {
	b, err := msgpack.Marshal(m)
	if err != nil {
		// Only strings, numbers, bytes and raw messages: cannot fail.
		panic("remote: encode: " + err.Error())
	}
	return b
}

// newMsg returns a message of proto and typ in session sid.
func newMsg(proto uint16, typ, sid string) *message {
	return &message{Header: header{Proto: proto, MsgType: typ, SessionID: sid}}
}

// with sets a property to v's msgpack encoding and returns m.
func (m *message) with(name string, v any) *message {
	if m.Header.Properties == nil {
		m.Header.Properties = map[string]msgpack.RawMessage{}
	}
	m.Header.Properties[name] = mustMarshal(v)
	return m
}

// prop decodes a property into v; false when it is missing or of another
// type.
func (m *message) prop(name string, v any) bool {
	raw, ok := m.Header.Properties[name]
	return ok && msgpack.Unmarshal(raw, v) == nil
}

func (m *message) intProp(name string) (int64, bool) {
	var n int64
	return n, m.prop(name, &n)
}

func (m *message) stringProp(name string) string {
	var s string
	m.prop(name, &s)
	return s
}

func mustMarshal(v any) []byte {
	b, err := msgpack.Marshal(v)
	if err != nil {
		panic("remote: encode: " + err.Error())
	}
	return b
}

// Bodies.

// controlError is the body of a control error (and, with only Error and
// MessageType, of a port forward error).
type controlError struct {
	Error        string `msgpack:"err"`
	Close        bool   `msgpack:"close"`
	MessageProto uint16 `msgpack:"msgproto,omitempty"`
	MessageType  string `msgpack:"msgtype,omitempty"`
}

type openBody struct {
	Versions []int `msgpack:"versions"`
}

type acceptBody struct {
	Version   int      `msgpack:"version"`
	Protocols []uint16 `msgpack:"protocols"`
}

// typedError is the body of a file transfer or port forward error.
type typedError struct {
	Error       *string `msgpack:"err"`
	MessageType *string `msgpack:"msgtype,omitempty"`
}

type pathBody struct {
	Path *string `msgpack:"path"`
}

type fileInfo struct {
	Path *string `msgpack:"path"`
	Size *int64  `msgpack:"size,omitempty"`
	UID  *uint32 `msgpack:"uid,omitempty"`
	GID  *uint32 `msgpack:"gid,omitempty"`
	Mode *uint32 `msgpack:"mode,omitempty"`
}

type uploadRequest struct {
	SrcPath *string `msgpack:"src_path,omitempty"`
	Path    *string `msgpack:"path"`
	Size    *int64  `msgpack:"size,omitempty"`
	UID     *uint32 `msgpack:"uid,omitempty"`
	GID     *uint32 `msgpack:"gid,omitempty"`
	Mode    *uint32 `msgpack:"mode,omitempty"`
}

type forwardNew struct {
	RemoteHost *string `msgpack:"remote_host"`
	RemotePort *uint16 `msgpack:"remote_port"`
	Protocol   *string `msgpack:"protocol"`
}

// keepAlive reports whether m is a keep-alive rather than traffic: the
// idle timeout counts only traffic.
func (m *message) keepAlive() bool {
	switch m.Header.Proto {
	case protoControl, protoShell:
		return m.Header.MsgType == typePing || m.Header.MsgType == typePong
	}
	return false
}
