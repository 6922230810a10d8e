package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/gitfleet/gitfleet/controller"
	"github.com/gitfleet/gitfleet/controller/store"
)

func newStatusCmd() *cobra.Command {
	var (
		mc     mgmtClient
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show which commit the controller serves, the last refused one, and how Git fetches go",
		Long: `Show the controller's state: the commit it serves (and the store's live commit,
when another replica moved it), the last refused commit and why, the policy
warnings of the served commit, how fetching the fleet repository goes (branch
head, last fetch, last error, back-off) and the outcome of the last reconcile.

Talks to the controller's management API: --server, --token and --ca-cert
(or GITFLEET_SERVER, GITFLEET_TOKEN, GITFLEET_CA_CERT, or the CLI
configuration file; see gitfleet help login).`,
		Example: `  gitfleet status
  gitfleet status --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var st controller.Status
			if err := mc.get(cmd.Context(), "/api/management/v1/status", &st); err != nil {
				return failed(err)
			}
			if asJSON {
				return printJSON(cmd, st)
			}
			printStatus(cmd, st, time.Now())
			return nil
		},
	}
	mc.flags(cmd.Flags())
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the management API's status as JSON")
	return cmd
}

// printStatus prints st as "key: value" lines.
func printStatus(cmd *cobra.Command, st controller.Status, now time.Time) {
	tw := newTable(cmd)
	line := func(k, v string) { fmt.Fprintf(tw, "%s\t%s\n", k, v) }
	line("replica:", orDash(cell(st.Replica, 64))+", started "+since(st.Started, now))
	if st.Serving == nil {
		line("serving:", "no commit yet (see git and last reconcile below)")
	} else {
		line("serving:", commitLine(*st.Serving, now))
	}
	if st.Live != nil && (st.Serving == nil || st.Live.SHA != st.Serving.SHA) {
		line("store live:", commitLine(*st.Live, now)+" (another replica moved it; this one follows)")
	}
	for _, w := range st.Warnings {
		line("warning:", cell(w, 200))
	}
	if st.Refused != nil {
		line("last refused:", fmt.Sprintf("%s by %s, %s", shortSHA(st.Refused.SHA), orDash(cell(st.Refused.Author, 64)), since(st.Refused.Time, now)))
		for _, e := range st.Refused.Errors {
			line("", "  "+cell(e, 200))
		}
	}
	g := st.Git
	git := fmt.Sprintf("head %s, last fetch %s, remote last answered %s", orDash(shortSHA(g.Head)), since(g.LastFetch, now), since(g.LastReached, now))
	line("git:", git)
	if g.LastError != "" {
		line("git error:", cell(g.LastError, 200))
	}
	if g.Failures > 0 {
		line("git failures:", fmt.Sprintf("%d in a row, next try in %s", g.Failures, orDash(g.Backoff)))
	}
	if l := st.Last; l != nil {
		s := orDash(l.Outcome) + " " + shortSHA(l.Commit)
		if l.Error != "" {
			s += ": " + cell(l.Error, 200)
		}
		line("last reconcile:", strings.TrimSpace(s))
		for _, e := range l.Errors {
			line("", "  "+cell(e, 200))
		}
	}
	tw.Flush()
}

// commitLine says which commit a record is: short SHA, subject, author
// and when it was committed.
func commitLine(c store.CommitRecord, now time.Time) string {
	subject, _, _ := strings.Cut(c.Message, "\n")
	return fmt.Sprintf("%s %q by %s, committed %s", shortSHA(c.SHA), cell(subject, 72), orDash(cell(c.Author, 64)), since(c.Committed, now))
}

// shortSHA is a commit SHA's first 12 characters.
func shortSHA(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}
