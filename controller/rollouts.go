package controller

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gitfleet/gitfleet/controller/deviceapi"
	"github.com/gitfleet/gitfleet/controller/reconcile"
	"github.com/gitfleet/gitfleet/controller/rollout"
	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gitfleet/gitfleet/schema"
	"github.com/labstack/echo/v5"
)

// RolloutView is a rollout as the management API shows it: the store's
// record and the progress of its current generation, phase by phase, with
// what each phase waits for.
type RolloutView struct {
	store.RolloutRecord
	Phases  []PhaseView `json:"phases,omitempty"`
	Aborted string      `json:"aborted,omitempty"` // the abort reason
	// DeviceTimeout and OnlineWindow are the rollout's settings in effect
	// (Go durations); empty when the served commit does not declare it.
	DeviceTimeout string `json:"device_timeout,omitempty"`
	OnlineWindow  string `json:"online_window,omitempty"`
	// ArtifactRefused is why the controller refuses the rollout's
	// artifact (the check that failed: digest, signature, key, format…):
	// while it does, nobody is admitted or served.
	ArtifactRefused string `json:"artifact_refused,omitempty"`
}

// PhaseView is one phase's progress and what it waits for.
type PhaseView struct {
	// Name and Limit (the phase's quota of devices) come from the served
	// commit's manifest; Name is empty for a phase it no longer declares.
	Name      string     `json:"name,omitempty"`
	Limit     int64      `json:"limit"`
	Admitted  int64      `json:"admitted"`
	Succeeded int64      `json:"succeeded"`
	Failed    int64      `json:"failed"`
	TimedOut  int64      `json:"timed_out"`
	Completed *time.Time `json:"completed,omitempty"`
	// Waiting lists what keeps the phase from completing or opening;
	// empty when it is complete or the generation is aborted.
	Waiting []Wait `json:"waiting,omitempty"`
}

// Wait is one thing a phase waits for. Reason says which; the other
// fields belong to it:
//
//   - "approval": the phase requires approval; Commit says what to commit
//     (add the phase to spec.approvedPhases).
//   - "previous-phase": the phase before it has not completed.
//   - "hold": the phase before it completed; the hold runs Until.
//   - "artifact-refused": the controller refuses the rollout's artifact;
//     Detail says which check failed. Nobody is admitted until a commit
//     fixes it.
//   - "paused": spec.paused is set.
//   - "window": outside every maintenance window; the next opens at Opens.
//   - "devices": admitted devices that have not reached a final state,
//     InProgress counting them per deployment state (downloading,
//     installing, rebooting, retrying, admitted …); a device past
//     DeviceTimeout is counted timed out at its next poll or sweep.
//   - "not-polled": places of the phase not taken yet. Places is how many;
//     for a closed target (devices ranked by the stable hash) Devices
//     names the devices ranked into the phase that have not been admitted,
//     and OldestLastSeen is the oldest last authentication among them
//     (Never counts those the store never saw). Offline devices give up
//     their places to the next ranked ones after the online window.
type Wait struct {
	Reason         string           `json:"reason"`
	Commit         string           `json:"commit,omitempty"`
	Until          *time.Time       `json:"until,omitempty"`
	Opens          *time.Time       `json:"opens,omitempty"`
	InProgress     map[string]int64 `json:"in_progress,omitempty"`
	Places         int64            `json:"places,omitempty"`
	Devices        []string         `json:"devices,omitempty"`
	OldestLastSeen *time.Time       `json:"oldest_last_seen,omitempty"`
	Never          int              `json:"never_seen,omitempty"`
	Detail         string           `json:"detail,omitempty"`
}

// maxStateReads bounds the deployment records one rollouts request reads
// to count in-progress states, per phase.
const maxStateReads = 1000

func utc(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}

func (c *Controller) rollouts(ctx *echo.Context) error {
	out, err := c.rolloutViews(ctx.Request().Context(), time.Now())
	if err != nil {
		return echo.NewHTTPError(http.StatusServiceUnavailable, "store: "+err.Error())
	}
	return ctx.JSON(http.StatusOK, map[string]any{"rollouts": out})
}

// rolloutViews builds the view of every rollout the store knows at now:
// what GET /rollouts and the dashboard show.
func (c *Controller) rolloutViews(ctx context.Context, now time.Time) ([]RolloutView, error) {
	ros, err := c.opts.Store.Rollouts(ctx)
	if err != nil {
		return nil, err
	}
	snap := c.rec.Live()
	plan := c.planOf(snap, ros)
	out := make([]RolloutView, 0, len(ros))
	for _, r := range ros {
		v, err := c.rolloutView(ctx, snap, plan, r, now)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

// rolloutView builds r's view at now; plan may be nil (no commit served).
func (c *Controller) rolloutView(ctx context.Context, snap *reconcile.Snapshot, plan *rollout.Plan, r store.RolloutRecord, now time.Time) (RolloutView, error) {
	v := RolloutView{RolloutRecord: r}
	if r.Stopped || r.Generation < 1 {
		return v, nil
	}
	g := store.GenerationRef{Rollout: r.Name, Generation: r.Generation}
	p, err := c.opts.Store.Progress(ctx, g)
	if err != nil {
		return v, err
	}
	v.Aborted = p.Aborted
	if ro := fleetRollout(snap, r.Name); ro != nil && c.opts.Devices.Artifacts != nil {
		_, err := c.opts.Devices.Artifacts.Lookup(ro.Spec.Artifact)
		v.ArtifactRefused = deviceapi.ArtifactRefusal(err)
	}
	var info rollout.Info
	var gates rollout.Gates
	declared := false
	if plan != nil {
		if info, declared = plan.Rollout(r.Name); declared {
			gates, _ = plan.Gates(r.Name, now, p)
			v.DeviceTimeout, v.OnlineWindow = gates.DeviceTimeout.String(), gates.OnlineWindow.String()
		}
	}
	n := len(p.Phases)
	if declared {
		n = max(n, len(info.Phases))
	}
	var admitted map[string]store.Change // device → its admission, read once
	for k := range n {
		var pc store.PhaseCounts
		if k < len(p.Phases) {
			pc = p.Phases[k]
		}
		pv := PhaseView{Admitted: pc.Admitted, Succeeded: pc.Succeeded, Failed: pc.Failed, TimedOut: pc.TimedOut, Completed: utc(pc.Completed)}
		if declared && k < len(info.Phases) {
			pv.Name, pv.Limit = info.Phases[k].Name, info.Phases[k].Limit
		}
		if declared && p.Aborted == "" && pc.Completed.IsZero() && k < len(info.Phases) {
			if admitted == nil {
				if admitted, err = c.admissions(ctx, g, p); err != nil {
					return v, err
				}
			}
			if pv.Waiting, err = c.phaseWaits(ctx, snap, plan, g, k, pv, gates, admitted); err != nil {
				return v, err
			}
			if v.ArtifactRefused != "" && k <= gates.Open {
				pv.Waiting = append([]Wait{{Reason: "artifact-refused", Detail: v.ArtifactRefused}}, pv.Waiting...)
			}
		}
		v.Phases = append(v.Phases, pv)
	}
	return v, nil
}

// admissions reads g's change log: each admitted device's admission and,
// when it finished, its final state (Change.State).
func (c *Controller) admissions(ctx context.Context, g store.GenerationRef, p store.Progress) (map[string]store.Change, error) {
	out := make(map[string]store.Change)
	total := p.ChangeCount()
	for from := int64(0); from < total; {
		chs, err := c.opts.Store.Changes(ctx, g, from, store.MaxChangesPage)
		if err != nil {
			return nil, err
		}
		if len(chs) == 0 {
			break
		}
		for _, ch := range chs {
			out[ch.Device] = ch
		}
		from += int64(len(chs))
	}
	return out, nil
}

// phaseWaits says what phase k (not complete, generation running) waits
// for.
func (c *Controller) phaseWaits(ctx context.Context, snap *reconcile.Snapshot, plan *rollout.Plan, g store.GenerationRef, k int, pv PhaseView, gates rollout.Gates, admitted map[string]store.Change) ([]Wait, error) {
	var out []Wait
	if k > gates.Open {
		// Closed: only what keeps it closed, the first gate on the way.
		if k == gates.Open+1 {
			switch gates.Next {
			case rollout.ReasonApproval:
				out = append(out, approvalWait(pv.Name))
			case rollout.ReasonHold:
				out = append(out, Wait{Reason: "hold", Until: utc(gates.Until)})
			default:
				out = append(out, Wait{Reason: "previous-phase"})
			}
		} else if plan.Approval(g.Rollout, k) {
			out = append(out, approvalWait(pv.Name))
		} else {
			out = append(out, Wait{Reason: "previous-phase"})
		}
		return out, nil
	}
	if gates.Paused {
		out = append(out, Wait{Reason: "paused"})
	}
	if !gates.WindowOpens.IsZero() {
		out = append(out, Wait{Reason: "window", Opens: utc(gates.WindowOpens)})
	}
	// Admitted devices not final.
	if pv.Admitted > pv.Succeeded+pv.Failed+pv.TimedOut {
		states := map[string]int64{}
		reads := 0
		for dev, ch := range admitted {
			if ch.Phase != k || store.FinalState(ch.State) {
				continue
			}
			if reads == maxStateReads {
				states["not-read"]++
				continue
			}
			reads++
			d, err := c.opts.Store.Deployment(ctx, g, dev)
			if errors.Is(err, store.ErrNotFound) {
				continue
			}
			if err != nil {
				return nil, err
			}
			if !store.FinalState(d.State) {
				states[d.State]++
			}
		}
		if len(states) > 0 {
			out = append(out, Wait{Reason: "devices", InProgress: states})
		}
	}
	// Places not taken.
	if places := pv.Limit - pv.Admitted; places > 0 {
		w := Wait{Reason: "not-polled", Places: places}
		var oldest time.Time
		for _, id := range plan.Ranked(g.Rollout, k) {
			if _, ok := admitted[id]; ok {
				continue
			}
			w.Devices = append(w.Devices, id)
			seen, err := c.lastSeen(ctx, snap, id)
			if err != nil {
				return nil, err
			}
			switch {
			case seen.IsZero():
				w.Never++
			case oldest.IsZero() || seen.Before(oldest):
				oldest = seen
			}
		}
		w.OldestLastSeen = utc(oldest)
		out = append(out, w)
	}
	return out, nil
}

func approvalWait(phase string) Wait {
	return Wait{Reason: "approval", Commit: "add " + strconv.Quote(phase) + " to spec.approvedPhases of the Rollout"}
}

// deviceID is the device API's ID of the declared device name (derived
// from the identity its manifest declares); "" when the manifest declares
// no identity (a key-only device) or no such device is declared.
func (c *Controller) deviceID(snap *reconcile.Snapshot, name string) string {
	if snap == nil || snap.Fleet == nil {
		return ""
	}
	d := c.declaredDevice(snap, name)
	if d == nil || len(d.Spec.Identity) == 0 {
		return ""
	}
	return deviceapi.DeviceID(deviceapi.Attributes(d.Spec.Identity))
}

// lastSeen is when the store last saw the declared device name
// authenticate; zero when never (or its ID is unknown).
func (c *Controller) lastSeen(ctx context.Context, snap *reconcile.Snapshot, name string) (time.Time, error) {
	id := c.deviceID(snap, name)
	if id == "" {
		return time.Time{}, nil
	}
	d, err := c.opts.Store.Device(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return time.Time{}, nil
	}
	if err != nil {
		return time.Time{}, err
	}
	return d.LastSeen, nil
}

// RolloutDevice is one device admitted into a rollout's running
// generation, as GET /rollouts/:name/devices lists it.
type RolloutDevice struct {
	// Name is the device's Device manifest name (what the store keys its
	// deployment by); ID the device API's ID derived from the identity the
	// manifest declares ("" for a key-only device or one no longer declared).
	Name      string `json:"name"`
	ID        string `json:"id,omitempty"`
	Phase     int    `json:"phase"`
	PhaseName string `json:"phase_name,omitempty"`
	// State is the deployment's state now: admitted, a status the device
	// reported (downloading, installing, rebooting …), retrying, or final
	// (success, failure, timeout). Attempts counts failed attempts retried.
	State    string     `json:"state"`
	Attempts int        `json:"attempts"`
	Admitted *time.Time `json:"admitted,omitempty"`
	// Deadline is when the deployment times out if it has not finished
	// (admission + deviceTimeout × (1 + attempts)); absent when final.
	Deadline *time.Time `json:"deadline,omitempty"`
	// History is the generation's change log for the device: "admitted",
	// then its final state once reached.
	History  []string   `json:"history"`
	LastSeen *time.Time `json:"last_seen,omitempty"`
	// HasLog reports a stored deployment log (the device uploads one when
	// an update fails): GET /rollouts/:name/devices/:device/log.
	HasLog bool `json:"has_log"`
}

// rolloutDevices lists the devices admitted into rollout :name's running
// generation, in admission order (?from=N skips the first N; ?limit=1…1000,
// default 100).
func (c *Controller) rolloutDevices(ctx *echo.Context) error {
	limit, err := pageLimit(ctx)
	if err != nil {
		return err
	}
	from := 0
	if s := ctx.QueryParam("from"); s != "" {
		if from, err = strconv.Atoi(s); err != nil || from < 0 {
			return echo.NewHTTPError(http.StatusBadRequest, "from must be a device offset ≥ 0")
		}
	}
	g, out, total, err := c.rolloutDeviceList(ctx.Request().Context(), ctx.Param("name"), from, limit)
	if err != nil {
		return err
	}
	return ctx.JSON(http.StatusOK, map[string]any{"rollout": g.Rollout, "generation": g.Generation, "total": total, "devices": out})
}

// rolloutDeviceList lists up to limit devices admitted into rollout
// name's running generation, in admission order from the from-th, and how
// many it admitted in all: what GET /rollouts/:name/devices and the
// dashboard show. Its errors are echo.HTTPErrors (404 for an unknown or
// stopped rollout, 503 for the store).
func (c *Controller) rolloutDeviceList(rctx context.Context, name string, from, limit int) (store.GenerationRef, []RolloutDevice, int, error) {
	g, plan, snap, err := c.runningGeneration(rctx, name)
	if err != nil {
		return g, nil, 0, err
	}
	p, err := c.opts.Store.Progress(rctx, g)
	if err != nil {
		return g, nil, 0, echo.NewHTTPError(http.StatusServiceUnavailable, "store: "+err.Error())
	}
	var order []string
	history := map[string][]string{}
	total := p.ChangeCount()
	for at := int64(0); at < total; {
		chs, err := c.opts.Store.Changes(rctx, g, at, store.MaxChangesPage)
		if err != nil {
			return g, nil, 0, echo.NewHTTPError(http.StatusServiceUnavailable, "store: "+err.Error())
		}
		if len(chs) == 0 {
			break
		}
		for _, ch := range chs {
			if _, seen := history[ch.Device]; !seen {
				order = append(order, ch.Device)
			}
			history[ch.Device] = append(history[ch.Device], ch.State)
		}
		at += int64(len(chs))
	}
	var info rollout.Info
	if plan != nil {
		info, _ = plan.Rollout(g.Rollout)
	}
	out := []RolloutDevice{}
	for i := from; i < len(order) && len(out) < limit; i++ {
		name := order[i]
		d, err := c.opts.Store.Deployment(rctx, g, name)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return g, nil, 0, echo.NewHTTPError(http.StatusServiceUnavailable, "store: "+err.Error())
		}
		rd := RolloutDevice{Name: name, ID: c.deviceID(snap, name), Phase: d.Phase, State: d.State, Attempts: d.Attempts,
			Admitted: utc(d.Admitted), History: history[name]}
		if d.Phase < len(info.Phases) {
			rd.PhaseName = info.Phases[d.Phase].Name
		}
		if plan != nil {
			if t, ok := plan.Deadline(g, d); ok {
				rd.Deadline = utc(t)
			}
		}
		seen, err := c.lastSeen(rctx, snap, name)
		if err != nil {
			return g, nil, 0, echo.NewHTTPError(http.StatusServiceUnavailable, "store: "+err.Error())
		}
		rd.LastSeen = utc(seen)
		switch _, err := c.opts.Store.DeploymentLog(rctx, g, name); {
		case err == nil:
			rd.HasLog = true
		case !errors.Is(err, store.ErrNotFound):
			return g, nil, 0, echo.NewHTTPError(http.StatusServiceUnavailable, "store: "+err.Error())
		}
		out = append(out, rd)
	}
	return g, out, len(order), nil
}

// runningGeneration finds rollout name's running generation, and the plan
// of the served commit (nil when none is served).
func (c *Controller) runningGeneration(ctx context.Context, name string) (store.GenerationRef, *rollout.Plan, *reconcile.Snapshot, error) {
	ros, err := c.opts.Store.Rollouts(ctx)
	if err != nil {
		return store.GenerationRef{}, nil, nil, echo.NewHTTPError(http.StatusServiceUnavailable, "store: "+err.Error())
	}
	for _, r := range ros {
		if r.Name != name {
			continue
		}
		if r.Stopped || r.Generation < 1 {
			return store.GenerationRef{}, nil, nil, echo.NewHTTPError(http.StatusNotFound, "rollout "+strconv.Quote(name)+" is stopped (no longer declared in Git)")
		}
		snap := c.rec.Live()
		plan := c.planOf(snap, ros)
		return store.GenerationRef{Rollout: r.Name, Generation: r.Generation}, plan, snap, nil
	}
	return store.GenerationRef{}, nil, nil, echo.NewHTTPError(http.StatusNotFound, "no rollout "+strconv.Quote(name)+" (see GET /api/management/v1/rollouts)")
}

// rolloutDeviceLog returns the deployment log device (its manifest name)
// uploaded in rollout :name's running generation: the last lines (at most
// store.MaxLogLines, within store.MaxLogBytes), how many earlier ones were
// dropped, and when it was stored. 404 when it uploaded none.
func (c *Controller) rolloutDeviceLog(ctx *echo.Context) error {
	rctx := ctx.Request().Context()
	device := ctx.Param("device")
	if err := store.ValidateGeneration(store.GenerationRef{Rollout: "x", Generation: 1}, &device); err != nil {
		return echo.NewHTTPError(http.StatusBadRequest, "bad device name")
	}
	g, _, snap, err := c.runningGeneration(rctx, ctx.Param("name"))
	if err != nil {
		return err
	}
	l, err := c.opts.Store.DeploymentLog(rctx, g, device)
	if errors.Is(err, store.ErrNotFound) {
		return echo.NewHTTPError(http.StatusNotFound, "no deployment log of "+strconv.Quote(device)+" in "+g.String()+
			" (a device uploads one when its update fails; see GET /api/management/v1/rollouts/"+g.Rollout+"/devices)")
	}
	if err != nil {
		return echo.NewHTTPError(http.StatusServiceUnavailable, "store: "+err.Error())
	}
	if l.Lines == nil {
		l.Lines = []store.LogLine{}
	}
	return ctx.JSON(http.StatusOK, map[string]any{"rollout": g.Rollout, "generation": g.Generation, "device": device,
		"id": c.deviceID(snap, device), "log": l})
}

// fleetRollout returns the Rollout manifest called name in snap, or nil.
func fleetRollout(snap *reconcile.Snapshot, name string) *schema.Rollout {
	if snap == nil || snap.Fleet == nil {
		return nil
	}
	return snap.Fleet.Rollout(name)
}

// Words says in words what the phase waits for, as the dashboard and
// `gitfleet rollouts` show it. Commit, Detail and device names are shown
// as they are: escape or clean them for where they are printed.
func (w Wait) Words(now time.Time) string {
	switch w.Reason {
	case "approval":
		return "waits for approval: " + w.Commit
	case "previous-phase":
		return "waits for the previous phase to complete"
	case "hold":
		return "holds after the previous phase, until " + stampPtr(w.Until) + " (" + sincePtr(w.Until, now) + ")"
	case "paused":
		return "paused (spec.paused is set)"
	case "artifact-refused":
		return "the controller refuses the artifact: " + w.Detail
	case "window":
		return "outside every maintenance window; the next opens " + stampPtr(w.Opens) + " (" + sincePtr(w.Opens, now) + ")"
	case "devices":
		var parts []string
		for _, s := range slices.Sorted(maps.Keys(w.InProgress)) {
			parts = append(parts, fmt.Sprintf("%d %s", w.InProgress[s], s))
		}
		return "devices in progress: " + strings.Join(parts, ", ")
	case "not-polled":
		s := fmt.Sprintf("%d place%s not taken yet", w.Places, pluralS(w.Places))
		if len(w.Devices) > 0 {
			names, more := w.Devices, ""
			if len(names) > 5 {
				names, more = names[:5], fmt.Sprintf(" and %d more", len(w.Devices)-5)
			}
			s += "; devices that have not polled: " + strings.Join(names, ", ") + more
		}
		var seen []string
		if w.OldestLastSeen != nil {
			seen = append(seen, "oldest last seen "+since(*w.OldestLastSeen, now))
		}
		if w.Never > 0 {
			seen = append(seen, fmt.Sprintf("%d never seen", w.Never))
		}
		if len(seen) > 0 {
			s += " (" + strings.Join(seen, ", ") + ")"
		}
		return s
	}
	return "waits: " + w.Reason
}
