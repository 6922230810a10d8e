package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/controller/store"
)

// MaxRemoteSessions is the session record bound newStore must configure
// (Bounds.MaxRemoteSessions): small, so the suite can overflow it quickly.
const MaxRemoteSessions = 20

// remoteTests are the remote-session tests Run runs.
var remoteTests = []struct {
	name string
	fn   func(t *testing.T, s store.Store)
}{
	{"RemotePubSub", testRemotePubSub},
	{"RemotePubSubOrder", testRemotePubSubOrder},
	{"RemotePubSubLimits", testRemotePubSubLimits},
	{"RemoteSubscribeEnd", testRemoteSubscribeEnd},
	{"RemoteSubscribeSlow", testRemoteSubscribeSlow},
	{"RemotePresence", testRemotePresence},
	{"RemotePresenceExpiry", testRemotePresenceExpiry},
	{"RemoteStartSession", testRemoteStart},
	{"RemoteStartSessionInvalid", testRemoteStartInvalid},
	{"RemoteStartSessionRace", testRemoteStartRace},
	{"RemoteLease", testRemoteLease},
	{"RemoteTouchEnd", testRemoteTouchEnd},
	{"RemoteRecordedInput", testRemoteInput},
	{"RemoteProtocols", testRemoteProtocols},
	{"RemoteSessions", testRemoteSessions},
	{"RemoteSessionsBound", testRemoteSessionsBound},
}

// remote returns s's RemoteSessions.
func remote(s store.Store) store.RemoteSessions { return s }

// subscribe subscribes to topic and closes the subscription at test end.
func subscribe(t *testing.T, ctx context.Context, s store.Store, topic string) store.Subscription {
	t.Helper()
	sub, err := remote(s).Subscribe(ctx, topic)
	must(t, "Subscribe "+topic, err)
	t.Cleanup(func() { sub.Close() })
	return sub
}

// receive reads n messages, failing after waitLimit.
func receive(t *testing.T, sub store.Subscription, n int) [][]byte {
	t.Helper()
	timer := time.NewTimer(waitLimit)
	defer timer.Stop()
	var got [][]byte
	for len(got) < n {
		select {
		case m, ok := <-sub.C():
			if !ok {
				t.Fatalf("subscription ended after %d of %d messages", len(got), n)
			}
			got = append(got, m)
		case <-timer.C:
			t.Fatalf("received %d of %d messages within %v", len(got), n, waitLimit)
		}
	}
	return got
}

// drain reads until the subscription ends, failing after waitLimit.
func drain(t *testing.T, sub store.Subscription) [][]byte {
	t.Helper()
	timer := time.NewTimer(waitLimit)
	defer timer.Stop()
	var got [][]byte
	for {
		select {
		case m, ok := <-sub.C():
			if !ok {
				return got
			}
			got = append(got, m)
		case <-timer.C:
			t.Fatalf("subscription did not end within %v (%d messages read)", waitLimit, len(got))
		}
	}
}

func publish(t *testing.T, s store.Store, topic string, msg []byte) {
	t.Helper()
	must(t, "Publish "+topic, remote(s).Publish(t.Context(), topic, msg))
}

func testRemotePubSub(t *testing.T, s store.Store) {
	ctx := t.Context()
	// Nobody listens: the message is gone, without an error.
	publish(t, s, "nobody", []byte("lost"))

	a := subscribe(t, ctx, s, "dev:a")
	a2 := subscribe(t, ctx, s, "dev:a") // a second subscriber gets the same messages
	b := subscribe(t, ctx, s, "dev:b")
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	msgs := [][]byte{[]byte("hello"), {}, all, []byte("{weird topic}\x00")}
	// Published from another goroutine after Subscribe returned: each
	// is received, in order, by both subscribers of dev:a.
	done := make(chan error, 1)
	go func() {
		var err error
		for _, m := range msgs {
			buf := slices.Clone(m)
			err = errors.Join(err, remote(s).Publish(ctx, "dev:a", buf))
			clear(buf) // Publish copied it
		}
		done <- err
	}()
	diff(t, "messages on dev:a", msgs, receive(t, a, len(msgs)))
	diff(t, "messages on dev:a, second subscriber", msgs, receive(t, a2, len(msgs)))
	must(t, "Publish from another goroutine", <-done)
	// dev:b saw none of them: its first message is its own.
	publish(t, s, "dev:b", []byte("b1"))
	diff(t, "messages on dev:b", [][]byte{[]byte("b1")}, receive(t, b, 1))
	// Topics with any bytes.
	odd := "{t}:a b\x00/é"
	o := subscribe(t, ctx, s, odd)
	publish(t, s, odd, []byte("odd"))
	diff(t, "messages on an odd topic", [][]byte{[]byte("odd")}, receive(t, o, 1))
}

// testRemotePubSubOrder: the messages of each publisher arrive in order,
// however publishers interleave.
func testRemotePubSubOrder(t *testing.T, s store.Store) {
	ctx := t.Context()
	const publishers, each = 4, 50
	sub := subscribe(t, ctx, s, "order")
	var wg sync.WaitGroup
	errs := make([]error, publishers)
	for p := range publishers {
		wg.Go(func() {
			for i := range each {
				if err := remote(s).Publish(ctx, "order", fmt.Appendf(nil, "%d:%d", p, i)); err != nil {
					errs[p] = err
					return
				}
			}
		})
	}
	got := receive(t, sub, publishers*each)
	wg.Wait()
	must(t, "Publish", errors.Join(errs...))
	next := make([]int, publishers)
	for _, m := range got {
		var p, i int
		if _, err := fmt.Sscanf(string(m), "%d:%d", &p, &i); err != nil || p < 0 || p >= publishers {
			t.Fatalf("unexpected message %q", m)
		}
		if i != next[p] {
			t.Fatalf("publisher %d's message %d arrived when %d was next", p, i, next[p])
		}
		next[p]++
	}
}

func testRemotePubSubLimits(t *testing.T, s store.Store) {
	ctx := t.Context()
	sub := subscribe(t, ctx, s, "big")
	max := bytes.Repeat([]byte{'x'}, store.MaxRemoteMessage)
	if err := remote(s).Publish(ctx, "big", append(max, 'y')); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("Publish(%d bytes): err = %v, want ErrInvalid", store.MaxRemoteMessage+1, err)
	}
	publish(t, s, "big", max)
	got := receive(t, sub, 1)
	if !bytes.Equal(got[0], max) {
		t.Errorf("first message after a refused one has %d bytes, want the %d-byte message", len(got[0]), len(max))
	}
	for _, topic := range []string{"", strings.Repeat("t", 257)} {
		if err := remote(s).Publish(ctx, topic, []byte("m")); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("Publish(%d-byte topic): err = %v, want ErrInvalid", len(topic), err)
		}
		if _, err := remote(s).Subscribe(ctx, topic); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("Subscribe(%d-byte topic): err = %v, want ErrInvalid", len(topic), err)
		}
	}
}

// testRemoteSubscribeEnd: Close and the end of ctx end a subscription;
// nothing published after Close is delivered.
func testRemoteSubscribeEnd(t *testing.T, s store.Store) {
	ctx := t.Context()
	sub := subscribe(t, ctx, s, "end")
	publish(t, s, "end", []byte("before"))
	receive(t, sub, 1)
	publish(t, s, "end", []byte("unread"))
	must(t, "Close", sub.Close())
	must(t, "Close again", sub.Close())
	publish(t, s, "end", []byte("after"))
	for _, m := range drain(t, sub) {
		if string(m) == "after" {
			t.Error("a message published after Close was delivered")
		}
	}
	// A new subscriber on the same topic is unaffected.
	again := subscribe(t, ctx, s, "end")
	publish(t, s, "end", []byte("again"))
	diff(t, "message to a new subscriber", [][]byte{[]byte("again")}, receive(t, again, 1))

	cctx, cancel := context.WithCancel(ctx)
	byCtx := subscribe(t, cctx, s, "ctx")
	publish(t, s, "ctx", []byte("1"))
	receive(t, byCtx, 1)
	cancel()
	drain(t, byCtx) // ends by itself
	must(t, "Close after ctx ended", byCtx.Close())

	if _, err := remote(s).Subscribe(cctx, "ctx"); err == nil {
		t.Error("Subscribe with an ended ctx succeeded")
	}
}

// testRemoteSubscribeSlow: a subscription's buffer is bounded by bytes:
// a burst of many small messages is held for a subscriber that has not
// read yet, while one that is more than store.RemoteBufferBytes behind is
// ended, with a gapless prefix of what was published, and never blocks
// publishers.
func testRemoteSubscribeSlow(t *testing.T, s store.Store) {
	ctx := t.Context()
	// Many small messages (like a terminal's output in 255-byte frames),
	// several hundred KiB in all, published before the subscriber reads:
	// all are delivered, and the subscription stays open.
	burst := subscribe(t, ctx, s, "burst")
	const small, smallSize = 2000, 255
	for i := range small {
		m := bytes.Repeat([]byte{'.'}, smallSize)
		copy(m, fmt.Sprint(i))
		publish(t, s, "burst", m)
	}
	for i, m := range receive(t, burst, small) {
		if want := fmt.Sprint(i); !bytes.HasPrefix(m, []byte(want)) || len(m) != smallSize {
			t.Fatalf("burst message %d is %q…: a gap", i, m[:min(len(m), 8)])
		}
	}
	publish(t, s, "burst", []byte("still open"))
	diff(t, "message after the burst", [][]byte{[]byte("still open")}, receive(t, burst, 1))

	// Large messages to a subscriber that does not read: it is ended once
	// it is RemoteBufferBytes behind.
	slow := subscribe(t, ctx, s, "slow")
	fast := subscribe(t, ctx, s, "slow")
	const size = 64 << 10
	bound := store.RemoteBufferBytes / size // messages the buffer holds
	n := bound * 3
	msg := func(i int) []byte {
		m := make([]byte, size)
		copy(m, fmt.Sprintf("%d.", i))
		return m
	}
	check := func(who string, i int, m []byte) {
		t.Helper()
		if !bytes.HasPrefix(m, fmt.Appendf(nil, "%d.", i)) || len(m) != size {
			t.Fatalf("%s's message %d is %q… (%d bytes): a gap", who, i, m[:min(len(m), 8)], len(m))
		}
	}
	type result struct {
		n   int
		bad []byte // a message that was not the next one
	}
	fastGot := make(chan result, 1)
	go func() {
		var r result
		for m := range fast.C() {
			if !bytes.HasPrefix(m, fmt.Appendf(nil, "%d.", r.n)) || len(m) != size {
				r.bad = m
				break
			}
			r.n++
			if r.n == n {
				break
			}
		}
		fastGot <- r
	}()
	done := make(chan error, 1)
	go func() {
		var err error
		for i := range n {
			err = errors.Join(err, remote(s).Publish(ctx, "slow", msg(i)))
		}
		done <- err
	}()
	select {
	case err := <-done:
		must(t, "Publish", err)
	case <-time.After(waitLimit):
		t.Fatalf("%d Publishes to a subscriber that does not read did not return within %v", n, waitLimit)
	}
	got := drain(t, slow)
	// The buffer holds bound messages; one more may be on its way to the
	// reader.
	if len(got) > bound+1 {
		t.Errorf("a subscriber that did not read got %d messages of %d bytes, more than the buffer of %d bytes holds", len(got), size, store.RemoteBufferBytes)
	}
	if len(got) == n {
		t.Errorf("a subscriber that did not read got all %d messages (%d bytes): it was never ended", n, n*size)
	}
	for i, m := range got {
		check("slow subscriber", i, m)
	}
	// The reader that kept up was not ended with the slow one. (It may be
	// ended too if it fell behind on this machine; then it too holds a
	// gapless prefix, which the reader checked.)
	select {
	case r := <-fastGot:
		if r.bad != nil {
			check("reading subscriber", r.n, r.bad)
		}
		if r.n < n {
			t.Logf("the reading subscriber fell behind too: %d of %d messages", r.n, n)
		}
	case <-time.After(waitLimit):
		t.Fatal("reading subscriber did not finish")
	}
}

func connectedIs(t *testing.T, s store.Store, device string, want store.RemoteConnection, wantOK bool) store.RemoteConnection {
	t.Helper()
	got, ok, err := remote(s).Connected(t.Context(), device)
	must(t, "Connected", err)
	if ok != wantOK {
		t.Fatalf("Connected(%s) = %+v, %v; want ok %v", device, got, ok, wantOK)
	}
	if ok && (got.Device != device || got.Conn != want.Conn) {
		t.Fatalf("Connected(%s) = %+v; want conn %s", device, got, want.Conn)
	}
	return got
}

func testRemotePresence(t *testing.T, s store.Store) {
	ctx := t.Context()
	rs := remote(s)
	connectedIs(t, s, "d1", store.RemoteConnection{}, false)
	before := time.Now()
	must(t, "SetConnected", rs.SetConnected(ctx, "d1", "replica-a/1", time.Hour))
	after := time.Now()
	c := connectedIs(t, s, "d1", store.RemoteConnection{Conn: "replica-a/1"}, true)
	if c.Since.Before(before) || c.Since.After(after) || c.Expires.Before(before.Add(time.Hour)) || c.Expires.After(after.Add(time.Hour)) {
		t.Errorf("connection record %+v: want Since in [%v, %v] and Expires an hour later", c, before, after)
	}
	// Renewed: Since stays, Expires moves.
	must(t, "SetConnected(renew)", rs.SetConnected(ctx, "d1", "replica-a/1", 2*time.Hour))
	r := connectedIs(t, s, "d1", store.RemoteConnection{Conn: "replica-a/1"}, true)
	if !r.Since.Equal(c.Since) || !r.Expires.After(c.Expires) {
		t.Errorf("renewed record %+v; want Since %v kept and Expires after %v", r, c.Since, c.Expires)
	}
	// A newer connection replaces it; the old one's close leaves it.
	must(t, "SetConnected(newer)", rs.SetConnected(ctx, "d1", "replica-b/2", time.Hour))
	n := connectedIs(t, s, "d1", store.RemoteConnection{Conn: "replica-b/2"}, true)
	if n.Since.Before(c.Since) {
		t.Errorf("newer connection's Since %v is before the old one's %v", n.Since, c.Since)
	}
	must(t, "SetConnected(old closes)", rs.SetConnected(ctx, "d1", "replica-a/1", 0))
	connectedIs(t, s, "d1", store.RemoteConnection{Conn: "replica-b/2"}, true)
	must(t, "SetConnected(closes)", rs.SetConnected(ctx, "d1", "replica-b/2", 0))
	connectedIs(t, s, "d1", store.RemoteConnection{}, false)
	must(t, "SetConnected(close again)", rs.SetConnected(ctx, "d1", "replica-b/2", 0))

	// Devices are independent.
	must(t, "SetConnected", rs.SetConnected(ctx, "d2", "c", time.Hour))
	connectedIs(t, s, "d1", store.RemoteConnection{}, false)
	connectedIs(t, s, "d2", store.RemoteConnection{Conn: "c"}, true)

	for _, bad := range []struct {
		device, conn string
		ttl          time.Duration
	}{
		{"", "c", time.Hour}, {"d3", "", time.Hour}, {"d3", "c", -time.Second},
		{"{d3}", "c", time.Hour}, {strings.Repeat("d", 257), "c", time.Hour}, {"d3", strings.Repeat("c", 257), time.Hour},
		{"d2", "other", -time.Second},
	} {
		if err := rs.SetConnected(ctx, bad.device, bad.conn, bad.ttl); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("SetConnected(%q, %q, %v): err = %v, want ErrInvalid", bad.device, bad.conn, bad.ttl, err)
		}
	}
	connectedIs(t, s, "d3", store.RemoteConnection{}, false)
	connectedIs(t, s, "d2", store.RemoteConnection{Conn: "c"}, true)
	if _, _, err := rs.Connected(ctx, ""); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("Connected(\"\"): err = %v, want ErrInvalid", err)
	}
}

func testRemotePresenceExpiry(t *testing.T, s store.Store) {
	ctx := t.Context()
	rs := remote(s)
	must(t, "SetConnected", rs.SetConnected(ctx, "short", "c1", 100*time.Millisecond))
	must(t, "SetConnected", rs.SetConnected(ctx, "long", "c1", time.Hour))
	eventually(t, "connection record to lapse", func() error {
		if _, ok, err := rs.Connected(ctx, "short"); err != nil || ok {
			return errors.Join(err, errors.New("still connected"))
		}
		return nil
	})
	connectedIs(t, s, "long", store.RemoteConnection{Conn: "c1"}, true)
	// After it lapsed, the same connection starts a new record.
	must(t, "SetConnected", rs.SetConnected(ctx, "short", "c1", time.Hour))
	connectedIs(t, s, "short", store.RemoteConnection{Conn: "c1"}, true)
}

// rsess is an open session started now.
func rsess(id, operator, device string) store.RemoteSession {
	return store.RemoteSession{
		ID: id, Operator: operator, Device: device, Kind: "terminal", Commit: "c0ffee",
		Replica: "replica-a", Source: "192.0.2.7", Started: time.Now(), Protocols: []string{"shell"},
	}
}

func start(t *testing.T, s store.Store, rec store.RemoteSession, lease time.Duration, deviceLimit, operatorLimit int, wantLimit string) {
	t.Helper()
	ok, limit, err := remote(s).StartSession(t.Context(), rec, lease, deviceLimit, operatorLimit)
	must(t, "StartSession "+rec.ID, err)
	if ok != (wantLimit == "") || limit != wantLimit {
		t.Fatalf("StartSession(%s: %s on %s, limits %d/%d) = %v, %q; want limit %q",
			rec.ID, rec.Operator, rec.Device, deviceLimit, operatorLimit, ok, limit, wantLimit)
	}
}

func session(t *testing.T, s store.Store, id string) store.RemoteSession {
	t.Helper()
	got, err := remote(s).Session(t.Context(), id)
	must(t, "Session "+id, err)
	return got
}

func notFound(t *testing.T, s store.Store, id string) {
	t.Helper()
	if got, err := remote(s).Session(t.Context(), id); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Session(%s) = %+v, %v; want ErrNotFound", id, got, err)
	}
}

func testRemoteStart(t *testing.T, s store.Store) {
	ctx := t.Context()
	rs := remote(s)
	s1 := rsess("s1", "ann", "dev-a")
	s1.RecordInput = true
	s1.Traffic = store.RemoteTraffic{ToDevice: 12, FromDevice: 34} // counted before the record was written
	start(t, s, s1, time.Hour, 2, 2, "")
	want := s1
	want.Lease = s1.Started.Add(time.Hour)
	diff(t, "Session(s1)", want, session(t, s, "s1"))
	if !session(t, s, "s1").Open(time.Now()) {
		t.Error("a session just started is not open")
	}
	start(t, s, rsess("s2", "bob", "dev-a"), time.Hour, 2, 2, "")
	// dev-a has two: a third is refused, whatever the operator.
	start(t, s, rsess("s3", "cat", "dev-a"), time.Hour, 2, 0, "device")
	notFound(t, s, "s3")
	// Both limits reached: the device's is named.
	start(t, s, rsess("s3", "ann", "dev-a"), time.Hour, 2, 1, "device")
	// ann has one (s1): a second on another device is fine at 2, refused at 1.
	start(t, s, rsess("s4", "ann", "dev-b"), time.Hour, 2, 1, "operator")
	notFound(t, s, "s4")
	start(t, s, rsess("s4", "ann", "dev-b"), time.Hour, 2, 2, "")
	start(t, s, rsess("s5", "ann", "dev-c"), time.Hour, 2, 2, "operator")
	// No limits (0 or less).
	start(t, s, rsess("s6", "ann", "dev-a"), time.Hour, 0, -1, "")
	start(t, s, rsess("s7", "dan", "dev-d"), time.Hour, 0, 0, "")
	// Ending one frees its slots.
	must(t, "EndSession", rs.EndSession(ctx, "s2", time.Now(), "closed", store.RemoteTraffic{}, nil))
	start(t, s, rsess("s3", "cat", "dev-a"), time.Hour, 3, 0, "")
	must(t, "EndSession", rs.EndSession(ctx, "s6", time.Now(), "closed", store.RemoteTraffic{}, nil))
	start(t, s, rsess("s8", "eve", "dev-a"), time.Hour, 3, 0, "")
	// The same ID again is refused, and changes nothing.
	if _, _, err := rs.StartSession(ctx, rsess("s1", "zed", "dev-z"), time.Hour, 0, 0); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("StartSession(existing ID): err = %v, want ErrInvalid", err)
	}
	diff(t, "Session(s1) after a duplicate start", want, session(t, s, "s1"))
	if _, err := rs.Session(ctx, ""); !errors.Is(err, store.ErrNotFound) && !errors.Is(err, store.ErrInvalid) {
		t.Errorf("Session(\"\"): err = %v, want ErrNotFound or ErrInvalid", err)
	}
}

func testRemoteStartInvalid(t *testing.T, s store.Store) {
	ctx := t.Context()
	rs := remote(s)
	good := rsess("ok", "ann", "dev-a")
	for _, tc := range []struct {
		name  string
		edit  func(*store.RemoteSession)
		lease time.Duration
	}{
		{"no ID", func(r *store.RemoteSession) { r.ID = "" }, time.Hour},
		{"long ID", func(r *store.RemoteSession) { r.ID = strings.Repeat("i", 129) }, time.Hour},
		{"no operator", func(r *store.RemoteSession) { r.Operator = "" }, time.Hour},
		{"no device", func(r *store.RemoteSession) { r.Device = "" }, time.Hour},
		{"device with braces", func(r *store.RemoteSession) { r.Device = "{a}" }, time.Hour},
		{"no start", func(r *store.RemoteSession) { r.Started = time.Time{} }, time.Hour},
		{"ended", func(r *store.RemoteSession) { r.Ended = time.Now() }, time.Hour},
		{"input", func(r *store.RemoteSession) { r.Input = "ls\n" }, time.Hour},
		{"negative traffic", func(r *store.RemoteSession) { r.Traffic.ToDevice = -1 }, time.Hour},
		{"zero lease", func(*store.RemoteSession) {}, 0},
		{"negative lease", func(*store.RemoteSession) {}, -time.Second},
	} {
		r := good
		tc.edit(&r)
		if ok, _, err := rs.StartSession(ctx, r, tc.lease, 0, 0); !errors.Is(err, store.ErrInvalid) || ok {
			t.Errorf("StartSession(%s) = %v, %v; want ErrInvalid", tc.name, ok, err)
		}
	}
	got, err := rs.Sessions(ctx, store.RemoteSessionFilter{}, 10)
	must(t, "Sessions", err)
	if len(got) != 0 {
		t.Errorf("invalid StartSessions wrote %d records", len(got))
	}
	if _, err := rs.Sessions(ctx, store.RemoteSessionFilter{}, 0); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("Sessions(limit 0): err = %v, want ErrInvalid", err)
	}
}

// testRemoteStartRace: replicas starting sessions at once never exceed a
// limit.
func testRemoteStartRace(t *testing.T, s store.Store) {
	ctx := t.Context()
	const deviceLimit, operatorLimit = 3, 5
	var onDevice, ofOperator atomic.Int32
	race(t, func(i int) error {
		ok, limit, err := remote(s).StartSession(ctx, rsess(fmt.Sprint("d", i), fmt.Sprint("op", i), "dev-race"), time.Hour, deviceLimit, 0)
		if ok {
			onDevice.Add(1)
		} else if err == nil && limit != "device" {
			err = fmt.Errorf("refused for %q, want device", limit)
		}
		return err
	})
	race(t, func(i int) error {
		ok, limit, err := remote(s).StartSession(ctx, rsess(fmt.Sprint("o", i), "op-race", fmt.Sprint("dev", i)), time.Hour, 0, operatorLimit)
		if ok {
			ofOperator.Add(1)
		} else if err == nil && limit != "operator" {
			err = fmt.Errorf("refused for %q, want operator", limit)
		}
		return err
	})
	if n := onDevice.Load(); n != deviceLimit {
		t.Errorf("%d racers started a session on one device with a limit of %d", n, deviceLimit)
	}
	if n := ofOperator.Load(); n != operatorLimit {
		t.Errorf("%d racers started a session for one operator with a limit of %d", n, operatorLimit)
	}
	open, err := remote(s).Sessions(ctx, store.RemoteSessionFilter{Device: "dev-race", OpenOnly: true}, 100)
	must(t, "Sessions", err)
	if len(open) != deviceLimit {
		t.Errorf("%d open sessions on dev-race, want %d", len(open), deviceLimit)
	}
	open, err = remote(s).Sessions(ctx, store.RemoteSessionFilter{Operator: "op-race"}, 100)
	must(t, "Sessions", err)
	if len(open) != operatorLimit {
		t.Errorf("%d sessions of op-race, want %d", len(open), operatorLimit)
	}
}

// testRemoteLease: a session whose lease ran out stops counting and
// cannot be renewed; TouchSession renews one that has not.
func testRemoteLease(t *testing.T, s store.Store) {
	ctx := t.Context()
	rs := remote(s)
	// A session left by a replica that stopped an hour ago.
	old := rsess("old", "ann", "dev-a")
	old.Started = time.Now().Add(-2 * time.Hour)
	start(t, s, old, time.Hour, 1, 1, "")
	if session(t, s, "old").Open(time.Now()) {
		t.Fatal("a session whose lease ran out an hour ago is open")
	}
	start(t, s, rsess("new", "ann", "dev-a"), time.Hour, 1, 1, "")
	err := rs.TouchSession(ctx, "old", time.Hour, store.RemoteTraffic{ToDevice: 5}, nil)
	if !errors.Is(err, store.ErrSessionEnded) {
		t.Fatalf("TouchSession(lease ran out): err = %v, want ErrSessionEnded", err)
	}
	got := session(t, s, "old")
	if got.Open(time.Now()) || got.Traffic.ToDevice != 5 {
		t.Errorf("after TouchSession of a run-out session: %+v; want it still not open, with the 5 bytes counted", got)
	}
	start(t, s, rsess("other", "bob", "dev-a"), time.Hour, 1, 0, "device") // "new" holds the slot

	// Renewing moves the lease.
	lease0 := session(t, s, "new").Lease
	before := time.Now()
	must(t, "TouchSession", rs.TouchSession(ctx, "new", 3*time.Hour, store.RemoteTraffic{}, nil))
	if l := session(t, s, "new").Lease; l.Before(before.Add(3*time.Hour)) || !l.After(lease0) {
		t.Errorf("lease after TouchSession(3h) = %v; want at least %v", l, before.Add(3*time.Hour))
	}

	// A short lease runs out by itself and frees its slot. Whether the
	// slot is still held right after the start depends on how fast this
	// machine is, so that is only checked when the lease surely has not
	// run out yet.
	const short = 2 * time.Second
	begun := time.Now()
	start(t, s, rsess("short", "cat", "dev-b"), short, 1, 0, "")
	ok, limit, err := rs.StartSession(ctx, rsess("waiting", "dan", "dev-b"), time.Hour, 1, 0)
	must(t, "StartSession", err)
	if time.Since(begun) < short/2 && (ok || limit != "device") {
		t.Fatalf("StartSession while a short lease holds the slot = %v, %q; want refused for device", ok, limit)
	}
	eventually(t, "short lease to run out", func() error {
		ok, _, err := rs.StartSession(ctx, rsess("waiting", "dan", "dev-b"), time.Hour, 1, 0)
		if err == nil && !ok {
			err = errors.New("still refused")
		}
		if errors.Is(err, store.ErrInvalid) { // started by the guarded call above
			err = nil
		}
		return err
	})
	open, err := rs.Sessions(ctx, store.RemoteSessionFilter{Device: "dev-b", OpenOnly: true}, 10)
	must(t, "Sessions", err)
	if len(open) != 1 || open[0].ID != "waiting" {
		t.Errorf("open sessions on dev-b = %v; want only waiting", ids(open))
	}
}

func ids(ss []store.RemoteSession) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = s.ID
	}
	return out
}

func testRemoteTouchEnd(t *testing.T, s store.Store) {
	ctx := t.Context()
	rs := remote(s)
	start(t, s, rsess("s1", "ann", "dev-a"), time.Hour, 1, 1, "")
	for _, d := range []store.RemoteTraffic{{ToDevice: 10}, {FromDevice: 1000}, {ToDevice: 5, FromDevice: 7}} {
		must(t, "TouchSession", rs.TouchSession(ctx, "s1", time.Hour, d, nil))
	}
	diff(t, "traffic after three touches", store.RemoteTraffic{ToDevice: 15, FromDevice: 1007}, session(t, s, "s1").Traffic)

	// Bad updates are refused and change nothing.
	for _, bad := range []func() error{
		func() error { return rs.TouchSession(ctx, "s1", 0, store.RemoteTraffic{ToDevice: 1}, nil) },
		func() error { return rs.TouchSession(ctx, "s1", time.Hour, store.RemoteTraffic{ToDevice: -1}, nil) },
		func() error { return rs.TouchSession(ctx, "", time.Hour, store.RemoteTraffic{}, nil) },
		func() error { return rs.EndSession(ctx, "s1", time.Time{}, "closed", store.RemoteTraffic{}, nil) },
		func() error { return rs.EndSession(ctx, "s1", time.Now(), "", store.RemoteTraffic{}, nil) },
		func() error {
			return rs.EndSession(ctx, "s1", time.Now(), "closed", store.RemoteTraffic{FromDevice: -3}, nil)
		},
	} {
		if err := bad(); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("invalid update: err = %v, want ErrInvalid", err)
		}
	}
	before := session(t, s, "s1")
	if !before.Ended.IsZero() || before.Traffic != (store.RemoteTraffic{ToDevice: 15, FromDevice: 1007}) {
		t.Errorf("after invalid updates: %+v", before)
	}
	// Unknown sessions.
	for what, err := range map[string]error{
		"TouchSession": rs.TouchSession(ctx, "nope", time.Hour, store.RemoteTraffic{}, nil),
		"EndSession":   rs.EndSession(ctx, "nope", time.Now(), "closed", store.RemoteTraffic{}, nil),
	} {
		if !errors.Is(err, store.ErrNotFound) {
			t.Errorf("%s(unknown): err = %v, want ErrNotFound", what, err)
		}
	}
	notFound(t, s, "nope")

	end := time.Now().Round(0)
	must(t, "EndSession", rs.EndSession(ctx, "s1", end, "operator-removed", store.RemoteTraffic{ToDevice: 1}, nil))
	want := before
	want.Ended, want.Reason, want.Traffic.ToDevice = end, "operator-removed", 16
	got := session(t, s, "s1")
	diff(t, "session after EndSession", want, got)
	if got.Open(time.Now()) {
		t.Error("an ended session is open")
	}
	// Again: the first end is kept, nothing counted twice.
	must(t, "EndSession again", rs.EndSession(ctx, "s1", end.Add(time.Minute), "closed", store.RemoteTraffic{ToDevice: 1}, nil))
	diff(t, "session after a second EndSession", want, session(t, s, "s1"))
	// Touching an ended session: not renewed, bytes counted, told so.
	if err := rs.TouchSession(ctx, "s1", time.Hour, store.RemoteTraffic{FromDevice: 3}, nil); !errors.Is(err, store.ErrSessionEnded) {
		t.Errorf("TouchSession(ended): err = %v, want ErrSessionEnded", err)
	}
	want.Traffic.FromDevice += 3
	diff(t, "session after touching it ended", want, session(t, s, "s1"))
	// Its slot is free.
	start(t, s, rsess("s2", "ann", "dev-a"), time.Hour, 1, 1, "")
}

// testRemoteProtocols: the protocols a session goes on to use are added
// to its record by TouchSession and EndSession, in RemoteProtocols order
// and each once; an unknown one is refused and changes nothing.
func testRemoteProtocols(t *testing.T, s store.Store) {
	ctx := t.Context()
	rs := remote(s)
	start(t, s, rsess("p1", "ann", "dev-a"), time.Hour, 0, 0, "") // starts with shell
	must(t, "TouchSession", rs.TouchSession(ctx, "p1", time.Hour, store.RemoteTraffic{ToDevice: 1}, nil, "portforward", "shell"))
	diff(t, "protocols after a touch", []string{"shell", "portforward"}, session(t, s, "p1").Protocols)
	if err := rs.TouchSession(ctx, "p1", time.Hour, store.RemoteTraffic{ToDevice: 1}, nil, "telnet"); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("TouchSession(unknown protocol): err = %v, want ErrInvalid", err)
	}
	if err := rs.EndSession(ctx, "p1", time.Now(), "closed", store.RemoteTraffic{}, nil, "ssh"); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("EndSession(unknown protocol): err = %v, want ErrInvalid", err)
	}
	got := session(t, s, "p1")
	if !got.Ended.IsZero() || got.Traffic.ToDevice != 1 {
		t.Errorf("after refused updates: ended %v, traffic %+v; want open, 1 byte to the device", got.Ended, got.Traffic)
	}
	must(t, "EndSession", rs.EndSession(ctx, "p1", time.Now(), "closed", store.RemoteTraffic{}, nil, "filetransfer"))
	diff(t, "protocols after the end", []string{"shell", "filetransfer", "portforward"}, session(t, s, "p1").Protocols)
	bad := rsess("p2", "ann", "dev-a")
	bad.Protocols = []string{"rdp"}
	if _, _, err := rs.StartSession(ctx, bad, time.Hour, 0, 0); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("StartSession(unknown protocol): err = %v, want ErrInvalid", err)
	}
	notFound(t, s, "p2")
}

func testRemoteInput(t *testing.T, s store.Store) {
	ctx := t.Context()
	rs := remote(s)
	rec := rsess("rec", "ann", "dev-a")
	rec.RecordInput = true
	start(t, s, rec, time.Hour, 0, 0, "")
	start(t, s, rsess("norec", "ann", "dev-a"), time.Hour, 0, 0, "")
	must(t, "TouchSession", rs.TouchSession(ctx, "rec", time.Hour, store.RemoteTraffic{ToDevice: 3}, []byte("ls\n")))
	must(t, "TouchSession", rs.TouchSession(ctx, "rec", time.Hour, store.RemoteTraffic{}, []byte("uname -a\n")))
	must(t, "TouchSession", rs.TouchSession(ctx, "norec", time.Hour, store.RemoteTraffic{ToDevice: 3}, nil))
	if got := session(t, s, "rec"); got.Input != "ls\nuname -a\n" || got.InputTruncated || !got.RecordInput {
		t.Errorf("recorded input %q (truncated %v, RecordInput %v); want %q", got.Input, got.InputTruncated, got.RecordInput, "ls\nuname -a\n")
	}
	if got := session(t, s, "norec"); got.Input != "" || got.RecordInput || got.Traffic.ToDevice != 3 {
		t.Errorf("session without input: input %q, RecordInput %v, traffic %+v; want no input, 3 bytes", got.Input, got.RecordInput, got.Traffic)
	}
	// Recording starts mid-session (a new commit asks for it).
	must(t, "TouchSession", rs.TouchSession(ctx, "norec", time.Hour, store.RemoteTraffic{}, []byte("id\n")))
	if got := session(t, s, "norec"); got.Input != "id\n" || !got.RecordInput {
		t.Errorf("session recording from mid-session: input %q, RecordInput %v; want %q, true", got.Input, got.RecordInput, "id\n")
	}
	listed, err := rs.Sessions(ctx, store.RemoteSessionFilter{}, 10)
	must(t, "Sessions", err)
	for _, l := range listed {
		diff(t, "listed "+l.ID+" vs Session", session(t, s, l.ID), l)
	}
	// Fill up to the cap: the rest is dropped and the record says so.
	have := len("ls\nuname -a\n")
	fill := bytes.Repeat([]byte("a"), store.MaxRecordedInput-have-4)
	must(t, "TouchSession", rs.TouchSession(ctx, "rec", time.Hour, store.RemoteTraffic{}, fill))
	if got := session(t, s, "rec"); got.InputTruncated || len(got.Input) != store.MaxRecordedInput-4 {
		t.Errorf("input of %d bytes, truncated %v; want %d, not truncated", len(got.Input), got.InputTruncated, store.MaxRecordedInput-4)
	}
	must(t, "EndSession", rs.EndSession(ctx, "rec", time.Now(), "closed", store.RemoteTraffic{}, []byte("exit\n")))
	got := session(t, s, "rec")
	want := "ls\nuname -a\n" + string(fill) + "exit"
	if !got.InputTruncated || got.Input != want {
		t.Errorf("input of %d bytes ending %q, truncated %v; want %d bytes ending %q, truncated",
			len(got.Input), got.Input[max(0, len(got.Input)-8):], got.InputTruncated, len(want), want[len(want)-8:])
	}
}

func testRemoteSessions(t *testing.T, s store.Store) {
	ctx := t.Context()
	rs := remote(s)
	t0 := time.Now()
	var all []store.RemoteSession // oldest first
	for i, od := range [][2]string{{"ann", "a"}, {"bob", "a"}, {"ann", "b"}, {"cat", "c"}, {"ann", "a"}, {"bob", "b"}} {
		r := rsess(fmt.Sprint("s", i), od[0], od[1])
		r.Started = t0.Add(time.Duration(i-10) * time.Second)
		start(t, s, r, time.Hour, 0, 0, "")
		r.Lease = r.Started.Add(time.Hour)
		all = append(all, r)
	}
	// One with the same start as s5 sorts by ID: the greater first.
	same := rsess("s5a", "dan", "d")
	same.Started = all[5].Started
	start(t, s, same, time.Hour, 0, 0, "")
	same.Lease = same.Started.Add(time.Hour)
	end := time.Now()
	must(t, "EndSession", rs.EndSession(ctx, "s2", end, "closed", store.RemoteTraffic{}, nil))
	all[2].Ended, all[2].Reason = end, "closed"
	all = append(all, same)

	list := func(f store.RemoteSessionFilter, limit int, want ...int) {
		t.Helper()
		got, err := rs.Sessions(ctx, f, limit)
		must(t, "Sessions", err)
		var w []store.RemoteSession
		for _, i := range want {
			w = append(w, all[i])
		}
		diff(t, fmt.Sprintf("Sessions(%+v, %d)", f, limit), w, got)
	}
	list(store.RemoteSessionFilter{}, 100, 6, 5, 4, 3, 2, 1, 0)
	list(store.RemoteSessionFilter{}, 3, 6, 5, 4)
	list(store.RemoteSessionFilter{Operator: "ann"}, 100, 4, 2, 0)
	list(store.RemoteSessionFilter{Operator: "ann"}, 2, 4, 2)
	list(store.RemoteSessionFilter{Device: "a"}, 100, 4, 1, 0)
	list(store.RemoteSessionFilter{Operator: "ann", Device: "b"}, 100, 2)
	list(store.RemoteSessionFilter{Operator: "ann", OpenOnly: true}, 100, 4, 0)
	list(store.RemoteSessionFilter{Operator: "nobody"}, 100)
	got, err := rs.Sessions(ctx, store.RemoteSessionFilter{}, store.MaxPage+1)
	must(t, "Sessions(more than MaxPage)", err)
	if len(got) != len(all) {
		t.Errorf("Sessions(MaxPage+1) returned %d, want %d", len(got), len(all))
	}
}

// testRemoteSessionsBound: the store keeps the newest MaxRemoteSessions
// records; dropped ones are gone and count no more.
func testRemoteSessionsBound(t *testing.T, s store.Store) {
	ctx := t.Context()
	t0 := time.Now()
	const extra = 5
	for i := range MaxRemoteSessions + extra {
		r := rsess(fmt.Sprintf("s%02d", i), "ann", "dev-a")
		r.Started = t0.Add(time.Duration(i-100) * time.Second)
		start(t, s, r, 2*time.Hour, 0, 0, "")
	}
	got, err := remote(s).Sessions(ctx, store.RemoteSessionFilter{}, 100)
	must(t, "Sessions", err)
	var want []string
	for i := MaxRemoteSessions + extra - 1; i >= extra; i-- {
		want = append(want, fmt.Sprintf("s%02d", i))
	}
	diff(t, "session IDs kept", want, ids(got))
	for i := range extra {
		notFound(t, s, fmt.Sprintf("s%02d", i))
	}
	// The device has MaxRemoteSessions open sessions now, not more.
	start(t, s, rsess("over", "bob", "dev-a"), time.Hour, MaxRemoteSessions, 0, "device")
	start(t, s, rsess("under", "bob", "dev-a"), time.Hour, MaxRemoteSessions+1, 0, "")
}

// remoteRestart records remote-session state before a restart and
// returns the check to run after it: records and presence survive, a
// subscription from before the restart has ended, and the bus works.
func remoteRestart(t *testing.T, s store.Store) func(store.Store) {
	ctx := t.Context()
	rec := rsess("kept", "ann", "dev-a")
	rec.RecordInput = true
	start(t, s, rec, time.Hour, 1, 1, "")
	must(t, "TouchSession", remote(s).TouchSession(ctx, "kept", time.Hour, store.RemoteTraffic{ToDevice: 7}, []byte("ls\n")))
	must(t, "SetConnected", remote(s).SetConnected(ctx, "dev-a", "replica-a/1", time.Hour))
	want := session(t, s, "kept")
	conn, _, err := remote(s).Connected(ctx, "dev-a")
	must(t, "Connected", err)
	sub, err := remote(s).Subscribe(ctx, "before-restart")
	must(t, "Subscribe", err)
	return func(s store.Store) {
		diff(t, "session after restart", want, session(t, s, "kept"))
		c := connectedIs(t, s, "dev-a", conn, true)
		diff(t, "connection after restart", conn, c)
		start(t, s, rsess("refused", "bob", "dev-a"), time.Hour, 1, 0, "device")
		drain(t, sub)
		sub.Close()
		again := subscribe(t, ctx, s, "after-restart")
		var err error
		eventually(t, "Publish after restart", func() error {
			err = remote(s).Publish(ctx, "after-restart", []byte("hi"))
			return err
		})
		receive(t, again, 1)
	}
}
