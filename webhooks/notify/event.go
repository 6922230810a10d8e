package notify

import (
	"crypto/rand"
	"fmt"
	"slices"
	"time"
)

// Kind is the name of an event, one of the schema's #Event list
// (schema/notification.cue). The same names are what the controller emits
// and what a Notification manifest's events list selects.
type Kind string

// The event kinds, exactly as the schema's #Event spells them.
const (
	RolloutStarted          Kind = "rollout.started"
	RolloutPhaseOpened      Kind = "rollout.phase_opened"
	RolloutPhaseCompleted   Kind = "rollout.phase_completed"
	RolloutAwaitingApproval Kind = "rollout.awaiting_approval"
	RolloutPaused           Kind = "rollout.paused"
	RolloutAborted          Kind = "rollout.aborted"
	RolloutCompleted        Kind = "rollout.completed"
	AlertRaised             Kind = "alert.raised"
	AlertCleared            Kind = "alert.cleared"
	DevicePending           Kind = "device.pending"
	CommitRefused           Kind = "commit.refused"
)

var kinds = []Kind{
	RolloutStarted, RolloutPhaseOpened, RolloutPhaseCompleted,
	RolloutAwaitingApproval, RolloutPaused, RolloutAborted, RolloutCompleted,
	AlertRaised, AlertCleared, DevicePending, CommitRefused,
}

// Kinds returns every event kind, in the schema's order.
func Kinds() []Kind { return slices.Clone(kinds) }

// Valid reports whether k is one of [Kinds].
func (k Kind) Valid() bool { return slices.Contains(kinds, k) }

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

// Validate reports what is wrong with e, if anything.
func (e Event) Validate() error {
	if !e.Kind.Valid() {
		return fmt.Errorf("%w: %q (want one of %v)", ErrUnknownKind, e.Kind, kinds)
	}
	return nil
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
		s += label + " " + v
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

// Filter selects the events a sink wants, mirroring a Notification
// manifest's events, rollouts and checks lists. An empty list selects
// everything along that axis. Rollouts restricts only events that name a
// rollout and Checks only events that name a check: with Rollouts set to
// ["canary"], an alert (which names no rollout) still passes, and Checks
// then decides about it.
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
	if len(f.Rollouts) > 0 && e.Rollout != "" && !slices.Contains(f.Rollouts, e.Rollout) {
		return false
	}
	if len(f.Checks) > 0 && e.Check != "" && !slices.Contains(f.Checks, e.Check) {
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
