// Package operators is who may open remote sessions to devices, and what
// they may do there, as the live commit's Operator manifests say: it
// authenticates operators (a personal access token whose SHA-256 an
// Operator declares, or a session token issued by its login endpoints),
// grants access per device (package deviceconnect's Authorizer), and
// serves what the stock mender-cli needs besides sessions: its login
// (POST /api/management/v1/useradm/auth/login) and its read-only device
// and artifact listings, limited to what the operator may reach.
//
// Nothing here is kept in process memory that another replica would need:
// session tokens are signed with a secret shared through the store, so
// every replica accepts them, and an SSH login's challenge is signed the
// same way and spent through the store (single use across replicas).
// Whether a token still works is decided against the live commit at each
// use: removing an Operator from Git, letting it expire or changing its
// credential in Git revokes every session token issued for it.
package operators

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gitfleet/gitfleet/controller/clientip"
	"github.com/gitfleet/gitfleet/controller/deviceconnect"
	"github.com/gitfleet/gitfleet/controller/reconcile"
	"github.com/gitfleet/gitfleet/controller/store"
	"golang.org/x/time/rate"
)

// Options configure an Access.
type Options struct {
	// Live returns the Snapshot served (the controller's), nil before the
	// first commit. Required.
	Live func() *reconcile.Snapshot
	// Store keeps the session-token secret, spends login challenges and
	// holds the device records (identity, inventory) that group
	// selectors match. Required.
	Store store.Store
	// Clients says where a request comes from, for the limit on failed
	// logins per source.
	Clients clientip.Resolver
	Logger  *slog.Logger
	// SessionTTL is how long a session token issued at login lasts (never
	// past the operator's expiry). Default 12 hours.
	SessionTTL time.Duration
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Access implements deviceconnect.Authorizer over the live commit and
// serves the operator login and listings.
type Access struct {
	opts    Options
	log     *slog.Logger
	changed chan struct{}

	keyMu sync.Mutex
	key   []byte // the session-token MAC key, read from the store once

	limMu  sync.Mutex
	limits map[string]*rate.Limiter

	index atomic.Pointer[fleetIndex] // of the last snapshot asked about
}

var _ deviceconnect.Authorizer = (*Access)(nil)

// Defaults and bounds.
const (
	DefaultSessionTTL = 12 * time.Hour
	// Failed logins (and failed bearer tokens) per source: a burst of
	// loginBurst, then one every loginEvery.
	loginBurst  = 10
	loginEvery  = 6 * time.Second
	maxLimiters = 100_000
	// secretName is the store's shared secret that signs session tokens
	// and login challenges.
	secretName = "operator-session-key"
)

// New checks opts and returns an Access.
func New(opts Options) (*Access, error) {
	if opts.Live == nil || opts.Store == nil {
		return nil, errors.New("operators: Live and Store are required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.SessionTTL <= 0 {
		opts.SessionTTL = DefaultSessionTTL
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Access{opts: opts, log: opts.Logger, changed: make(chan struct{}, 1), limits: map[string]*rate.Limiter{}}, nil
}

// Changed is signalled whenever a new commit goes live (see Notify).
func (a *Access) Changed() <-chan struct{} { return a.changed }

// Notify tells the Access that a new commit went live on this replica:
// Changed is signalled (bursts coalesce into one signal).
func (a *Access) Notify() {
	select {
	case a.changed <- struct{}{}:
	default:
	}
}

// secret returns the session-token key, shared by every replica.
func (a *Access) secret(ctx context.Context) ([]byte, error) {
	a.keyMu.Lock()
	defer a.keyMu.Unlock()
	if a.key != nil {
		return a.key, nil
	}
	k, err := a.opts.Store.SharedSecret(ctx, secretName, randomKey)
	if err != nil {
		return nil, fmt.Errorf("read the session-token key from the store: %w", err)
	}
	a.key = k
	return k, nil
}

// limiter returns the limiter of failed logins from r's source.
func (a *Access) limiter(r *http.Request) *rate.Limiter {
	key := a.opts.Clients.Key(r)
	a.limMu.Lock()
	defer a.limMu.Unlock()
	l, ok := a.limits[key]
	if !ok {
		if len(a.limits) >= maxLimiters {
			clear(a.limits)
		}
		l = rate.NewLimiter(rate.Every(loginEvery), loginBurst)
		a.limits[key] = l
	}
	return l
}

// errTooMany is the refusal while a source's failed logins are spent.
var errTooMany = fmt.Errorf("%w: too many failed logins from your address; wait a minute and try again", deviceconnect.ErrUnauthenticated)

// blocked reports whether r's source has spent its failed logins.
func (a *Access) blocked(r *http.Request) bool { return a.limiter(r).Tokens() < 1 }

// failed spends one failed login of r's source.
func (a *Access) failed(r *http.Request) { a.limiter(r).Allow() }
