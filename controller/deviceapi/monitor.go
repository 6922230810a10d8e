package deviceapi

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gitfleet/gitfleet/controller/reconcile"
	"github.com/gitfleet/gitfleet/controller/rollout"
	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gitfleet/gitfleet/device/monitor"
	"github.com/gitfleet/gitfleet/schema"
	"github.com/labstack/echo/v5"
)

// Monitoring (DESIGN.md §7). The MonitorCheck manifests of the live commit
// reach the devices they target through GET …/devicemonitor/checks, which
// the agent polls with If-None-Match: an unchanged set costs a 304 and no
// store read unless a check selects devices by inventory. What the probes
// find comes back through POST …/devicemonitor/alerts, in batches the
// device numbers (seq); the store applies each event once, whichever
// replica receives it, and the replica that applied it announces it
// (notifications) and counts it against the abort criteria of the rollouts
// that admitted the device.

// Defaults of the alert endpoint's bounds.
const (
	// DefaultAlertRate and DefaultAlertBurst bound alert batches per
	// device; beyond them the answer is 429 with Retry-After and the
	// agent keeps its queue.
	DefaultAlertRate  = 2.0
	DefaultAlertBurst = 20
	// maxAlertBody bounds one batch (1,000 events of at most a few KiB).
	maxAlertBody = 4 << 20
	// maxCheckSets bounds the cached encodings of distinct check sets per
	// commit; beyond it a set is encoded per request.
	maxCheckSets = 4096
)

// monitorIndex is the live commit's checks, compiled once per Snapshot.
type monitorIndex struct {
	cur atomic.Pointer[checkIndex]
	mu  sync.Mutex
}

type checkIndex struct {
	snap      *reconcile.Snapshot
	checks    []compiledCheck
	inventory bool // some check selects on inventory attributes
	declared  map[string]bool

	mu   sync.Mutex
	sets map[string]*encodedSet // by the targeted checks' indexes
}

type compiledCheck struct {
	name      string
	all       bool
	static    map[string]bool // device manifest names
	selectors []*schema.Selector
	inventory bool
	wire      monitor.Check
}

type encodedSet struct {
	body []byte
	etag string
}

// checksFor returns the compiled checks of snap, compiling them the first
// time.
func (a *API) checksFor(snap *reconcile.Snapshot) *checkIndex {
	if ix := a.monitors.cur.Load(); ix != nil && ix.snap == snap {
		return ix
	}
	a.monitors.mu.Lock()
	defer a.monitors.mu.Unlock()
	if ix := a.monitors.cur.Load(); ix != nil && ix.snap == snap {
		return ix
	}
	ix := &checkIndex{snap: snap, declared: map[string]bool{}, sets: map[string]*encodedSet{}}
	if snap.Fleet != nil {
		groups := map[string]*schema.DeviceGroup{}
		for i := range snap.Fleet.Groups {
			groups[snap.Fleet.Groups[i].Name] = &snap.Fleet.Groups[i]
		}
		for i := range snap.Fleet.Checks {
			mc := &snap.Fleet.Checks[i]
			ix.declared[mc.Name] = true
			w, err := MonitorCheck(mc)
			if err != nil {
				// The schema admits what the agent runs; a gap between
				// them is logged, and the other checks still go out.
				a.log.Error("monitor check not served: the agent could not run it", "check", mc.Name, "err", err)
				continue
			}
			cc := compileTarget(&mc.Spec.Target, groups)
			cc.name, cc.wire = mc.Name, w
			ix.inventory = ix.inventory || cc.inventory
			ix.checks = append(ix.checks, cc)
		}
	}
	a.monitors.cur.Store(ix)
	return ix
}

// compileTarget resolves t's groups to static members and selectors. A
// zero target means the whole fleet (MonitorCheckSpec.Target).
func compileTarget(t *schema.Target, groups map[string]*schema.DeviceGroup) compiledCheck {
	cc := compiledCheck{all: t.All || t.IsZero(), static: map[string]bool{}}
	for _, d := range t.Devices {
		cc.static[d] = true
	}
	for _, g := range t.Groups {
		grp := groups[g]
		if grp == nil {
			continue
		}
		for _, m := range grp.Spec.Members {
			cc.static[m] = true
		}
		if grp.Spec.Selector != nil {
			cc.selectors = append(cc.selectors, grp.Spec.Selector)
		}
	}
	if t.Selector != nil {
		cc.selectors = append(cc.selectors, t.Selector)
	}
	for _, s := range cc.selectors {
		cc.inventory = cc.inventory || len(s.Inventory) > 0
	}
	return cc
}

func (cc *compiledCheck) targets(name string, identity, inventory map[string]string) bool {
	if cc.all || cc.static[name] {
		return true
	}
	for _, s := range cc.selectors {
		if s.Matches(identity, inventory) {
			return true
		}
	}
	return false
}

// DefaultSetuidPaths are watched by a setuid check that names no paths:
// where executables live and where anyone may write, not libraries or the
// pseudo file systems (a device skips those it does not have).
var DefaultSetuidPaths = []string{"/bin", "/sbin", "/usr/bin", "/usr/sbin", "/usr/local", "/usr/libexec", "/opt",
	"/etc", "/tmp", "/var/tmp", "/home", "/root", "/srv", "/data"}

// MonitorCheck turns a MonitorCheck manifest into the check the agent runs,
// and checks that the agent accepts it.
func MonitorCheck(mc *schema.MonitorCheck) (monitor.Check, error) {
	s := &mc.Spec
	c := monitor.Check{
		Name:     mc.Name,
		Severity: monitor.Severity(cmp.Or(s.Severity, schema.SeverityWarning)),
		Expiry:   s.Expiry.Duration,
		Interval: s.Interval.Duration,
	}
	switch {
	case s.Log != nil:
		c.Log = &monitor.Log{Path: s.Log.Path, Pattern: s.Log.Pattern}
	case s.Service != nil:
		c.Service = &monitor.Service{Name: s.Service.Name}
	case s.ListeningPorts != nil:
		c.ListeningPorts = &monitor.ListeningPorts{Allow: s.ListeningPorts.Allow}
	case s.SetUID != nil:
		paths := s.SetUID.Paths
		if len(paths) == 0 {
			paths = DefaultSetuidPaths
		}
		c.Setuid = &monitor.Setuid{Paths: paths}
	case s.FileChange != nil:
		c.FileChange = &monitor.FileChange{Paths: s.FileChange.Paths}
	case s.ProcessRestart != nil:
		c.ProcessRestart = &monitor.ProcessRestart{Name: s.ProcessRestart.Name}
	case s.Traffic != nil:
		c.Traffic = &monitor.Traffic{Interface: s.Traffic.Interface, MaxBytes: uint64(max(s.Traffic.MaxBytes, 0)), Window: s.Traffic.Window.Duration}
	case s.WiFi != nil:
		c.Wifi = &monitor.Wifi{Interface: s.WiFi.Interface, Expected: s.WiFi.Expected}
	case s.RootLogin != nil:
		c.RootLogin = &monitor.RootLogin{Log: s.RootLogin.Log}
	case s.FailedDeployments != nil:
		c.FailedDeployments = &monitor.FailedDeployments{}
	case s.LibraryInjection != nil:
		c.LibraryInjection = &monitor.LibraryInjection{}
	}
	if err := c.Validate(); err != nil {
		return monitor.Check{}, err
	}
	return c, nil
}

// checkSet answers GET …/devicemonitor/checks: the checks the live commit
// assigns to the device, 304 when the device has them already.
func (a *API) checkSet(c *echo.Context) error {
	s := sessionOf(c)
	ix := a.checksFor(s.snap)
	name := s.manifest.Name
	var inventory map[string]string
	if ix.inventory {
		rec, err := a.opts.Store.Device(c.Request().Context(), s.claims.Subject)
		switch {
		case errors.Is(err, store.ErrNotFound):
		case err != nil:
			return a.httpError("read device", err, "device_id", s.claims.Subject)
		default:
			inventory = InventoryAttributes(rec.Inventory)
		}
	}
	var mask strings.Builder
	for i := range ix.checks {
		if ix.checks[i].targets(name, s.claims.Identity, inventory) {
			mask.WriteString(strconv.Itoa(i))
			mask.WriteByte(',')
		}
	}
	set := ix.encoded(mask.String())
	h := c.Response().Header()
	h.Set("ETag", set.etag)
	h.Set("Cache-Control", "no-cache")
	if etagMatches(c.Request().Header.Get("If-None-Match"), set.etag) {
		return c.NoContent(http.StatusNotModified)
	}
	return c.Blob(http.StatusOK, "application/json", set.body)
}

// encoded returns the encoding of the checks listed in mask ("0,3,").
func (ix *checkIndex) encoded(mask string) *encodedSet {
	ix.mu.Lock()
	set := ix.sets[mask]
	ix.mu.Unlock()
	if set != nil {
		return set
	}
	cs := monitor.CheckSet{Checks: []monitor.Check{}}
	for f := range strings.SplitSeq(mask, ",") {
		if i, err := strconv.Atoi(f); err == nil {
			cs.Checks = append(cs.Checks, ix.checks[i].wire)
		}
	}
	body, _ := json.Marshal(cs) // plain structs
	sum := sha256.Sum256(body)
	set = &encodedSet{body: body, etag: `"` + hex.EncodeToString(sum[:12]) + `"`}
	ix.mu.Lock()
	if len(ix.sets) < maxCheckSets {
		ix.sets[mask] = set
	}
	ix.mu.Unlock()
	return set
}

// etagMatches reports whether an If-None-Match header names etag (or *).
func etagMatches(header, etag string) bool {
	for f := range strings.SplitSeq(header, ",") {
		f = strings.TrimPrefix(strings.TrimSpace(f), "W/")
		if f == etag || f == "*" {
			return true
		}
	}
	return false
}

// alerts serves POST …/devicemonitor/alerts: a batch of the device's
// monitoring events, answered with the highest seq recorded for it.
func (a *API) alerts(c *echo.Context) error {
	s := sessionOf(c)
	ctx := c.Request().Context()
	name := s.manifest.Name
	if !a.alertLim.allow(name, a.opts.Now()) {
		c.Response().Header().Set("Retry-After", "5")
		return echo.NewHTTPError(http.StatusTooManyRequests, "too many alert batches from this device; send fewer, larger batches")
	}
	body, err := readBody(c, maxAlertBody)
	if err != nil {
		return err
	}
	// The body is read before a slot is taken: a slow sender holds none.
	wait := time.NewTimer(a.opts.AlertWait)
	select {
	case a.alertSem <- struct{}{}:
		wait.Stop()
		defer func() { <-a.alertSem }()
	case <-wait.C:
		c.Response().Header().Set("Retry-After", "5")
		return echo.NewHTTPError(http.StatusServiceUnavailable, "the controller is busy recording alerts; send the batch again later")
	case <-ctx.Done():
		wait.Stop()
		return echo.NewHTTPError(http.StatusServiceUnavailable, "request canceled")
	}
	var batch monitor.AlertBatch
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&batch); err != nil {
		return echo.NewHTTPError(http.StatusBadRequest, "alert batch: "+err.Error())
	}
	if len(batch.Events) > monitor.MaxBatch {
		return echo.NewHTTPError(http.StatusBadRequest, fmt.Sprintf("alert batch of %d events; at most %d per request", len(batch.Events), monitor.MaxBatch))
	}
	ix := a.checksFor(s.snap)
	events := make([]store.AlertEvent, 0, len(batch.Events))
	var skipped int
	for _, e := range batch.Events {
		ev := store.AlertEvent{Seq: e.Seq, Check: e.Check, Key: e.Key, Kind: string(e.Kind),
			Severity: string(e.Severity), Evidence: e.Evidence, Time: e.Time}
		// A device raises only checks the live commit declares; closing
		// an alert of a check removed since is fine. The event still
		// takes its seq, so the device's queue moves on.
		if !ix.declared[e.Check] && (e.Kind == monitor.Raised || e.Kind == monitor.Flapping || e.Kind == monitor.CheckError) {
			skipped++
			ev.Kind = store.AlertCheckOK // a no-op on a record in no error state
		}
		events = append(events, ev)
	}
	if err := store.ValidateAlertEvents(name, events); err != nil {
		return echo.NewHTTPError(http.StatusBadRequest, strings.TrimPrefix(err.Error(), store.ErrInvalid.Error()+": "))
	}
	if skipped > 0 {
		a.log.Info("alerts of checks the live commit does not declare ignored", "device", name, "events", skipped)
	}
	changed, last, err := a.opts.Store.RecordAlerts(ctx, name, events)
	if err != nil {
		return a.httpError("record alerts", err, "device", name)
	}
	kinds := make(map[uint64]string, len(events))
	for _, e := range events {
		kinds[e.Seq] = e.Kind
	}
	var plan Planner
	if len(changed) > 0 {
		if plan, err = a.planFor(ctx, s.snap); err != nil {
			a.log.Error("alerts not counted against rollouts: no rollout plan", "device", name, "err", err)
		}
	}
	var raised, closed, errs int
	for _, al := range changed {
		kind := kinds[al.Seq]
		switch kind {
		case store.AlertRaised:
			raised++
		case store.AlertCleared, store.AlertExpired, store.AlertCheckOK:
			closed++
		case store.AlertCheckError:
			errs++
		}
		a.announceAlert(ctx, s.snap, al, kind, plan)
	}
	if raised+closed+errs > 0 {
		a.log.Info("alerts recorded", "device", name, "raised", raised, "closed", closed, "check_errors", errs,
			"first_check", changed[0].Check, "first_evidence", truncate(changed[0].Evidence, 200))
	}
	return c.JSON(http.StatusOK, monitor.AlertAck{Seq: last})
}

// announceAlert carries out what one changed alert record means (kind is
// the event that changed it): a notification when it was raised or
// closed, and the abort criteria of the rollouts that admitted the device.
// The record itself is what operators read (gitfleet alerts), so each one
// is logged at debug level only; alerts logs one line per batch.
func (a *API) announceAlert(ctx context.Context, snap *reconcile.Snapshot, al store.Alert, kind string, plan Planner) {
	var event string
	switch kind {
	case store.AlertRaised:
		event = schema.EventAlertRaised
	case store.AlertCleared, store.AlertExpired:
		event = schema.EventAlertCleared
	}
	if a.log.Enabled(ctx, slog.LevelDebug) {
		a.log.Debug("alert record changed", "device", al.Device, "check", al.Check, "key", al.Key, "severity", al.Severity,
			"event", kind, "state", al.State, "evidence", al.Evidence, "count", al.Count, "flapping", al.Flapping)
	}
	if event == "" {
		return
	}
	if a.opts.Notify != nil {
		a.opts.Notify(ctx, al, event)
	}
	if plan == nil {
		return
	}
	for _, g := range plan.WatchedBy(al.Check) {
		if err := a.countAlert(ctx, snap, plan, g, al); err != nil {
			a.log.Error("alert not counted against rollout", "device", al.Device, "check", al.Check,
				"rollout", g.Rollout, "generation", g.Generation, "err", err)
		}
	}
}

// countAlert raises or clears al in g when the device is admitted to g,
// and aborts g when its criteria say so. An alert raised before the device
// was admitted does not count: it arrived before the rollout touched the
// device.
func (a *API) countAlert(ctx context.Context, snap *reconcile.Snapshot, plan Planner, g store.GenerationRef, al store.Alert) error {
	open := al.State == store.AlertOpen
	if !open {
		_, err := a.opts.Store.SetAlert(ctx, g, al.Device, al.Check, false)
		return err
	}
	d, err := a.opts.Store.Deployment(ctx, g, al.Device)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	changed, err := a.opts.Store.SetAlert(ctx, g, al.Device, al.Check, true)
	if err != nil || !changed {
		return err
	}
	p, err := a.opts.Store.Progress(ctx, g)
	if err != nil || p.Aborted != "" {
		return err
	}
	counts, err := a.opts.Store.AlertCounts(ctx, g)
	if err != nil {
		return err
	}
	dec := plan.OnStatus(rollout.StatusInput{Generation: g, Phase: d.Phase, Progress: p, Alerts: counts})
	if !dec.Abort {
		return nil
	}
	if dec.Criterion == "alert" {
		dec.Reason = fmt.Sprintf("%s; first on device %s: %s", dec.Reason, al.Device, truncate(al.Evidence, 200))
	}
	return a.abort(ctx, snap, g, dec)
}
