package artifacts

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/gitfleet/gitfleet/schema"
)

// Directories inside Options.Dir.
const (
	blobDir = "sha256" // verified files, named by digest
	tmpDir  = "tmp"    // copies and downloads in progress
)

// partSuffix marks a resumable partial download: tmp/<digest>.part.
const partSuffix = ".part"

// maxSidecar bounds SOURCE.sha256 and SOURCE.sigs.
const maxSidecar = 64 << 10

// localStat is what a store file looked like when it was last hashed.
type localStat struct {
	size    int64
	modTime time.Time
	digest  string
}

func (c *Cache) blobPath(digest string) string {
	return filepath.Join(c.opts.Dir, blobDir, digest)
}

func (c *Cache) hasBlob(digest string) bool {
	fi, err := c.dir.Stat(path.Join(blobDir, digest))
	return err == nil && fi.Mode().IsRegular()
}

// touch marks a cached file as used now, so collect keeps it.
func (c *Cache) touch(digest string) {
	now := c.opts.Now()
	_ = c.dir.Chtimes(path.Join(blobDir, digest), now, now)
}

// cleanTmp removes what an earlier run left in tmp/ except partial
// downloads.
func (c *Cache) cleanTmp() {
	ents, err := fs.ReadDir(c.dir.FS(), tmpDir)
	if err != nil {
		return
	}
	for _, de := range ents {
		name := de.Name()
		if strings.HasSuffix(name, partSuffix) && isDigest(strings.TrimSuffix(name, partSuffix)) {
			continue
		}
		_ = c.dir.RemoveAll(path.Join(tmpDir, name))
	}
}

// fetch puts a's source into the cache and returns its digest.
func (c *Cache) fetch(ctx context.Context, a *schema.Artifact) (string, *Error) {
	src := a.Spec.Source
	declared := strings.ToLower(a.Spec.SHA256)
	if declared != "" && !isDigest(declared) {
		return "", fail(a.Name, ErrDigest, "spec.sha256 %q is not a hex sha256", a.Spec.SHA256)
	}
	if strings.HasPrefix(src, "https://") {
		return c.fetchHTTPS(ctx, a, declared)
	}
	if strings.Contains(src, "://") {
		return "", fail(a.Name, ErrSource, "source %s: only store paths and https URLs are supported", redact(src))
	}
	return c.fetchLocal(ctx, a, declared)
}

// fetchLocal copies a store file into the cache unless it is unchanged
// (same size and modification time) since it was last hashed.
func (c *Cache) fetchLocal(ctx context.Context, a *schema.Artifact, declared string) (string, *Error) {
	src := a.Spec.Source
	if c.store == nil {
		return "", fail(a.Name, ErrSource, "source %s: no artifact store is configured", src)
	}
	if !fs.ValidPath(src) || src == "." {
		return "", fail(a.Name, ErrSource, "source %q: not a clean relative path", src)
	}
	f, err := c.store.Open(filepath.FromSlash(src))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", fail(a.Name, ErrSource, "%s: no such file in the artifact store", src)
		}
		return "", fail(a.Name, ErrSource, "%v", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", fail(a.Name, ErrSource, "%v", err)
	}
	if !fi.Mode().IsRegular() {
		return "", fail(a.Name, ErrSource, "%s: not a regular file", src)
	}
	if fi.Size() > c.opts.MaxSize {
		return "", &Error{Name: a.Name, Kind: ErrTooLarge, Err: fmt.Errorf("%s: %d bytes, the limit is %d", src, fi.Size(), c.opts.MaxSize)}
	}
	if declared == "" {
		if declared, err = c.storeSidecarDigest(src); err != nil {
			return "", fail(a.Name, ErrDigest, "%v", err)
		}
	}

	c.mu.Lock()
	st, known := c.local[src]
	c.mu.Unlock()
	digest := st.digest
	if !known || st.size != fi.Size() || !st.modTime.Equal(fi.ModTime()) || !c.hasBlob(digest) {
		key := fmt.Sprintf("local:%s:%d:%d", src, fi.Size(), fi.ModTime().UnixNano())
		v, err := c.flights.do(ctx, key, func() (any, error) {
			return c.copyIn(ctx, f, fi.Size())
		})
		if err != nil {
			if ctx.Err() != nil {
				return "", fail(a.Name, ErrSource, "%v", ctx.Err())
			}
			return "", fail(a.Name, ErrSource, "copy %s: %v", src, err)
		}
		digest = v.(string)
		c.mu.Lock()
		c.local[src] = localStat{size: fi.Size(), modTime: fi.ModTime(), digest: digest}
		c.mu.Unlock()
		c.log.Info("artifact copied from store", "artifact", a.Name, "source", src, "sha256", digest, "size", fi.Size())
	}
	if declared != "" && digest != declared {
		return "", fail(a.Name, ErrDigest, "%s has sha256 %s, the manifest says %s", src, digest, declared)
	}
	return digest, nil
}

// storeSidecarDigest reads SOURCE.sha256 (sha256sum format: the digest
// first), if the store has one; "" when it has none.
func (c *Cache) storeSidecarDigest(src string) (string, error) {
	data, err := c.readStoreSidecar(src + ".sha256")
	if err != nil || data == nil {
		return "", err
	}
	d := strings.ToLower(strings.Fields(string(data) + " ")[0])
	if !isDigest(d) {
		return "", fmt.Errorf("%s.sha256 does not start with a hex sha256", src)
	}
	return d, nil
}

// readStoreSidecar reads a small file of the store; nil when it does not
// exist.
func (c *Cache) readStoreSidecar(name string) ([]byte, error) {
	f, err := c.store.Open(filepath.FromSlash(name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxSidecar+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxSidecar {
		return nil, fmt.Errorf("%s: larger than %d bytes", name, maxSidecar)
	}
	return data, nil
}

// copyIn copies size bytes of r into the cache and returns their digest.
func (c *Cache) copyIn(ctx context.Context, r io.Reader, size int64) (string, error) {
	if err := c.acquire(ctx); err != nil {
		return "", err
	}
	defer c.release()
	var rnd [8]byte
	rand.Read(rnd[:])
	tmp := path.Join(tmpDir, "copy-"+hex.EncodeToString(rnd[:]))
	f, err := c.dir.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return "", err
	}
	defer c.dir.Remove(tmp) // a no-op once renamed
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), &ctxReader{ctx, io.LimitReader(r, c.opts.MaxSize+1)})
	if err == nil && n != size {
		err = fmt.Errorf("file changed while copied: %d bytes read, %d expected", n, size)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", err
	}
	digest := hex.EncodeToString(h.Sum(nil))
	return digest, c.commit(tmp, digest)
}

// commit moves a complete, hashed temporary file to its digest's name and
// makes it read-only. Replacing an existing file is harmless: same digest,
// same bytes, and open readers keep the inode they have.
func (c *Cache) commit(tmp, digest string) error {
	if err := c.dir.Chmod(tmp, 0o444); err != nil {
		return err
	}
	dst := path.Join(blobDir, digest)
	if err := c.dir.Rename(tmp, dst); err != nil {
		return err
	}
	now := c.opts.Now()
	_ = c.dir.Chtimes(dst, now, now)
	if d, err := c.dir.Open(blobDir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

func (c *Cache) acquire(ctx context.Context) error {
	select {
	case c.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *Cache) release() { <-c.sem }

// fetchHTTPS downloads an https source unless its declared digest is
// cached.
func (c *Cache) fetchHTTPS(ctx context.Context, a *schema.Artifact, declared string) (string, *Error) {
	if declared == "" {
		return "", fail(a.Name, ErrSource, "source %s: an https source needs spec.sha256", redact(a.Spec.Source))
	}
	if c.hasBlob(declared) {
		return declared, nil
	}
	_, err := c.flights.do(ctx, "https:"+declared, func() (any, error) {
		return nil, c.download(ctx, a, declared)
	})
	if err != nil {
		var e *Error
		if errors.As(err, &e) {
			named := *e // shared with every caller of the flight
			named.Name = a.Name
			return "", &named
		}
		return "", fail(a.Name, ErrSource, "%v", err)
	}
	return declared, nil
}

// download fetches a's source into tmp/<digest>.part, resuming what an
// earlier attempt left there with a Range request, checks the digest and
// commits the file.
func (c *Cache) download(ctx context.Context, a *schema.Artifact, digest string) error {
	if err := c.acquire(ctx); err != nil {
		return err
	}
	defer c.release()
	shown := redact(a.Spec.Source)
	failf := func(kind error, format string, args ...any) *Error {
		e := fail(a.Name, kind, format, args...)
		e.Retry = true
		return e
	}
	part := path.Join(tmpDir, digest+partSuffix)
	f, err := c.dir.OpenFile(part, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return failf(ErrSource, "%v", err)
	}
	discard := false
	defer func() {
		// Keep a partial download to resume, unless it is empty or its
		// bytes are known to be wrong.
		fi, err := f.Stat()
		f.Close()
		if discard || (err == nil && fi.Size() == 0) {
			_ = c.dir.Remove(part)
		}
	}()
	off, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return failf(ErrSource, "%v", err)
	}
	restart := func() error {
		off = 0
		if err := f.Truncate(0); err != nil {
			return err
		}
		_, err := f.Seek(0, io.SeekStart)
		return err
	}
	if off > c.opts.MaxSize {
		if err := restart(); err != nil {
			return failf(ErrSource, "%v", err)
		}
	}

	dctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stall := time.AfterFunc(c.opts.StallTimeout, func() {
		cancel(fmt.Errorf("stalled: no data for %v", c.opts.StallTimeout))
	})
	defer stall.Stop()
	req, err := http.NewRequestWithContext(dctx, http.MethodGet, a.Spec.Source, nil)
	if err != nil {
		return failf(ErrSource, "source %s: %v", shown, urlErr(err))
	}
	if off > 0 {
		req.Header.Set("Range", "bytes="+strconv.FormatInt(off, 10)+"-")
	}
	resp, err := c.opts.HTTPClient.Do(req)
	if err != nil {
		if cause := context.Cause(dctx); cause != nil && ctx.Err() == nil {
			err = cause
		}
		return failf(ErrSource, "GET %s: %v", shown, urlErr(err))
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusOK:
		if off > 0 {
			c.log.Info("artifact download restarts: server ignored the range", "artifact", a.Name, "offset", off)
		}
		if err := restart(); err != nil {
			return failf(ErrSource, "%v", err)
		}
	case resp.StatusCode == http.StatusPartialContent && off > 0:
		start, total, ok := parseContentRange(resp.Header.Get("Content-Range"))
		if !ok || start != off {
			discard = true
			return failf(ErrSource, "GET %s: asked for bytes from %d, got Content-Range %q", shown, off, resp.Header.Get("Content-Range"))
		}
		if total > c.opts.MaxSize {
			discard = true
			return failf(ErrTooLarge, "GET %s: %d bytes, the limit is %d", shown, total, c.opts.MaxSize)
		}
	case resp.StatusCode == http.StatusRequestedRangeNotSatisfiable && off > 0:
		// The partial file may already be whole (a crash between the
		// last byte and the rename); the digest decides.
		if ok, err := c.partIsWhole(f, digest); err == nil && ok {
			return c.finishPart(f, part, digest)
		}
		discard = true
		return failf(ErrSource, "GET %s: %s for the rest from byte %d; starting over", shown, resp.Status, off)
	default:
		return failf(ErrSource, "GET %s: %s", shown, resp.Status)
	}
	if resp.ContentLength >= 0 && off+resp.ContentLength > c.opts.MaxSize {
		discard = true
		return failf(ErrTooLarge, "GET %s: %d bytes, the limit is %d", shown, off+resp.ContentLength, c.opts.MaxSize)
	}

	h := sha256.New()
	if off > 0 {
		if err := hashPrefix(h, f, off); err != nil {
			discard = true
			return failf(ErrSource, "read partial download: %v", err)
		}
	}
	body := &stallReader{r: resp.Body, t: stall, d: c.opts.StallTimeout}
	w := bufio.NewWriterSize(io.MultiWriter(f, h), 256<<10)
	n, err := io.Copy(w, io.LimitReader(body, c.opts.MaxSize-off+1))
	if ferr := w.Flush(); err == nil {
		err = ferr
	}
	if off+n > c.opts.MaxSize {
		discard = true
		return failf(ErrTooLarge, "GET %s: more than %d bytes", shown, c.opts.MaxSize)
	}
	if err != nil {
		_ = f.Sync()
		if cause := context.Cause(dctx); cause != nil && ctx.Err() == nil {
			err = cause
		}
		return failf(ErrSource, "GET %s: interrupted after %d bytes (kept; the next attempt resumes): %v", shown, off+n, urlErr(err))
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != digest {
		discard = true
		return failf(ErrDigest, "GET %s: downloaded %d bytes with sha256 %s, the manifest says %s", shown, off+n, got, digest)
	}
	c.log.Info("artifact downloaded", "artifact", a.Name, "source", shown, "sha256", digest, "size", off+n, "resumed_at", off)
	return c.finishPart(f, part, digest)
}

func (c *Cache) finishPart(f *os.File, part, digest string) error {
	if err := f.Sync(); err != nil {
		return fail("", ErrSource, "%v", err)
	}
	if err := c.commit(part, digest); err != nil {
		return fail("", ErrSource, "%v", err)
	}
	return nil
}

// partIsWhole reports whether the partial file's digest is digest.
func (c *Cache) partIsWhole(f *os.File, digest string) (bool, error) {
	h := sha256.New()
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return false, err
	}
	if _, err := io.Copy(h, f); err != nil {
		return false, err
	}
	return hex.EncodeToString(h.Sum(nil)) == digest, nil
}

// hashPrefix feeds the first n bytes of f to h and leaves f at n.
func hashPrefix(h hash.Hash, f *os.File, n int64) error {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	if m, err := io.Copy(h, io.LimitReader(f, n)); err != nil || m != n {
		return fmt.Errorf("read %d of %d bytes: %v", m, n, err)
	}
	_, err := f.Seek(n, io.SeekStart)
	return err
}

// parseContentRange parses "bytes START-END/TOTAL" (TOTAL may be "*", then
// -1).
func parseContentRange(s string) (start, total int64, ok bool) {
	rest, found := strings.CutPrefix(s, "bytes ")
	if !found {
		return 0, 0, false
	}
	rng, tot, found := strings.Cut(rest, "/")
	if !found {
		return 0, 0, false
	}
	a, b, found := strings.Cut(rng, "-")
	if !found {
		return 0, 0, false
	}
	start, err1 := strconv.ParseInt(a, 10, 64)
	end, err2 := strconv.ParseInt(b, 10, 64)
	if err1 != nil || err2 != nil || start < 0 || end < start {
		return 0, 0, false
	}
	total = -1
	if tot != "*" {
		var err error
		if total, err = strconv.ParseInt(tot, 10, 64); err != nil || total <= end {
			return 0, 0, false
		}
	}
	return start, total, true
}

// stallReader resets the stall timer whenever bytes arrive.
type stallReader struct {
	r io.Reader
	t *time.Timer
	d time.Duration
}

func (s *stallReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if n > 0 {
		s.t.Reset(s.d)
	}
	return n, err
}

// ctxReader stops a copy when ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// redact returns s without the userinfo, query and fragment of a URL (a
// presigned object-store URL carries its credentials there).
func redact(s string) string {
	if !strings.Contains(s, "://") {
		return s
	}
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	u.User, u.RawQuery, u.ForceQuery, u.Fragment, u.RawFragment = nil, "", false, "", ""
	return u.String()
}

// urlErr drops the *url.Error wrapper, whose message repeats the full URL
// with its query.
func urlErr(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
