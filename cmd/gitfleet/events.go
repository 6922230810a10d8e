package main

import (
	"fmt"
	"net/url"
	"strings"

	"github.com/spf13/cobra"

	"github.com/gitfleet/gitfleet/controller/store"
)

// apiEvent is an event as the management API lists it.
type apiEvent struct {
	ID string `json:"id"`
	store.Event
}

func newEventsCmd() *cobra.Command {
	var (
		mc        mgmtClient
		after     string
		fromStart bool
		limit     int
		asJSON    bool
	)
	cmd := &cobra.Command{
		Use:   "events [--after ID | --from-start] [--limit N]",
		Short: "List the event log: commits going live or refused, rollouts starting, phases completing, aborts…",
		Long: `List the controller's event log, oldest first: the newest --limit events, or
with --after ID the events after that one (IDs are in the first column and in
--json; follow the log by passing the last ID you saw), or with --from-start
the oldest events the store keeps. Each event names the commit it is traced
to and, for a commit, its author.

Kinds: commit.live, commit.refused, commit.rewound, rollout.started,
rollout.artifact, rollout.settings, rollout.stopped, rollout.phase_opened,
rollout.phase_completed, rollout.awaiting_approval, rollout.paused,
rollout.aborted, rollout.completed, artifact.refused, device.pending.

Talks to the controller's management API: --server, --token and --ca-cert
(or GITFLEET_SERVER, GITFLEET_TOKEN, GITFLEET_CA_CERT, or the CLI
configuration file; see gitfleet help login).`,
		Example: `  gitfleet events
  gitfleet events --limit 20 --json
  gitfleet events --after "$LAST_ID"`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if limit < 1 || limit > store.MaxPage {
				return fmt.Errorf("--limit %d: want 1…%d", limit, store.MaxPage)
			}
			if after != "" && fromStart {
				return fmt.Errorf("--after and --from-start: pick one")
			}
			q := url.Values{"limit": {fmt.Sprint(limit)}}
			if after != "" {
				q.Set("after", after)
			}
			if fromStart {
				q.Set("from", "start")
			}
			_, err := listing(cmd, &mc, "/api/management/v1/events?"+q.Encode(), "events", asJSON, "no events",
				"ID\tTIME\tKIND\tSUBJECT\tCOMMIT\tMESSAGE", func(e apiEvent) string {
					msg, _, _ := strings.Cut(e.Message, "\n")
					return fmt.Sprintf("%s\t%s\t%s\t%s\t%s\t%s", cell(e.ID, 40), e.Time.UTC().Format("2006-01-02T15:04:05Z"), cell(e.Kind, 40),
						orDash(cell(e.Subject, 48)), orDash(shortSHA(e.Commit)), cell(msg, 100))
				})
			return err
		},
	}
	f := cmd.Flags()
	mc.flags(f)
	f.StringVar(&after, "after", "", "list the events after the one with this ID")
	f.BoolVar(&fromStart, "from-start", false, "list from the oldest event the store keeps")
	f.IntVar(&limit, "limit", 100, "list at most this many (1…1000)")
	f.BoolVar(&asJSON, "json", false, "print the events as JSON, with their IDs")
	return cmd
}
