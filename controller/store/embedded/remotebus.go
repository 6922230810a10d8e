package embedded

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/gitfleet/gitfleet/controller/store"
)

// bus is the embedded store's message bus: process-local, one
// store.SubscriptionQueue per subscription. A publisher never waits for a
// subscriber: a subscription that is store.RemoteBufferBytes behind when
// a message arrives is ended instead (what it holds is still delivered,
// then its channel closed), so its reader sees the end of the stream
// rather than a silent gap.
type bus struct {
	mu     sync.Mutex
	topics map[string]map[*subscription]struct{}
	closed bool
}

func newBus() *bus { return &bus{topics: map[string]map[*subscription]struct{}{}} }

// subscription is one Subscribe.
type subscription struct {
	b     *bus
	topic string
	q     *store.SubscriptionQueue

	mu   sync.Mutex
	stop func() bool // stops the ctx watcher
}

func (s *subscription) C() <-chan []byte { return s.q.C() }

// Close ends the subscription; messages not yet received are dropped.
func (s *subscription) Close() error {
	s.end(true)
	return nil
}

// end unregisters s and ends its queue. drain drops what is still queued
// (Close); otherwise the reader still receives it (ctx ended, the store
// closed).
func (s *subscription) end(drain bool) {
	s.mu.Lock()
	stop := s.stop
	s.stop = nil
	s.mu.Unlock()
	if stop != nil {
		stop()
	}
	s.b.remove(s)
	if drain {
		s.q.Discard()
	} else {
		s.q.End()
	}
}

// deliver queues msg, or ends s when it is too far behind. It reports
// whether s has ended.
func (s *subscription) deliver(msg []byte) (ended bool) {
	return !s.q.Push(msg)
}

func (b *bus) remove(s *subscription) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if subs := b.topics[s.topic]; subs != nil {
		delete(subs, s)
		if len(subs) == 0 {
			delete(b.topics, s.topic)
		}
	}
}

var errBusClosed = errors.New("embedded: store closed")

func (b *bus) subscribe(ctx context.Context, topic string) (*subscription, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("embedded: subscribe %s: %w", topic, err)
	}
	s := &subscription{b: b, topic: topic, q: store.NewSubscriptionQueue()}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		s.q.Discard()
		return nil, fmt.Errorf("embedded: subscribe %s: %w", topic, errBusClosed)
	}
	subs := b.topics[topic]
	if subs == nil {
		subs = map[*subscription]struct{}{}
		b.topics[topic] = subs
	}
	subs[s] = struct{}{}
	b.mu.Unlock()
	stop := context.AfterFunc(ctx, func() { s.end(false) })
	s.mu.Lock()
	s.stop = stop
	s.mu.Unlock()
	return s, nil
}

// publish delivers msg to topic's subscribers. The bus lock is held while
// delivering, so the messages one goroutine publishes arrive in order,
// and delivery never blocks (see deliver).
func (b *bus) publish(topic string, msg []byte) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return fmt.Errorf("embedded: publish %s: %w", topic, errBusClosed)
	}
	subs := b.topics[topic]
	for s := range subs {
		if s.deliver(append(make([]byte, 0, len(msg)), msg...)) {
			delete(subs, s)
		}
	}
	if len(subs) == 0 {
		delete(b.topics, topic)
	}
	return nil
}

// close ends every subscription; later calls fail.
func (b *bus) close() {
	b.mu.Lock()
	b.closed = true
	var all []*subscription
	for _, subs := range b.topics {
		for s := range subs {
			all = append(all, s)
		}
	}
	b.mu.Unlock()
	for _, s := range all {
		s.end(false)
	}
}
