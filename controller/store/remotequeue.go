package store

import "sync"

// SubscriptionQueue is the buffer between a message bus and one
// subscriber, shared by the stores' buses: the bus pushes without ever
// waiting, and a goroutine of the queue's own feeds C in order. It holds
// at most RemoteBufferBytes of messages (and RemoteBufferMessages
// messages); a push that would exceed either ends the queue instead, so
// its reader sees the end of the stream rather than a silent gap.
//
// The queue's goroutine returns once C is closed: after Discard, or after
// End (or an overflow) once the reader has received what was queued.
type SubscriptionQueue struct {
	out     chan []byte
	wake    chan struct{} // a push or an end (capacity 1)
	dropped chan struct{} // closed by Discard

	mu    sync.Mutex
	msgs  [][]byte
	bytes int
	state int
}

const (
	queueOpen    = iota
	queueEnding  // deliver what is queued, then close C
	queueDropped // close C now
)

// NewSubscriptionQueue returns an open queue and starts its goroutine.
func NewSubscriptionQueue() *SubscriptionQueue {
	q := &SubscriptionQueue{out: make(chan []byte), wake: make(chan struct{}, 1), dropped: make(chan struct{})}
	go q.pump()
	return q
}

// C yields the queued messages in the order they were pushed; it is
// closed when the queue has ended.
func (q *SubscriptionQueue) C() <-chan []byte { return q.out }

// Push queues msg (the queue keeps it; the caller must not reuse it). It
// reports false, and queues nothing, when the queue has ended or when msg
// would take it past its bounds; the queue then ends, delivering what it
// already holds.
func (q *SubscriptionQueue) Push(msg []byte) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.state != queueOpen {
		return false
	}
	if len(q.msgs) >= RemoteBufferMessages || q.bytes+len(msg) > RemoteBufferBytes {
		q.state = queueEnding
		q.signal()
		return false
	}
	q.msgs = append(q.msgs, msg)
	q.bytes += len(msg)
	q.signal()
	return true
}

// End ends the queue: what it holds is still delivered, then C closes.
// Ending an ended queue does nothing.
func (q *SubscriptionQueue) End() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.state == queueOpen {
		q.state = queueEnding
		q.signal()
	}
}

// Discard ends the queue and drops what it holds; C closes at once. It
// may follow End (a reader that stops reading an ended stream).
func (q *SubscriptionQueue) Discard() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.state == queueDropped {
		return
	}
	q.state = queueDropped
	q.msgs, q.bytes = nil, 0
	close(q.dropped)
}

// signal wakes the goroutine (called with mu).
func (q *SubscriptionQueue) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *SubscriptionQueue) pump() {
	defer close(q.out)
	for {
		q.mu.Lock()
		state := q.state
		if state == queueDropped {
			q.mu.Unlock()
			return
		}
		if len(q.msgs) == 0 {
			q.msgs = nil // let a burst's backing array go
			q.mu.Unlock()
			if state == queueEnding {
				return
			}
			select {
			case <-q.wake:
			case <-q.dropped:
				return
			}
			continue
		}
		m := q.msgs[0]
		q.msgs[0] = nil
		q.msgs = q.msgs[1:]
		q.bytes -= len(m)
		q.mu.Unlock()
		select {
		case q.out <- m:
		case <-q.dropped:
			return
		}
	}
}
