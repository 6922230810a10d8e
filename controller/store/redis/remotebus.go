package redis

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gitfleet/gitfleet/controller/store"
	goredis "github.com/redis/go-redis/v9"
)

// The remote sessions' bus is classic Redis PUBLISH/SUBSCRIBE on the
// channel PREFIX:rt:TOPIC.
//
// A store subscribes to every topic its callers want on one connection
// per Redis server (a replica with thousands of connected devices holds
// one connection for them, or one per master of a cluster, not
// thousands), read by one goroutine that hands each message to the
// topic's local subscriptions; a second goroutine pings. When that
// connection fails, every subscription on it ends (a gap in a stream
// would be worse than its visible end) and the next Subscribe opens a
// new connection.
//
// A Redis Cluster forwards a PUBLISH to every node, but two PUBLISHes
// sent through different nodes may arrive in either order, and a
// message forwarded from another node may arrive after a reply that
// Redis sent later. So on a cluster every replica publishes a topic
// through the master of the channel name's slot, and subscribes to it on
// that master too: the messages of one publisher keep their order, and
// the order of messages and replies on a connection is the order in
// which that master handled them.

// healthEvery is how often the bus pings Redis; a connection that hears
// nothing (no message, no pong) for three of them is given up.
var healthEvery = 10 * time.Second

// commandTimeout bounds a SUBSCRIBE or UNSUBSCRIBE sent for a closing
// subscription (which has no caller's ctx).
const commandTimeout = 5 * time.Second

func (k keys) topic(topic string) string { return k.prefix + ":rt:" + topic }

// Publish sends msg to topic's subscribers on every replica.
func (s *Store) Publish(ctx context.Context, topic string, msg []byte) error {
	if err := store.ValidateTopic(topic, msg); err != nil {
		return err
	}
	channel := s.k.topic(topic)
	var c goredis.Cmdable = s.c
	if cc, ok := s.c.(*goredis.ClusterClient); ok {
		node, err := cc.MasterForKey(ctx, channel)
		if err != nil {
			return fmt.Errorf("redis: publish %s: %w", topic, err)
		}
		c = node
	}
	if err := c.Publish(ctx, channel, msg).Err(); err != nil {
		return fmt.Errorf("redis: publish %s: %w", topic, err)
	}
	return nil
}

// Subscribe subscribes to topic; it returns once Redis confirmed the
// subscription on the store's bus connection.
func (s *Store) Subscribe(ctx context.Context, topic string) (store.Subscription, error) {
	if err := store.ValidateTopic(topic, nil); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("redis: subscribe %s: %w", topic, err)
	}
	sub, err := s.bus.subscribe(ctx, s, s.k.topic(topic))
	if err != nil {
		return nil, fmt.Errorf("redis: subscribe %s: %w", topic, err)
	}
	return sub, nil
}

var (
	errBusClosed = errors.New("store closed")
	errBusFailed = errors.New("connection to Redis lost")
)

// bus is a store's subscriptions. Its zero value is ready; a server's
// connection is opened by the first Subscribe that needs it and after a
// failure.
type bus struct {
	mu     sync.Mutex
	conns  map[string]*busConn // by server address ("" for a single server)
	closed bool
}

// busConn is one subscriber connection and what is subscribed on it.
//
// cmd serialises deciding to send SUBSCRIBE, UNSUBSCRIBE or PING and
// sending it, so that the commands reach Redis in the order the
// decisions were made; the reader never takes it. Redis answers the
// commands of one connection in order, between the messages it pushes:
// the n-th confirmation of a channel answers its n-th SUBSCRIBE, and a
// PING's reply follows every message published before Redis read it.
//
// A subscription receives messages only once it is live: from the reply
// that answers the command sent for it (its channel's SUBSCRIBE, or,
// when the channel was already subscribed, a PING with a token of its
// own). So a new subscription never gets a message that was published
// before it subscribed but was still on its way (for an earlier
// subscription to the same channel).
type busConn struct {
	addr  string
	ps    *goredis.PubSub
	cmd   sync.Mutex
	dead  chan struct{} // closed when the connection is given up
	done  chan struct{} // the reader and the health goroutine returned
	heard atomic.Int64  // unix ns of the last reply read

	// Guarded by bus.mu:
	failed bool
	topics map[string]*busTopic
	pings  map[string]waiter // PING token → the subscription it makes live
	tokens int64
}

type busTopic struct {
	subs      map[*subscription]struct{}
	on        bool  // the last command sent was SUBSCRIBE
	sent      int64 // SUBSCRIBEs sent
	confirmed int64 // their confirmations read
	waiters   []waiter
}

type waiter struct {
	n   int64 // the SUBSCRIBE it waits for
	sub *subscription
	ok  chan struct{}
}

// activate makes w's subscription live (called with bus.mu).
func (w waiter) activate() {
	w.sub.live = true
	close(w.ok)
}

// subscribe registers a subscription to channel and waits until Redis
// confirmed it.
func (b *bus) subscribe(ctx context.Context, s *Store, channel string) (*subscription, error) {
	addr, client := "", goredis.UniversalClient(s.c)
	if cc, ok := s.c.(*goredis.ClusterClient); ok {
		node, err := cc.MasterForKey(ctx, channel)
		if err != nil {
			return nil, err
		}
		addr, client = node.Options().Addr, node
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil, errBusClosed
	}
	c := b.conns[addr]
	if c == nil {
		c = &busConn{addr: addr, ps: client.Subscribe(context.Background()), dead: make(chan struct{}), done: make(chan struct{}),
			topics: map[string]*busTopic{}, pings: map[string]waiter{}}
		c.heard.Store(time.Now().UnixNano())
		if b.conns == nil {
			b.conns = map[string]*busConn{}
		}
		b.conns[addr] = c
		var wg sync.WaitGroup
		wg.Go(func() { b.read(c) })
		wg.Go(func() { b.health(c) })
		go func() {
			wg.Wait()
			close(c.done)
		}()
	}
	b.mu.Unlock()

	sub := &subscription{b: b, conn: c, channel: channel, q: store.NewSubscriptionQueue()}
	c.cmd.Lock()
	b.mu.Lock()
	if c.failed {
		b.mu.Unlock()
		c.cmd.Unlock()
		return nil, errBusFailed
	}
	t := c.topics[channel]
	if t == nil {
		t = &busTopic{subs: map[*subscription]struct{}{}}
		c.topics[channel] = t
	}
	t.subs[sub] = struct{}{}
	send := !t.on
	if send {
		t.on = true
		t.sent++
	}
	w := waiter{n: t.sent, sub: sub, ok: make(chan struct{})}
	token := ""
	if t.confirmed < w.n {
		t.waiters = append(t.waiters, w)
	} else {
		c.tokens++
		token = fmt.Sprint("gitfleet-join-", c.tokens)
		c.pings[token] = w
	}
	b.mu.Unlock()
	var err error
	if send {
		err = c.ps.Subscribe(ctx, channel)
	} else if token != "" {
		err = c.ps.Ping(ctx, token)
	}
	c.cmd.Unlock()
	if err != nil {
		b.fail(c)
		sub.Close()
		return nil, err
	}
	select {
	case <-w.ok:
	case <-c.dead:
		sub.Close()
		return nil, errBusFailed
	case <-ctx.Done():
		sub.Close()
		return nil, ctx.Err()
	}
	stop := context.AfterFunc(ctx, func() { sub.end(false) })
	sub.mu.Lock()
	sub.stop = stop
	ended := sub.closed
	sub.mu.Unlock()
	if ended {
		stop()
	}
	return sub, nil
}

// read hands every message to its channel's subscriptions until the
// connection fails or closes.
func (b *bus) read(c *busConn) {
	defer b.fail(c)
	for {
		reply, err := c.ps.Receive(context.Background())
		if err != nil {
			return
		}
		c.heard.Store(time.Now().UnixNano())
		switch r := reply.(type) {
		case *goredis.Message:
			b.dispatch(c, r)
		case *goredis.Subscription:
			if r.Kind == "subscribe" {
				b.confirm(c, r.Channel)
			}
		case *goredis.Pong:
			b.mu.Lock()
			if w, ok := c.pings[r.Payload]; ok {
				delete(c.pings, r.Payload)
				w.activate()
			}
			b.mu.Unlock()
		}
	}
}

func (b *bus) confirm(c *busConn, channel string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	t := c.topics[channel]
	if t == nil {
		return
	}
	t.confirmed++
	kept := t.waiters[:0]
	for _, w := range t.waiters {
		if w.n <= t.confirmed {
			w.activate()
		} else {
			kept = append(kept, w)
		}
	}
	t.waiters = kept
	c.forget(channel, t)
}

// dispatch queues m for each of its channel's subscriptions; one too far
// behind is ended instead.
func (b *bus) dispatch(c *busConn, m *goredis.Message) {
	b.mu.Lock()
	t := c.topics[m.Channel]
	var behind []*subscription
	if t != nil {
		for sub := range t.subs {
			if sub.live && !sub.deliver(m.Payload) {
				behind = append(behind, sub)
			}
		}
	}
	b.mu.Unlock()
	for _, sub := range behind {
		sub.end(false)
	}
}

// health pings every healthEvery and gives the connection up when a ping
// fails or nothing was heard for three intervals (a connection that died
// without closing).
func (b *bus) health(c *busConn) {
	tick := time.NewTicker(healthEvery)
	defer tick.Stop()
	for {
		select {
		case <-c.dead:
			return
		case <-tick.C:
		}
		if time.Since(time.Unix(0, c.heard.Load())) > 3*healthEvery || c.ps.Ping(context.Background()) != nil {
			b.fail(c)
			return
		}
	}
}

// fail gives connection c up: every subscription on it ends (what is
// buffered is still delivered) and the next Subscribe opens another.
func (b *bus) fail(c *busConn) {
	b.mu.Lock()
	if c.failed {
		b.mu.Unlock()
		return
	}
	c.failed = true
	if b.conns[c.addr] == c {
		delete(b.conns, c.addr)
	}
	var subs []*subscription
	for _, t := range c.topics {
		for sub := range t.subs {
			subs = append(subs, sub)
		}
	}
	c.topics = nil
	b.mu.Unlock()
	close(c.dead)
	c.ps.Close() // ends the reader's blocking read
	for _, sub := range subs {
		sub.end(false)
	}
}

// close ends every subscription, refuses new ones and waits for the
// bus's goroutines.
func (b *bus) close() {
	b.mu.Lock()
	b.closed = true
	var conns []*busConn
	for _, c := range b.conns {
		conns = append(conns, c)
	}
	b.mu.Unlock()
	for _, c := range conns {
		b.fail(c)
		<-c.done
	}
}

// subscription is one Subscribe's queue of messages.
type subscription struct {
	b       *bus
	conn    *busConn
	channel string
	q       *store.SubscriptionQueue

	live bool // guarded by bus.mu: receives messages (see busConn)

	mu     sync.Mutex
	closed bool
	stop   func() bool // stops watching the Subscribe ctx
}

func (s *subscription) C() <-chan []byte { return s.q.C() }

// deliver queues msg without waiting; false when the subscription is too
// far behind (its queue has ended) or has ended.
func (s *subscription) deliver(msg string) bool {
	return s.q.Push([]byte(msg))
}

// Close ends the subscription; messages not yet received are dropped.
func (s *subscription) Close() error {
	s.end(true)
	return nil
}

// end ends the queue (drain: dropping what it holds, even when it had
// already ended) and, once, unsubscribes the channel when this was its
// last local subscription.
func (s *subscription) end(drain bool) {
	if drain {
		s.q.Discard()
	} else {
		s.q.End()
	}
	s.mu.Lock()
	stop := s.stop
	s.stop = nil
	closed := s.closed
	s.closed = true
	s.mu.Unlock()
	if stop != nil {
		stop()
	}
	if !closed {
		s.unsubscribe()
	}
}

func (s *subscription) unsubscribe() {
	c := s.conn
	c.cmd.Lock()
	s.b.mu.Lock()
	t := c.topics[s.channel]
	send := false
	if t != nil {
		delete(t.subs, s)
		if len(t.subs) == 0 && t.on {
			t.on, send = false, true
		}
		c.forget(s.channel, t)
	}
	s.b.mu.Unlock()
	var err error
	if send {
		ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
		err = c.ps.Unsubscribe(ctx, s.channel)
		cancel()
	}
	c.cmd.Unlock()
	if err != nil {
		s.b.fail(c) // after cmd: fail ends subscriptions, which take it
	}
}

// forget drops t when nothing refers to it any more (called with bus.mu).
func (c *busConn) forget(channel string, t *busTopic) {
	if len(t.subs) == 0 && !t.on && len(t.waiters) == 0 && t.sent == t.confirmed {
		delete(c.topics, channel)
	}
}
