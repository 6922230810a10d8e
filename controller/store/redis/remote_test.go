package redis_test

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gitfleet/gitfleet/controller/store/redis"
	"github.com/gitfleet/gitfleet/controller/store/redistest"
	goredis "github.com/redis/go-redis/v9"
)

// replica is a store as one controller replica opens it: prefix shared
// with the other replicas, its own client.
func replica(t *testing.T, prefix string, opts redis.Options) *redis.Store {
	t.Helper()
	opts.Prefix = prefix
	s, err := redis.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func recv(t *testing.T, sub store.Subscription, n int) []string {
	t.Helper()
	var got []string
	deadline := time.After(10 * time.Second)
	for len(got) < n {
		select {
		case m, ok := <-sub.C():
			if !ok {
				t.Fatalf("subscription ended after %d of %d messages", len(got), n)
			}
			got = append(got, string(m))
		case <-deadline:
			t.Fatalf("%d of %d messages within 10s", len(got), n)
		}
	}
	return got
}

func ended(t *testing.T, sub store.Subscription, what string) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case _, ok := <-sub.C():
			if !ok {
				return
			}
		case <-deadline:
			t.Fatalf("subscription did not end within 10s after %s", what)
		}
	}
}

// TestRemoteAcrossNodes: two replicas on a three-node cluster, each
// seeded with a different node, share the bus and the session limits;
// a PUBLISH reaches a subscriber on another node, both ways.
func TestRemoteAcrossNodes(t *testing.T) {
	addrs := redistest.StartCluster(t)
	ctx := t.Context()
	a := replica(t, "gfx", redis.Options{Addrs: addrs[:1], Cluster: true})
	b := replica(t, "gfx", redis.Options{Addrs: addrs[2:], Cluster: true})

	// Replica B's operator hears what replica A's device sends, in order.
	sub, err := b.Subscribe(ctx, "session-1:to-operator")
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	const n = 200
	for i := range n {
		if err := a.Publish(ctx, "session-1:to-operator", fmt.Appendf(nil, "%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	for i, m := range recv(t, sub, n) {
		if m != fmt.Sprint(i) {
			t.Fatalf("message %d is %q", i, m)
		}
	}

	// Plain clients on each node: a node that does not own the channel's
	// slot still receives the store's PUBLISH, and a PUBLISH sent to it
	// reaches the store's subscriber (on the slot's master).
	channel := "gfx:rt:session-1:to-operator"
	cc := goredis.NewClusterClient(&goredis.ClusterOptions{Addrs: addrs[:1]})
	defer cc.Close()
	master, err := cc.MasterForKey(ctx, channel)
	if err != nil {
		t.Fatal(err)
	}
	var other string
	for _, addr := range addrs {
		if addr != master.Options().Addr {
			other = addr
			break
		}
	}
	if other == "" {
		t.Fatalf("no node other than the slot's master %s among %v", master.Options().Addr, addrs)
	}
	node := goredis.NewClient(&goredis.Options{Addr: other})
	defer node.Close()
	ps := node.Subscribe(ctx, channel)
	defer ps.Close()
	if _, err := ps.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.Publish(ctx, "session-1:to-operator", []byte("via the master")); err != nil {
		t.Fatal(err)
	}
	// The cluster bus forwards asynchronously: this node may still be
	// receiving the earlier messages.
	for {
		m, err := ps.ReceiveMessage(ctx)
		if err != nil {
			t.Fatalf("subscriber on node %s (not the slot's master): %v", other, err)
		}
		if m.Payload == "via the master" {
			break
		}
	}
	if got := recv(t, sub, 1); got[0] != "via the master" {
		t.Fatalf("replica B got %q", got[0])
	}
	if err := node.Publish(ctx, channel, "via another node").Err(); err != nil {
		t.Fatal(err)
	}
	if got := recv(t, sub, 1); got[0] != "via another node" {
		t.Fatalf("replica B got %q from a PUBLISH on node %s", got[0], other)
	}

	// Many topics: replica B holds one subscriber connection per master
	// at most (the plain client above holds one more).
	for i := range 30 {
		more, err := b.Subscribe(ctx, fmt.Sprint("topic-", i))
		if err != nil {
			t.Fatal(err)
		}
		defer more.Close()
	}
	subscribers := 0
	for _, addr := range addrs {
		c := goredis.NewClient(&goredis.Options{Addr: addr})
		list, err := c.ClientList(ctx).Result()
		c.Close()
		if err != nil {
			t.Fatal(err)
		}
		subscribers += strings.Count(list, " flags=P ")
	}
	if subscribers > len(addrs)+1 {
		t.Errorf("31 subscriptions of one replica and a plain client: %d subscriber connections on %d nodes", subscribers, len(addrs))
	}

	// Racers on both replicas never exceed the limits together.
	var started atomic.Int32
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for i := range 32 {
		s := a
		if i%2 == 1 {
			s = b
		}
		wg.Go(func() {
			ok, _, err := s.StartSession(ctx, store.RemoteSession{ID: fmt.Sprint("r", i), Operator: fmt.Sprint("op", i%5),
				Device: "dev-1", Started: time.Now()}, time.Hour, 4, 0)
			if ok {
				started.Add(1)
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := started.Load(); n != 4 {
		t.Fatalf("replicas started %d sessions on a device with a limit of 4", n)
	}
	// Both replicas see the same records.
	for name, s := range map[string]*redis.Store{"a": a, "b": b} {
		open, err := s.Sessions(ctx, store.RemoteSessionFilter{Device: "dev-1", OpenOnly: true}, 100)
		if err != nil || len(open) != 4 {
			t.Errorf("replica %s lists %d open sessions (%v), want 4", name, len(open), err)
		}
	}
	// Presence set on one replica is seen on the other.
	if err := a.SetConnected(ctx, "dev-1", "a/1", time.Hour); err != nil {
		t.Fatal(err)
	}
	if c, ok, err := b.Connected(ctx, "dev-1"); err != nil || !ok || c.Conn != "a/1" {
		t.Fatalf("replica b: Connected = %+v, %v, %v", c, ok, err)
	}
}

// TestRemoteSubscriptionEnds: a subscription ends when the store closes,
// when Redis drops its connection, and when Redis stops answering; its
// goroutines do not outlive it.
func TestRemoteSubscriptionEnds(t *testing.T) {
	defer redis.SetHealthEvery(50 * time.Millisecond)()
	addr, _ := redistest.Start(t)
	ctx := t.Context()
	admin := goredis.NewClient(&goredis.Options{Addr: addr})
	defer admin.Close()

	t.Run("store closed", func(t *testing.T) {
		s := replica(t, "gfc", redis.Options{Addrs: []string{addr}})
		sub, err := s.Subscribe(ctx, "t")
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
		ended(t, sub, "the store closed")
		sub.Close()
		if _, err := s.Subscribe(ctx, "t"); err == nil {
			t.Error("Subscribe on a closed store succeeded")
		}
	})
	t.Run("store with a caller's client closed", func(t *testing.T) {
		s := replica(t, "gfo", redis.Options{Client: admin})
		sub, err := s.Subscribe(ctx, "t")
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
		ended(t, sub, "the store closed")
		if err := admin.Ping(ctx).Err(); err != nil {
			t.Errorf("the caller's client after the store closed: %v", err)
		}
	})
	t.Run("connection killed", func(t *testing.T) {
		s := replica(t, "gfk", redis.Options{Addrs: []string{addr}})
		sub, err := s.Subscribe(ctx, "t")
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Close()
		if err := s.Publish(ctx, "t", []byte("1")); err != nil {
			t.Fatal(err)
		}
		recv(t, sub, 1)
		if err := admin.Do(ctx, "CLIENT", "KILL", "TYPE", "pubsub").Err(); err != nil {
			t.Fatal(err)
		}
		ended(t, sub, "Redis closed its connection")
		// The next Subscribe opens a new connection.
		again, err := s.Subscribe(ctx, "t")
		if err != nil {
			t.Fatal(err)
		}
		defer again.Close()
		if err := s.Publish(ctx, "t", []byte("2")); err != nil {
			t.Fatal(err)
		}
		recv(t, again, 1)
	})
	t.Run("one connection", func(t *testing.T) {
		s := replica(t, "gf1", redis.Options{Addrs: []string{addr}})
		const n = 50
		subs := make([]store.Subscription, n)
		for i := range subs {
			var err error
			if subs[i], err = s.Subscribe(ctx, fmt.Sprint("t", i%25)); err != nil {
				t.Fatal(err)
			}
			defer subs[i].Close()
		}
		list, err := admin.ClientList(ctx).Result()
		if err != nil {
			t.Fatal(err)
		}
		if c := strings.Count(list, " flags=P "); c != 1 { // P: a pub/sub subscriber
			t.Errorf("%d subscriptions: CLIENT LIST shows %d subscriber connections, want 1:\n%s", n, c, list)
		}
		for i := range 25 {
			if err := s.Publish(ctx, fmt.Sprint("t", i), fmt.Appendf(nil, "m%d", i)); err != nil {
				t.Fatal(err)
			}
		}
		for i, sub := range subs {
			if got := recv(t, sub, 1); got[0] != fmt.Sprint("m", i%25) {
				t.Errorf("subscription %d to t%d got %q", i, i%25, got[0])
			}
		}
	})
	t.Run("server stops answering", func(t *testing.T) {
		s := replica(t, "gfp", redis.Options{Addrs: []string{addr}})
		sub, err := s.Subscribe(ctx, "t")
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Close()
		// Paused, Redis reads no command (no PING) for 3 s: the
		// subscription hears nothing for three 50 ms intervals.
		if err := admin.Do(ctx, "CLIENT", "PAUSE", "3000", "ALL").Err(); err != nil {
			t.Fatal(err)
		}
		defer admin.Do(ctx, "CLIENT", "UNPAUSE")
		ended(t, sub, "Redis stopped answering")
	})
	t.Run("no goroutine left", func(t *testing.T) {
		s := replica(t, "gfg", redis.Options{Addrs: []string{addr}})
		cycle := func(i int) {
			cctx, cancel := context.WithCancel(ctx)
			defer cancel()
			sub, err := s.Subscribe(cctx, "t")
			if err != nil {
				t.Fatal(err)
			}
			if i%2 == 0 {
				sub.Close()
				return
			}
			cancel()
			ended(t, sub, "ctx ended")
		}
		cycle(0)
		cycle(1)
		base := runtime.NumGoroutine()
		for i := range 40 {
			cycle(i)
		}
		settled(t, "40 subscriptions ended", func() (int, int) { return runtime.NumGoroutine(), base })
		// The bus's two goroutines (reader, pings) end with the store.
		if n := busGoroutines(); n != 2 {
			t.Errorf("%d bus goroutines while the store is open, want 2", n)
		}
		s.Close()
		settled(t, "the store closed", func() (int, int) { return busGoroutines(), 0 })
	})
}

// settled waits until count() ≤ limit.
func settled(t *testing.T, what string, count func() (n, limit int)) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		n, limit := count()
		if n <= limit {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines after %s, want at most %d:\n%s", n, what, limit, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// busGoroutines counts goroutines running the bus's reader or pinger.
func busGoroutines() int {
	buf := make([]byte, 1<<20)
	stacks := string(buf[:runtime.Stack(buf, true)])
	return strings.Count(stacks, "redis.(*bus).read(") + strings.Count(stacks, "redis.(*bus).health(")
}
