package notify

import "sync"

// queue is a bounded in-memory FIFO of events. Pushing onto a full queue
// drops the oldest event and counts it, so a caller never blocks and the
// newest state of the fleet is what gets delivered.
type queue struct {
	mu      sync.Mutex
	buf     []Event // ring
	head, n int
	dropped uint64 // since the last take
	total   uint64 // ever dropped
	ready   chan struct{}
}

func newQueue(size int) *queue {
	return &queue{buf: make([]Event, size), ready: make(chan struct{}, 1)}
}

// push adds e, dropping the oldest event when full.
func (q *queue) push(e Event) {
	q.mu.Lock()
	if q.n == len(q.buf) {
		q.buf[q.head] = Event{}
		q.head = (q.head + 1) % len(q.buf)
		q.n--
		q.dropped++
		q.total++
	}
	q.buf[(q.head+q.n)%len(q.buf)] = e
	q.n++
	q.mu.Unlock()
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

// take removes up to max events (all if max <= 0) and returns them with
// the number dropped since the previous take.
func (q *queue) take(max int) ([]Event, uint64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	k := q.n
	if max > 0 && k > max {
		k = max
	}
	out := make([]Event, k)
	for i := range out {
		out[i] = q.buf[q.head]
		q.buf[q.head] = Event{}
		q.head = (q.head + 1) % len(q.buf)
	}
	q.n -= k
	d := q.dropped
	q.dropped = 0
	if q.n > 0 {
		select {
		case q.ready <- struct{}{}:
		default:
		}
	}
	return out, d
}

func (q *queue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.n
}

func (q *queue) droppedTotal() uint64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.total
}
