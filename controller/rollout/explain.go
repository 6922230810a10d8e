package rollout

import (
	"time"

	"github.com/gitfleet/gitfleet/controller/store"
)

// Gates is what a rollout's gates allow at one moment, for status pages:
// the management API says from it what each phase waits for.
type Gates struct {
	// Open is the last open phase (admitting, or done); -1 when the first
	// phase waits for approval.
	Open int
	// Next is what keeps phase Open+1 closed: ReasonWaitPhase (phase Open
	// has not completed), ReasonHold (until Until) or ReasonApproval; ""
	// when every phase is open.
	Next  Reason
	Until time.Time
	// Paused is spec.paused: nobody new is admitted.
	Paused bool
	// WindowOpens, when not zero, is when the next maintenance window
	// opens: now is outside every window, so nobody new is admitted.
	WindowOpens time.Time
	// DeviceTimeout and OnlineWindow are the rollout's settings in effect.
	DeviceTimeout, OnlineWindow time.Duration
	// Exact reports a closed target, whose phases rank devices (see
	// [Plan.Ranked]).
	Exact bool
}

// Gates evaluates the gates of rollout name at now from its generation's
// progress (completion times from Progress.Phases[k].Completed), exactly as
// [Plan.Next] does. ok is false when the plan has no rollout called name.
func (p *Plan) Gates(name string, now time.Time, prog store.Progress) (g Gates, ok bool) {
	pl := p.byName[name]
	if pl == nil {
		return Gates{}, false
	}
	in := NextInput{Now: now, Progress: prog}
	for _, c := range prog.Phases {
		in.Completed = append(in.Completed, c.Completed)
	}
	st := pl.gates(&in)
	g = Gates{Open: st.open, Next: st.why, Until: st.until, Paused: pl.ro.Spec.Paused,
		DeviceTimeout: pl.timeout, OnlineWindow: pl.online, Exact: pl.exact}
	if st.open == len(pl.phases)-1 {
		g.Next = ""
	}
	if !pl.inWindow(now) {
		g.WindowOpens = pl.nextWindow(now)
	}
	return g, true
}

// Ranked returns the devices (by ID, in rank order) that rollout name's
// closed target ranks into phase k: positions L(k−1) … L(k)−1. Offline
// devices give up their places to later ones (see the package doc), so
// the devices admitted into k may differ. Nil for an open target, an
// unknown rollout or phase.
func (p *Plan) Ranked(name string, k int) []string {
	pl := p.byName[name]
	if pl == nil || !pl.exact || k < 0 || k >= len(pl.phases) {
		return nil
	}
	from := pl.phases[k].cum - pl.phases[k].limit
	out := make([]string, 0, pl.phases[k].limit)
	for _, key := range pl.keys[from:pl.phases[k].cum] {
		out = append(out, key.id)
	}
	return out
}

// Approval returns whether phase k of rollout name requires approval that
// Git has not given (spec.approvedPhases does not name it).
func (p *Plan) Approval(name string, k int) bool {
	pl := p.byName[name]
	return pl != nil && k >= 0 && k < len(pl.phases) && !pl.approved[k]
}
