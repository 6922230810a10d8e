// Package reconcile turns a fetched commit of the fleet repository into the
// controller's live Snapshot.
//
// A reconcile is an ordered list of small steps, stopped at the first error,
// whose outcome is one Result:
//
//  1. load: read every manifest at the commit, validate it against the
//     schema and run the repository's policies (its own policy files in a
//     separate process, under Options.PolicyBudget: a commit whose policies
//     would run for hours is refused when the budget runs out, not waited
//     for); then compile its device configuration (package deviceconfig),
//     resolving every secret with Options.DeviceConfig;
//  2. refuse: a commit with errors, deny violations, secrets this
//     controller cannot resolve (which would give devices half a
//     configuration) or (upstream, in gitsource) a bad signature is
//     recorded as refused, with all its errors, and the previous Snapshot
//     keeps serving — stalled until a new commit arrives;
//  3. go live: the branch head is the desired state, so the store's live
//     commit moves to it forward or back, by a compare-and-set on the live
//     pointer's sequence number (store.Commits.MoveLive). A replica moves
//     it only with a head whose fetch began after the replica read that
//     sequence number; holding an older fetch, it fetches again
//     (Options.Fetch) and decides on the fresh head. So live follows the
//     order in which the store saw heads, never Git ancestry, and
//     replicas that follow Git independently never flap between commits.
//     A revision that was not fetched (Revision.Fetched zero) only follows
//     the store or moves it forward. A move to a commit that does not
//     descend from the previous live commit is a rewind (docs/git-semantics.md);
//  4. record rollouts: rollout generations and settings are written for the
//     live commit (never per device: reconciling does not enumerate the
//     fleet);
//  5. announce: every change goes to the event log with commit, author and
//     what changed: commit.rewound for a rewind, commit.live, and the
//     rollout changes, recorded once per go-live (Event.Occurrence is the
//     live sequence number), so a commit that returns is logged again;
//  6. swap: the new immutable Snapshot replaces the old one atomically.
//
// Transient failures (the store unreachable) leave the Snapshot as it was;
// the caller retries with backoff. Every step is idempotent, so retrying or
// running it on two replicas at once is safe.
package reconcile

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gitfleet/gitfleet/controller/deviceconfig"
	"github.com/gitfleet/gitfleet/controller/gitsource"
	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gitfleet/gitfleet/policies"
	"github.com/gitfleet/gitfleet/schema"
)

// Snapshot is the fleet as declared at one commit, validated. It is never
// modified once published.
type Snapshot struct {
	Commit   store.CommitRecord
	Fleet    *schema.Fleet
	Warnings []string // warn-severity policy violations
	// Config is the commit's device configuration, its secrets
	// resolved: what each device should run (Config.For). Never nil in
	// a Snapshot that Apply made live.
	Config *deviceconfig.Set
}

// Store is what reconciling needs from the store.
type Store interface {
	store.Commits
	store.Generations
	store.EventLog
}

// History answers ancestry questions from the local clone.
type History interface {
	// IsAncestor reports whether commit a is an ancestor of (or equal to)
	// commit b. known is false when a is not in the local clone.
	IsAncestor(a, b string) (is, known bool, err error)
}

// Fetcher fetches the branch head; a [gitsource.Source] is one. When
// Options.History is a Fetcher too, it is Options.Fetch by default.
type Fetcher interface {
	Fetch(ctx context.Context) (gitsource.Revision, error)
}

// Options configure a Reconciler.
type Options struct {
	Store   Store
	History History
	// Fetch fetches the branch head again (default: History's Fetch
	// method, when it has one). Apply calls it when the revision it was
	// given was fetched before another replica moved the live commit, to
	// decide on a fresh head; without it such an Apply returns Behind.
	Fetch  func(ctx context.Context) (gitsource.Revision, error)
	Branch string // recorded in CommitRecord
	Logger *slog.Logger
	Now    func() time.Time // default time.Now
	// DeviceConfig says where the secrets of DeviceConfig manifests are
	// found (the controller's secrets directory, its age identities). A
	// commit with a secret it cannot resolve is refused, every such
	// secret named with the way to fix it.
	DeviceConfig deviceconfig.Options
	// PolicyBudget bounds the evaluation of the repository's own
	// policies at each commit (zero fields: the defaults of
	// policies.Budget). A commit whose policies go over it is refused,
	// naming the policy file, and the next commit is taken as usual.
	PolicyBudget policies.Budget
	// Announcing, when set, is called with the Snapshot about to be
	// served, once its commit is live in the store and before its events
	// are appended (step 5), so that what those events reach
	// (notifications) already follows the new commit. Calls are
	// serialized; a retried Apply may call it again for the same commit.
	Announcing func(snap *Snapshot)
}

// Reconciler applies revisions. It is safe for concurrent use; Apply calls
// are serialized.
type Reconciler struct {
	opts    Options
	live    atomic.Pointer[Snapshot]
	applyMu chan struct{}
	// files caches the validated manifest files of the last commit
	// loaded: the next commit parses only the files it changed.
	files *schema.Cache
	// fetch fetches the branch head again (Options.Fetch); nil when
	// there is no way to.
	fetch func(context.Context) (gitsource.Revision, error)
	// seenSeq is the live pointer's sequence number as this replica last
	// read it, and seenAt when it first read that number (time.Now, with
	// its monotonic reading). A revision fetched after seenAt may move
	// live on from seenSeq. Guarded by applyMu.
	seenSeq int64
	seenAt  time.Time
}

// New returns a Reconciler with no Snapshot yet.
func New(opts Options) *Reconciler {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	r := &Reconciler{opts: opts, applyMu: make(chan struct{}, 1), files: schema.NewCache(), fetch: opts.Fetch}
	if f, ok := opts.History.(Fetcher); ok && r.fetch == nil {
		r.fetch = f.Fetch
	}
	return r
}

// Live returns the Snapshot being served, or nil before the first commit.
func (r *Reconciler) Live() *Snapshot { return r.live.Load() }

// Outcome says what Apply did.
type Outcome string

const (
	Applied   Outcome = "applied"   // the commit is live and this replica serves it
	Unchanged Outcome = "unchanged" // the commit was already served here
	Refused   Outcome = "refused"   // invalid: recorded, previous Snapshot kept
	Behind    Outcome = "behind"    // the store's live commit is newer: fetch again
)

// Result is the outcome of one Apply.
type Result struct {
	Outcome Outcome
	SHA     string
	Errors  []string              // for Refused
	Changes []store.RolloutChange // for Applied
	LiveSHA string                // the store's live commit afterwards
}

// ErrTransient wraps failures worth retrying (the store did not answer).
var ErrTransient = errors.New("reconcile: transient failure")

// maxRefetch bounds the fresh fetches one Apply makes when the store's
// live pointer moved since this replica last looked.
const maxRefetch = 3

// Apply reconciles rev. It returns ErrTransient-wrapped errors when the
// store failed; the Snapshot is then unchanged.
//
// When rev was fetched ([gitsource.Revision.Fetched] set) before this
// replica read the live pointer's current sequence number, rev may be
// older than what another replica made live: Apply then fetches again
// (Options.Fetch) and reconciles the fresh head instead, or returns
// Behind when it cannot fetch. See the package documentation.
func (r *Reconciler) Apply(ctx context.Context, rev gitsource.Revision) (Result, error) {
	select {
	case r.applyMu <- struct{}{}:
		defer func() { <-r.applyMu }()
	case <-ctx.Done():
		return Result{}, ctx.Err()
	}
	if cur := r.live.Load(); cur != nil && cur.Commit.SHA == rev.SHA {
		return Result{Outcome: Unchanged, SHA: rev.SHA, LiveSHA: rev.SHA}, nil
	}
	var snap *Snapshot
	for refetch := 0; ; refetch++ {
		if snap == nil || snap.Commit.SHA != rev.SHA {
			if cur := r.live.Load(); cur != nil && cur.Commit.SHA == rev.SHA {
				// A fresh fetch found the commit served here: no need to
				// load it again.
				s := *cur
				s.Commit.Loaded, s.Commit.Seq = r.opts.Now(), 0
				snap = &s
			} else {
				var res Result
				var err error
				snap, res, err = r.load(ctx, rev)
				if snap == nil {
					return res, err
				}
			}
		}
		res, stale, err := r.publish(ctx, rev, snap)
		if err != nil || !stale {
			return res, err
		}
		if r.fetch == nil || refetch == maxRefetch {
			return res, nil
		}
		fresh, err := r.fetch(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return Result{}, ctx.Err()
			}
			r.opts.Logger.Warn("cannot fetch again to compare with the live commit another replica set", "commit", short(rev.SHA), "err", err)
			return res, nil
		}
		rev = fresh
	}
}

// load runs steps 1 and 2: it returns the Snapshot of rev, or a nil
// Snapshot and the Result (refused) or error to return.
func (r *Reconciler) load(ctx context.Context, rev gitsource.Revision) (*Snapshot, Result, error) {
	log := r.opts.Logger.With("commit", short(rev.SHA))

	// 1. load
	fleet, report, err := policies.ValidateContext(ctx, rev.FS, r.files, r.opts.PolicyBudget)
	switch {
	case err != nil && ctx.Err() != nil:
		return nil, Result{}, ctx.Err()
	case errors.Is(err, policies.ErrEvaluator):
		// The policy evaluator could not run (no process to spare): not
		// the commit's fault.
		return nil, Result{}, fmt.Errorf("%w: %w", ErrTransient, err)
	case err != nil:
		// The tree could not be read at all: a refusal too, with its reason.
		report = &policies.Report{Errors: schema.Errors{{File: ".", Msg: err.Error()}}}
	}

	var errs []string
	var config *deviceconfig.Set
	if report.OK() {
		// Before Compact: its errors point at the secrets' lines.
		var cerr error
		config, cerr = deviceconfig.Compile(fleet, r.opts.DeviceConfig)
		errs = compileErrors(cerr)
	} else {
		errs = reportErrors(report)
	}

	// 2. refuse
	if len(errs) > 0 {
		ref := store.Refusal{SHA: rev.SHA, Author: rev.Author.String(), Time: r.opts.Now(), Errors: errs}
		recorded, err := r.opts.Store.RecordRefused(ctx, ref)
		if err != nil {
			return nil, Result{}, fmt.Errorf("%w: record refused commit %s: %w", ErrTransient, short(rev.SHA), err)
		}
		if recorded {
			msg := fmt.Sprintf("commit %s refused: %d error(s); still serving the previous commit", short(rev.SHA), len(errs))
			if err := r.event(ctx, rev, "commit.refused", rev.SHA, "", msg+"\n"+strings.Join(errs, "\n")); err != nil {
				return nil, Result{}, err
			}
			log.Warn("commit refused", "errors", len(errs), "first_error", errs[0])
		}
		return nil, Result{Outcome: Refused, SHA: rev.SHA, Errors: errs, LiveSHA: r.liveSHA()}, nil
	}
	snap := &Snapshot{Fleet: fleet, Commit: r.record(rev, fleet), Config: config}
	for _, v := range report.Violations {
		snap.Warnings = append(snap.Warnings, v.String())
	}
	// Positions were needed for the errors above; the served snapshot keeps
	// only values (the syntax trees are most of a large fleet's memory, and
	// the collector would scan them on every cycle).
	fleet.Compact()
	return snap, Result{}, nil
}

// publish runs steps 3 to 6 for snap, the Snapshot of rev. stale is true
// when rev was fetched before this replica read the live pointer's
// current sequence number: the caller fetches again.
func (r *Reconciler) publish(ctx context.Context, rev gitsource.Revision, snap *Snapshot) (res Result, stale bool, err error) {
	log := r.opts.Logger.With("commit", short(rev.SHA))

	// 3. go live
	move, err := r.goLive(ctx, rev, snap.Commit)
	if err != nil {
		return Result{}, false, err
	}
	if move.outcome == Behind {
		return Result{Outcome: Behind, SHA: rev.SHA, LiveSHA: move.live.SHA}, move.stale, nil
	}
	snap.Commit.Seq = move.live.Seq

	// 4. record rollouts
	changes, err := r.opts.Store.PutRollouts(ctx, rev.SHA, rolloutRecords(snap.Fleet))
	if errors.Is(err, store.ErrNotLive) {
		// Another replica moved live on between our steps: look again.
		return Result{Outcome: Behind, SHA: rev.SHA}, !rev.Fetched.IsZero(), nil
	}
	if err != nil {
		return Result{}, false, fmt.Errorf("%w: record rollouts: %w", ErrTransient, err)
	}

	// 5. announce
	if r.opts.Announcing != nil {
		r.opts.Announcing(snap)
	}
	occurrence := fmt.Sprintf("live:%d", move.live.Seq)
	if move.rewound != "" {
		if err := r.event(ctx, rev, schema.EventCommitRewound, rev.SHA, occurrence, move.rewound); err != nil {
			return Result{}, false, err
		}
		log.Warn("branch rewound", "from", short(move.prev.SHA), "detail", move.rewound)
	}
	if err := r.event(ctx, rev, schema.EventCommitLive, rev.SHA, occurrence, fmt.Sprintf("commit %s is live: %s", short(rev.SHA), firstLine(rev.Message))); err != nil {
		return Result{}, false, err
	}
	for _, c := range changes {
		if err := r.event(ctx, rev, "rollout."+string(c.Kind), c.Name, occurrence, describe(c)); err != nil {
			return Result{}, false, err
		}
	}

	// 6. swap
	r.live.Store(snap)
	log.Info("commit live", "seq", move.live.Seq, "rollout_changes", len(changes), "warnings", len(snap.Warnings))
	return Result{Outcome: Applied, SHA: rev.SHA, Changes: changes, LiveSHA: rev.SHA}, false, nil
}

// move is what goLive did.
type move struct {
	outcome Outcome
	live    store.CommitRecord // the store's live record afterwards
	prev    store.CommitRecord // the live record this replica moved from
	stale   bool               // Behind because rev was fetched before the last move: fetch again
	rewound string             // set when live moved to a commit that does not descend from prev: what happened
}

// goLive makes rec, the commit of rev, the store's live commit, or finds
// it live already. The rule (see the package documentation): a fetched
// head moves live, forward or back, only when its fetch began after this
// replica read the live pointer's sequence number that the move compares
// with; a revision that was not fetched only follows the store or moves
// forward in Git history.
func (r *Reconciler) goLive(ctx context.Context, rev gitsource.Revision, rec store.CommitRecord) (move, error) {
	for attempt := 0; attempt < 5; attempt++ {
		cur, err := r.opts.Store.Live(ctx)
		switch {
		case errors.Is(err, store.ErrNotFound):
			cur = store.CommitRecord{}
		case err != nil:
			return move{}, fmt.Errorf("%w: read live commit: %w", ErrTransient, err)
		}
		r.observe(cur.Seq)
		if cur.SHA == rec.SHA {
			return move{outcome: Applied, live: cur}, nil // another replica got there first
		}
		if cur.SHA != "" {
			if rev.Fetched.IsZero() {
				is, known, err := r.opts.History.IsAncestor(cur.SHA, rec.SHA)
				if err != nil {
					return move{}, fmt.Errorf("reconcile: compare live %s with %s: %w", short(cur.SHA), short(rec.SHA), err)
				}
				if !known || !is {
					return move{outcome: Behind, live: cur}, nil
				}
			} else if !rev.Fetched.After(r.seenAt) {
				// Fetched before this replica knew of the move to
				// cur.Seq: another replica may have seen a newer head.
				return move{outcome: Behind, live: cur, stale: true}, nil
			}
		}
		live, ok, err := r.opts.Store.MoveLive(ctx, rec, cur.Seq)
		if err != nil {
			return move{}, fmt.Errorf("%w: move live commit to %s: %w", ErrTransient, short(rec.SHA), err)
		}
		r.observe(live.Seq)
		if !ok {
			continue // another replica moved live: decide again
		}
		m := move{outcome: Applied, live: live, prev: cur}
		if cur.SHA != "" && live.Seq == cur.Seq+1 {
			m.rewound, err = r.rewound(cur, rec)
			if err != nil {
				return move{}, err
			}
		}
		return m, nil
	}
	return move{outcome: Behind}, nil
}

// rewound describes the move from prev to next when next does not
// descend from prev, and returns "" when it does.
func (r *Reconciler) rewound(prev, next store.CommitRecord) (string, error) {
	is, known, err := r.opts.History.IsAncestor(prev.SHA, next.SHA)
	if err != nil {
		return "", fmt.Errorf("reconcile: compare live %s with %s: %w", short(prev.SHA), short(next.SHA), err)
	}
	if known && is {
		return "", nil
	}
	branch := r.opts.Branch
	if branch == "" {
		branch = "the branch"
	}
	back, known, err := r.opts.History.IsAncestor(next.SHA, prev.SHA)
	if err != nil {
		return "", fmt.Errorf("reconcile: compare %s with live %s: %w", short(next.SHA), short(prev.SHA), err)
	}
	if known && back {
		return fmt.Sprintf("%s moved back from %s to %s, an older commit; %s is live again (the commits after it are no longer on %s)",
			branch, short(prev.SHA), short(next.SHA), short(next.SHA), branch), nil
	}
	return fmt.Sprintf("%s was force-pushed from %s to %s, which does not contain it; %s is live",
		branch, short(prev.SHA), short(next.SHA), short(next.SHA)), nil
}

// observe records that the live pointer's sequence number was seq at the
// latest now; a fetch that begins later may move it on from seq.
func (r *Reconciler) observe(seq int64) {
	if seq != r.seenSeq || r.seenAt.IsZero() {
		r.seenSeq, r.seenAt = seq, time.Now()
	}
}

func (r *Reconciler) liveSHA() string {
	if s := r.live.Load(); s != nil {
		return s.Commit.SHA
	}
	return ""
}

func (r *Reconciler) record(rev gitsource.Revision, fleet *schema.Fleet) store.CommitRecord {
	counts := map[string]int{}
	for m := range fleet.All() {
		counts[string(m.Metadata().Kind)]++
	}
	return store.CommitRecord{
		SHA: rev.SHA, Branch: r.opts.Branch, Author: rev.Author.String(), Message: firstLine(rev.Message),
		Committed: rev.Time, Loaded: r.opts.Now(), Manifests: counts,
	}
}

func (r *Reconciler) event(ctx context.Context, rev gitsource.Revision, kind, subject, occurrence, msg string) error {
	_, _, err := r.opts.Store.AppendEvent(ctx, store.Event{
		Commit: rev.SHA, Author: rev.Author.String(), Kind: kind, Subject: subject, Message: msg,
		Occurrence: occurrence,
	})
	if err != nil {
		return fmt.Errorf("%w: append event: %w", ErrTransient, err)
	}
	return nil
}

// rolloutRecords turns the fleet's rollouts into store records. A rollout's
// artifact identity is the artifact's name and digest (or source when no
// digest is declared), so new bits under the same name start a new
// generation; everything else in its spec is settings.
func rolloutRecords(fleet *schema.Fleet) []store.RolloutRecord {
	out := make([]store.RolloutRecord, 0, len(fleet.Rollouts))
	for _, ro := range fleet.Rollouts {
		ident := ro.Spec.Artifact
		if a := fleet.Artifact(ro.Spec.Artifact); a != nil {
			ident = a.ArtifactName() + "@" + firstNonEmpty(prefix("sha256:", a.Spec.SHA256), a.Spec.Source)
		}
		spec := ro.Spec
		spec.Artifact = ""
		settings, _ := json.Marshal(spec) // struct fields: deterministic
		out = append(out, store.RolloutRecord{Name: ro.Name, Artifact: ident, Settings: settings})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func describe(c store.RolloutChange) string {
	switch c.Kind {
	case store.RolloutStarted:
		return fmt.Sprintf("rollout %s started: generation %d of %s", c.Name, c.Generation, c.Artifact)
	case store.RolloutArtifact:
		return fmt.Sprintf("rollout %s moved to a new artifact: generation %d of %s", c.Name, c.Generation, c.Artifact)
	case store.RolloutSettings:
		return fmt.Sprintf("rollout %s settings changed (generation %d continues)", c.Name, c.Generation)
	case store.RolloutStopped:
		return fmt.Sprintf("rollout %s stopped (removed from the fleet repository)", c.Name)
	}
	return fmt.Sprintf("rollout %s: %s", c.Name, c.Kind)
}

func reportErrors(r *policies.Report) []string {
	var out []string
	for _, e := range r.Errors {
		out = append(out, e.Error())
	}
	for _, v := range r.Violations {
		if v.Severity == policies.Deny {
			out = append(out, v.String())
		}
	}
	if len(out) == 0 {
		out = append(out, "refused")
	}
	return out
}

// compileErrors lists what deviceconfig.Compile could not do, one line per
// secret.
func compileErrors(err error) []string {
	var es schema.Errors
	switch {
	case err == nil:
		return nil
	case errors.As(err, &es):
		out := make([]string, 0, len(es))
		for _, e := range es {
			out = append(out, e.Error())
		}
		return out
	}
	return []string{err.Error()}
}

func short(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}

func prefix(p, s string) string {
	if s == "" {
		return ""
	}
	return p + s
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}
