package policies

import (
	"cmp"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strings"

	"github.com/gitfleet/gitfleet/schema"
)

// A Severity says what a violation does to validation.
type Severity string

// The severities.
const (
	Deny Severity = "deny" // the violation fails validation
	Warn Severity = "warn" // the violation is reported and passes
)

// A Violation is one manifest breaking one policy.
type Violation struct {
	// Policy is "pack/policy" for a built-in policy and the policy's name
	// for one of the repository's own.
	Policy   string   `json:"policy"`
	Severity Severity `json:"severity"`

	// File, Line and Col locate the manifest (or, with Path, its field);
	// for a violation of the fleet as a whole, the policy's declaration.
	File string `json:"file"`
	Line int    `json:"line,omitempty"`
	Col  int    `json:"col,omitempty"`

	// Kind and Name identify the manifest; both are empty for a violation
	// of the fleet as a whole.
	Kind schema.Kind `json:"kind,omitempty"`
	Name string      `json:"name,omitempty"`

	Path    string `json:"path,omitempty"` // the field at fault, may be empty
	Message string `json:"message"`
}

// String formats v as "file:line:col: severity: path: message (policy)".
func (v *Violation) String() string {
	var b strings.Builder
	b.WriteString(schema.Source{File: v.File, Line: v.Line, Col: v.Col}.String())
	fmt.Fprintf(&b, ": %s: ", v.Severity)
	if v.Path != "" {
		b.WriteString(v.Path)
		b.WriteString(": ")
	}
	fmt.Fprintf(&b, "%s (%s)", v.Message, v.Policy)
	return b.String()
}

// Dir is the folder of a fleet repository that holds its policy files and
// ConfigFile.
const Dir = "policies"

// ConfigFile is the path, in a fleet repository, of the file that selects
// built-in packs.
const ConfigFile = Dir + "/packs.yaml"

//go:embed packs/*.cue
var packFS embed.FS

// Packs returns the names of the built-in packs, sorted.
func Packs() []string {
	entries, _ := fs.ReadDir(packFS, "packs")
	var names []string
	for _, e := range entries {
		names = append(names, strings.TrimSuffix(e.Name(), ".cue"))
	}
	return names
}

// Check runs the policies the fleet repository in fsys selects (its
// ConfigFile and its policies/*.cue files) against fleet, which is what
// [schema.Load] returned for the same tree; fleet may be partial. It is
// CheckContext with the default budget.
func Check(fsys fs.FS, fleet *schema.Fleet) ([]Violation, error) {
	return CheckContext(context.Background(), fsys, fleet, Budget{})
}

// CheckContext runs the policies the fleet repository in fsys selects
// against fleet. The built-in packs run in this process; the repository's
// own policy files run in a separate process under budget b (see
// [Budget]).
//
// Violations are sorted by file and position. When a policy cannot run (a
// malformed ConfigFile, a policy file that does not compile, whose
// violations do not evaluate, or that goes over the budget), err is a
// [schema.Errors] pointing into the policies folder, and the violations of
// every other policy are still returned. Otherwise err is ctx's error when
// ctx ended, or wraps [ErrEvaluator] when the evaluator could not run.
func CheckContext(ctx context.Context, fsys fs.FS, fleet *schema.Fleet, b Budget) ([]Violation, error) {
	cfg, files, errs, err := readSources(fsys)
	if err != nil {
		return nil, err
	}
	if len(files) == 0 && len(cfg.packs) == 0 {
		return nil, orNil(errs) // nothing to evaluate: no pass over the fleet
	}
	ms := metas(fleet)
	var vs []Violation
	if len(files) > 0 {
		fvs, ferrs, err := sandbox(ctx, files, fleet, ms, b)
		if err != nil {
			return nil, err
		}
		vs = append(vs, fvs...)
		errs = append(errs, ferrs...)
	}
	if len(cfg.packs) > 0 {
		// Built-in packs are this program's own code, bounded by the
		// size of the fleet (see BenchmarkCheck): no process needed.
		ev := newEvaluator(fleetCollections(fleet, ms))
		for _, p := range cfg.packs {
			src, err := packFS.ReadFile(path.Join("packs", p.name+".cue"))
			if err != nil {
				return nil, fmt.Errorf("read built-in pack %s: %w", p.name, err)
			}
			pvs, perrs := ev.run(policyFile{
				file:     "(built-in)/" + p.name + ".cue",
				pack:     p.name,
				src:      src,
				severity: p.severity,
			}, nil)
			vs = append(vs, pvs...)
			errs = append(errs, perrs...)
		}
	}
	locate(vs, ms)
	slices.SortStableFunc(vs, func(a, b Violation) int {
		return cmp.Or(
			cmp.Compare(a.File, b.File),
			cmp.Compare(a.Line, b.Line),
			cmp.Compare(a.Col, b.Col),
			cmp.Compare(a.Policy, b.Policy),
			cmp.Compare(a.Message, b.Message),
		)
	})
	return vs, orNil(errs)
}

// readSources reads the pack selection and the policy files of the
// repository in fsys. Problems in them are returned in errs; err is for
// failures to read the tree at all.
func readSources(fsys fs.FS) (cfg config, files []policyFile, errs schema.Errors, err error) {
	fi, err := fs.Lstat(fsys, Dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return config{}, nil, nil, nil // nothing selected, nothing of its own
	case err != nil:
		return config{}, nil, nil, fmt.Errorf("read %s: %w", Dir, err)
	case !fi.IsDir():
		return config{}, nil, schema.Errors{{File: Dir, Msg: "not a directory (symbolic links are not followed)"}}, nil
	}
	if cfg, err = readConfig(fsys); err != nil {
		return config{}, nil, nil, err
	}
	files, errs = readPolicyFiles(fsys)
	return cfg, files, append(cfg.errs, errs...), nil
}

// A Selection is what a fleet repository asks of policies: the built-in
// packs it selects and its own policy files. It lets a reviewer see a
// change to the rules themselves.
type Selection struct {
	// Packs maps each selected pack to the severity it is forced to, or
	// to "" when its policies keep their own.
	Packs map[string]Severity `json:"packs"`

	// Files maps each of the repository's policy files to the sha256 of
	// its content, in hex.
	Files map[string]string `json:"files"`
}

// Select returns the Selection of the repository in fsys. What cannot be
// read is left out: Check reports it.
func Select(fsys fs.FS) Selection {
	sel := Selection{Packs: map[string]Severity{}, Files: map[string]string{}}
	cfg, files, _, err := readSources(fsys)
	if err != nil {
		return sel
	}
	for _, p := range cfg.packs {
		sel.Packs[p.name] = p.severity
	}
	for _, f := range files {
		sum := sha256.Sum256(f.src)
		sel.Files[f.file] = hex.EncodeToString(sum[:])
	}
	return sel
}

// orNil returns errs sorted by position without repeats (CUE reports an
// error in a comprehension once per iteration), or nil when it is empty.
func orNil(errs schema.Errors) error {
	if len(errs) == 0 {
		return nil
	}
	slices.SortStableFunc(errs, func(a, b *schema.Error) int {
		return cmp.Or(
			cmp.Compare(a.File, b.File),
			cmp.Compare(a.Line, b.Line),
			cmp.Compare(a.Col, b.Col),
		)
	})
	return slices.CompactFunc(errs, func(a, b *schema.Error) bool { return *a == *b })
}
