package deviceapi

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/gitfleet/gitfleet/controller/store"
)

// progressTTL is how long a poll may use a generation's progress read by an
// earlier poll. Every poll needs the progress of its generation, and with
// thousands of polls a second re-reading it each time doubled the store
// round trips of the hot path. Staleness is safe: admission itself is
// atomic in the store (a phase never admits beyond its quota, and an
// aborted generation admits nobody), so a stale view can only delay an
// admission or a gate by up to progressTTL. This replica's own status
// reports, phase completions and aborts refresh the entry at once. Real
// time, not Options.Now: the cache bounds staleness, it does not decide
// anything.
const progressTTL = time.Second

// maxProgressEntries bounds the cache; beyond it the cache starts over.
const maxProgressEntries = 10_000

type progressCache struct {
	mu sync.Mutex
	m  map[store.GenerationRef]progressEntry
}

type progressEntry struct {
	p  store.Progress
	at time.Time
}

func (c *progressCache) get(g store.GenerationRef) (store.Progress, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[g]
	if !ok || time.Since(e.at) > progressTTL {
		return store.Progress{}, false
	}
	p := e.p
	p.Phases = slices.Clone(p.Phases)
	return p, true
}

func (c *progressCache) put(g store.GenerationRef, p store.Progress) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= maxProgressEntries {
		c.m = map[store.GenerationRef]progressEntry{}
	}
	p.Phases = slices.Clone(p.Phases)
	c.m[g] = progressEntry{p: p, at: time.Now()}
}

func (c *progressCache) forget(g store.GenerationRef) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, g)
}

// progress returns g's progress, from the cache when it is fresh enough.
func (a *API) progress(ctx context.Context, g store.GenerationRef) (store.Progress, error) {
	if p, ok := a.prog.get(g); ok {
		return p, nil
	}
	p, err := a.opts.Store.Progress(ctx, g)
	if err != nil {
		return store.Progress{}, err
	}
	a.prog.put(g, p)
	return p, nil
}
