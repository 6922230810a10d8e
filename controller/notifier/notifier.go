package notifier

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/mail"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gitfleet/gitfleet/schema"
	"github.com/gitfleet/gitfleet/webhooks/notify"
	"github.com/gitfleet/gitfleet/webhooks/status"
	"github.com/prometheus/client_golang/prometheus"
)

// Sentinel errors.
var (
	// ErrNoSMTP: an e-mail Notification on a controller started without an
	// SMTP server.
	ErrNoSMTP = errors.New("notifier: no SMTP server configured")
	// ErrOptions: New was given settings it cannot use.
	ErrOptions = errors.New("notifier: invalid options")
)

// SMTP is the submission server e-mail Notifications go through. The zero
// value means there is none: e-mail Notifications are then reported as
// problems and send nothing.
type SMTP struct {
	// Addr is the server's host:port (587 is the submission port).
	Addr string
	// From is the sender address. Required with Addr.
	From string
	// Username and Password authenticate with AUTH PLAIN, always inside
	// TLS. Empty Username: no authentication.
	Username string
	Password notify.Secret
	// DigestWindow is how long events are gathered into one mail after
	// the first arrives. Default 1 minute.
	DigestWindow time.Duration
	// AllowPlaintext sends without STARTTLS when the server offers none,
	// and only without a Username (credentials never travel in the
	// clear). For tests; default: STARTTLS is required.
	AllowPlaintext bool
	// TLSConfig verifies the server (RootCAs for a private CA). Default:
	// the system roots.
	TLSConfig *tls.Config
}

// Options configure a Notifier. Zero fields take the defaults noted.
type Options struct {
	SMTP SMTP
	// Secrets resolves the secret references of the manifests. Default:
	// the controller's environment and files.
	Secrets Secrets
	// Client sends webhook, Slack and commit status requests. Default: a
	// client requiring
	// TLS 1.2 or later (redirects are never followed either way).
	Client *http.Client
	// Retry shapes the retries of one webhook or Slack delivery; see
	// notify.RetryOptions for the defaults.
	Retry notify.RetryOptions
	// QueueSize bounds the events waiting in each sink (the oldest are
	// dropped beyond it). Default: webhook 1,024, e-mail and Slack 10,000.
	QueueSize int
	// SlackWindow is how long events are gathered into one Slack message.
	// Default 30 seconds.
	SlackWindow time.Duration
	// DrainTimeout bounds how long a replaced sink may take to deliver
	// what it holds. Default 1 minute.
	DrainTimeout time.Duration
	// PublicURL is the https address the controller is reached at (serve's
	// --public-url); commit statuses link to its management API's rollout
	// listing. Empty: statuses carry no link.
	PublicURL string
	// AllowHTTP permits http:// webhook, Slack and Git host URLs. For
	// tests only.
	AllowHTTP bool
	// Logger receives configuration problems and delivery failures.
	// Default: discard.
	Logger *slog.Logger
	// Registry receives the metrics (gitfleet_notification_*); nil: none.
	Registry prometheus.Registerer
	// Now and Sleep are the sinks' clock; defaults time.Now and a timer.
	Now   func() time.Time
	Sleep notify.Sleeper
}

// Notifier sends the controller's events to the sinks the live commit's
// Notification manifests declare. Create it with New; it is safe for
// concurrent use.
type Notifier struct {
	opts     Options
	log      *slog.Logger
	smtpHost string
	smtpPort int

	configMu sync.Mutex // one Configure at a time
	mu       sync.RWMutex
	sinks    []*entry // in manifest order
	problems []error
	closed   bool
	retired  map[sinkID]notify.Stats // final counters of replaced sinks
	draining sync.WaitGroup

	metrics *metrics
}

// sinkID names a sink in metrics: its Notification and its kind.
type sinkID struct{ name, kind string }

// entry is the sink of one Notification manifest.
type entry struct {
	id   sinkID
	key  string // digest of everything the sink was built from
	sink notify.Sink
}

// New checks opts and returns a Notifier with no sinks yet; it starts
// nothing until Configure.
func New(opts Options) (*Notifier, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.DrainTimeout <= 0 {
		opts.DrainTimeout = time.Minute
	}
	if opts.SMTP.DigestWindow < 0 || opts.SlackWindow < 0 {
		return nil, fmt.Errorf("%w: negative batch window", ErrOptions)
	}
	n := &Notifier{opts: opts, log: opts.Logger, retired: map[sinkID]notify.Stats{}}
	if s := opts.SMTP; s.Addr != "" {
		host, port, err := net.SplitHostPort(s.Addr)
		p, perr := strconv.Atoi(port)
		if err != nil || host == "" || perr != nil || p < 1 || p > 65535 {
			return nil, fmt.Errorf("%w: SMTP server %q: want host:port, such as smtp.example.com:587", ErrOptions, s.Addr)
		}
		n.smtpHost, n.smtpPort = host, p
		if s.From == "" {
			return nil, fmt.Errorf("%w: SMTP server %s needs a sender address (From)", ErrOptions, s.Addr)
		}
		if _, err := mail.ParseAddress(s.From); err != nil {
			return nil, fmt.Errorf("%w: sender address %q: %v", ErrOptions, s.From, err)
		}
		if s.Username != "" && s.Password == "" {
			return nil, fmt.Errorf("%w: SMTP user %s has no password", ErrOptions, s.Username)
		}
	}
	n.metrics = newMetrics(n)
	if opts.Registry != nil {
		if err := opts.Registry.Register(n.metrics); err != nil {
			return nil, fmt.Errorf("notifier: register metrics: %w", err)
		}
	}
	return n, nil
}

// Configure makes the sinks those of fleet's Notification manifests (a
// nil fleet: none). A sink whose manifest, secrets and settings did not
// change keeps its queue; a changed or removed one is replaced, and the
// old one delivers what it holds in the background (for up to
// Options.DrainTimeout). A manifest that cannot be carried out (a secret
// that does not resolve, e-mail without an SMTP server) gets no sink: it
// is logged, listed by Problems and counted in the metrics, and
// Configure returns the problems joined. They are the manifest's
// problems, not the commit's: the caller serves the commit anyway.
func (n *Notifier) Configure(fleet *schema.Fleet) error {
	n.configMu.Lock()
	defer n.configMu.Unlock()
	var nts []schema.Notification
	if fleet != nil {
		nts = fleet.Notifications
	}
	n.mu.RLock()
	closed := n.closed
	old := make(map[string]*entry, len(n.sinks))
	for _, e := range n.sinks {
		old[e.id.name] = e
	}
	n.mu.RUnlock()
	if closed {
		return nil
	}

	var next []*entry
	var problems []error
	kept := map[*entry]bool{}
	for i := range nts {
		nt := &nts[i]
		e, err := n.build(nt, old[nt.Name])
		if err != nil {
			err = fmt.Errorf("notification %s (%s): %w", nt.Name, nt.Source, err)
			n.log.Warn("notification not configured; its events are not sent", "notification", nt.Name,
				"sink", nt.Spec.Sink(), "err", err)
			problems = append(problems, err)
			continue
		}
		if e == old[nt.Name] {
			kept[e] = true
		}
		next = append(next, e)
	}

	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		for _, e := range next {
			if !kept[e] {
				n.retire(e)
			}
		}
		return nil
	}
	prev := n.sinks
	n.sinks, n.problems = next, problems
	n.mu.Unlock()
	for _, e := range prev {
		if !kept[e] {
			n.retire(e)
		}
	}
	return errors.Join(problems...)
}

// build returns the sink of nt: cur when it was built from the same
// settings, else a new one.
func (n *Notifier) build(nt *schema.Notification, cur *entry) (*entry, error) {
	spec := &nt.Spec
	filter := notify.FilterOf(*spec)
	log := n.log.With("notification", nt.Name)
	id := sinkID{nt.Name, spec.Sink()}
	var secrets []notify.Secret
	resolve := func(what string, ref schema.SecretRef) (notify.Secret, error) {
		v, err := n.opts.Secrets.Resolve(ref)
		if err != nil {
			return "", fmt.Errorf("%s: %w", what, err)
		}
		secrets = append(secrets, v)
		return v, nil
	}
	var newSink func() (notify.Sink, error)
	switch {
	case spec.Webhook != nil:
		secret, err := resolve("webhook secret", spec.Webhook.Secret)
		if err != nil {
			return nil, err
		}
		newSink = func() (notify.Sink, error) {
			return notify.NewWebhook(notify.WebhookOptions{URL: notify.Secret(spec.Webhook.URL), Secret: secret,
				Filter: filter, QueueSize: n.opts.QueueSize, Retry: n.opts.Retry, AllowHTTP: n.opts.AllowHTTP,
				Client: n.opts.Client, Logger: log, Now: n.opts.Now, Sleep: n.opts.Sleep})
		}
	case spec.Slack != nil:
		url, err := resolve("slack url", spec.Slack.URL)
		if err != nil {
			return nil, err
		}
		newSink = func() (notify.Sink, error) {
			return notify.NewSlack(notify.SlackOptions{URL: url, Filter: filter, Window: n.opts.SlackWindow,
				QueueSize: n.opts.QueueSize, Retry: n.opts.Retry, AllowHTTP: n.opts.AllowHTTP,
				Client: n.opts.Client, Logger: log, Now: n.opts.Now, Sleep: n.opts.Sleep})
		}
	case spec.GitStatus != nil:
		g := spec.GitStatus
		token, err := resolve("gitStatus token", g.Token)
		if err != nil {
			return nil, err
		}
		client, err := status.New(status.Options{Provider: status.Provider(g.Provider), URL: g.URL,
			Repository: g.Repository, Token: token, Client: n.opts.Client, Retry: n.opts.Retry,
			AllowHTTP: n.opts.AllowHTTP, Now: n.opts.Now, Sleep: n.opts.Sleep})
		if err != nil {
			return nil, err
		}
		newSink = func() (notify.Sink, error) {
			return status.NewSink(status.SinkOptions{Client: client, Filter: filter, Link: n.statusLink(),
				QueueSize: n.opts.QueueSize, Logger: log, Now: n.opts.Now, Sleep: n.opts.Sleep})
		}
	case spec.Email != nil:
		s := n.opts.SMTP
		if s.Addr == "" {
			return nil, fmt.Errorf("%w: start the controller with --smtp-addr host:port and --smtp-from (see docs/notifications.md)", ErrNoSMTP)
		}
		newSink = func() (notify.Sink, error) {
			return notify.NewEmail(notify.EmailOptions{Host: n.smtpHost, Port: n.smtpPort,
				Username: s.Username, Password: s.Password, From: s.From, To: spec.Email.To,
				Filter: filter, Window: s.DigestWindow, QueueSize: n.opts.QueueSize,
				AllowPlaintext: s.AllowPlaintext, TLSConfig: s.TLSConfig,
				Logger: log, Now: n.opts.Now, Sleep: n.opts.Sleep})
		}
	default:
		return nil, errors.New("no sink: set webhook, email, slack or gitStatus")
	}
	key := settingsKey(spec, secrets)
	if cur != nil && cur.key == key {
		return cur, nil
	}
	sink, err := newSink()
	if err != nil {
		return nil, err
	}
	return &entry{id: id, key: key, sink: sink}, nil
}

// settingsKey is a digest of a manifest's spec and resolved secrets: two
// sinks with the same key would behave the same. (The controller-wide
// settings do not change while it runs.)
func settingsKey(spec *schema.NotificationSpec, secrets []notify.Secret) string {
	h := sha256.New()
	js, _ := json.Marshal(spec)
	h.Write(js)
	for _, s := range secrets {
		h.Write([]byte{0})
		h.Write([]byte(s))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// retire closes e's sink in the background, letting it deliver what it
// holds, and keeps its final counters for the metrics.
func (n *Notifier) retire(e *entry) {
	n.draining.Add(1)
	go func() {
		defer n.draining.Done()
		ctx, cancel := context.WithTimeout(context.Background(), n.opts.DrainTimeout)
		defer cancel()
		if err := e.sink.Close(ctx); err != nil {
			n.log.Warn("replaced notification sink did not deliver everything in time", "notification", e.id.name,
				"sink", e.id.kind, "err", err)
		}
		st := e.sink.Stats()
		n.mu.Lock()
		r := n.retired[e.id]
		r.Dropped += st.Dropped
		r.Delivered += st.Delivered
		r.Failed += st.Failed
		r.Messages += st.Messages
		n.retired[e.id] = r
		n.mu.Unlock()
	}()
}

// Notify hands e to every sink; each keeps it if its filter selects it.
// It never blocks. An event with a kind outside the schema's #Event list
// is logged and dropped.
func (n *Notifier) Notify(_ context.Context, e notify.Event) {
	if !e.Kind.Valid() {
		n.metrics.ignore(string(e.Kind))
		n.log.Warn("event kind is not in the schema's #Event list; not notified", "event", string(e.Kind))
		return
	}
	if e.ID == "" {
		e.ID = notify.NewID()
	}
	if e.Time.IsZero() {
		if n.opts.Now != nil {
			e.Time = n.opts.Now()
		} else {
			e.Time = time.Now()
		}
	}
	n.mu.RLock()
	defer n.mu.RUnlock()
	for _, s := range n.sinks {
		s.sink.Notify(e)
	}
}

// Problems returns what the last Configure could not carry out, one error
// per Notification manifest, and the last final refusal of each gitStatus
// sink's Git host (a bad token, a missing repository) while no status has
// gone through since; nil when there is none.
func (n *Notifier) Problems() []error {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return append(slices.Clone(n.problems), n.sinkProblemsLocked()...)
}

// sinkProblemsLocked is the sinks' own problems (a Git host's final
// refusal); n.mu is held.
func (n *Notifier) sinkProblemsLocked() []error {
	var out []error
	for _, e := range n.sinks {
		if p, ok := e.sink.(interface{ Problem() error }); ok {
			if err := p.Problem(); err != nil {
				out = append(out, fmt.Errorf("notification %s: %w", e.id.name, err))
			}
		}
	}
	return out
}

// statusLink makes a commit status's link from a rollout's name: the
// management API's rollout listing, with the rollout as the fragment.
func (n *Notifier) statusLink() func(string) string {
	base := strings.TrimRight(n.opts.PublicURL, "/")
	if base == "" {
		return nil
	}
	return func(rollout string) string {
		return base + "/api/management/v1/rollouts#" + url.PathEscape(rollout)
	}
}

// wantsRolloutFacts reports whether a sink reads the rollout's commit and
// counts (a gitStatus sink), which the event log then adds to rollout
// events.
func (n *Notifier) wantsRolloutFacts() bool {
	n.mu.RLock()
	defer n.mu.RUnlock()
	for _, e := range n.sinks {
		if e.id.kind == "gitStatus" {
			return true
		}
	}
	return false
}

// Close stops taking events and lets every sink, replaced ones included,
// deliver what it holds until ctx ends; then what is left is lost. Later
// calls to Notify and Configure do nothing.
func (n *Notifier) Close(ctx context.Context) error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	sinks := n.sinks
	n.mu.Unlock()
	var fan notify.Fanout
	for _, e := range sinks {
		fan = append(fan, e.sink)
	}
	err := fan.Close(ctx)
	drained := make(chan struct{})
	go func() {
		n.draining.Wait()
		close(drained)
	}()
	select {
	case <-drained:
	case <-ctx.Done():
		err = errors.Join(err, fmt.Errorf("replaced sinks still delivering: %w", ctx.Err()))
	}
	return err
}

// Stats is what the sinks did.
type Stats struct {
	// Sinks are the current sinks, in manifest order.
	Sinks []SinkStats
	// Total sums the current sinks' counters.
	Total notify.Stats
	// Problems counts the manifests the last Configure could not carry
	// out.
	Problems int
}

// SinkStats are one sink's counters.
type SinkStats struct {
	Notification string // the manifest's name
	Sink         string // webhook, email, slack or gitStatus
	notify.Stats
}

// Stats returns the current sinks' counters.
func (n *Notifier) Stats() Stats {
	n.mu.RLock()
	defer n.mu.RUnlock()
	st := Stats{Problems: len(n.problems)}
	for _, e := range n.sinks {
		s := e.sink.Stats()
		st.Sinks = append(st.Sinks, SinkStats{Notification: e.id.name, Sink: e.id.kind, Stats: s})
		st.Total.Queued += s.Queued
		st.Total.Dropped += s.Dropped
		st.Total.Delivered += s.Delivered
		st.Total.Failed += s.Failed
		st.Total.Messages += s.Messages
	}
	return st
}
