package deviceconnect

import (
	"bytes"
	"testing"

	"github.com/gitfleet/gitfleet/device/remote/wire"
)

// FuzzDecode: what a peer sends never panics the relay, and what decodes
// re-encodes to a message that decodes the same (so the relay's stamping
// keeps the peer's header and body).
func FuzzDecode(f *testing.F) {
	m := &wire.Msg{Header: wire.Header{Proto: wire.ProtoShell, MsgType: wire.TypeNew, SessionID: "s"}, Body: []byte("x")}
	m.SetProp("terminal_width", 80)
	f.Add(m.Encode())
	f.Add((&envelope{Kind: envFrame, Device: "d", Msg: m.Encode()}).marshal())
	f.Add([]byte{0x81, 0xa3, 'h', 'd', 'r', 0xc0})
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = decodeEnvelope(b)
		m, err := wire.Decode(b)
		if err != nil {
			return
		}
		widenInts(m, wire.PropStatus, "timeout")
		m.SetProp(wire.PropUserID, "op")
		again, err := wire.Decode(m.Encode())
		if err != nil {
			t.Fatalf("re-encoded message does not decode: %v", err)
		}
		if again.Header.Proto != m.Header.Proto || again.Header.MsgType != m.Header.MsgType ||
			again.Header.SessionID != m.Header.SessionID || !bytes.Equal(again.Body, m.Body) || strProp(again, wire.PropUserID) != "op" {
			t.Fatalf("changed on the way: %+v → %+v", m.Header, again.Header)
		}
	})
}
