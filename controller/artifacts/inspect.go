package artifacts

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"slices"
	"strings"

	"github.com/gitfleet/gitfleet/artifact"
	"github.com/gitfleet/gitfleet/schema"
)

// A blob is what reading one cached file taught; it depends only on the
// bytes, so it is kept per digest.
type blob struct {
	size     int64
	header   *artifact.Header
	manifest []byte // the manifest entry, as signed
	sig      []byte // manifest.sig; nil when unsigned
	err      error  // why the file is not an intact artifact
}

// inspect reads the cached file digest whole with package artifact,
// checking every digest its manifest lists, once per digest.
func (c *Cache) inspect(ctx context.Context, name, digest string) (*blob, *Error) {
	c.mu.Lock()
	b := c.blobs[digest]
	c.mu.Unlock()
	if b == nil {
		v, err := c.flights.do(ctx, "inspect:"+digest, func() (any, error) {
			if err := c.acquire(ctx); err != nil {
				return nil, err
			}
			defer c.release()
			b, err := c.read(ctx, digest)
			if err != nil {
				return nil, err
			}
			c.mu.Lock()
			c.blobs[digest] = b
			c.mu.Unlock()
			return b, nil
		})
		if err != nil {
			return nil, fail(name, ErrSource, "read cached %s: %v", digest, err)
		}
		b = v.(*blob)
	}
	if b.err != nil {
		return nil, &Error{Name: name, Kind: ErrFormat, Err: b.err}
	}
	return b, nil
}

// read reads one cached file. Only I/O trouble is an error; a malformed
// artifact is a blob with err set.
func (c *Cache) read(ctx context.Context, digest string) (*blob, error) {
	f, err := c.dir.Open(path.Join(blobDir, digest))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	b := &blob{size: fi.Size()}
	b.header, b.err = verifyWhole(&ctxReader{ctx, f}, c.opts.Limits)
	if b.err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return b, nil
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	b.manifest, b.sig, b.err = readHead(f, c.opts.Limits)
	return b, nil
}

// verifyWhole reads an artifact to its end, checking every digest, and
// returns its header.
func verifyWhole(r io.Reader, lim artifact.Limits) (*artifact.Header, error) {
	return artifact.Verify(bufio.NewReaderSize(r, 256<<10), artifact.ReaderOptions{Limits: lim})
}

// readHead returns the raw manifest and manifest.sig entries of an
// artifact (sig nil when absent). The caller has verified the artifact, or
// only signs what it reads.
func readHead(r io.Reader, lim artifact.Limits) (manifest, sig []byte, err error) {
	if lim.Manifest <= 0 {
		lim.Manifest = artifact.DefaultLimits.Manifest
	}
	if lim.Signature <= 0 {
		lim.Signature = artifact.DefaultLimits.Signature
	}
	tr := tar.NewReader(r)
	for range 4 {
		h, err := tr.Next()
		if err != nil {
			break
		}
		var limit int64
		switch h.Name {
		case "version":
			continue
		case "manifest":
			limit = lim.Manifest
		case "manifest.sig":
			limit = lim.Signature
		default:
			if manifest == nil {
				return nil, nil, fmt.Errorf("%w: no manifest before %q", artifact.ErrFormat, h.Name)
			}
			return manifest, sig, nil
		}
		data, err := io.ReadAll(io.LimitReader(tr, limit+1))
		if err != nil {
			return nil, nil, fmt.Errorf("%w: %s: %v", artifact.ErrFormat, h.Name, err)
		}
		if int64(len(data)) > limit {
			return nil, nil, fmt.Errorf("%w: %s is larger than %d bytes", artifact.ErrTooLarge, h.Name, limit)
		}
		if h.Name == "manifest" {
			manifest = data
		} else {
			sig = data
		}
	}
	if manifest == nil {
		return nil, nil, fmt.Errorf("%w: no manifest", artifact.ErrFormat)
	}
	return manifest, sig, nil
}

// checkHeader compares what the manifest says with the header.
func checkHeader(a *schema.Artifact, h *artifact.Header) *Error {
	if want := a.ArtifactName(); h.Name() != want {
		return fail(a.Name, ErrHeader, "artifact_name is %q, the manifest says %q", h.Name(), want)
	}
	for _, dt := range a.Spec.DeviceTypes {
		if !slices.Contains(h.DeviceTypes(), dt) {
			return fail(a.Name, ErrHeader, "device type %q is not among the artifact's device_type %q", dt, h.DeviceTypes())
		}
	}
	provides := h.Provides()
	for _, k := range sortedKeys(a.Spec.Provides) {
		want := a.Spec.Provides[k]
		if got, ok := provides[k]; !ok {
			return fail(a.Name, ErrHeader, "the manifest says it provides %s=%q; the artifact does not provide %s", k, want, k)
		} else if got != want {
			return fail(a.Name, ErrHeader, "the manifest says it provides %s=%q; the artifact provides %s=%q", k, want, k, got)
		}
	}
	depends := h.Depends()
	depends["artifact_name"] = append(depends["artifact_name"], h.Info.Depends.Names...)
	depends["artifact_group"] = append(depends["artifact_group"], h.Info.Depends.Groups...)
	for _, k := range sortedKeys(a.Spec.Depends) {
		want := a.Spec.Depends[k]
		if !slices.Contains(depends[k], want) {
			return fail(a.Name, ErrHeader, "the manifest says it depends on %s=%q; the artifact depends on %s=%q", k, want, k, depends[k])
		}
	}
	return nil
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// checkSignatures returns the signedBy keys whose signatures verify, when
// there are at least minSignatures of them, and refuses an artifact with
// augmented parts that no signature covers (artifact.Header.Covered). Each key counts once, embedded
// (manifest.sig) or detached (SOURCE.sigs); the detached file is read only
// when the embedded signature is not enough.
func (c *Cache) checkSignatures(ctx context.Context, a *schema.Artifact, vs []namedVerifier, keys []schema.SigningKey, b *blob) ([]namedVerifier, *Error) {
	need := a.Spec.MinSignatures
	if need == 0 && len(vs) > 0 {
		need = 1
	}
	if need == 0 {
		return nil, nil
	}
	// A required signature must cover every byte a device installs or
	// runs: the same rule the agent and `gitfleet artifact verify` apply.
	if err := b.header.Covered(); err != nil {
		return nil, &Error{Name: a.Name, Kind: ErrUnsigned, Err: err}
	}
	signed := make([]bool, len(vs))
	count := 0
	if b.sig != nil {
		for i, v := range vs {
			if v.Verify(b.manifest, b.sig) == nil {
				signed[i] = true
				count++
			}
		}
	}
	var detached [][]byte
	if count < need {
		var err error
		if detached, err = c.detachedSigs(ctx, a); err != nil {
			return nil, fail(a.Name, ErrSource, "detached signatures: %v", err)
		}
		for _, sig := range detached {
			for i, v := range vs {
				if !signed[i] && v.Verify(b.manifest, sig) == nil {
					signed[i] = true
					count++
				}
			}
		}
	}
	if count >= need {
		var out []namedVerifier
		for i, v := range vs {
			if signed[i] {
				out = append(out, v)
			}
		}
		return out, nil
	}

	names := make([]string, len(vs))
	for i, v := range vs {
		names[i] = fmt.Sprintf("%s (%s…)", v.name, v.Fingerprint()[:16])
	}
	if b.sig == nil && len(detached) == 0 {
		return nil, fail(a.Name, ErrUnsigned, "spec.signedBy requires a signature by %s, and the artifact carries none", strings.Join(names, " or "))
	}
	if need == 1 {
		msg := fmt.Sprintf("no signature verifies with %s", strings.Join(names, " or "))
		if other := signerAmong(keys, b); other != "" && !slices.Contains(a.Spec.SignedBy, other) {
			msg += fmt.Sprintf("; it is signed by SigningKey %s, which spec.signedBy does not list", other)
		}
		return nil, fail(a.Name, ErrSignature, "%s", msg)
	}
	var have []string
	for i, v := range vs {
		if signed[i] {
			have = append(have, v.name)
		}
	}
	return nil, fail(a.Name, ErrSignature,
		"spec.minSignatures needs %d signatures from [%s], found %d %q; a Mender artifact carries one signature (manifest.sig): add the others, one per line, to %s.sigs (gitfleet's detached signatures)",
		need, strings.Join(names, ", "), count, have, redact(a.Spec.Source))
}

// signerAmong returns the name of the fleet key that made the embedded
// signature, if any, for the error message.
func signerAmong(keys []schema.SigningKey, b *blob) string {
	if b.sig == nil {
		return ""
	}
	for _, k := range keys {
		if v, err := artifact.LoadVerifier([]byte(k.Spec.PublicKey)); err == nil && v.Verify(b.manifest, b.sig) == nil {
			return k.Name
		}
	}
	return ""
}

// detachedSigs reads SOURCE.sigs; none when it does not exist.
func (c *Cache) detachedSigs(ctx context.Context, a *schema.Artifact) ([][]byte, error) {
	var data []byte
	src := a.Spec.Source
	if strings.HasPrefix(src, "https://") {
		u, err := url.Parse(src)
		if err != nil {
			return nil, fmt.Errorf("source %s: %v", redact(src), err)
		}
		u.Path += ".sigs"
		u.RawPath = ""
		if data, err = c.getSmall(ctx, u.String()); err != nil {
			return nil, err
		}
	} else if c.store != nil {
		var err error
		if data, err = c.readStoreSidecar(src + ".sigs"); err != nil {
			return nil, err
		}
	}
	var sigs [][]byte
	for line := range bytes.Lines(data) {
		line = bytes.TrimSpace(line)
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		sigs = append(sigs, line)
	}
	return sigs, nil
}

// getSmall GETs a small https resource; nil when it is 404.
func (c *Cache) getSmall(ctx context.Context, u string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.StallTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, urlErr(err)
	}
	resp, err := c.opts.HTTPClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %v", redact(u), urlErr(err))
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound:
		return nil, nil
	default:
		return nil, fmt.Errorf("GET %s: %s", redact(u), resp.Status)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxSidecar+1))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %v", redact(u), urlErr(err))
	}
	if len(data) > maxSidecar {
		return nil, fmt.Errorf("GET %s: larger than %d bytes", redact(u), maxSidecar)
	}
	return data, nil
}

// openOffered opens the cached file of an offered artifact.
func (c *Cache) openOffered(digest string) (*os.File, error) {
	c.mu.Lock()
	e := c.offered[digest]
	c.mu.Unlock()
	if e == nil {
		return nil, errors.New("not offered")
	}
	return c.dir.Open(path.Join(blobDir, digest))
}

// SignDetached returns a line for SOURCE.sigs: signer's signature, in
// manifest.sig's encoding, over the manifest of the artifact read from r
// (see "More than one signature" in the package documentation). It reads
// only the head of the artifact and checks none of its digests: verify the
// artifact (artifact.Verify) before vouching for it.
func SignDetached(r io.Reader, signer *artifact.Signer) ([]byte, error) {
	manifest, _, err := readHead(r, artifact.Limits{})
	if err != nil {
		return nil, err
	}
	sig, err := signer.Sign(manifest)
	if err != nil {
		return nil, err
	}
	return append(sig, '\n'), nil
}
