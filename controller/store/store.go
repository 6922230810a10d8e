// Package store keeps the controller's shared state.
//
// # Model
//
// Git says what the fleet should be. The store remembers what the controllers
// made of it and what they must agree on: which commit is live, which commit
// was last refused and why, which generation each rollout is in, an event log
// for auditors and the dashboard, and a little coordination (webhook delivery
// IDs already seen, secrets every replica signs with).
//
// Several controller replicas may share one store, each following Git on its
// own. Nothing they do twice may break anything, so every write is either a
// compare-and-set or idempotent:
//
//   - The live commit moves only by [Commits.MoveLive], a compare-and-set on
//     the live pointer's sequence number ([CommitRecord.Seq], 1, 2, … for
//     every move, whatever the commit, so a commit that returns gets a new
//     one). The branch head is the desired state, forward or back: a
//     replica moves live to the head it fetched only when its fetch began
//     after it had read the sequence number it compares with (package
//     reconcile), so live follows the order in which the store saw the
//     heads, never Git ancestry, and a replica with a stale view loses the
//     race instead of bringing an older head back.
//     [Commits.SetLive] is the same compare-and-set keyed by the previous
//     SHA, for callers that know no sequence number.
//   - Rollout generations change only through [Generations.PutRollouts] for
//     the commit that is live, in one atomic transition keyed by that commit:
//     reconciling a commit twice (or from two replicas at once) increments
//     nothing twice, and a stale replica cannot apply an older commit.
//   - A refused commit, an event, a webhook delivery and a shared secret are
//     each recorded once, whoever records them first; the boolean results say
//     who that was, so side effects such as notifications happen once.
//
// Two implementations pass one conformance suite (storetest.Run): Redis
// (package redis; standalone or Redis Cluster, shared by replicas) and an
// embedded bbolt file (package embedded; one controller, no server).
//
// # Key layout (Redis)
//
// Every key starts with a prefix (default "gf") and carries a hash tag, so
// the keys one Lua script touches share a Redis Cluster slot. State that
// reconciling touches together lives under the {fleet} tag; it is small and
// written once per commit. Per-device and per-rollout-generation state, which
// device polls touch, is spread over many tags.
//
//	gf:{fleet}:live            hash   sha, seq (its Seq), rec (CommitRecord JSON)
//	gf:{fleet}:refused         hash   commit SHA → Refusal JSON (last 1,000)
//	gf:{fleet}:refused:order   list   refused SHAs, newest first (bounds the hash)
//	gf:{fleet}:refused:last    string SHA of the last refused commit
//	gf:{fleet}:ro              hash   rollout name → generation record JSON
//	gf:{fleet}:ro:applied      hash   c (commit last applied), ch (its changes JSON)
//	gf:{fleet}:ev              stream events, trimmed to the last MaxEvents
//	gf:{fleet}:ev:d:HASH       string event ID; dedupe of (commit, kind, subject), with TTL
//	gf:{fleet}:secret:NAME     string shared secret (created once, never expires)
//	gf:{wh:HASH}               string webhook delivery seen (SET NX PX ttl)
//
// Devices and rollout progress (issue 5; field names are short because a
// million device hashes must stay under 1 KiB each; keys marked "not yet
// used" are reserved):
//
//	gf:{d:ID}                  hash   i identity JSON, k pubkey fingerprint,
//	                                  s status (p pending, a accepted),
//	                                  v inventory JSON, f first seen and
//	                                  l last seen (unix ms),
//	                                  r current deployment (rollout:generation; not yet used);
//	                                  a pending one expires (PEXPIRE) PendingTTL after l
//	gf:{d:ID}:al               hash   the device's alert records (DeviceAlerts):
//	                                  "|seq" the last event Seq applied, and
//	                                  "CHECK|KEY" → record JSON (at most MaxAlertsPerDevice)
//	gf:{k:FINGERPRINT}         string device ID holding that key (not yet used)
//	gf:{fleet}:pending         zset   pending device IDs by last seen (at most MaxPending;
//	                                  entries older than PendingTTL swept with their hash)
//	gf:{fleet}:conflicts       zset   "ID KEY" by last seen (newest MaxConflicts, swept alike)
//	gf:{fleet}:conflicts:rec   hash   "ID KEY" → Conflict JSON
//	gf:{fleet}:alerts          zset   "ID|CHECK|KEY" by change time (unix ms),
//	                                  the newest MaxAlerts (the fleet-wide listing)
//	gf:{r:NAME:GEN}:n          hash   per phase i: a<i> admitted, s<i> succeeded,
//	                                  f<i> failed; x aborted (reason)
//	gf:{r:NAME:GEN}:dev        hash   device ID → "phase|state|attempts"
//	gf:{r:NAME:GEN}:al         hash   alert name → devices alerting (not yet used)
//
// Device configuration reports (ConfigStatuses), one small hash per Device
// manifest name, spread over the cluster like the device hashes:
//
//	gf:{c:NAME}                hash   d digest, s state, sc script, x exit code,
//	                                  o output, fd file digest, v via,
//	                                  r reported and t since (unix ns)
//
// A report is one script over that hash: it compares what was recorded,
// keeps t when d and s are unchanged (or moves it back to r, never after
// it), and writes every field. Reading many devices pipelines one HMGET per
// device, MaxPage devices per round trip (go-redis sends a cluster's share
// to each node at once).
//
// Admission into a phase is one script over gf:{r:NAME:GEN}:n and :dev (same
// tag): return the device's existing admission if it has one, otherwise
// admit it only if a<i> < limit and the generation is not aborted. A status
// report moves a device's state in :dev and counts a final state in :n in the
// same script, once. The device hash then records which deployment it is in.
//
// A device's alert records change in one script over gf:{d:ID}:al alone:
// the controller reads the "|seq" field and the records a batch of events
// touches, applies the events in Go (AlertEvent.Apply), and the script
// writes the results only if "|seq" is still what was read (otherwise the
// controller reads again). Whoever's write lands applied the events; a
// replica that lost the race finds them applied. gf:{fleet}:alerts (another
// slot) is updated in the same round trip as that write, on a best-effort
// basis (see package redis); readers skip entries whose record is gone.
//
// Remote sessions (RemoteSessions): presence is one hash per device,
// spread like the device hashes; sessions share the {rs} tag, so that one
// script can count a device's and an operator's open sessions and add one
// atomically (sessions are few: a slot holds them all):
//
//	gf:{rc:DEVICE}             hash   c connection ID, s since, e expires
//	                                  (unix ns); PEXPIRE at e
//	gf:{rs}:s:ID               hash   j record JSON as started, d device,
//	                                  o operator, l lease (unix ns), e end,
//	                                  r reason, td/fd bytes, it truncated,
//	                                  ri input recorded
//	gf:{rs}:in:ID              string recorded input (APPEND, capped)
//	gf:{rs}:dev:DEVICE         zset   sessions not ended, by lease (unix µs)
//	gf:{rs}:op:NAME            zset   the same per operator
//	gf:{rs}:all                zset   session IDs by start (unix µs), the
//	                                  newest Bounds.MaxRemoteSessions
//	gf:rt:TOPIC                pub/sub channel of the message bus
//
// The embedded store keeps the same records in bbolt buckets (see package
// embedded) and makes each transition one bbolt write transaction.
package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Errors every implementation returns (wrapped) for the same conditions.
var (
	// ErrNotFound: nothing recorded yet (no live commit, no refusal).
	ErrNotFound = errors.New("store: not found")
	// ErrNotLive: PutRollouts for a commit that is not the live one. The
	// caller's view is stale; it should read Live and reconcile that instead.
	ErrNotLive = errors.New("store: commit is not live")
	// ErrInvalid: an argument breaks the method's contract (empty SHA,
	// duplicate rollout name, bad event ID, …). Nothing was written.
	ErrInvalid = errors.New("store: invalid argument")
)

// Store is everything the controller keeps outside Git. Implementations are
// safe for concurrent use by many goroutines and by many controller replicas
// sharing the same backing store. Callers that need only part of it should
// accept the narrower interface (a webhook receiver needs only
// [Coordination]).
type Store interface {
	Commits
	Generations
	EventLog
	Coordination
	Deployments
	DeploymentLogs
	Devices
	Alerts
	DeviceAlerts
	ConfigStatuses
	RemoteSessions

	// Ping reports whether the backing store answers (for /readyz).
	Ping(ctx context.Context) error
	// Close releases the store. Methods called after Close fail.
	Close() error
}

// Commits records which commit is live and which was last refused.
type Commits interface {
	// Live returns the live commit, or ErrNotFound before any commit went live.
	Live(ctx context.Context) (CommitRecord, error)
	// SetLive makes next the live commit if the live commit's SHA is still
	// prevSHA ("" when nothing is live yet). ok reports whether next is live
	// afterwards: it is also true, without any write, when next.SHA is
	// already live (another replica got there first), so the record first
	// written for a commit is kept. ok is false when live is some other
	// commit; the caller should read Live and decide again.
	// The store sets next.Seq (the previous Seq + 1) when it writes.
	SetLive(ctx context.Context, next CommitRecord, prevSHA string) (ok bool, err error)
	// MoveLive makes next the live commit, with Seq prevSeq+1, if the live
	// pointer's Seq is still prevSeq (0: no commit was ever made live, or
	// only by a store that kept no sequence number). When next.SHA is
	// already live at prevSeq nothing is written. live is the record live
	// afterwards (the zero record when none is) and ok reports whether it
	// is next.SHA: also true, without a write, when another caller made
	// next.SHA live since (the first record written is kept); false when
	// the pointer moved elsewhere. The caller decides again from live.
	MoveLive(ctx context.Context, next CommitRecord, prevSeq int64) (live CommitRecord, ok bool, err error)
	// RecordRefused records a refused commit and makes it the last refused
	// one. It is idempotent per SHA: recorded is true only for the first
	// call for that SHA, and a later call for an already recorded SHA
	// changes nothing (a slow replica cannot make an older refusal "last").
	RecordRefused(ctx context.Context, r Refusal) (recorded bool, err error)
	// LastRefused returns the last refused commit, or ErrNotFound.
	LastRefused(ctx context.Context) (Refusal, error)
}

// Generations records rollouts and their generations (DESIGN.md §4).
type Generations interface {
	// PutRollouts records the rollouts declared at commitSHA, which must be
	// the live commit (ErrNotLive otherwise), and returns what changed
	// against the previously applied commit, sorted by rollout name:
	//
	//   - a new name, or a name that was stopped and is declared again,
	//     starts a new generation (RolloutStarted);
	//   - a different Artifact starts a new generation (RolloutArtifact);
	//   - different Settings bytes change the running generation
	//     (RolloutSettings);
	//   - a name no longer declared is stopped (RolloutStopped); its record
	//     and generation number are kept.
	//
	// Only Name, Artifact and Settings of each input are read. The
	// transition is atomic and keyed by commitSHA: calling PutRollouts again
	// for the commit last applied changes nothing and returns the same
	// changes, so two replicas reconciling one commit agree.
	PutRollouts(ctx context.Context, commitSHA string, rollouts []RolloutRecord) ([]RolloutChange, error)
	// Rollouts returns every rollout ever declared (stopped ones too),
	// sorted by name.
	Rollouts(ctx context.Context) ([]RolloutRecord, error)
}

// EventLog is a bounded, ordered log of what happened, for auditors, the
// dashboard and notifications. It keeps the last MaxEvents events (default
// 10,000); older ones are dropped.
type EventLog interface {
	// AppendEvent appends e and returns its ID. An event with the same
	// (Commit, Kind, Subject, Occurrence) as one appended within the dedupe window
	// (default 7 days) while that one is still retained is not appended
	// again: added is false and id is the first one's. A zero e.Time is set
	// to the store's clock.
	AppendEvent(ctx context.Context, e Event) (id string, added bool, err error)
	// Events returns up to limit (1…MaxPage; larger is clamped) events
	// appended after the event with ID afterID ("" for the oldest retained),
	// oldest first. IDs are opaque strings that only the store that issued
	// them understands.
	Events(ctx context.Context, afterID string, limit int) ([]Event, error)
	// RecentEvents returns the newest n (1…MaxPage) events, oldest first.
	RecentEvents(ctx context.Context, n int) ([]Event, error)
}

// Coordination is what replicas share so that they act as one controller.
type Coordination interface {
	// FirstDelivery reports whether delivery id (a webhook delivery ID, at
	// most 1 KiB) is seen for the first time within ttl (≥ 1 ms). Exactly
	// one of any number of concurrent callers gets true; after ttl the ID
	// may be delivered again.
	FirstDelivery(ctx context.Context, id string, ttl time.Duration) (first bool, err error)
	// SharedSecret returns the secret called name ([a-z0-9._-], at most 64
	// bytes), creating it with generate the first time. Every caller, on
	// every replica, gets the same bytes: if two create it at once, one
	// secret wins and both return it. The secret never expires.
	SharedSecret(ctx context.Context, name string, generate func() ([]byte, error)) ([]byte, error)
}

// Deployments is rollout progress per generation: which devices a phase
// admitted, where each device's deployment is, and counts of final states
// (DESIGN.md §4). Admission is atomic, so replicas never admit more devices
// than a phase allows.
type Deployments interface {
	// Admit admits device into phase of generation g if the generation is
	// not aborted and the phase has admitted fewer than limit devices; the
	// deployment records the store's clock as its Admitted time. A
	// device already admitted into g (in any phase) gets its deployment back
	// with ok true and nothing counted again. ok is false, with a zero
	// Deployment, when the phase is full or g is aborted.
	Admit(ctx context.Context, g GenerationRef, phase int, limit int64, device string) (d Deployment, ok bool, err error)
	// Report moves device's deployment in g to state. Reaching StateSuccess,
	// StateFailure or StateTimeout counts once in the device's phase; a
	// final state never changes again (changed false), so a device that
	// reports after the caller recorded its timeout stays timed out, and a
	// timeout recorded after the device's final report changes nothing. A failure while the device has used
	// fewer than retries attempts becomes StateRetrying with Attempts+1,
	// and is not counted. ErrNotFound if the device was never admitted.
	Report(ctx context.Context, g GenerationRef, device, state string, retries int) (d Deployment, changed bool, err error)
	// Deployment returns device's deployment in g, or ErrNotFound.
	Deployment(ctx context.Context, g GenerationRef, device string) (Deployment, error)
	// Changes returns g's deployment changes from position from (0-based)
	// on, at most max (1…MaxChangesPage), oldest first. A change is recorded
	// atomically with what it describes: one when a device is admitted
	// (State StateAdmitted, its phase) and one when its deployment reaches a
	// final state (StateSuccess, StateFailure or StateTimeout). So g has
	// exactly Σ (Admitted + Succeeded + Failed + TimedOut) changes over its Progress phases
	// (ChangeCount), and a replica that applied that many knows, without
	// asking, which devices have a deployment in g and which finished. The
	// device API keeps such an index so that a poll needs no store read.
	Changes(ctx context.Context, g GenerationRef, from int64, max int) ([]Change, error)
	// Progress returns g's counts per phase and whether it was aborted.
	// A generation nobody was admitted to has an empty Progress.
	Progress(ctx context.Context, g GenerationRef) (Progress, error)
	// Abort marks g aborted with reason; first is true for the call that
	// did it. An aborted generation admits nobody new.
	Abort(ctx context.Context, g GenerationRef, reason string) (first bool, err error)
	// CompletePhase records at (to the millisecond) as the moment phase of
	// g completed, unless a moment is recorded already, and returns the
	// recorded moment: the first writer's, on every replica, so holds run
	// from one instant. first is true for the call that recorded it.
	// Progress reports the moment as PhaseCounts.Completed.
	CompletePhase(ctx context.Context, g GenerationRef, phase int, at time.Time) (recorded time.Time, first bool, err error)
}

// Devices records the devices that talk to the controller. Whether a device
// is accepted is Git's decision (Device manifests); the store remembers
// what devices said and when, which key is bound to each device, and lists
// pending devices and key conflicts for the operator.
//
// The first key recorded for a device ID sticks. Only an accepted request
// whose key Git names (SeeDevice with DeviceAccepted) replaces it: nothing
// an unauthenticated caller sends changes what the store holds about a
// device that has a record, and a request with another key is recorded as a
// [Conflict] instead. What unauthenticated callers can make the store keep
// is bounded: at most MaxPending pending records (new ones are refused with
// ErrFull), each expiring PendingTTL after it was last seen, and at most
// MaxConflicts conflicts (the oldest dropped), expiring alike.
type Devices interface {
	// SeeDevice records an authentication request.
	//
	// With Status DeviceAccepted (the live commit accepts the device by
	// the key fingerprint it names): Identity, KeyFingerprint, Status and
	// LastSeen replace what was stored, and the record no longer expires.
	//
	// With Status DevicePending (the live commit does not accept the
	// device): with no record for d.ID, a pending record is created
	// (created true), or ErrFull when MaxPending pending records exist. A
	// record holding the same key: a pending one gets LastSeen and expires
	// PendingTTL after it; an accepted one is left alone. A record holding
	// another key is left alone and the request recorded as a Conflict:
	// ErrKeyConflict.
	//
	// FirstSeen is kept from the first call; Inventory is left alone.
	SeeDevice(ctx context.Context, d Device) (created bool, err error)
	// BindDevice accepts a device by trust on first use: when no record
	// holds a key for d.ID, d.KeyFingerprint becomes its key, atomically,
	// so of concurrent calls with different keys (on any replica) exactly
	// one wins. A record holding the same key becomes accepted with
	// d.LastSeen. A record holding another key is left alone and the
	// request recorded as a Conflict: ErrKeyConflict.
	BindDevice(ctx context.Context, d Device) (created bool, err error)
	// Device returns a device, or ErrNotFound.
	Device(ctx context.Context, id string) (Device, error)
	// SetInventory replaces a known device's inventory (JSON), or
	// ErrNotFound. Merging a PATCH is the caller's read-modify-write.
	SetInventory(ctx context.Context, id string, inventory json.RawMessage) error
	// PendingDevices returns up to limit (1…MaxPage) pending devices,
	// newest first.
	PendingDevices(ctx context.Context, limit int) ([]Device, error)
	// Conflicts returns up to limit (1…MaxPage) key conflicts, the most
	// recently seen first.
	Conflicts(ctx context.Context, limit int) ([]Conflict, error)
}

// Device is what the store knows about one device.
type Device struct {
	ID             string          `json:"id"`
	Identity       json.RawMessage `json:"identity,omitempty"` // id_data as the device sent it
	KeyFingerprint string          `json:"key,omitempty"`      // the key bound to the device (the first recorded, or the one Git names)
	Status         DeviceStatus    `json:"status"`
	Inventory      json.RawMessage `json:"inventory,omitempty"`
	FirstSeen      time.Time       `json:"first_seen"`
	LastSeen       time.Time       `json:"last_seen"`
}

// DeviceStatus is a device's admission as last decided.
type DeviceStatus string

const (
	DevicePending  DeviceStatus = "pending"
	DeviceAccepted DeviceStatus = "accepted"
)

// Conflict is a signed authentication request for a device whose record
// holds another key: someone else's key claiming the device's identity, or
// the device itself with a new key. The device's record is left alone;
// committing the new key's fingerprint in the device's manifest (when it is
// the device's) makes Git bind it.
type Conflict struct {
	ID             string          `json:"id"`                 // the device's ID
	Identity       json.RawMessage `json:"identity,omitempty"` // id_data of the request
	KeyFingerprint string          `json:"key"`                // the key of the refused request
	BoundKey       string          `json:"bound_key"`          // the key the device's record holds
	Count          int64           `json:"count"`              // requests seen with this key
	FirstSeen      time.Time       `json:"first_seen"`
	LastSeen       time.Time       `json:"last_seen"`
}

// ErrKeyConflict: a device's record holds another key than the request's;
// the request was recorded as a Conflict and nothing else changed.
var ErrKeyConflict = errors.New("store: another key is bound to this device")

// ErrFull: the store holds as many pending records as it may; nothing was
// written. Accepted devices are not affected.
var ErrFull = errors.New("store: too many pending devices")

// Defaults for the bounds on what unauthenticated callers make the store
// keep (both implementations take them as options).
const (
	// DefaultMaxPending bounds pending device records.
	DefaultMaxPending = 10_000
	// DefaultMaxConflicts bounds conflict records (the oldest drop out).
	DefaultMaxConflicts = 1_000
	// DefaultPendingTTL is how long a pending or conflict record is kept
	// after it was last seen.
	DefaultPendingTTL = 7 * 24 * time.Hour
)

// Bounds are the limits both implementations keep; a zero field takes its
// default (WithDefaults).
type Bounds struct {
	// MaxEvents is how many events the log keeps. Default DefaultMaxEvents.
	MaxEvents int
	// Dedupe is how long an event's (commit, kind, subject) is
	// remembered. Default DefaultDedupe.
	Dedupe time.Duration
	// MaxPending bounds pending device records. Default DefaultMaxPending.
	MaxPending int
	// MaxConflicts bounds key conflict records. Default DefaultMaxConflicts.
	MaxConflicts int
	// PendingTTL is how long a pending or conflict record is kept after
	// it was last seen. Default DefaultPendingTTL.
	PendingTTL time.Duration
	// MaxAlerts bounds the fleet-wide alert listing. Default
	// DefaultMaxAlerts.
	MaxAlerts int
	// MaxRemoteSessions bounds remote session records (the oldest start
	// drops out). Default MaxRemoteSessions.
	MaxRemoteSessions int
}

// WithDefaults returns b with every zero (or negative) field set to its
// default.
func (b Bounds) WithDefaults() Bounds {
	if b.MaxEvents <= 0 {
		b.MaxEvents = DefaultMaxEvents
	}
	if b.Dedupe <= 0 {
		b.Dedupe = DefaultDedupe
	}
	if b.MaxPending <= 0 {
		b.MaxPending = DefaultMaxPending
	}
	if b.MaxConflicts <= 0 {
		b.MaxConflicts = DefaultMaxConflicts
	}
	if b.PendingTTL <= 0 {
		b.PendingTTL = DefaultPendingTTL
	}
	if b.MaxAlerts <= 0 {
		b.MaxAlerts = DefaultMaxAlerts
	}
	if b.MaxRemoteSessions <= 0 {
		b.MaxRemoteSessions = MaxRemoteSessions
	}
	return b
}

// MaxDeviceBytes bounds a device's identity plus inventory.
const MaxDeviceBytes = 16 << 10

// Validate checks what SeeDevice and BindDevice require.
func (d Device) Validate() error {
	switch {
	case d.ID == "" || len(d.ID) > 256 || strings.ContainsAny(d.ID, "{}"):
		return fmt.Errorf("%w: device ID %q", ErrInvalid, d.ID)
	case d.Status != DevicePending && d.Status != DeviceAccepted:
		return fmt.Errorf("%w: device status %q", ErrInvalid, d.Status)
	case len(d.KeyFingerprint) > 256:
		return fmt.Errorf("%w: device %s key fingerprint longer than 256 bytes", ErrInvalid, d.ID)
	case len(d.Identity) > MaxDeviceBytes || len(d.Identity) > 0 && !json.Valid(d.Identity):
		return fmt.Errorf("%w: device %s identity is not JSON of at most %d bytes", ErrInvalid, d.ID, MaxDeviceBytes)
	}
	return nil
}

// ValidateInventory checks SetInventory's arguments.
func ValidateInventory(id string, inv json.RawMessage) error {
	if id == "" || len(id) > 256 || strings.ContainsAny(id, "{}") {
		return fmt.Errorf("%w: device ID %q", ErrInvalid, id)
	}
	if len(inv) > MaxDeviceBytes || len(inv) > 0 && !json.Valid(inv) {
		return fmt.Errorf("%w: device %s inventory is not JSON of at most %d bytes", ErrInvalid, id, MaxDeviceBytes)
	}
	return nil
}

// GenerationRef names one generation of a rollout.
type GenerationRef struct {
	Rollout    string
	Generation int64
}

func (g GenerationRef) String() string { return fmt.Sprintf("%s:%d", g.Rollout, g.Generation) }

// Deployment is one device's deployment in a rollout generation.
type Deployment struct {
	Phase    int    // the phase that admitted the device
	State    string // StateAdmitted, a device status ("downloading", …), StateRetrying, or a final state
	Attempts int    // failed attempts retried so far
	// Admitted is when the store admitted the device (its clock, to the
	// millisecond); zero for records written before it was kept. The
	// rollout engine's device deadline runs from it.
	Admitted time.Time
}

// Deployment states the store interprets; any other state (the device
// API's "downloading", "installing", "rebooting", …) is stored as is.
const (
	StateAdmitted = "admitted"
	StateRetrying = "retrying"
	StateSuccess  = "success" // final, counted
	StateFailure  = "failure" // final, counted
	// StateTimeout: the device did not reach a final state within its
	// rollout's device timeout; the caller (the device API, deciding with
	// the rollout engine) reports it. Final, counted as TimedOut.
	StateTimeout = "timeout"
)

// FinalState reports whether state is final: StateSuccess, StateFailure
// or StateTimeout.
func FinalState(state string) bool {
	return state == StateSuccess || state == StateFailure || state == StateTimeout
}

// Change is one entry of a generation's change log (Deployments.Changes).
type Change struct {
	Device string
	Phase  int
	State  string // StateAdmitted, StateSuccess, StateFailure or StateTimeout
}

// EncodeChange and ParseChange give both stores the "phase|state|device"
// form of a Change (the device last: it is the only free-form part).
func EncodeChange(c Change) string {
	return strconv.Itoa(c.Phase) + "|" + c.State + "|" + c.Device
}

// ParseChange reverses EncodeChange.
func ParseChange(s string) (Change, error) {
	p, rest, ok1 := strings.Cut(s, "|")
	st, dev, ok2 := strings.Cut(rest, "|")
	phase, err := strconv.Atoi(p)
	if !ok1 || !ok2 || err != nil || phase < 0 || phase >= MaxPhases || dev == "" ||
		(st != StateAdmitted && !FinalState(st)) {
		return Change{}, fmt.Errorf("change record %q is malformed", s)
	}
	return Change{Device: dev, Phase: phase, State: st}, nil
}

// ChangeCount is how many changes a generation with progress p has
// recorded (see Deployments.Changes).
func (p Progress) ChangeCount() int64 {
	var n int64
	for _, c := range p.Phases {
		n += c.Admitted + c.Succeeded + c.Failed + c.TimedOut
	}
	return n
}

// ValidateChanges checks Changes' arguments.
func ValidateChanges(g GenerationRef, from int64, max int) error {
	if err := ValidateGeneration(g, nil); err != nil {
		return err
	}
	if from < 0 || max < 1 || max > MaxChangesPage {
		return fmt.Errorf("%w: changes from %d, at most %d (1…%d)", ErrInvalid, from, max, MaxChangesPage)
	}
	return nil
}

// Progress is what a generation's phases have done.
type Progress struct {
	Phases  []PhaseCounts // index = phase; up to the highest phase with any count
	Aborted string        // the abort reason; "" while running
}

// PhaseCounts counts one phase's devices.
type PhaseCounts struct {
	Admitted, Succeeded, Failed int64
	// TimedOut counts deployments that reached StateTimeout.
	TimedOut int64
	// Completed is when the phase was recorded complete (CompletePhase),
	// to the millisecond; zero while it is not.
	Completed time.Time
}

// MaxPhases bounds phase numbers (0 … MaxPhases-1).
const MaxPhases = 64

// ValidateGeneration checks a GenerationRef, and a device ID when given.
func ValidateGeneration(g GenerationRef, device *string) error {
	switch {
	case g.Rollout == "" || len(g.Rollout) > 253 || strings.ContainsAny(g.Rollout, "{}"):
		return fmt.Errorf("%w: rollout name %q", ErrInvalid, g.Rollout)
	case g.Generation < 1:
		return fmt.Errorf("%w: generation %d of %s", ErrInvalid, g.Generation, g.Rollout)
	case device != nil && (*device == "" || len(*device) > 256):
		return fmt.Errorf("%w: device ID of %d bytes", ErrInvalid, len(*device))
	}
	return nil
}

// ValidateAdmit checks Admit's arguments.
func ValidateAdmit(g GenerationRef, phase int, limit int64, device string) error {
	if err := ValidateGeneration(g, &device); err != nil {
		return err
	}
	if phase < 0 || phase >= MaxPhases || limit < 0 {
		return fmt.Errorf("%w: phase %d, limit %d", ErrInvalid, phase, limit)
	}
	return nil
}

// ValidateAbort checks Abort's arguments.
func ValidateAbort(g GenerationRef, reason string) error {
	if err := ValidateGeneration(g, nil); err != nil {
		return err
	}
	if len(reason) > 1024 {
		return fmt.Errorf("%w: abort reason longer than 1024 bytes", ErrInvalid)
	}
	return nil
}

// Alerts records the monitoring alerts raised on devices admitted to a
// rollout generation, which its abort criteria name (DESIGN.md §4).
type Alerts interface {
	// SetAlert raises (raised true) or clears the alert called check on
	// device within generation g. It is idempotent: changed reports whether
	// this call changed anything, so a repeated report counts once.
	SetAlert(ctx context.Context, g GenerationRef, device, check string, raised bool) (changed bool, err error)
	// AlertCounts returns, per check, how many devices of g have it raised;
	// checks with none are absent.
	AlertCounts(ctx context.Context, g GenerationRef) (map[string]int64, error)
}

// DeviceAlerts keeps what devices' monitoring reported: per device, per
// check and per condition (Key) within the check, the current state of each
// alert with its evidence, for operators (`gitfleet alerts`) and
// notifications. Replicas sharing a store see one record; each event is
// applied once whichever replica receives it, because a device numbers its
// events (Seq, increasing) and the store applies only those above the last
// Seq it recorded for that device, atomically with the change.
//
// What is kept is bounded: at most MaxAlertsPerDevice records per device
// (the oldest closed ones dropped first) and MaxAlerts in the fleet-wide
// listing (the least recently changed drop out of it).
type DeviceAlerts interface {
	// RecordAlerts applies device's events in order. Events with a Seq not
	// above the last one recorded for device are skipped (a batch sent
	// again after a lost answer). It returns the records this call changed,
	// in the order of the events that changed them (what notifications
	// announce), and the device's last recorded Seq (what the device may
	// drop from its queue). Events must be sorted by Seq.
	RecordAlerts(ctx context.Context, device string, events []AlertEvent) (changed []Alert, lastSeq uint64, err error)
	// ListAlerts returns the records matching f, the most recently changed
	// first, at most f.Limit (1…MaxPage). A record's change time is the
	// device's time of the last event that changed it, no later than the
	// store's clock when recorded and never earlier than its previous one
	// (a device's clock cannot pin records on top or move them back);
	// records changed at the same millisecond come in descending order of
	// "device|check|key". With f.Device, all of the device's records are
	// searched; otherwise the fleet-wide listing (the MaxAlerts most
	// recently changed).
	ListAlerts(ctx context.Context, f AlertFilter) ([]Alert, error)
}

// ConfigStatuses keeps, per device (its Device manifest name), what the
// device last reported about its configuration (DeviceConfig): the digest
// it applied or failed to apply, or found drifted. Replicas share it; the
// last report wins.
type ConfigStatuses interface {
	// SetConfigStatus records s for s.Device (ValidateConfigStatus; on
	// ErrInvalid nothing is written), replacing what was recorded: the
	// report that lands last wins, and each record is one report's, whole.
	// A zero s.Reported is the store's clock. s.Since is not read: the store
	// keeps the recorded Since when Digest and State are unchanged (moved
	// back to Reported if that is earlier, as a replica with a slower clock
	// may report later) and sets it to Reported otherwise. changed reports
	// whether anything but the times differs from what was recorded (true
	// for a device's first report). Invalid UTF-8 in the strings is
	// replaced with U+FFFD, as a JSON API would.
	SetConfigStatus(ctx context.Context, s ConfigStatus) (changed bool, err error)
	// ConfigStatusOf returns the statuses of devices (absent: none
	// reported; a name no report can have, such as "", is absent too), in
	// one round trip per MaxPage devices. The map is never nil.
	ConfigStatusOf(ctx context.Context, devices []string) (map[string]ConfigStatus, error)
}

// ConfigStatus is a device's last configuration report.
type ConfigStatus struct {
	Device     string    `json:"device"`
	Digest     string    `json:"digest"`                // what the device applied, tried to apply, or found drifted from
	State      string    `json:"state"`                 // "applied", "failed" or "drifted" (device/devconfig)
	Script     string    `json:"script,omitempty"`      // failed: the apply script that failed
	ExitCode   int       `json:"exit_code,omitempty"`   // failed: its exit code
	Output     string    `json:"output,omitempty"`      // failed: the tail of its output
	FileDigest string    `json:"file_digest,omitempty"` // drifted: the digest of the file found
	Via        string    `json:"via,omitempty"`         // "agent" or "mender" (a stock client's report)
	Reported   time.Time `json:"reported"`              // the controller's clock
	Since      time.Time `json:"since"`                 // when Digest and State were first reported so
}

// ValidateConfigStatus checks SetConfigStatus's argument.
func ValidateConfigStatus(s ConfigStatus) error {
	if s.Device == "" || len(s.Device) > 253 || strings.ContainsAny(s.Device, "\x00{}") {
		return fmt.Errorf("%w: device %q", ErrInvalid, s.Device)
	}
	switch s.State {
	case "applied", "failed", "drifted":
	default:
		return fmt.Errorf("%w: config state %q is not one of applied, failed, drifted", ErrInvalid, s.State)
	}
	if !strings.HasPrefix(s.Digest, "sha256:") || len(s.Digest) != len("sha256:")+64 {
		return fmt.Errorf("%w: config digest %q is not sha256:HEX", ErrInvalid, s.Digest)
	}
	if len(s.Output) > 4096 || len(s.Script) > 255 || len(s.FileDigest) > 71 || len(s.Via) > 16 {
		return fmt.Errorf("%w: config status fields too long", ErrInvalid)
	}
	return nil
}

// Alert event kinds a device reports (AlertEvent.Kind).
const (
	AlertRaised     = "raised"      // a condition appeared, or an occurrence happened
	AlertCleared    = "cleared"     // the condition recovered
	AlertExpired    = "expired"     // open past its check's expiry without firing again
	AlertFlapping   = "flapping"    // changing too often; further changes are damped
	AlertCheckError = "check_error" // the probe cannot run (not an alert)
	AlertCheckOK    = "check_ok"    // the probe runs again
)

// Alert record states (Alert.State).
const (
	AlertOpen   = "open"   // raised and not cleared or expired
	AlertClosed = "closed" // cleared or expired (Alert.Closing says which)
	AlertError  = "error"  // the check cannot run on the device (not an alert)
)

// AlertEvent is one event a device's monitoring reported.
type AlertEvent struct {
	Seq      uint64    `json:"seq"`
	Check    string    `json:"check"`
	Key      string    `json:"key,omitempty"`
	Kind     string    `json:"kind"`
	Severity string    `json:"severity,omitempty"`
	Evidence string    `json:"evidence,omitempty"`
	Time     time.Time `json:"time"` // the device's clock
}

// Alert is the record of one condition of one check on one device.
type Alert struct {
	Device   string    `json:"device"`
	Check    string    `json:"check"`
	Key      string    `json:"key,omitempty"`
	State    string    `json:"state"`             // AlertOpen, AlertClosed or AlertError
	Closing  string    `json:"closing,omitempty"` // AlertCleared or AlertExpired, once closed
	Severity string    `json:"severity,omitempty"`
	Evidence string    `json:"evidence,omitempty"` // the line or fact that raised it (or the check error)
	Flapping bool      `json:"flapping,omitempty"`
	Raised   time.Time `json:"raised,omitzero"` // when it last opened (device clock)
	Closed   time.Time `json:"closed,omitzero"` // when it last closed (device clock)
	Updated  time.Time `json:"updated"`         // the device time of the last event applied
	Count    int64     `json:"count"`           // times raised
	Seq      uint64    `json:"seq"`             // the last event applied
}

// AlertFilter selects alerts for ListAlerts; zero fields match all.
type AlertFilter struct {
	Device   string
	Check    string
	Severity string
	State    string // AlertOpen, AlertClosed, AlertError or "" for all
	Limit    int
}

// Bounds of the alert records and of one RecordAlerts call.
const (
	DefaultMaxAlerts   = 1_000_000
	MaxAlertsPerDevice = 1_024
	MaxAlertEvents     = 1_000 // per RecordAlerts call
	MaxAlertEvidence   = 1_024 // bytes; longer evidence is cut
	maxAlertKey        = 512
)

// Apply returns a (the record for e's check and key on device, zero when
// there was none) after event e, and whether anything changed. It is the one
// state machine both implementations run.
func (e AlertEvent) Apply(device string, a Alert) (Alert, bool) {
	before := a
	a.Device, a.Check, a.Key = device, e.Check, e.Key
	if e.Severity != "" {
		a.Severity = e.Severity
	}
	switch e.Kind {
	case AlertRaised:
		// Compared cut, as stored: the same long evidence again is not news.
		ev := truncateEvidence(e.Evidence)
		if a.State != AlertOpen || a.Evidence != ev {
			a.Count++
		}
		if a.State != AlertOpen {
			a.Raised = e.Time
		}
		a.State, a.Closing, a.Closed, a.Evidence = AlertOpen, "", time.Time{}, ev
	case AlertCleared, AlertExpired:
		if a.State != AlertOpen {
			a.Seq = e.Seq
			return a, false
		}
		a.State, a.Closing, a.Closed, a.Flapping = AlertClosed, e.Kind, e.Time, false
	case AlertFlapping:
		if a.State != AlertOpen && a.State != AlertClosed {
			// Nothing was ever raised (or the check is in error): there
			// is no alert to damp.
			a.Seq = e.Seq
			return a, false
		}
		a.Flapping = true
	case AlertCheckError:
		a.State, a.Evidence = AlertError, truncateEvidence(e.Evidence)
	case AlertCheckOK:
		if a.State != AlertError {
			a.Seq = e.Seq
			return a, false
		}
		a.State, a.Closing, a.Closed = AlertClosed, AlertCheckOK, e.Time
	}
	a.Updated, a.Seq = e.Time, e.Seq
	changed := a.State != before.State || a.Evidence != before.Evidence || a.Flapping != before.Flapping ||
		a.Count != before.Count || a.Severity != before.Severity
	return a, changed
}

// AlertChangeTime is the change time (unix ms) a store records when event
// time t changes a record whose previous change time was prev (0 for a new
// record): t, but no later than now and no earlier than prev.
func AlertChangeTime(prev int64, t, now time.Time) int64 {
	return max(min(t.UnixMilli(), now.UnixMilli()), prev, 0)
}

// AlertMember names a record in the fleet-wide listing: "device|check|key"
// (device and check hold no '|'; key may).
func AlertMember(device, check, key string) string { return device + "|" + check + "|" + key }

// ParseAlertMember reverses AlertMember.
func ParseAlertMember(m string) (device, check, key string, ok bool) {
	device, rest, ok1 := strings.Cut(m, "|")
	check, key, ok2 := strings.Cut(rest, "|")
	return device, check, key, ok1 && ok2 && device != "" && check != ""
}

func truncateEvidence(s string) string {
	if len(s) <= MaxAlertEvidence {
		return s
	}
	return strings.ToValidUTF8(s[:MaxAlertEvidence], "")
}

// ValidateAlertEvents checks RecordAlerts' arguments: a device ID (no '|',
// which separates the parts of a listing entry, and no braces, which would
// break the Redis hash tag), at most MaxAlertEvents events sorted by Seq,
// each with a known kind, a check name and a key of bounded size.
func ValidateAlertEvents(device string, events []AlertEvent) error {
	if device == "" || len(device) > 253 || strings.ContainsAny(device, "\x00|{}") {
		return fmt.Errorf("%w: device ID %q", ErrInvalid, device)
	}
	if len(events) > MaxAlertEvents {
		return fmt.Errorf("%w: %d alert events in one call (max %d)", ErrInvalid, len(events), MaxAlertEvents)
	}
	var last uint64
	for i, e := range events {
		if e.Seq == 0 || e.Seq <= last {
			return fmt.Errorf("%w: alert event %d: seq %d is not above the previous one (%d)", ErrInvalid, i, e.Seq, last)
		}
		last = e.Seq
		if e.Check == "" || len(e.Check) > 253 || strings.ContainsAny(e.Check, "\x00|") {
			return fmt.Errorf("%w: alert event %d: check name %q", ErrInvalid, i, e.Check)
		}
		if len(e.Key) > maxAlertKey || strings.ContainsRune(e.Key, 0) {
			return fmt.Errorf("%w: alert event %d: key longer than %d bytes or with a NUL", ErrInvalid, i, maxAlertKey)
		}
		switch e.Kind {
		case AlertRaised, AlertCleared, AlertExpired, AlertFlapping, AlertCheckError, AlertCheckOK:
		default:
			return fmt.Errorf("%w: alert event %d: kind %q is not one of raised, cleared, expired, flapping, check_error, check_ok", ErrInvalid, i, e.Kind)
		}
		switch e.Severity {
		case "", "critical", "error", "warning", "info":
		default:
			return fmt.Errorf("%w: alert event %d: severity %q is not one of critical, error, warning, info", ErrInvalid, i, e.Severity)
		}
	}
	return nil
}

// ValidateAlertFilter checks a ListAlerts filter and clamps its limit.
func ValidateAlertFilter(f AlertFilter) (AlertFilter, error) {
	switch f.State {
	case "", AlertOpen, AlertClosed, AlertError:
	default:
		return f, fmt.Errorf("%w: alert state %q is not one of open, closed, error", ErrInvalid, f.State)
	}
	n, err := PageLimit(f.Limit)
	f.Limit = n
	return f, err
}

// Matches reports whether a passes f (Limit aside).
func (f AlertFilter) Matches(a Alert) bool {
	return (f.Device == "" || a.Device == f.Device) && (f.Check == "" || a.Check == f.Check) &&
		(f.Severity == "" || a.Severity == f.Severity) && (f.State == "" || a.State == f.State)
}

// ValidateAlert checks SetAlert's arguments.
func ValidateAlert(g GenerationRef, device, check string) error {
	if err := ValidateGeneration(g, &device); err != nil {
		return err
	}
	if check == "" || len(check) > 253 || strings.ContainsAny(check, "\x00|") {
		return fmt.Errorf("%w: alert name %q", ErrInvalid, check)
	}
	return nil
}

// ValidatePhase checks CompletePhase's arguments.
func ValidatePhase(g GenerationRef, phase int, at time.Time) error {
	if err := ValidateGeneration(g, nil); err != nil {
		return err
	}
	if phase < 0 || phase >= MaxPhases {
		return fmt.Errorf("%w: phase %d out of range 0…%d", ErrInvalid, phase, MaxPhases-1)
	}
	if at.UnixMilli() <= 0 {
		return fmt.Errorf("%w: phase completion time %v", ErrInvalid, at)
	}
	return nil
}

// ValidateReport checks Report's arguments.
func ValidateReport(g GenerationRef, device, state string, retries int) error {
	if err := ValidateGeneration(g, &device); err != nil {
		return err
	}
	if state == "" || len(state) > 32 || strings.ContainsRune(state, '|') || state == StateAdmitted || state == StateRetrying || retries < 0 {
		return fmt.Errorf("%w: state %q, retries %d", ErrInvalid, state, retries)
	}
	return nil
}

// EncodeDeployment and ParseDeployment give both stores the compact
// "phase|state|attempts|admitted" form a million devices can afford
// (admitted in Unix milliseconds; records without it, written before it
// was kept, parse with a zero Admitted).
func EncodeDeployment(d Deployment) string {
	s := strconv.Itoa(d.Phase) + "|" + d.State + "|" + strconv.Itoa(d.Attempts)
	if !d.Admitted.IsZero() {
		s += "|" + strconv.FormatInt(d.Admitted.UnixMilli(), 10)
	}
	return s
}

// ParseDeployment reverses EncodeDeployment.
func ParseDeployment(s string) (Deployment, error) {
	p, rest, ok1 := strings.Cut(s, "|")
	st, rest, ok2 := strings.Cut(rest, "|")
	a, at, withTime := strings.Cut(rest, "|")
	phase, err1 := strconv.Atoi(p)
	attempts, err2 := strconv.Atoi(a)
	if !ok1 || !ok2 || err1 != nil || err2 != nil {
		return Deployment{}, fmt.Errorf("deployment record %q is malformed", s)
	}
	d := Deployment{Phase: phase, State: st, Attempts: attempts}
	if withTime {
		ms, err := strconv.ParseInt(at, 10, 64)
		if err != nil || ms <= 0 {
			return Deployment{}, fmt.Errorf("deployment record %q is malformed", s)
		}
		d.Admitted = time.UnixMilli(ms)
	}
	return d, nil
}

// Limits every implementation enforces (ErrInvalid beyond them).
const (
	DefaultMaxEvents   = 10_000
	DefaultDedupe      = 7 * 24 * time.Hour
	MaxPage            = 1_000    // events per Events/RecentEvents call
	MaxChangesPage     = 10_000   // changes per Deployments.Changes call
	MaxRecordBytes     = 1 << 20  // encoded CommitRecord, Refusal, RolloutRecord.Settings, Event
	MaxRefusalsKept    = 1_000    // refused SHAs remembered for idempotency
	MaxDeliveryIDBytes = 1 << 10  // FirstDelivery id
	MaxSecretBytes     = 64 << 10 // SharedSecret value
)

// CommitRecord describes a commit that went live.
type CommitRecord struct {
	SHA       string         `json:"sha"`
	Branch    string         `json:"branch,omitempty"`
	Author    string         `json:"author,omitempty"`
	Message   string         `json:"message,omitempty"`
	Committed time.Time      `json:"committed"`
	Loaded    time.Time      `json:"loaded"`              // when the controller loaded it
	Manifests map[string]int `json:"manifests,omitempty"` // kind → count
	// Seq is the live pointer's sequence number when this record was
	// made live: 1 for the first commit, one more at every move. The
	// store sets it; a commit that goes live again gets a new Seq.
	Seq int64 `json:"seq,omitempty"`
}

// Refusal describes a commit that failed validation or policy, or was not
// signed as required.
type Refusal struct {
	SHA    string    `json:"sha"`
	Author string    `json:"author,omitempty"`
	Time   time.Time `json:"time"`             // when it was refused
	Errors []string  `json:"errors,omitempty"` // e.g. "rollouts/a.yaml:12: …"
}

// RolloutRecord is one rollout as the store knows it. Callers set Name,
// Artifact and Settings; the store sets the rest.
type RolloutRecord struct {
	Name string `json:"name"`
	// Artifact identifies what is rolled out (e.g. "name@sha256:…");
	// changing it starts a new generation.
	Artifact string `json:"artifact"`
	// Settings is the rollout's phases, thresholds, windows… as JSON, opaque
	// to the store and compared byte for byte: encode it deterministically.
	Settings json.RawMessage `json:"settings,omitempty"`

	Generation  int64     `json:"generation"`   // 1, 2, … per name
	StartCommit string    `json:"start_commit"` // commit that started the generation
	Started     time.Time `json:"started"`
	Commit      string    `json:"commit"` // commit that last changed the record
	Updated     time.Time `json:"updated"`
	Stopped     bool      `json:"stopped,omitempty"` // no longer declared in Git
}

// ChangeKind says how PutRollouts changed a rollout.
type ChangeKind string

const (
	RolloutStarted  ChangeKind = "started"  // new (or re-declared) rollout: new generation
	RolloutArtifact ChangeKind = "artifact" // artifact changed: new generation
	RolloutSettings ChangeKind = "settings" // settings changed, same generation
	RolloutStopped  ChangeKind = "stopped"  // no longer declared
)

// RolloutChange is one change PutRollouts made.
type RolloutChange struct {
	Name         string     `json:"n"`
	Kind         ChangeKind `json:"k"`
	Generation   int64      `json:"g"`            // after the change
	Artifact     string     `json:"a"`            // after the change
	PrevArtifact string     `json:"pa,omitempty"` // before, for RolloutArtifact
}

// Event is one entry of the event log.
type Event struct {
	ID      string    `json:"-"` // set by the store
	Time    time.Time `json:"time"`
	Commit  string    `json:"commit,omitempty"` // the commit the event is traced to
	Author  string    `json:"author,omitempty"`
	Kind    string    `json:"kind"`              // e.g. "commit.live", "rollout.started"
	Subject string    `json:"subject,omitempty"` // e.g. "rollout/canary"
	Message string    `json:"message,omitempty"`
	// Occurrence, when set, tells apart occurrences of one fact that
	// share (Commit, Kind, Subject): the dedupe key includes it, so the
	// same commit going live a second time ("live:7") is appended again
	// while two replicas announcing the same go-live still append once.
	// It is not stored with the event.
	Occurrence string `json:"-"`
}

// Validate checks what SetLive requires of a record.
func (c CommitRecord) Validate() error {
	if c.SHA == "" {
		return fmt.Errorf("%w: commit record without SHA", ErrInvalid)
	}
	return nil
}

// Validate checks what RecordRefused requires of a refusal.
func (r Refusal) Validate() error {
	if r.SHA == "" {
		return fmt.Errorf("%w: refusal without SHA", ErrInvalid)
	}
	return nil
}

// Validate checks what AppendEvent requires of an event.
func (e Event) Validate() error {
	if e.Kind == "" {
		return fmt.Errorf("%w: event without kind", ErrInvalid)
	}
	return nil
}

// ValidateRollouts checks the input of PutRollouts: a commit SHA, unique
// non-empty names, an artifact each, and settings that are valid JSON.
func ValidateRollouts(commitSHA string, rs []RolloutRecord) error {
	if commitSHA == "" {
		return fmt.Errorf("%w: rollouts without commit SHA", ErrInvalid)
	}
	seen := make(map[string]bool, len(rs))
	for _, r := range rs {
		switch {
		case r.Name == "":
			return fmt.Errorf("%w: rollout without name", ErrInvalid)
		case seen[r.Name]:
			return fmt.Errorf("%w: rollout %q declared twice", ErrInvalid, r.Name)
		case r.Artifact == "":
			return fmt.Errorf("%w: rollout %q without artifact", ErrInvalid, r.Name)
		case len(r.Settings) > MaxRecordBytes:
			return fmt.Errorf("%w: rollout %q settings larger than %d bytes", ErrInvalid, r.Name, MaxRecordBytes)
		case len(r.Settings) > 0 && !json.Valid(r.Settings):
			return fmt.Errorf("%w: rollout %q settings are not valid JSON", ErrInvalid, r.Name)
		}
		seen[r.Name] = true
	}
	return nil
}

// ValidateDelivery checks the arguments of FirstDelivery.
func ValidateDelivery(id string, ttl time.Duration) error {
	switch {
	case id == "":
		return fmt.Errorf("%w: empty delivery ID", ErrInvalid)
	case len(id) > MaxDeliveryIDBytes:
		return fmt.Errorf("%w: delivery ID longer than %d bytes", ErrInvalid, MaxDeliveryIDBytes)
	case ttl < time.Millisecond:
		return fmt.Errorf("%w: delivery TTL %v below 1ms", ErrInvalid, ttl)
	}
	return nil
}

// ValidateSecretName checks a SharedSecret name.
func ValidateSecretName(name string) error {
	if name == "" || len(name) > 64 {
		return fmt.Errorf("%w: secret name must be 1…64 bytes", ErrInvalid)
	}
	for _, c := range []byte(name) {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("%w: secret name %q: only a-z, 0-9, '.', '_', '-'", ErrInvalid, name)
		}
	}
	return nil
}

// GenerateSecret calls generate and checks its result for SharedSecret.
func GenerateSecret(name string, generate func() ([]byte, error)) ([]byte, error) {
	if generate == nil {
		return nil, fmt.Errorf("%w: secret %q: no generator", ErrInvalid, name)
	}
	b, err := generate()
	if err != nil {
		return nil, fmt.Errorf("generate secret %q: %w", name, err)
	}
	if len(b) == 0 || len(b) > MaxSecretBytes {
		return nil, fmt.Errorf("%w: generated secret %q has %d bytes (want 1…%d)", ErrInvalid, name, len(b), MaxSecretBytes)
	}
	return b, nil
}

// PageLimit checks an Events/RecentEvents limit and clamps it to MaxPage.
func PageLimit(limit int) (int, error) {
	if limit <= 0 {
		return 0, fmt.Errorf("%w: event limit %d", ErrInvalid, limit)
	}
	return min(limit, MaxPage), nil
}

// EncodeLimited marshals v as JSON and refuses it beyond MaxRecordBytes.
func EncodeLimited(what string, v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", what, err)
	}
	if len(b) > MaxRecordBytes {
		return nil, fmt.Errorf("%w: %s is %d bytes encoded (max %d)", ErrInvalid, what, len(b), MaxRecordBytes)
	}
	return b, nil
}

// DedupeKey names e's (Commit, Kind, Subject) and, when set, Occurrence
// for AppendEvent's dedupe: a hex SHA-256, so arbitrary subjects make
// fixed-size keys.
func (e Event) DedupeKey() string {
	h := sha256.New()
	for _, s := range []string{e.Commit, e.Kind, e.Subject} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	if e.Occurrence != "" {
		h.Write([]byte(e.Occurrence))
		h.Write([]byte{1})
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// DeliveryKey names a webhook delivery ID with a fixed-size hex digest, so
// an untrusted ID of any shape makes a well-formed key.
func DeliveryKey(id string) string {
	sum := sha256.Sum256([]byte(id))
	return hex.EncodeToString(sum[:16])
}
