// Package controller assembles the Gitfleet controller: it follows the fleet
// repository (gitsource), turns each new commit into the live Snapshot
// (reconcile), keeps shared state in the store, takes Git host webhooks,
// and serves the HTTPS API: the device API, the read-only management API,
// health and metrics.
//
// Several controllers may share one store. Each follows Git on its own; the
// store's live commit only moves forward (see reconcile), and each replica
// watches it, fetching at once when another replica has gone further, so
// all replicas converge on the same commit.
package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gitfleet/gitfleet/controller/deviceapi"
	"github.com/gitfleet/gitfleet/controller/deviceconfig"
	"github.com/gitfleet/gitfleet/controller/deviceconnect"
	"github.com/gitfleet/gitfleet/controller/gitsource"
	"github.com/gitfleet/gitfleet/controller/notifier"
	"github.com/gitfleet/gitfleet/controller/operators"
	"github.com/gitfleet/gitfleet/controller/reconcile"
	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gitfleet/gitfleet/policies"
	"github.com/gitfleet/gitfleet/schema"
	"github.com/gitfleet/gitfleet/webhooks/receive"
	"github.com/prometheus/client_golang/prometheus"
)

// Source is what the controller needs from gitsource.
type Source interface {
	Run(ctx context.Context, trigger <-chan struct{}, onRevision func(context.Context, gitsource.Revision))
	// Redeliver makes Run hand over its next head even if it handed it
	// over last (the controller served another replica's commit since).
	Redeliver()
	Status() gitsource.Status
	// Revision returns a commit already in the local clone.
	Revision(ctx context.Context, sha string) (gitsource.Revision, error)
	reconcile.History
}

// Options configure a Controller.
type Options struct {
	Source Source
	Store  store.Store
	// Branch is recorded with each live commit.
	Branch string
	// Webhooks configures the receivers; Trigger and Deduper are set by the
	// controller (the store deduplicates deliveries across replicas). A nil
	// Webhooks disables /hooks.
	Webhooks *receive.Options
	// ManagementToken guards the read-only management API (bearer token);
	// empty disables it.
	ManagementToken string
	// WatchInterval is how often the store's live commit is compared with
	// the one served here. Default 5s.
	WatchInterval time.Duration
	// RetryInterval is the wait before reconciling again after a transient
	// store failure. Default 2s.
	RetryInterval time.Duration
	Logger        *slog.Logger
	// Registry receives the controller's metrics; nil makes a private one.
	Registry *prometheus.Registry
	// ReplicaID names this controller in logs and status; default the
	// process's host name and PID.
	ReplicaID string
	// Devices configures the device API (package deviceapi) served under
	// /api/devices; its Store, Live and (when nil) Logger are set by the
	// controller. Without Devices.Artifacts devices authenticate and
	// report inventory, but no deployment is offered; with it,
	// Devices.PublicURL is required (see CheckPublicURL).
	Devices deviceapi.Options
	// Downloads makes the handler of presigned artifact downloads
	// (artifacts.Cache's DownloadHandler), served under
	// artifacts.DownloadPath. The controller passes it the check that the
	// device a URL was issued to is still declared by the live commit, so
	// a URL stops working when its device is removed from Git. Nil serves
	// no downloads.
	Downloads func(admitted func(device string) bool) http.Handler
	// SyncArtifacts, when set, fetches and verifies the artifacts a fleet
	// declares (artifacts.Cache.Sync). The controller calls it whenever a
	// commit goes live and every SyncInterval, so an artifact uploaded
	// after its commit is picked up; it runs in the background and never
	// delays a commit going live.
	SyncArtifacts func(ctx context.Context, fleet *schema.Fleet) error
	// SyncInterval is the period of SyncArtifacts. Default 1 minute.
	SyncInterval time.Duration
	// PolicyBudget bounds the evaluation of the repository's own
	// policies at each commit (see policies.Budget; zero fields: the
	// defaults).
	PolicyBudget policies.Budget
	// DeviceConfig says where DeviceConfig secrets are found (see
	// reconcile.Options.DeviceConfig); a commit with a secret this
	// replica cannot resolve is refused here.
	DeviceConfig deviceconfig.Options
	// Notifications configures the notifier that sends events to the
	// live commit's Notification manifests (SMTP server, HTTP client);
	// its Logger and Registry default to the controller's. Every event
	// the store records first on this replica, and every alert the device
	// API records, is notified; the sinks follow each commit that goes
	// live, and Run lets them deliver what they hold for up to
	// NotifyDrain when it ends.
	Notifications notifier.Options
	// NotifyDrain bounds the delivery of queued notifications at
	// shutdown. Default 10 seconds.
	NotifyDrain time.Duration
}

// Controller follows Git and serves. Create it with New, serve its
// Handler, and call Run.
type Controller struct {
	views   viewPlan // the management views' rollout plan
	opts    Options
	rec     *reconcile.Reconciler
	hooks   *receive.Handler
	devices *deviceapi.API
	// operators is who may open remote sessions (operators.go).
	operators *operators.Access
	notify    *notifier.Notifier
	metrics   *metrics
	trigger   chan struct{}
	sync      chan struct{} // asks the artifact sync loop to run now
	log       *slog.Logger
	started   time.Time
	names     atomic.Pointer[deviceNames] // the live commit's device names
	mu        sync.Mutex
	last      reconcile.Result // the last Apply's result
	lastErr   error
	// refused is every commit this replica refused (at most the last
	// maxRefusedRemembered): the watcher does not evaluate one again
	// when another replica made it live.
	refusedHere map[string]bool
	attempts    int
	remote      *deviceconnect.Relay // nil when off
	remoteOff   string               // why it is off
}

// New checks opts and builds a Controller; it starts nothing.
func New(opts Options) (*Controller, error) {
	if opts.Source == nil || opts.Store == nil {
		return nil, errors.New("controller: Source and Store are required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Devices.Artifacts != nil {
		// Download URLs are built on the configured public URL, never on
		// the Host a request names (which the client chooses).
		if err := CheckPublicURL(opts.Devices.PublicURL); err != nil {
			return nil, fmt.Errorf("controller: %w", err)
		}
	}
	if opts.WatchInterval <= 0 {
		opts.WatchInterval = 5 * time.Second
	}
	if opts.RetryInterval <= 0 {
		opts.RetryInterval = 2 * time.Second
	}
	if opts.SyncInterval <= 0 {
		opts.SyncInterval = time.Minute
	}
	if opts.NotifyDrain <= 0 {
		opts.NotifyDrain = 10 * time.Second
	}
	if opts.Registry == nil {
		opts.Registry = prometheus.NewRegistry()
	}
	c := &Controller{
		opts:    opts,
		trigger: make(chan struct{}, 1),
		sync:    make(chan struct{}, 1),
		log:     opts.Logger,
		started: time.Now(),
	}
	c.metrics = newMetrics(opts.Registry, c)
	nopts := opts.Notifications
	if nopts.Logger == nil {
		nopts.Logger = opts.Logger
	}
	if nopts.Registry == nil {
		nopts.Registry = opts.Registry
	}
	n, err := notifier.New(nopts)
	if err != nil {
		return nil, fmt.Errorf("controller: notifications: %w", err)
	}
	c.notify = n
	// Reconciling and the device API append events through a log that
	// notifies what this replica records first.
	st := notifyingStore{Store: opts.Store, events: notifier.EventLog(opts.Store, n)}
	c.rec = reconcile.New(reconcile.Options{
		Store: st, History: opts.Source, Branch: opts.Branch, Logger: opts.Logger,
		PolicyBudget: opts.PolicyBudget, DeviceConfig: opts.DeviceConfig,
		// The sinks follow a commit before its events go out.
		Announcing: func(snap *reconcile.Snapshot) { _ = n.Configure(snap.Fleet) },
	})
	if err := c.newOperators(); err != nil {
		return nil, fmt.Errorf("controller: operators: %w", err)
	}
	dopts := opts.Devices
	dopts.Store, dopts.Live = st, c.rec.Live
	if dopts.Notify == nil {
		dopts.Notify = n.Alert
	}
	if dopts.Config == nil {
		dopts.Config = func(s *reconcile.Snapshot) deviceapi.ConfigSource {
			// Configuration is served once the live commit declares some:
			// a fleet without DeviceConfig leaves what devices run alone
			// (404), rather than giving every device an empty one.
			if s == nil || s.Config.Len() == 0 {
				return nil
			}
			return s.Config
		}
	}
	if dopts.Logger == nil {
		dopts.Logger = opts.Logger
	}
	devices, err := deviceapi.New(dopts)
	if err != nil {
		return nil, fmt.Errorf("controller: device API: %w", err)
	}
	c.devices = devices
	if err := c.newRemote(); err != nil {
		return nil, fmt.Errorf("controller: remote sessions: %w", err)
	}
	if opts.Webhooks != nil {
		wo := *opts.Webhooks
		wo.Deduper = opts.Store
		wo.Logger = opts.Logger
		wo.Trigger = func(ctx context.Context, p receive.Push) {
			c.log.Info("webhook push", "provider", p.Provider, "delivery", p.DeliveryID, "ref", p.Ref, "after", p.After)
			c.Trigger()
		}
		wo.Observe = func(p receive.Provider, o receive.Outcome) {
			c.metrics.webhooks.WithLabelValues(string(p), string(o)).Inc()
		}
		h, err := receive.New(wo)
		if err != nil {
			return nil, fmt.Errorf("controller: webhooks: %w", err)
		}
		c.hooks = h
	}
	return c, nil
}

// Trigger asks for a fetch as soon as possible; bursts coalesce.
func (c *Controller) Trigger() {
	select {
	case c.trigger <- struct{}{}:
	default:
	}
}

// Live returns the Snapshot served, or nil before the first good commit.
func (c *Controller) Live() *reconcile.Snapshot { return c.rec.Live() }

// Run restores the live commit from the store, then follows Git until ctx
// ends; then it lets queued notifications go out for up to NotifyDrain.
func (c *Controller) Run(ctx context.Context) error {
	c.restore(ctx)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		c.watchLive(ctx)
	}()
	go func() {
		defer wg.Done()
		c.syncArtifacts(ctx)
	}()
	c.runRemote(ctx, &wg)
	c.opts.Source.Run(ctx, c.trigger, c.apply)
	wg.Wait()
	drain, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.opts.NotifyDrain)
	defer cancel()
	if err := c.notify.Close(drain); err != nil {
		c.log.Warn("notifications still queued at shutdown were dropped", "err", err)
	}
	return nil
}

// Notifier returns the controller's notifier (its Stats and Problems).
func (c *Controller) Notifier() *notifier.Notifier { return c.notify }

// notifyingStore is the store with an event log that notifies (see
// notifier.EventLog); reconciling and the device API write through it.
type notifyingStore struct {
	store.Store
	events store.EventLog
}

func (s notifyingStore) AppendEvent(ctx context.Context, e store.Event) (string, bool, error) {
	return s.events.AppendEvent(ctx, e)
}

// restore serves the store's live commit at once when the local clone has
// it, so a restarted controller serves what it served before even if the
// branch head is now refused or the remote is down.
func (c *Controller) restore(ctx context.Context) {
	live, err := c.opts.Store.Live(ctx)
	if err != nil {
		if !errors.Is(err, store.ErrNotFound) {
			c.log.Warn("cannot read the live commit; waiting for Git", "err", err)
		}
		return
	}
	rev, err := c.opts.Source.Revision(ctx, live.SHA)
	if err != nil {
		c.log.Info("live commit not in the local clone yet; fetching", "commit", live.SHA)
		return
	}
	c.apply(ctx, rev)
}

// apply reconciles one revision, retrying transient store failures until
// it succeeds, the context ends, or a newer revision is waiting.
func (c *Controller) apply(ctx context.Context, rev gitsource.Revision) {
	for {
		start := time.Now()
		res, err := c.rec.Apply(ctx, rev)
		c.metrics.observe(res, err, time.Since(start))
		c.mu.Lock()
		c.last, c.lastErr = res, err
		if err == nil && res.Outcome == reconcile.Refused {
			if c.refusedHere == nil || len(c.refusedHere) >= maxRefusedRemembered {
				c.refusedHere = map[string]bool{}
			}
			c.refusedHere[res.SHA] = true
		}
		c.mu.Unlock()
		switch {
		case err == nil && res.Outcome == reconcile.Behind:
			c.log.Info("another replica is ahead; fetching again", "commit", rev.SHA, "live", res.LiveSHA)
			c.Trigger()
			return
		case err == nil:
			if res.Outcome == reconcile.Applied {
				c.requestSync()
				c.operators.Notify() // open remote sessions are checked against the new commit
			}
			return
		case errors.Is(err, reconcile.ErrTransient):
			c.log.Warn("reconcile failed; retrying", "commit", rev.SHA, "err", err)
		default:
			c.log.Error("reconcile failed", "commit", rev.SHA, "err", err)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(c.opts.RetryInterval):
		}
	}
}

// watchLive compares the store's live commit with the one served here and
// fetches when they differ: another replica has seen a newer commit.
// maxRefusedRemembered bounds the commits a replica remembers refusing.
const maxRefusedRemembered = 64

func (c *Controller) watchLive(ctx context.Context) {
	t := time.NewTicker(c.opts.WatchInterval)
	defer t.Stop()
	var warnedRefusedLive string
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		live, err := c.opts.Store.Live(ctx)
		if err != nil {
			continue
		}
		if snap := c.rec.Live(); snap == nil || snap.Commit.SHA != live.SHA {
			c.mu.Lock()
			refused := c.refusedHere[live.SHA]
			c.mu.Unlock()
			if refused {
				// Another replica accepted a commit this one refused
				// (a policy near its time budget on a slower machine):
				// evaluating it again every tick would only burn the
				// budget again. The next commit is taken as usual.
				if warnedRefusedLive != live.SHA {
					c.log.Warn("the live commit, made live by another replica, was refused here; this replica keeps serving its last good commit until the next one",
						"commit", live.SHA)
					warnedRefusedLive = live.SHA
				}
				continue
			}
			if rev, err := c.opts.Source.Revision(ctx, live.SHA); err == nil {
				c.apply(ctx, rev)
			} else {
				c.Trigger()
			}
			// This replica now serves what another made live; when the
			// branch comes back to the head it handed over last, that
			// head must be applied again.
			c.opts.Source.Redeliver()
		}
	}
}

func (c *Controller) requestSync() {
	select {
	case c.sync <- struct{}{}:
	default:
	}
}

// syncArtifacts keeps the artifact cache in step with the live fleet: at
// once when a commit goes live, and every SyncInterval.
func (c *Controller) syncArtifacts(ctx context.Context) {
	if c.opts.SyncArtifacts == nil {
		return
	}
	t := time.NewTicker(c.opts.SyncInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-c.sync:
		}
		snap := c.rec.Live()
		if snap == nil {
			continue
		}
		if err := c.opts.SyncArtifacts(ctx, snap.Fleet); err != nil && ctx.Err() == nil {
			c.log.Warn("artifact sync failed", "err", err)
		}
	}
}

// deviceNames indexes one Snapshot's Device manifests by name: their
// positions, sorted by name (4 bytes a device).
type deviceNames struct {
	snap  *reconcile.Snapshot
	order []int32
}

// deviceDeclared reports whether the live commit declares a Device
// manifest named name, or a DeviceCA that names it (deviceca.go): the
// device a download URL was issued to. The index
// is built once per Snapshot, by the first download that needs it.
func (c *Controller) deviceDeclared(name string) bool {
	snap := c.rec.Live()
	return snap != nil && snap.Fleet != nil && c.declaredDevice(snap, name) != nil
}

// CheckPublicURL checks a public URL: what devices reach the controller
// at, the base of download URLs: https://host[:port], with no user
// information, path, query or fragment.
func CheckPublicURL(s string) error {
	if s == "" {
		return errors.New("the public URL (https://host[:port] devices reach the controller at) is required to offer deployments")
	}
	u, err := url.Parse(s)
	shown := func() string { v := *u; v.User = nil; return v.String() } // no secrets in errors
	switch {
	case err != nil:
		return errors.New("the public URL does not parse; give https://host[:port]")
	case u.Scheme != "https":
		return fmt.Errorf("public URL %q: use https://host[:port] (devices download over TLS only)", shown())
	case u.User != nil:
		return fmt.Errorf("public URL %q: must not hold a user name or password", shown())
	case u.Host == "" || u.Hostname() == "":
		return fmt.Errorf("public URL %q names no host", shown())
	case u.Path != "" && u.Path != "/", u.RawQuery != "", u.Fragment != "", u.Opaque != "":
		return fmt.Errorf("public URL %q: give only https://host[:port], without a path, query or fragment", shown())
	}
	return nil
}
