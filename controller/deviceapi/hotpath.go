package deviceapi

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// tokenCache remembers tokens that verified, so a device polling every few
// seconds does not pay for base64, HMAC and JSON on each poll. Only tokens
// that passed verifyToken are stored, keyed by the whole token string;
// expiry is checked again on every use. Bounded: beyond maxTokens the cache
// starts over.
type tokenCache struct {
	mu sync.Mutex
	m  map[string]Claims
}

const maxTokens = 200_000

func (c *tokenCache) get(tok string, now time.Time) (Claims, bool) {
	c.mu.Lock()
	cl, ok := c.m[tok]
	c.mu.Unlock()
	if !ok || cl.Expires <= now.Unix() {
		return Claims{}, false
	}
	return cl, true
}

func (c *tokenCache) put(tok string, cl Claims) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= maxTokens {
		c.m = make(map[string]Claims)
	}
	c.m[tok] = cl
}

// verify checks a device token, from the cache when it verified before.
func (a *API) verify(key []byte, tok string) (Claims, error) {
	now := a.opts.Now()
	if cl, ok := a.tokens.get(tok, now); ok {
		return cl, nil
	}
	cl, err := verifyToken(key, tok, now)
	if err == nil {
		a.tokens.put(tok, cl)
	}
	return cl, err
}

// lazyLog is a logger whose attributes are only encoded when a record is
// actually written: slog.Logger.With encodes them at once, which on the
// poll path cost more than the decision itself.
type lazyLog struct {
	l     *slog.Logger
	attrs []any
}

func (l lazyLog) with(args ...any) lazyLog {
	return lazyLog{l: l.l, attrs: append(l.attrs[:len(l.attrs):len(l.attrs)], args...)}
}

func (l lazyLog) log(level slog.Level, msg string, args ...any) {
	if !l.l.Enabled(context.Background(), level) {
		return
	}
	l.l.Log(context.Background(), level, msg, append(l.attrs[:len(l.attrs):len(l.attrs)], args...)...)
}

func (l lazyLog) Debug(msg string, args ...any) { l.log(slog.LevelDebug, msg, args...) }
func (l lazyLog) Info(msg string, args ...any)  { l.log(slog.LevelInfo, msg, args...) }
func (l lazyLog) Warn(msg string, args ...any)  { l.log(slog.LevelWarn, msg, args...) }
