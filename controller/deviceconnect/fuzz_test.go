package deviceconnect

import (
	"bytes"
	"testing"
)

// FuzzDecode: what a peer sends never panics the relay, and what decodes
// re-encodes to a message that decodes the same (so the relay's stamping
// keeps the peer's header and body).
func FuzzDecode(f *testing.F) {
	m := &protoMsg{Header: header{Proto: protoShell, MsgType: typeNew, SessionID: "s"}, Body: []byte("x")}
	m.setProp("terminal_width", 80)
	f.Add(m.encode())
	f.Add((&envelope{Kind: envFrame, Device: "d", Msg: m.encode()}).encode())
	f.Add([]byte{0x81, 0xa3, 'h', 'd', 'r', 0xc0})
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = decodeEnvelope(b)
		m, err := decodeMsg(b)
		if err != nil {
			return
		}
		m.widenInts(propStatus, "timeout")
		m.setProp(propUserID, "op")
		again, err := decodeMsg(m.encode())
		if err != nil {
			t.Fatalf("re-encoded message does not decode: %v", err)
		}
		if again.Header.Proto != m.Header.Proto || again.Header.MsgType != m.Header.MsgType ||
			again.Header.SessionID != m.Header.SessionID || !bytes.Equal(again.Body, m.Body) || strProp(again, propUserID) != "op" {
			t.Fatalf("changed on the way: %+v → %+v", m.Header, again.Header)
		}
	})
}
