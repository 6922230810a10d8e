package receive

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"
)

// Defaults for the zero values of [Options].
const (
	DefaultMaxBody   = 1 << 20 // 1 MiB
	DefaultDedupeTTL = 24 * time.Hour
	DefaultMaxSkew   = 5 * time.Minute
)

// The rate limits used when Options.PerSource or Options.Global is zero.
var (
	defaultPerSource = Limit{Rate: 1, Burst: 20}
	defaultGlobal    = Limit{Rate: 10, Burst: 100}
)

// Provider names a kind of webhook sender. Its value is also the path
// segment of the provider's own mount path and the "provider" log key.
type Provider string

// The supported providers.
const (
	GitHub    Provider = "github"
	GitLab    Provider = "gitlab"
	Gitea     Provider = "gitea"
	Forgejo   Provider = "forgejo"
	Bitbucket Provider = "bitbucket" // Server, Data Center and Cloud
	Generic   Provider = "generic"   // X-Gitfleet-Signature, for scripts and CI
)

// detectOrder lists every provider in the order detection tries them.
var detectOrder = []Provider{Forgejo, Gitea, GitLab, Bitbucket, GitHub, Generic}

// AllProviders lists every provider, in the order detection tries them.
func AllProviders() []Provider { return append([]Provider(nil), detectOrder...) }

// Secret is a webhook secret. It prints and logs as REDACTED.
type Secret string

// String returns "REDACTED" for a set secret, so the secret never reaches a
// log line or an error message by accident.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return "REDACTED"
}

// GoString keeps %#v from printing the secret.
func (s Secret) GoString() string { return `receive.Secret("` + s.String() + `")` }

// LogValue implements [slog.LogValuer].
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// Limit is a token bucket: Rate tokens per second refill it, up to Burst.
// Each request takes one token. The zero Limit means "use the default"; a
// negative Rate means unlimited.
type Limit struct {
	Rate  float64
	Burst int
}

// Push is a verified push to the tracked ref, as the sender describes it.
// Only Provider and DeliveryID are facts about the request; the rest is what
// the signed payload claims, and After in particular is only a hint: the
// controller fetches the ref and checks the commit itself.
type Push struct {
	Provider   Provider
	DeliveryID string // may be empty (generic sender without one)
	Repository string // full name as the host spells it, e.g. "org/fleet"; may be empty
	Ref        string // full ref name, e.g. "refs/heads/main"
	After      string // commit SHA the ref now points at, as claimed; empty or all zeros on deletion
	Pusher     string // user name as the host reports it; may be empty
	Deleted    bool   // the push deleted the ref
}

// Outcome is what became of a request. It is the "status" field of every
// response and the outcome label passed to [Options.Observe].
type Outcome string

// The outcomes. See the package documentation for their status codes.
const (
	Triggered        Outcome = "triggered"
	Ignored          Outcome = "ignored"
	Ping             Outcome = "ping"
	Duplicate        Outcome = "duplicate"
	Malformed        Outcome = "malformed"
	UnknownSender    Outcome = "unknown_sender"
	Unauthorized     Outcome = "unauthorized"
	Disabled         Outcome = "disabled"
	MethodNotAllowed Outcome = "method_not_allowed"
	TooLarge         Outcome = "too_large"
	UnsupportedMedia Outcome = "unsupported_media_type"
	RateLimited      Outcome = "rate_limited"
)

// Options configures a [Handler]. Trigger and Ref are required, and so is a
// secret unless AllowUnsigned is set.
type Options struct {
	// Secrets holds each provider's secret. A provider with no entry uses
	// Secret; a provider with neither is disabled (403) unless
	// AllowUnsigned. Prefer one secret per provider: a GitLab token travels
	// in clear inside the TLS connection, so whoever can read a GitLab
	// request (a proxy's logs, say) learns a shared secret for every
	// provider.
	//
	// For GitLab, a secret of the form "whsec_<base64>" is a signing token:
	// GitLab then signs each request (webhook-signature, Standard Webhooks
	// format) and the receiver requires that signature, which covers the
	// body and a timestamp; any other secret is the plain X-Gitlab-Token.
	Secrets map[Provider]Secret
	// Secret is the shared secret for providers without their own.
	Secret Secret

	// AllowUnsigned accepts requests without any signature for providers
	// that have no secret. For tests and local demos only: New refuses a
	// configuration with no secret at all unless it is set. A provider that
	// has a secret never accepts an unsigned request, whatever this says.
	AllowUnsigned bool

	// Ref is the tracked ref: "refs/heads/main", "refs/tags/production".
	// A name without "refs/" is taken as a branch ("main" →
	// "refs/heads/main"). Required. Pushes to other refs are ignored (202).
	Ref string
	// Repositories optionally names the tracked repository, by full name
	// ("org/fleet", "group/subgroup/fleet", "PROJECT/fleet" on Bitbucket
	// Server) and/or by clone or web URL ("https://host/org/fleet.git",
	// "git@host:org/fleet.git", "ssh://git@host:7999/org/fleet.git").
	// Comparison is case-insensitive and ignores the scheme, user, port and
	// a ".git" suffix. When set, a push whose payload names none of them is
	// ignored (202). When empty, the secret alone ties a hook to the
	// repository.
	Repositories []string

	// Trigger is called, on the request's goroutine and with its context,
	// for every verified, first-seen push to the tracked ref. It must return
	// quickly (a non-blocking send on a buffered channel, say): the host is
	// waiting for the response. Required.
	Trigger func(ctx context.Context, ev Push)

	// MaxBody bounds the request body in bytes; a larger body gets 413.
	// Default DefaultMaxBody (1 MiB). A push of very many commits can exceed
	// it on GitHub; the controller's poll still picks such a commit up.
	MaxBody int64

	// PerSource limits, per source address (IPv6 addresses are grouped
	// by /64), the requests refused before their sender was proven
	// (forged signatures, malformed or oversized requests): once a
	// source has spent it, such requests get 429. Verified deliveries do
	// not spend it, so forgeries sent from the real Git host's address (a
	// proxy in front of the controller, a shared NAT) cannot lock the host
	// out. Global limits verified deliveries from all sources together.
	// Defaults: per source 1/s with a burst of 20; global 10/s with a
	// burst of 100.
	PerSource Limit
	Global    Limit
	// MaxSources bounds how many source addresses the per-source limiter
	// remembers; when it is full, requests from new sources get 429 until
	// idle ones age out. Default 10000.
	MaxSources int
	// ClientIP returns the source address of a request for rate limiting.
	// Default: the host part of Request.RemoteAddr. Behind a reverse proxy,
	// return the address the proxy vouches for.
	ClientIP func(*http.Request) string

	// Deduper remembers delivery IDs; a repeated one gets 200 "duplicate"
	// and triggers nothing. Several controller replicas share one through
	// the store. Default: a MemoryDeduper, right for a single process.
	Deduper Deduper
	// DedupeTTL is how long a delivery ID is remembered. Default 24h; at
	// least twice MaxSkew, so that a generic delivery replayed within its
	// timestamp's window is always a duplicate.
	DedupeTTL time.Duration

	// MaxSkew bounds how far a signed timestamp (generic
	// X-Gitfleet-Timestamp, GitLab webhook-timestamp) may be from now,
	// either way. Default 5 minutes.
	MaxSkew time.Duration

	// Observe, if set, is called once per request with its provider (""
	// when none was detected) and outcome, for metrics.
	Observe func(p Provider, o Outcome)
	// Logger receives one line per request (Info; Warn for bad signatures;
	// Debug for rate-limited requests). Default: discard.
	Logger *slog.Logger
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Errors from New.
var (
	ErrNoSecret  = errors.New("receive: no webhook secret configured (set Options.AllowUnsigned only for tests)")
	ErrNoTrigger = errors.New("receive: Options.Trigger is required")
	ErrNoRef     = errors.New("receive: Options.Ref is required")
)

// withDefaults validates o and fills in its defaults.
func (o Options) withDefaults() (Options, error) {
	if o.Trigger == nil {
		return o, ErrNoTrigger
	}
	ref, err := normalizeRef(o.Ref)
	if err != nil {
		return o, err
	}
	o.Ref = ref
	secrets := make(map[Provider]Secret, len(o.Secrets))
	for p, s := range o.Secrets {
		if !knownProvider(p) {
			return o, fmt.Errorf("receive: secret for unknown provider %q", p)
		}
		if s != "" {
			secrets[p] = s
		}
	}
	o.Secrets = secrets
	if len(secrets) == 0 && o.Secret == "" && !o.AllowUnsigned {
		return o, ErrNoSecret
	}
	if s, ok := secrets[GitLab]; ok || o.Secret != "" {
		if !ok {
			s = o.Secret
		}
		if strings.HasPrefix(string(s), signingKeyPrefix) {
			if _, ok := signingKey([]byte(s)); !ok {
				return o, errors.New("receive: GitLab signing token is not whsec_ followed by a base64 key")
			}
		}
	}
	for _, r := range o.Repositories {
		if strings.TrimSpace(r) == "" {
			return o, errors.New("receive: empty entry in Options.Repositories")
		}
	}
	if o.MaxBody <= 0 {
		o.MaxBody = DefaultMaxBody
	}
	if o.PerSource == (Limit{}) {
		o.PerSource = defaultPerSource
	}
	if o.Global == (Limit{}) {
		o.Global = defaultGlobal
	}
	for _, l := range []Limit{o.PerSource, o.Global} {
		if l.Rate >= 0 && l.Burst < 1 {
			return o, fmt.Errorf("receive: rate limit %v/s needs a burst of at least 1", l.Rate)
		}
	}
	if o.MaxSources <= 0 {
		o.MaxSources = 10000
	}
	if o.ClientIP == nil {
		o.ClientIP = remoteHost
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Deduper == nil {
		o.Deduper = NewMemoryDeduper(0, o.Now)
	}
	if o.DedupeTTL <= 0 {
		o.DedupeTTL = DefaultDedupeTTL
	}
	if o.MaxSkew <= 0 {
		o.MaxSkew = DefaultMaxSkew
	}
	if o.DedupeTTL < 2*o.MaxSkew {
		return o, fmt.Errorf("receive: DedupeTTL %s must be at least twice MaxSkew %s (replays within the skew must be remembered)", o.DedupeTTL, o.MaxSkew)
	}
	if o.Observe == nil {
		o.Observe = func(Provider, Outcome) {}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o, nil
}

// normalizeRef turns "main" into "refs/heads/main" and checks the result.
func normalizeRef(ref string) (string, error) {
	ref = strings.TrimSpace(ref)
	if ref == "" {
		return "", ErrNoRef
	}
	if !strings.HasPrefix(ref, "refs/") {
		ref = "refs/heads/" + ref
	}
	if !validRef(ref) {
		return "", fmt.Errorf("receive: invalid ref %q", ref)
	}
	return ref, nil
}

// validRef is a sanity check, not Git's full check-ref-format: a payload's
// ref is only ever compared with the tracked one.
func validRef(ref string) bool {
	if !strings.HasPrefix(ref, "refs/") || len(ref) <= len("refs/") || len(ref) > maxRefLen {
		return false
	}
	for i := 0; i < len(ref); i++ {
		if c := ref[i]; c < 0x20 || c == 0x7f || c == ' ' {
			return false
		}
	}
	return true
}

const maxRefLen = 1024

func knownProvider(p Provider) bool {
	for _, q := range detectOrder {
		if p == q {
			return true
		}
	}
	return false
}
