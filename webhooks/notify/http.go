package notify

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// RetryOptions say how an HTTP sink retries one delivery. Zero fields take
// the defaults noted.
type RetryOptions struct {
	// AttemptTimeout bounds one request, response included. Default 10s.
	AttemptTimeout time.Duration
	// Deadline bounds one delivery, all attempts and waits included;
	// a wait (backoff or Retry-After) that would end past it is not
	// started and the delivery fails. Default 10m.
	Deadline time.Duration
	// InitialInterval and MaxInterval shape the exponential backoff
	// (factor 2, ±50 % jitter) between attempts. Defaults 1s and 2m.
	InitialInterval time.Duration
	MaxInterval     time.Duration
	// MaxAttempts caps the attempts per delivery. Default 8.
	MaxAttempts int
}

func (r RetryOptions) withDefaults() RetryOptions {
	if r.AttemptTimeout <= 0 {
		r.AttemptTimeout = 10 * time.Second
	}
	if r.Deadline <= 0 {
		r.Deadline = 10 * time.Minute
	}
	if r.InitialInterval <= 0 {
		r.InitialInterval = time.Second
	}
	if r.MaxInterval <= 0 {
		r.MaxInterval = 2 * time.Minute
	}
	if r.MaxAttempts <= 0 {
		r.MaxAttempts = 8
	}
	return r
}

// maxResponseBytes is how much of a response body is read (and thrown
// away) so the connection can be reused; the rest is not read.
const maxResponseBytes = 64 << 10

// poster sends one JSON body to one URL with retries.
type poster struct {
	client *http.Client
	url    string // full URL; never printed
	where  string // scheme://host, safe to print
	retry  RetryOptions
	sleep  Sleeper
	now    func() time.Time
	scrub  scrubber
}

// parseHTTPURL checks a sink URL: absolute, https unless allowHTTP.
func parseHTTPURL(raw string, allowHTTP bool) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		// url.Parse quotes its input, which may hold a secret.
		return nil, fmt.Errorf("%w: URL does not parse", ErrOptions)
	}
	switch {
	case u.Scheme == "https":
	case u.Scheme == "http" && allowHTTP:
	case u.Scheme == "http":
		return nil, fmt.Errorf("%w: URL for %s is http; notifications are sent over https only", ErrOptions, u.Host)
	default:
		return nil, fmt.Errorf("%w: URL must be https://host/…", ErrOptions)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("%w: URL has no host", ErrOptions)
	}
	return u, nil
}

func newPoster(u *url.URL, client *http.Client, retry RetryOptions, sleep Sleeper, now func() time.Time, secrets ...string) *poster {
	var c http.Client
	if client != nil {
		c = *client
	} else {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		c.Transport = tr
	}
	// A redirect would resend a signed body somewhere else, perhaps over
	// http: never follow one.
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	full := u.String()
	secrets = append(secrets, full, u.RawQuery, u.User.String())
	if u.Path != "" && u.Path != "/" {
		secrets = append(secrets, u.Path)
	}
	if p, ok := u.User.Password(); ok {
		secrets = append(secrets, p)
	}
	return &poster{
		client: &c, url: full, where: u.Scheme + "://" + u.Host,
		retry: retry.withDefaults(), sleep: sleep, now: now, scrub: newScrubber(secrets...),
	}
}

// attemptError is one failed attempt: retry says whether another may help,
// after says how long the server asked us to wait (Retry-After).
type attemptError struct {
	msg   string
	retry bool
	after time.Duration
}

func (e *attemptError) Error() string { return e.msg }

// post delivers body, calling header before every attempt (a signature
// covers a fresh timestamp each time). It returns nil once a 2xx arrives.
func (p *poster) post(ctx context.Context, body []byte, header func(h http.Header)) error {
	err := retry(ctx, p.retry, p.sleep, p.now, func(ctx context.Context) error { return p.attempt(ctx, body, header) })
	if err != nil {
		return fmt.Errorf("post to %s: %w", p.where, err)
	}
	return nil
}

// Retry calls attempt until it returns nil, with the exponential backoff
// of r (its zero fields take their defaults) on the clock of sleep and now
// (nil: a timer and time.Now), as the webhook sink retries a delivery. An
// error made by [Temporary] is retried (after the server's wait when it
// gives one); any other error ends the delivery at once, as do ctx, the
// attempt cap and the deadline. Each attempt runs under
// r.AttemptTimeout.
func Retry(ctx context.Context, r RetryOptions, sleep Sleeper, now func() time.Time, attempt func(ctx context.Context) error) error {
	if sleep == nil {
		sleep = realSleep
	}
	if now == nil {
		now = time.Now
	}
	r = r.withDefaults()
	return retry(ctx, r, sleep, now, func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, r.AttemptTimeout)
		defer cancel()
		return attempt(ctx)
	})
}

// Temporary marks err as worth another attempt of [Retry], after the wait
// the server asked for (a Retry-After header) when after > 0.
func Temporary(err error, after time.Duration) error {
	return &attemptError{msg: err.Error(), retry: true, after: after}
}

// RetryAfter parses a Retry-After header (delay seconds or an HTTP date)
// into a wait from now; 0 when it is absent or says nothing usable.
func RetryAfter(v string, now time.Time) time.Duration { return retryAfter(v, now) }

func retry(ctx context.Context, r RetryOptions, sleep Sleeper, now func() time.Time, attempt func(ctx context.Context) error) error {
	b := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(r.InitialInterval),
		backoff.WithMaxInterval(r.MaxInterval),
		backoff.WithMultiplier(2),
		backoff.WithRandomizationFactor(0.5),
		backoff.WithMaxElapsedTime(0), // the deadline below is on the injected clock
	)
	deadline := now().Add(r.Deadline)
	for n := 1; ; n++ {
		err := attempt(ctx)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil { // the sink is closing: no more attempts
			return ctx.Err()
		}
		var ae *attemptError
		if !errors.As(err, &ae) || !ae.retry {
			return err
		}
		if n >= r.MaxAttempts {
			return fmt.Errorf("giving up after %d attempts: %w", n, err)
		}
		wait := b.NextBackOff()
		if ae.after > 0 {
			wait = ae.after
		}
		if now().Add(wait).After(deadline) {
			return fmt.Errorf("next attempt in %s would pass the delivery deadline (%s): %w", wait, r.Deadline, err)
		}
		if serr := sleep(ctx, wait); serr != nil {
			return fmt.Errorf("%w (after: %w)", serr, err)
		}
	}
}

func (p *poster) attempt(ctx context.Context, body []byte, header func(h http.Header)) error {
	ctx, cancel := context.WithTimeout(ctx, p.retry.AttemptTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url, bytes.NewReader(body))
	if err != nil {
		return &attemptError{msg: "cannot build request"}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "Gitfleet-Notify/1")
	header(req.Header)
	resp, err := p.client.Do(req)
	if err != nil {
		// *url.Error quotes the URL; keep only the cause, scrubbed.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return &attemptError{msg: p.scrub.text(err.Error()), retry: true}
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponseBytes))
	code := resp.StatusCode
	switch {
	case code >= 200 && code < 300:
		return nil
	case code == http.StatusTooManyRequests || code == http.StatusRequestTimeout || code >= 500:
		return &attemptError{msg: "HTTP " + strconv.Itoa(code), retry: true,
			after: retryAfter(resp.Header.Get("Retry-After"), p.now())}
	case code >= 300 && code < 400:
		return &attemptError{msg: "HTTP " + strconv.Itoa(code) + " (redirects are not followed; configure the final URL)"}
	default:
		return &attemptError{msg: "HTTP " + strconv.Itoa(code) + " (refused; not retried)"}
	}
}

// retryAfter parses a Retry-After header: delay seconds or an HTTP date.
func retryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseInt(v, 10, 64); err == nil {
		if s <= 0 {
			return 0
		}
		if s > 1<<31 {
			s = 1 << 31
		}
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}
