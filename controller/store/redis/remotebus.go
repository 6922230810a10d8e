package redis

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gitfleet/gitfleet/controller/store"
	goredis "github.com/redis/go-redis/v9"
)

// The remote sessions' bus is classic Redis PUBLISH/SUBSCRIBE on the
// channel PREFIX:rt:TOPIC. A Redis Cluster forwards a PUBLISH to every
// node, so a subscriber connected to any node receives what any replica
// publishes through any node. But two PUBLISHes sent through different
// nodes may arrive in either order, so on a cluster every replica
// publishes a topic through the master of the channel name's slot (the
// node go-redis subscribes on, too): the messages of one publisher keep
// their order.

// healthEvery is how often a subscription pings Redis; a subscription
// that hears nothing (no message, no pong) for three of them ends.
var healthEvery = 10 * time.Second

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

// Subscribe subscribes to topic on one connection of its own; it returns
// once Redis confirmed the subscription.
func (s *Store) Subscribe(ctx context.Context, topic string) (store.Subscription, error) {
	if err := store.ValidateTopic(topic, nil); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("redis: subscribe %s: %w", topic, err)
	}
	ps := s.c.Subscribe(ctx, s.k.topic(topic))
	// The first reply is the confirmation; until it arrives a PUBLISH
	// could miss this subscriber.
	reply, err := ps.Receive(ctx)
	if err == nil {
		if _, ok := reply.(*goredis.Subscription); !ok {
			err = fmt.Errorf("unexpected first reply %T", reply)
		}
	}
	if err != nil {
		ps.Close()
		return nil, fmt.Errorf("redis: subscribe %s: %w", topic, err)
	}
	sub := &subscription{ps: ps, c: make(chan []byte, store.RemoteBuffer), done: make(chan struct{}), reg: &s.subs}
	sub.heard.Store(time.Now().UnixNano())
	// ctx of the Subscribe call bounds the subscription; the goroutines
	// use their own, which Close cancels, so that they never outlive it.
	runCtx, cancel := context.WithCancel(context.Background())
	sub.cancel = cancel
	var wg sync.WaitGroup
	wg.Go(func() { sub.read(runCtx) })
	wg.Go(func() { sub.health(ctx, runCtx) })
	go func() {
		wg.Wait()
		close(sub.done)
	}()
	if !s.subs.add(sub) {
		sub.Close()
		return nil, fmt.Errorf("redis: subscribe %s: store closed", topic)
	}
	return sub, nil
}

// subscriptions are a store's open subscriptions.
type subscriptions struct {
	mu     sync.Mutex
	open   map[*subscription]struct{}
	closed bool
}

// add registers sub; false once the store is closed.
func (r *subscriptions) add(sub *subscription) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return false
	}
	if r.open == nil {
		r.open = map[*subscription]struct{}{}
	}
	r.open[sub] = struct{}{}
	return true
}

func (r *subscriptions) remove(sub *subscription) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.open, sub)
}

// closeAll ends every subscription and refuses new ones.
func (r *subscriptions) closeAll() {
	r.mu.Lock()
	r.closed = true
	open := r.open
	r.open = nil
	r.mu.Unlock()
	for sub := range open {
		sub.Close()
	}
}

// subscription is one Subscribe: a reader goroutine moves messages from
// the connection to c, a health goroutine pings. Either ending closes the
// connection, which ends the other.
type subscription struct {
	ps     *goredis.PubSub
	c      chan []byte
	done   chan struct{} // both goroutines returned
	heard  atomic.Int64  // unix ns of the last message or pong
	cancel context.CancelFunc
	reg    *subscriptions
	once   sync.Once
	drop   atomic.Bool // Close: drop what is buffered
}

func (s *subscription) C() <-chan []byte { return s.c }

// Close ends the subscription and waits until its goroutines returned;
// messages not yet received are dropped.
func (s *subscription) Close() error {
	s.drop.Store(true)
	s.end()
	<-s.done
	for {
		select {
		case _, ok := <-s.c:
			if !ok {
				return nil
			}
		default:
			return nil
		}
	}
}

// end stops the goroutines (without waiting for them).
func (s *subscription) end() {
	s.once.Do(func() {
		s.cancel()
		s.ps.Close() // interrupts the reader's blocking read
		s.reg.remove(s)
	})
}

// read delivers messages until the connection fails or closes, or the
// subscriber falls RemoteBuffer messages behind.
func (s *subscription) read(ctx context.Context) {
	defer close(s.c)
	defer s.end()
	for {
		reply, err := s.ps.Receive(ctx)
		if err != nil {
			return
		}
		s.heard.Store(time.Now().UnixNano())
		m, ok := reply.(*goredis.Message)
		if !ok {
			continue // a pong or a subscription confirmation
		}
		if s.drop.Load() {
			return
		}
		select {
		case s.c <- []byte(m.Payload):
		default:
			return // fell behind: end rather than leave a gap
		}
	}
}

// health ends the subscription when the Subscribe call's ctx ends, and
// pings Redis every healthEvery, ending the subscription when the ping
// fails or nothing was heard for three intervals (a connection that died
// without closing).
func (s *subscription) health(callerCtx, ctx context.Context) {
	defer s.end()
	tick := time.NewTicker(healthEvery)
	defer tick.Stop()
	for {
		select {
		case <-callerCtx.Done():
			return
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if time.Since(time.Unix(0, s.heard.Load())) > 3*healthEvery {
			return
		}
		if err := s.ps.Ping(ctx); err != nil {
			return
		}
	}
}
