package notify

import (
	"crypto/rand"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/gitfleet/gitfleet/schema"
)

// Kind is the name of an event, one of the schema's #Event list
// (schema/notification.cue). The same names are what the controller emits
// and what a Notification manifest's events list selects.
type Kind string

// The event kinds, the schema's own constants: one list serves the
// manifests, the controller and the notifications.
const (
	CommitLive              Kind = schema.EventCommitLive
	CommitRefused           Kind = schema.EventCommitRefused
	CommitRewound           Kind = schema.EventCommitRewound
	RolloutStarted          Kind = schema.EventRolloutStarted
	RolloutArtifact         Kind = schema.EventRolloutArtifact
	RolloutSettings         Kind = schema.EventRolloutSettings
	RolloutStopped          Kind = schema.EventRolloutStopped
	RolloutPhaseOpened      Kind = schema.EventRolloutPhaseOpened
	RolloutPhaseCompleted   Kind = schema.EventRolloutPhaseCompleted
	RolloutAwaitingApproval Kind = schema.EventRolloutAwaitingApproval
	RolloutPaused           Kind = schema.EventRolloutPaused
	RolloutAborted          Kind = schema.EventRolloutAborted
	RolloutCompleted        Kind = schema.EventRolloutCompleted
	ArtifactRefused         Kind = schema.EventArtifactRefused
	AlertRaised             Kind = schema.EventAlertRaised
	AlertCleared            Kind = schema.EventAlertCleared
	DevicePending           Kind = schema.EventDevicePending
	DeviceRefused           Kind = schema.EventDeviceRefused
)

// kinds is schema.Events(), typed.
var kinds = func() []Kind {
	var ks []Kind
	for _, e := range schema.Events() {
		ks = append(ks, Kind(e))
	}
	return ks
}()

// Kinds returns every event kind, in the schema's order.
func Kinds() []Kind { return slices.Clone(kinds) }

// Valid reports whether k is one of [Kinds].
func (k Kind) Valid() bool { return schema.IsEvent(string(k)) }

// Event is one thing that happened, as a sink delivers it.
type Event struct {
	// ID is unique per event and is the idempotency key: a receiver that
	// sees the same ID twice (a retried delivery) has seen the same event.
	// Empty means "make one" (see [NewID]); the ID is fixed when the event
	// is queued, so every retry of every sink carries the same one.
	ID string `json:"id"`
	// Kind is the event's name.
	Kind Kind `json:"event"`
	// Time is when the event happened; zero means when it was queued.
	Time time.Time `json:"time"`
	// Commit is the fleet repository commit the event is about (a SHA),
	// when there is one.
	Commit string `json:"commit,omitempty"`
	// The subject: the rollout, device and check the event is about, each
	// empty when it does not apply.
	Rollout string `json:"rollout,omitempty"`
	Device  string `json:"device,omitempty"`
	Check   string `json:"check,omitempty"`
	// Details are free-form facts for a human or a script (phase, reason,
	// severity, evidence line, …). Never put a secret here.
	Details map[string]string `json:"details,omitempty"`
}

// NewID returns a fresh random event ID (26 base32 characters).
func NewID() string { return rand.Text() }

// maxIDLen bounds an event ID (it travels in a header and a Message-ID).
const maxIDLen = 128

// Validate reports what is wrong with e, if anything: an unknown kind, or
// an ID that is not 1–128 characters of [A-Za-z0-9._:-] (it travels in a
// header, so it must not be able to carry anything else).
func (e Event) Validate() error {
	if !e.Kind.Valid() {
		return fmt.Errorf("%w: %q (want one of %v)", ErrUnknownKind, e.Kind, kinds)
	}
	if e.ID != "" && !validID(e.ID) {
		return fmt.Errorf("%w: %q (use 1-%d characters of A-Z a-z 0-9 . _ : -, or leave it empty for a fresh one)",
			ErrBadID, e.ID, maxIDLen)
	}
	return nil
}

func validID(id string) bool {
	if len(id) == 0 || len(id) > maxIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("._:-", c) >= 0) {
			return false
		}
	}
	return true
}

// oneLine makes a value safe for a single line of a mail subject, a header
// or a chat message: control characters (CR and LF included) become
// spaces and the length is bounded, so a device name or an evidence line
// can neither start a new header nor flood a message.
func oneLine(s string) string {
	const max = 200
	if len(s) > max {
		s = s[:max] + "…"
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r == 0x2028 || r == 0x2029 || (r >= 0x80 && r < 0xa0) {
			return ' '
		}
		return r
	}, strings.ToValidUTF8(s, "?"))
}

// subject is a short human description of what the event is about.
func (e Event) subject() string {
	s := ""
	add := func(label, v string) {
		if v == "" {
			return
		}
		if s != "" {
			s += " "
		}
		s += label + " " + oneLine(v)
	}
	add("rollout", e.Rollout)
	add("check", e.Check)
	add("device", e.Device)
	if e.Commit != "" {
		c := e.Commit
		if len(c) > 12 {
			c = c[:12]
		}
		add("commit", c)
	}
	return s
}

// Filter selects the events a sink wants, as a Notification manifest's
// events, rollouts and checks lists do: Events selects kinds (empty: all);
// Rollouts, when set, narrows the rollout.* events to those rollouts; Checks,
// when set, narrows the alert.* events to those checks. Other events
// (commit.*, device.pending) are selected by Events alone.
type Filter struct {
	Events   []Kind
	Rollouts []string
	Checks   []string
}

// Match reports whether the filter selects e.
func (f Filter) Match(e Event) bool {
	if len(f.Events) > 0 && !slices.Contains(f.Events, e.Kind) {
		return false
	}
	k := string(e.Kind)
	if len(f.Rollouts) > 0 && strings.HasPrefix(k, "rollout.") && !slices.Contains(f.Rollouts, e.Rollout) {
		return false
	}
	if len(f.Checks) > 0 && strings.HasPrefix(k, "alert.") && !slices.Contains(f.Checks, e.Check) {
		return false
	}
	return true
}

// Validate reports an unknown event kind in the filter.
func (f Filter) Validate() error {
	for _, k := range f.Events {
		if !k.Valid() {
			return fmt.Errorf("filter: %w: %q (want one of %v)", ErrUnknownKind, k, kinds)
		}
	}
	return nil
}
