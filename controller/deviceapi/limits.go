package deviceapi

import (
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/labstack/echo/v5"
	"golang.org/x/time/rate"
)

// Defaults of the limits on what callers without a token (and devices
// uploading logs) may make the controller do.
const (
	// DefaultUnknownRate and DefaultUnknownBurst bound the auth requests
	// of devices the live commit does not accept (which the store records
	// as pending), per source address: one every 10 s, 20 at once.
	DefaultUnknownRate  = rate.Limit(0.1)
	DefaultUnknownBurst = 20
	// DefaultLogRate and DefaultLogBurst bound deployment log uploads per
	// device: one a minute, 5 at once.
	DefaultLogRate  = rate.Limit(1.0 / 60)
	DefaultLogBurst = 5
	// maxLimited bounds how many sources (and devices) have a limiter in
	// memory; the least recently seen is forgotten first.
	maxLimited = 10_000
	// fullLogEvery is how often a full pending list is logged.
	fullLogEvery = time.Minute
)

// limiter is a token bucket per key (a source address, a device), for a
// bounded number of keys.
type limiter struct {
	r     rate.Limit
	burst int
	keys  *lru.Cache[string, *rate.Limiter]
}

func newLimiter(r rate.Limit, burst int) *limiter {
	keys, err := lru.New[string, *rate.Limiter](maxLimited)
	if err != nil {
		panic(err) // only for a size ≤ 0
	}
	return &limiter{r: r, burst: burst, keys: keys}
}

// allow takes a token from key's bucket at now.
func (l *limiter) allow(key string, now time.Time) bool {
	lim, ok := l.keys.Get(key)
	if !ok {
		fresh := rate.NewLimiter(l.r, l.burst)
		if prev, found, _ := l.keys.PeekOrAdd(key, fresh); found {
			lim = prev
		} else {
			lim = fresh
		}
	}
	return lim.AllowN(now, 1)
}

func tooMany(c *echo.Context, what string, r rate.Limit) error {
	retry := 1
	if r > 0 {
		retry = max(1, int(1/float64(r)))
	}
	c.Response().Header().Set("Retry-After", strconv.Itoa(retry))
	return echo.NewHTTPError(http.StatusTooManyRequests, what+"; try again in "+strconv.Itoa(retry)+" s")
}

// everyInterval reports true at most once per interval (for log lines
// that a flood would otherwise repeat).
type everyInterval struct{ last atomic.Int64 }

func (e *everyInterval) due(now time.Time, interval time.Duration) bool {
	last := e.last.Load()
	if now.UnixNano()-last < int64(interval) {
		return false
	}
	return e.last.CompareAndSwap(last, now.UnixNano())
}
