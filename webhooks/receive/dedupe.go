package receive

import (
	"context"
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
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
//
// The records are kept in a [simplelru.LRU] that is only ever read with
// Peek, so its order is the order of recording. The expirable LRU of the
// same module does not fit: its TTL is one for the whole cache and it
// reads the wall clock, while a Deduper takes a TTL per call and a clock
// that tests can move.
type MemoryDeduper struct {
	now func() time.Time

	mu   sync.Mutex
	seen *simplelru.LRU[string, time.Time] // delivery ID → when its record expires
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
	seen, err := simplelru.NewLRU[string, time.Time](size, nil)
	if err != nil {
		panic(err) // only for a size <= 0, excluded above
	}
	return &MemoryDeduper{now: now, seen: seen}
}

// FirstDelivery implements Deduper. It never fails.
func (d *MemoryDeduper) FirstDelivery(_ context.Context, id string, ttl time.Duration) (bool, error) {
	now := d.now()
	d.mu.Lock()
	defer d.mu.Unlock()
	// Drop expired records from the oldest on. With one TTL for every
	// call (the Handler's case) recording order is expiry order, so this
	// drops them all; with mixed TTLs a few may linger until they are the
	// oldest or are looked up.
	for {
		_, expires, ok := d.seen.GetOldest()
		if !ok || now.Before(expires) {
			break
		}
		d.seen.RemoveOldest()
	}
	if expires, ok := d.seen.Peek(id); ok {
		if now.Before(expires) {
			return false, nil
		}
		d.seen.Remove(id) // re-recorded below as the newest
	}
	d.seen.Add(id, now.Add(ttl)) // evicts the oldest when full
	return true, nil
}

// Len reports how many IDs are remembered, expired or not.
func (d *MemoryDeduper) Len() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.seen.Len()
}
