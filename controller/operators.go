package controller

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/gitfleet/gitfleet/controller/deviceapi"
	"github.com/gitfleet/gitfleet/controller/operators"
	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/labstack/echo/v5"
	"golang.org/x/crypto/ssh"
)

// newOperators builds the operator access of c (the live commit's
// Operator manifests): what the deviceconnect relay authorizes with.
func (c *Controller) newOperators() error {
	a, err := operators.New(operators.Options{Live: c.rec.Live, Store: c.opts.Store,
		Clients: c.opts.Devices.Clients, Logger: c.log})
	if err != nil {
		return err
	}
	c.operators = a
	return nil
}

// Operators returns the operator access: the deviceconnect.Authorizer of
// the live commit's Operator manifests.
func (c *Controller) Operators() *operators.Access { return c.operators }

// registerOperatorAPI mounts the operator routes (mender-cli's login and
// listings, the SSH login; authenticated by operator credentials, never
// by the management token) and the management API's views of sessions
// and operators (management token).
//
//	POST /api/management/v1/useradm/auth/login            mender-cli login (Basic: operator, personal access token)
//	POST /api/management/v1/operators/login/challenge     an SSH login's challenge
//	POST /api/management/v1/operators/login/ssh           the signed challenge → session token
//	GET  /api/management/v2/devauth/devices               mender-cli devices list (the operator's devices)
//	GET  /api/management/v1/deployments/artifacts         mender-cli artifacts list
//	GET  /api/management/v1/sessions                      remote session records (management token)
//	GET  /api/management/v1/operators                     the live commit's operators (management token)
//	GET  /api/management/v1/operators/{name}              one operator's audit (management token)
func (c *Controller) registerOperatorAPI(e *echo.Echo) {
	c.operators.Register(e)
	e.GET("/api/management/v1/sessions", c.sessions, c.requireToken)
	e.GET("/api/management/v1/operators", c.operatorList, c.requireToken)
	e.GET("/api/management/v1/operators/:name", c.operatorAudit, c.requireToken)
}

// SessionView is a session record as the management API shows it: the
// store's record and the device's name in the live commit.
type SessionView struct {
	store.RemoteSession
	DeviceName string `json:"device_name,omitempty"`
}

// sessionFilter reads ?operator, ?device (an ID or a declared name) and
// ?open=true.
func (c *Controller) sessionFilter(ctx *echo.Context) (store.RemoteSessionFilter, error) {
	f := store.RemoteSessionFilter{Operator: ctx.QueryParam("operator"), Device: ctx.QueryParam("device")}
	switch ctx.QueryParam("open") {
	case "", "false", "0":
	case "true", "1":
		f.OpenOnly = true
	default:
		return f, echo.NewHTTPError(http.StatusBadRequest, "open must be true or false")
	}
	return f, nil
}

// sessionsOf lists session records matching f, newest first: for a device
// given by name, those recorded under its ID and under its name.
func (c *Controller) sessionsOf(ctx context.Context, f store.RemoteSessionFilter, limit int) ([]SessionView, error) {
	rs := c.opts.Store
	var list []store.RemoteSession
	ids := []string{f.Device}
	if snap := c.rec.Live(); f.Device != "" && snap != nil && snap.Fleet != nil {
		if d := c.declaredDevice(snap, f.Device); d != nil && len(d.Spec.Identity) > 0 {
			ids = append(ids, deviceapi.DeviceID(deviceapi.Attributes(d.Spec.Identity)))
		}
	}
	for _, id := range ids {
		g := f
		g.Device = id
		l, err := rs.Sessions(ctx, g, limit)
		if err != nil {
			return nil, err
		}
		list = append(list, l...)
	}
	if len(ids) > 1 {
		sortSessions(list)
		if len(list) > limit {
			list = list[:limit]
		}
	}
	out := make([]SessionView, len(list))
	for i, s := range list {
		out[i] = SessionView{RemoteSession: s, DeviceName: c.operators.NameOf(s.Device)}
	}
	return out, nil
}

func sortSessions(l []store.RemoteSession) {
	for i := 1; i < len(l); i++ { // few: insertion sort, newest start first
		for j := i; j > 0 && l[j].Started.After(l[j-1].Started); j-- {
			l[j], l[j-1] = l[j-1], l[j]
		}
	}
}

// sessions answers GET /api/management/v1/sessions?operator=&device=&open=true&limit=.
func (c *Controller) sessions(ctx *echo.Context) error {
	limit, err := pageLimit(ctx)
	if err != nil {
		return err
	}
	f, err := c.sessionFilter(ctx)
	if err != nil {
		return err
	}
	list, err := c.sessionsOf(ctx.Request().Context(), f, limit)
	if err != nil {
		if errors.Is(err, store.ErrInvalid) {
			return echo.NewHTTPError(http.StatusBadRequest, err.Error())
		}
		return echo.NewHTTPError(http.StatusServiceUnavailable, "store: "+err.Error())
	}
	return ctx.JSON(http.StatusOK, map[string]any{"sessions": list})
}

// OperatorView is an Operator of the live commit as the management API
// shows it (never its credential itself).
type OperatorView struct {
	Name        string          `json:"name"`
	Manifest    *ManifestSource `json:"manifest,omitempty"`
	Token       bool            `json:"token"`                  // has a personal access token
	SSHKey      string          `json:"ssh_key,omitempty"`      // the SSH key's fingerprint
	Expires     *time.Time      `json:"expires,omitempty"`      // when access ends
	Expired     bool            `json:"expired"`                //
	Access      any             `json:"access,omitempty"`       // spec.access
	Limits      any             `json:"limits,omitempty"`       // the effective limits
	Declared    bool            `json:"declared"`               // the live commit declares it
	Commit      string          `json:"commit,omitempty"`       // the live commit
	Commits     []AuditCommit   `json:"commits,omitempty"`      // commits that changed its file
	CommitsNote string          `json:"commits_note,omitempty"` //
	Sessions    []SessionView   `json:"sessions,omitempty"`     // its sessions, newest first
}

func (c *Controller) operatorView(name string) OperatorView {
	v := OperatorView{Name: name}
	snap := c.rec.Live()
	if snap == nil || snap.Fleet == nil {
		return v
	}
	v.Commit = snap.Commit.SHA
	o := snap.Fleet.Operator(name)
	if o == nil {
		return v
	}
	v.Declared = true
	v.Manifest = &ManifestSource{File: o.Source.File, Line: o.Source.Line}
	v.Token = o.Spec.TokenSHA256 != ""
	if k := o.SSHKey(); k != nil {
		v.SSHKey = ssh.FingerprintSHA256(k)
	}
	if e := o.ExpiresAt(); !e.IsZero() {
		e = e.UTC()
		v.Expires, v.Expired = &e, o.Expired(time.Now())
	}
	v.Access = o.Spec.Access
	v.Limits = o.Spec.Limits.Effective()
	return v
}

// operatorList answers GET /api/management/v1/operators.
func (c *Controller) operatorList(ctx *echo.Context) error {
	out := []OperatorView{}
	if snap := c.rec.Live(); snap != nil && snap.Fleet != nil {
		for i := range snap.Fleet.Operators {
			out = append(out, c.operatorView(snap.Fleet.Operators[i].Name))
		}
	}
	return ctx.JSON(http.StatusOK, map[string]any{"operators": out})
}

// operatorAudit answers GET /api/management/v1/operators/{name}: where the
// live commit declares the operator, the commits that changed that file,
// and the operator's sessions (?limit, default 100). An operator no longer
// declared still shows its sessions.
func (c *Controller) operatorAudit(ctx *echo.Context) error {
	limit, err := pageLimit(ctx)
	if err != nil {
		return err
	}
	name := ctx.Param("name")
	rctx, cancel := context.WithTimeout(ctx.Request().Context(), auditTimeout)
	defer cancel()
	v := c.operatorView(name)
	if v.Declared {
		a := &Audit{Manifest: v.Manifest, Commits: []AuditCommit{}}
		c.auditCommits(rctx, a, c.rec.Live())
		v.Commits, v.CommitsNote = a.Commits, a.CommitsNote
	}
	v.Sessions, err = c.sessionsOf(rctx, store.RemoteSessionFilter{Operator: name}, limit)
	if err != nil {
		return echo.NewHTTPError(http.StatusServiceUnavailable, "store: "+err.Error())
	}
	if !v.Declared && len(v.Sessions) == 0 {
		msg := "no operator " + strconv.Quote(name) + " and no session of one"
		if snap := c.rec.Live(); snap != nil {
			msg = unknownName("Operator", name, shortSHA(snap.Commit.SHA), namesOf(snap.Fleet.Operators))
		}
		return echo.NewHTTPError(http.StatusNotFound, msg)
	}
	return ctx.JSON(http.StatusOK, v)
}
