package deviceconnect

import (
	"path/filepath"
	"testing"

	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gitfleet/gitfleet/controller/store/embedded"
	"github.com/gitfleet/gitfleet/controller/store/redis"
	"github.com/gitfleet/gitfleet/controller/store/redistest"
	"github.com/gitfleet/gitfleet/device/remote/wire"
)

// The relay over the real stores: the embedded store (one controller) and
// two replicas, each with its own client, on one redis-server.

func TestOverTheEmbeddedStore(t *testing.T) {
	st, err := embedded.Open(filepath.Join(t.TempDir(), "state.db"), embedded.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	// One controller: both "replicas" share the store's process-local bus.
	testTwoReplicas(t, st, st)
	testLimitAndChange(t, st)
}

func TestTwoReplicasOverRedis(t *testing.T) {
	addr, _ := redistest.Start(t)
	open := func() store.RemoteSessions {
		st, err := redis.New(redis.Options{Addrs: []string{addr}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	}
	sa, sb := open(), open()
	testTwoReplicas(t, sa, sb)
	testLimitAndChange(t, sb)
}

func TestTwoReplicasOverRedisCluster(t *testing.T) {
	addrs := redistest.StartCluster(t)
	open := func() store.RemoteSessions {
		st, err := redis.New(redis.Options{Addrs: addrs, Cluster: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	}
	testTwoReplicas(t, open(), open())
}

// testLimitAndChange: the store's atomic limit refuses a second session on
// a device, and a change of access ends the first.
func testLimitAndChange(t *testing.T, sessions store.RemoteSessions) {
	auth := newFakeAuth()
	auth.set("carol", "dev9", Grant{Terminal: true, DeviceSessions: 1, RecordInput: true})
	auth.set("dave", "dev9", Grant{Terminal: true, DeviceSessions: 1})
	rp := startReplica(t, "c", sessions, auth, nil)
	connectDevice(t, rp, "dev9")
	op := mustSession(t, rp, "carol", "dev9")
	sid := startShell(t, op)
	typeText(op, sid, "whoami\n")
	op.next(is(wire.ProtoShell, wire.TypeShell))
	second := mustSession(t, rp, "dave", "dev9")
	second.send(&wire.Msg{Header: wire.Header{Proto: wire.ProtoShell, MsgType: wire.TypeNew}})
	if rsp := second.next(is(wire.ProtoShell, wire.TypeNew)); intProp(rsp, wire.PropStatus) != wire.ShellError {
		t.Fatalf("second session on dev9 not refused: %q", rsp.Body)
	}
	auth.remove("carol")
	auth.signal()
	op.next(is(wire.ProtoShell, wire.TypeStop))
	op.closed()
	rec := endedSession(t, sessions, "carol")
	if rec.Reason != ReasonOperatorRemoved || rec.Input != "whoami\n" || rec.Traffic.ToDevice == 0 {
		t.Fatalf("record %+v", rec)
	}
}
