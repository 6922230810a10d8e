package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v5"
)

// ErrDownload marks a download that cannot go on: the server refused it
// (expired link, not found), or it broke more often than allowed.
var ErrDownload = errors.New("agent: download failed")

// DownloadOptions configure a resumable download.
type DownloadOptions struct {
	// HTTP is the client; it must not add an Authorization header
	// (presigned URLs carry their own credentials).
	HTTP *http.Client
	// Retries is how many times in a row a broken connection is resumed
	// without a byte of progress in between. Default 8.
	Retries int
	// Backoff is the wait before the first retry; it doubles up to
	// MaxBackoff. Defaults 1 s and 1 min.
	Backoff, MaxBackoff time.Duration
	// Sleep waits (tests shorten it). Default: a timer that honours ctx.
	Sleep func(ctx context.Context, d time.Duration) error
	// StallTimeout: a connection that delivers no byte for this long is
	// dropped and resumed. Default 2 min.
	StallTimeout time.Duration
}

// Download opens uri for reading as one continuous stream. When the
// connection drops, Read reconnects with "Range: bytes=N-" at the current
// offset (If-Range guards against a changed file) and carries on, so the
// artifact reader on top never notices; a server that ignores Range (200)
// is read from the start and the bytes already delivered are skipped.
// Read fails with ErrDownload after Retries reconnects without progress or
// when the server refuses the request (4xx).
func Download(ctx context.Context, uri string, opts DownloadOptions) io.ReadCloser {
	if opts.HTTP == nil {
		opts.HTTP = http.DefaultClient
	}
	if opts.Retries <= 0 {
		opts.Retries = 8
	}
	if opts.Backoff <= 0 {
		opts.Backoff = time.Second
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = time.Minute
	}
	if opts.Sleep == nil {
		opts.Sleep = sleepCtx
	}
	if opts.StallTimeout <= 0 {
		opts.StallTimeout = 2 * time.Minute
	}
	return &resumable{ctx: ctx, uri: uri, opts: opts, size: -1}
}

type resumable struct {
	ctx  context.Context // the download's lifetime, as http.Request carries it
	uri  string
	opts DownloadOptions

	body      io.ReadCloser
	cancel    context.CancelFunc
	stall     *time.Timer
	off       int64 // bytes delivered to the caller
	size      int64 // total, -1 until known
	validator string
	failures  int // reconnects since the last byte of progress
	backoff   *backoff.ExponentialBackOff
	err       error
	// Resumes counts reconnects (for logs and tests).
	resumes int
}

func (r *resumable) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	for {
		if r.body == nil {
			if err := r.connect(); err != nil {
				if r.retryable(err) {
					continue
				}
				return 0, r.err
			}
		}
		r.stall.Reset(r.opts.StallTimeout)
		n, err := r.body.Read(p)
		r.off += int64(n)
		if n > 0 {
			r.failures = 0
			r.backoff = nil
		}
		switch {
		case err == nil:
			return n, nil
		case err == io.EOF && (r.size < 0 || r.off == r.size):
			r.close()
			r.err = io.EOF
			return n, io.EOF
		case err == io.EOF && r.off > r.size:
			r.close()
			r.err = fmt.Errorf("%w: server sent more than %d bytes", ErrDownload, r.size)
			return n, r.err
		}
		// The connection broke (or ended early): reconnect on the next Read.
		r.close()
		if cerr := r.ctx.Err(); cerr != nil {
			r.err = cerr
			return n, cerr
		}
		if n > 0 {
			return n, nil
		}
		if !r.retryable(fmt.Errorf("%w: connection broke at byte %d: %v", ErrServer, r.off, err)) {
			return 0, r.err
		}
	}
}

// retryable counts a failure and waits before the next attempt; it sets
// r.err and returns false when the download should stop.
func (r *resumable) retryable(err error) bool {
	if errors.Is(err, ErrDownload) || r.ctx.Err() != nil {
		if r.err == nil {
			r.err = err
		}
		if r.ctx.Err() != nil {
			r.err = r.ctx.Err()
		}
		return false
	}
	r.failures++
	if r.failures > r.opts.Retries {
		r.err = fmt.Errorf("%w: %d attempts in a row without progress: %v", ErrDownload, r.failures, err)
		return false
	}
	if r.backoff == nil {
		r.backoff = &backoff.ExponentialBackOff{InitialInterval: r.opts.Backoff, Multiplier: 2, MaxInterval: r.opts.MaxBackoff}
	}
	d := r.backoff.NextBackOff()
	if serr := r.opts.Sleep(r.ctx, d); serr != nil {
		r.err = serr
		return false
	}
	return true
}

func (r *resumable) connect() error {
	ctx, cancel := context.WithCancel(r.ctx)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.uri, nil)
	if err != nil {
		cancel()
		return fmt.Errorf("%w: %v", ErrDownload, redactURL(err))
	}
	if r.off > 0 {
		req.Header.Set("Range", "bytes="+strconv.FormatInt(r.off, 10)+"-")
		if r.validator != "" {
			req.Header.Set("If-Range", r.validator)
		}
		r.resumes++
	}
	resp, err := r.opts.HTTP.Do(req)
	if err != nil {
		cancel()
		return fmt.Errorf("%w: %v", ErrServer, redactURL(err))
	}
	skip := int64(0)
	switch resp.StatusCode {
	case http.StatusOK:
		skip = r.off // no range support, or If-Range failed
		if r.off > 0 && r.size >= 0 && resp.ContentLength >= 0 && resp.ContentLength != r.size {
			drain(resp)
			cancel()
			return fmt.Errorf("%w: the file changed during the download (%d bytes, was %d)", ErrDownload, resp.ContentLength, r.size)
		}
		if resp.ContentLength >= 0 {
			r.size = resp.ContentLength
		}
	case http.StatusPartialContent:
		start, total, ok := parseContentRange(resp.Header.Get("Content-Range"))
		if !ok || start != r.off || (r.size >= 0 && total >= 0 && total != r.size) {
			drain(resp)
			cancel()
			return fmt.Errorf("%w: bad Content-Range %q for offset %d", ErrDownload, resp.Header.Get("Content-Range"), r.off)
		}
		if total >= 0 {
			r.size = total
		}
	default:
		err := statusError("download", resp)
		drain(resp)
		cancel()
		if errors.Is(err, ErrServer) {
			return err
		}
		return fmt.Errorf("%w: %v", ErrDownload, err)
	}
	if r.validator == "" {
		if et := resp.Header.Get("ETag"); et != "" && !strings.HasPrefix(et, "W/") {
			r.validator = et
		} else if lm := resp.Header.Get("Last-Modified"); lm != "" {
			r.validator = lm
		}
	}
	r.body, r.cancel = resp.Body, cancel
	// A stalled connection is cancelled; Read then sees an error and
	// resumes.
	r.stall = time.AfterFunc(r.opts.StallTimeout, cancel)
	if skip > 0 {
		if _, err := io.CopyN(io.Discard, r.body, skip); err != nil {
			r.close()
			return fmt.Errorf("%w: skipping %d bytes: %v", ErrServer, skip, err)
		}
	}
	return nil
}

func (r *resumable) close() {
	if r.body != nil {
		r.stall.Stop()
		r.body.Close()
		r.cancel()
		r.body = nil
	}
}

func (r *resumable) Close() error {
	r.close()
	if r.err == nil {
		r.err = errors.New("agent: download closed")
	}
	return nil
}

// parseContentRange reads "bytes START-END/TOTAL" (TOTAL may be "*": -1).
func parseContentRange(s string) (start, total int64, ok bool) {
	s, found := strings.CutPrefix(s, "bytes ")
	if !found {
		return 0, 0, false
	}
	rng, tot, found := strings.Cut(s, "/")
	if !found {
		return 0, 0, false
	}
	a, _, found := strings.Cut(rng, "-")
	if !found {
		return 0, 0, false
	}
	start, err := strconv.ParseInt(a, 10, 64)
	if err != nil {
		return 0, 0, false
	}
	total = -1
	if tot != "*" {
		if total, err = strconv.ParseInt(tot, 10, 64); err != nil {
			return 0, 0, false
		}
	}
	return start, total, true
}

// sleepCtx waits for d or until ctx is done.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
