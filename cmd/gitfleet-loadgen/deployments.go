package main

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gitfleet/gitfleet/controller/deviceapi"
	"github.com/gitfleet/gitfleet/controller/rollout"
	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gitfleet/gitfleet/controller/store/redis"
	"github.com/gitfleet/gitfleet/schema"
)

// The rollout's state while polls are measured: the canary (10 devices)
// and the "half" phase (50 %) ran — every device of both was admitted, all
// but inFlight of the half phase finished with success — and the last
// phase waits for its approval. So a poll is, by device: finished (204
// from the index), in flight (200 with the deployment again), or waiting
// for a phase that is not open (204). The devices of each phase are the
// ones the controller puts there: ranked by rollout.Key, as it ranks a
// closed target, or in a DeviceCA fleet as its plan admits devices to an
// open target (openSeats).
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

// seat is one admission the seeding records: device i into phase with
// the phase's quota as store.Admit's limit.
type seat struct {
	i     int
	phase int
	limit int64
}

// seedDeployments records the rollout's deployments through the store API
// (Admit and Report, as the device API calls them) from workers
// goroutines, after the controller started the rollout's generation. In a
// fleet declared in Git the devices of each phase are ranked as the
// controller ranks a closed target (by rollout.Key); in a DeviceCA fleet
// (f.ca) the controller's own plan, compiled from the repository at
// repoDir, decides them (openSeats).
func seedDeployments(ctx context.Context, addr string, f *fleet, workers int, repoDir string) (deploymentsReport, error) {
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

	var seats []seat
	if f.ca != "" {
		if seats, err = openSeats(repoDir, recs, g, f); err != nil {
			return deploymentsReport{}, err
		}
	} else {
		seats = closedSeats(f)
	}
	inflight := min(inFlight, len(seats)-countPhase(seats, 0))

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
				if r >= len(seats) || ctx.Err() != nil {
					return
				}
				s := seats[r]
				state := store.StateSuccess
				if r >= len(seats)-inflight {
					state = "downloading"
				}
				name := f.device(s.i)
				_, ok, err := st.Admit(ctx, g, s.phase, s.limit, name)
				if err == nil && !ok {
					err = fmt.Errorf("device %s not admitted to phase %d", name, s.phase)
				}
				if err == nil {
					_, _, err = st.Report(ctx, g, name, state, 0)
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
	d := deploymentsReport{finished: len(seats) - inflight, inFlight: inflight, probe: seats[len(seats)-1].i, memDelta: after - before, took: time.Since(start)}
	for _, s := range seats[len(seats)-inflight:] {
		d.inFlightIdx = append(d.inFlightIdx, s.i)
	}
	fmt.Printf("rollout %s: %d devices finished (%d canaries), %d in flight, %d waiting for approval; %s\n",
		g, d.finished, countPhase(seats, 0), d.inFlight, f.n-len(seats), d)
	return d, nil
}

func countPhase(seats []seat, phase int) int {
	n := 0
	for _, s := range seats {
		if s.phase == phase {
			n++
		}
	}
	return n
}

// closedSeats are the canary and half phases of the rollout of a fleet
// declared in Git: a closed target, its devices ranked by rollout.Key as
// the controller ranks them.
func closedSeats(f *fleet) []seat {
	type ranked struct {
		key  uint64
		name string
		i    int
	}
	all := make([]ranked, f.n)
	for i := range f.n {
		all[i] = ranked{rollout.Key(rolloutName, f.device(i)), f.device(i), i}
	}
	slices.SortFunc(all, func(a, b ranked) int { return cmp.Or(cmp.Compare(a.key, b.key), cmp.Compare(a.name, b.name)) })
	canary, half := phaseSizes(f.n)
	seats := make([]seat, 0, half)
	for r := range half {
		s := seat{i: all[r].i, limit: int64(canary)}
		if r >= canary {
			s.phase, s.limit = 1, int64(half-canary)
		}
		seats = append(seats, s)
	}
	return seats
}

// openSeats are the canary and half phases of the rollout of a DeviceCA
// fleet, whose target (all) is open to the devices the DeviceCA admits:
// the controller's plan (rollout.Compile of the repository as schema.Load
// reads it, with the store's rollout records) decides for each device
// what its poll would, with the body the polls send. The devices ask in
// index order: the count phase (canary) takes the first that ask, each
// decided on the progress the ones before left (admitted and finished
// with success); then, with the canary complete, the percent phase (half)
// takes every later device it admits — those whose position,
// rollout.Position, is below its share — and the others wait for the last
// phase's approval. Any other decision fails the run.
func openSeats(repoDir string, recs []store.RolloutRecord, g store.GenerationRef, f *fleet) ([]seat, error) {
	fl, err := schema.Load(os.DirFS(repoDir))
	if err != nil {
		return nil, fmt.Errorf("loading the fleet repository as the controller does: %w", err)
	}
	plan := rollout.Compile(fl, recs)
	req, err := deviceapi.DecodeNextV2(nextBody)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	dev := func(i int) *rollout.Device {
		return &rollout.Device{ID: f.device(i), Identity: f.identity(i), DeviceType: req.DeviceType, Provides: req.Provides}
	}
	var seats []seat
	prog := store.Progress{Phases: make([]store.PhaseCounts, 1)}
	i := 0
	for ; i < f.n; i++ {
		dec := plan.Next(rollout.NextInput{Device: dev(i), Now: now, Generation: g, Progress: prog})
		if dec.Action != rollout.Admit || dec.Phase != 0 {
			break
		}
		seats = append(seats, seat{i: i, phase: 0, limit: dec.Limit})
		prog.Phases[0].Admitted++
		prog.Phases[0].Succeeded++
	}
	if len(seats) == 0 {
		return nil, fmt.Errorf("the controller's plan admits no device of the DeviceCA into the first phase of rollout %s (device %s)", g, f.device(0))
	}
	// The half phase running (someone admitted, not complete): its quota
	// (about 2^30 in an open target) never fills, so the order of the
	// rest does not matter and they are decided in parallel.
	prog.Phases = append(prog.Phases, store.PhaseCounts{Admitted: 1})
	phase := make([]int8, f.n) // 1: admitted into phase 1; 0: waits
	limits := make([]int64, f.n)
	var (
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	workers := runtime.GOMAXPROCS(0)
	for w := range workers {
		wg.Go(func() {
			for j := i + w; j < f.n; j += workers {
				dec := plan.Next(rollout.NextInput{Device: dev(j), Now: now, Generation: g, Progress: prog})
				switch {
				case dec.Action == rollout.Admit && dec.Phase == 1:
					phase[j], limits[j] = 1, dec.Limit
				case dec.Action == rollout.None && (dec.Reason == rollout.ReasonApproval || dec.Reason == rollout.ReasonWaitPhase):
				default:
					errOnce.Do(func() {
						firstErr = fmt.Errorf("the controller's plan decides %s for device %s after the canary; want admit into phase 1 or a wait for the last phase", dec, f.device(j))
					})
					return
				}
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	for j := i; j < f.n; j++ {
		if phase[j] == 1 {
			seats = append(seats, seat{i: j, phase: 1, limit: limits[j]})
		}
	}
	return seats, nil
}
