package controller

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gitfleet/gitfleet/controller/deviceapi"
	"github.com/gitfleet/gitfleet/controller/gitsource"
	"github.com/gitfleet/gitfleet/controller/reconcile"
	"github.com/gitfleet/gitfleet/controller/rollout"
	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gitfleet/gitfleet/schema"
	"github.com/labstack/echo/v5"
)

// Audit explains one device's or one rollout's state: the commits that
// changed the file declaring it, the events that concern it, and what it
// is now. It is what GET /api/management/v1/audit returns.
type Audit struct {
	Kind   string `json:"kind"`   // "device" or "rollout"
	Name   string `json:"name"`   // its manifest name
	Commit string `json:"commit"` // the commit the controller serves ("" before the first)
	// Manifest is where the served commit declares it; nil when it does
	// not (a stopped rollout).
	Manifest *ManifestSource `json:"manifest,omitempty"`
	// Commits changed Manifest.File, newest first, walking back from the
	// served commit (at most maxAuditCommits). CommitsNote says why the
	// list may be incomplete (history cut short, unavailable).
	Commits     []AuditCommit `json:"commits"`
	CommitsNote string        `json:"commits_note,omitempty"`
	// Events are the retained events about it, oldest first (the last
	// ?limit of them).
	Events []AuditEvent `json:"events"`
	// Rollout is the rollout's current view (phases, waits, abort
	// reason); for kind "rollout" only.
	Rollout *RolloutView `json:"rollout,omitempty"`
	// Device is the device's current state; for kind "device" only.
	Device *DeviceAudit `json:"device,omitempty"`
}

// ManifestSource is a manifest's position in the served commit.
type ManifestSource struct {
	File string `json:"file"`
	Line int    `json:"line"`
}

// AuditCommit is one commit that changed a manifest's file.
type AuditCommit struct {
	SHA     string    `json:"sha"`
	Author  string    `json:"author"`
	Time    time.Time `json:"time"` // author time
	Subject string    `json:"subject"`
	Change  string    `json:"change"` // added, modified or deleted (the file)
}

// AuditEvent is one event of the log, with its ID.
type AuditEvent struct {
	ID string `json:"id"`
	store.Event
}

// DeviceAudit is what the controller knows of a declared device now.
type DeviceAudit struct {
	ID         string            `json:"id,omitempty"` // the device API's ID (from its declared identity)
	Identity   map[string]string `json:"identity,omitempty"`
	DeviceType string            `json:"device_type,omitempty"`
	Status     string            `json:"status"` // accepted, pending, or never-seen
	FirstSeen  *time.Time        `json:"first_seen,omitempty"`
	LastSeen   *time.Time        `json:"last_seen,omitempty"`
	Artifact   string            `json:"artifact,omitempty"` // the artifact_name it last reported
	// Groups are the DeviceGroups it belongs to (members, or selector
	// matches on its declared identity and last inventory).
	Groups []string `json:"groups"`
	// Rollouts are the running rollouts that target it; Following marks
	// the one it follows (the highest priority).
	Rollouts []DeviceRollout `json:"rollouts"`
	// Configs are the DeviceConfigs that apply to it; Config its state.
	Configs []string           `json:"configs"`
	Config  *DeviceConfigState `json:"config,omitempty"`
	// Alerts are its alert records, the most recently changed first.
	Alerts []store.Alert `json:"alerts"`
}

// DeviceRollout is a device's place in one rollout.
type DeviceRollout struct {
	Rollout    string     `json:"rollout"`
	Generation int64      `json:"generation,omitempty"`
	Artifact   string     `json:"artifact,omitempty"`
	Following  bool       `json:"following"`
	Phase      string     `json:"phase,omitempty"` // its phase by name (or #N), once admitted
	State      string     `json:"state,omitempty"` // its deployment state, once admitted
	Attempts   int        `json:"attempts,omitempty"`
	Admitted   *time.Time `json:"admitted,omitempty"`
}

// Bounds of one audit request.
const (
	maxAuditCommits = 50
	// maxAuditScan bounds the events an audit reads (the whole log at
	// the default store.DefaultMaxEvents).
	maxAuditScan = store.DefaultMaxEvents
	// auditTimeout bounds one audit request.
	auditTimeout = 20 * time.Second
)

// fileHistory is the part of a Source that lists the commits that changed
// a file (gitsource.Source does).
type fileHistory interface {
	FileLog(ctx context.Context, head, path string, max int) ([]gitsource.FileCommit, bool, error)
}

// audit answers GET /api/management/v1/audit?device=NAME|rollout=NAME.
func (c *Controller) audit(ctx *echo.Context) error {
	device, ro := ctx.QueryParam("device"), ctx.QueryParam("rollout")
	if (device == "") == (ro == "") {
		return echo.NewHTTPError(http.StatusBadRequest, "give one of ?device=NAME or ?rollout=NAME")
	}
	limit, err := pageLimit(ctx)
	if err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx.Request().Context(), auditTimeout)
	defer cancel()
	var a *Audit
	if device != "" {
		a, err = c.auditDevice(rctx, device, limit)
	} else {
		a, err = c.auditRollout(rctx, ro, limit)
	}
	if err != nil {
		var he *echo.HTTPError
		if errors.As(err, &he) {
			return err
		}
		return echo.NewHTTPError(http.StatusServiceUnavailable, "store: "+err.Error())
	}
	return ctx.JSON(http.StatusOK, a)
}

func (c *Controller) auditRollout(ctx context.Context, name string, limit int) (*Audit, error) {
	snap := c.rec.Live()
	a := &Audit{Kind: "rollout", Name: name, Commits: []AuditCommit{}}
	if snap != nil {
		a.Commit = snap.Commit.SHA
	}
	ros, err := c.opts.Store.Rollouts(ctx)
	if err != nil {
		return nil, err
	}
	i := slices.IndexFunc(ros, func(r store.RolloutRecord) bool { return r.Name == name })
	m := fleetRollout(snap, name)
	if i < 0 && m == nil {
		msg := "no rollout " + strconv.Quote(name) + " (see GET /api/management/v1/rollouts)"
		if snap != nil {
			msg = unknownName("Rollout", name, shortSHA(snap.Commit.SHA), namesOf(snap.Fleet.Rollouts))
		}
		return nil, echo.NewHTTPError(http.StatusNotFound, msg)
	}
	if m != nil {
		a.Manifest = &ManifestSource{File: m.Source.File, Line: m.Source.Line}
		c.auditCommits(ctx, a, snap)
	} else {
		a.CommitsNote = "the served commit does not declare it (stopped)"
	}
	if i >= 0 {
		plan := c.planOf(snap, ros)
		v, err := c.rolloutView(ctx, snap, plan, ros[i], time.Now())
		if err != nil {
			return nil, err
		}
		a.Rollout = &v
	}
	a.Events, err = c.auditEvents(ctx, limit, func(e store.Event) bool {
		return e.Subject == name || strings.HasPrefix(e.Subject, name+"/")
	})
	return a, err
}

func (c *Controller) auditDevice(ctx context.Context, name string, limit int) (*Audit, error) {
	snap := c.rec.Live()
	if snap == nil || snap.Fleet == nil {
		return nil, echo.NewHTTPError(http.StatusNotFound, "no commit served yet: devices are declared by the fleet repository")
	}
	d := c.declaredDevice(snap, name)
	if d == nil {
		return nil, echo.NewHTTPError(http.StatusNotFound, unknownName("Device", name, shortSHA(snap.Commit.SHA), namesOf(snap.Fleet.Devices)))
	}
	a := &Audit{Kind: "device", Name: name, Commit: snap.Commit.SHA, Commits: []AuditCommit{},
		Manifest: &ManifestSource{File: d.Source.File, Line: d.Source.Line}}
	c.auditCommits(ctx, a, snap)

	identity := deviceapi.Attributes(d.Spec.Identity)
	da := &DeviceAudit{Identity: d.Spec.Identity, DeviceType: d.Spec.DeviceType, Status: "never-seen",
		Groups: []string{}, Rollouts: []DeviceRollout{}, Configs: []string{}}
	var inventory deviceapi.Attributes
	if len(identity) > 0 {
		da.ID = deviceapi.DeviceID(identity)
		rec, err := c.opts.Store.Device(ctx, da.ID)
		switch {
		case err == nil:
			da.Status, da.FirstSeen, da.LastSeen = string(rec.Status), utc(rec.FirstSeen), utc(rec.LastSeen)
			inventory = deviceapi.InventoryAttributes(rec.Inventory)
			da.Artifact = inventory["artifact_name"]
		case !errors.Is(err, store.ErrNotFound):
			return nil, err
		}
	}
	for i := range snap.Fleet.Groups {
		g := &snap.Fleet.Groups[i]
		in, err := newGroupMembers(c, snap, g).has(ctx, name)
		if err != nil {
			return nil, err
		}
		if in {
			da.Groups = append(da.Groups, g.Name)
		}
	}
	if err := c.auditDeviceRollouts(ctx, snap, name, identity, inventory, da); err != nil {
		return nil, err
	}
	for _, info := range snap.Config.Configs() {
		if snap.Config.Covers(info.Name, name, identity, inventory) {
			da.Configs = append(da.Configs, info.Name)
		}
	}
	if snap.Config.Len() > 0 {
		st := DeviceConfigState{Device: name, State: ConfigPending}
		_, st.Desired = snap.Config.For(name, identity, inventory)
		reported, err := c.opts.Store.ConfigStatusOf(ctx, []string{name})
		if err != nil {
			return nil, err
		}
		if r, ok := reported[name]; ok {
			st.Reported, st.Via, st.Since = r.Digest, r.Via, r.Since.UTC().Format(time.RFC3339)
			if r.Digest == st.Desired {
				switch r.State {
				case "applied":
					st.State = ConfigInSync
				case "drifted":
					st.State = ConfigDrifted
				case "failed":
					st.State, st.Script, st.ExitCode, st.Output = ConfigFailed, r.Script, r.ExitCode, r.Output
				}
			}
		}
		da.Config = &st
	}
	alerts, err := c.opts.Store.ListAlerts(ctx, store.AlertFilter{Device: name, Limit: store.MaxPage})
	if err != nil {
		return nil, err
	}
	da.Alerts = alerts
	if da.Alerts == nil {
		da.Alerts = []store.Alert{}
	}
	a.Device = da
	a.Events, err = c.auditEvents(ctx, limit, func(e store.Event) bool {
		return e.Subject == name || da.ID != "" && e.Subject == da.ID || strings.HasPrefix(e.Subject, name+"/")
	})
	return a, err
}

// auditDeviceRollouts lists the running rollouts of snap that target the
// device, with its deployment in each.
func (c *Controller) auditDeviceRollouts(ctx context.Context, snap *reconcile.Snapshot, name string, identity, inventory map[string]string, da *DeviceAudit) error {
	ros, err := c.opts.Store.Rollouts(ctx)
	if err != nil {
		return err
	}
	plan := c.planOf(snap, ros)
	following, _, followOK := plan.Route(&rollout.Device{ID: name, Identity: identity, Inventory: inventory})
	groups := map[string]bool{}
	for _, g := range da.Groups {
		groups[g] = true
	}
	for i := range snap.Fleet.Rollouts {
		m := &snap.Fleet.Rollouts[i]
		if !targets(&m.Spec.Target, name, groups, identity, inventory) {
			continue
		}
		dr := DeviceRollout{Rollout: m.Name, Artifact: m.Spec.Artifact, Following: followOK && following.Rollout == m.Name}
		if info, ok := plan.Rollout(m.Name); ok && info.Generation.Generation > 0 {
			g := info.Generation
			dr.Generation = g.Generation
			dep, err := c.opts.Store.Deployment(ctx, g, name)
			switch {
			case err == nil:
				dr.State, dr.Attempts, dr.Admitted = dep.State, dep.Attempts, utc(dep.Admitted)
				dr.Phase = "#" + strconv.Itoa(dep.Phase)
				if dep.Phase < len(m.Spec.Phases) && m.Spec.Phases[dep.Phase].Name != "" {
					dr.Phase = m.Spec.Phases[dep.Phase].Name
				}
			case !errors.Is(err, store.ErrNotFound):
				return err
			}
		}
		da.Rollouts = append(da.Rollouts, dr)
	}
	return nil
}

// targets reports whether a rollout target names the device: the whole
// fleet, by name, through one of its groups, or by a selector over its
// declared identity and last inventory.
func targets(t *schema.Target, name string, groups map[string]bool, identity, inventory map[string]string) bool {
	if t.All || slices.Contains(t.Devices, name) {
		return true
	}
	for _, g := range t.Groups {
		if groups[g] {
			return true
		}
	}
	return t.Selector != nil && t.Selector.Matches(identity, inventory)
}

// auditCommits fills a.Commits with the commits that changed the file of
// a.Manifest, from the served commit back.
func (c *Controller) auditCommits(ctx context.Context, a *Audit, snap *reconcile.Snapshot) {
	h, ok := c.opts.Source.(fileHistory)
	if !ok || snap == nil {
		a.CommitsNote = "the Git source keeps no history to read"
		return
	}
	fcs, truncated, err := h.FileLog(ctx, snap.Commit.SHA, a.Manifest.File, maxAuditCommits)
	if err != nil {
		a.CommitsNote = "history unavailable: " + err.Error()
		return
	}
	if truncated {
		a.CommitsNote = "older commits not shown (at most " + strconv.Itoa(maxAuditCommits) + " commits, " +
			strconv.Itoa(gitsource.MaxFileLogWalk) + " walked)"
	}
	for _, fc := range fcs {
		a.Commits = append(a.Commits, AuditCommit{SHA: fc.SHA, Author: fc.Author.String(), Time: fc.Author.When.UTC(),
			Subject: fc.Subject, Change: fc.Change})
	}
}

// auditEvents returns the last limit retained events that match, oldest
// first, reading at most maxAuditScan events.
func (c *Controller) auditEvents(ctx context.Context, limit int, match func(store.Event) bool) ([]AuditEvent, error) {
	out := []AuditEvent{}
	after := ""
	for read := 0; read < maxAuditScan; {
		evs, err := c.opts.Store.Events(ctx, after, store.MaxPage)
		if err != nil {
			return nil, err
		}
		for _, e := range evs {
			if match(e) {
				out = append(out, AuditEvent{ID: e.ID, Event: e})
			}
		}
		read += len(evs)
		if len(evs) < store.MaxPage {
			break
		}
		after = evs[len(evs)-1].ID
		if len(out) > 2*limit {
			out = slices.Delete(out, 0, len(out)-limit)
		}
	}
	if len(out) > limit {
		out = out[len(out)-limit:]
	}
	return out, nil
}

// Reconcile is what POST /api/management/v1/reconcile answers.
type Reconcile struct {
	// Outcome: "live" (the branch head is the commit served), "refused"
	// (the head was refused: Errors say why; the previous commit is still
	// served), "fetch-failed" (Error says why), "triggered" (not waited
	// for: ?wait=0, or other requests are waiting already) or "pending"
	// (the fetch and reconcile did not finish within the wait).
	Outcome string              `json:"outcome"`
	Head    string              `json:"head,omitempty"` // the branch head the last fetch found
	Serving *store.CommitRecord `json:"serving,omitempty"`
	Errors  []string            `json:"errors,omitempty"`
	Error   string              `json:"error,omitempty"`
}

// Bounds of POST /reconcile.
const (
	defaultReconcileWait = 30 * time.Second
	maxReconcileWait     = 2 * time.Minute
	// maxReconcileWaiters bounds the requests waiting for an outcome at
	// once; more are answered "triggered" at once (the fetch they ask for
	// is the same one: triggers coalesce).
	maxReconcileWaiters = 8
)

// reconcileWaiters counts the requests waiting in reconcileNow.
var reconcileWaiters atomic.Int32

// reconcileNow answers POST /api/management/v1/reconcile: fetch now, and
// (unless ?wait=0) wait up to ?wait (a Go duration, default 30s, at most
// 2m) for the outcome. Triggers coalesce into one fetch, so repeating the
// request costs no more than one.
func (c *Controller) reconcileNow(ctx *echo.Context) error {
	wait := defaultReconcileWait
	if s := ctx.QueryParam("wait"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 || d > maxReconcileWait {
			return echo.NewHTTPError(http.StatusBadRequest, "wait must be a duration from 0s to "+maxReconcileWait.String()+" (e.g. 30s)")
		}
		wait = d
	}
	if wait == 0 || reconcileWaiters.Add(1) > maxReconcileWaiters {
		if wait != 0 {
			reconcileWaiters.Add(-1)
		}
		c.Trigger()
		return ctx.JSON(http.StatusAccepted, Reconcile{Outcome: "triggered", Head: c.opts.Source.Status().SHA})
	}
	defer reconcileWaiters.Add(-1)
	rctx, cancel := context.WithTimeout(ctx.Request().Context(), wait)
	defer cancel()
	return ctx.JSON(http.StatusOK, c.fetchNow(rctx))
}

// fetchNow triggers a fetch and waits, until ctx ends, for a fetch that
// began after the trigger and the reconcile of what it found.
//
// A trigger is consumed by the Git source just before a fetch begins, so a
// fetch that ends after the trigger left the channel began after it
// (fetches run one at a time). The poll that sees the channel empty runs
// every few milliseconds, well within a fetch's round trip to the remote.
func (c *Controller) fetchNow(ctx context.Context) Reconcile {
	const poll = 2 * time.Millisecond
	c.Trigger()
	sleep := func(d time.Duration) bool {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(d):
			return true
		}
	}
	for len(c.trigger) > 0 {
		if !sleep(poll) {
			return c.reconcileOutcome("pending")
		}
	}
	consumed := time.Now()
	for {
		gs := c.opts.Source.Status()
		if gs.LastFetch.After(consumed) {
			if gs.LastError != nil {
				return c.reconcileOutcome("")
			}
			if c.settled(gs.SHA) {
				return c.reconcileOutcome("")
			}
		}
		if !sleep(10 * poll) {
			return c.reconcileOutcome("pending")
		}
	}
}

// settled reports whether the controller has decided on head: it serves
// it, or its last reconcile was of head.
func (c *Controller) settled(head string) bool {
	if snap := c.rec.Live(); snap != nil && snap.Commit.SHA == head {
		return true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last.SHA == head && (c.lastErr == nil || !errors.Is(c.lastErr, reconcile.ErrTransient))
}

// reconcileOutcome describes the state after a fetch; outcome overrides
// the one derived ("pending" when the wait ended first).
func (c *Controller) reconcileOutcome(outcome string) Reconcile {
	gs := c.opts.Source.Status()
	r := Reconcile{Head: gs.SHA}
	if snap := c.rec.Live(); snap != nil {
		rec := snap.Commit
		r.Serving = &rec
	}
	c.mu.Lock()
	last, lastErr := c.last, c.lastErr
	c.mu.Unlock()
	switch {
	case outcome != "":
		r.Outcome = outcome
	case gs.LastError != nil:
		r.Outcome, r.Error = "fetch-failed", gs.LastError.Error()
		if gs.Refused != nil {
			r.Outcome, r.Head = "refused", gs.Refused.Head
			r.Errors = []string{gs.Refused.Error()}
		}
	case r.Serving != nil && r.Serving.SHA == gs.SHA:
		r.Outcome = "live"
	case last.SHA == gs.SHA && last.Outcome == reconcile.Refused:
		r.Outcome, r.Errors = "refused", last.Errors
	case last.SHA == gs.SHA && lastErr != nil:
		r.Outcome, r.Error = "failed", lastErr.Error()
	default:
		r.Outcome = "pending"
	}
	return r
}
