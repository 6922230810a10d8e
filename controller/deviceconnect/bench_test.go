package deviceconnect

import (
	"io"
	"os"
	"testing"

	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gitfleet/gitfleet/controller/store/redis"
	"github.com/gitfleet/gitfleet/controller/store/redistest"
	"github.com/gitfleet/gitfleet/device/remote/wire"
)

// What a session costs through the relay, the device on one replica and
// the operator on another (the test device answers at once, so this is
// the relay's and the bus's share): a keystroke's round trip, and a
// download's bytes per second.
//
//	go test ./controller/deviceconnect -run '^$' -bench . -benchtime 2s

func BenchmarkRelay(b *testing.B) {
	b.Run("bus=memory", func(b *testing.B) {
		s := newMemSessions()
		benchRelay(b, s, s)
	})
	b.Run("bus=redis", func(b *testing.B) {
		addr, _ := redistest.Start(b)
		open := func() store.RemoteSessions {
			st, err := redis.New(redis.Options{Addrs: []string{addr}})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { st.Close() })
			return st
		}
		benchRelay(b, open(), open())
	})
}

func benchRelay(b *testing.B, sa, sb store.RemoteSessions) {
	auth := newFakeAuth()
	auth.set("alice", "dev1", fullGrant())
	ra := startReplica(b, "a", sa, auth, nil)
	rb := startReplica(b, "b", sb, auth, nil)
	dev := connectDevice(b, ra, "dev1")
	b.Run("keystroke", func(b *testing.B) {
		op := mustSession(b, rb, "alice", "dev1")
		sid := startShell(b, op)
		b.ResetTimer()
		for range b.N {
			typeText(op, sid, "x")
			op.next(is(wire.ProtoShell, wire.TypeShell))
		}
	})
	const size = 4 << 20
	os.WriteFile(dev.local("/big"), make([]byte, size), 0o644)
	b.Run("download", func(b *testing.B) {
		b.SetBytes(size)
		for range b.N {
			rsp, err := rb.client().Do(operatorReq(b, "GET", rb.srv.URL+ManagementPrefix+"/devices/dev1/download?path=/big", "alice", nil))
			if err != nil {
				b.Fatal(err)
			}
			n, _ := io.Copy(io.Discard, rsp.Body)
			rsp.Body.Close()
			if n != size {
				b.Fatalf("%d bytes", n)
			}
		}
	})
}
