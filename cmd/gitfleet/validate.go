package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/gitfleet/gitfleet/policies"
	"github.com/gitfleet/gitfleet/schema"
)

func newValidateCmd() *cobra.Command {
	var (
		format string
		budget policies.Budget
	)
	cmd := &cobra.Command{
		Use:   "validate [DIR]",
		Short: "Check a fleet repository against the schema and its policies",
		Long: `Validate loads every manifest of the fleet repository in DIR (default: the
current directory), checks it against the schema and cross-checks the fleet,
then runs the policies the repository selects (policies/packs.yaml) and its
own policies/*.cue.

Every error and violation is printed with its file:line. The exit status is 1
when there is an error or a violation of a deny policy, 0 otherwise:
warnings are printed and pass.

The repository's own policies/*.cue run in a separate process under a budget
(--policy-timeout, --policy-memory, --policy-output; the defaults are the
controller's): a policy over it is an error naming its file, as the
controller would refuse the commit.

Formats:
  text    one problem per line, then a summary (default)
  json    {"ok", "errors": [...], "violations": [...]}
  github  GitHub Actions annotations (::error file=F,line=L,col=C::msg), so
          problems show on the lines of the pull request`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir := "."
			if len(args) == 1 {
				dir = args[0]
			}
			switch format {
			case "text", "json", "github":
			default:
				return fmt.Errorf("--format: unknown format %q (want text, json or github)", format)
			}
			if err := checkBudget(budget); err != nil {
				return err
			}
			fi, err := os.Stat(dir)
			if err != nil {
				return err
			}
			if !fi.IsDir() {
				return fmt.Errorf("%s is not a directory", dir)
			}
			fleet, report, err := policies.ValidateContext(cmd.Context(), os.DirFS(dir), nil, budget)
			if err != nil {
				return fmt.Errorf("validate %s: %w", dir, err)
			}
			warnExpiredOperators(fleet, report, time.Now())
			relocate(report, dir)
			out := cmd.OutOrStdout()
			switch format {
			case "text":
				err = writeValidateText(out, report, fleet.Len())
			case "json":
				err = writeValidateJSON(out, report)
			case "github":
				err = writeValidateGitHub(out, report, fleet.Len())
			}
			if err != nil {
				return err
			}
			if !report.OK() {
				return &exitError{code: 1, err: fmt.Errorf("%s: validation %s", dir, report.Summary())}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&format, "format", "text", "output `format`: text, json or github")
	addBudgetFlags(cmd.Flags(), &budget)
	return cmd
}

// relocate makes the paths of r relative to the current directory rather
// than to dir, so that they can be opened (and GitHub can place
// annotations) from where the command ran.
func relocate(r *policies.Report, dir string) {
	prefix := filepath.ToSlash(filepath.Clean(dir))
	if prefix == "." {
		return
	}
	move := func(file string) string {
		if file == "" || strings.HasPrefix(file, "(") { // "(built-in)/pack.cue"
			return file
		}
		return path.Join(prefix, file)
	}
	for _, e := range r.Errors {
		e.File = move(e.File)
	}
	for i := range r.Violations {
		r.Violations[i].File = move(r.Violations[i].File)
	}
}

func writeValidateText(w io.Writer, r *policies.Report, manifests int) error {
	var b strings.Builder
	for _, e := range r.Errors {
		fmt.Fprintf(&b, "%s\n", e)
	}
	for _, v := range r.Violations {
		fmt.Fprintf(&b, "%s\n", v.String())
	}
	fmt.Fprintf(&b, "%s: validation %s\n", manifestCount(manifests), r.Summary())
	_, err := io.WriteString(w, b.String())
	return err
}

func writeValidateJSON(w io.Writer, r *policies.Report) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(r)
}

// writeValidateGitHub writes one workflow command per problem
// (https://docs.github.com/actions/reference/workflow-commands-for-github-actions),
// then the summary as a plain line.
func writeValidateGitHub(w io.Writer, r *policies.Report, manifests int) error {
	var b strings.Builder
	for _, e := range r.Errors {
		msg := e.Msg
		if e.Path != "" {
			msg = e.Path + ": " + msg
		}
		b.WriteString(annotation("error", schema.Source{File: e.File, Line: e.Line, Col: e.Col}, "gitfleet validate", msg))
	}
	for _, v := range r.Violations {
		level := "error"
		if v.Severity == policies.Warn {
			level = "warning"
		}
		msg := v.Message
		if v.Path != "" {
			msg = v.Path + ": " + msg
		}
		b.WriteString(annotation(level, schema.Source{File: v.File, Line: v.Line, Col: v.Col}, "policy "+v.Policy, msg))
	}
	fmt.Fprintf(&b, "%s: validation %s\n", manifestCount(manifests), r.Summary())
	_, err := io.WriteString(w, b.String())
	return err
}

// annotation formats a GitHub workflow command such as
// "::error file=a.yaml,line=3,col=5,title=t::message".
func annotation(level string, at schema.Source, title, msg string) string {
	props := []string{}
	if at.File != "" {
		props = append(props, "file="+escapeProperty(at.File))
	}
	if at.Line > 0 {
		props = append(props, "line="+strconv.Itoa(at.Line))
	}
	if at.Col > 0 {
		props = append(props, "col="+strconv.Itoa(at.Col))
	}
	props = append(props, "title="+escapeProperty(title))
	return fmt.Sprintf("::%s %s::%s\n", level, strings.Join(props, ","), escapeData(msg))
}

// escapeData and escapeProperty escape as GitHub's toolkit does
// (@actions/core command.ts).
func escapeData(s string) string {
	return strings.NewReplacer("%", "%25", "\r", "%0D", "\n", "%0A").Replace(s)
}

func escapeProperty(s string) string {
	return strings.NewReplacer("%", "%25", "\r", "%0D", "\n", "%0A", ":", "%3A", ",", "%2C").Replace(s)
}

// manifestCount writes "1 manifest" or "n manifests".
func manifestCount(n int) string {
	if n == 1 {
		return "1 manifest"
	}
	return fmt.Sprintf("%d manifests", n)
}

// warnExpiredOperators adds a warning for each Operator whose expires has
// passed: it validates (time passing must not block a commit) but grants
// nothing.
func warnExpiredOperators(f *schema.Fleet, r *policies.Report, now time.Time) {
	if f == nil {
		return
	}
	for i := range f.Operators {
		o := &f.Operators[i]
		if !o.Expired(now) {
			continue
		}
		at := o.Pos("spec.expires")
		r.Violations = append(r.Violations, policies.Violation{Policy: "operator-expired", Severity: policies.Warn,
			File: at.File, Line: at.Line, Col: at.Col, Kind: o.Kind, Name: o.Name, Path: "spec.expires",
			Message: fmt.Sprintf("operator %s expired on %s: it grants nothing and cannot log in; extend spec.expires or remove the Operator", o.Name, o.ExpiresAt().UTC().Format(time.RFC3339))})
	}
}
