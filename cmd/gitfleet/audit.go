package main

import (
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/gitfleet/gitfleet/controller"
)

func newAuditCmd() *cobra.Command {
	var (
		mc              mgmtClient
		device, rollout bool
		limit           int
		asJSON          bool
	)
	cmd := &cobra.Command{
		Use:   "audit NAME [--device | --rollout] | audit operator NAME",
		Short: "Explain a device's, a rollout's or an operator's state: the commits, events and sessions behind it",
		Long: `Explain why a device or a rollout is in the state it is in.

For a rollout: where the served commit declares it, the commits that changed
that file (newest first: SHA, author, date, subject), its events (started,
artifact or settings changed, phases opened and completed, approvals awaited,
aborts, a refused artifact…), and where it stands now: each phase with what it
waits for, as gitfleet rollouts shows it.

For a device: where its Device manifest is and the commits that changed that
file, whether and when it was seen, the artifact it reports, the groups it
belongs to, the rollouts that target it (and the one it follows) with its
deployment in each, the DeviceConfigs that apply to it and whether it runs
their configuration, its alerts, its events, and the remote sessions
operators opened to it.

For an operator (gitfleet audit operator NAME): where the served commit
declares its Operator manifest and the commits that changed that file, its
credentials (a personal access token, an SSH key's fingerprint; never the
secrets), its expiry, access and limits, and its remote sessions. An
operator removed from Git still shows its sessions.

NAME is looked up as a Device and as a Rollout; --device or --rollout says
which when both exist.

Talks to the controller's management API: --server, --token and --ca-cert
(or GITFLEET_SERVER, GITFLEET_TOKEN, GITFLEET_CA_CERT, or the CLI
configuration file; see gitfleet help login).`,
		Example: `  gitfleet audit hello-2
  gitfleet audit sim-003 --device --json
  gitfleet audit operator alice`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 2 {
				if args[0] != "operator" {
					return fmt.Errorf("give one NAME (a device or rollout), or: gitfleet audit operator NAME")
				}
				if device || rollout {
					return fmt.Errorf("--device and --rollout do not apply to an operator's audit")
				}
				return auditOperator(cmd, &mc, args[1], limit, asJSON)
			}
			name := args[0]
			if device && rollout {
				return fmt.Errorf("--device and --rollout: pick one")
			}
			if limit < 1 || limit > 1000 {
				return fmt.Errorf("--limit %d: want 1…1000", limit)
			}
			fetch := func(kind string) (*controller.Audit, error) {
				var a controller.Audit
				err := mc.get(cmd.Context(), "/api/management/v1/audit?"+url.Values{kind: {name}, "limit": {strconv.Itoa(limit)}}.Encode(), &a)
				return &a, err
			}
			var a *controller.Audit
			var err error
			switch {
			case device:
				a, err = fetch("device")
			case rollout:
				a, err = fetch("rollout")
			default:
				var errD, errR error
				var ad, ar *controller.Audit
				ad, errD = fetch("device")
				ar, errR = fetch("rollout")
				switch {
				case errD == nil && errR == nil:
					return fmt.Errorf("%q is both a Device and a Rollout: add --device or --rollout", name)
				case errD == nil:
					a = ad
				case errR == nil:
					a = ar
				case is404(errD) && is404(errR):
					err = fmt.Errorf("no Device or Rollout called %q in the commit the controller serves (gitfleet devices list, gitfleet rollouts)", name)
				case !is404(errD):
					err = errD
				default:
					err = errR
				}
			}
			if err != nil {
				return failed(err)
			}
			var sessions []controller.SessionView
			sessionsNote := ""
			if a.Kind == "device" {
				if sessions, err = deviceSessions(cmd, &mc, a.Name, limit); err != nil {
					if !is404(err) {
						return failed(err)
					}
					sessionsNote = "this controller does not serve remote sessions (an older version)"
				}
			}
			if asJSON {
				if a.Kind == "device" {
					if sessions == nil {
						sessions = []controller.SessionView{}
					}
					return printJSON(cmd, struct {
						*controller.Audit
						Sessions []controller.SessionView `json:"sessions"`
					}{a, sessions})
				}
				return printJSON(cmd, a)
			}
			now := time.Now()
			w := cmd.OutOrStdout()
			printAudit(w, a, now)
			if a.Kind == "device" {
				printSessionSection(w, sessions, sessionsNote, now)
			}
			return nil
		},
	}
	f := cmd.Flags()
	mc.flags(f)
	f.BoolVar(&device, "device", false, "NAME is a Device")
	f.BoolVar(&rollout, "rollout", false, "NAME is a Rollout")
	f.IntVar(&limit, "limit", 100, "show at most this many of the newest events (1…1000)")
	f.BoolVar(&asJSON, "json", false, "print the audit as JSON, as the management API returns it")
	return cmd
}

func is404(err error) bool {
	return err != nil && strings.Contains(err.Error(), ": 404 ")
}

// printAudit prints an audit in sections.
func printAudit(w io.Writer, a *controller.Audit, now time.Time) {
	fmt.Fprintf(w, "%s %s", a.Kind, cell(a.Name, 64))
	if a.Manifest != nil {
		fmt.Fprintf(w, ", declared at %s:%d", cell(a.Manifest.File, 128), a.Manifest.Line)
	}
	if a.Commit != "" {
		fmt.Fprintf(w, " in the served commit %s", shortSHA(a.Commit))
	}
	fmt.Fprintln(w)

	if d := a.Device; d != nil {
		fmt.Fprintln(w, "\nnow:")
		tw := newTabWriter(w)
		fmt.Fprintf(tw, "  id\t%s\n", orDash(d.ID))
		seen := d.Status
		if d.LastSeen != nil {
			seen += ", last seen " + since(*d.LastSeen, now)
		}
		fmt.Fprintf(tw, "  status\t%s\n", seen)
		fmt.Fprintf(tw, "  artifact\t%s\n", orDash(cell(d.Artifact, 64)))
		fmt.Fprintf(tw, "  groups\t%s\n", orDash(strings.Join(d.Groups, ", ")))
		fmt.Fprintf(tw, "  configs\t%s\n", orDash(strings.Join(d.Configs, ", ")))
		if c := d.Config; c != nil {
			s := c.State + " (wants " + shortDigest(c.Desired)
			if c.Reported != "" {
				s += ", reported " + shortDigest(c.Reported)
			}
			s += ")"
			if detail := configDetail(*c); detail != "" {
				s += ": " + detail
			}
			fmt.Fprintf(tw, "  config\t%s\n", s)
		}
		tw.Flush()
		fmt.Fprintln(w, "\nrollouts targeting it:")
		if len(d.Rollouts) == 0 {
			fmt.Fprintln(w, "  none")
		}
		for _, r := range d.Rollouts {
			s := fmt.Sprintf("  %s (generation %d, artifact %s)", cell(r.Rollout, 64), r.Generation, cell(r.Artifact, 64))
			if r.Following {
				s += " follows"
			} else {
				s += " not followed (a rollout of higher priority takes it)"
			}
			if r.State != "" {
				s += fmt.Sprintf(": phase %s, %s", cell(r.Phase, 32), cell(r.State, 32))
				if r.Attempts > 0 {
					s += fmt.Sprintf(", %d attempt%s retried", r.Attempts, plural(int64(r.Attempts)))
				}
				if r.Admitted != nil {
					s += ", admitted " + since(*r.Admitted, now)
				}
			} else if r.Generation > 0 {
				s += ": not admitted yet"
			}
			fmt.Fprintln(w, s)
		}
		fmt.Fprintln(w, "\nalerts:")
		if len(d.Alerts) == 0 {
			fmt.Fprintln(w, "  none")
		}
		for _, al := range d.Alerts {
			key := ""
			if al.Key != "" {
				key = " " + cell(al.Key, 48)
			}
			fmt.Fprintf(w, "  %s %s %s%s since %s: %s\n", alertState(al), orDash(cell(al.Severity, 16)), cell(al.Check, 64), key,
				since(alertSince(al), now), cell(al.Evidence, maxEvidenceCell))
		}
	}
	if r := a.Rollout; r != nil {
		fmt.Fprintln(w, "\nnow:")
		switch {
		case r.Stopped:
			fmt.Fprintf(w, "  stopped (no longer declared) since %s\n", shortSHA(r.Commit))
		default:
			fmt.Fprintf(w, "  generation %d of artifact %s, started by %s %s\n", r.Generation, cell(r.Artifact, 64), shortSHA(r.StartCommit), since(r.Started, now))
			if r.ArtifactRefused != "" {
				fmt.Fprintf(w, "  artifact refused: %s\n", cell(r.ArtifactRefused, 200))
			}
			for k, p := range r.Phases {
				ph := p.Name
				if ph == "" {
					ph = "#" + strconv.Itoa(k)
				}
				fmt.Fprintf(w, "  phase %s: %d/%d admitted, %d succeeded, %d failed, %d timed out: %s\n", cell(ph, 32),
					p.Admitted, p.Limit, p.Succeeded, p.Failed, p.TimedOut, phaseStatus(*r, p, now))
			}
		}
	}

	fmt.Fprintln(w, "\ncommits that changed its file (newest first):")
	if len(a.Commits) == 0 {
		fmt.Fprintln(w, "  none found")
	}
	tw := newTabWriter(w)
	for _, c := range a.Commits {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", shortSHA(c.SHA), c.Time.UTC().Format(time.RFC3339), cell(c.Author, 64), c.Change, cell(c.Subject, 72))
	}
	tw.Flush()
	if a.CommitsNote != "" {
		fmt.Fprintf(w, "  (%s)\n", cell(a.CommitsNote, 200))
	}

	fmt.Fprintln(w, "\nevents (oldest first):")
	if len(a.Events) == 0 {
		fmt.Fprintln(w, "  none retained")
	}
	tw = newTabWriter(w)
	for _, e := range a.Events {
		msg, _, _ := strings.Cut(e.Message, "\n")
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", e.Time.UTC().Format(time.RFC3339), cell(e.Kind, 40), orDash(cell(e.Subject, 48)),
			orDash(shortSHA(e.Commit)), cell(msg, 100))
	}
	tw.Flush()
}

// deviceSessions fetches the remote sessions to a device, newest first.
func deviceSessions(cmd *cobra.Command, mc *mgmtClient, name string, limit int) ([]controller.SessionView, error) {
	var resp struct {
		Sessions []controller.SessionView `json:"sessions"`
	}
	err := mc.get(cmd.Context(), "/api/management/v1/sessions?"+url.Values{"device": {name}, "limit": {strconv.Itoa(limit)}}.Encode(), &resp)
	return resp.Sessions, err
}

// printSessionSection prints an audit's remote sessions, with the input
// recorded, escaped.
func printSessionSection(w io.Writer, sessions []controller.SessionView, note string, now time.Time) {
	fmt.Fprintln(w, "\nremote sessions (newest first):")
	switch {
	case note != "":
		fmt.Fprintf(w, "  (%s)\n", note)
	case len(sessions) == 0:
		fmt.Fprintln(w, "  none recorded")
	default:
		printSessions(w, sessions, true, now)
	}
}

// auditOperator prints gitfleet audit operator NAME.
func auditOperator(cmd *cobra.Command, mc *mgmtClient, name string, limit int, asJSON bool) error {
	if limit < 1 || limit > 1000 {
		return fmt.Errorf("--limit %d: want 1…1000", limit)
	}
	var v controller.OperatorView
	if err := mc.get(cmd.Context(), "/api/management/v1/operators/"+url.PathEscape(name)+"?limit="+strconv.Itoa(limit), &v); err != nil {
		return failed(err)
	}
	if asJSON {
		return printJSON(cmd, v)
	}
	now := time.Now()
	w := cmd.OutOrStdout()
	fmt.Fprintf(w, "operator %s", cell(v.Name, 64))
	switch {
	case v.Manifest != nil:
		fmt.Fprintf(w, ", declared at %s:%d in the served commit %s\n", cell(v.Manifest.File, 128), v.Manifest.Line, shortSHA(v.Commit))
	default:
		fmt.Fprintf(w, ": not declared in the served commit %s (removed from Git, or never merged)\n", orDash(shortSHA(v.Commit)))
	}
	if v.Declared {
		fmt.Fprintln(w, "\nnow:")
		tw := newTabWriter(w)
		var creds []string
		if v.Token {
			creds = append(creds, "personal access token")
		}
		if v.SSHKey != "" {
			creds = append(creds, "SSH key "+v.SSHKey)
		}
		fmt.Fprintf(tw, "  credentials\t%s\n", orDash(strings.Join(creds, ", ")))
		exp := "never"
		if v.Expires != nil {
			exp = v.Expires.UTC().Format(time.RFC3339)
			if v.Expired {
				exp += " (expired: grants nothing)"
			}
		}
		fmt.Fprintf(tw, "  expires\t%s\n", exp)
		if l, ok := v.Limits.(map[string]any); ok {
			fmt.Fprintf(tw, "  limits\t%s\n", limitsText(l))
		}
		tw.Flush()
		if acc, ok := v.Access.([]any); ok {
			fmt.Fprintln(w, "\naccess:")
			for _, e := range acc {
				fmt.Fprintf(w, "  %s\n", accessText(e))
			}
		}
		fmt.Fprintln(w, "\ncommits that changed its file (newest first):")
		if len(v.Commits) == 0 {
			fmt.Fprintln(w, "  none found")
		}
		tw = newTabWriter(w)
		for _, c := range v.Commits {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", shortSHA(c.SHA), c.Time.UTC().Format(time.RFC3339), cell(c.Author, 64), c.Change, cell(c.Subject, 72))
		}
		tw.Flush()
		if v.CommitsNote != "" {
			fmt.Fprintf(w, "  (%s)\n", cell(v.CommitsNote, 200))
		}
	}
	printSessionSection(w, v.Sessions, "", now)
	return nil
}

// limitsText writes an operator's effective limits.
func limitsText(l map[string]any) string {
	s := fmt.Sprintf("%v sessions at once, idle timeout %v", l["sessions"], l["idleTimeout"])
	if b, ok := l["bandwidth"].(float64); ok && b > 0 {
		s += ", " + byteSize(int64(b)) + "/s per session"
	} else {
		s += ", bandwidth unlimited"
	}
	return s
}

// accessText writes one access entry: its devices and permissions.
func accessText(e any) string {
	m, _ := e.(map[string]any)
	var who, may []string
	for _, k := range []string{"groups", "devices"} {
		if l, ok := m[k].([]any); ok && len(l) > 0 {
			names := make([]string, len(l))
			for i, n := range l {
				names[i] = cell(fmt.Sprint(n), 64)
			}
			who = append(who, k+" "+strings.Join(names, ", "))
		}
	}
	may = append(may, "terminal")
	for _, k := range []struct{ key, text string }{{"fileTransfer", "file transfer"}, {"portForward", "port forward"}, {"recordInput", "input recorded"}} {
		if b, _ := m[k.key].(bool); b {
			may = append(may, k.text)
		}
	}
	return strings.Join(who, "; ") + ": " + strings.Join(may, ", ")
}
