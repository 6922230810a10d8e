package receive

import (
	"math"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/gitfleet/gitfleet/controller/clientip"
)

// bucket is a token bucket refilled lazily from the clock.
type bucket struct {
	tokens float64
	last   time.Time
}

func (b *bucket) refill(l Limit, now time.Time) {
	if now.After(b.last) {
		b.tokens = math.Min(float64(l.Burst), b.tokens+now.Sub(b.last).Seconds()*l.Rate)
		b.last = now
	}
}

// wait is how long until the bucket holds a whole token.
func (b *bucket) wait(l Limit) time.Duration {
	if b.tokens >= 1 {
		return 0
	}
	if l.Rate <= 0 {
		return time.Hour
	}
	return time.Duration((1 - b.tokens) / l.Rate * float64(time.Second))
}

func newBucket(l Limit, now time.Time) *bucket {
	return &bucket{tokens: float64(l.Burst), last: now}
}

// limiter holds a per-source and a global token bucket. Every request
// takes a token from its source's bucket before anything else is done
// with it; only a verified delivery takes one from the global bucket, so
// forged requests exhaust their sender's budget and nobody else's.
type limiter struct {
	perSource, global Limit
	maxSources        int

	mu      sync.Mutex
	all     *bucket
	sources map[string]*bucket
}

func newLimiter(perSource, global Limit, maxSources int, now time.Time) *limiter {
	return &limiter{
		perSource:  perSource,
		global:     global,
		maxSources: maxSources,
		all:        newBucket(global, now),
		sources:    make(map[string]*bucket),
	}
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
		src = newBucket(l.perSource, now)
		l.sources[source] = src
	}
	return take(src, l.perSource, now)
}

// allowGlobal reports whether a verified delivery may proceed, and if not,
// how long the caller should wait.
func (l *limiter) allowGlobal(now time.Time) (bool, time.Duration) {
	if l.global.Rate < 0 {
		return true, 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return take(l.all, l.global, now)
}

// take takes a token from b if it has one.
func take(b *bucket, lim Limit, now time.Time) (bool, time.Duration) {
	b.refill(lim, now)
	if wait := b.wait(lim); wait > 0 {
		return false, wait
	}
	b.tokens--
	return true, 0
}

// sweep forgets sources whose buckets have refilled: a fresh bucket would be
// the same.
func (l *limiter) sweep(now time.Time) {
	for k, b := range l.sources {
		b.refill(l.perSource, now)
		if b.tokens >= float64(l.perSource.Burst) {
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
