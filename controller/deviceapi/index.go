package deviceapi

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/gitfleet/gitfleet/controller/store"
)

// The deployment index. Every poll of a device in a rollout needs to know
// whether the device has a deployment in the routed generation and whether
// it finished; asking the store for it was the single largest cost of a
// poll (one round trip, more CPU than everything else a poll does). The
// index mirrors that knowledge in memory from the store's change list
// (store.Deployments.Changes): one entry when a device is admitted and
// one when its deployment reaches a final state, written atomically with
// the admission or the report, so a generation whose progress counts n
// changes (Progress.ChangeCount) is known exactly once n entries are
// applied.
//
// A poll uses the index only when it is current for the progress the poll
// decides with (the cached progress, at most progressTTL old): then the
// index is at least as fresh as the phase counts the decision already
// relies on. Otherwise the poll reads the device's deployment from the
// store, as before, and brings the index up to date (one poll at a time
// per generation, a bounded number of pages per poll). A device admitted
// on another replica in the last progressTTL may look unadmitted; the
// decision is then Admit, and the store's atomic Admit hands back the
// existing deployment (next carries that out), or, when the device's phase
// looks closed, the device hears 204 once and gets its deployment at its
// next poll. Nothing is ever admitted twice or beyond a quota: that stays
// the store's atomic decision.
//
// Memory: a map entry per device with a deployment (about 40 bytes plus
// the name); a generation with more than maxIndexed deployments is not
// indexed (its polls read the store). Generations unused for indexIdle are
// dropped.

const (
	maxIndexed       = 4_000_000 // deployments indexed per generation
	maxIndexedGens   = 256       // generations indexed at once
	indexIdle        = 10 * time.Minute
	indexPagesPerRun = 20 // change pages one poll applies
)

// Index entry: the phase and what is known of the deployment.
const (
	idxAdmitted uint8 = 1 // admitted, not final
	idxSuccess  uint8 = 2
	idxFailure  uint8 = 3
	idxTimeout  uint8 = 4
)

type depIndex struct {
	mu   sync.RWMutex
	gens map[store.GenerationRef]*genIndex
}

type genIndex struct {
	mu      sync.RWMutex
	recs    map[string]idxRec
	applied int64 // change list entries applied
	off     bool  // too large to index
	used    time.Time

	sync sync.Mutex // held by the poll catching up
}

type idxRec struct {
	phase uint8
	kind  uint8
	// admitted is the admission time (Unix ms) when this replica learnt
	// it (its own Admit, or a store read); 0 when only the change list
	// told (changes carry no time): a poll then reads the deployment
	// once for its deadline.
	admitted int64
}

func kindOf(state string) uint8 {
	switch state {
	case store.StateSuccess:
		return idxSuccess
	case store.StateFailure:
		return idxFailure
	case store.StateTimeout:
		return idxTimeout
	}
	return idxAdmitted
}

// unfinished returns up to max devices the index knows admitted and not
// final, and whether the index is usable (caught up with p).
func (gi *genIndex) unfinished(p *store.Progress, max int) ([]string, bool) {
	gi.mu.RLock()
	defer gi.mu.RUnlock()
	if gi.off || gi.applied < p.ChangeCount() {
		return nil, false
	}
	var out []string
	for id, r := range gi.recs {
		if r.kind == idxAdmitted {
			out = append(out, id)
			if len(out) >= max {
				break
			}
		}
	}
	return out, true
}

// gen returns g's index, creating it.
func (x *depIndex) gen(g store.GenerationRef) *genIndex {
	x.mu.RLock()
	gi := x.gens[g]
	x.mu.RUnlock()
	if gi != nil {
		return gi
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if gi = x.gens[g]; gi != nil {
		return gi
	}
	if x.gens == nil {
		x.gens = map[store.GenerationRef]*genIndex{}
	}
	x.evict()
	gi = &genIndex{recs: map[string]idxRec{}, used: time.Now()}
	x.gens[g] = gi
	return gi
}

// evict drops the generations unused for indexIdle (a rollout moved on
// to a new generation, or stopped), and the least recently used one while
// there are maxIndexedGens. x.mu is held; it runs when a generation is
// added.
func (x *depIndex) evict() {
	var oldest store.GenerationRef
	var oldestAt time.Time
	for g, gi := range x.gens {
		gi.mu.RLock()
		used := gi.used
		gi.mu.RUnlock()
		if time.Since(used) > indexIdle {
			delete(x.gens, g)
			continue
		}
		if oldestAt.IsZero() || used.Before(oldestAt) {
			oldest, oldestAt = g, used
		}
	}
	if len(x.gens) >= maxIndexedGens {
		delete(x.gens, oldest)
	}
}

// indexed reports how many generations are indexed (for tests).
func (x *depIndex) indexed() int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return len(x.gens)
}

// lookup answers from the index whether device has a deployment in g
// (d nil: it has none) when the index is current for progress p; ok is
// false when it is not, and the caller asks the store.
func (gi *genIndex) lookup(device string, p *store.Progress) (d *store.Deployment, ok bool) {
	gi.mu.RLock()
	applied, off, used := gi.applied, gi.off, gi.used
	r, found := gi.recs[device]
	gi.mu.RUnlock()
	if off || applied < p.ChangeCount() {
		return nil, false
	}
	if time.Since(used) > time.Second {
		gi.mu.Lock()
		gi.used = time.Now()
		gi.mu.Unlock()
	}
	if !found {
		return nil, true
	}
	d = &store.Deployment{Phase: int(r.phase), State: store.StateAdmitted}
	if r.admitted != 0 {
		d.Admitted = time.UnixMilli(r.admitted)
	}
	switch r.kind {
	case idxSuccess:
		d.State = store.StateSuccess
	case idxFailure:
		d.State = store.StateFailure
	case idxTimeout:
		d.State = store.StateTimeout
	}
	return d, true
}

// note records what this replica learnt of a device's deployment (an
// admission, a final report) before the change list brings it.
func (gi *genIndex) note(device string, d store.Deployment) {
	gi.mu.Lock()
	defer gi.mu.Unlock()
	var at int64
	if !d.Admitted.IsZero() {
		at = d.Admitted.UnixMilli()
	}
	gi.merge(device, d.Phase, kindOf(d.State), at)
}

// merge applies one fact: kinds only move forward (admitted → final), so
// facts may arrive in any order. gi.mu is held.
func (gi *genIndex) merge(device string, phase int, kind uint8, admitted int64) {
	if gi.off || phase < 0 || phase >= store.MaxPhases {
		return
	}
	cur, ok := gi.recs[device]
	if ok && cur.kind >= kind && (cur.admitted != 0 || admitted == 0) {
		return
	}
	if ok && cur.kind > kind {
		kind = cur.kind
	}
	if admitted == 0 {
		admitted = cur.admitted
	}
	gi.recs[device] = idxRec{phase: uint8(phase), kind: kind, admitted: admitted}
}

// catchUp applies g's change list up to want entries, at most
// indexPagesPerRun pages; only one caller per generation does the work,
// the others return at once.
func (gi *genIndex) catchUp(ctx context.Context, st store.Deployments, g store.GenerationRef, want int64) error {
	if !gi.sync.TryLock() {
		return nil
	}
	defer gi.sync.Unlock()
	for range indexPagesPerRun {
		gi.mu.RLock()
		from, off := gi.applied, gi.off
		gi.mu.RUnlock()
		if off || from >= want {
			return nil
		}
		cs, err := st.Changes(ctx, g, from, store.MaxChangesPage)
		if err != nil {
			return err
		}
		if len(cs) == 0 {
			// The progress counts more changes than the list holds: a
			// generation recorded before change lists existed. Never
			// index it; its polls read the store.
			gi.mu.Lock()
			gi.off, gi.recs = true, nil
			gi.mu.Unlock()
			return fmt.Errorf("change list of %s ends at %d, progress counts %d: not indexed", g, from, want)
		}
		gi.mu.Lock()
		for _, c := range cs {
			gi.merge(c.Device, c.Phase, kindOf(c.State), 0)
		}
		gi.applied += int64(len(cs))
		if len(gi.recs) > maxIndexed {
			gi.off, gi.recs = true, nil
		}
		gi.mu.Unlock()
		if len(cs) < store.MaxChangesPage {
			return nil
		}
	}
	return nil
}
