package policies

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"strings"

	"github.com/gitfleet/gitfleet/schema"
)

// A Report is the outcome of validating a fleet repository: what the
// schema found wrong, and what the policies found.
type Report struct {
	// Errors holds the schema's errors and the problems in policy files.
	Errors     schema.Errors
	Violations []Violation
}

// Validate loads the fleet repository in fsys with [schema.Load] and runs
// its policies over what loaded. The fleet is nil only when err is not:
// err is for failures to read the tree at all, never for a problem in it.
func Validate(fsys fs.FS) (*schema.Fleet, *Report, error) { return ValidateCached(fsys, nil) }

// ValidateCached is Validate with [schema.LoadCached] and cache c, for
// callers that validate one repository commit after commit.
func ValidateCached(fsys fs.FS, c *schema.Cache) (*schema.Fleet, *Report, error) {
	return ValidateContext(context.Background(), fsys, c, Budget{})
}

// ValidateContext is ValidateCached with the repository's policies
// evaluated under budget b (see [CheckContext]). A policy file over its
// budget is an error of the Report; err is also ctx's error when ctx
// ended, or wraps [ErrEvaluator] when the evaluator could not run.
func ValidateContext(ctx context.Context, fsys fs.FS, c *schema.Cache, b Budget) (*schema.Fleet, *Report, error) {
	r := new(Report)
	fleet, err := schema.LoadCached(fsys, c)
	if err != nil {
		if !errors.As(err, &r.Errors) {
			return nil, nil, fmt.Errorf("load fleet: %w", err)
		}
	}
	if fleet == nil {
		fleet = new(schema.Fleet)
	}
	vs, err := CheckContext(ctx, fsys, fleet, b)
	r.Violations = vs
	if err != nil {
		var errs schema.Errors
		if !errors.As(err, &errs) {
			return nil, nil, fmt.Errorf("check policies: %w", err)
		}
		r.Errors = append(r.Errors, errs...)
	}
	return fleet, r, nil
}

// OK reports whether r lets the fleet through: no error and no violation
// of a deny policy. Warnings pass.
func (r *Report) OK() bool {
	return len(r.Errors) == 0 && r.Count(Deny) == 0
}

// Count returns the number of violations of severity s.
func (r *Report) Count(s Severity) int {
	n := 0
	for _, v := range r.Violations {
		if v.Severity == s {
			n++
		}
	}
	return n
}

// Summary says what validation concluded, with counts: "passed",
// "passed: 1 warning", "failed: 1 error, 2 policy denials".
func (r *Report) Summary() string {
	var parts []string
	count := func(n int, what string) {
		if n == 1 {
			parts = append(parts, "1 "+what)
		} else if n > 1 {
			parts = append(parts, fmt.Sprintf("%d %ss", n, what))
		}
	}
	count(len(r.Errors), "error")
	count(r.Count(Deny), "policy denial")
	count(r.Count(Warn), "warning")
	v := "passed"
	if !r.OK() {
		v = "failed"
	}
	if len(parts) > 0 {
		v += ": " + strings.Join(parts, ", ")
	}
	return v
}

// reportJSON is the JSON shape of a Report; its field names are stable.
type reportJSON struct {
	OK         bool        `json:"ok"`
	Errors     []errorJSON `json:"errors"`
	Violations []Violation `json:"violations"`
}

type errorJSON struct {
	File    string `json:"file"`
	Line    int    `json:"line,omitempty"`
	Col     int    `json:"col,omitempty"`
	Path    string `json:"path,omitempty"`
	Message string `json:"message"`
}

// MarshalJSON encodes r as {"ok", "errors", "violations"}; both lists are
// present even when empty.
func (r *Report) MarshalJSON() ([]byte, error) {
	out := reportJSON{OK: r.OK(), Errors: []errorJSON{}, Violations: r.Violations}
	for _, e := range r.Errors {
		out.Errors = append(out.Errors, errorJSON{e.File, e.Line, e.Col, e.Path, e.Msg})
	}
	if out.Violations == nil {
		out.Violations = []Violation{}
	}
	return json.Marshal(out)
}

// UnmarshalJSON decodes what MarshalJSON encodes.
func (r *Report) UnmarshalJSON(b []byte) error {
	var in reportJSON
	if err := json.Unmarshal(b, &in); err != nil {
		return err
	}
	*r = Report{Violations: in.Violations}
	for _, e := range in.Errors {
		r.Errors = append(r.Errors, &schema.Error{File: e.File, Line: e.Line, Col: e.Col, Path: e.Path, Msg: e.Message})
	}
	return nil
}
