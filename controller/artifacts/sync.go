package artifacts

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io/fs"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"

	"github.com/gitfleet/gitfleet/artifact"
	"github.com/gitfleet/gitfleet/schema"
)

// A record is what the cache knows of one Artifact manifest.
type record struct {
	// want identifies the manifest spec and the signedBy keys the outcome
	// is for; a change of either starts over.
	want   string
	source string
	// digest is the last file the source gave, kept (not collected) while
	// the manifest exists even if a check failed.
	digest string
	// partial is the digest an https download in progress is kept under
	// (tmp/<partial>.part).
	partial string

	entry    *Entry // set when offered
	err      *Error // set when a check failed
	attempts int    // consecutive failed fetches
	next     time.Time
	checked  time.Time
	// retry spaces the fetches of an https source that keeps failing;
	// made at the first failure, reset by a verdict.
	retry *backoff.ExponentialBackOff
}

// identity names what an outcome depends on besides the source's bytes:
// the spec and the PEM of every key spec.signedBy names.
func identity(a *schema.Artifact, keys []schema.SigningKey) string {
	h := sha256.New()
	spec, _ := json.Marshal(a.Spec)
	h.Write(spec)
	for _, name := range a.Spec.SignedBy {
		h.Write([]byte{0})
		h.Write([]byte(name))
		if k := findKey(keys, name); k != nil {
			h.Write([]byte{1})
			h.Write([]byte(k.Spec.PublicKey))
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}

func findKey(keys []schema.SigningKey, name string) *schema.SigningKey {
	for i := range keys {
		if keys[i].Name == name {
			return &keys[i]
		}
	}
	return nil
}

func (c *Cache) sync(ctx context.Context, fleet *schema.Fleet) error {
	c.mu.Lock()
	c.gen++
	gen := c.gen
	// Forget at once what the fleet no longer declares: a deleted
	// manifest stops downloads now, not after the slowest fetch.
	names := map[string]bool{}
	for i := range fleet.Artifacts {
		names[fleet.Artifacts[i].Name] = true
	}
	for name := range c.arts {
		if !names[name] {
			delete(c.arts, name)
			c.log.Info("artifact removed", "artifact", name)
		}
	}
	c.reindex()
	c.mu.Unlock()

	var wg sync.WaitGroup
	for i := range fleet.Artifacts {
		a := &fleet.Artifacts[i]
		wg.Go(func() { c.ensureGen(ctx, a, fleet.Keys, gen) })
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return err
	}
	c.collect(gen)
	return nil
}

func (c *Cache) ensure(ctx context.Context, a *schema.Artifact, keys []schema.SigningKey) (*Entry, error) {
	e, err := c.ensureGen(ctx, a, keys, 0)
	if err != nil {
		return nil, err
	}
	return e, nil
}

// ensureGen checks a and records the outcome, unless a Sync newer than gen
// (0: none) has begun, or a's record changed meanwhile.
func (c *Cache) ensureGen(ctx context.Context, a *schema.Artifact, keys []schema.SigningKey, gen uint64) (*Entry, error) {
	want := identity(a, keys)
	c.mu.Lock()
	if gen != 0 && gen != c.gen {
		c.mu.Unlock()
		return nil, &Error{Name: a.Name, Kind: ErrPending, Err: errors.New("superseded by a newer sync")}
	}
	r := c.arts[a.Name]
	if r == nil || r.want != want {
		r = &record{want: want, source: a.Spec.Source}
		if isHTTPS(a.Spec.Source) && isDigest(strings.ToLower(a.Spec.SHA256)) {
			r.partial = strings.ToLower(a.Spec.SHA256)
		}
		c.arts[a.Name] = r
		c.reindex()
	}
	if r.err != nil && r.err.Retry && c.opts.Now().Before(r.next) {
		err := r.err
		c.mu.Unlock()
		return nil, err
	}
	c.mu.Unlock()

	e, digest, ferr := c.check(ctx, a, keys)
	if ferr != nil && ctx.Err() != nil {
		return nil, ctx.Err() // no verdict: the caller gave up
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.opts.Now()
	if c.arts[a.Name] != r {
		// The manifest changed or went away while this ran.
		if ferr != nil {
			return nil, ferr
		}
		return e, nil
	}
	was := r.entry
	r.checked = now
	if digest != "" {
		r.digest = digest
	}
	if ferr == nil {
		r.entry, r.err, r.attempts, r.next, r.retry = e, nil, 0, time.Time{}, nil
		if was == nil || was.Digest != e.Digest {
			c.log.Info("artifact ready", "artifact", a.Name, "sha256", e.Digest, "size", e.Size, "signed_by", e.SignedBy)
		}
		c.reindex()
		return e, nil
	}
	first := r.err == nil || r.err.Error() != ferr.Error()
	r.entry, r.err = nil, ferr
	if ferr.Retry {
		r.attempts++
		// Only network fetches back off; a store path is a stat away
		// and is looked at again by every sync.
		if isHTTPS(a.Spec.Source) {
			if r.retry == nil {
				r.retry = c.newBackoff()
			}
			r.next = now.Add(r.retry.NextBackOff())
		}
	} else {
		r.attempts, r.next, r.retry = 0, time.Time{}, nil
	}
	if first {
		c.log.Warn("artifact refused", "artifact", a.Name, "reason", ferr.Reason(), "attempts", r.attempts, "next_attempt", r.next)
	}
	c.reindex()
	return nil, ferr
}

// newBackoff returns the delays between the fetches of an https source
// that keeps failing: MinBackoff after the first failure, doubling up to
// MaxBackoff. No jitter: the status shows the next attempt's time, and one
// controller fetches each artifact once per delay.
func (c *Cache) newBackoff() *backoff.ExponentialBackOff {
	b := &backoff.ExponentialBackOff{
		InitialInterval: c.opts.MinBackoff,
		Multiplier:      2,
		MaxInterval:     c.opts.MaxBackoff,
	}
	b.Reset()
	return b
}

// reindex rebuilds the digests the handler serves. c.mu is held.
func (c *Cache) reindex() {
	clear(c.offered)
	for _, r := range c.arts {
		if r.entry != nil {
			c.offered[r.entry.Digest] = r.entry
		}
	}
}

// check runs the ordered checks of the package documentation on a. It
// returns the digest of the file it looked at, even when a later check
// failed.
func (c *Cache) check(ctx context.Context, a *schema.Artifact, keys []schema.SigningKey) (*Entry, string, *Error) {
	vs, err := resolveKeys(a, keys)
	if err != nil {
		return nil, "", err
	}
	digest, err := c.fetch(ctx, a)
	if err != nil {
		return nil, "", err
	}
	b, err := c.inspect(ctx, a.Name, digest)
	if err != nil {
		return nil, digest, err
	}
	if err := checkHeader(a, b.header); err != nil {
		return nil, digest, err
	}
	signed, err := c.checkSignatures(ctx, a, vs, keys, b)
	if err != nil {
		return nil, digest, err
	}
	c.touch(digest)
	h := b.header
	e := &Entry{
		Name:                 a.Name,
		Source:               redact(a.Spec.Source),
		Digest:               digest,
		Size:                 b.size,
		Path:                 c.blobPath(digest),
		ArtifactName:         h.Name(),
		DeviceTypes:          slices.Clone(h.DeviceTypes()),
		Provides:             h.Provides(),
		Depends:              h.Depends(),
		DependsArtifactNames: slices.Clone(h.Info.Depends.Names),
		DependsGroups:        slices.Clone(h.Info.Depends.Groups),
		Version:              a.Spec.Version,
		Verified:             c.opts.Now(),
	}
	for _, p := range h.Payloads {
		e.PayloadTypes = append(e.PayloadTypes, p.Type)
		e.ClearsProvides = append(e.ClearsProvides, p.TypeInfo.ClearsProvides...)
	}
	for _, v := range signed {
		e.SignedBy = append(e.SignedBy, v.name)
		e.SignedByFingerprints = append(e.SignedByFingerprints, v.Fingerprint())
	}
	return e, digest, nil
}

// namedVerifier is a signedBy key, loaded.
type namedVerifier struct {
	name string
	*artifact.Verifier
}

// resolveKeys loads the keys spec.signedBy names.
func resolveKeys(a *schema.Artifact, keys []schema.SigningKey) ([]namedVerifier, *Error) {
	var vs []namedVerifier
	for _, name := range a.Spec.SignedBy {
		k := findKey(keys, name)
		if k == nil {
			return nil, fail(a.Name, ErrKey, "spec.signedBy names SigningKey %q, which the fleet does not declare", name)
		}
		v, err := artifact.LoadVerifier([]byte(k.Spec.PublicKey))
		if err != nil {
			return nil, fail(a.Name, ErrKey, "SigningKey %s: %v", name, err)
		}
		vs = append(vs, namedVerifier{name, v})
	}
	return vs, nil
}

// collect removes cached files that no artifact uses and that were last
// used more than KeepUnused ago, unless a newer Sync than gen has begun.
func (c *Cache) collect(gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != c.gen {
		return
	}
	used := map[string]bool{}
	for _, r := range c.arts {
		used[r.digest] = true
		if r.entry != nil {
			used[r.entry.Digest] = true
		}
	}
	ents, err := fs.ReadDir(c.dir.FS(), blobDir)
	if err != nil {
		c.log.Warn("artifact cache: list", "err", err)
		return
	}
	cutoff := c.opts.Now().Add(-c.opts.KeepUnused)
	for _, de := range ents {
		name := de.Name()
		if used[name] || !isDigest(name) {
			continue
		}
		fi, err := de.Info()
		if err != nil || fi.ModTime().After(cutoff) {
			continue
		}
		if err := c.dir.Remove(path.Join(blobDir, name)); err != nil {
			c.log.Warn("artifact cache: remove unused file", "sha256", name, "err", err)
			continue
		}
		delete(c.blobs, name)
		c.log.Info("artifact cache: removed unused file", "sha256", name, "size", fi.Size())
	}

	// Partial downloads of artifacts that left the fleet.
	partials := map[string]bool{}
	for _, r := range c.arts {
		partials[r.partial+partSuffix] = true
	}
	ents, err = fs.ReadDir(c.dir.FS(), tmpDir)
	if err != nil {
		return
	}
	for _, de := range ents {
		name := de.Name()
		if !strings.HasSuffix(name, partSuffix) || partials[name] {
			continue
		}
		if fi, err := de.Info(); err == nil && fi.ModTime().Before(cutoff) {
			_ = c.dir.Remove(path.Join(tmpDir, name))
		}
	}
}

func isHTTPS(source string) bool { return strings.HasPrefix(source, "https://") }
