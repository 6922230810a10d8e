package deviceapi

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
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
// runs its hold from the moment it completed; the first replica that sees
// a phase complete records that moment, and every replica must then read
// the same one. The store's SharedSecret is exactly that primitive — a
// value created once, first writer wins, shared by replicas, never
// expiring — so each time is kept as the shared "secret"
// rollout.phase.<hash of rollout>.<generation>.<phase> (unix ms). Recorded
// times never change, so they are cached for good; a phase not recorded
// yet is asked again after notRecordedTTL.
//
// TODO(store): a Deployments method for phase completion would say this
// more plainly; the key layout stays the same size either way.
type phaseClock struct {
	mu    sync.Mutex
	known map[phaseKey]time.Time // recorded completion times
	miss  map[phaseKey]time.Time // not recorded when last asked, at
}

type phaseKey struct {
	g     store.GenerationRef
	phase int
}

const (
	notRecordedTTL = time.Second
	maxClockKeys   = 100_000 // both maps are reset beyond this
)

var errNotRecorded = errors.New("phase completion not recorded")

func phaseSecretName(g store.GenerationRef, phase int) string {
	sum := sha256.Sum256([]byte(g.Rollout))
	return "rollout.phase." + hex.EncodeToString(sum[:12]) + "." + strconv.FormatInt(g.Generation, 10) + "." + strconv.Itoa(phase)
}

// completed returns the recorded completion times of g's phases 0…n-1
// (zero where not recorded).
func (a *API) completed(ctx context.Context, g store.GenerationRef, n int) ([]time.Time, error) {
	out := make([]time.Time, n)
	now := a.opts.Now()
	for k := range n {
		key := phaseKey{g, k}
		a.clk.mu.Lock()
		t, ok := a.clk.known[key]
		missAt, missed := a.clk.miss[key]
		a.clk.mu.Unlock()
		if ok {
			out[k] = t
			continue
		}
		if missed && now.Sub(missAt) < notRecordedTTL && !now.Before(missAt) {
			continue
		}
		v, err := a.opts.Store.SharedSecret(ctx, phaseSecretName(g, k), func() ([]byte, error) { return nil, errNotRecorded })
		if errors.Is(err, errNotRecorded) {
			a.clk.remember(key, time.Time{}, now)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read completion of phase %d of %s: %w", k, g, err)
		}
		t, err = parseMillis(v)
		if err != nil {
			return nil, fmt.Errorf("completion of phase %d of %s: %w", k, g, err)
		}
		a.clk.remember(key, t, now)
		out[k] = t
	}
	return out, nil
}

// markCompleted records now as the completion of g's phase unless a time
// is recorded already; it returns the recorded time and whether this call
// recorded it.
func (a *API) markCompleted(ctx context.Context, g store.GenerationRef, phase int) (time.Time, bool, error) {
	now := a.opts.Now()
	mine := []byte(strconv.FormatInt(now.UnixMilli(), 10))
	v, err := a.opts.Store.SharedSecret(ctx, phaseSecretName(g, phase), func() ([]byte, error) { return mine, nil })
	if err != nil {
		return time.Time{}, false, fmt.Errorf("record completion of phase %d of %s: %w", phase, g, err)
	}
	t, err := parseMillis(v)
	if err != nil {
		return time.Time{}, false, fmt.Errorf("completion of phase %d of %s: %w", phase, g, err)
	}
	a.clk.remember(phaseKey{g, phase}, t, now)
	return t, string(v) == string(mine), nil
}

func (c *phaseClock) remember(k phaseKey, t, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.known == nil || len(c.known)+len(c.miss) > maxClockKeys {
		c.known, c.miss = map[phaseKey]time.Time{}, map[phaseKey]time.Time{}
	}
	if t.IsZero() {
		c.miss[k] = now
		return
	}
	c.known[k] = t
	delete(c.miss, k)
}

func parseMillis(v []byte) (time.Time, error) {
	ms, err := strconv.ParseInt(string(v), 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("malformed time %q", v)
	}
	return time.UnixMilli(ms), nil
}
