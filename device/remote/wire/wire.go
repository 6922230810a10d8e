// Package wire is the message protocol of Mender's deviceconnect, as
// mender-connect and mender-cli speak it (the facts are read from their
// public source): each websocket binary message is one msgpack ProtoMsg,
// a header naming the protocol, the message type and the session, with
// optional properties, and a body. The controller's relay and the agent's
// built-in terminal both speak it through this package, which depends on
// msgpack only so that the agent stays small.
//
// Integers in properties are written as msgpack int64, because the peers
// decode properties into interface{} and compare against int64.
package wire

import (
	"errors"
	"fmt"

	"github.com/vmihailenco/msgpack/v5"
)

// Protocols of a ProtoMsg.
const (
	ProtoShell        uint16 = 1
	ProtoFileTransfer uint16 = 2
	ProtoPortForward  uint16 = 3
	ProtoMenderClient uint16 = 4
	ProtoControl      uint16 = 0xFFFF
)

// Message types. Control: ping, pong, open, accept, close, error. Shell:
// shell (data both ways), new, stop, resize, ping, pong. File transfer:
// stat, file_info, get_file, put_file, file_chunk, ack, error. Port
// forward: new, forward, ack, stop, error.
const (
	TypePing   = "ping"
	TypePong   = "pong"
	TypeOpen   = "open"
	TypeAccept = "accept"
	TypeClose  = "close"
	TypeError  = "error"

	TypeShell  = "shell"
	TypeNew    = "new"
	TypeStop   = "stop"
	TypeResize = "resize"

	TypeStat     = "stat"
	TypeFileInfo = "file_info"
	TypeGetFile  = "get_file"
	TypePutFile  = "put_file"
	TypeChunk    = "file_chunk"
	TypeAck      = "ack"

	TypeForward = "forward"
)

// Shell message status (the "status" property).
const (
	ShellNormal int64 = 1
	ShellError  int64 = 2
)

// ProtocolVersion is the only deviceconnect protocol version there is.
const ProtocolVersion = 1

// Property names.
const (
	PropUserID       = "user_id"
	PropStatus       = "status"
	PropOffset       = "offset"
	PropConnectionID = "connection_id"
	PropWidth        = "terminal_width"
	PropHeight       = "terminal_height"
)

// Header is a ProtoMsg's header. Properties stay raw msgpack so that a
// relay passes them on unchanged.
type Header struct {
	Proto      uint16                        `msgpack:"proto"`
	MsgType    string                        `msgpack:"typ,omitempty"`
	SessionID  string                        `msgpack:"sid,omitempty"`
	Properties map[string]msgpack.RawMessage `msgpack:"props,omitempty"`
}

// Msg is one ProtoMsg.
type Msg struct {
	Header Header `msgpack:"hdr"`
	Body   []byte `msgpack:"body,omitempty"`
}

// ErrMalformed: a websocket message that is not a ProtoMsg.
var ErrMalformed = errors.New("deviceconnect: malformed message")

// Decode decodes one websocket message.
func Decode(b []byte) (*Msg, error) {
	var m Msg
	if err := msgpack.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return &m, nil
}

// New returns a message of proto and typ in session sid.
func New(proto uint16, typ, sid string) *Msg {
	return &Msg{Header: Header{Proto: proto, MsgType: typ, SessionID: sid}}
}

// Encode encodes m. Every field of a Msg encodes, so it cannot fail.
func (m *Msg) Encode() []byte { return MustMarshal(m) }

// SetProp sets a property to v's msgpack encoding.
func (m *Msg) SetProp(name string, v any) {
	if m.Header.Properties == nil {
		m.Header.Properties = map[string]msgpack.RawMessage{}
	}
	m.Header.Properties[name] = MustMarshal(v)
}

// With sets a property and returns m.
func (m *Msg) With(name string, v any) *Msg {
	m.SetProp(name, v)
	return m
}

// Prop decodes a property into v; false when it is missing or of another
// type.
func (m *Msg) Prop(name string, v any) bool {
	raw, ok := m.Header.Properties[name]
	return ok && msgpack.Unmarshal(raw, v) == nil
}

// IntProp returns an integer property.
func (m *Msg) IntProp(name string) (int64, bool) {
	var n int64
	return n, m.Prop(name, &n)
}

// StringProp returns a string property, "" when missing.
func (m *Msg) StringProp(name string) string {
	var s string
	m.Prop(name, &s)
	return s
}

// Offset returns the "offset" property of a file chunk.
func (m *Msg) Offset() (int64, bool) { return m.IntProp(PropOffset) }

// MustMarshal encodes v, which must be of a type msgpack encodes (the
// bodies and property values of this package).
func MustMarshal(v any) []byte {
	b, err := msgpack.Marshal(v)
	if err != nil {
		panic("deviceconnect: encode: " + err.Error())
	}
	return b
}

// Unmarshal decodes a body.
func Unmarshal(b []byte, v any) error { return msgpack.Unmarshal(b, v) }

// Bodies.

// ControlError is the body of a control error (and, with only Error and
// MessageType, of a port forward error).
type ControlError struct {
	Error        string `msgpack:"err"`
	Close        bool   `msgpack:"close"`
	MessageProto uint16 `msgpack:"msgproto,omitempty"`
	MessageType  string `msgpack:"msgtype,omitempty"`
	MessageID    string `msgpack:"msgid,omitempty"`
}

// Open is the body of a control open: the versions the peer speaks.
type Open struct {
	Versions []int `msgpack:"versions"`
}

// Accept is the body of a control accept.
type Accept struct {
	Version   int      `msgpack:"version"`
	Protocols []uint16 `msgpack:"protocols"`
}

// TypedError is the body of a file transfer or port forward error.
type TypedError struct {
	Error       *string `msgpack:"err"`
	MessageType *string `msgpack:"msgtype,omitempty"`
	MessageID   *string `msgpack:"msgid,omitempty"`
}

// Path is the body of stat and get_file.
type Path struct {
	Path *string `msgpack:"path"`
}

// FileInfo is the body of file_info.
type FileInfo struct {
	Path *string `msgpack:"path"`
	Size *int64  `msgpack:"size,omitempty"`
	UID  *uint32 `msgpack:"uid,omitempty"`
	GID  *uint32 `msgpack:"gid,omitempty"`
	Mode *uint32 `msgpack:"mode,omitempty"`
}

// UploadRequest is the body of put_file.
type UploadRequest struct {
	SrcPath *string `msgpack:"src_path,omitempty"`
	Path    *string `msgpack:"path"`
	Size    *int64  `msgpack:"size,omitempty"`
	UID     *uint32 `msgpack:"uid,omitempty"`
	GID     *uint32 `msgpack:"gid,omitempty"`
	Mode    *uint32 `msgpack:"mode,omitempty"`
}

// ForwardNew is the body of a port forward's new.
type ForwardNew struct {
	RemoteHost *string `msgpack:"remote_host"`
	RemotePort *uint16 `msgpack:"remote_port"`
	Protocol   *string `msgpack:"protocol"`
}

// KeepAlive reports whether m is a keep-alive rather than traffic (a
// ping or pong of the control or the shell protocol): idle timeouts count
// only traffic.
func (m *Msg) KeepAlive() bool {
	switch m.Header.Proto {
	case ProtoControl, ProtoShell:
		return m.Header.MsgType == TypePing || m.Header.MsgType == TypePong
	}
	return false
}

// WithBody sets the body and returns m.
func (m *Msg) WithBody(b []byte) *Msg {
	m.Body = b
	return m
}
