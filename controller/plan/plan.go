package plan

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing/object"

	"github.com/gitfleet/gitfleet/controller/gitsource"
	"github.com/gitfleet/gitfleet/policies"
	"github.com/gitfleet/gitfleet/schema"
)

// A Plan is what merging head into base would do.
type Plan struct {
	Base Revision `json:"base"`
	Head Revision `json:"head"`

	// Validation is the validation of the head commit.
	Validation *policies.Report `json:"validation"`

	// Changes are sorted by kind (rollouts first, in the order of
	// [Kinds]) and then by name.
	Changes []Change `json:"changes"`

	// ConfigNow, when the plan was made with a controller to ask, is how
	// the devices run each DeviceConfig of the commit it serves (at
	// ConfigCommit): what the change starts from.
	ConfigNow    []ConfigStatus `json:"config_now,omitempty"`
	ConfigCommit string         `json:"config_commit,omitempty"`
}

// ConfigStatus is how many of the devices a DeviceConfig applies to run
// the configuration the served commit gives them.
type ConfigStatus struct {
	Name    string `json:"name"`
	Targets int    `json:"targets"`
	InSync  int    `json:"in_sync"`
	Pending int    `json:"pending"`
	Drifted int    `json:"drifted"`
	Failed  int    `json:"failed"`
}

// String says it in words: "998 of 1000 devices in sync, 1 pending, 0
// drifted, 1 failed".
func (c ConfigStatus) String() string {
	return fmt.Sprintf("%d of %d devices in sync, %d pending, %d drifted, %d failed", c.InSync, c.Targets, c.Pending, c.Drifted, c.Failed)
}

// A Revision is one side of a plan.
type Revision struct {
	Rev     string `json:"rev"`               // as the user wrote it: main, HEAD~1, a SHA
	Commit  string `json:"commit,omitempty"`  // full SHA
	Subject string `json:"subject,omitempty"` // first line of the commit message
}

// Short returns "rev (abcdef1)", or what of it is known.
func (r Revision) Short() string {
	c := r.Commit
	if len(c) > 7 {
		c = c[:7]
	}
	switch {
	case c == "":
		return r.Rev
	case r.Rev == "" || strings.HasPrefix(r.Commit, r.Rev):
		return c
	}
	return fmt.Sprintf("%s (%s)", r.Rev, c)
}

// An Action is something a change does, in a reviewer's words.
type Action string

// The actions. A change may carry several (a rollout promoted and
// retargeted in one commit).
const (
	Started       Action = "started"        // a rollout appears and admits devices
	Stopped       Action = "stopped"        // a rollout disappears: nobody new is admitted
	NewGeneration Action = "new-generation" // a rollout delivers another artifact
	Paused        Action = "paused"
	Resumed       Action = "resumed"
	Promoted      Action = "promoted"   // a phase was approved
	Unapproved    Action = "unapproved" // a phase approval was withdrawn
	Accepted      Action = "accepted"   // a device may now authenticate
	Added         Action = "added"
	Changed       Action = "changed"
	Removed       Action = "removed"
)

// A Change is one manifest that differs between base and head.
type Change struct {
	Kind    schema.Kind `json:"kind"`
	Name    string      `json:"name"`
	Actions []Action    `json:"actions"`

	// Summary is one sentence saying what the change does.
	Summary string `json:"summary"`

	// Details has one line per thing that changed, such as
	// `phase "canary": percent 5 → 10`.
	Details []string `json:"details,omitempty"`

	// Targets are the devices the change reaches, when the manifest has a
	// target (rollouts, groups, checks, configs, devices).
	Targets *Targets `json:"targets,omitempty"`

	// File and Line locate the manifest in head, or in base when it was
	// removed.
	File string `json:"file"`
	Line int    `json:"line,omitempty"`

	// Count is how many manifests the change stands for, when more than
	// one: the devices of a device-list file that one action changed
	// (Name is then the file, and Details names the first few).
	Count int `json:"count,omitempty"`
}

// Has reports whether c carries action a.
func (c *Change) Has(a Action) bool { return slices.Contains(c.Actions, a) }

// KindPolicy is the kind of a change to the policies a fleet selects: a
// built-in pack (named "pack NAME") or one of the repository's policy
// files (named by its path). It is not a manifest kind.
const KindPolicy schema.Kind = "Policy"

// Kinds is the order in which a plan lists changes: what acts on devices
// first, the rules last.
func Kinds() []schema.Kind {
	return []schema.Kind{
		schema.KindRollout, schema.KindArtifact, schema.KindDevice, schema.KindDeviceGroup,
		schema.KindDeviceConfig, schema.KindMonitorCheck, schema.KindSigningKey, schema.KindNotification,
		schema.KindDeviceCA, schema.KindOperator, KindPolicy,
	}
}

// An Input is what a plan compares.
type Input struct {
	Base, Head           Revision
	BaseFleet, HeadFleet *schema.Fleet // nil for a commit without manifests

	// BasePolicies and HeadPolicies are the policy selections at both
	// commits (see policies.Select); zero when unknown.
	BasePolicies, HeadPolicies policies.Selection

	// Validation is that of the head commit; nil when not validated.
	Validation *policies.Report
}

// New compares in.BaseFleet with in.HeadFleet, and the policies they
// select.
func New(in Input) *Plan {
	base, head := in.BaseFleet, in.HeadFleet
	if base == nil {
		base = new(schema.Fleet)
	}
	if head == nil {
		head = new(schema.Fleet)
	}
	validation := in.Validation
	if validation == nil {
		validation = new(policies.Report)
	}
	p := &Plan{Base: in.Base, Head: in.Head, Validation: validation, Changes: diff(base, head)}
	p.Changes = append(p.Changes, policyChanges(in.BasePolicies, in.HeadPolicies)...)
	order := Kinds()
	slices.SortStableFunc(p.Changes, func(a, b Change) int {
		return cmp.Or(
			cmp.Compare(slices.Index(order, a.Kind), slices.Index(order, b.Kind)),
			cmp.Compare(a.Name, b.Name),
		)
	})
	return p
}

// Between plans the merge of headRev into baseRev of repo, reading both
// commits (never the work tree) and validating the head. The base is
// loaded leniently: whatever of it is valid is compared.
func Between(repo *git.Repository, baseRev, headRev string) (*Plan, error) {
	return BetweenContext(context.Background(), repo, baseRev, headRev, policies.Budget{})
}

// BetweenContext is Between with the head's own policies evaluated under
// budget b (see policies.Budget), stopped when ctx ends.
func BetweenContext(ctx context.Context, repo *git.Repository, baseRev, headRev string, b policies.Budget) (*Plan, error) {
	baseFS, baseCommit, err := gitsource.CommitFS(repo, baseRev)
	if err != nil {
		return nil, fmt.Errorf("base: %w", err)
	}
	headFS, headCommit, err := gitsource.CommitFS(repo, headRev)
	if err != nil {
		return nil, fmt.Errorf("head: %w", err)
	}
	baseFleet, err := loadLenient(baseFS)
	if err != nil {
		return nil, fmt.Errorf("base %s: %w", baseRev, err)
	}
	headFleet, report, err := policies.ValidateContext(ctx, headFS, nil, b)
	if err != nil {
		return nil, fmt.Errorf("head %s: %w", headRev, err)
	}
	return New(Input{
		Base:         revision(baseRev, baseCommit),
		Head:         revision(headRev, headCommit),
		BaseFleet:    baseFleet,
		HeadFleet:    headFleet,
		BasePolicies: policies.Select(baseFS),
		HeadPolicies: policies.Select(headFS),
		Validation:   report,
	}), nil
}

// loadLenient loads what it can of fsys: the errors of a base commit are
// not the pull request's business.
func loadLenient(fsys fs.FS) (*schema.Fleet, error) {
	fleet, err := schema.Load(fsys)
	var errs schema.Errors
	if err != nil && !errors.As(err, &errs) {
		return nil, err
	}
	return fleet, nil
}

func revision(rev string, c *object.Commit) Revision {
	subject, _, _ := strings.Cut(strings.TrimSpace(c.Message), "\n")
	return Revision{Rev: rev, Commit: c.Hash.String(), Subject: subject}
}
