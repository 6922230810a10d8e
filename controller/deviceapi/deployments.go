package deviceapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gitfleet/gitfleet/controller/reconcile"
	"github.com/gitfleet/gitfleet/controller/rollout"
	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gitfleet/gitfleet/schema"
	"github.com/labstack/echo/v5"
)

// Deployment IDs. The Mender protocol names a device's deployment with an
// opaque ID that comes back in every status and log call. Ours is the
// rollout name, "-g", and the generation number ("canary-g3"): reversible
// without any lookup, the same on every replica, and readable in the
// client's logs. Rollout names use [A-Za-z0-9._-], so the last "-g"
// followed only by digits splits it unambiguously. A device can only
// report on a generation that admitted it (the store refuses the rest), so
// a forged ID gets 404 and changes nothing.

// DeploymentID names generation g's deployments.
func DeploymentID(g store.GenerationRef) string {
	return g.Rollout + "-g" + strconv.FormatInt(g.Generation, 10)
}

// ParseDeploymentID reverses DeploymentID.
func ParseDeploymentID(id string) (store.GenerationRef, error) {
	i := strings.LastIndex(id, "-g")
	if i <= 0 {
		return store.GenerationRef{}, badRequest("deployment ID %q is not ROLLOUT-gGENERATION", id)
	}
	n, err := strconv.ParseInt(id[i+2:], 10, 64)
	if err != nil || n < 1 || strconv.FormatInt(n, 10) != id[i+2:] {
		return store.GenerationRef{}, badRequest("deployment ID %q is not ROLLOUT-gGENERATION", id)
	}
	g := store.GenerationRef{Rollout: id[:i], Generation: n}
	for _, r := range g.Rollout {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return store.GenerationRef{}, badRequest("deployment ID %q: bad rollout name", id)
		}
	}
	if err := store.ValidateGeneration(g, nil); err != nil {
		return store.GenerationRef{}, badRequest("deployment ID %q: %v", id, err)
	}
	return g, nil
}

// NextResponse is the 200 answer of deployments/next.
type NextResponse struct {
	ID       string       `json:"id"`
	Artifact NextArtifact `json:"artifact"`
}

// NextArtifact is the artifact part of NextResponse.
type NextArtifact struct {
	ArtifactName          string     `json:"artifact_name"`
	Source                NextSource `json:"source"`
	DeviceTypesCompatible []string   `json:"device_types_compatible"`
}

// NextSource is where the artifact is downloaded from.
type NextSource struct {
	URI    string `json:"uri"`
	Expire string `json:"expire"` // RFC 3339
}

func (a *API) nextV2(c *echo.Context) error {
	body, err := readBody(c, MaxNextBody)
	if err != nil {
		return err
	}
	req, ok := decodeNextV2Fast(body)
	if !ok {
		if req, err = DecodeNextV2(body); err != nil {
			return a.httpError("deployments/next", err)
		}
	}
	return a.next(c, req)
}

func (a *API) nextV1(c *echo.Context) error {
	body, err := readBody(c, MaxNextBody)
	if err != nil {
		return err
	}
	req, err := DecodeNextV1(body)
	if err != nil {
		return a.httpError("deployments/next", err)
	}
	return a.next(c, req)
}

func (a *API) nextGet(c *echo.Context) error {
	req, err := NextFromQuery(c.QueryParam("artifact_name"), c.QueryParam("device_type"))
	if err != nil {
		return a.httpError("deployments/next", err)
	}
	return a.next(c, req)
}

// next answers a poll: 204 when there is nothing to do, otherwise 200 with
// the deployment. The rollout engine decides (rollout.Plan: Route, then
// Next from the store's view of the routed generation); this carries the
// decision out:
//
//   - None: 204.
//   - Admit: store.Admit into the phase, atomically (a phase never admits
//     more than its quota, whatever the replicas do); admitted → 200 with
//     a presigned download URL, otherwise (the phase filled, or the
//     generation was aborted meanwhile) 204.
//   - Resume: the device was admitted and has not finished: 200 again.
//   - Installed: the device already runs the artifact: admitted like
//     Admit, then counted as a success ("already-installed", as the
//     Mender server does), and 204.
//
// Phases the decision finds complete get their completion time recorded.
func (a *API) next(c *echo.Context, req NextRequest) error {
	s := sessionOf(c)
	ctx := c.Request().Context()
	name := s.manifest.Name
	log := lazyLog{l: a.log, deviceID: s.claims.Subject, device: name}
	if s.snap == nil || a.opts.Artifacts == nil {
		return a.nextOrConfigure(c, s, req, nil)
	}
	if want := s.manifest.Spec.DeviceType; want != "" && want != req.DeviceType {
		log.Warn("device reports another device type than its manifest declares; no deployment",
			"device_type", req.DeviceType, "declared", want)
		return c.NoContent(http.StatusNoContent)
	}
	s.dev = rollout.Device{ID: name, Identity: s.claims.Identity, DeviceType: req.DeviceType, Provides: req.Provides, Declared: s.manifest}
	dev := &s.dev
	declared := 0
	if s.snap.Fleet != nil {
		declared = len(s.snap.Fleet.Devices)
	}
	a.seen.see(name, a.opts.Now(), declared)
	plan, err := a.planFor(ctx, s.snap)
	if err != nil {
		return a.httpError("rollout plan", err)
	}
	// The stored inventory matters only when a rollout selects on it; most
	// polls skip the read (one store round trip fewer on the hot path).
	if ni, ok := plan.(interface{ NeedsInventoryOf(*rollout.Device) bool }); !ok || ni.NeedsInventoryOf(dev) {
		rec, err := a.opts.Store.Device(ctx, s.claims.Subject)
		switch {
		case errors.Is(err, store.ErrNotFound):
			dev.Inventory = Attributes{}
		case err != nil:
			return a.httpError("read device", err, "device_id", s.claims.Subject)
		default:
			dev.Inventory = InventoryAttributes(rec.Inventory)
		}
	}
	a.settleAll(ctx, s.snap, plan)
	g, reason, ok := plan.Route(dev)
	if !ok {
		if log.enabled(slog.LevelDebug) {
			log.Debug("no deployment", "reason", reason)
		}
		return a.nextOrConfigure(c, s, req, dev)
	}
	log = log.withGeneration(g)
	in := rollout.NextInput{Device: dev, Now: a.opts.Now(), Generation: g}
	if in.Progress, err = a.progress(ctx, g); err != nil {
		return a.httpError("read progress", err, "rollout", g.Rollout)
	}
	gi := a.index.gen(g)
	// The index answers unless it lacks an unfinished deployment's
	// admission time (its deadline): then the store is read once, and the
	// index keeps the time.
	if d, ok := gi.lookup(name, &in.Progress); ok && (d == nil || final(d.State) || !d.Admitted.IsZero()) {
		in.Deployment = d
	} else {
		if err := gi.catchUp(ctx, a.opts.Store, g, in.Progress.ChangeCount()); err != nil {
			log.Warn("deployment index not brought up to date; reading the store", "err", err)
		}
		switch d, err := a.opts.Store.Deployment(ctx, g, name); {
		case errors.Is(err, store.ErrNotFound):
		case err != nil:
			return a.httpError("read deployment", err, "rollout", g.Rollout)
		default:
			in.Deployment = &d
			gi.note(name, d)
		}
	}
	phases := len(in.Progress.Phases)
	if ro := rolloutOf(s.snap, g.Rollout); ro != nil {
		phases = max(phases, len(ro.Spec.Phases))
	}
	in.Completed = completed(in.Progress, phases)
	if ro := rolloutOf(s.snap, g.Rollout); ro != nil {
		_, lerr := a.opts.Artifacts.Lookup(ro.Spec.Artifact)
		if in.ArtifactRefused = ArtifactRefusal(lerr); in.ArtifactRefused != "" {
			a.announceOnce(ctx, s.snap, schema.EventArtifactRefused, genSubject(g),
				fmt.Sprintf("rollout %s generation %d: the controller refuses artifact %s (%s); no device is admitted or served until a commit fixes it",
					g.Rollout, g.Generation, ro.Spec.Artifact, in.ArtifactRefused))
		}
	}
	in.LastSeen = a.seen.last
	in.Admitted = func(id string) bool {
		d, ok := gi.lookup(id, &in.Progress)
		return !ok || d != nil // not known: counted as present (a place is never given away on a guess)
	}
	a.sweep(ctx, s.snap, plan, g, &in)
	dec := plan.Next(in)
	if a.recordCompleted(ctx, s.snap, g, dec.NewlyComplete) {
		// Another replica recorded a completion this poll's (cached)
		// progress did not show yet, at an earlier moment than now: a
		// hold runs from that moment, so decide again with it.
		if in.Progress, err = a.opts.Store.Progress(ctx, g); err != nil {
			return a.httpError("read progress", err, "rollout", g.Rollout)
		}
		a.prog.put(g, in.Progress)
		in.Completed = completed(in.Progress, max(phases, len(in.Progress.Phases)))
		dec = plan.Next(in)
	}

	if dec.TimedOut {
		if err := a.timeout(ctx, s.snap, plan, g, name); err != nil {
			return a.httpError("record timeout", err, "rollout", g.Rollout)
		}
		return a.nextOrConfigure(c, s, req, dev)
	}

	switch dec.Action {
	case rollout.Admit, rollout.Installed:
		// The device's configuration comes before a new admission.
		if served, err := a.offerConfigure(c, s, req, dev); served || err != nil {
			return err
		}
		d, ok, err := a.opts.Store.Admit(ctx, dec.Generation, dec.Phase, dec.Limit, name)
		if err != nil {
			return a.httpError("admit device", err, "device", name)
		}
		if !ok {
			log.Debug("not admitted: the phase filled or the rollout was aborted", "phase", dec.Phase)
			return c.NoContent(http.StatusNoContent)
		}
		if dec.Generation == g {
			gi.note(name, d)
		}
		if dec.Action == rollout.Admit && final(d.State) {
			// Admitted and finished earlier (on another replica, within
			// the staleness the index allows): nothing to do.
			log.Debug("device already finished this rollout", "phase", d.Phase, "state", d.State)
			return c.NoContent(http.StatusNoContent)
		}
		if dec.Action == rollout.Installed {
			if _, err := a.report(c, s.snap, plan, dec.Generation, name, StatusAlreadyInstalled); err != nil {
				return err
			}
			log.Info("device already runs the artifact; counted as success", "phase", dec.Phase, "artifact_name", dec.ArtifactName)
			return c.NoContent(http.StatusNoContent)
		}
		log.Info("device admitted", "phase", dec.Phase, "artifact", dec.Artifact)
		a.announceOnce(ctx, s.snap, schema.EventRolloutPhaseOpened, phaseSubject(dec.Generation, dec.Phase),
			fmt.Sprintf("rollout %s generation %d: phase %d %q opened (first device admitted)", dec.Generation.Rollout, dec.Generation.Generation, dec.Phase, dec.PhaseName))
	case rollout.Resume:
		// A resume is decided on this poll's progress, which may be up
		// to progressTTL old: an abort another replica recorded since
		// would not show in it, and the device would carry on with an
		// aborted deployment (an admission is safe: the store refuses it
		// atomically). Resumes are few — devices in the middle of an
		// update — so the abort is read fresh.
		fresh, err := a.opts.Store.Progress(ctx, dec.Generation)
		if err != nil {
			return a.httpError("read progress", err, "rollout", g.Rollout)
		}
		if fresh.Aborted != "" {
			a.prog.put(dec.Generation, fresh)
			log.Debug("not resumed: the rollout was aborted", "phase", dec.Phase)
			return c.NoContent(http.StatusNoContent)
		}
	default:
		if log.enabled(slog.LevelDebug) {
			log.Debug("no deployment", "reason", dec.Reason, "phase", dec.PhaseName, "until", dec.Until)
		}
		switch dec.Reason {
		case rollout.ReasonApproval:
			a.announceOnce(ctx, s.snap, schema.EventRolloutAwaitingApproval, phaseSubject(g, dec.Phase),
				fmt.Sprintf("rollout %s generation %d: phase %d %q waits for its approval in Git", g.Rollout, g.Generation, dec.Phase, dec.PhaseName))
		case rollout.ReasonPaused:
			a.announceOnce(ctx, s.snap, schema.EventRolloutPaused, genSubject(g),
				fmt.Sprintf("rollout %s generation %d is paused (spec.paused); devices are not admitted", g.Rollout, g.Generation))
		}
		return a.nextOrConfigure(c, s, req, dev)
	}

	e, err := a.opts.Artifacts.Lookup(dec.Artifact)
	if err != nil {
		// Admitted, but the artifact is not offered (yet): the device
		// asks again at its next poll and gets the same deployment.
		log.Warn("artifact not available; no deployment this poll", "artifact", dec.Artifact, "err", err)
		return c.NoContent(http.StatusNoContent)
	}
	// Never the Host a request names: that would send the device
	// wherever the client (or anyone in between) said.
	uri, exp := a.opts.Artifacts.PresignURL(a.opts.PublicURL, e, name, a.opts.DownloadTTL)
	return c.JSON(http.StatusOK, NextResponse{
		ID: DeploymentID(dec.Generation),
		Artifact: NextArtifact{
			ArtifactName:          e.ArtifactName,
			Source:                NextSource{URI: uri, Expire: exp.UTC().Format(time.RFC3339)},
			DeviceTypesCompatible: e.DeviceTypes,
		},
	})
}

// recordCompleted records the completion of each phase in bits (first
// writer wins) and announces the ones this replica recorded. earlier is
// true when some phase was recorded complete before (by another replica).
func (a *API) recordCompleted(ctx context.Context, snap *reconcile.Snapshot, g store.GenerationRef, bits uint64) (earlier bool) {
	if bits != 0 {
		// The decision may come from progress up to progressTTL old: an
		// abort another replica recorded since would not show in it, and
		// an aborted generation's phases do not complete. Completions are
		// few, so the abort is read fresh.
		if fresh, err := a.opts.Store.Progress(ctx, g); err == nil && fresh.Aborted != "" {
			a.prog.put(g, fresh)
			return false
		}
	}
	for k := 0; bits != 0 && k < 64; k++ {
		if bits&(1<<k) == 0 {
			continue
		}
		bits &^= 1 << k
		t, first, err := a.opts.Store.CompletePhase(ctx, g, k, a.opts.Now())
		a.prog.forget(g)
		if err != nil {
			// The next decision finds the phase complete again and retries.
			a.log.Warn("record phase completion failed", "rollout", g.Rollout, "phase", k, "err", err)
			continue
		}
		if !first {
			earlier = true
			continue
		}
		a.log.Info("rollout phase completed", "rollout", g.Rollout, "generation", g.Generation, "phase", k, "commit", snap.Commit.SHA)
		a.event(ctx, store.Event{
			Time: t, Commit: snap.Commit.SHA, Kind: schema.EventRolloutPhaseCompleted,
			Subject: phaseSubject(g, k),
			Message: fmt.Sprintf("rollout %s generation %d: phase %d completed", g.Rollout, g.Generation, k),
		})
		if ro := rolloutOf(snap, g.Rollout); ro != nil && k == len(ro.Spec.Phases)-1 {
			a.event(ctx, store.Event{
				Time: t, Commit: snap.Commit.SHA, Kind: schema.EventRolloutCompleted, Subject: genSubject(g),
				Message: fmt.Sprintf("rollout %s generation %d completed: its last phase %q completed", g.Rollout, g.Generation, ro.Spec.Phases[k].Name),
			})
		}
	}
	return earlier
}

// Event subjects start with the rollout's name, so notifications can
// filter by rollout: "NAME/gN" for a generation, "NAME/gN/phaseK" for one
// of its phases.
func genSubject(g store.GenerationRef) string { return fmt.Sprintf("%s/g%d", g.Rollout, g.Generation) }

func phaseSubject(g store.GenerationRef, phase int) string {
	return fmt.Sprintf("%s/g%d/phase%d", g.Rollout, g.Generation, phase)
}

// announceOnce appends an event of the live commit the first time this
// replica sees it; the store's dedupe of (commit, kind, subject) makes it
// once across replicas, and the memory keeps the hot path from writing it
// on every poll.
func (a *API) announceOnce(ctx context.Context, snap *reconcile.Snapshot, kind, subject, msg string) {
	key := snap.Commit.SHA + "\x00" + kind + "\x00" + subject
	if !a.announced.add(key) {
		return
	}
	a.event(ctx, store.Event{Time: a.opts.Now(), Commit: snap.Commit.SHA, Kind: kind, Subject: subject, Message: msg})
}

// onceSet remembers keys, forgetting them all when it holds too many (an
// event announced again is deduplicated by the store).
type onceSet struct {
	mu   sync.Mutex
	seen map[string]struct{}
}

const maxOnce = 10_000

func (o *onceSet) add(key string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if _, ok := o.seen[key]; ok {
		return false
	}
	if o.seen == nil || len(o.seen) >= maxOnce {
		o.seen = map[string]struct{}{}
	}
	o.seen[key] = struct{}{}
	return true
}

func (a *API) event(ctx context.Context, e store.Event) {
	if _, _, err := a.opts.Store.AppendEvent(ctx, e); err != nil {
		a.log.Error("record event failed", "kind", e.Kind, "subject", e.Subject, "err", err)
	}
}

// status serves PUT …/deployments/:id/status: 204 when recorded, 409 when
// the generation was aborted (the Mender client then stops and rolls
// back), 404 when the device was never admitted to it.
func (a *API) status(c *echo.Context) error {
	if digest, ok := parseConfigDeploymentID(c.Param("id")); ok {
		return a.configureStatus(c, digest)
	}
	s := sessionOf(c)
	g, err := ParseDeploymentID(c.Param("id"))
	if err != nil {
		return a.httpError("status report", err)
	}
	body, err := readBody(c, MaxStatusBody)
	if err != nil {
		return err
	}
	rep, err := DecodeStatus(body)
	if err != nil {
		return a.httpError("status report", err)
	}
	a.log.Debug("status report", "device_id", s.claims.Subject, "rollout", g.Rollout, "generation", g.Generation,
		"status", rep.Status, "substate", rep.SubState)
	var plan Planner
	if s.snap != nil {
		if plan, err = a.planFor(c.Request().Context(), s.snap); err != nil {
			return a.httpError("rollout plan", err)
		}
	}
	code, err := a.report(c, s.snap, plan, g, s.manifest.Name, rep.Status)
	if err != nil {
		return err
	}
	if code == http.StatusConflict {
		return echo.NewHTTPError(http.StatusConflict, "the deployment was aborted")
	}
	return c.NoContent(http.StatusNoContent)
}

// storeState maps a device status to what the store records: success
// and already-installed count as success; failure and noartifact as
// failure; the rest are progress.
func storeState(status string) string {
	switch status {
	case StatusSuccess, StatusAlreadyInstalled:
		return store.StateSuccess
	case StatusFailure, StatusNoArtifact:
		return store.StateFailure
	}
	return status
}

func final(state string) bool { return store.FinalState(state) }

// report records a device's status in g, then lets the plan decide
// whether g aborts and whether the device's phase just completed. It
// returns 409 as code when g is aborted and the report is not final (a
// final report is still counted: the device has finished either way).
func (a *API) report(c *echo.Context, snap *reconcile.Snapshot, plan Planner, g store.GenerationRef, device, status string) (code int, err error) {
	ctx := c.Request().Context()
	state := storeState(status)
	p, err := a.opts.Store.Progress(ctx, g)
	if err != nil {
		return 0, a.httpError("read progress", err, "rollout", g.Rollout)
	}
	if p.Aborted != "" && !final(state) {
		if _, err := a.opts.Store.Deployment(ctx, g, device); errors.Is(err, store.ErrNotFound) {
			return 0, echo.NewHTTPError(http.StatusNotFound, "no such deployment for this device")
		}
		return http.StatusConflict, nil
	}
	d, changed, err := a.opts.Store.Report(ctx, g, device, state, retriesOf(snap, g.Rollout))
	if errors.Is(err, store.ErrNotFound) {
		return 0, echo.NewHTTPError(http.StatusNotFound, "no such deployment for this device")
	}
	if errors.Is(err, store.ErrInvalid) {
		return 0, echo.NewHTTPError(http.StatusBadRequest, err.Error())
	}
	if err != nil {
		return 0, a.httpError("record status", err, "device", device, "rollout", g.Rollout)
	}
	if !changed || !final(d.State) {
		return http.StatusNoContent, nil
	}
	a.index.gen(g).note(device, d)
	a.log.Info("deployment finished", "device", device, "rollout", g.Rollout, "generation", g.Generation,
		"phase", d.Phase, "state", d.State, "status", status)
	if err := a.afterFinal(ctx, snap, plan, g, d); err != nil {
		return 0, err
	}
	return http.StatusNoContent, nil
}

// timeout records that device's deployment in g timed out (a final state,
// counted once whichever replica gets there first; a device that reported
// a final state meanwhile keeps it), then decides as after a report.
func (a *API) timeout(ctx context.Context, snap *reconcile.Snapshot, plan Planner, g store.GenerationRef, device string) error {
	d, changed, err := a.opts.Store.Report(ctx, g, device, store.StateTimeout, 0)
	if err != nil {
		return fmt.Errorf("record timeout of %s in %s: %w", device, g, err)
	}
	if !changed || d.State != store.StateTimeout {
		return nil
	}
	a.index.gen(g).note(device, d)
	a.log.Warn("deployment timed out: no final state within the rollout's device timeout", "device", device,
		"rollout", g.Rollout, "generation", g.Generation, "phase", d.Phase)
	return a.afterFinal(ctx, snap, plan, g, d)
}

// afterFinal lets the plan decide, after a deployment of g reached final
// state d, whether g aborts and whether d's phase just completed.
func (a *API) afterFinal(ctx context.Context, snap *reconcile.Snapshot, plan Planner, g store.GenerationRef, d store.Deployment) error {
	if plan == nil || snap == nil {
		return nil
	}
	p, err := a.opts.Store.Progress(ctx, g)
	if err != nil {
		return a.httpError("read progress", err, "rollout", g.Rollout)
	}
	a.prog.put(g, p)
	// Alerts raised on the generation's devices count against the abort
	// criteria that name them (they arrive from the agents' monitoring).
	alerts, err := a.opts.Store.AlertCounts(ctx, g)
	if err != nil {
		return a.httpError("read alerts", err, "rollout", g.Rollout)
	}
	dec := plan.OnStatus(rollout.StatusInput{Generation: g, Phase: d.Phase, Progress: p, Alerts: alerts})
	if dec.PhaseCompleted {
		a.recordCompleted(ctx, snap, g, 1<<d.Phase)
	}
	if dec.Abort && p.Aborted == "" {
		if err := a.abort(ctx, snap, g, dec); err != nil {
			return err
		}
	}
	return nil
}

// abort aborts g in the store (once, whichever replica gets there first)
// and announces it with an event traced to the live commit.
func (a *API) abort(ctx context.Context, snap *reconcile.Snapshot, g store.GenerationRef, dec rollout.StatusDecision) error {
	reason := dec.Reason
	if reason == "" {
		reason = dec.Criterion
	}
	first, err := a.opts.Store.Abort(ctx, g, truncate(reason, 1024))
	a.prog.forget(g)
	if err != nil {
		return a.httpError("abort rollout", err, "rollout", g.Rollout)
	}
	if !first {
		return nil
	}
	a.log.Warn("rollout aborted", "rollout", g.Rollout, "generation", g.Generation, "criterion", dec.Criterion,
		"reason", reason, "commit", snap.Commit.SHA)
	a.event(ctx, store.Event{
		Commit: snap.Commit.SHA, Kind: schema.EventRolloutAborted, Subject: genSubject(g),
		Message: fmt.Sprintf("rollout %s generation %d aborted: %s", g.Rollout, g.Generation, reason),
	})
	return nil
}

// retriesOf is the rollout's retries per device in snap (0 when the
// rollout is gone).
func retriesOf(snap *reconcile.Snapshot, name string) int {
	if ro := rolloutOf(snap, name); ro != nil {
		return max(ro.Spec.Retries, 0)
	}
	return 0
}

// rolloutOf returns the Rollout manifest called name in snap, or nil.
func rolloutOf(snap *reconcile.Snapshot, name string) *schema.Rollout {
	if snap == nil || snap.Fleet == nil {
		return nil
	}
	for i := range snap.Fleet.Rollouts {
		if snap.Fleet.Rollouts[i].Name == name {
			return &snap.Fleet.Rollouts[i]
		}
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// uploadLog serves PUT …/deployments/:id/log. The device's log of a
// deployment is stored (store.SetDeploymentLog: the last 200 lines within
// 64 KiB, replacing an earlier upload) and goes to the controller's log
// (slog), at most MaxLogLines lines per upload, each line at most 1 KiB;
// 204. Over the device's upload rate it is dropped (still 204).
func (a *API) uploadLog(c *echo.Context) error {
	if digest, ok := parseConfigDeploymentID(c.Param("id")); ok {
		return a.configureLog(c, digest)
	}
	s := sessionOf(c)
	g, err := ParseDeploymentID(c.Param("id"))
	if err != nil {
		return a.httpError("deployment log", err)
	}
	body, err := readBody(c, a.opts.MaxLogBody)
	if err != nil {
		return err
	}
	msgs, err := DecodeLog(body)
	if err != nil {
		return a.httpError("deployment log", err)
	}
	if _, err := a.opts.Store.Deployment(c.Request().Context(), g, s.manifest.Name); errors.Is(err, store.ErrNotFound) {
		return echo.NewHTTPError(http.StatusNotFound, "no such deployment for this device")
	} else if err != nil {
		return a.httpError("read deployment", err)
	}
	log := a.log.With("device_id", s.claims.Subject, "device", s.manifest.Name, "rollout", g.Rollout, "generation", g.Generation)
	if now := a.opts.Now(); !a.logs.allow(s.claims.Subject, now) {
		// Over the device's rate the log is dropped but the upload
		// answered 204: clients send their log before their status, and
		// an error here would hold back the report that matters.
		if a.dropLog.due(now, fullLogEvery) {
			log.Warn("deployment log dropped: too many uploads from this device (more are dropped silently for a minute)", "lines", len(msgs))
		}
		return c.NoContent(http.StatusNoContent)
	}
	log.Info("deployment log received", "lines", len(msgs))
	// Kept for the management API (GET …/rollouts/:name/devices/:device/log),
	// the last store.MaxLogLines lines within store.MaxLogBytes.
	lines := make([]store.LogLine, 0, min(len(msgs), store.MaxLogLines))
	dropped := max(0, len(msgs)-store.MaxLogLines)
	for _, m := range msgs[dropped:] {
		lines = append(lines, store.LogLine{Time: m.Timestamp, Level: m.Level, Message: m.Message})
	}
	if _, err := a.opts.Store.SetDeploymentLog(c.Request().Context(), g, s.manifest.Name, store.DeploymentLog{Lines: lines, Dropped: dropped}); err != nil {
		return a.httpError("store deployment log", err)
	}
	for i, m := range msgs {
		if i == a.opts.MaxLogLines {
			log.Info("deployment log truncated", "lines_dropped", len(msgs)-i)
			break
		}
		log.Info("device log", "device_time", truncate(m.Timestamp, 64), "device_level", truncate(m.Level, 16), "message", truncate(m.Message, 1024))
	}
	return c.NoContent(http.StatusNoContent)
}
