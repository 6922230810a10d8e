package rollout

import (
	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gitfleet/gitfleet/schema"
)

// A Plan is a Snapshot's rollouts compiled for decisions. It is immutable
// and safe for concurrent use; build one per Snapshot and keep it beside
// it.
type Plan struct{}

// Compile builds the Plan of fleet. records are the store's rollout
// records (store.Generations.Rollouts) for the fleet's commit: a rollout
// without a record, or whose record is stopped, admits nobody
// (ReasonNotRecorded). Compile does not fail; what it cannot use it
// reports in Problems.
func Compile(fleet *schema.Fleet, records []store.RolloutRecord) *Plan {
	return &Plan{}
}

// Problems lists what Compile could not use, in words.
func (p *Plan) Problems() []string { return nil }

// Route names the generation d follows: the running generation of the
// highest-priority rollout that targets d. ok is false when none does;
// reason then says why (ReasonNotTargeted, ReasonNotRecorded).
func (p *Plan) Route(d *Device) (g store.GenerationRef, reason Reason, ok bool) {
	return store.GenerationRef{}, ReasonNotTargeted, false
}

// Next decides what d (in.Device) should install now. See the package doc
// for the rules; the Decision's Reason says which one decided.
func (p *Plan) Next(in NextInput) Decision { return Decision{Reason: ReasonNotTargeted} }

// OnStatus decides whether the generation aborts after a status report or
// an alert, and whether the reporting device's phase just completed.
func (p *Plan) OnStatus(in StatusInput) StatusDecision { return StatusDecision{} }

// Rollout describes the rollout called name.
func (p *Plan) Rollout(name string) (Info, bool) { return Info{}, false }

// Rollouts describes every rollout, highest priority first.
func (p *Plan) Rollouts() []Info { return nil }
