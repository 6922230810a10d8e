package deviceconnect

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/gitfleet/gitfleet/device/remote/wire"
)

func shellOut(sid string, status int, body string) deviceFrame {
	m := &wire.Msg{Header: wire.Header{Proto: wire.ProtoShell, MsgType: wire.TypeShell, SessionID: sid}, Body: []byte(body)}
	m.SetProp(wire.PropStatus, status)
	return deviceFrame{m: m, raw: m.Encode()}
}

func otherFrame(proto uint16, typ, sid, body string) deviceFrame {
	m := &wire.Msg{Header: wire.Header{Proto: proto, MsgType: typ, SessionID: sid}, Body: []byte(body)}
	if proto == wire.ProtoFileTransfer && typ == wire.TypeChunk {
		m.SetProp(wire.PropOffset, int64(len(body)))
	}
	return deviceFrame{m: m, raw: m.Encode()}
}

// queued returns a merger over frames, all already waiting.
func queued(frames []deviceFrame, max int) *merger {
	in := make(chan deviceFrame, len(frames))
	for _, f := range frames {
		in <- f
	}
	close(in)
	return &merger{in: in, max: max}
}

func drainMerger(g *merger) []deviceFrame {
	var out []deviceFrame
	for {
		f, ok := g.next()
		if !ok {
			return out
		}
		out = append(out, f)
	}
}

func describe(f deviceFrame) string {
	return fmt.Sprintf("%s/%s/%s/%d %q", protoName(f.m.Header.Proto), f.m.Header.MsgType, f.m.Header.SessionID, intProp(f.m, wire.PropStatus), f.m.Body)
}

// TestMergeOnlyShellOutput: consecutive shell output of one session with
// the same status is merged; nothing else is merged or moved.
func TestMergeOnlyShellOutput(t *testing.T) {
	in := []deviceFrame{
		shellOut("a", 1, "x"), shellOut("a", 1, "y"),
		otherFrame(wire.ProtoFileTransfer, wire.TypeChunk, "a", "chunk1"),
		otherFrame(wire.ProtoFileTransfer, wire.TypeChunk, "a", "chunk2"),
		shellOut("a", 1, "z"),
		shellOut("b", 1, "w"), // another session
		shellOut("a", 2, "e"), // another status
		shellOut("a", 1, "q"), shellOut("a", 1, "r"),
		otherFrame(wire.ProtoPortForward, "forward", "a", "pf1"),
		otherFrame(wire.ProtoPortForward, "forward", "a", "pf2"),
		shellOut("a", 1, "s"),
		otherFrame(wire.ProtoShell, wire.TypeStop, "a", ""),
		otherFrame(wire.ProtoControl, wire.TypeClose, "a", ""),
		shellOut("a", 1, "after close"),
	}
	want := []string{
		describe(shellOut("a", 1, "xy")),
		describe(in[2]), describe(in[3]),
		describe(in[4]), describe(in[5]), describe(in[6]),
		describe(shellOut("a", 1, "qr")),
		describe(in[9]), describe(in[10]), describe(in[11]), describe(in[12]), describe(in[13]), describe(in[14]),
	}
	out := drainMerger(queued(in, mergeLimit))
	var got []string
	for _, f := range out {
		got = append(got, describe(f))
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("merged:\n%s\nwant:\n%s", got, want)
	}
	// Frames that were not merged are passed on as they came.
	for _, f := range out {
		if g, _ := wire.Decode(f.raw); describe(deviceFrame{m: g}) != describe(f) {
			t.Fatalf("frame %s encodes %s", describe(f), describe(deviceFrame{m: g}))
		}
	}
	for i, j := range []int{2, 3, 4, 5, 6, 9, 10, 11, 12, 13, 14} {
		if !bytes.Equal(out[[]int{1, 2, 3, 4, 5, 7, 8, 9, 10, 11, 12}[i]].raw, in[j].raw) {
			t.Errorf("frame %d (%s) was re-encoded", j, describe(in[j]))
		}
	}
}

// TestMergeNothingWaiting: a frame is published as soon as it is read;
// the merger never waits for more.
func TestMergeNothingWaiting(t *testing.T) {
	in := make(chan deviceFrame, 4)
	g := &merger{in: in, max: mergeLimit}
	for i := range 3 {
		in <- shellOut("a", 1, fmt.Sprint(i))
		f, ok := g.next()
		if !ok || string(f.m.Body) != fmt.Sprint(i) {
			t.Fatalf("frame %d: %v %s", i, ok, describe(f))
		}
	}
	close(in)
	if f, ok := g.next(); ok {
		t.Fatalf("after the end: %s", describe(f))
	}
}

// TestMergeRandom: for random sequences of frames, the merged frames are
// the input frames in order, where each merged shell frame stands for a
// run of consecutive mergeable shell output, its bodies concatenated, at
// most max bytes (a longer single frame passes as it is).
func TestMergeRandom(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	for round := range 200 {
		max := 16 + rnd.IntN(600)
		var in []deviceFrame
		for range rnd.IntN(300) {
			sid := []string{"a", "b"}[rnd.IntN(2)]
			// Not empty: an empty frame merged into a run would be
			// invisible to the check below.
			body := string(bytes.Repeat([]byte{byte('a' + rnd.IntN(26))}, 1+rnd.IntN(300)))
			switch rnd.IntN(6) {
			case 0:
				in = append(in, otherFrame(wire.ProtoFileTransfer, wire.TypeChunk, sid, body))
			case 1:
				in = append(in, otherFrame(wire.ProtoPortForward, "forward", sid, body))
			case 2:
				in = append(in, shellOut(sid, 2, body))
			default:
				in = append(in, shellOut(sid, 1, body))
			}
		}
		out := drainMerger(queued(in, max))
		i := 0
		for k, o := range out {
			if i >= len(in) {
				t.Fatalf("round %d: output frame %d (%s) has no input left", round, k, describe(o))
			}
			first := in[i]
			if !isShellOutput(first.m) {
				if !bytes.Equal(o.raw, first.raw) {
					t.Fatalf("round %d: output frame %d is %s, want input %d %s", round, k, describe(o), i, describe(first))
				}
				i++
				continue
			}
			var body []byte
			j := i
			for j < len(in) && (j == i || mergeable(first.m, in[j].m)) && len(body) < len(o.m.Body) {
				body = append(body, in[j].m.Body...)
				j++
			}
			if !bytes.Equal(body, o.m.Body) || describe(shellOut(first.m.Header.SessionID, int(intProp(first.m, wire.PropStatus)), string(body))) != describe(o) {
				t.Fatalf("round %d: output frame %d is %s; inputs %d… from %s", round, k, describe(o), i, describe(first))
			}
			if j-i > 1 && len(o.m.Body) > max {
				t.Fatalf("round %d: merged frame of %d bytes, over %d (inputs %d…%d)", round, len(o.m.Body), max, i, j-1)
			}
			i = j
		}
		if i != len(in) {
			t.Fatalf("round %d: %d of %d input frames passed on", round, i, len(in))
		}
	}
}
