package deviceapi

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gitfleet/gitfleet/controller/artifacts"
	"github.com/gitfleet/gitfleet/controller/reconcile"
	"github.com/gitfleet/gitfleet/controller/rollout"
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
	var p Planner
	if a.opts.Compile != nil {
		p = a.opts.Compile(snap.Fleet, records)
	} else {
		// A commit that changed no device declaration compiles in
		// proportion to its rollouts, not to the fleet: 1.4 s of CPU
		// for a rollout of a million devices at the first poll after
		// every commit, otherwise.
		var prev *rollout.Plan
		if e := a.plan.cur.Load(); e != nil {
			prev, _ = e.plan.(*rollout.Plan)
		}
		p = rollout.CompileFrom(prev, snap.Fleet, records)
	}
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

// Offline devices. The rollout engine lets a closed target's phases choose
// among present devices (rollout.NextInput LastSeen and Admitted): this
// replica counts a device as seen when it polls here. A device this
// replica has not seen since it started counts as seen at the start, so
// for one online window after a (re)start nobody is taken for offline and
// the order by rank holds; a device that polls only another replica is
// taken for offline here after the window, which at worst lets the next
// device by rank take its place (admission stays bounded by the phase).

// seenDevices remembers when each device (by manifest name) last polled,
// in Unix nanoseconds: a value without pointers, which the collector
// does not trace in a map of a million devices.
type seenDevices struct {
	mu    sync.Mutex
	at    map[string]int64
	start time.Time
}

// maxSeen bounds the memory; past it the oldest sightings are forgotten
// by starting over (the devices then count as seen at that moment).
const maxSeen = 4_000_000

// see records that name polled at now. declared (the fleet's declared
// devices) sizes the map when it starts, so that it does not grow by
// doubling, rehashing up to a million entries, as devices first poll.
func (s *seenDevices) see(name string, now time.Time, declared int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.at == nil || len(s.at) >= maxSeen {
		s.at, s.start = make(map[string]int64, min(declared, maxSeen)), now
	}
	s.at[name] = now.UnixNano()
}

func (s *seenDevices) last(name string) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t, ok := s.at[name]; ok {
		return time.Unix(0, t)
	}
	return s.start
}

// Device deadlines. A device that vanished mid-update never polls again,
// so the polls of other devices sweep their generation: at most once a
// minute per generation on this replica, the devices the index knows
// admitted and unfinished (up to maxSweep) are read from the store, and
// each past its deadline (rollout.Plan.Deadline) is reported timed out,
// which counts it, may complete its phase and may abort the generation.

type sweepTimes struct {
	mu   sync.Mutex
	last map[store.GenerationRef]time.Time
}

const (
	sweepEvery = time.Minute
	maxSweep   = 1000
)

// due reports whether g's sweep is due at now, and marks it done.
func (s *sweepTimes) due(g store.GenerationRef, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t, ok := s.last[g]; ok && now.Sub(t) < sweepEvery {
		return false
	}
	if s.last == nil || len(s.last) >= maxIndexedGens {
		s.last = map[store.GenerationRef]time.Time{}
	}
	s.last[g] = now
	return true
}

// deadliner is the part of rollout.Plan a sweep needs.
type deadliner interface {
	Deadline(g store.GenerationRef, dep store.Deployment) (time.Time, bool)
}

// settler is the plan's check for phases over because their remaining
// devices are offline (*rollout.Plan).
type settler interface {
	Settle(in rollout.NextInput) uint64
}

// sweep reports a timeout for each unfinished device of g past its
// deadline. Errors are logged: the next sweep tries again.
func (a *API) sweep(ctx context.Context, snap *reconcile.Snapshot, plan Planner, g store.GenerationRef, in *rollout.NextInput) {
	p := &in.Progress
	if p.Aborted != "" || !a.sweeps.due(g, a.opts.Now()) {
		return
	}
	// Phases over because their remaining devices are offline: no poll of
	// a device that finished would record them.
	if st, ok := plan.(settler); ok {
		if bits := st.Settle(*in); bits != 0 {
			a.recordCompleted(ctx, snap, g, bits)
		}
	}
	dl, ok := plan.(deadliner)
	if !ok {
		return
	}
	ids, ok := a.index.gen(g).unfinished(p, maxSweep)
	if !ok {
		return
	}
	now := a.opts.Now()
	for _, id := range ids {
		d, err := a.opts.Store.Deployment(ctx, g, id)
		if err != nil {
			a.log.Warn("timeout sweep: read deployment failed", "rollout", g.Rollout, "device", id, "err", err)
			return
		}
		if t, ok := dl.Deadline(g, d); ok && !now.Before(t) {
			if err := a.timeout(ctx, snap, plan, g, id); err != nil {
				a.log.Warn("timeout sweep: recording the timeout failed", "rollout", g.Rollout, "device", id, "err", err)
				return
			}
		}
	}
}

// ArtifactRefusal says why the controller refuses err's artifact: the
// check that failed. "" when err is nil or not a refusal (not declared,
// not checked yet, its source unavailable for now): then an admitted
// device waits and nobody is told the rollout is refused.
func ArtifactRefusal(err error) string {
	if err == nil || errors.Is(err, artifacts.ErrNotFound) || errors.Is(err, artifacts.ErrPending) || errors.Is(err, artifacts.ErrSource) {
		return ""
	}
	return err.Error()
}

// settleAll records, at most once a minute per replica (whichever device
// polls), the phases of every rollout that are over because their
// remaining devices never came online: once every present device finished,
// no poll is routed to the generation any more, so nothing else would.
func (a *API) settleAll(ctx context.Context, snap *reconcile.Snapshot, plan Planner) {
	st, ok := plan.(settler)
	lister, ok2 := plan.(interface{ Rollouts() []rollout.Info })
	if !ok || !ok2 || !a.settles.due(a.opts.Now(), sweepEvery) {
		return
	}
	for _, info := range lister.Rollouts() {
		g := info.Generation
		if g.Generation == 0 {
			continue
		}
		p, err := a.progress(ctx, g)
		if err != nil || p.Aborted != "" {
			continue
		}
		gi := a.index.gen(g)
		in := rollout.NextInput{Now: a.opts.Now(), Generation: g, Progress: p,
			Completed: completed(p, max(len(p.Phases), len(info.Phases))), LastSeen: a.seen.last}
		in.Admitted = func(id string) bool {
			d, ok := gi.lookup(id, &in.Progress)
			return !ok || d != nil
		}
		if bits := st.Settle(in); bits != 0 {
			a.recordCompleted(ctx, snap, g, bits)
		}
	}
}
