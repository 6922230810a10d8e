package receive

import (
	"math"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/gitfleet/gitfleet/controller/clientip"
)

// limiter holds a per-source and a global token bucket ([rate.Limiter]).
// Every request takes a token from its source's bucket before anything
// else is done with it; only a verified delivery takes one from the global
// bucket, so forged requests exhaust their sender's budget and nobody
// else's.
//
// At most maxSources buckets are kept. When that many are in use, the
// buckets that have refilled are forgotten (a fresh one would be the
// same); if none has, a new source is refused until one has. Evicting the
// least recently used bucket instead would hand a spent source a fresh
// burst whenever a flood from many addresses pushed it out.
type limiter struct {
	perSource, global Limit
	maxSources        int

	mu      sync.Mutex
	all     *rate.Limiter
	sources map[string]*rate.Limiter
}

func newLimiter(perSource, global Limit, maxSources int) *limiter {
	return &limiter{
		perSource:  perSource,
		global:     global,
		maxSources: maxSources,
		all:        newBucket(global),
		sources:    make(map[string]*rate.Limiter),
	}
}

// newBucket is a full bucket for l. A negative Rate (unlimited) is never
// asked for a token.
func newBucket(l Limit) *rate.Limiter {
	return rate.NewLimiter(rate.Limit(max(l.Rate, 0)), l.Burst)
}

// allowSource reports whether a request from source may be looked at, and
// if not, how long the caller should wait.
func (l *limiter) allowSource(source string, now time.Time) (bool, time.Duration) {
	if l.perSource.Rate < 0 {
		return true, 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	src := l.sources[source]
	if src == nil {
		if len(l.sources) >= l.maxSources {
			l.sweep(now)
		}
		if len(l.sources) >= l.maxSources {
			return false, time.Second
		}
		src = newBucket(l.perSource)
		l.sources[source] = src
	}
	return take(src, now)
}

// allowGlobal reports whether a verified delivery may proceed, and if not,
// how long the caller should wait.
func (l *limiter) allowGlobal(now time.Time) (bool, time.Duration) {
	if l.global.Rate < 0 {
		return true, 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return take(l.all, now)
}

// take takes a token from b if it has one; if not, it reports how long
// until it will (an hour when b never refills).
func take(b *rate.Limiter, now time.Time) (bool, time.Duration) {
	if b.AllowN(now, 1) {
		return true, 0
	}
	if b.Limit() <= 0 {
		return false, time.Hour
	}
	missing := 1 - b.TokensAt(now)
	return false, time.Duration(missing / float64(b.Limit()) * float64(time.Second))
}

// sweep forgets sources whose buckets have refilled.
func (l *limiter) sweep(now time.Time) {
	for k, b := range l.sources {
		if b.TokensAt(now) >= float64(l.perSource.Burst) {
			delete(l.sources, k)
		}
	}
}

// retryAfter renders a wait as whole seconds for Retry-After, at least 1.
func retryAfter(d time.Duration) int {
	s := int(math.Ceil(d.Seconds()))
	return max(s, 1)
}

// remoteHost is the default ClientIP: the host of RemoteAddr.
func remoteHost(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// sourceKey groups IPv6 addresses by /64, the smallest block a host is
// usually given, so one host cannot dodge the limit by rotating addresses.
func sourceKey(ip string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return ip
	}
	return clientip.KeyOf(a)
}
