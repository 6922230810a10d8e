package artifacts

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/gitfleet/gitfleet/artifact"
	"github.com/gitfleet/gitfleet/schema"
)

// Options configure a [Cache]. Dir and DownloadKeys are required.
type Options struct {
	// Dir is the cache directory, under the controller's data directory.
	// It holds sha256/<hex> (verified artifacts, read-only) and tmp/
	// (downloads in progress). Created if missing.
	Dir string

	// StoreDir is the local artifact store that manifest source paths are
	// relative to. Artifacts are large binaries kept outside Git, so this
	// is never the fleet repository's checkout. Empty means no local
	// store: every path source fails with ErrSource and only https
	// sources work.
	StoreDir string

	// HTTPClient fetches https sources. Default: a client with 10s dial
	// and TLS handshake timeouts, a 30s response header timeout, no
	// overall timeout (artifacts are large; StallTimeout bounds a stalled
	// body instead) and redirects followed only to https.
	HTTPClient *http.Client

	// StallTimeout aborts a download that receives no bytes for this
	// long. Default 1 minute.
	StallTimeout time.Duration

	// MaxSize bounds the size of an artifact, local or downloaded.
	// Default 8 GiB.
	MaxSize int64

	// MaxConcurrent bounds how many sources are copied or downloaded at
	// once. Default 4.
	MaxConcurrent int

	// MinBackoff and MaxBackoff bound the delay before a failed fetch is
	// tried again: MinBackoff after the first failure, doubling up to
	// MaxBackoff. Defaults 10s and 10 minutes.
	MinBackoff, MaxBackoff time.Duration

	// KeepUnused is how long a cached file that no artifact uses any more
	// is kept (devices may still be downloading it through a URL issued
	// before the fleet changed). Default 24 hours.
	KeepUnused time.Duration

	// DownloadKeys are the HMAC keys of presigned download URLs, each at
	// least 32 bytes: the first signs, all verify (rotate by putting the
	// new key first, drop the old one after the longest URL lifetime).
	// Replicas must share them; the controller takes them from the
	// store's SharedSecret.
	DownloadKeys [][]byte

	// Limits bound what reading an artifact holds in memory; zero fields
	// take artifact.DefaultLimits.
	Limits artifact.Limits

	// Logger receives one line per fetch and per state change. Default:
	// slog.Default().
	Logger *slog.Logger

	// Now is the clock (backoff, URL expiry, KeepUnused). Default
	// time.Now.
	Now func() time.Time
}

// Defaults of [Options].
const (
	DefaultMaxSize       = 8 << 30
	DefaultMaxConcurrent = 4
	DefaultMinBackoff    = 10 * time.Second
	DefaultMaxBackoff    = 10 * time.Minute
	DefaultStallTimeout  = time.Minute
	DefaultKeepUnused    = 24 * time.Hour
	// DefaultURLTTL is the lifetime PresignURL gives a URL when asked for
	// none.
	DefaultURLTTL = time.Hour
	// MinKeySize is the smallest download key accepted.
	MinKeySize = 32
)

// An Entry is a verified artifact the controller may offer. Entries are
// immutable; a change of the manifest or of the source's bytes makes a
// new one.
type Entry struct {
	// Name is the Artifact manifest's metadata.name.
	Name string `json:"name"`
	// Source is the manifest's source (an https URL without its query).
	Source string `json:"source"`
	// Digest is the lowercase hex sha256 of the artifact file.
	Digest string `json:"sha256"`
	// Size is the file's size in bytes.
	Size int64 `json:"size"`
	// Path is the cached file (Dir/sha256/<digest>); read it, never write.
	Path string `json:"-"`

	// ArtifactName, DeviceTypes, Provides, Depends and PayloadTypes are
	// what the artifact's header says. Provides includes artifact_name
	// (and artifact_group when set), as a device reports them after
	// installing it.
	ArtifactName string              `json:"artifact_name"`
	DeviceTypes  []string            `json:"device_types"`
	Provides     map[string]string   `json:"provides,omitempty"`
	Depends      map[string][]string `json:"depends,omitempty"`
	// DependsArtifactNames and DependsGroups are header-info's
	// artifact_depends: a device must have one of them installed.
	DependsArtifactNames []string `json:"depends_artifact_name,omitempty"`
	DependsGroups        []string `json:"depends_artifact_group,omitempty"`
	// ClearsProvides lists the payloads' clears_artifact_provides.
	ClearsProvides []string `json:"clears_provides,omitempty"`
	PayloadTypes   []string `json:"payload_types"`

	// Version is the manifest's spec.version (for downgrade protection).
	Version string `json:"version,omitempty"`

	// SignedBy lists the SigningKey names, in spec.signedBy order, whose
	// signatures verified; SignedByFingerprints their fingerprints
	// (artifact.Fingerprint). Empty when the manifest requires none.
	SignedBy             []string `json:"signed_by,omitempty"`
	SignedByFingerprints []string `json:"signed_by_fingerprints,omitempty"`

	// Verified is when the checks passed.
	Verified time.Time `json:"verified"`
}

// A State is where an artifact stands.
type State string

// The states of an artifact.
const (
	StatePending State = "pending" // being fetched or checked
	StateOK      State = "ok"      // offered
	StateFailed  State = "failed"  // not offered; see Reason
)

// An ArtifactStatus is one line of [Cache.Status].
type ArtifactStatus struct {
	Name   string `json:"name"`
	Source string `json:"source"`
	State  State  `json:"state"`
	// Reason says why a failed artifact is not offered.
	Reason string `json:"reason,omitempty"`
	// Err is the error Lookup returns (nil when OK).
	Err error `json:"-"`
	// Entry is the offered artifact when OK.
	Entry *Entry `json:"entry,omitempty"`
	// Attempts counts consecutive failed fetches; NextAttempt is when a
	// sync tries again (zero when it tries at once).
	Attempts    int       `json:"attempts,omitempty"`
	NextAttempt time.Time `json:"next_attempt,omitzero"`
	// Checked is when the artifact was last checked.
	Checked time.Time `json:"checked,omitzero"`
}

// A Cache fetches, verifies and serves a fleet's artifacts. Its methods are
// safe for concurrent use.
type Cache struct {
	opts  Options
	log   *slog.Logger
	dir   *os.Root // Options.Dir
	store *os.Root // Options.StoreDir; nil when none
	sem   chan struct{}

	mu      sync.Mutex
	arts    map[string]*record   // by manifest name
	blobs   map[string]*blob     // by digest: what reading the file taught
	local   map[string]localStat // by store path: last stat and its digest
	offered map[string]*Entry    // by digest: an OK entry using it
	gen     uint64               // of the latest Sync
	flights flights
}

// New opens (creating if needed) the cache directory and returns a Cache.
// Leftover temporary files of an earlier run are removed, except partial
// downloads, which later resume.
func New(opts Options) (*Cache, error) {
	if opts.Dir == "" {
		return nil, errors.New("artifacts: Options.Dir is required")
	}
	if len(opts.DownloadKeys) == 0 {
		return nil, errors.New("artifacts: Options.DownloadKeys: need at least one download signing key")
	}
	for i, k := range opts.DownloadKeys {
		if len(k) < MinKeySize {
			return nil, fmt.Errorf("artifacts: Options.DownloadKeys[%d]: %d bytes, want at least %d", i, len(k), MinKeySize)
		}
	}
	opts.DownloadKeys = slices.Clone(opts.DownloadKeys)
	if opts.MaxSize <= 0 {
		opts.MaxSize = DefaultMaxSize
	}
	if opts.MaxConcurrent <= 0 {
		opts.MaxConcurrent = DefaultMaxConcurrent
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = DefaultMinBackoff
	}
	if opts.MaxBackoff < opts.MinBackoff {
		opts.MaxBackoff = max(DefaultMaxBackoff, opts.MinBackoff)
	}
	if opts.StallTimeout <= 0 {
		opts.StallTimeout = DefaultStallTimeout
	}
	if opts.KeepUnused <= 0 {
		opts.KeepUnused = DefaultKeepUnused
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.HTTPClient == nil {
		opts.HTTPClient = defaultClient()
	}
	for _, sub := range []string{"", blobDir, tmpDir} {
		if err := os.MkdirAll(filepath.Join(opts.Dir, sub), 0o755); err != nil {
			return nil, fmt.Errorf("artifacts: %w", err)
		}
	}
	c := &Cache{
		opts:    opts,
		log:     opts.Logger,
		sem:     make(chan struct{}, opts.MaxConcurrent),
		arts:    map[string]*record{},
		blobs:   map[string]*blob{},
		local:   map[string]localStat{},
		offered: map[string]*Entry{},
	}
	var err error
	if c.dir, err = os.OpenRoot(opts.Dir); err != nil {
		return nil, fmt.Errorf("artifacts: %w", err)
	}
	if opts.StoreDir != "" {
		if c.store, err = os.OpenRoot(opts.StoreDir); err != nil {
			c.dir.Close()
			return nil, fmt.Errorf("artifacts: artifact store: %w", err)
		}
	}
	c.cleanTmp()
	return c, nil
}

// Close releases the cache's directories. Serving after Close fails.
func (c *Cache) Close() error {
	err := c.dir.Close()
	if c.store != nil {
		err = errors.Join(err, c.store.Close())
	}
	return err
}

// Sync brings the cache in line with fleet: it ensures every Artifact
// (at most Options.MaxConcurrent fetches at a time), forgets artifacts the
// fleet no longer declares, and removes cached files unused for
// Options.KeepUnused. Per-artifact failures are not Sync's error — they
// are in Status and Lookup; Sync fails only when ctx ends. Concurrent
// Syncs are safe: a fetch both need is done once, and the newest Sync
// decides which artifacts exist.
func (c *Cache) Sync(ctx context.Context, fleet *schema.Fleet) error {
	return c.sync(ctx, fleet)
}

// Ensure fetches and checks one artifact, with the fleet's signing keys
// (those spec.signedBy names are used), records the outcome under
// a.Name, and returns the entry or an [*Error]. An artifact whose last
// fetch failed is not fetched again before its backoff ends; Ensure then
// returns the last error.
func (c *Cache) Ensure(ctx context.Context, a schema.Artifact, keys []schema.SigningKey) (*Entry, error) {
	return c.ensure(ctx, &a, keys)
}

// Lookup returns the offered entry of the artifact called name, or an
// [*Error] wrapping ErrNotFound, ErrPending or the check that failed.
func (c *Cache) Lookup(name string) (*Entry, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.arts[name]
	switch {
	case r == nil:
		return nil, &Error{Name: name, Kind: ErrNotFound}
	case r.entry != nil:
		return r.entry, nil
	case r.err != nil:
		return nil, r.err
	}
	return nil, &Error{Name: name, Kind: ErrPending}
}

// Status lists every artifact the cache knows, by name.
func (c *Cache) Status() []ArtifactStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]ArtifactStatus, 0, len(c.arts))
	for name, r := range c.arts {
		s := ArtifactStatus{Name: name, Source: redact(r.source), State: StatePending,
			Entry: r.entry, Attempts: r.attempts, NextAttempt: r.next, Checked: r.checked}
		switch {
		case r.entry != nil:
			s.State = StateOK
		case r.err != nil:
			s.State, s.Err, s.Reason = StateFailed, r.err, r.err.Reason()
		}
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b ArtifactStatus) int { return cmpString(a.Name, b.Name) })
	return out
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// defaultClient is Options.HTTPClient's default.
func defaultClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	t.TLSHandshakeTimeout = 10 * time.Second
	t.ResponseHeaderTimeout = 30 * time.Second
	return &http.Client{
		Transport: t,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if req.URL.Scheme != "https" {
				return fmt.Errorf("redirect to %s refused: not https", req.URL.Scheme)
			}
			if len(via) >= 5 {
				return errors.New("too many redirects")
			}
			return nil
		},
	}
}
