package deviceapi

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gitfleet/gitfleet/controller/reconcile"
	"github.com/gitfleet/gitfleet/controller/store"
)

// plans caches the rollout plan of the live Snapshot: compiled once per
// Snapshot, from its fleet and the store's rollout records (reconciling
// writes those before it publishes the Snapshot).
type plans struct {
	cur atomic.Pointer[planEntry]
	mu  sync.Mutex // serializes compiling
}

type planEntry struct {
	snap *reconcile.Snapshot
	plan Planner
}

func (a *API) planFor(ctx context.Context, snap *reconcile.Snapshot) (Planner, error) {
	if e := a.plan.cur.Load(); e != nil && e.snap == snap {
		return e.plan, nil
	}
	a.plan.mu.Lock()
	defer a.plan.mu.Unlock()
	if e := a.plan.cur.Load(); e != nil && e.snap == snap {
		return e.plan, nil
	}
	records, err := a.opts.Store.Rollouts(ctx)
	if err != nil {
		return nil, fmt.Errorf("read rollout records: %w", err)
	}
	p := a.opts.Compile(snap.Fleet, records)
	a.plan.cur.Store(&planEntry{snap: snap, plan: p})
	return p, nil
}

// Phase completion times. The rollout engine latches a phase complete and
// runs its hold from the moment it completed; the first replica that sees a
// phase complete records that moment with store.CompletePhase (first writer
// wins), and every replica reads it back through Progress.

// completed returns the recorded completion times of phases 0…n-1 from p
// (zero where not recorded).
func completed(p store.Progress, n int) []time.Time {
	out := make([]time.Time, n)
	for k := range min(n, len(p.Phases)) {
		out[k] = p.Phases[k].Completed
	}
	return out
}
