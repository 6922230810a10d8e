package deviceapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gitfleet/gitfleet/controller/artifacts"
	"github.com/gitfleet/gitfleet/controller/clientip"
	"github.com/gitfleet/gitfleet/controller/reconcile"
	"github.com/gitfleet/gitfleet/controller/rollout"
	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gitfleet/gitfleet/device/devconfig"
	"github.com/gitfleet/gitfleet/device/monitor"
	"github.com/gitfleet/gitfleet/schema"
	"github.com/labstack/echo/v5"
	"golang.org/x/time/rate"
)

// Store is what the device API needs from the store.
type Store interface {
	store.Devices
	store.Deployments
	store.DeploymentLogs
	store.Alerts
	store.DeviceAlerts
	store.ConfigStatuses
	store.EventLog
	store.Generations
	store.Coordination
}

// Planner is what the device API needs from a rollout plan compiled for
// one Snapshot (*rollout.Plan): pure decisions, which the API carries out
// against the store.
type Planner interface {
	Route(d *rollout.Device) (g store.GenerationRef, reason rollout.Reason, ok bool)
	Next(in rollout.NextInput) rollout.Decision
	OnStatus(in rollout.StatusInput) rollout.StatusDecision
	// WatchedBy returns the generations whose abort criteria name check.
	WatchedBy(check string) []store.GenerationRef
}

// CompilePlan builds a Snapshot's Planner from its fleet and the store's
// rollout records; rollout.Compile by default.
type CompilePlan func(fleet *schema.Fleet, records []store.RolloutRecord) Planner

// Artifacts is what the device API needs from the artifact cache
// (*artifacts.Cache): the verified artifact a manifest names, and
// presigned download URLs for it.
type Artifacts interface {
	Lookup(name string) (*artifacts.Entry, error)
	PresignURL(base string, e *artifacts.Entry, deviceID string, ttl time.Duration) (uri string, expire time.Time)
}

// Options configure an API. Store and Live are required.
type Options struct {
	Store Store
	// Live returns the Snapshot served; nil before the first commit, when
	// every device call answers 503 (try later).
	Live func() *reconcile.Snapshot
	// Artifacts serves artifacts; when nil no deployment is offered
	// (deployments/next answers 204).
	Artifacts Artifacts
	// Compile builds the rollout plan of each Snapshot; default
	// rollout.Compile (rollout.CompileFrom the previous Snapshot's plan,
	// which reuses its targets when the devices did not change).
	Compile CompilePlan
	// Clients finds a request's source for the per-source limit on auth
	// requests of devices that are not accepted: the TCP peer, or behind
	// trusted proxies the address they forward. Default: the TCP peer.
	Clients clientip.Resolver
	// PublicURL is the scheme and host devices reach the controller at
	// ("https://gitfleet.example.com"), the base of presigned download
	// URLs. Required with Artifacts (never derived from a request's Host).
	PublicURL string
	// DownloadTTL is how long a presigned download URL is good. Default
	// artifacts.DefaultURLTTL (1 hour); the Mender client resumes an
	// interrupted download with the same URL, so keep it generous.
	DownloadTTL time.Duration
	// TokenTTL is how long a device token is good. Default 7 days (as
	// Mender's). Admission is checked on every call anyway, so a device
	// removed from Git loses access at once, whatever its token says.
	TokenTTL time.Duration
	// TokenKey, when set (≥ 32 bytes), signs tokens instead of the
	// store's shared secret "deviceapi.jwt.hs256". Every replica must use
	// the same key.
	TokenKey []byte
	// MaxLogBody bounds a deployment log upload. Default 1 MiB.
	MaxLogBody int64
	// MaxLogLines bounds how many lines of one upload are logged. Default 200.
	MaxLogLines int
	// UnknownRate and UnknownBurst bound, per source address (the TCP
	// peer; IPv6 by /64), the auth requests of devices the live commit
	// does not accept: beyond them the answer is 429 and nothing is
	// recorded. Defaults DefaultUnknownRate and DefaultUnknownBurst.
	UnknownRate  rate.Limit
	UnknownBurst int
	// LogRate and LogBurst bound the deployment log uploads per device
	// that reach the controller's log; beyond them an upload is answered
	// 204 and dropped. Defaults DefaultLogRate and DefaultLogBurst.
	LogRate  rate.Limit
	LogBurst int
	// AlertRate and AlertBurst bound the monitoring alert batches per
	// device; beyond them the answer is 429 (the agent keeps its queue).
	// Defaults DefaultAlertRate and DefaultAlertBurst.
	AlertRate  rate.Limit
	AlertBurst int
	// AlertConcurrency bounds the alert batches processed at once; more
	// wait (at most AlertWait, default 5s, then 503 with Retry-After), so
	// that an alert storm leaves the CPU to deployment polls. Default
	// twice GOMAXPROCS, at least 2.
	AlertConcurrency int
	AlertWait        time.Duration
	// Config, when set, gives each Snapshot's device configuration
	// (nil for a Snapshot: none served, 404).
	Config func(*reconcile.Snapshot) ConfigSource
	// Configure, when set (with Config), offers stock Mender clients
	// their configuration as mender-configure deployments (configure.go).
	Configure *Configure
	// Notify, when set, announces an alert record that opened
	// (schema.EventAlertRaised) or closed (schema.EventAlertCleared). It
	// is called once per change, by the replica that recorded it, and
	// must not block.
	Notify func(ctx context.Context, a store.Alert, event string)
	Logger *slog.Logger
	Now    func() time.Time // default time.Now
}

// API serves the device endpoints. Create it with New.
type API struct {
	opts      Options
	log       *slog.Logger
	adm       admissions
	cas       certIndexes // DeviceCAs (cert.go)
	plan      plans
	prog      progressCache
	index     depIndex
	tokens    tokenCache
	monitors  monitorIndex
	announced onceSet
	seen      seenDevices   // when each device last polled this replica
	sweeps    sweepTimes    // when each generation was last swept for timeouts
	settles   everyInterval // when the rollouts were last checked for settled phases

	unknown  *limiter // auth requests of devices not accepted, per source
	logs     *limiter // log uploads, per device
	alertLim *limiter // alert batches, per device
	alertSem chan struct{}
	fullLog  everyInterval
	clashLog everyInterval
	dropLog  everyInterval

	keyMu sync.Mutex
	key   []byte
}

// New checks opts and returns an API; it does no I/O.
func New(opts Options) (*API, error) {
	if opts.Store == nil || opts.Live == nil {
		return nil, errors.New("deviceapi: Store and Live are required")
	}
	if opts.TokenKey != nil && len(opts.TokenKey) < 32 {
		return nil, errors.New("deviceapi: TokenKey must be at least 32 bytes")
	}
	if opts.TokenTTL <= 0 {
		opts.TokenTTL = 7 * 24 * time.Hour
	}
	if opts.MaxLogBody <= 0 {
		opts.MaxLogBody = 1 << 20
	}
	if opts.Artifacts != nil {
		if u, err := url.Parse(opts.PublicURL); err != nil || u.Scheme != "https" || u.Host == "" {
			return nil, errors.New("deviceapi: PublicURL must be the https URL devices reach the controller at")
		}
	}
	if opts.MaxLogLines <= 0 {
		opts.MaxLogLines = 200
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.DownloadTTL <= 0 {
		opts.DownloadTTL = artifacts.DefaultURLTTL
	}
	if opts.UnknownRate <= 0 {
		opts.UnknownRate = DefaultUnknownRate
	}
	if opts.UnknownBurst <= 0 {
		opts.UnknownBurst = DefaultUnknownBurst
	}
	if opts.LogRate <= 0 {
		opts.LogRate = DefaultLogRate
	}
	if opts.LogBurst <= 0 {
		opts.LogBurst = DefaultLogBurst
	}
	if opts.AlertRate <= 0 {
		opts.AlertRate = DefaultAlertRate
	}
	if opts.AlertBurst <= 0 {
		opts.AlertBurst = DefaultAlertBurst
	}
	if opts.AlertWait <= 0 {
		opts.AlertWait = 5 * time.Second
	}
	if opts.AlertConcurrency <= 0 {
		opts.AlertConcurrency = max(2, 2*runtime.GOMAXPROCS(0))
	}
	a := &API{opts: opts, log: opts.Logger, key: opts.TokenKey,
		unknown: newLimiter(opts.UnknownRate, opts.UnknownBurst), logs: newLimiter(opts.LogRate, opts.LogBurst),
		alertLim: newLimiter(opts.AlertRate, opts.AlertBurst), alertSem: make(chan struct{}, opts.AlertConcurrency)}
	a.tokens.setRevoked(a.revokedCert) // DeviceCA revocation, on every call (cert.go)
	return a, nil
}

// Register adds the device routes to g, which must be rooted at
// /api/devices:
//
//	POST  v1/authentication/auth_requests
//	POST  v2/deployments/device/deployments/next
//	POST  v1/deployments/device/deployments/next
//	GET   v1/deployments/device/deployments/next
//	PUT   v1/deployments/device/deployments/:id/status
//	PUT   v1/deployments/device/deployments/:id/log
//	PUT   v1/inventory/device/attributes
//	PATCH v1/inventory/device/attributes
//	GET   v1/devicemonitor/checks
//	POST  v1/devicemonitor/alerts
//	GET   v1/deviceconfig/gitfleet
//	PUT   v1/deviceconfig/gitfleet/status
//	PUT   v1/deviceconfig/configuration
//	GET   v1/deployments/download/configuration/:id/:type/:device (presigned)
//
// All but auth_requests and the presigned download need a device token.
func (a *API) Register(g *echo.Group) {
	g.POST("/v1/authentication/auth_requests", a.authRequest)
	dev := g.Group("", a.authenticate)
	dev.POST("/v2/deployments/device/deployments/next", a.nextV2)
	dev.POST("/v1/deployments/device/deployments/next", a.nextV1)
	dev.GET("/v1/deployments/device/deployments/next", a.nextGet)
	dev.PUT("/v1/deployments/device/deployments/:id/status", a.status)
	dev.PUT("/v1/deployments/device/deployments/:id/log", a.uploadLog)
	dev.PUT("/v1/inventory/device/attributes", a.inventoryPut)
	dev.PATCH("/v1/inventory/device/attributes", a.inventoryPatch)
	dev.GET(strings.TrimPrefix(monitor.ChecksPath, "/api/devices"), a.checkSet)
	dev.POST(strings.TrimPrefix(monitor.AlertsPath, "/api/devices"), a.alerts)
	dev.GET(strings.TrimPrefix(devconfig.ConfigPath, "/api/devices"), a.configuration)
	dev.PUT(strings.TrimPrefix(devconfig.StatusPath, "/api/devices"), a.configStatus)
	dev.PUT(strings.TrimPrefix(devconfig.ReportPath, "/api/devices"), a.configReport)
	a.registerConfigure(g)
}

// Handler serves only the device routes (for tests and tools); the
// controller mounts them with Register next to its own.
func (a *API) Handler() http.Handler {
	e := echo.New()
	e.HTTPErrorHandler = JSONErrors
	a.Register(e.Group("/api/devices"))
	return e
}

// JSONErrors answers {"error": message}, as the Mender server does. The
// status comes from any error that reports one (echo's *HTTPError, and
// the errors its router returns for an unknown path, 404, or a method the
// path does not take, 405, with the Allow header the router set). Any
// other error is ours: it is logged and answered 500 with a generic
// message, so internal error text never reaches a caller; so is the
// detail an *HTTPError wraps. HEAD gets the status without a body.
func JSONErrors(c *echo.Context, err error) {
	if r, _ := echo.UnwrapResponse(c.Response()); r != nil && r.Committed {
		return
	}
	code := echo.StatusCode(err)
	if code < 400 || code > 599 {
		code = http.StatusInternalServerError
	}
	msg := http.StatusText(code)
	var he *echo.HTTPError
	switch {
	case errors.As(err, &he) && he.Code == code:
		if he.Message != "" {
			msg = he.Message
		}
		if inner := he.Unwrap(); inner != nil {
			c.Logger().Error("request failed", "method", c.Request().Method, "path", c.Request().URL.Path, "status", code, "err", inner)
		}
	case echo.StatusCode(err) == 0:
		c.Logger().Error("request failed", "method", c.Request().Method, "path", c.Request().URL.Path, "err", err)
		msg = "internal error; see the controller's log"
	}
	if code == http.StatusMethodNotAllowed && c.Response().Header().Get(echo.HeaderAllow) == "" {
		if allow, ok := c.Get(echo.ContextKeyHeaderAllow).(string); ok && allow != "" {
			c.Response().Header().Set(echo.HeaderAllow, allow)
		}
	}
	if c.Request().Method == http.MethodHead {
		_ = c.NoContent(code)
		return
	}
	_ = c.JSON(code, map[string]string{"error": msg})
}

// tokenKey returns the HMAC key, reading (or creating) the shared secret
// the first time.
func (a *API) tokenKey(ctx context.Context) ([]byte, error) {
	a.keyMu.Lock()
	defer a.keyMu.Unlock()
	if a.key != nil {
		return a.key, nil
	}
	k, err := a.opts.Store.SharedSecret(ctx, tokenSecretName, newTokenKey)
	if err != nil {
		return nil, fmt.Errorf("read token key: %w", err)
	}
	if len(k) < 32 {
		return nil, fmt.Errorf("token key %q in the store is %d bytes (want ≥ 32)", tokenSecretName, len(k))
	}
	a.key = k
	return k, nil
}

// session is what authenticate puts in the context for a device call.
type session struct {
	claims   Claims
	manifest *schema.Device
	snap     *reconcile.Snapshot
	dev      rollout.Device // a poll's device (next), allocated with the session
}

const sessionKey = "gitfleet.device"

func sessionOf(c *echo.Context) *session { s, _ := c.Get(sessionKey).(*session); return s }

// authenticate checks the bearer token (signature, expiry) and that the
// live Snapshot still admits the device; 401 otherwise, which makes the
// Mender client authenticate again.
func (a *API) authenticate(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c *echo.Context) error {
		tok, ok := strings.CutPrefix(c.Request().Header.Get("Authorization"), "Bearer ")
		if !ok || tok == "" {
			return unauthorized(c, "a device token is required")
		}
		key, err := a.tokenKey(c.Request().Context())
		if err != nil {
			a.log.Error("device token key unavailable", "err", err)
			return echo.NewHTTPError(http.StatusServiceUnavailable, "store unavailable")
		}
		claims, err := a.verify(key, strings.TrimSpace(tok))
		if err != nil {
			a.log.Debug("device token refused", "err", err)
			return unauthorized(c, "invalid or expired device token")
		}
		snap := a.opts.Live()
		if snap == nil {
			return notReady()
		}
		// A trust-on-first-use device's token was issued only after the
		// store bound its key (claims.Key), and the store never rebinds
		// it: checking the manifest is enough.
		m := a.admitToken(snap, &claims) // Device manifests, or a DeviceCA (cert.go)
		if m == nil {
			a.log.Info("device no longer accepted", "device_id", claims.Subject)
			return unauthorized(c, "the device is not accepted")
		}
		c.Set(sessionKey, &session{claims: claims, manifest: m, snap: snap})
		return next(c)
	}
}

// notReady answers 503 while no Snapshot is served (a controller that just
// started): the client retries later and keeps its token.
func notReady() error {
	return echo.NewHTTPError(http.StatusServiceUnavailable, "the controller has not loaded the fleet yet; try again later")
}

func unauthorized(c *echo.Context, msg string) error {
	c.Response().Header().Set("WWW-Authenticate", `Bearer realm="gitfleet"`)
	return echo.NewHTTPError(http.StatusUnauthorized, msg)
}

// readBody reads the request body up to limit bytes: 413 beyond it.
func readBody(c *echo.Context, limit int64) ([]byte, error) {
	r := c.Request()
	if r.ContentLength > limit {
		return nil, echo.NewHTTPError(http.StatusRequestEntityTooLarge, "body larger than "+strconv.FormatInt(limit, 10)+" bytes")
	}
	if n := r.ContentLength; n >= 0 {
		// The usual body, of a declared length (the server reads no
		// more of it): one buffer of its size, where io.ReadAll's first
		// is 512 bytes and a poll's body some 100.
		b := make([]byte, n)
		if _, err := io.ReadFull(r.Body, b); err != nil {
			return nil, echo.NewHTTPError(http.StatusBadRequest, "the request body could not be read completely")
		}
		return b, nil
	}
	b, err := io.ReadAll(http.MaxBytesReader(c.Response(), r.Body, limit))
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return nil, echo.NewHTTPError(http.StatusRequestEntityTooLarge, "body larger than "+strconv.FormatInt(limit, 10)+" bytes")
	}
	if err != nil {
		// A network error (a stalled body cut by the server's deadline,
		// a reset): its text says nothing the client needs.
		return nil, echo.NewHTTPError(http.StatusBadRequest, "the request body could not be read completely")
	}
	return b, nil
}

// httpError maps errors to answers: bad requests are the device's fault
// (400, with the reason), the rest is ours (500/503, logged).
func (a *API) httpError(what string, err error, attrs ...any) error {
	var he *echo.HTTPError
	switch {
	case errors.As(err, &he):
		return he
	case errors.Is(err, ErrBadRequest):
		return echo.NewHTTPError(http.StatusBadRequest, strings.TrimPrefix(err.Error(), ErrBadRequest.Error()+": "))
	case errors.Is(err, context.Canceled):
		return echo.NewHTTPError(http.StatusServiceUnavailable, "request canceled")
	}
	a.log.Error(what+" failed", append(attrs, "err", err)...)
	return echo.NewHTTPError(http.StatusServiceUnavailable, what+" failed; try again")
}

// The real implementations satisfy what the API needs.
var (
	_ Planner   = (*rollout.Plan)(nil)
	_ Artifacts = (*artifacts.Cache)(nil)
	_ Store     = store.Store(nil)
)
