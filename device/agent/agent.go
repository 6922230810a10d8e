package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"

	"github.com/gitfleet/gitfleet/artifact"
	"github.com/gitfleet/gitfleet/device/install"
)

// recordStore is where the state record lives (Records; tests wrap it).
type recordStore interface {
	Load() (*Record, error)
	Save(*Record) error
	Clear() error
}

// Version is the agent's version, reported in the inventory.
var Version = "dev"

// ExitRebootRequested is the exit status of gitfleet-agent when
// RebootByExit is set and the agent wants the device rebooted (EX_TEMPFAIL).
const ExitRebootRequested = 75

// Options configure an Agent.
type Options struct {
	// Config is the configuration; New fills in its defaults.
	Config Config
	// Server is the controller's device API; nil allows standalone use
	// only (install, commit, rollback, show-artifact).
	Server Server
	// Installers makes the installer of each payload; required to update.
	Installers NewInstaller
	// Types lists the payload types the device can install (the
	// inventory's update_modules); optional.
	Types func() []string
	// Scripts runs state scripts; nil runs none.
	Scripts Scripts
	// Rebooter reboots the device. Default: RebootByExit → ExitRebooter,
	// otherwise CommandRebooter with Config.RebootCommand.
	Rebooter Rebooter
	// Commands runs the health check, identity and inventory scripts and
	// the reboot command. Default OSCommander.
	Commands Commander
	// Verifiers are the trusted artifact keys. Default: loaded from
	// Config.ArtifactVerifyKey(s).
	Verifiers []*artifact.Verifier
	// Download configures artifact downloads (HTTP client, retries).
	Download DownloadOptions
	// Logger; default slog.Default().
	Logger *slog.Logger
	// Now and Sleep are the clock; defaults time.Now and a timer. Now is
	// the monitoring's clock too.
	Now   func() time.Time
	Sleep func(ctx context.Context, d time.Duration) error
	// MonitorAPI is the controller's monitoring API. Default: Server, when
	// it implements MonitorServer (Client does).
	MonitorAPI MonitorServer
	// ConfigAPI is the controller's device configuration API. Default:
	// Server, when it implements ConfigServer (Client does).
	ConfigAPI ConfigServer
}

// Agent is the device agent: it polls the server, runs deployments through
// the state machine and reports their outcome.
type Agent struct {
	cfg          Config
	server       Server
	newInstaller NewInstaller
	types        func() []string
	scripts      Scripts
	rebooter     Rebooter
	cmds         Commander
	verifiers    []*artifact.Verifier
	dl           DownloadOptions
	log          *slog.Logger
	now          func() time.Time
	sleep        func(ctx context.Context, d time.Duration) error
	records      recordStore
	deplog       *deploymentLog

	monAPI    MonitorServer
	monMu     sync.Mutex
	mon       *monitoring // made on first use; see monitoring
	monFailed bool
	outMu     sync.Mutex // deployments.json

	cfgAPI ConfigServer
}

// New returns an agent. It creates the data directory.
func New(opts Options) (*Agent, error) {
	cfg := opts.Config
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	a := &Agent{
		cfg:          cfg,
		server:       opts.Server,
		newInstaller: opts.Installers,
		types:        opts.Types,
		scripts:      opts.Scripts,
		rebooter:     opts.Rebooter,
		cmds:         opts.Commands,
		verifiers:    opts.Verifiers,
		dl:           opts.Download,
		log:          opts.Logger,
		now:          opts.Now,
		sleep:        opts.Sleep,
		monAPI:       opts.MonitorAPI,
		cfgAPI:       opts.ConfigAPI,
	}
	if a.cmds == nil {
		a.cmds = OSCommander{}
	}
	if a.log == nil {
		a.log = slog.Default()
	}
	if a.now == nil {
		a.now = time.Now
	}
	if a.sleep == nil {
		a.sleep = sleepCtx
	}
	if a.dl.Sleep == nil {
		a.dl.Sleep = a.sleep
	}
	if a.rebooter == nil {
		if cfg.RebootByExit {
			a.rebooter = ExitRebooter{}
		} else {
			a.rebooter = &CommandRebooter{Command: cfg.RebootCommand, Commands: a.cmds}
		}
	}
	if a.newInstaller == nil {
		a.newInstaller = func(p install.Payload) (install.Installer, error) {
			return nil, fmt.Errorf("no installer for payload type %q", p.Header.Payloads[p.Index].Type)
		}
	}
	if a.verifiers == nil {
		for _, p := range cfg.VerifyKeys() {
			b, err := readFileBounded(p, 64<<10)
			if err != nil {
				return nil, fmt.Errorf("artifact verify key: %w", err)
			}
			v, err := artifact.LoadVerifier(b)
			if err != nil {
				return nil, fmt.Errorf("artifact verify key %s: %w", p, err)
			}
			a.verifiers = append(a.verifiers, v)
		}
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	a.records = NewRecords(filepath.Join(cfg.DataDir, "state.json"))
	a.deplog = &deploymentLog{path: filepath.Join(cfg.DataDir, "deployment.log")}
	return a, nil
}

// TokenSource is the device's token as the agent's server connection
// keeps it (Client is one): the agent's other connections to the
// controller (the remote terminal) use it and invalidate a token the
// controller refuses.
type TokenSource interface {
	Token(ctx context.Context) (string, error)
	Invalidate(token string)
}

// Tokens returns the server's TokenSource; nil when there is no server or
// it keeps no token.
func (a *Agent) Tokens() TokenSource {
	ts, _ := a.server.(TokenSource)
	return ts
}

// Config returns the configuration in use (defaults filled in).
func (a *Agent) Config() Config { return a.cfg }

// Record returns the state record of the deployment in progress, or nil.
func (a *Agent) Record() (*Record, error) { return a.records.Load() }

func (a *Agent) providesPath() string { return filepath.Join(a.cfg.DataDir, "artifact_info") }

// KeyPath is where the device key lives.
func (a *Agent) KeyPath() string { return filepath.Join(a.cfg.DataDir, "device.key") }

// Errors of the standalone commands.
var (
	ErrBusy        = errors.New("agent: an update is in progress")
	ErrNothingToDo = errors.New("agent: no update in progress")
)

// Resume carries on with the deployment the state record names, if any:
// after a reboot, a crash or a power cut. It returns ErrRebooting when it
// stopped for a reboot. A standalone install waiting for commit or
// rollback is left alone (ok is false for it, as for no record).
func (a *Agent) Resume(ctx context.Context) (ok bool, err error) {
	rec, err := a.records.Load()
	if err != nil || rec == nil {
		return false, err
	}
	if rec.Deployment.Standalone() && !rec.Committed && (rec.State == StateArtifactReboot || rec.State == StateArtifactCommit) {
		a.log.Warn("a standalone install waits for commit or rollback", "artifact", rec.Deployment.ArtifactName, "state", rec.State)
		return false, nil
	}
	return true, a.resume(ctx, rec, false)
}

func (a *Agent) resume(ctx context.Context, rec *Record, commit bool) error {
	d := &deployment{a: a, rec: rec, resumed: true, commit: commit}
	st := d.resumeState()
	a.log.Info("resuming deployment", "deployment", rec.Deployment.ID, "artifact", rec.Deployment.ArtifactName, "state", rec.State, "next", st.Name())
	switch st.Name() {
	case StateArtifactVerifyReboot, StateArtifactCommit:
		// A start in the new software before it was committed: count it,
		// and break the loop of a software that keeps dying.
		if !rec.Committed && rec.Reboot != "" && rec.Reboot != install.RebootNo.String() {
			rec.Boots++
			if rec.Boots > a.cfg.MaxBootCount {
				err := fmt.Errorf("started %d times without committing (MaxBootCount %d)", rec.Boots, a.cfg.MaxBootCount)
				st = d.fail(ctx, err)
			}
			if err := d.save(); err != nil {
				return err
			}
		}
	}
	if err := d.run(ctx, st); err != nil {
		return err
	}
	return a.outcomeOf(rec)
}

// CheckUpdate resumes a deployment in progress or asks the server for one
// and runs it to its end (or to a reboot: ErrRebooting). It reports
// whether there was a deployment.
func (a *Agent) CheckUpdate(ctx context.Context) (bool, error) {
	rec, err := a.records.Load()
	if err != nil {
		return false, err
	}
	if rec != nil {
		if rec.Deployment.Standalone() {
			return false, fmt.Errorf("%w: standalone install of %s (state %s): commit or roll it back", ErrBusy, rec.Deployment.ArtifactName, rec.State)
		}
		return true, a.resume(ctx, rec, false)
	}
	if a.server == nil {
		return false, errors.New("agent: no server configured")
	}
	provides, err := a.ArtifactInfo()
	if err != nil {
		return false, err
	}
	dt, err := a.DeviceType()
	if err != nil {
		return false, err
	}
	provides["device_type"] = dt
	// Sync: the Sync scripts (Mender's rootfs scripts, e.g. to bring a
	// link up) run around asking the server; a failing Sync_Enter skips
	// this check, and the daemon tries again after its back-off.
	if err := a.loopScripts(ctx, StateSync, "Enter"); err != nil {
		return false, err
	}
	dep, err := a.server.Next(ctx, provides)
	if lerr := a.loopScripts(ctx, StateSync, "Leave"); lerr != nil && err == nil {
		return false, lerr
	}
	if err != nil || dep == nil {
		return false, err
	}
	if dep.ID == "" {
		// Only a standalone install has no ID; a server's deployment must
		// never be taken for one (local files, no report).
		return false, fmt.Errorf("%w: deployments/next: deployment without id", ErrRejected)
	}
	log := a.log.With("deployment", dep.ID, "artifact", dep.ArtifactName)
	if dep.ArtifactName != "" && dep.ArtifactName == provides["artifact_name"] {
		log.Info("artifact already installed")
		if err := a.server.Status(ctx, dep.ID, StatusAlreadyInstalled, ""); err != nil && !errors.Is(err, ErrAborted) {
			return true, err
		}
		return true, nil
	}
	log.Info("deployment")
	return true, a.start(ctx, *dep)
}

// start runs a new deployment. It returns ErrFailed when the deployment
// ran to its end and failed (the failure is reported to the server like
// any outcome).
func (a *Agent) start(ctx context.Context, dep Deployment) error {
	a.deplog.reset()
	now := a.now()
	rec := &Record{Deployment: dep, Started: now}
	d := &deployment{a: a, rec: rec}
	d.logf(slog.LevelInfo, "deployment of %s from %s", orUnknown(dep.ArtifactName), redactURI(dep.URI))
	if err := d.run(ctx, download{}); err != nil {
		return err
	}
	return a.outcomeOf(rec)
}

// Install installs an artifact from a file or an http(s) URL without a
// server (standalone). It stops at the reboot (or, when none is needed,
// before the commit): reboot, then Commit or Rollback. ErrBusy when a
// deployment is in progress.
func (a *Agent) Install(ctx context.Context, src string) error {
	rec, err := a.records.Load()
	if err != nil {
		return err
	}
	if rec != nil {
		return fmt.Errorf("%w: %s (state %s)", ErrBusy, orUnknown(rec.Deployment.ArtifactName), rec.State)
	}
	err = a.start(ctx, Deployment{URI: src})
	if errors.Is(err, errStandaloneWait) {
		return nil
	}
	return err
}

// Commit commits the update in progress: it checks (after the reboot) that
// the new software runs and passes the health check, then makes it
// permanent.
func (a *Agent) Commit(ctx context.Context) error {
	rec, err := a.records.Load()
	if err != nil {
		return err
	}
	if rec == nil {
		return ErrNothingToDo
	}
	switch rec.State {
	case StateDownload, StateArtifactInstall:
		return fmt.Errorf("%w: %s is not installed yet (state %s)", ErrBusy, orUnknown(rec.Deployment.ArtifactName), rec.State)
	case StateArtifactReboot:
		if a.sameBoot(rec.BootID) {
			return fmt.Errorf("%w: reboot before committing %s", ErrBusy, orUnknown(rec.Deployment.ArtifactName))
		}
	}
	return a.resume(ctx, rec, true)
}

// Rollback abandons the update in progress: before the commit it returns
// to the old software (reboot to run it); a download is cleaned up.
func (a *Agent) Rollback(ctx context.Context) error {
	rec, err := a.records.Load()
	if err != nil {
		return err
	}
	if rec == nil {
		return ErrNothingToDo
	}
	d := &deployment{a: a, rec: rec, resumed: true}
	if rec.Committed {
		// The commit was recorded (the agent stopped before the end of
		// the deployment): nothing is rolled back. A standalone install
		// is finished here, so the record goes and artifact_info says
		// what runs; a server's deployment is left to the daemon, which
		// reports its outcome (ArtifactInfo follows the record until then).
		if rec.Deployment.Standalone() {
			if err := a.resume(ctx, rec, true); err != nil {
				return err
			}
		}
		return fmt.Errorf("%w: %s is committed; install the previous artifact to go back", ErrBusy, orUnknown(rec.Deployment.ArtifactName))
	}
	st := d.fail(ctx, errors.New("rolled back on request"))
	if err := d.run(ctx, st); err != nil {
		return err
	}
	if d.rollbackErr != nil {
		return fmt.Errorf("agent: rollback failed: %w", d.rollbackErr)
	}
	return nil
}

// ErrFailed: the deployment ran to its end and failed (rolled back, or
// never installed); the error carries the first reason.
var ErrFailed = errors.New("agent: update failed")

// outcomeOf is nil when the deployment of rec succeeded, ErrFailed with its
// first error otherwise.
func (a *Agent) outcomeOf(rec *Record) error {
	if rec.Status == StatusSuccess {
		return nil
	}
	if rec.Error != "" {
		return fmt.Errorf("%w: %s", ErrFailed, rec.Error)
	}
	return ErrFailed
}

// SendInventory sends the inventory: the inventory scripts' attributes,
// artifact_name, device_type, every provide, the installable payload types
// (update_modules) and the agent's version.
func (a *Agent) SendInventory(ctx context.Context) error {
	if a.server == nil {
		return errors.New("agent: no server configured")
	}
	attrs, errs := Inventory(ctx, a.cmds, a.cfg.InventoryScriptsDir)
	for _, err := range errs {
		a.log.Warn("inventory", "err", err)
	}
	set := func(k string, v ...string) { attrs[k] = v }
	if p, err := a.ArtifactInfo(); err == nil {
		for k, v := range p {
			set(k, v)
		}
	}
	if dt, err := a.DeviceType(); err == nil {
		set("device_type", dt)
	}
	if a.types != nil {
		if t := a.types(); len(t) > 0 {
			set("update_modules", t...)
		}
	}
	set("gitfleet_agent_version", Version)
	names := make([]string, 0, len(attrs))
	for k := range attrs {
		names = append(names, k)
	}
	sort.Strings(names)
	out := make([]Attribute, 0, len(names))
	for _, k := range names {
		vs := attrs[k]
		if len(vs) == 1 {
			out = append(out, Attribute{Name: k, Value: vs[0]})
		} else {
			out = append(out, Attribute{Name: k, Value: vs})
		}
	}
	return a.server.Inventory(ctx, out)
}

// Daemon runs the managed mode: it resumes a deployment in progress, then
// polls for deployments every UpdatePollIntervalSeconds and sends the
// inventory every InventoryPollIntervalSeconds, each with ±10 % jitter;
// while the server cannot be reached it backs off exponentially up to
// RetryPollIntervalSeconds. It returns when ctx is done, or ErrRebooting.
//
// Unless Monitor is false in the configuration, it also runs the device's
// monitoring checks: it fetches them with every update poll (conditionally
// on their ETag), runs them in a device/monitor Monitor, and delivers
// their alerts as they happen and after each poll, backing off while the
// controller cannot take them (they wait in the Monitor's persisted,
// bounded queue).
//
// Unless DeviceConfig is false, it also applies the device configuration
// (see ConfigApplier): once it has resumed the deployment in progress it
// reconciles the configuration kept from the last run (re-applying it when
// its file is missing), and after every update poll it fetches the
// configuration (conditionally on its ETag), applies a changed one,
// reports drift and delivers the statuses.
func (a *Agent) Daemon(ctx context.Context) error {
	if mo := a.monitoring(); mo != nil {
		mctx, stop := context.WithCancel(ctx)
		wait := mo.start(mctx)
		defer func() {
			stop()
			wait()
			a.closeMonitoring()
		}()
	}
	if _, err := a.Resume(ctx); err != nil {
		if isStop(err) {
			return err
		}
		if !errors.Is(err, ErrFailed) { // a failed deployment is logged and reported
			a.log.Error("resuming the deployment failed", "err", err)
		}
	}
	dc, dcAPI := a.configApplier()
	if dc != nil {
		dc.Reconcile(ctx)
	}
	now := a.now()
	nextUpdate, nextInv := now, now
	updBackoff, invBackoff := a.backoff(), a.backoff()
	for {
		wait := nextUpdate.Sub(a.now())
		if w := nextInv.Sub(a.now()); w < wait {
			wait = w
		}
		if wait > 0 {
			// Idle: its scripts run when the daemon starts waiting and
			// when it stops; a failure is logged (and its Error scripts
			// run), and the daemon goes on.
			_ = a.loopScripts(ctx, StateIdle, "Enter")
			if err := a.sleep(ctx, wait); err != nil {
				return nil
			}
			_ = a.loopScripts(ctx, StateIdle, "Leave")
		}
		if !a.now().Before(nextInv) {
			if err := a.SendInventory(ctx); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				d := invBackoff.NextBackOff()
				a.log.Warn("sending the inventory failed", "err", err, "retry_in", d.Round(time.Second))
				nextInv = a.now().Add(d)
			} else {
				invBackoff.Reset()
				nextInv = a.now().Add(a.jitter(seconds(a.cfg.InventoryPollIntervalSeconds)))
			}
		}
		if !a.now().Before(nextUpdate) {
			_, err := a.CheckUpdate(ctx)
			// The monitoring checks with the same cadence, so a change in
			// Git reaches the device within one poll; not when the device
			// is not accepted (a second authentication attempt per poll
			// would only count against the controller's limits).
			if mo := a.monitoring(); mo != nil && ctx.Err() == nil && !isStop(err) && !errors.Is(err, ErrUnauthorized) {
				if perr := mo.poll(ctx); perr != nil && ctx.Err() == nil {
					a.log.Warn("fetching the monitoring checks failed; the checks in use stay", "err", perr)
				}
			}
			// The device configuration likewise.
			if dc != nil && ctx.Err() == nil && !isStop(err) && !errors.Is(err, ErrUnauthorized) {
				if perr := dc.Poll(ctx, dcAPI); perr != nil && ctx.Err() == nil {
					a.log.Warn("fetching or reporting the device configuration failed; the configuration in use stays", "err", perr)
				}
			}
			switch {
			case errors.Is(err, ErrRebooting):
				return err
			case ctx.Err() != nil:
				return nil
			case isStop(err):
				return err
			case errors.Is(err, ErrFailed):
				// The deployment is over and its failure reported: poll
				// at the normal pace.
				updBackoff.Reset()
				nextUpdate = a.now().Add(a.jitter(seconds(a.cfg.UpdatePollIntervalSeconds)))
			case err != nil && !errors.Is(err, ErrBusy):
				d := updBackoff.NextBackOff()
				a.log.Warn("checking for an update failed", "err", err, "retry_in", d.Round(time.Second))
				nextUpdate = a.now().Add(d)
			default:
				updBackoff.Reset()
				nextUpdate = a.now().Add(a.jitter(seconds(a.cfg.UpdatePollIntervalSeconds)))
			}
		}
	}
}

// loopScripts runs the state scripts of the daemon loop's states (Idle,
// Sync), which come from the root file system, not from an artifact. An
// Enter or Leave failure runs the state's Error scripts and is returned;
// failing Error scripts are only logged.
func (a *Agent) loopScripts(ctx context.Context, st StateName, action string) error {
	if a.scripts == nil {
		return nil
	}
	err := a.scripts.Run(ctx, st, action)
	if err == nil {
		return nil
	}
	a.log.Warn("state scripts failed", "state", st, "action", action, "err", err)
	if eerr := a.scripts.Run(ctx, st, "Error"); eerr != nil {
		a.log.Warn("state scripts failed", "state", st, "action", "Error", "err", eerr)
	}
	return fmt.Errorf("%s_%s scripts: %w", st, action, err)
}

// jitter spreads d by ±10 %.
func (a *Agent) jitter(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (0.9 + 0.2*rand.Float64()))
}

// backoff is the wait between retries while the server cannot be reached:
// 5 s doubling up to RetryPollIntervalSeconds, each wait spread by ±25 %.
func (a *Agent) backoff() *backoff.ExponentialBackOff {
	maxWait := seconds(a.cfg.RetryPollIntervalSeconds)
	return &backoff.ExponentialBackOff{
		InitialInterval:     min(5*time.Second, maxWait),
		RandomizationFactor: 0.25,
		Multiplier:          2,
		MaxInterval:         maxWait,
	}
}

// ErrSourceRefused: the server sent a download URI the agent does not
// read from (a local path, file://, plain http without
// AllowHTTPDownloads, …).
var ErrSourceRefused = errors.New("agent: download source refused")

// checkSource applies the download rule: a server's deployment is read
// only from an https URL (http too with AllowHTTPDownloads); a standalone
// install, whose source the local operator named, also from a local file.
func (a *Agent) checkSource(dep Deployment) error {
	uri := dep.URI
	if dep.Standalone() {
		return nil
	}
	u, err := url.Parse(uri)
	switch {
	case err != nil || u.Host == "" || u.User != nil:
	case u.Scheme == "https":
		return nil
	case u.Scheme == "http" && a.cfg.AllowHTTPDownloads:
		return nil
	}
	allowed := "https"
	if a.cfg.AllowHTTPDownloads {
		allowed = "https or http"
	}
	return fmt.Errorf("%w: the server sent %q; the agent downloads deployments only from %s URLs (set AllowHTTPDownloads in the agent configuration to allow plain http)",
		ErrSourceRefused, redactURI(clipURI(uri)), allowed)
}

// open returns the artifact stream of dep: a resumable HTTP download for
// http(s) URLs, the file otherwise (standalone only; see checkSource).
func (a *Agent) open(ctx context.Context, dep Deployment) (io.ReadCloser, error) {
	if err := a.checkSource(dep); err != nil {
		return nil, err
	}
	uri := dep.URI
	if strings.HasPrefix(uri, "https://") || strings.HasPrefix(uri, "http://") {
		opts := a.dl
		if !a.cfg.AllowHTTPDownloads && !dep.Standalone() {
			// A redirect must not lead a server's download off https.
			c := http.Client{}
			if opts.HTTP != nil {
				c = *opts.HTTP
			}
			next := c.CheckRedirect
			c.CheckRedirect = func(req *http.Request, via []*http.Request) error {
				if req.URL.Scheme != "https" {
					return fmt.Errorf("%w: redirect to a %s URL", ErrSourceRefused, req.URL.Scheme)
				}
				if next != nil {
					return next(req, via)
				}
				if len(via) >= 10 {
					return errors.New("stopped after 10 redirects")
				}
				return nil
			}
			opts.HTTP = &c
		}
		return Download(ctx, uri, opts), nil
	}
	f, err := os.Open(uri)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrDownload, err)
	}
	return f, nil
}

// clipURI shortens an untrusted URI for messages.
func clipURI(s string) string {
	if len(s) > 200 {
		return s[:200] + "…"
	}
	return s
}

// ErrHealthCheck: the health check command failed.
var ErrHealthCheck = errors.New("agent: health check failed")

func (a *Agent) healthCheck(ctx context.Context) error {
	if len(a.cfg.HealthCheck) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, seconds(a.cfg.HealthCheckTimeoutSeconds))
	defer cancel()
	if _, err := a.cmds.Output(ctx, a.cfg.HealthCheck); err != nil {
		if errors.Is(err, context.Canceled) {
			return err
		}
		return fmt.Errorf("%w: %v", ErrHealthCheck, err)
	}
	return nil
}

func (a *Agent) reboot(ctx context.Context) error { return a.rebooter.Reboot(ctx) }

// bootID identifies the current boot ("" when unknown).
func (a *Agent) bootID() string {
	b, err := readFileBounded(a.cfg.BootIDFile, 4<<10)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// sameBoot reports whether id is known and names the current boot.
func (a *Agent) sameBoot(id string) bool { return id != "" && id == a.bootID() }

// ExitRebooter leaves the reboot to whoever started the agent: the agent
// stops and gitfleet-agent exits with ExitRebootRequested (the simulated
// device runs its boot step and starts the agent again).
type ExitRebooter struct{}

// Reboot implements Rebooter.
func (ExitRebooter) Reboot(ctx context.Context) error { return nil }

// CommandRebooter runs a command (reboot) and waits for the shutdown to
// stop the agent.
type CommandRebooter struct {
	Command  []string
	Commands Commander
	// Wait is how long to wait for the shutdown. Default 10 min.
	Wait time.Duration
}

// Reboot implements Rebooter: nil once the shutdown has begun (ctx done),
// an error when the command fails or nothing happens within Wait.
func (r *CommandRebooter) Reboot(ctx context.Context) error {
	if _, err := r.Commands.Output(ctx, r.Command); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	wait := r.Wait
	if wait <= 0 {
		wait = 10 * time.Minute
	}
	if err := sleepCtx(ctx, wait); err != nil {
		return nil // being stopped: the shutdown is under way
	}
	return fmt.Errorf("%s ran but the device did not reboot within %s", r.Command[0], wait)
}

func orUnknown(s string) string {
	if s == "" {
		return "(unknown artifact)"
	}
	return s
}

// redactURI drops the query of a URL (presigned credentials) and any
// user:password before its host.
func redactURI(u string) string {
	if i := strings.IndexByte(u, '?'); i >= 0 {
		u = u[:i] + "?…"
	}
	if i := strings.Index(u, "://"); i >= 0 {
		rest := u[i+3:]
		host, path, _ := strings.Cut(rest, "/")
		if j := strings.LastIndexByte(host, '@'); j >= 0 {
			u = u[:i+3] + "…@" + host[j+1:]
			if len(path) > 0 || strings.Contains(rest, "/") {
				u += "/" + path
			}
		}
	}
	return u
}
