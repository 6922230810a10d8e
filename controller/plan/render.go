package plan

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/gitfleet/gitfleet/policies"
	"github.com/gitfleet/gitfleet/schema"
)

// Formats lists the output formats of [Plan.Write].
func Formats() []string { return []string{"text", "markdown", "json"} }

// Write renders p in format, one of [Formats].
func (p *Plan) Write(w io.Writer, format string) error {
	switch format {
	case "text":
		return p.WriteText(w)
	case "markdown":
		return p.WriteMarkdown(w)
	case "json":
		return p.WriteJSON(w)
	}
	return fmt.Errorf("unknown format %q (want %s)", format, strings.Join(Formats(), ", "))
}

// WriteJSON writes p as indented JSON.
func (p *Plan) WriteJSON(w io.Writer) error {
	out := *p
	if out.Changes == nil {
		out.Changes = []Change{}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(&out)
}

// nouns names kind k in the singular and the plural.
func nouns(k schema.Kind) (one, many string) {
	switch k {
	case schema.KindRollout:
		return "rollout", "rollouts"
	case schema.KindArtifact:
		return "artifact", "artifacts"
	case schema.KindDevice:
		return "device", "devices"
	case schema.KindDeviceGroup:
		return "group", "groups"
	case schema.KindDeviceConfig:
		return "config", "configs"
	case schema.KindMonitorCheck:
		return "monitor check", "monitor checks"
	case schema.KindSigningKey:
		return "signing key", "signing keys"
	case schema.KindNotification:
		return "notification", "notifications"
	case schema.KindDeviceCA:
		return "device CA", "device CAs"
	case schema.KindOperator:
		return "operator", "operators"
	case KindPolicy:
		return "policy", "policies"
	}
	return string(k), string(k) + "s"
}

func noun(k schema.Kind, n int) string {
	one, many := nouns(k)
	if n == 1 {
		return one
	}
	return many
}

// section titles the part of a plan about kind k.
func section(k schema.Kind) string {
	_, s := nouns(k)
	return strings.ToUpper(s[:1]) + s[1:]
}

// actionOrder is the order of actions in a headline.
func actionOrder() []Action {
	return []Action{Started, NewGeneration, Promoted, Paused, Resumed, Unapproved, Stopped, Accepted, Added, Changed, Removed}
}

// Headline sums up p in one line: "1 rollout started, 2 devices
// accepted, 1 config changed", or "no change to the fleet". Each change
// counts once, under its first action.
func (p *Plan) Headline() string {
	var parts []string
	for _, k := range Kinds() {
		if k == KindPolicy {
			// Packs and files do not add up; that the rules change is
			// what counts.
			if slices.ContainsFunc(p.Changes, func(c Change) bool { return c.Kind == KindPolicy }) {
				parts = append(parts, "policies changed")
			}
			continue
		}
		for _, a := range actionOrder() {
			n := 0
			for _, c := range p.Changes {
				if c.Kind == k && c.Actions[0] == a {
					n += max(c.Count, 1)
				}
			}
			if n == 0 {
				continue
			}
			parts = append(parts, fmt.Sprintf("%d %s %s", n, noun(k, n), actionWords(a)))
		}
	}
	if len(parts) == 0 {
		return "no change to the fleet"
	}
	return strings.Join(parts, ", ")
}

// actionWords writes an action for people.
func actionWords(a Action) string {
	switch a {
	case NewGeneration:
		return "with a new generation"
	case Unapproved:
		return "with an approval withdrawn"
	}
	return string(a)
}

// marker is the first character of a change in text: what it does to the
// fleet.
func marker(c *Change) string {
	switch {
	case c.Has(Started), c.Has(Added), c.Has(Accepted):
		return "+"
	case c.Has(Stopped), c.Has(Removed):
		return "-"
	}
	return "~"
}

// maxDevices is how many device names a plan prints for one change.
const maxDevices = 20

// deviceList writes names, at most maxDevices of them.
func deviceList(names []string, quote func(string) string) string {
	shown := names[:min(len(names), maxDevices)]
	q := make([]string, len(shown))
	for i, n := range shown {
		q[i] = quote(n)
	}
	s := strings.Join(q, ", ")
	if len(names) > maxDevices {
		s += fmt.Sprintf(" and %d more", len(names)-maxDevices)
	}
	return s
}

// WriteText writes p for a terminal.
func (p *Plan) WriteText(w io.Writer) error {
	b := new(strings.Builder)
	fmt.Fprintf(b, "Plan: merging %s into %s\n", p.Head.Short(), p.Base.Short())
	fmt.Fprintf(b, "Validation of %s %s\n", p.Head.Short(), p.Validation.Summary())
	for _, e := range p.Validation.Errors {
		fmt.Fprintf(b, "  %s\n", e)
	}
	for _, v := range p.Validation.Violations {
		fmt.Fprintf(b, "  %s\n", v.String())
	}
	if len(p.Validation.Errors) > 0 {
		fmt.Fprintf(b, "  (manifests with errors are left out of the changes below)\n")
	}
	fmt.Fprintf(b, "\nSummary: %s\n", p.Headline())
	for _, k := range Kinds() {
		var cs []*Change
		for i := range p.Changes {
			if p.Changes[i].Kind == k {
				cs = append(cs, &p.Changes[i])
			}
		}
		if len(cs) == 0 {
			continue
		}
		fmt.Fprintf(b, "\n%s\n", section(k))
		for _, c := range cs {
			fmt.Fprintf(b, "  %s %s %s\n", marker(c), c.Name, c.Summary)
			for _, d := range c.Details {
				fmt.Fprintf(b, "      %s\n", d)
			}
			switch t := c.Targets; {
			case t == nil:
			case len(t.Devices) > 0:
				fmt.Fprintf(b, "      %s: %s\n", t.Count(), deviceList(t.Devices, func(s string) string { return s }))
			default:
				fmt.Fprintf(b, "      target: %s (%s)\n", t.Description, t.Count())
			}
			fmt.Fprintf(b, "      (%s)\n", schema.Source{File: c.File, Line: c.Line})
		}
	}
	if len(p.ConfigNow) > 0 {
		fmt.Fprintf(b, "\nDevice configuration now (the controller serves %s)\n", shortSHA(p.ConfigCommit))
		for _, c := range p.ConfigNow {
			fmt.Fprintf(b, "  %s: %s\n", c.Name, c)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func shortSHA(s string) string {
	if len(s) > 7 {
		return s[:7]
	}
	return s
}

// CommentMarker starts every Markdown plan, so that CI can find and
// update its earlier comment on a pull request.
const CommentMarker = "<!-- gitfleet-plan -->"

// WriteMarkdown writes p as a pull-request comment: a headline, the
// validation result, then a section per kind.
func (p *Plan) WriteMarkdown(w io.Writer) error {
	b := new(strings.Builder)
	code := func(s string) string { return "`" + strings.ReplaceAll(s, "`", "'") + "`" }
	cell := func(s string) string { return strings.ReplaceAll(strings.ReplaceAll(s, "|", `\|`), "\n", " ") }

	fmt.Fprintf(b, "%s\n## Gitfleet plan: %s\n\n", CommentMarker, p.Headline())
	fmt.Fprintf(b, "Merging %s into %s.\n\n", revMarkdown(p.Head, code), revMarkdown(p.Base, code))

	r := p.Validation
	if r.OK() {
		fmt.Fprintf(b, "✅ **Validation %s.**\n", r.Summary())
	} else {
		fmt.Fprintf(b, "❌ **Validation %s.** The controller would refuse this commit and keep serving the current one.\n", r.Summary())
	}
	if len(r.Errors) > 0 {
		b.WriteString("\nManifests with errors are left out of the changes below.\n")
	}
	if len(r.Errors)+len(r.Violations) > 0 {
		b.WriteString("\n| | where | problem | policy |\n|---|---|---|---|\n")
		for _, e := range r.Errors {
			msg := e.Msg
			if e.Path != "" {
				msg = code(e.Path) + ": " + msg
			}
			fmt.Fprintf(b, "| ❌ error | %s | %s | |\n", code(schema.Source{File: e.File, Line: e.Line, Col: e.Col}.String()), cell(msg))
		}
		for _, v := range r.Violations {
			icon := "❌ deny"
			if v.Severity == policies.Warn {
				icon = "⚠️ warn"
			}
			msg := v.Message
			if v.Path != "" {
				msg = code(v.Path) + ": " + msg
			}
			fmt.Fprintf(b, "| %s | %s | %s | %s |\n", icon, code(schema.Source{File: v.File, Line: v.Line, Col: v.Col}.String()), cell(msg), code(v.Policy))
		}
	}

	for _, k := range Kinds() {
		var cs []*Change
		for i := range p.Changes {
			if p.Changes[i].Kind == k {
				cs = append(cs, &p.Changes[i])
			}
		}
		if len(cs) == 0 {
			continue
		}
		fmt.Fprintf(b, "\n### %s\n\n", section(k))
		if k == schema.KindRollout {
			b.WriteString("| rollout | merging | target | devices |\n|---|---|---|---|\n")
			for _, c := range cs {
				target, count := "", ""
				if c.Targets != nil {
					target, count = c.Targets.Description, c.Targets.Count()
				}
				acts := make([]string, len(c.Actions))
				for i, a := range c.Actions {
					acts[i] = strings.ReplaceAll(string(a), "-", " ")
				}
				fmt.Fprintf(b, "| %s | %s | %s | %s |\n", code(c.Name), strings.Join(acts, ", "), cell(target), count)
			}
			b.WriteString("\n")
		}
		for _, c := range cs {
			fmt.Fprintf(b, "- **%s** %s (%s)\n", code(c.Name), cell(c.Summary), code(schema.Source{File: c.File, Line: c.Line}.String()))
			for _, d := range c.Details {
				fmt.Fprintf(b, "  - %s\n", cell(d))
			}
			switch t := c.Targets; {
			case t == nil:
			case len(t.Devices) > 0:
				fmt.Fprintf(b, "  - %s: %s\n", t.Count(), deviceList(t.Devices, code))
			default:
				fmt.Fprintf(b, "  - target: %s (%s)\n", cell(t.Description), t.Count())
			}
		}
	}
	if len(p.ConfigNow) > 0 {
		fmt.Fprintf(b, "\n### Device configuration now\n\nThe controller serves %s.\n\n| DeviceConfig | devices | in sync | pending | drifted | failed |\n|---|---|---|---|---|---|\n", code(shortSHA(p.ConfigCommit)))
		for _, c := range p.ConfigNow {
			fmt.Fprintf(b, "| %s | %d | %d | %d | %d | %d |\n", code(c.Name), c.Targets, c.InSync, c.Pending, c.Drifted, c.Failed)
		}
	}
	out := b.String()
	if len(out) > MaxMarkdown {
		// Cut at a line, and say so, rather than have the comment refused.
		cut := strings.LastIndexByte(out[:MaxMarkdown-len(truncated)], '\n')
		out = out[:cut+1] + truncated
	}
	_, err := io.WriteString(w, out)
	return err
}

// MaxMarkdown bounds the Markdown rendering of a plan: GitHub refuses
// comments over 65,536 characters, and a plan that long is read in full
// with gitfleet plan anyway.
const MaxMarkdown = 60_000

const truncated = "\n… The plan is longer than a comment allows; run `gitfleet plan` for the rest.\n"

func revMarkdown(r Revision, code func(string) string) string {
	short := r.Commit[:min(len(r.Commit), 7)]
	switch {
	case short == "":
		return code(r.Rev)
	case r.Rev == "" || strings.HasPrefix(r.Commit, r.Rev):
		return code(short)
	}
	s := fmt.Sprintf("%s (%s", code(r.Rev), code(short))
	if r.Subject != "" {
		s += ": " + r.Subject
	}
	return s + ")"
}
