package schema

import "time"

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

	// DeviceTimeout is how long an admitted device has to reach a final
	// state (success or failure) before it is counted as timed out; each
	// retry gets as long again. Zero means DefaultDeviceTimeout.
	DeviceTimeout Duration `json:"deviceTimeout,omitzero"`

	// OnlineWindow: a device seen by the controller within this window
	// holds its place in a count or percent phase; one not seen for
	// longer gives its place to the next devices by rank, so offline
	// devices never block a phase. Zero means DefaultOnlineWindow.
	OnlineWindow Duration `json:"onlineWindow,omitzero"`
}

// Defaults of [RolloutSpec]. The Mender client polls for updates every 30
// minutes by default (UpdatePollIntervalSeconds 1800) and every 5 minutes
// while retrying (RetryPollIntervalSeconds 300), and reports each step of
// an update (downloading, installing, rebooting) as it goes. Four hours is
// eight update polls: room for a slow download, a reboot and the commit
// on a poor link, short enough that a phase does not wait a day on a
// device that vanished. An hour online window is two update polls: a
// device that missed both is offline for the purpose of choosing.
const (
	DefaultDeviceTimeout = 4 * time.Hour
	DefaultOnlineWindow  = time.Hour
)

// Timeout is the device timeout in effect (DeviceTimeout or its default).
func (s *RolloutSpec) Timeout() time.Duration {
	if s.DeviceTimeout.Duration > 0 {
		return s.DeviceTimeout.Duration
	}
	return DefaultDeviceTimeout
}

// Window is the online window in effect (OnlineWindow or its default).
func (s *RolloutSpec) Window() time.Duration {
	if s.OnlineWindow.Duration > 0 {
		return s.OnlineWindow.Duration
	}
	return DefaultOnlineWindow
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

	// MaxTimedOut is the number of timed-out devices tolerated; one more
	// aborts. Nil means no limit. MaxTimedOutPercent is their share among
	// the devices that finished (succeeded, failed or timed out) tolerated
	// once at least MinSample have finished. Timed-out devices are not
	// failures: MaxFailures and MaxFailurePercent do not count them.
	MaxTimedOut        *int     `json:"maxTimedOut,omitempty"`
	MaxTimedOutPercent *float64 `json:"maxTimedOutPercent,omitempty"`

	// Alerts names MonitorChecks whose alerts, raised on a device admitted
	// by the rollout, abort it.
	Alerts []string `json:"alerts,omitempty"`
}

// IsZero reports whether no criterion is set.
func (a AbortCriteria) IsZero() bool {
	return a.MaxFailures == nil && a.MaxFailurePercent == nil && len(a.Alerts) == 0 &&
		a.MaxTimedOut == nil && a.MaxTimedOutPercent == nil
}

// A MaintenanceWindow is a daily time range, on some days of the week, in
// a time zone. End before Start means the window runs past midnight.
type MaintenanceWindow struct {
	Days     []string `json:"days,omitempty"` // "mon".."sun"; empty means every day
	Start    string   `json:"start"`          // "HH:MM"
	End      string   `json:"end"`            // "HH:MM"
	TimeZone string   `json:"timeZone,omitempty"`
}
