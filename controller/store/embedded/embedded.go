// Package embedded is the store for a single controller with no server to
// run: one bbolt file in the controller's --data-dir.
//
// Every store method is one bbolt transaction, and bbolt runs one write
// transaction at a time, so each transition of the store model (compare-and-
// set of the live commit, applying a commit's rollouts, appending a
// deduplicated event) is atomic and happens once. Only one process can have
// the file open: a second controller pointed at the same directory fails
// after Options.LockTimeout with ErrLocked instead of waiting forever.
//
// Buckets (keys → values; JSON unless noted):
//
//	meta        live → CommitRecord; refused.last → SHA;
//	            ro.applied → commit SHA; ro.changes → []RolloutChange
//	refused     SHA → Refusal                  (last store.MaxRefusalsKept)
//	refused.seq sequence (8-byte big endian) → SHA, oldest first
//	rollouts    name → rollout record
//	events      sequence (8-byte big endian) → event; the ID is the decimal sequence
//	events.d    dedupe key → sequence + expiry (2×8 bytes)
//	deliveries  delivery key → expiry (unix ns, 8 bytes)
//	deliv.exp   expiry + delivery key → nothing (expiry index for sweeping)
//	secrets     name → secret bytes
//	dalerts…    devices' alert records (see devicealerts.go)
//	cfgstatus   device → its last configuration report (see configstatus.go)
//	rconn, rsess…  remote connections and sessions (see remote.go)
package embedded

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gitfleet/gitfleet/controller/store"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// FileName is the store's file inside a controller's data directory.
const FileName = "gitfleet.db"

// ErrLocked means another process (another controller) has the file open.
var ErrLocked = errors.New("embedded: store file is in use by another process")

// Options configure Open. The zero value is ready to use.
type Options struct {
	// LockTimeout bounds the wait for the file lock. Default 2s.
	LockTimeout time.Duration
	// Bounds: the event log, event deduplication (while the event is
	// retained), pending and conflict records.
	store.Bounds
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// NoSync skips fsync after each write: faster, and a power cut can lose
	// or corrupt the file. For tests only.
	NoSync bool
}

// Store is the embedded store. Create it with Open.
type Store struct {
	db   *bolt.DB
	opts Options
	bus  *bus // remote sessions' message bus (remotebus.go)
}

var _ store.Store = (*Store)(nil)

var (
	bMeta       = []byte("meta")
	bRefused    = []byte("refused")
	bRefusedSeq = []byte("refused.seq")
	bRollouts   = []byte("rollouts")
	bEvents     = []byte("events")
	bEventDedup = []byte("events.d")
	bDeliveries = []byte("deliveries")
	bDelivExp   = []byte("deliv.exp")
	bSecrets    = []byte("secrets")

	kLive        = []byte("live")
	kRefusedLast = []byte("refused.last")
	kRollApplied = []byte("ro.applied")
	kRollChanges = []byte("ro.changes")
	allBuckets   = [][]byte{bMeta, bRefused, bRefusedSeq, bRollouts, bEvents, bEventDedup, bDeliveries, bDelivExp, bSecrets,
		bDevAlerts, bDevAlertSeq, bDevAlertList, bConfigStatus,
		bRConn, bRSess, bRSessIn, bRSessSeq, bRSessOpen}
	sweepPerWrite = 64 // expired deliveries removed per FirstDelivery
)

// Open opens (creating if needed) the store file at path, typically
// filepath.Join(dataDir, FileName). It fails with ErrLocked if another
// process holds the file for longer than opts.LockTimeout.
func Open(path string, opts Options) (*Store, error) {
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = 2 * time.Second
	}
	opts.Bounds = opts.Bounds.WithDefaults()
	if opts.Now == nil {
		opts.Now = time.Now
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: opts.LockTimeout, NoSync: opts.NoSync})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("%w: %s (waited %v; is another gitfleet controller using this data directory?)", ErrLocked, path, opts.LockTimeout)
	}
	if err != nil {
		return nil, fmt.Errorf("embedded: open %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("embedded: init %s: %w", path, err)
	}
	return &Store{db: db, opts: opts, bus: newBus()}, nil
}

// Close closes the file and releases its lock, and ends every
// Subscription.
func (s *Store) Close() error {
	s.bus.close()
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("embedded: close: %w", err)
	}
	return nil
}

// Ping checks that the file is open.
func (s *Store) Ping(ctx context.Context) error {
	return s.view(ctx, "ping", func(*bolt.Tx) error { return nil })
}

func (s *Store) view(ctx context.Context, what string, fn func(*bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("embedded: %s: %w", what, err)
	}
	if err := s.db.View(fn); err != nil {
		return wrap(what, err)
	}
	return nil
}

func (s *Store) update(ctx context.Context, what string, fn func(*bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("embedded: %s: %w", what, err)
	}
	if err := s.db.Update(fn); err != nil {
		return wrap(what, err)
	}
	return nil
}

// wrap prefixes bbolt errors; store sentinel errors already say "store:".
func wrap(what string, err error) error {
	if errors.Is(err, store.ErrInvalid) || errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrNotLive) {
		return err
	}
	return fmt.Errorf("embedded: %s: %w", what, err)
}

// Live returns the live commit.
func (s *Store) Live(ctx context.Context) (store.CommitRecord, error) {
	var rec store.CommitRecord
	err := s.view(ctx, "live", func(tx *bolt.Tx) error {
		v := tx.Bucket(bMeta).Get(kLive)
		if v == nil {
			return fmt.Errorf("%w: no live commit", store.ErrNotFound)
		}
		return json.Unmarshal(v, &rec)
	})
	return rec, err
}

// SetLive compare-and-sets the live commit by its SHA.
func (s *Store) SetLive(ctx context.Context, next store.CommitRecord, prevSHA string) (bool, error) {
	return store.SetLiveBySHA(ctx, s, next, prevSHA)
}

// MoveLive compare-and-sets the live commit by its sequence number.
func (s *Store) MoveLive(ctx context.Context, next store.CommitRecord, prevSeq int64) (store.CommitRecord, bool, error) {
	if err := next.Validate(); err != nil {
		return store.CommitRecord{}, false, err
	}
	next.Seq = prevSeq + 1
	enc, err := store.EncodeLimited("commit record", next)
	if err != nil {
		return store.CommitRecord{}, false, err
	}
	var live store.CommitRecord
	err = s.update(ctx, "move live", func(tx *bolt.Tx) error {
		meta := tx.Bucket(bMeta)
		live = store.CommitRecord{}
		if v := meta.Get(kLive); v != nil {
			if err := json.Unmarshal(v, &live); err != nil {
				return err
			}
		}
		if live.Seq != prevSeq || live.SHA == next.SHA {
			return nil
		}
		live = next
		return meta.Put(kLive, enc)
	})
	if err != nil {
		return store.CommitRecord{}, false, err
	}
	return live, live.SHA == next.SHA, nil
}

// RecordRefused records a refused commit once per SHA.
func (s *Store) RecordRefused(ctx context.Context, r store.Refusal) (bool, error) {
	if err := r.Validate(); err != nil {
		return false, err
	}
	enc, err := store.EncodeLimited("refusal", r)
	if err != nil {
		return false, err
	}
	recorded := false
	err = s.update(ctx, "record refused", func(tx *bolt.Tx) error {
		refused, order := tx.Bucket(bRefused), tx.Bucket(bRefusedSeq)
		key := []byte(r.SHA)
		if refused.Get(key) != nil {
			return nil
		}
		if err := refused.Put(key, enc); err != nil {
			return err
		}
		seq, err := order.NextSequence()
		if err != nil {
			return err
		}
		if err := order.Put(u64(seq), key); err != nil {
			return err
		}
		if err := tx.Bucket(bMeta).Put(kRefusedLast, key); err != nil {
			return err
		}
		recorded = true
		// Forget the oldest beyond the bound.
		if n := order.Stats().KeyN; n > store.MaxRefusalsKept {
			c := order.Cursor()
			for k, v := c.First(); k != nil && n > store.MaxRefusalsKept; k, v = c.First() {
				if err := refused.Delete(v); err != nil {
					return err
				}
				if err := c.Delete(); err != nil {
					return err
				}
				n--
			}
		}
		return nil
	})
	return recorded, err
}

// LastRefused returns the last refused commit.
func (s *Store) LastRefused(ctx context.Context) (store.Refusal, error) {
	var r store.Refusal
	err := s.view(ctx, "last refused", func(tx *bolt.Tx) error {
		sha := tx.Bucket(bMeta).Get(kRefusedLast)
		if sha == nil {
			return fmt.Errorf("%w: no refused commit", store.ErrNotFound)
		}
		v := tx.Bucket(bRefused).Get(sha)
		if v == nil {
			return fmt.Errorf("%w: refused commit %s forgotten", store.ErrNotFound, sha)
		}
		return json.Unmarshal(v, &r)
	})
	return r, err
}

// rollout is a rollout record as stored; Settings are kept as bytes (base64
// in JSON) so they round-trip byte for byte.
type rollout struct {
	Name        string    `json:"n"`
	Artifact    string    `json:"a"`
	Settings    []byte    `json:"s,omitempty"`
	Generation  int64     `json:"g"`
	StartCommit string    `json:"gc"`
	Started     time.Time `json:"t0"`
	Commit      string    `json:"c"`
	Updated     time.Time `json:"t"`
	Stopped     bool      `json:"x,omitempty"`
}

func (r rollout) record() store.RolloutRecord {
	rec := store.RolloutRecord{
		Name: r.Name, Artifact: r.Artifact,
		Generation: r.Generation, StartCommit: r.StartCommit, Started: r.Started,
		Commit: r.Commit, Updated: r.Updated, Stopped: r.Stopped,
	}
	if len(r.Settings) > 0 {
		rec.Settings = json.RawMessage(r.Settings)
	}
	return rec
}

// PutRollouts applies the rollouts of the live commit in one transaction.
func (s *Store) PutRollouts(ctx context.Context, commitSHA string, rollouts []store.RolloutRecord) ([]store.RolloutChange, error) {
	if err := store.ValidateRollouts(commitSHA, rollouts); err != nil {
		return nil, err
	}
	now := s.opts.Now()
	var changes []store.RolloutChange
	err := s.update(ctx, "put rollouts", func(tx *bolt.Tx) error {
		meta, bucket := tx.Bucket(bMeta), tx.Bucket(bRollouts)
		var live store.CommitRecord
		if v := meta.Get(kLive); v != nil {
			if err := json.Unmarshal(v, &live); err != nil {
				return err
			}
		}
		if live.SHA != commitSHA {
			return fmt.Errorf("%w: %s (live is %q)", store.ErrNotLive, commitSHA, live.SHA)
		}
		if string(meta.Get(kRollApplied)) == commitSHA {
			return json.Unmarshal(meta.Get(kRollChanges), &changes)
		}
		declared := make(map[string]bool, len(rollouts))
		for _, in := range rollouts {
			declared[in.Name] = true
			var r rollout
			old := bucket.Get([]byte(in.Name))
			if old != nil {
				if err := json.Unmarshal(old, &r); err != nil {
					return fmt.Errorf("rollout %q: %w", in.Name, err)
				}
			}
			var ch store.RolloutChange
			switch {
			case old == nil || r.Stopped:
				r = rollout{Name: in.Name, Generation: r.Generation + 1}
				ch = store.RolloutChange{Kind: store.RolloutStarted}
			case r.Artifact != in.Artifact:
				ch = store.RolloutChange{Kind: store.RolloutArtifact, PrevArtifact: r.Artifact}
				r.Generation++
			case string(r.Settings) != string(in.Settings):
				ch = store.RolloutChange{Kind: store.RolloutSettings}
			default:
				continue
			}
			if ch.Kind != store.RolloutSettings {
				r.StartCommit, r.Started = commitSHA, now
			}
			r.Artifact, r.Settings = in.Artifact, []byte(in.Settings)
			r.Commit, r.Updated = commitSHA, now
			ch.Name, ch.Generation, ch.Artifact = r.Name, r.Generation, r.Artifact
			if err := putJSON(bucket, []byte(r.Name), r); err != nil {
				return err
			}
			changes = append(changes, ch)
		}
		// Stop what is no longer declared. bbolt forbids writes during
		// ForEach, so collect first.
		var stopped []rollout
		err := bucket.ForEach(func(k, v []byte) error {
			if declared[string(k)] {
				return nil
			}
			var r rollout
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("rollout %q: %w", k, err)
			}
			if !r.Stopped {
				stopped = append(stopped, r)
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, r := range stopped {
			r.Stopped, r.Commit, r.Updated = true, commitSHA, now
			if err := putJSON(bucket, []byte(r.Name), r); err != nil {
				return err
			}
			changes = append(changes, store.RolloutChange{Name: r.Name, Kind: store.RolloutStopped, Generation: r.Generation, Artifact: r.Artifact})
		}
		slices.SortFunc(changes, func(a, b store.RolloutChange) int { return strings.Compare(a.Name, b.Name) })
		if err := meta.Put(kRollApplied, []byte(commitSHA)); err != nil {
			return err
		}
		return putJSON(meta, kRollChanges, changes)
	})
	if err != nil {
		return nil, err
	}
	return changes, nil
}

// Rollouts returns every rollout, sorted by name.
func (s *Store) Rollouts(ctx context.Context) ([]store.RolloutRecord, error) {
	var out []store.RolloutRecord
	err := s.view(ctx, "rollouts", func(tx *bolt.Tx) error {
		return tx.Bucket(bRollouts).ForEach(func(k, v []byte) error {
			var r rollout
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("rollout %q: %w", k, err)
			}
			out = append(out, r.record())
			return nil
		})
	})
	return out, err // bbolt iterates keys in byte order: sorted by name
}

// storedEvent is an event as stored, with its dedupe key so trimming can
// drop the dedupe entry with the event.
type storedEvent struct {
	store.Event
	Dedupe string `json:"d"`
}

// AppendEvent appends an event unless it is a duplicate.
func (s *Store) AppendEvent(ctx context.Context, e store.Event) (string, bool, error) {
	if err := e.Validate(); err != nil {
		return "", false, err
	}
	now := s.opts.Now()
	if e.Time.IsZero() {
		e.Time = now
	}
	e.ID = ""
	dk := e.DedupeKey()
	enc, err := store.EncodeLimited("event", storedEvent{Event: e, Dedupe: dk})
	if err != nil {
		return "", false, err
	}
	var id string
	added := false
	err = s.update(ctx, "append event", func(tx *bolt.Tx) error {
		events, dedupe := tx.Bucket(bEvents), tx.Bucket(bEventDedup)
		if v := dedupe.Get([]byte(dk)); len(v) == 16 {
			seq, exp := binary.BigEndian.Uint64(v[:8]), int64(binary.BigEndian.Uint64(v[8:]))
			if now.UnixNano() < exp && events.Get(v[:8]) != nil {
				id = strconv.FormatUint(seq, 10)
				return nil
			}
		}
		seq, err := events.NextSequence()
		if err != nil {
			return err
		}
		if err := events.Put(u64(seq), enc); err != nil {
			return err
		}
		v := append(u64(seq), u64(uint64(now.Add(s.opts.Dedupe).UnixNano()))...)
		if err := dedupe.Put([]byte(dk), v); err != nil {
			return err
		}
		id, added = strconv.FormatUint(seq, 10), true
		return s.trimEvents(tx.Bucket(bMeta), events, dedupe)
	})
	return id, added, err
}

var kEventCount = []byte("ev.count")

// trimEvents drops the oldest events beyond MaxEvents, with their dedupe
// entries. The count is kept in meta so trimming costs O(dropped).
func (s *Store) trimEvents(meta, events, dedupe *bolt.Bucket) error {
	n := uint64(0)
	if v := meta.Get(kEventCount); len(v) == 8 {
		n = binary.BigEndian.Uint64(v)
	}
	n++
	c := events.Cursor()
	for k, v := c.First(); k != nil && n > uint64(s.opts.MaxEvents); k, v = c.First() {
		var se storedEvent
		if err := json.Unmarshal(v, &se); err == nil {
			if d := dedupe.Get([]byte(se.Dedupe)); len(d) == 16 && string(d[:8]) == string(k) {
				if err := dedupe.Delete([]byte(se.Dedupe)); err != nil {
					return err
				}
			}
		}
		if err := c.Delete(); err != nil {
			return err
		}
		n--
	}
	return meta.Put(kEventCount, u64(n))
}

// Events returns events after afterID, oldest first.
func (s *Store) Events(ctx context.Context, afterID string, limit int) ([]store.Event, error) {
	limit, err := store.PageLimit(limit)
	if err != nil {
		return nil, err
	}
	var after uint64
	if afterID != "" {
		after, err = strconv.ParseUint(afterID, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%w: event ID %q", store.ErrInvalid, afterID)
		}
	}
	var out []store.Event
	err = s.view(ctx, "events", func(tx *bolt.Tx) error {
		c := tx.Bucket(bEvents).Cursor()
		for k, v := c.Seek(u64(after + 1)); k != nil && len(out) < limit; k, v = c.Next() {
			e, err := decodeEvent(k, v)
			if err != nil {
				return err
			}
			out = append(out, e)
		}
		return nil
	})
	return out, err
}

// RecentEvents returns the newest n events, oldest first.
func (s *Store) RecentEvents(ctx context.Context, n int) ([]store.Event, error) {
	n, err := store.PageLimit(n)
	if err != nil {
		return nil, err
	}
	var out []store.Event
	err = s.view(ctx, "recent events", func(tx *bolt.Tx) error {
		c := tx.Bucket(bEvents).Cursor()
		for k, v := c.Last(); k != nil && len(out) < n; k, v = c.Prev() {
			e, err := decodeEvent(k, v)
			if err != nil {
				return err
			}
			out = append(out, e)
		}
		return nil
	})
	slices.Reverse(out)
	return out, err
}

func decodeEvent(k, v []byte) (store.Event, error) {
	var se storedEvent
	if err := json.Unmarshal(v, &se); err != nil {
		return store.Event{}, fmt.Errorf("event %d: %w", binary.BigEndian.Uint64(k), err)
	}
	se.Event.ID = strconv.FormatUint(binary.BigEndian.Uint64(k), 10)
	return se.Event, nil
}

// FirstDelivery records a delivery ID for ttl and reports whether it is new.
func (s *Store) FirstDelivery(ctx context.Context, id string, ttl time.Duration) (bool, error) {
	if err := store.ValidateDelivery(id, ttl); err != nil {
		return false, err
	}
	key := []byte(store.DeliveryKey(id))
	first := false
	err := s.update(ctx, "first delivery", func(tx *bolt.Tx) error {
		deliveries, exp := tx.Bucket(bDeliveries), tx.Bucket(bDelivExp)
		now := s.opts.Now().UnixNano()
		// Sweep a few expired entries, oldest expiry first.
		c := exp.Cursor()
		for i, k := 0, []byte(nil); i < sweepPerWrite; i++ {
			k, _ = c.First()
			if k == nil || int64(binary.BigEndian.Uint64(k[:8])) > now {
				break
			}
			if v := deliveries.Get(k[8:]); v != nil && string(v) == string(k[:8]) {
				if err := deliveries.Delete(k[8:]); err != nil {
					return err
				}
			}
			if err := c.Delete(); err != nil {
				return err
			}
		}
		if v := deliveries.Get(key); len(v) == 8 {
			if int64(binary.BigEndian.Uint64(v)) > now {
				return nil
			}
			if err := exp.Delete(append(slices.Clone(v), key...)); err != nil {
				return err
			}
		}
		until := u64(uint64(now + int64(ttl)))
		if err := deliveries.Put(key, until); err != nil {
			return err
		}
		first = true
		return exp.Put(append(slices.Clone(until), key...), nil)
	})
	return first, err
}

// SharedSecret returns the named secret, creating it once.
func (s *Store) SharedSecret(ctx context.Context, name string, generate func() ([]byte, error)) ([]byte, error) {
	if err := store.ValidateSecretName(name); err != nil {
		return nil, err
	}
	var secret []byte
	err := s.view(ctx, "shared secret", func(tx *bolt.Tx) error {
		secret = slices.Clone(tx.Bucket(bSecrets).Get([]byte(name)))
		return nil
	})
	if err != nil || secret != nil {
		return secret, err
	}
	fresh, err := store.GenerateSecret(name, generate)
	if err != nil {
		return nil, err
	}
	err = s.update(ctx, "shared secret", func(tx *bolt.Tx) error {
		b := tx.Bucket(bSecrets)
		if v := b.Get([]byte(name)); v != nil {
			secret = slices.Clone(v)
			return nil
		}
		secret = fresh
		return b.Put([]byte(name), fresh)
	})
	return secret, err
}

func putJSON(b *bolt.Bucket, key []byte, v any) error {
	enc, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(key, enc)
}

func u64(n uint64) []byte { return binary.BigEndian.AppendUint64(nil, n) }
