package gitsource

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/storer"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"golang.org/x/crypto/ssh/knownhosts"
)

// Options configure a [Source]. Only URL is required.
type Options struct {
	// URL of the fleet repository: file:///path (or a plain path),
	// https://host/path, ssh://[user@]host[:port]/path or scp-style
	// [user@]host:path. http:// is refused unless AllowInsecureHTTP is set;
	// git:// is always refused. Credentials in the URL (https://user:pass@…)
	// are moved into Auth and removed from the URL.
	URL string

	// Ref is the branch to follow (default "main"), or a full ref name:
	// "refs/heads/release" or "refs/tags/v1.2" to follow a tag (annotated
	// or not; a tag that is moved on the remote is followed too).
	Ref string

	// Dir holds the local clone, kept between restarts: it is created if
	// missing and reused if it holds a clone, so only new objects are fetched
	// after a restart. Default: a temporary directory that Close removes.
	// One Source per Dir.
	Dir string

	// Auth holds the credentials for https and ssh URLs.
	Auth Auth

	// CABundle holds PEM certificates trusted for https, in addition to the
	// system roots.
	CABundle []byte
	// InsecureSkipTLS turns off certificate verification. For tests only.
	InsecureSkipTLS bool
	// AllowInsecureHTTP allows http:// URLs (credentials then travel in
	// clear text). For tests and closed networks only.
	AllowInsecureHTTP bool

	// HostKey pins the SSH server's public key, in authorized_keys format
	// ("ssh-ed25519 AAAA…"). Alternatively, KnownHostsFile names an
	// OpenSSH known_hosts file. ssh URLs need one of them: a host key is
	// never trusted on first use.
	HostKey        string
	KnownHostsFile string

	// TrustedKeys is an armored OpenPGP public keyring. When set, a head is
	// served only if every commit new to this Source is signed by one of
	// these keys (see the package documentation).
	TrustedKeys string
	// SignedSince names a commit (SHA) from which on signatures are
	// required: it and its ancestors are trusted without a signature. Used
	// with TrustedKeys when a repository adopts signing, or to accept a
	// reviewed unsigned commit.
	SignedSince string

	// PollInterval is the time between fetches while the remote answers
	// (default 1m). Webhooks make Run fetch at once in between.
	PollInterval time.Duration
	// FetchTimeout bounds one fetch, connection included (default 30s).
	FetchTimeout time.Duration
	// MinBackoff and MaxBackoff bound the wait between retries while the
	// remote is unreachable (defaults 1s and 5m). The wait doubles with each
	// failure, with jitter, and is reset by a successful fetch.
	MinBackoff, MaxBackoff time.Duration

	// Clock tells time and makes timers (default: the system clock).
	Clock Clock
	// Logger receives what Run does (default slog.Default()). Fetch itself
	// does not log: it returns errors.
	Logger *slog.Logger
}

// LogValue implements [slog.LogValuer]: the settings an operator checks,
// with the URL stripped of credentials and Auth redacted.
func (o Options) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("url", stripCredentials(o.URL)),
		slog.String("ref", o.Ref),
		slog.String("dir", o.Dir),
		slog.Any("auth", o.Auth),
		slog.Bool("signed_commits", o.TrustedKeys != ""),
		slog.Duration("poll_interval", o.PollInterval),
	)
}

// String describes the options without secrets (the URL loses its
// credentials, Auth is redacted).
func (o Options) String() string {
	return fmt.Sprintf("gitsource.Options{URL:%s Ref:%s Dir:%s %s SignedCommits:%v}",
		stripCredentials(o.URL), o.Ref, o.Dir, o.Auth, o.TrustedKeys != "")
}

// GoString keeps %#v from printing secrets.
func (o Options) GoString() string { return o.String() }

// Person is a commit's author or committer.
type Person struct {
	Name  string
	Email string
	When  time.Time
}

func (p Person) String() string { return fmt.Sprintf("%s <%s>", p.Name, p.Email) }

// Revision is one commit of the followed ref, ready to be loaded.
type Revision struct {
	SHA       string // full commit SHA
	Ref       string // the full ref name followed, e.g. "refs/heads/main"
	Author    Person
	Committer Person
	Message   string
	Time      time.Time // the committer time
	// Signer is the fingerprint (upper-case hex) of the trusted key that
	// signed the commit, when TrustedKeys is set and the commit is signed.
	Signer string
	// FS is a read-only file system over the commit's tree (see
	// [CommitFS]); it is safe for concurrent use and stays valid while the
	// Source fetches newer commits.
	FS fs.FS
	// Fetched is when the fetch that found this revision as the ref's
	// head began, read from this process's clock (with its monotonic
	// reading, so it orders against other time.Now readings of this
	// process whatever the wall clock does). Zero for a revision taken
	// from the local clone ([Source.Revision]). Package reconcile uses it
	// to order heads seen by several replicas.
	Fetched time.Time
}

// Status is what a Source last saw, for readiness checks and the
// management API.
type Status struct {
	SHA         string        // the commit being served; "" before the first good fetch
	LastFetch   time.Time     // when the last fetch ended
	LastReached time.Time     // when the remote last answered
	LastError   error         // nil if the last fetch served a revision
	Refused     *RefusedError // the head currently refused, if any
	Failures    int           // consecutive fetches that could not reach the remote
	Backoff     time.Duration // Run's wait before its next retry; 0 while the remote answers
}

// Source follows one ref of a remote repository. Its methods are safe for
// concurrent use; fetches are serialized.
type Source struct {
	opts     Options
	remote   remote
	auth     transport.AuthMethod
	redact   redactor
	ref      plumbing.ReferenceName // on the remote
	localRef plumbing.ReferenceName // in the clone
	dir      string
	tempDir  bool
	repo     *git.Repository
	verifier *verifier
	log      *slog.Logger

	redeliver atomic.Bool // Run hands over its next head even if unchanged

	fetchMu sync.Mutex // serializes fetches; guards the fields below
	current *Revision
	refused *RefusedError
	known   map[plumbing.Hash]struct{} // accepted commits, closed under ancestry; nil until loaded

	mu     sync.Mutex
	status Status

	packs packIndexes // the clone's pack indexes, for reading blobs (packs.go)
}

const (
	remoteName  = "origin"
	acceptedRef = plumbing.ReferenceName("refs/gitfleet/accepted")
	// servedPrefix names a ref per served commit, so that a commit a
	// controller still serves survives a repack after a force-push (see
	// [Source.Revision]). Only the newest keepServed are kept.
	servedPrefix = plumbing.ReferenceName("refs/gitfleet/served/")
	keepServed   = 16
)

// New checks opts and opens (or creates) the local clone. It does not
// contact the remote.
func New(opts Options) (*Source, error) {
	if opts.PollInterval <= 0 {
		opts.PollInterval = time.Minute
	}
	if opts.FetchTimeout <= 0 {
		opts.FetchTimeout = 30 * time.Second
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = time.Second
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = 5 * time.Minute
	}
	opts.MaxBackoff = max(opts.MaxBackoff, opts.MinBackoff)
	if opts.Clock == nil {
		opts.Clock = systemClock{}
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &Source{opts: opts, redact: redactor(opts.Auth.secrets())}
	s.log = opts.Logger.With("component", "gitsource")

	var err error
	if s.remote, err = parseRemote(opts.URL); err != nil {
		return nil, err
	}
	if s.remote.pass != "" {
		s.redact = append(s.redact, redactor(Auth{Password: s.remote.pass}.secrets())...)
	}
	if s.remote.scheme == "http" && !opts.AllowInsecureHTTP {
		return nil, fmt.Errorf("gitsource: %s: http:// sends the repository and credentials in clear text; use https:// (or set AllowInsecureHTTP)", s.remote.display)
	}
	if s.auth, err = transportAuth(s.remote, &s.opts); err != nil {
		return nil, err
	}
	if s.ref, s.localRef, err = parseRef(opts.Ref); err != nil {
		return nil, err
	}
	if opts.TrustedKeys != "" {
		if s.verifier, err = newVerifier(opts.TrustedKeys, opts.Clock.Now); err != nil {
			return nil, err
		}
	} else if opts.SignedSince != "" {
		return nil, errors.New("gitsource: SignedSince needs TrustedKeys")
	}
	if err := s.openClone(); err != nil {
		if s.tempDir {
			os.RemoveAll(s.dir)
		}
		return nil, err
	}
	return s, nil
}

// parseRef turns Options.Ref into the remote ref and the local ref that
// tracks it.
func parseRef(ref string) (remoteRef, localRef plumbing.ReferenceName, err error) {
	if ref == "" {
		ref = "main"
	}
	name := plumbing.ReferenceName(ref)
	if !strings.HasPrefix(ref, "refs/") {
		name = plumbing.NewBranchReferenceName(ref)
	}
	if err := name.Validate(); err != nil {
		return "", "", fmt.Errorf("gitsource: ref %q: %w", ref, err)
	}
	switch {
	case name.IsBranch():
		return name, plumbing.NewRemoteReferenceName(remoteName, name.Short()), nil
	case name.IsTag():
		return name, name, nil
	}
	return "", "", fmt.Errorf("gitsource: ref %q: want a branch name, refs/heads/… or refs/tags/…", ref)
}

// openClone opens the bare clone in Dir, or creates it, and points its
// remote at the URL (without credentials).
func (s *Source) openClone() error {
	s.dir = s.opts.Dir
	if s.dir == "" {
		d, err := os.MkdirTemp("", "gitsource-")
		if err != nil {
			return fmt.Errorf("gitsource: %w", err)
		}
		s.dir, s.tempDir = d, true
	}
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return fmt.Errorf("gitsource: %w", err)
	}
	repo, err := git.PlainOpen(s.dir)
	if errors.Is(err, git.ErrRepositoryNotExists) {
		entries, rerr := os.ReadDir(s.dir)
		if rerr != nil {
			return fmt.Errorf("gitsource: %w", rerr)
		}
		if len(entries) > 0 {
			return fmt.Errorf("gitsource: Dir %s is neither empty nor a Git repository", s.dir)
		}
		repo, err = git.PlainInitWithOptions(s.dir, &git.PlainInitOptions{Bare: true, InitOptions: git.InitOptions{DefaultBranch: plumbing.Main}})
	}
	if err != nil {
		return fmt.Errorf("gitsource: open clone in %s: %w", s.dir, err)
	}
	s.repo = repo

	cfg, err := repo.Config()
	if err != nil {
		return fmt.Errorf("gitsource: read clone config: %w", err)
	}
	want := &config.RemoteConfig{Name: remoteName, URLs: []string{s.remote.fetch}, Fetch: []config.RefSpec{s.refSpec()}}
	if old, ok := cfg.Remotes[remoteName]; ok && (len(old.URLs) != 1 || old.URLs[0] != s.remote.fetch) {
		// Another repository: what was accepted from it means nothing here.
		if err := repo.Storer.RemoveReference(acceptedRef); err != nil {
			return fmt.Errorf("gitsource: reset accepted commit: %w", err)
		}
		s.log.Info("repository URL changed; signatures are checked afresh", "dir", s.dir, "url", s.remote.display)
	}
	cfg.Remotes[remoteName] = want
	if err := repo.SetConfig(cfg); err != nil {
		return fmt.Errorf("gitsource: write clone config: %w", err)
	}
	return s.compact()
}

// pruneServed keeps the refs of the keepServed most recent served commits
// (by committer time) and deletes the others.
func (s *Source) pruneServed() error {
	refs, err := s.repo.References()
	if err != nil {
		return fmt.Errorf("gitsource: list refs: %w", err)
	}
	type served struct {
		name plumbing.ReferenceName
		when time.Time
	}
	var all []served
	err = refs.ForEach(func(r *plumbing.Reference) error {
		if !strings.HasPrefix(r.Name().String(), servedPrefix.String()) {
			return nil
		}
		var when time.Time // an unreadable commit sorts last and goes
		if c, err := s.repo.CommitObject(r.Hash()); err == nil {
			when = c.Committer.When
		}
		all = append(all, served{r.Name(), when})
		return nil
	})
	if err != nil {
		return fmt.Errorf("gitsource: list refs: %w", err)
	}
	slices.SortFunc(all, func(a, b served) int { return b.when.Compare(a.when) })
	for _, r := range all[min(keepServed, len(all)):] {
		if err := s.repo.Storer.RemoveReference(r.name); err != nil {
			return fmt.Errorf("gitsource: prune %s: %w", r.name, err)
		}
	}
	return nil
}

// maxPacks is how many pack files the clone may gather before New repacks
// it. Every fetch that brings objects adds a pack, and every lookup consults
// each pack's index.
const maxPacks = 32

// compact repacks the clone into one pack, dropping objects no ref reaches
// (such as commits a force-push abandoned). It runs only in New: later,
// revisions being read hold no open files and would lose their packs.
func (s *Source) compact() error {
	pos, ok := s.repo.Storer.(storer.PackedObjectStorer)
	if !ok {
		return nil
	}
	packs, err := pos.ObjectPacks()
	if err != nil {
		return fmt.Errorf("gitsource: list packs: %w", err)
	}
	if len(packs) <= maxPacks {
		return nil
	}
	if err := s.repo.RepackObjects(&git.RepackConfig{}); err != nil {
		return fmt.Errorf("gitsource: repack %d packs: %w", len(packs), err)
	}
	// The storage still indexes the deleted packs: start afresh.
	repo, err := git.PlainOpen(s.dir)
	if err != nil {
		return fmt.Errorf("gitsource: reopen clone after repack: %w", err)
	}
	s.repo = repo
	s.log.Info("repacked the clone", "dir", s.dir, "packs", len(packs))
	return nil
}

func (s *Source) refSpec() config.RefSpec {
	return config.RefSpec("+" + s.ref.String() + ":" + s.localRef.String())
}

// Close releases the Source. It removes the clone if Dir was not set, after
// which the FS of its revisions can no longer be read.
func (s *Source) Close() error {
	s.fetchMu.Lock()
	defer s.fetchMu.Unlock()
	if s.tempDir {
		return os.RemoveAll(s.dir)
	}
	return nil
}

// URL returns the remote URL without credentials or query.
func (s *Source) URL() string { return s.remote.display }

// Ref returns the full name of the followed ref.
func (s *Source) Ref() string { return s.ref.String() }

// Status returns what the Source last saw.
func (s *Source) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.status
}

// Fetch fetches the followed ref into the clone and returns its head. While
// the head does not move, it returns the same Revision (and the same FS) and
// costs one round trip. Errors are an [*UnreachableError] (transient: the
// last good revision stays live, retry later), a [*RefusedError] (stalled:
// wait for another commit), the context's error, or an error of the local
// clone.
func (s *Source) Fetch(ctx context.Context) (Revision, error) {
	s.fetchMu.Lock()
	defer s.fetchMu.Unlock()
	began := time.Now() // not opts.Clock: Fetched orders against time.Now readings
	rev, err := s.fetch(ctx)
	if err == nil {
		rev.Fetched = began
	}

	now := s.opts.Clock.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	st := &s.status
	st.LastFetch, st.LastError = now, err
	var refused *RefusedError
	switch {
	case err == nil:
		st.SHA, st.LastReached, st.Refused, st.Failures = rev.SHA, now, nil, 0
	case errors.As(err, &refused):
		st.LastReached, st.Refused, st.Failures = now, refused, 0
	case errors.Is(err, ErrUnreachable):
		st.Failures++
	}
	return rev, err
}

func (s *Source) fetch(ctx context.Context) (Revision, error) {
	if err := ctx.Err(); err != nil {
		return Revision{}, err
	}
	fctx, cancel := context.WithTimeout(ctx, s.opts.FetchTimeout)
	defer cancel()
	err := s.repo.FetchContext(fctx, &git.FetchOptions{
		RemoteName:      remoteName,
		RemoteURL:       s.remote.fetch,
		RefSpecs:        []config.RefSpec{s.refSpec()},
		Auth:            s.auth,
		Tags:            git.NoTags,
		Force:           true,
		CABundle:        s.opts.CABundle,
		InsecureSkipTLS: s.opts.InsecureSkipTLS,
	})
	if err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate) {
		if ctx.Err() != nil {
			return Revision{}, ctx.Err()
		}
		return Revision{}, s.unreachable(err, fctx.Err() != nil)
	}

	head, err := s.head()
	if err != nil {
		return Revision{}, err
	}
	if s.current != nil && s.current.SHA == head.Hash.String() {
		s.refused = nil
		return *s.current, nil
	}
	if s.refused != nil && s.refused.Head == head.Hash.String() {
		return Revision{}, s.refused
	}

	var signer string
	if s.verifier != nil {
		known, refused, err := s.loadKnown(head)
		if err != nil {
			return Revision{}, err
		}
		if refused == nil {
			signer, refused, err = s.verifier.checkHistory(s.repo, head, known)
			if err != nil {
				return Revision{}, fmt.Errorf("gitsource: check signatures: %w", err)
			}
		}
		if refused != nil {
			s.refused = refused
			return Revision{}, refused
		}
	}

	rev, err := s.revision(head, signer)
	if err != nil {
		return Revision{}, err
	}
	for _, name := range []plumbing.ReferenceName{acceptedRef, servedPrefix + plumbing.ReferenceName(head.Hash.String())} {
		if err := s.repo.Storer.SetReference(plumbing.NewHashReference(name, head.Hash)); err != nil {
			return Revision{}, fmt.Errorf("gitsource: record accepted commit: %w", err)
		}
	}
	if err := s.pruneServed(); err != nil {
		return Revision{}, err
	}
	if s.known != nil {
		if err := addAncestors(s.repo, head.Hash, s.known); err != nil {
			s.known = nil // no longer closed under ancestry: reload next time
			return Revision{}, fmt.Errorf("gitsource: %w", err)
		}
	}
	s.current, s.refused = &rev, nil
	return rev, nil
}

// head resolves the local copy of the followed ref to a commit, peeling
// annotated tags.
func (s *Source) head() (*object.Commit, error) {
	ref, err := s.repo.Reference(s.localRef, true)
	if err != nil {
		return nil, fmt.Errorf("gitsource: read %s after fetch: %w", s.localRef, err)
	}
	h := ref.Hash()
	for range 10 {
		obj, err := s.repo.Object(plumbing.AnyObject, h)
		if err != nil {
			return nil, fmt.Errorf("gitsource: read %s: %w", h, err)
		}
		switch o := obj.(type) {
		case *object.Commit:
			return o, nil
		case *object.Tag:
			h = o.Target
		default:
			return nil, fmt.Errorf("gitsource: %s points at a %s, not a commit", s.ref, obj.Type())
		}
	}
	return nil, fmt.Errorf("gitsource: %s: too many nested tags", s.ref)
}

// loadKnown returns the set of commits accepted before: the ancestors of
// the recorded accepted commit and of SignedSince. It is built once, then
// kept up to date as heads are accepted.
func (s *Source) loadKnown(head *object.Commit) (map[plumbing.Hash]struct{}, *RefusedError, error) {
	if s.known != nil {
		return s.known, nil, nil
	}
	known := map[plumbing.Hash]struct{}{}
	if ref, err := s.repo.Reference(acceptedRef, false); err == nil {
		if err := addAncestors(s.repo, ref.Hash(), known); err != nil {
			return nil, nil, fmt.Errorf("gitsource: read accepted history: %w", err)
		}
	} else if !errors.Is(err, plumbing.ErrReferenceNotFound) {
		return nil, nil, fmt.Errorf("gitsource: read accepted commit: %w", err)
	}
	if s.opts.SignedSince != "" {
		h, err := s.repo.ResolveRevision(plumbing.Revision(s.opts.SignedSince))
		if err == nil {
			err = addAncestors(s.repo, *h, known)
		}
		if err != nil {
			return nil, &RefusedError{Head: head.Hash.String(), Commit: head.Hash.String(),
				Reason: fmt.Sprintf("SignedSince %s is not in the fetched history", s.opts.SignedSince)}, nil
		}
	}
	s.known = known
	return known, nil, nil
}

// revision describes c, with a file system over its tree read through its
// own repository handle, so that later fetches never race with readers.
func (s *Source) revision(c *object.Commit, signer string) (Revision, error) {
	repo, err := s.openReader()
	if err != nil {
		return Revision{}, err
	}
	fsys, _, err := CommitFS(repo, c.Hash.String())
	if err != nil {
		return Revision{}, fmt.Errorf("gitsource: %w", err)
	}
	if t, ok := fsys.(*treeFS); ok {
		t.packs = s.packs.reader(filepath.Join(s.dir, "objects", "pack"))
	}
	return Revision{
		SHA:       c.Hash.String(),
		Ref:       s.ref.String(),
		Author:    Person{Name: c.Author.Name, Email: c.Author.Email, When: c.Author.When},
		Committer: Person{Name: c.Committer.Name, Email: c.Committer.Email, When: c.Committer.When},
		Message:   c.Message,
		Time:      c.Committer.When,
		Signer:    signer,
		FS:        &lockedFS{fsys: fsys},
	}, nil
}

const (
	reasonAuth    = "authentication failed"
	reasonHostKey = "SSH host key not trusted"
)

// unreachable turns a fetch error into an *UnreachableError with a short
// reason and a message free of secrets.
func (s *Source) unreachable(err error, timedOut bool) error {
	var (
		noRef   git.NoMatchingRefSpecError
		keyErr  *knownhosts.KeyError
		unkAuth x509.UnknownAuthorityError
		hostErr x509.HostnameError
		certErr *tls.CertificateVerificationError
		msg     = err.Error()
		reason  = "unreachable"
	)
	switch {
	case timedOut:
		reason = fmt.Sprintf("timed out after %s", s.opts.FetchTimeout)
	case errors.Is(err, transport.ErrAuthenticationRequired), errors.Is(err, transport.ErrAuthorizationFailed),
		strings.Contains(msg, "unable to authenticate"):
		reason = reasonAuth
	case errors.As(err, &keyErr), strings.Contains(msg, "host key mismatch"), strings.Contains(msg, "knownhosts: key is unknown"):
		reason = reasonHostKey
	case errors.As(err, &unkAuth), errors.As(err, &hostErr), errors.As(err, &certErr):
		reason = "TLS certificate not trusted"
	case errors.Is(err, transport.ErrRepositoryNotFound):
		reason = "repository not found"
	case errors.Is(err, transport.ErrEmptyRemoteRepository):
		reason = "remote repository is empty"
	case errors.As(err, &noRef):
		reason = "the remote has no " + s.ref.String()
	}
	return &UnreachableError{Remote: s.remote.display, Ref: s.ref.String(), Reason: reason, Err: err, msg: s.redact.String(msg)}
}
