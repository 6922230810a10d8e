package deviceconnect

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gitfleet/gitfleet/controller/store/embedded"
	"github.com/gitfleet/gitfleet/controller/store/redis"
	"github.com/gitfleet/gitfleet/controller/store/redistest"
	"github.com/gitfleet/gitfleet/device/remote/wire"
	"github.com/gorilla/websocket"
)

// A burst of terminal output (a big file cat'ed in a remote terminal)
// must not end the session: the device sends megabytes of output in
// 255-byte frames, as mender-connect does, as fast as it can, and the
// operator gets every byte, in order, and can type on.

// floodSize is how much output the device sends.
const floodSize = 8 << 20

func TestShellFlood(t *testing.T) {
	t.Run("in memory", func(t *testing.T) {
		m := newMemSessions()
		testShellFlood(t, m, m)
	})
	t.Run("embedded store", func(t *testing.T) {
		st, err := embedded.Open(filepath.Join(t.TempDir(), "state.db"), embedded.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		testShellFlood(t, st, st)
	})
	t.Run("redis", func(t *testing.T) {
		addr, _ := redistest.Start(t)
		open := func() store.RemoteSessions {
			st, err := redis.New(redis.Options{Addrs: []string{addr}})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { st.Close() })
			return st
		}
		// The device and the operator on two replicas.
		testShellFlood(t, open(), open())
	})
}

// testShellFlood: the device is on a replica over sa, the operator on
// one over sb (the same store for a single controller).
func testShellFlood(t *testing.T, sa, sb store.RemoteSessions) {
	auth := newFakeAuth()
	auth.set("alice", "devf", fullGrant())
	a := startReplica(t, "a", sa, auth, nil)
	b := a
	if sb != sa {
		b = startReplica(t, "b", sb, auth, nil)
	}
	output := make([]byte, floodSize)
	rnd := rand.NewChaCha8([32]byte{1, 2, 3})
	rnd.Read(output)
	const frame = 255 // mender-connect's largest shell output
	dev := connectDevice(t, a, "devf")
	sent := make(chan error, 1)
	dev.mu.Lock()
	dev.onShell = func(m *wire.Msg) bool {
		if string(m.Body) != "cat big\n" {
			return false
		}
		go func() {
			for i, off := 0, 0; off < len(output); i++ {
				out := &wire.Msg{Header: wire.Header{Proto: wire.ProtoShell, MsgType: wire.TypeShell, SessionID: m.Header.SessionID}}
				if i%64 == 63 {
					// Now and then a port-forward frame saying how
					// much output came before it: never merged,
					// never moved.
					out.Header.Proto, out.Header.MsgType, out.Body = wire.ProtoPortForward, "forward", fmt.Append(nil, off)
					out.SetProp(wire.PropConnectionID, "c1")
				} else {
					out.Body = output[off:min(off+frame, len(output))]
					out.SetProp(wire.PropStatus, int(wire.ShellNormal))
					off += len(out.Body)
				}
				dev.p.wmu.Lock()
				err := dev.p.ws.WriteMessage(websocket.BinaryMessage, out.Encode())
				dev.p.wmu.Unlock()
				if err != nil {
					sent <- fmt.Errorf("the device's frame at %d: %w", off, err)
					return
				}
			}
			sent <- nil
		}()
		return true
	}
	dev.mu.Unlock()

	op := mustSession(t, b, "alice", "devf")
	sid := startShell(t, op)
	typeText(op, sid, "cat big\n")
	var got []byte
	frames, marks := 0, 0
	for len(got) < len(output) {
		m := op.next(nil) // fails on the session's end
		if m.Header.Proto == wire.ProtoPortForward && m.Header.MsgType == "forward" {
			if string(m.Body) != fmt.Sprint(len(got)) {
				t.Fatalf("the port-forward frame sent after %s bytes of output arrived after %d", m.Body, len(got))
			}
			marks++
			continue
		}
		if m.Header.Proto != wire.ProtoShell || m.Header.MsgType != wire.TypeShell {
			t.Fatalf("after %d of %d bytes: %s %q (%s)", len(got), len(output), m.Header.MsgType, m.Body, protoName(m.Header.Proto))
		}
		if st := intProp(m, wire.PropStatus); st != wire.ShellNormal {
			t.Fatalf("after %d bytes: output with status %d", len(got), st)
		}
		got = append(got, m.Body...)
		frames++
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, output) {
		i := 0
		for i < len(got) && i < len(output) && got[i] == output[i] {
			i++
		}
		t.Fatalf("the operator got %d bytes, different from the %d the device sent from byte %d on", len(got), len(output), i)
	}
	if want := (len(output)+frame-1)/frame/63 - 1; marks < want {
		t.Errorf("%d port-forward frames arrived among the output, want at least %d", marks, want)
	}
	t.Logf("%d bytes sent in %d frames arrived in %d frames (and %d port-forward frames among them)", len(output), (len(output)+frame-1)/frame, frames, marks)
	// The session is still open.
	typeText(op, sid, "after\n")
	if out := op.next(is(wire.ProtoShell, wire.TypeShell)); string(out.Body) != "echo:after\n" {
		t.Fatalf("output after the flood: %q", out.Body)
	}
}
