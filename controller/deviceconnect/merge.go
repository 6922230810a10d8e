package deviceconnect

import (
	"bytes"

	"github.com/gitfleet/gitfleet/device/remote/wire"
)

// A shell prints in small frames (mender-connect sends at most 255 bytes
// of output in each, thousands per MiB); published one by one they would
// flood the bus with tiny messages. So the device side of the relay
// merges the shell output that is already waiting when it is ready to
// publish: consecutive shell frames of one session with the same
// properties become one frame of up to mergeLimit bytes of output.
// Nothing else is merged or reordered.

// deviceQueue bounds the frames read from a device and not yet published.
const deviceQueue = 64

// mergeLimit bounds the output of one merged shell frame.
const mergeLimit = 32 << 10

// deviceFrame is a frame read from a device: decoded, and as it came.
type deviceFrame struct {
	m   *wire.Msg
	raw []byte
}

// merger reads frames from in and returns them one by one, merging the
// shell output it can take from in without waiting.
type merger struct {
	in      <-chan deviceFrame
	max     int
	pending *deviceFrame // read but not merged: the next to return
	closed  bool
}

// next returns the next frame to publish (raw re-encoded when merged),
// waiting for one; false once in is closed and everything was returned.
func (g *merger) next() (deviceFrame, bool) {
	var f deviceFrame
	if g.pending != nil {
		f, g.pending = *g.pending, nil
	} else {
		if g.closed {
			return deviceFrame{}, false
		}
		var ok bool
		if f, ok = <-g.in; !ok {
			g.closed = true
			return deviceFrame{}, false
		}
	}
	if !isShellOutput(f.m) || len(f.m.Body) >= g.max {
		return f, true
	}
	var body []byte // f's output and what was merged into it
	size := len(f.m.Body)
loop:
	for !g.closed && g.pending == nil && size < g.max {
		select {
		case h, ok := <-g.in:
			switch {
			case !ok:
				g.closed = true
			case mergeable(f.m, h.m) && size+len(h.m.Body) <= g.max:
				if body == nil {
					body = append(make([]byte, 0, g.max), f.m.Body...)
				}
				body = append(body, h.m.Body...)
				size = len(body)
			default:
				g.pending = &h
			}
		default:
			break loop // nothing waiting: publish what there is
		}
	}
	if body == nil {
		return f, true
	}
	m := *f.m
	m.Body = body
	return deviceFrame{m: &m, raw: m.Encode()}, true
}

// isShellOutput: a shell frame with output.
func isShellOutput(m *wire.Msg) bool {
	return m.Header.Proto == wire.ProtoShell && m.Header.MsgType == wire.TypeShell
}

// mergeable: b is shell output that may be appended to a's (same session,
// same properties, byte for byte).
func mergeable(a, b *wire.Msg) bool {
	if !isShellOutput(b) || a.Header.SessionID != b.Header.SessionID || len(a.Header.Properties) != len(b.Header.Properties) {
		return false
	}
	for k, v := range a.Header.Properties {
		w, ok := b.Header.Properties[k]
		if !ok || !bytes.Equal(v, w) {
			return false
		}
	}
	return true
}
