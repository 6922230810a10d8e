package controller

import (
	"context"
	"crypto/subtle"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gitfleet/gitfleet/controller/artifacts"
	"github.com/gitfleet/gitfleet/controller/deviceapi"
	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/labstack/echo/v5"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Handler returns the controller's HTTP routes. Serve it over TLS only.
//
//	GET  /healthz                       the process is up
//	GET  /readyz                        a commit is served and the store answers (details with the management token)
//	GET  /metrics                       Prometheus
//	POST /hooks, /hooks/{provider}      Git host webhooks
//	     /api/devices/…                 the Mender device API (package deviceapi)
//	GET  /api/devices/v1/download/…     presigned artifact downloads (Options.Downloads)
//	GET  /api/management/v1/…           read-only management API (bearer token)
func (c *Controller) Handler() http.Handler {
	// Group middleware (device tokens, the management token) runs for the
	// group's routes only: an unknown path is 404 and a known path with
	// another method 405 (with Allow), for every caller.
	e := echo.NewWithConfig(echo.Config{NoGroupAutoRegister404Routes: true, Logger: c.log})
	e.HTTPErrorHandler = deviceapi.JSONErrors
	e.GET("/healthz", func(ctx *echo.Context) error {
		return ctx.JSON(http.StatusOK, map[string]string{"status": "ok"})
	})
	e.GET("/readyz", c.readyz)
	e.GET("/metrics", echo.WrapHandler(promhttp.HandlerFor(c.opts.Registry, promhttp.HandlerOpts{})))
	if c.hooks != nil {
		for _, rt := range c.hooks.Routes("/hooks") {
			e.Any(rt.Pattern, echo.WrapHandler(rt.Handler))
		}
	}
	c.devices.Register(e.Group("/api/devices"))
	if c.opts.Downloads != nil {
		dl := echo.WrapHandler(c.opts.Downloads(c.deviceDeclared))
		e.GET(artifacts.DownloadPath+"*", dl)
		e.HEAD(artifacts.DownloadPath+"*", dl)
	}
	m := e.Group("/api/management/v1", c.requireToken)
	m.GET("/status", c.status)
	m.GET("/rollouts", c.rollouts)
	m.GET("/rollouts/:name/devices", c.rolloutDevices)
	m.GET("/rollouts/:name/devices/:device/log", c.rolloutDeviceLog)
	m.GET("/events", c.events)
	m.GET("/refused", c.refused)
	m.GET("/devices", c.declaredDevices)
	m.GET("/devices/pending", c.pendingDevices)
	m.GET("/devices/conflicts", c.deviceConflicts)
	m.GET("/devices/:id", c.device)
	m.GET("/config", c.configStatus)
	m.GET("/config/devices", c.configDevices)
	m.GET("/alerts", c.alerts)
	m.GET("/audit", c.audit)
	m.POST("/reconcile", c.reconcileNow)
	c.registerOperatorAPI(e)
	c.registerDashboard(e)
	c.registerRemote(e)
	return e
}

// readyz answers 200 {"ready": true} when a commit is served and the store
// answers, else 503 with the problems. Without the management token the
// problems are generic ("store unavailable"); with it (Authorization:
// Bearer) they carry the details, which may name internal addresses.
func (c *Controller) readyz(ctx *echo.Context) error {
	type problem struct{ public, detail string }
	var problems []problem
	if c.rec.Live() == nil {
		problems = append(problems, problem{"no commit served yet", "no commit served yet"})
	}
	if err := c.opts.Store.Ping(ctx.Request().Context()); err != nil {
		problems = append(problems, problem{"store unavailable", "store: " + err.Error()})
	}
	if len(problems) == 0 {
		return ctx.JSON(http.StatusOK, map[string]any{"ready": true})
	}
	detailed := c.tokenOK(ctx)
	out := make([]string, len(problems))
	for i, p := range problems {
		out[i] = p.public
		if detailed {
			out[i] = p.detail
		}
	}
	return ctx.JSON(http.StatusServiceUnavailable, map[string]any{"ready": false, "problems": out})
}

// tokenOK reports whether the request carries the management token
// (compared in constant time); false when there is none.
func (c *Controller) tokenOK(ctx *echo.Context) bool {
	if c.opts.ManagementToken == "" {
		return false
	}
	got, ok := strings.CutPrefix(ctx.Request().Header.Get("Authorization"), "Bearer ")
	return ok && subtle.ConstantTimeCompare([]byte(got), []byte(c.opts.ManagementToken)) == 1
}

// requireToken guards the management API with a bearer token, compared in
// constant time.
func (c *Controller) requireToken(next echo.HandlerFunc) echo.HandlerFunc {
	return func(ctx *echo.Context) error {
		if c.opts.ManagementToken == "" {
			return echo.NewHTTPError(http.StatusNotFound, "the management API is disabled: start the controller with --management-token")
		}
		if !c.tokenOK(ctx) {
			ctx.Response().Header().Set("WWW-Authenticate", `Bearer realm="gitfleet"`)
			return echo.NewHTTPError(http.StatusUnauthorized, "a valid bearer token is required")
		}
		return next(ctx)
	}
}

// Status is the management API's view of the controller.
type Status struct {
	Replica  string              `json:"replica"`
	Started  time.Time           `json:"started"`
	Serving  *store.CommitRecord `json:"serving"`            // the commit this replica serves
	Live     *store.CommitRecord `json:"live,omitempty"`     // the store's live commit
	Refused  *store.Refusal      `json:"refused,omitempty"`  // the last refused commit
	Warnings []string            `json:"warnings,omitempty"` // policy warnings of the served commit
	Git      GitStatus           `json:"git"`
	Last     *LastReconcile      `json:"last_reconcile,omitempty"`
}

// GitStatus is gitsource's status, JSON-friendly.
type GitStatus struct {
	URL         string    `json:"url,omitempty"`
	Head        string    `json:"head,omitempty"`
	LastFetch   time.Time `json:"last_fetch"`
	LastReached time.Time `json:"last_reached"`
	LastError   string    `json:"last_error,omitempty"`
	Failures    int       `json:"failures"`
	Backoff     string    `json:"backoff,omitempty"`
}

// LastReconcile is the outcome of the last reconcile.
type LastReconcile struct {
	Commit  string   `json:"commit"`
	Outcome string   `json:"outcome"`
	Errors  []string `json:"errors,omitempty"`
	Error   string   `json:"error,omitempty"`
}

func (c *Controller) status(ctx *echo.Context) error {
	return ctx.JSON(http.StatusOK, c.statusOf(ctx.Request().Context()))
}

// statusOf builds the Status the management API and the dashboard show.
func (c *Controller) statusOf(rctx context.Context) Status {
	st := Status{Replica: c.opts.ReplicaID, Started: c.started}
	if snap := c.rec.Live(); snap != nil {
		rec := snap.Commit
		st.Serving, st.Warnings = &rec, snap.Warnings
	}
	if live, err := c.opts.Store.Live(rctx); err == nil {
		st.Live = &live
	}
	if ref, err := c.opts.Store.LastRefused(rctx); err == nil {
		st.Refused = &ref
	}
	gs := c.opts.Source.Status()
	st.Git = GitStatus{Head: gs.SHA, LastFetch: gs.LastFetch, LastReached: gs.LastReached, Failures: gs.Failures}
	if gs.LastError != nil {
		st.Git.LastError = gs.LastError.Error()
	}
	if gs.Backoff > 0 {
		st.Git.Backoff = gs.Backoff.String()
	}
	c.mu.Lock()
	if c.last.SHA != "" || c.lastErr != nil {
		st.Last = &LastReconcile{Commit: c.last.SHA, Outcome: string(c.last.Outcome), Errors: c.last.Errors}
		if c.lastErr != nil {
			st.Last.Error = c.lastErr.Error()
		}
	}
	c.mu.Unlock()
	return st
}

// pageLimit reads a listing's ?limit=1…store.MaxPage (default 100).
func pageLimit(ctx *echo.Context) (int, error) {
	s := ctx.QueryParam("limit")
	if s == "" {
		return 100, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > store.MaxPage {
		return 0, echo.NewHTTPError(http.StatusBadRequest, "limit must be 1…"+strconv.Itoa(store.MaxPage))
	}
	return n, nil
}

func (c *Controller) events(ctx *echo.Context) error {
	limit, err := pageLimit(ctx)
	if err != nil {
		return err
	}
	rctx := ctx.Request().Context()
	var evs []store.Event
	if after := ctx.QueryParam("after"); after != "" || ctx.QueryParam("from") == "start" {
		evs, err = c.opts.Store.Events(rctx, after, limit)
	} else {
		evs, err = c.opts.Store.RecentEvents(rctx, limit)
	}
	if errors.Is(err, store.ErrInvalid) {
		return echo.NewHTTPError(http.StatusBadRequest, err.Error())
	}
	if err != nil {
		return echo.NewHTTPError(http.StatusServiceUnavailable, "store: "+err.Error())
	}
	type event struct {
		ID string `json:"id"`
		store.Event
	}
	out := make([]event, len(evs))
	for i, e := range evs {
		out[i] = event{e.ID, e}
	}
	return ctx.JSON(http.StatusOK, map[string]any{"events": out})
}

func (c *Controller) refused(ctx *echo.Context) error {
	ref, err := c.opts.Store.LastRefused(ctx.Request().Context())
	if errors.Is(err, store.ErrNotFound) {
		return ctx.JSON(http.StatusOK, map[string]any{"refused": nil})
	}
	if err != nil {
		return echo.NewHTTPError(http.StatusServiceUnavailable, "store: "+err.Error())
	}
	return ctx.JSON(http.StatusOK, map[string]any{"refused": ref})
}

// declaredDevices lists the devices the served commit declares.
func (c *Controller) declaredDevices(ctx *echo.Context) error {
	snap := c.rec.Live()
	if snap == nil {
		return ctx.JSON(http.StatusOK, map[string]any{"devices": []any{}})
	}
	type device struct {
		Name       string            `json:"name"`
		Identity   map[string]string `json:"identity,omitempty"`
		DeviceType string            `json:"device_type,omitempty"`
		Source     string            `json:"source"`
	}
	out := make([]device, 0, len(snap.Fleet.Devices))
	for _, d := range snap.Fleet.Devices {
		out = append(out, device{Name: d.Name, Identity: d.Spec.Identity, DeviceType: d.Spec.DeviceType,
			Source: d.Source.File + ":" + strconv.Itoa(d.Source.Line)})
	}
	return ctx.JSON(http.StatusOK, map[string]any{"commit": snap.Commit.SHA, "devices": out})
}

// pendingDevices lists devices that authenticated without being declared,
// newest first (?limit=1…1000, default 100): what `gitfleet devices
// pending` shows.
func (c *Controller) pendingDevices(ctx *echo.Context) error {
	limit, err := pageLimit(ctx)
	if err != nil {
		return err
	}
	devs, err := c.opts.Store.PendingDevices(ctx.Request().Context(), limit)
	if err != nil {
		return echo.NewHTTPError(http.StatusServiceUnavailable, "store: "+err.Error())
	}
	if devs == nil {
		devs = []store.Device{}
	}
	return ctx.JSON(http.StatusOK, map[string]any{"devices": devs})
}

// deviceConflicts lists signed auth requests whose key is not the one
// bound to their device, the most recent first (?limit=1…1000, default
// 100): what `gitfleet devices conflicts` shows, with both fingerprints.
func (c *Controller) deviceConflicts(ctx *echo.Context) error {
	limit, err := pageLimit(ctx)
	if err != nil {
		return err
	}
	cs, err := c.opts.Store.Conflicts(ctx.Request().Context(), limit)
	if err != nil {
		return echo.NewHTTPError(http.StatusServiceUnavailable, "store: "+err.Error())
	}
	if cs == nil {
		cs = []store.Conflict{}
	}
	return ctx.JSON(http.StatusOK, map[string]any{"conflicts": cs})
}

// device returns what the store knows of one device (by the ID the device
// API derives from its identity): identity, key fingerprint, status,
// inventory, first and last seen.
func (c *Controller) device(ctx *echo.Context) error {
	id := ctx.Param("id")
	if err := store.ValidateInventory(id, nil); err != nil {
		return echo.NewHTTPError(http.StatusBadRequest, "bad device ID")
	}
	d, err := c.opts.Store.Device(ctx.Request().Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		return echo.NewHTTPError(http.StatusNotFound, "no device "+id)
	}
	if err != nil {
		return echo.NewHTTPError(http.StatusServiceUnavailable, "store: "+err.Error())
	}
	return ctx.JSON(http.StatusOK, d)
}
