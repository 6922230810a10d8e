package deviceconnect

import (
	"fmt"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/gitfleet/gitfleet/device/remote/wire"
)

// The relay speaks deviceconnect's message protocol through package
// wire (shared with the agent's built-in terminal). What only the relay
// needs is here.

// protoName names a protocol in messages and session records.
func protoName(p uint16) string {
	switch p {
	case wire.ProtoShell:
		return "shell"
	case wire.ProtoFileTransfer:
		return "filetransfer"
	case wire.ProtoPortForward:
		return "portforward"
	case wire.ProtoMenderClient:
		return "menderclient"
	case wire.ProtoControl:
		return "control"
	}
	return fmt.Sprintf("0x%04X", p)
}

// widenInts re-encodes the named integer properties of m as int64 and
// reports whether any changed. mender-connect encodes a shell message's
// "status" (and its ping's "timeout") in the fewest bytes, while
// mender-cli only recognizes them as int64: without this, mender-cli
// never sees that the device refused a shell (it waits forever instead
// of reporting the device's error).
func widenInts(m *wire.Msg, names ...string) bool {
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
		m.SetProp(name, n)
		changed = true
	}
	return changed
}
