package rollout

import (
	"fmt"
	"strings"
	"time"

	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gitfleet/gitfleet/schema"
)

// A Device is what a polling device is known by and what it said.
type Device struct {
	// ID is the name of the Device manifest that accepted the device. It
	// is the key of phase membership and what targets name; use it as the
	// device argument of store.Admit and store.Report too.
	ID string

	// Identity is the device's identity data (id_data); Inventory its
	// last reported inventory attributes. Selectors match them.
	Identity  map[string]string
	Inventory map[string]string

	// DeviceType is the device type it reports (device_provides or the
	// inventory's device_type).
	DeviceType string

	// Provides is what the device runs: artifact_name, artifact_group and
	// other provides such as rootfs-image.version (device_provides of
	// deployments/next, or the inventory when the client sends none).
	Provides map[string]string

	// Declared, when set, is the Device manifest that admitted the
	// device: a Plan of the fleet it belongs to finds the device by it,
	// without looking ID up among a million names. (Any other value is
	// ignored: the Plan then looks ID up.)
	Declared *schema.Device
}

// Action says what the caller does with a [Decision].
type Action uint8

const (
	// None: no deployment for the device now (the device API answers
	// 204). Reason says why.
	None Action = iota
	// Admit: call store.Admit(Generation, Phase, Limit, device.ID); when
	// it admits the device, serve Artifact; when it does not (the phase
	// filled or the generation was aborted meanwhile), answer 204 and let
	// the next poll decide again.
	Admit
	// Resume: the device was admitted before and has not finished; serve
	// Artifact again (Deployment is its record).
	Resume
	// Installed: the device already runs Artifact. Call store.Admit as
	// for Admit and, when it admits the device, store.Report success for
	// it, so its phase's quota completes; answer 204 either way.
	Installed
)

func (a Action) String() string {
	switch a {
	case None:
		return "none"
	case Admit:
		return "admit"
	case Resume:
		return "resume"
	case Installed:
		return "installed"
	}
	return "action(?)"
}

// Reason is a machine-readable why of a [Decision], stable for logs,
// metrics and the dashboard.
type Reason string

const (
	ReasonAdmit     Reason = "admit"     // Action Admit
	ReasonResume    Reason = "resume"    // Action Resume
	ReasonInstalled Reason = "installed" // Action Installed, or None: already runs the artifact and is not due in a phase now

	ReasonNotTargeted  Reason = "not-targeted"   // no rollout targets the device
	ReasonNotRecorded  Reason = "not-recorded"   // the rollout has no running generation in the store (yet)
	ReasonStale        Reason = "stale"          // NextInput.Generation is not what the plan routes the device to
	ReasonDone         Reason = "done"           // the device's deployment succeeded
	ReasonFailed       Reason = "failed"         // the device's deployment failed and its retries are used up
	ReasonAborted      Reason = "aborted"        // the generation was aborted
	ReasonDeviceType   Reason = "incompatible"   // the artifact does not support the device type
	ReasonDepends      Reason = "depends"        // the device does not provide what the artifact depends on
	ReasonDowngrade    Reason = "downgrade"      // the artifact is older than what the device runs
	ReasonPaused       Reason = "paused"         // spec.paused
	ReasonWindow       Reason = "outside-window" // outside every maintenance window; Until is when the next opens
	ReasonWaitPhase    Reason = "waiting-phase"  // the device's phase is not open: the phase before it is still running
	ReasonHold         Reason = "hold"           // ... or holding until Until
	ReasonApproval     Reason = "approval"       // ... or waiting for PhaseName's approval in Git
	ReasonPhaseFull    Reason = "phase-full"     // every open phase the device may join is full
	ReasonBeyondPhases Reason = "beyond-phases"  // the device is after the last phase (which is below 100 %)

	// ReasonTimedOut: the device's deployment timed out (it did not reach
	// a final state within the rollout's device timeout); when
	// Decision.TimedOut is set, this decision is the one that found it.
	ReasonTimedOut Reason = "timed-out"
	// ReasonArtifactRefused: the controller refuses the rollout's
	// artifact (NextInput.ArtifactRefused); nobody is admitted or served.
	ReasonArtifactRefused Reason = "artifact-refused"
)

// NextInput is what [Plan.Next] decides from. Generation, Progress,
// Completed and Deployment are the store's view of the generation that
// [Plan.Route] named, read just before the call.
type NextInput struct {
	Device     *Device
	Now        time.Time
	Generation store.GenerationRef
	Progress   store.Progress
	// Completed[k] is when phase k was recorded complete; zero or missing
	// means not recorded.
	Completed []time.Time
	// Deployment is the device's deployment in Generation, nil if it was
	// never admitted.
	Deployment *store.Deployment

	// ArtifactRefused, when not empty, is why the controller refuses the
	// rollout's artifact (the check that failed): nobody is admitted and
	// admitted devices are not served it (ReasonArtifactRefused).
	ArtifactRefused string

	// LastSeen says when a device (by ID) was last seen, zero when not
	// known, and Admitted whether it has a deployment in Generation. With
	// both set, a closed target's phases choose among present devices:
	// see "Offline devices" in the package doc. Nil: every device counts
	// as present (the order by rank alone).
	LastSeen func(device string) time.Time
	Admitted func(device string) bool
}

// Decision is what to do with a polling device.
type Decision struct {
	Action Action
	Reason Reason

	// Generation is the rollout generation the decision is about (zero
	// when no rollout targets the device).
	Generation store.GenerationRef

	// Phase and PhaseName: for Admit and Installed the phase to admit
	// into, with Limit its quota (the limit argument of store.Admit); for
	// Resume the device's phase; for ReasonApproval the phase waiting for
	// approval; for ReasonHold and ReasonWaitPhase the phase that would
	// open next.
	Phase     int
	PhaseName string
	Limit     int64

	// Artifact is the Artifact manifest name and ArtifactName its
	// artifact_name, for Admit, Resume and Installed.
	Artifact     string
	ArtifactName string

	// Deployment is the device's record, for Resume.
	Deployment store.Deployment

	// Until is when a hold ends (ReasonHold) or the next maintenance
	// window opens (ReasonWindow); zero when unknown.
	Until time.Time

	// TimedOut: the device's deployment is past its deadline (see
	// [Plan.Deadline]); the caller reports store.StateTimeout for it and
	// passes the new counts to [Plan.OnStatus], as for a status report.
	TimedOut bool

	// NewlyComplete has bit k set for each phase k that the progress shows
	// complete but whose completion time is not recorded: the caller
	// records now for it (first writer wins) and announces it.
	NewlyComplete uint64
}

// StatusInput is what [Plan.OnStatus] decides from, after a status report
// or an alert changed the store.
type StatusInput struct {
	Generation store.GenerationRef
	// Phase is the phase of the device that reported (or alerted).
	Phase int
	// Progress is the generation's progress after the report.
	Progress store.Progress
	// Alerts counts, per MonitorCheck name, the devices admitted into the
	// generation on which that check's alert is currently raised.
	Alerts map[string]int64
}

// StatusDecision says what follows from a status report.
type StatusDecision struct {
	// Abort: call store.Abort(Generation, Reason) and announce Reason.
	Abort  bool
	Reason string
	// Criterion names what aborted: "maxFailures", "maxFailurePercent",
	// "maxTimedOut", "maxTimedOutPercent" or "alert".
	Criterion string

	// PhaseCompleted: the reporting device's phase is complete with this
	// report; record now as its completion time (first writer wins). Not
	// set once the generation is aborted, nor with an Abort by the phase's
	// failure or timeout criteria: that phase ended in an abort.
	PhaseCompleted bool
}

// Info describes one rollout as the plan sees it, for status pages, the
// CLI and tests.
type Info struct {
	Name       string
	Generation store.GenerationRef // zero when not recorded
	Artifact   string              // Artifact manifest name
	Priority   int
	// Exact is true for a closed target (see the package doc): Size is
	// then the number of devices targeted, otherwise an upper bound.
	Exact  bool
	Size   int
	Phases []PhaseInfo
}

// PhaseInfo is one phase of an [Info].
type PhaseInfo struct {
	Name       string
	Cumulative int64 // L(k): devices admitted by the end of this phase
	Limit      int64 // the phase's quota, L(k) − L(k−1)
}

// String describes d in one line, for logs and golden files.
func (d Decision) String() string {
	var b strings.Builder
	b.WriteString(d.Action.String())
	if string(d.Reason) != d.Action.String() {
		b.WriteString(" ")
		b.WriteString(string(d.Reason))
	}
	if d.Generation.Rollout != "" {
		fmt.Fprintf(&b, " %s:%d", d.Generation.Rollout, d.Generation.Generation)
	}
	switch {
	case d.Action != None:
		fmt.Fprintf(&b, " phase %d %q", d.Phase, d.PhaseName)
		if d.Action != Resume {
			fmt.Fprintf(&b, " limit %d", d.Limit)
		}
		fmt.Fprintf(&b, " artifact %s", d.ArtifactName)
		if d.Action == Resume {
			fmt.Fprintf(&b, " (%s, attempt %d)", d.Deployment.State, d.Deployment.Attempts+1)
		}
	case d.PhaseName != "":
		fmt.Fprintf(&b, " phase %d %q", d.Phase, d.PhaseName)
	}
	if !d.Until.IsZero() {
		fmt.Fprintf(&b, " until %s", d.Until.UTC().Format(time.RFC3339))
	}
	if d.TimedOut {
		b.WriteString(" TIMEOUT")
	}
	if d.NewlyComplete != 0 {
		b.WriteString(" newly-complete")
		for k := range 64 {
			if d.NewlyComplete&(1<<k) != 0 {
				fmt.Fprintf(&b, " %d", k)
			}
		}
	}
	return b.String()
}
