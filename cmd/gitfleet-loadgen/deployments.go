package main

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gitfleet/gitfleet/controller/rollout"
	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gitfleet/gitfleet/controller/store/redis"
)

// The rollout's state while polls are measured: the canary (10 devices)
// and the "half" phase (50 %) ran — every device of both was admitted, all
// but inFlight of the half phase finished with success — and the last
// phase waits for its approval. So a poll is, by device: finished (204
// from the index), in flight (200 with the deployment again), or waiting
// for a phase that is not open (204). The devices of each phase are the
// ones the controller puts there: ranked by rollout.Key, as it does.
const inFlight = 100

// phaseSizes returns the cumulative sizes of the canary and half phases
// for n devices, as the controller computes them for a closed target.
func phaseSizes(n int) (canary, half int) {
	canary = min(10, n)
	half = max(canary, (n+1)/2)
	return canary, half
}

// deploymentsReport is what seeding the rollout's deployments cost.
type deploymentsReport struct {
	finished, inFlight int
	probe              int   // an in-flight device (its index), offered the artifact at every poll
	inFlightIdx        []int // the in-flight devices (indexes)
	memDelta           int64
	took               time.Duration
}

func (d deploymentsReport) String() string {
	n := d.finished + d.inFlight
	return fmt.Sprintf("%.0f B per device with a deployment (used_memory delta %d MiB / %d deployments: record, change list, counters); seeded in %s",
		float64(d.memDelta)/float64(n), d.memDelta>>20, n, d.took.Round(time.Millisecond))
}

// seedDeployments records the rollout's deployments through the store API
// (Admit and Report, as the device API calls them) from workers
// goroutines, after the controller started the rollout's generation.
func seedDeployments(ctx context.Context, addr string, f *fleet, workers int) (deploymentsReport, error) {
	raw := redisClient(addr, workers)
	defer raw.Close()
	st, err := redis.New(redis.Options{Client: raw})
	if err != nil {
		return deploymentsReport{}, err
	}
	recs, err := st.Rollouts(ctx)
	if err != nil {
		return deploymentsReport{}, err
	}
	i := slices.IndexFunc(recs, func(r store.RolloutRecord) bool { return r.Name == rolloutName })
	if i < 0 {
		return deploymentsReport{}, fmt.Errorf("the controller recorded no rollout %q", rolloutName)
	}
	g := store.GenerationRef{Rollout: rolloutName, Generation: recs[i].Generation}

	// Rank the devices as the controller does.
	type ranked struct {
		key  uint64
		name string
		i    int
	}
	all := make([]ranked, f.n)
	for i := range f.n {
		all[i] = ranked{rollout.Key(rolloutName, f.name(i)), f.name(i), i}
	}
	slices.SortFunc(all, func(a, b ranked) int { return cmp.Or(cmp.Compare(a.key, b.key), cmp.Compare(a.name, b.name)) })
	canary, half := phaseSizes(f.n)
	inflight := min(inFlight, half-canary)

	before, err := usedMemory(ctx, raw)
	if err != nil {
		return deploymentsReport{}, err
	}
	start := time.Now()
	var (
		next    atomic.Int64
		wg      sync.WaitGroup
		errOnce sync.Once
		first   error
	)
	for range workers {
		wg.Go(func() {
			for {
				r := int(next.Add(1)) - 1
				if r >= half || ctx.Err() != nil {
					return
				}
				phase, limit := 0, int64(canary)
				if r >= canary {
					phase, limit = 1, int64(half-canary)
				}
				state := store.StateSuccess
				if r >= half-inflight {
					state = "downloading"
				}
				_, ok, err := st.Admit(ctx, g, phase, limit, all[r].name)
				if err == nil && !ok {
					err = fmt.Errorf("device %s not admitted to phase %d", all[r].name, phase)
				}
				if err == nil {
					_, _, err = st.Report(ctx, g, all[r].name, state, 0)
				}
				if err != nil {
					errOnce.Do(func() { first = err })
					return
				}
			}
		})
	}
	wg.Wait()
	if first == nil {
		first = ctx.Err()
	}
	if first != nil {
		return deploymentsReport{}, fmt.Errorf("seeding deployments: %w", first)
	}
	after, err := usedMemory(ctx, raw)
	if err != nil {
		return deploymentsReport{}, err
	}
	d := deploymentsReport{finished: half - inflight, inFlight: inflight, probe: all[half-1].i, memDelta: after - before, took: time.Since(start)}
	for _, r := range all[half-inflight : half] {
		d.inFlightIdx = append(d.inFlightIdx, r.i)
	}
	fmt.Printf("rollout %s: %d devices finished, %d in flight, %d waiting for approval; %s\n",
		g, d.finished, d.inFlight, f.n-half, d)
	return d, nil
}
