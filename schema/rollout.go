package schema

// A Rollout delivers one artifact to a target in ordered phases.
type Rollout struct {
	Meta
	Spec RolloutSpec
}

// RolloutSpec is the spec of a [Rollout].
type RolloutSpec struct {
	Artifact string `json:"artifact"` // Artifact name
	Target   Target `json:"target"`

	// Phases are cumulative: each admits a larger share of the target than
	// the one before. They run in order.
	Phases []Phase `json:"phases"`

	// MaintenanceWindows, when set, limit when devices may start
	// installing; outside every window nobody new is admitted.
	MaintenanceWindows []MaintenanceWindow `json:"maintenanceWindows,omitempty"`

	// Paused stops admitting devices; devices already updating finish.
	Paused bool `json:"paused,omitempty"`

	// Retries is how many times a device that failed may try again.
	Retries int `json:"retries,omitempty"`

	// Priority decides between rollouts that target the same device: the
	// highest wins. Rollouts that may overlap must have distinct priorities.
	Priority int `json:"priority,omitempty"`

	// AllowDowngrade lets devices install an artifact older than theirs.
	AllowDowngrade bool `json:"allowDowngrade,omitempty"`

	// ApprovedPhases names the phases whose approval gate is open. Adding a
	// name here, in its own reviewed commit, is how a phase is promoted.
	ApprovedPhases []string `json:"approvedPhases,omitempty"`
}

// MarshalJSON encodes r in the shape of its manifest.
func (r Rollout) MarshalJSON() ([]byte, error) { return marshal(&r.Meta, &r.Spec) }

// Phase returns the phase called name, or nil.
func (r *Rollout) Phase(name string) *Phase {
	for i := range r.Spec.Phases {
		if r.Spec.Phases[i].Name == name {
			return &r.Spec.Phases[i]
		}
	}
	return nil
}

// Approved reports whether the phase called name may open: it needs no
// approval or it is listed in ApprovedPhases.
func (r *Rollout) Approved(name string) bool {
	p := r.Phase(name)
	if p == nil {
		return false
	}
	if !p.RequiresApproval {
		return true
	}
	for _, n := range r.Spec.ApprovedPhases {
		if n == name {
			return true
		}
	}
	return false
}

// A Phase admits a share of a rollout's target. Exactly one of Percent and
// Count is set; both are cumulative totals, not increments.
type Phase struct {
	Name string `json:"name"`

	// Percent of the target admitted once this phase opens, in (0, 100].
	Percent float64 `json:"percent,omitempty"`

	// Count of devices admitted once this phase opens.
	Count int `json:"count,omitempty"`

	// Hold is how long to wait after the phase completes before the next
	// one may open.
	Hold Duration `json:"hold,omitzero"`

	// RequiresApproval keeps the phase closed until it is listed in the
	// rollout's approvedPhases.
	RequiresApproval bool `json:"requiresApproval,omitempty"`

	// Abort says when the rollout aborts while this phase is open.
	Abort AbortCriteria `json:"abort,omitzero"`
}

// AbortCriteria say when a rollout aborts. Any one criterion met aborts.
type AbortCriteria struct {
	// MaxFailures is the number of failed devices tolerated; one more
	// aborts. Nil means no limit; 0 aborts on the first failure.
	MaxFailures *int `json:"maxFailures,omitempty"`

	// MaxFailurePercent is the share of failed devices, among those that
	// finished, tolerated once at least MinSample devices have finished.
	// Nil means no limit.
	MaxFailurePercent *float64 `json:"maxFailurePercent,omitempty"`
	MinSample         int      `json:"minSample,omitempty"`

	// Alerts names MonitorChecks whose alerts, raised on a device admitted
	// by the rollout, abort it.
	Alerts []string `json:"alerts,omitempty"`
}

// IsZero reports whether no criterion is set.
func (a AbortCriteria) IsZero() bool {
	return a.MaxFailures == nil && a.MaxFailurePercent == nil && len(a.Alerts) == 0
}

// A MaintenanceWindow is a daily time range, on some days of the week, in
// a time zone. End before Start means the window runs past midnight.
type MaintenanceWindow struct {
	Days     []string `json:"days,omitempty"` // "mon".."sun"; empty means every day
	Start    string   `json:"start"`          // "HH:MM"
	End      string   `json:"end"`            // "HH:MM"
	TimeZone string   `json:"timeZone,omitempty"`
}
