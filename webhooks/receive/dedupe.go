package receive

import (
	"container/list"
	"context"
	"sync"
	"time"
)

// Deduper remembers webhook delivery IDs, so that a delivery the host sends
// again (a retry, a manual redelivery, a replay) triggers nothing.
//
// FirstDelivery records id for ttl and reports whether it was new: true the
// first time, false while a previous record lives. It must be atomic across
// every caller sharing the store (in Redis: SET key 1 NX PX ttl). The IDs the
// Handler passes are namespaced by provider ("github:<guid>").
type Deduper interface {
	FirstDelivery(ctx context.Context, id string, ttl time.Duration) (bool, error)
}

var _ Deduper = (*MemoryDeduper)(nil)

// MemoryDeduper is a Deduper for a single process, bounded in size. When it
// is full, the oldest record goes first, expired or not.
type MemoryDeduper struct {
	now func() time.Time
	max int

	mu    sync.Mutex
	seen  map[string]*list.Element
	order *list.List // of *seenID, oldest first
}

type seenID struct {
	id      string
	expires time.Time
}

// DefaultMemoryDeduperSize is the capacity of a MemoryDeduper made with
// size 0.
const DefaultMemoryDeduperSize = 100000

// NewMemoryDeduper returns an empty MemoryDeduper holding at most size IDs
// (DefaultMemoryDeduperSize if size <= 0), reading time from now (time.Now
// if nil).
func NewMemoryDeduper(size int, now func() time.Time) *MemoryDeduper {
	if size <= 0 {
		size = DefaultMemoryDeduperSize
	}
	if now == nil {
		now = time.Now
	}
	return &MemoryDeduper{now: now, max: size, seen: make(map[string]*list.Element), order: list.New()}
}

// FirstDelivery implements Deduper. It never fails.
func (d *MemoryDeduper) FirstDelivery(_ context.Context, id string, ttl time.Duration) (bool, error) {
	now := d.now()
	d.mu.Lock()
	defer d.mu.Unlock()
	// Drop expired records from the front. With one TTL for every call
	// (the Handler's case) insertion order is expiry order, so this drops
	// them all; with mixed TTLs a few may linger until they reach the front
	// or are looked up.
	for e := d.order.Front(); e != nil; e = d.order.Front() {
		s := e.Value.(*seenID)
		if now.Before(s.expires) {
			break
		}
		d.remove(e)
	}
	if e, ok := d.seen[id]; ok {
		if now.Before(e.Value.(*seenID).expires) {
			return false, nil
		}
		d.remove(e)
	}
	for len(d.seen) >= d.max {
		d.remove(d.order.Front())
	}
	d.seen[id] = d.order.PushBack(&seenID{id: id, expires: now.Add(ttl)})
	return true, nil
}

// Len reports how many IDs are remembered, expired or not.
func (d *MemoryDeduper) Len() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.seen)
}

func (d *MemoryDeduper) remove(e *list.Element) {
	d.order.Remove(e)
	delete(d.seen, e.Value.(*seenID).id)
}
