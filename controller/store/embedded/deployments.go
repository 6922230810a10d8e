package embedded

import (
	"context"
	"encoding/binary"
	"fmt"
	"strconv"
	"time"

	"github.com/gitfleet/gitfleet/controller/store"
	bolt "go.etcd.io/bbolt"
)

// Rollout progress lives in bucket "progress", one nested bucket per
// generation (rollout name, 0, generation as 8 bytes big endian) holding
// bucket "n" (counters a<i>, s<i>, f<i> as 8-byte integers; x → abort
// reason), bucket "dev" (device ID → "phase|state|attempts") and bucket
// "log" (the change list: position as 8 bytes big endian →
// "phase|state|device").

var (
	bProgress = []byte("progress")
	bCounts   = []byte("n")
	bDevices  = []byte("dev")
	bLog      = []byte("log")
	kAborted  = []byte("x")
)

func generationKey(g store.GenerationRef) []byte {
	return binary.BigEndian.AppendUint64(append([]byte(g.Rollout), 0), uint64(g.Generation))
}

// genBucket returns g's bucket, creating it (and the progress root) when
// create is set (in a write transaction); nil when absent.
func genBucket(tx *bolt.Tx, g store.GenerationRef, create bool) (*bolt.Bucket, error) {
	if !create {
		if root := tx.Bucket(bProgress); root != nil {
			return root.Bucket(generationKey(g)), nil
		}
		return nil, nil
	}
	root, err := tx.CreateBucketIfNotExists(bProgress)
	if err != nil {
		return nil, err
	}
	return root.CreateBucketIfNotExists(generationKey(g))
}

// generation returns g's counter and device buckets, creating them when
// create is set (in a write transaction); nil buckets when absent.
func generation(tx *bolt.Tx, g store.GenerationRef, create bool) (counts, devices *bolt.Bucket, err error) {
	b, err := genBucket(tx, g, create)
	if err != nil || b == nil {
		return nil, nil, err
	}
	if !create {
		return b.Bucket(bCounts), b.Bucket(bDevices), nil
	}
	if counts, err = b.CreateBucketIfNotExists(bCounts); err != nil {
		return nil, nil, err
	}
	devices, err = b.CreateBucketIfNotExists(bDevices)
	return counts, devices, err
}

// changeLog returns g's change list bucket, creating it when create is
// set; nil when absent.
func changeLog(tx *bolt.Tx, g store.GenerationRef, create bool) (*bolt.Bucket, error) {
	b, err := genBucket(tx, g, false)
	switch {
	case err != nil || b == nil:
		return nil, err
	case create:
		return b.CreateBucketIfNotExists(bLog)
	}
	return b.Bucket(bLog), nil
}

// appendChange appends c to g's change list (within the transaction that
// made the change).
func appendChange(tx *bolt.Tx, g store.GenerationRef, c store.Change) error {
	log, err := changeLog(tx, g, true)
	if err != nil {
		return err
	}
	if log == nil {
		return fmt.Errorf("embedded: change list of %s: generation missing", g)
	}
	seq, err := log.NextSequence()
	if err != nil {
		return err
	}
	return log.Put(u64(seq-1), []byte(store.EncodeChange(c)))
}

func counter(b *bolt.Bucket, name string) uint64 {
	if v := b.Get([]byte(name)); len(v) == 8 {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

func incr(b *bolt.Bucket, name string) error {
	return b.Put([]byte(name), u64(counter(b, name)+1))
}

// Admit admits a device into a phase if there is room.
func (s *Store) Admit(ctx context.Context, g store.GenerationRef, phase int, limit int64, device string) (store.Deployment, bool, error) {
	if err := store.ValidateAdmit(g, phase, limit, device); err != nil {
		return store.Deployment{}, false, err
	}
	var d store.Deployment
	ok := false
	err := s.update(ctx, "admit "+g.String(), func(tx *bolt.Tx) error {
		counts, devices, err := generation(tx, g, true)
		if err != nil {
			return err
		}
		if v := devices.Get([]byte(device)); v != nil {
			d, err = store.ParseDeployment(string(v))
			ok = err == nil
			return err
		}
		field := "a" + strconv.Itoa(phase)
		if counts.Get(kAborted) != nil || counter(counts, field) >= uint64(limit) {
			return nil
		}
		d, ok = store.Deployment{Phase: phase, State: store.StateAdmitted, Admitted: time.UnixMilli(s.opts.Now().UnixMilli())}, true
		if err := incr(counts, field); err != nil {
			return err
		}
		if err := appendChange(tx, g, store.Change{Device: device, Phase: phase, State: store.StateAdmitted}); err != nil {
			return err
		}
		return devices.Put([]byte(device), []byte(store.EncodeDeployment(d)))
	})
	if err != nil || !ok {
		return store.Deployment{}, false, err
	}
	return d, true, nil
}

// Report moves a device's deployment to state, counting final states once.
func (s *Store) Report(ctx context.Context, g store.GenerationRef, device, state string, retries int) (store.Deployment, bool, error) {
	if err := store.ValidateReport(g, device, state, retries); err != nil {
		return store.Deployment{}, false, err
	}
	var d store.Deployment
	changed := false
	err := s.update(ctx, "report "+g.String(), func(tx *bolt.Tx) error {
		counts, devices, err := generation(tx, g, false)
		if err != nil {
			return err
		}
		var v []byte
		if devices != nil {
			v = devices.Get([]byte(device))
		}
		if v == nil {
			return fmt.Errorf("%w: device %s not admitted to %s", store.ErrNotFound, device, g)
		}
		if d, err = store.ParseDeployment(string(v)); err != nil {
			return err
		}
		next, counted := reportTransition(d, state, retries)
		if next == d {
			return nil
		}
		if counted != "" {
			if err := incr(counts, counted+strconv.Itoa(d.Phase)); err != nil {
				return err
			}
			if err := appendChange(tx, g, store.Change{Device: device, Phase: d.Phase, State: next.State}); err != nil {
				return err
			}
		}
		d, changed = next, true
		return devices.Put([]byte(device), []byte(store.EncodeDeployment(d)))
	})
	return d, changed, err
}

// reportTransition is Report's rule: the next deployment, and the counter
// ("s", "f" or "t") a final state increments.
func reportTransition(d store.Deployment, state string, retries int) (store.Deployment, string) {
	switch {
	case store.FinalState(d.State):
		return d, ""
	case state == store.StateTimeout:
		d.State = state
		return d, "t"
	case state == store.StateFailure && d.Attempts < retries:
		d.State, d.Attempts = store.StateRetrying, d.Attempts+1
		return d, ""
	case state == store.StateSuccess:
		d.State = state
		return d, "s"
	case state == store.StateFailure:
		d.State = state
		return d, "f"
	}
	d.State = state
	return d, ""
}

// Deployment returns a device's deployment.
func (s *Store) Deployment(ctx context.Context, g store.GenerationRef, device string) (store.Deployment, error) {
	if err := store.ValidateGeneration(g, &device); err != nil {
		return store.Deployment{}, err
	}
	var d store.Deployment
	err := s.view(ctx, "deployment "+g.String(), func(tx *bolt.Tx) error {
		_, devices, err := generation(tx, g, false)
		if err != nil {
			return err
		}
		var v []byte
		if devices != nil {
			v = devices.Get([]byte(device))
		}
		if v == nil {
			return fmt.Errorf("%w: device %s not admitted to %s", store.ErrNotFound, device, g)
		}
		d, err = store.ParseDeployment(string(v))
		return err
	})
	return d, err
}

// Changes returns a range of the generation's change list.
func (s *Store) Changes(ctx context.Context, g store.GenerationRef, from int64, max int) ([]store.Change, error) {
	if err := store.ValidateChanges(g, from, max); err != nil {
		return nil, err
	}
	var out []store.Change
	err := s.view(ctx, "changes "+g.String(), func(tx *bolt.Tx) error {
		log, err := changeLog(tx, g, false)
		if err != nil || log == nil {
			return err
		}
		c := log.Cursor()
		for k, v := c.Seek(u64(uint64(from))); k != nil && len(out) < max; k, v = c.Next() {
			ch, err := store.ParseChange(string(v))
			if err != nil {
				return fmt.Errorf("embedded: changes of %s: %w", g, err)
			}
			out = append(out, ch)
		}
		return nil
	})
	return out, err
}

// Progress returns a generation's counts per phase.
func (s *Store) Progress(ctx context.Context, g store.GenerationRef) (store.Progress, error) {
	if err := store.ValidateGeneration(g, nil); err != nil {
		return store.Progress{}, err
	}
	var p store.Progress
	err := s.view(ctx, "progress "+g.String(), func(tx *bolt.Tx) error {
		counts, _, err := generation(tx, g, false)
		if err != nil || counts == nil {
			return err
		}
		p.Aborted = string(counts.Get(kAborted))
		for phase := range store.MaxPhases {
			i := strconv.Itoa(phase)
			c := store.PhaseCounts{
				Admitted:  int64(counter(counts, "a"+i)),
				Succeeded: int64(counter(counts, "s"+i)),
				Failed:    int64(counter(counts, "f"+i)),
				TimedOut:  int64(counter(counts, "t"+i)),
			}
			if ms := counter(counts, "c"+i); ms > 0 {
				c.Completed = time.UnixMilli(int64(ms))
			}
			if c != (store.PhaseCounts{}) {
				for len(p.Phases) < phase {
					p.Phases = append(p.Phases, store.PhaseCounts{})
				}
				p.Phases = append(p.Phases, c)
			}
		}
		return nil
	})
	return p, err
}

// Abort marks a generation aborted.
func (s *Store) Abort(ctx context.Context, g store.GenerationRef, reason string) (bool, error) {
	if err := store.ValidateAbort(g, reason); err != nil {
		return false, err
	}
	if reason == "" {
		reason = "aborted"
	}
	first := false
	err := s.update(ctx, "abort "+g.String(), func(tx *bolt.Tx) error {
		counts, _, err := generation(tx, g, true)
		if err != nil || counts.Get(kAborted) != nil {
			return err
		}
		first = true
		return counts.Put(kAborted, []byte(reason))
	})
	return first, err
}

// CompletePhase records when a phase completed, first writer wins.
func (s *Store) CompletePhase(ctx context.Context, g store.GenerationRef, phase int, at time.Time) (time.Time, bool, error) {
	if err := store.ValidatePhase(g, phase, at); err != nil {
		return time.Time{}, false, err
	}
	var recorded time.Time
	first := false
	err := s.update(ctx, "complete phase of "+g.String(), func(tx *bolt.Tx) error {
		counts, _, err := generation(tx, g, true)
		if err != nil {
			return err
		}
		key := "c" + strconv.Itoa(phase)
		if ms := counter(counts, key); ms > 0 {
			recorded = time.UnixMilli(int64(ms))
			return nil
		}
		first, recorded = true, time.UnixMilli(at.UnixMilli())
		return counts.Put([]byte(key), u64(uint64(at.UnixMilli())))
	})
	return recorded, first, err
}
