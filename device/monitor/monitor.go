package monitor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/gitfleet/gitfleet/device/atomicfile"
)

// EventKind says what happened to an alert or a check.
type EventKind string

// The event kinds.
const (
	Raised     EventKind = "raised"      // a condition appeared or an occurrence happened
	Cleared    EventKind = "cleared"     // a condition recovered
	Expired    EventKind = "expired"     // an open alert reached its check's expiry
	Flapping   EventKind = "flapping"    // notifications suppressed until the alert is stable
	CheckError EventKind = "check_error" // the probe cannot run; not an alert
	CheckOK    EventKind = "check_ok"    // the probe runs again after a check error
)

// Event is one notification for the controller.
type Event struct {
	Seq      uint64    `json:"seq"` // increasing per device; an idempotency key
	Check    string    `json:"check"`
	Key      string    `json:"key,omitempty"` // which condition within the check
	Kind     EventKind `json:"kind"`
	Severity Severity  `json:"severity"`
	Evidence string    `json:"evidence,omitempty"`
	Time     time.Time `json:"time"`
}

// Options configure a Monitor. The zero value of each field is its default.
type Options struct {
	// StatePath is the file alert states, baselines and the queue are kept
	// in. Empty keeps them in memory only.
	StatePath string
	// Root is prefixed to /proc, /sys, /etc and watched paths; default "/".
	Root string
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Exec starts "@command" log sources; default runs them with /bin/sh -c.
	Exec Exec
	// QueueSize bounds the events waiting for delivery; default 1000.
	QueueSize int
	// FlapThreshold state changes within FlapWindow mark an alert as
	// flapping; defaults 5 and 30 minutes.
	FlapThreshold int
	FlapWindow    time.Duration
	// MaxKeys bounds the alerts one check may hold; default 256.
	MaxKeys int
	Logger  *slog.Logger
}

// Monitor runs checks and keeps their alert state. Its methods are safe for
// concurrent use.
type Monitor struct {
	opts Options

	mu     sync.Mutex
	checks map[string]*running
	st     persisted
	dirty  bool
	runCtx context.Context
	stop   context.CancelFunc
	// queued receives a value (coalesced) when an event is queued; wake
	// when the checks change, so Run does not sleep through new ones.
	queued chan struct{}
	wake   chan struct{}
}

type running struct {
	check Check
	probe prober
	next  time.Time
}

// persisted is the state file's content.
type persisted struct {
	Version int                    `json:"version"`
	Seq     uint64                 `json:"seq"`
	Checks  map[string]*checkState `json:"checks"`
	Queue   []Event                `json:"queue"`
	Dropped uint64                 `json:"dropped"`
	// Expected digests announced by Expect, kept so that a restart between
	// an update and the next scan does not lose them.
	Expected map[string]string `json:"expected,omitempty"`
}

type checkState struct {
	Alerts    map[string]*alertState `json:"alerts,omitempty"`
	Baseline  map[string]string      `json:"baseline,omitempty"`
	LastError string                 `json:"last_error,omitempty"`
	// Fingerprint of the probe settings the baseline belongs to: a changed
	// probe starts a new baseline.
	Fingerprint string `json:"fingerprint"`
}

type alertState struct {
	Level    bool        `json:"level"`
	Open     bool        `json:"open"`
	Quiet    bool        `json:"quiet,omitempty"` // expired while the condition persists
	Since    time.Time   `json:"since"`
	Evidence string      `json:"evidence,omitempty"`
	Notified bool        `json:"notified"` // the state last notified was open
	Changes  []time.Time `json:"changes,omitempty"`
	Flapping bool        `json:"flapping,omitempty"`
	Ident    string      `json:"ident,omitempty"` // observation.ident when raised
}

// New returns a Monitor, loading the state file when there is one.
func New(opts Options) (*Monitor, error) {
	if opts.Root == "" {
		opts.Root = "/"
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Exec == nil {
		opts.Exec = ShellExec{}
	}
	if opts.QueueSize <= 0 {
		opts.QueueSize = 1000
	}
	if opts.FlapThreshold <= 0 {
		opts.FlapThreshold = 5
	}
	if opts.FlapWindow <= 0 {
		opts.FlapWindow = 30 * time.Minute
	}
	if opts.MaxKeys <= 0 {
		opts.MaxKeys = 256
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	m := &Monitor{opts: opts, checks: map[string]*running{}, st: persisted{Version: 1, Checks: map[string]*checkState{}},
		queued: make(chan struct{}, 1), wake: make(chan struct{}, 1)}
	m.runCtx, m.stop = context.WithCancel(context.Background())
	if opts.StatePath != "" {
		b, err := os.ReadFile(opts.StatePath)
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			return nil, fmt.Errorf("monitor: read state: %w", err)
		default:
			var st persisted
			if err := json.Unmarshal(b, &st); err != nil || st.Version != 1 {
				// A damaged state file costs the baselines, not the agent.
				opts.Logger.Warn("monitor state unreadable, starting afresh", "path", opts.StatePath, "err", err)
			} else {
				if st.Checks == nil {
					st.Checks = map[string]*checkState{}
				}
				m.st = st
			}
		}
	}
	return m, nil
}

// Close stops the commands of "@command" checks.
func (m *Monitor) Close() error {
	m.stop()
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, r := range m.checks {
		if c, ok := r.probe.(interface{ close() }); ok {
			c.close()
		}
	}
	return nil
}

// SetChecks replaces the set of checks. A check whose probe settings are
// unchanged keeps its alerts and baseline; state of removed checks is
// dropped. Invalid checks are refused as a whole and nothing changes.
func (m *Monitor) SetChecks(checks []Check) error {
	seen := map[string]bool{}
	for i := range checks {
		if err := checks[i].Validate(); err != nil {
			return err
		}
		if seen[checks[i].Name] {
			return fmt.Errorf("%w %q: the name is used twice", ErrInvalidCheck, checks[i].Name)
		}
		seen[checks[i].Name] = true
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.opts.Now()
	old := m.checks
	m.checks = map[string]*running{}
	for _, c := range checks {
		fp := fingerprint(c)
		if r, ok := old[c.Name]; ok && fingerprint(r.check) == fp {
			r.check = c
			m.checks[c.Name] = r
			delete(old, c.Name)
			continue
		}
		cs := m.st.Checks[c.Name]
		if cs == nil || cs.Fingerprint != fp {
			if cs != nil {
				m.retireLocked(c.Name, cs, c.severity(), "the check's probe settings changed", now)
			}
			cs = &checkState{Fingerprint: fp}
			m.st.Checks[c.Name] = cs
			m.dirty = true
		}
		m.checks[c.Name] = &running{check: c, probe: newProbe(c), next: now}
	}
	for _, r := range old {
		if c, ok := r.probe.(interface{ close() }); ok {
			c.close()
		}
	}
	for name := range m.st.Checks {
		if !seen[name] {
			sev := Error
			if r, ok := old[name]; ok {
				sev = r.check.severity()
			}
			m.retireLocked(name, m.st.Checks[name], sev, "the check was removed", now)
			delete(m.st.Checks, name)
			m.dirty = true
		}
	}
	signal(m.wake)
	return m.saveLocked()
}

// retireLocked clears, for the server, the alerts of a check whose state
// is dropped, so none stays open there forever.
func (m *Monitor) retireLocked(name string, cs *checkState, sev Severity, why string, now time.Time) {
	keys := make([]string, 0, len(cs.Alerts))
	for k, a := range cs.Alerts {
		if a.Notified {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		m.emitLocked(Event{Check: name, Key: k, Kind: Cleared, Severity: sev, Evidence: why, Time: now})
	}
}

func fingerprint(c Check) string {
	c.Name, c.Severity, c.Expiry, c.Interval = "", "", 0, 0
	b, _ := json.Marshal(c)
	return string(b)
}

// Expect announces the digests ("sha256:HEX" or bare hex) a new image brings
// for watched files: the next fileChange scan takes a file whose digest is
// the expected one as its new baseline, without an alert. The digests are
// saved with the state before Expect returns, so a restart into the new
// image keeps them.
func (m *Monitor) Expect(digests map[string]string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.st.Expected = map[string]string{}
	for p, d := range digests {
		m.st.Expected[p] = trimDigest(d)
	}
	m.dirty = true
	return m.saveLocked()
}

// Step runs every check that is due and returns how long until the next one
// is. Tests drive a Monitor with Step and an injected clock; Run calls it in
// a loop.
func (m *Monitor) Step(ctx context.Context) (time.Duration, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.opts.Now()
	names := make([]string, 0, len(m.checks))
	for n := range m.checks {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		r := m.checks[n]
		if now.Before(r.next) {
			continue
		}
		interval := r.check.Interval
		if interval == 0 {
			interval = r.probe.interval()
		}
		r.next = now.Add(interval)
		m.runLocked(ctx, r, now)
	}
	m.tickLocked(now)
	wait := time.Hour
	for _, r := range m.checks {
		if d := r.next.Sub(now); d < wait {
			wait = d
		}
	}
	wait = max(wait, 0)
	return wait, m.saveLocked()
}

// Run calls Step until ctx ends. SetChecks wakes it, so new checks run at
// once rather than after the wait computed for the old ones.
func (m *Monitor) Run(ctx context.Context) error {
	for {
		wait, err := m.Step(ctx)
		if err != nil {
			m.opts.Logger.Warn("monitor state not saved", "err", err)
			wait = min(max(wait, time.Second), time.Minute)
		}
		t := time.NewTimer(max(wait, time.Second))
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-m.wake:
			t.Stop()
		case <-t.C:
		}
	}
}

func (m *Monitor) runLocked(ctx context.Context, r *running, now time.Time) {
	cs := m.st.Checks[r.check.Name]
	if cs.Baseline == nil {
		cs.Baseline = map[string]string{}
	}
	env := &scanEnv{m: m, root: m.opts.Root, now: now, ctx: m.runCtx}
	obs, err := r.probe.scan(ctx, env, cs.Baseline)
	if env.baselineChanged {
		m.dirty = true
	}
	if err != nil {
		if msg := err.Error(); msg != cs.LastError {
			cs.LastError = msg
			m.emitLocked(Event{Check: r.check.Name, Kind: CheckError, Severity: r.check.severity(), Evidence: msg, Time: now})
		}
		if obs == nil {
			return
		}
	} else if cs.LastError != "" {
		cs.LastError = ""
		m.emitLocked(Event{Check: r.check.Name, Kind: CheckOK, Severity: r.check.severity(), Time: now})
	}
	// A scan that failed in part (one unreadable file) may raise what it saw
	// but clears nothing: what it did not see is unknown, not recovered.
	m.observeLocked(r.check, cs, obs, err == nil, now)
}

// observation is what a probe saw: a condition (level) or an occurrence.
type observation struct {
	key      string
	evidence string
	event    bool
	// ident names the condition itself (a file's new digest): a
	// condition that expired while it persisted is raised again when its
	// ident changes. Empty: it stays quiet until it recovers.
	ident string
}

func (m *Monitor) observeLocked(c Check, cs *checkState, obs []observation, complete bool, now time.Time) {
	if cs.Alerts == nil {
		cs.Alerts = map[string]*alertState{}
	}
	present := map[string]bool{}
	for _, o := range obs {
		present[o.key] = true
		a := cs.Alerts[o.key]
		if a == nil {
			if len(cs.Alerts) >= m.opts.MaxKeys {
				continue // bounded: the check already holds MaxKeys alerts
			}
			a = &alertState{}
			cs.Alerts[o.key] = a
		}
		a.Level = !o.event
		if a.Open || (a.Quiet && a.Level && (o.ident == "" || o.ident == a.Ident)) {
			continue
		}
		a.Quiet = false
		a.Since, a.Evidence, a.Ident = now, o.evidence, o.ident
		m.transitionLocked(c, o.key, a, true, now)
	}
	for key, a := range cs.Alerts {
		if !a.Level || present[key] || !complete {
			continue
		}
		if a.Quiet {
			a.Quiet = false
			m.dirty = true
		}
		if a.Open {
			a.Evidence = "recovered"
			m.transitionLocked(c, key, a, false, now)
		}
	}
}

func (m *Monitor) transitionLocked(c Check, key string, a *alertState, open bool, now time.Time) {
	m.dirty = true
	a.Open = open
	a.Changes = append(a.Changes, now)
	a.Changes = recent(a.Changes, now, m.opts.FlapWindow)
	if !a.Flapping && len(a.Changes) >= m.opts.FlapThreshold {
		a.Flapping = true
		m.emitLocked(Event{Check: c.Name, Key: key, Kind: Flapping, Severity: c.severity(), Time: now,
			Evidence: fmt.Sprintf("%d state changes within %s; notifications held until stable", len(a.Changes), m.opts.FlapWindow)})
		return
	}
	if a.Flapping {
		return
	}
	m.notifyLocked(c, key, a, Cleared, now)
}

// notifyLocked sends the alert's state when it differs from the last one
// sent.
func (m *Monitor) notifyLocked(c Check, key string, a *alertState, closedAs EventKind, now time.Time) {
	if a.Open == a.Notified {
		return
	}
	a.Notified = a.Open
	kind := closedAs
	ev := a.Evidence
	if a.Open {
		kind = Raised
	}
	m.emitLocked(Event{Check: c.Name, Key: key, Kind: kind, Severity: c.severity(), Evidence: ev, Time: now})
}

// tickLocked applies expiry and ends flapping.
func (m *Monitor) tickLocked(now time.Time) {
	for name, r := range m.checks {
		cs := m.st.Checks[name]
		if cs == nil {
			continue
		}
		for key, a := range cs.Alerts {
			if a.Flapping && (len(a.Changes) == 0 || now.Sub(a.Changes[len(a.Changes)-1]) >= m.opts.FlapWindow) {
				a.Flapping = false
				a.Changes = nil
				m.dirty = true
				m.notifyLocked(r.check, key, a, Cleared, now)
			}
			if a.Open && !a.Flapping && now.Sub(a.Since) >= r.check.expiry() {
				a.Open = false
				a.Quiet = a.Level
				a.Evidence = "expired after " + r.check.expiry().String()
				m.dirty = true
				m.notifyLocked(r.check, key, a, Expired, now)
			}
			if !a.Open && !a.Quiet && !a.Flapping && !a.Notified && len(recent(a.Changes, now, m.opts.FlapWindow)) == 0 {
				delete(cs.Alerts, key)
				m.dirty = true
			}
		}
	}
}

func recent(ts []time.Time, now time.Time, window time.Duration) []time.Time {
	i := 0
	for i < len(ts) && now.Sub(ts[i]) >= window {
		i++
	}
	return ts[i:]
}

func (m *Monitor) emitLocked(e Event) {
	m.st.Seq++
	e.Seq = m.st.Seq
	if len(m.st.Queue) >= m.opts.QueueSize {
		n := len(m.st.Queue) - m.opts.QueueSize + 1
		m.st.Queue = append(m.st.Queue[:0], m.st.Queue[n:]...)
		m.st.Dropped += uint64(n)
	}
	m.st.Queue = append(m.st.Queue, e)
	m.dirty = true
	signal(m.queued)
	m.opts.Logger.Info("monitor event", "check", e.Check, "key", e.Key, "kind", string(e.Kind), "evidence", e.Evidence)
}

// Pending returns a copy of the queued events and how many were dropped
// because the queue was full.
func (m *Monitor) Pending() ([]Event, uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]Event(nil), m.st.Queue...), m.st.Dropped
}

// Drain hands queued events to send in batches of at most batch (default
// 100), oldest first, removing each batch send accepts. It stops at the first
// error, which it returns; the events stay queued for the next Drain.
func (m *Monitor) Drain(ctx context.Context, batch int, send func(context.Context, []Event) error) error {
	if batch <= 0 {
		batch = 100
	}
	for {
		m.mu.Lock()
		n := min(batch, len(m.st.Queue))
		if n == 0 {
			m.mu.Unlock()
			return nil
		}
		out := append([]Event(nil), m.st.Queue[:n]...)
		m.mu.Unlock()
		if err := send(ctx, out); err != nil {
			return err
		}
		m.mu.Lock()
		// Events emitted meanwhile were appended; drop what was sent, unless
		// the queue overflowed and dropped some of them already.
		i := 0
		for i < len(m.st.Queue) && m.st.Queue[i].Seq <= out[len(out)-1].Seq {
			i++
		}
		m.st.Queue = append(m.st.Queue[:0], m.st.Queue[i:]...)
		m.dirty = true
		err := m.saveLocked()
		m.mu.Unlock()
		if err != nil {
			return err
		}
	}
}

func (m *Monitor) saveLocked() error {
	if !m.dirty || m.opts.StatePath == "" {
		m.dirty = false
		return nil
	}
	b, err := json.Marshal(&m.st)
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(m.opts.StatePath, b, 0o600); err != nil {
		return fmt.Errorf("monitor: save state: %w", err)
	}
	m.dirty = false
	return nil
}

// scanEnv is what a probe's scan sees of the Monitor.
type scanEnv struct {
	m               *Monitor
	root            string
	now             time.Time
	ctx             context.Context // lives as long as the Monitor
	baselineChanged bool
}

// prober is one probe: its default interval and a scan that reads the
// system and returns observations. base is the probe's persisted baseline,
// which the scan may change (setting env.baselineChanged).
type prober interface {
	interval() time.Duration
	scan(ctx context.Context, env *scanEnv, base map[string]string) ([]observation, error)
}
