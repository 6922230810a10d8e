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
//  3. go live: the store's live commit moves to this commit by a
//     compare-and-set, only forward in Git history, so replicas that follow
//     Git independently never move it back;
//  4. record rollouts: rollout generations and settings are written for the
//     live commit (never per device: reconciling does not enumerate the
//     fleet);
//  5. announce: every change goes to the event log with commit, author and
//     what changed;
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

// Options configure a Reconciler.
type Options struct {
	Store   Store
	History History
	Branch  string // recorded in CommitRecord
	Logger  *slog.Logger
	Now     func() time.Time // default time.Now
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
	// unknownLive remembers a live SHA missing from the local clone, so a
	// second fetch of the same head that still lacks it is taken as a
	// force-push rather than as being behind.
	unknownLive string
}

// New returns a Reconciler with no Snapshot yet.
func New(opts Options) *Reconciler {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Reconciler{opts: opts, applyMu: make(chan struct{}, 1), files: schema.NewCache()}
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

// Apply reconciles rev. It returns ErrTransient-wrapped errors when the
// store failed; the Snapshot is then unchanged.
func (r *Reconciler) Apply(ctx context.Context, rev gitsource.Revision) (Result, error) {
	select {
	case r.applyMu <- struct{}{}:
		defer func() { <-r.applyMu }()
	case <-ctx.Done():
		return Result{}, ctx.Err()
	}
	log := r.opts.Logger.With("commit", short(rev.SHA))
	if cur := r.live.Load(); cur != nil && cur.Commit.SHA == rev.SHA {
		return Result{Outcome: Unchanged, SHA: rev.SHA, LiveSHA: rev.SHA}, nil
	}

	// 1. load
	fleet, report, err := policies.ValidateContext(ctx, rev.FS, r.files, r.opts.PolicyBudget)
	switch {
	case err != nil && ctx.Err() != nil:
		return Result{}, ctx.Err()
	case errors.Is(err, policies.ErrEvaluator):
		// The policy evaluator could not run (no process to spare): not
		// the commit's fault.
		return Result{}, fmt.Errorf("%w: %w", ErrTransient, err)
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
			return Result{}, fmt.Errorf("%w: record refused commit %s: %w", ErrTransient, short(rev.SHA), err)
		}
		if recorded {
			msg := fmt.Sprintf("commit %s refused: %d error(s); still serving the previous commit", short(rev.SHA), len(errs))
			if err := r.event(ctx, rev, "commit.refused", rev.SHA, msg+"\n"+strings.Join(errs, "\n")); err != nil {
				return Result{}, err
			}
			log.Warn("commit refused", "errors", len(errs), "first_error", errs[0])
		}
		return Result{Outcome: Refused, SHA: rev.SHA, Errors: errs, LiveSHA: r.liveSHA()}, nil
	}
	snap := &Snapshot{Fleet: fleet, Commit: r.record(rev, fleet), Config: config}
	for _, v := range report.Violations {
		snap.Warnings = append(snap.Warnings, v.String())
	}
	// Positions were needed for the errors above; the served snapshot keeps
	// only values (the syntax trees are most of a large fleet's memory, and
	// the collector would scan them on every cycle).
	fleet.Compact()

	// 3. go live
	outcome, liveSHA, err := r.goLive(ctx, snap.Commit)
	if err != nil || outcome == Behind {
		return Result{Outcome: outcome, SHA: rev.SHA, LiveSHA: liveSHA}, err
	}

	// 4. record rollouts
	changes, err := r.opts.Store.PutRollouts(ctx, rev.SHA, rolloutRecords(fleet))
	if errors.Is(err, store.ErrNotLive) {
		// Another replica moved live on between our steps: fetch again.
		return Result{Outcome: Behind, SHA: rev.SHA}, nil
	}
	if err != nil {
		return Result{}, fmt.Errorf("%w: record rollouts: %w", ErrTransient, err)
	}

	// 5. announce
	if r.opts.Announcing != nil {
		r.opts.Announcing(snap)
	}
	if err := r.event(ctx, rev, "commit.live", rev.SHA, fmt.Sprintf("commit %s is live: %s", short(rev.SHA), firstLine(rev.Message))); err != nil {
		return Result{}, err
	}
	for _, c := range changes {
		if err := r.event(ctx, rev, "rollout."+string(c.Kind), c.Name, describe(c)); err != nil {
			return Result{}, err
		}
	}

	// 6. swap
	r.live.Store(snap)
	log.Info("commit live", "rollout_changes", len(changes), "warnings", len(snap.Warnings))
	return Result{Outcome: Applied, SHA: rev.SHA, Changes: changes, LiveSHA: rev.SHA}, nil
}

// goLive moves the store's live commit to rec when rec descends from it.
func (r *Reconciler) goLive(ctx context.Context, rec store.CommitRecord) (Outcome, string, error) {
	for attempt := 0; attempt < 5; attempt++ {
		cur, err := r.opts.Store.Live(ctx)
		prev := cur.SHA
		switch {
		case errors.Is(err, store.ErrNotFound):
			prev = ""
		case err != nil:
			return "", "", fmt.Errorf("%w: read live commit: %w", ErrTransient, err)
		case cur.SHA == rec.SHA:
			return Applied, rec.SHA, nil // another replica got there first
		default:
			is, known, err := r.opts.History.IsAncestor(rec.SHA, cur.SHA)
			if err != nil {
				return "", "", fmt.Errorf("reconcile: compare %s with live %s: %w", short(rec.SHA), short(cur.SHA), err)
			}
			if known && is {
				return Behind, cur.SHA, nil // we hold an older commit than live
			}
			_, liveKnown, err := r.opts.History.IsAncestor(cur.SHA, rec.SHA)
			if err != nil {
				return "", "", err
			}
			if !liveKnown && r.unknownLive != cur.SHA {
				// Live is a commit we have never fetched: most likely newer.
				r.unknownLive = cur.SHA
				return Behind, cur.SHA, nil
			}
			// rec descends from live, or live was force-pushed away.
		}
		ok, err := r.opts.Store.SetLive(ctx, rec, prev)
		if err != nil {
			return "", "", fmt.Errorf("%w: set live commit: %w", ErrTransient, err)
		}
		if ok {
			r.unknownLive = ""
			return Applied, rec.SHA, nil
		}
	}
	return Behind, "", nil
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

func (r *Reconciler) event(ctx context.Context, rev gitsource.Revision, kind, subject, msg string) error {
	_, _, err := r.opts.Store.AppendEvent(ctx, store.Event{
		Commit: rev.SHA, Author: rev.Author.String(), Kind: kind, Subject: subject, Message: msg,
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
