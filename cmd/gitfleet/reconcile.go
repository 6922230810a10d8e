package main

import (
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/spf13/cobra"

	"github.com/gitfleet/gitfleet/controller"
)

func newReconcileCmd() *cobra.Command {
	var (
		mc     mgmtClient
		wait   time.Duration
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "reconcile [--wait 30s]",
		Short: "Make the controller fetch the fleet repository now and say what it serves",
		Long: `Make the controller fetch its branch now instead of at its next poll or
webhook, and wait (up to --wait, at most 2m) for the outcome:

  live          the branch head is the commit served (printed)
  refused       the head was refused (validation, policy, signature): the
                errors are printed and the previous commit is still served
  fetch-failed  the fetch failed (the error is printed)
  pending       no outcome within --wait; see gitfleet status later

With --wait 0 the fetch is only triggered. Requests coalesce: asking again
while a fetch runs costs one more fetch at most. Exits 1 unless the outcome
is live (or triggered, with --wait 0).

Talks to the controller's management API: --server, --token and --ca-cert
(or GITFLEET_SERVER, GITFLEET_TOKEN, GITFLEET_CA_CERT, or the CLI
configuration file; see gitfleet help login).`,
		Example: `  git push && gitfleet reconcile
  gitfleet reconcile --wait 0`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if wait < 0 || wait > 2*time.Minute {
				return fmt.Errorf("--wait %s: want 0s…2m", wait)
			}
			var r controller.Reconcile
			if err := mc.post(cmd.Context(), "/api/management/v1/reconcile?"+url.Values{"wait": {wait.String()}}.Encode(), wait, &r); err != nil {
				return failed(err)
			}
			if asJSON {
				if err := printJSON(cmd, r); err != nil {
					return err
				}
			} else {
				printReconcile(cmd, r)
			}
			switch r.Outcome {
			case "live", "triggered":
				return nil
			}
			return &exitError{code: 1, err: errors.New("")}
		},
	}
	f := cmd.Flags()
	mc.flags(f)
	f.DurationVar(&wait, "wait", 30*time.Second, "wait this long for the outcome (0: only trigger the fetch)")
	f.BoolVar(&asJSON, "json", false, "print the outcome as JSON, as the management API returns it")
	return cmd
}

func printReconcile(cmd *cobra.Command, r controller.Reconcile) {
	w := cmd.OutOrStdout()
	now := time.Now()
	switch r.Outcome {
	case "live":
		fmt.Fprintf(w, "live: the branch head is served: %s\n", commitLine(*r.Serving, now))
	case "triggered":
		fmt.Fprintln(w, "triggered: the controller fetches now (see gitfleet status)")
	case "refused":
		fmt.Fprintf(w, "refused: the branch head %s was refused:\n", orDash(shortSHA(r.Head)))
		for _, e := range r.Errors {
			fmt.Fprintf(w, "  %s\n", cell(e, 300))
		}
	case "fetch-failed", "failed":
		fmt.Fprintf(w, "%s: %s\n", r.Outcome, cell(r.Error, 300))
	default:
		fmt.Fprintf(w, "%s: no outcome yet for the branch head %s (see gitfleet status)\n", cell(r.Outcome, 32), orDash(shortSHA(r.Head)))
	}
	if r.Outcome != "live" && r.Serving != nil {
		fmt.Fprintf(w, "serving: %s\n", commitLine(*r.Serving, now))
	}
}
