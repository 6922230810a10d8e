package main

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/gitfleet/gitfleet/controller"
	"github.com/gitfleet/gitfleet/controller/store"
)

func newRolloutsCmd() *cobra.Command {
	var (
		mc      mgmtClient
		devices bool
		limit   int
		asJSON  bool
	)
	cmd := &cobra.Command{
		Use:   "rollouts [NAME] [--devices]",
		Short: "Show rollouts phase by phase, with what each phase waits for",
		Long: `Show the rollouts the controller runs, one row per phase (by the name the
Rollout manifest gives it): devices admitted of the phase's limit, how many
succeeded, failed and timed out, and its status: completed (when), aborted
(why), or what it waits for:

  approval       the phase requires approval: commit the phase's name in
                 spec.approvedPhases
  previous phase the phase before it has not completed
  hold           the phase before it completed; the hold runs until T
  paused         spec.paused is set
  window         outside every maintenance window; the next opens at T
  in progress    admitted devices without a final state, per state
                 (downloading, installing, rebooting, retrying …)
  not polled     places not taken yet; for a rollout over named devices, the
                 devices ranked into the phase that were not admitted, with
                 the oldest last authentication among them

With NAME, only that rollout; with --devices, its admitted devices instead:
manifest name and device ID, phase, state, failed attempts retried, when it
was admitted, its deadline (when it times out without a final state),
whether it uploaded a deployment log (gitfleet rollouts log NAME DEVICE prints
it) and its history.

Stopped rollouts (no longer declared in Git) are not shown.

Talks to the controller's management API: --server, --token and --ca-cert
(or GITFLEET_SERVER, GITFLEET_TOKEN, GITFLEET_CA_CERT, or the CLI
configuration file; see gitfleet help login).`,
		Example: `  gitfleet rollouts
  gitfleet rollouts hello-2 --devices
  gitfleet rollouts hello-2 --json`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := ""
			if len(args) == 1 {
				name = args[0]
			}
			if devices {
				if name == "" {
					return fmt.Errorf("--devices needs a rollout NAME (see gitfleet rollouts)")
				}
				if limit < 1 || limit > store.MaxPage {
					return fmt.Errorf("--limit %d: want 1…%d", limit, store.MaxPage)
				}
				return rolloutDevices(cmd, &mc, name, limit, asJSON)
			}
			var resp struct {
				Rollouts []controller.RolloutView `json:"rollouts"`
			}
			if err := mc.get(cmd.Context(), "/api/management/v1/rollouts", &resp); err != nil {
				return failed(err)
			}
			var ros []controller.RolloutView
			for _, r := range resp.Rollouts {
				if !r.Stopped && (name == "" || r.Name == name) {
					ros = append(ros, r)
				}
			}
			if name != "" && len(ros) == 0 {
				return failed(fmt.Errorf("no running rollout %q (gitfleet rollouts lists them)", name))
			}
			if asJSON {
				if ros == nil {
					ros = []controller.RolloutView{}
				}
				return printJSON(cmd, ros)
			}
			if len(ros) == 0 {
				fmt.Fprintln(cmd.ErrOrStderr(), "no running rollouts")
				return nil
			}
			now := time.Now()
			tw := newTable(cmd)
			fmt.Fprintln(tw, "ROLLOUT\tGEN\tPHASE\tADMITTED\tSUCCEEDED\tFAILED\tTIMED OUT\tSTATUS")
			for _, r := range ros {
				if len(r.Phases) == 0 {
					fmt.Fprintf(tw, "%s\t%d\t-\t-\t-\t-\t-\t%s\n", cell(r.Name, 64), r.Generation, "no phases declared by the served commit")
				}
				for k, p := range r.Phases {
					ph := p.Name
					if ph == "" {
						ph = "#" + strconv.Itoa(k)
					}
					fmt.Fprintf(tw, "%s\t%d\t%s\t%d/%d\t%d\t%d\t%d\t%s\n", cell(r.Name, 64), r.Generation, cell(ph, 32),
						p.Admitted, p.Limit, p.Succeeded, p.Failed, p.TimedOut, phaseStatus(r, p, now))
				}
			}
			return tw.Flush()
		},
	}
	f := cmd.Flags()
	mc.flags(f)
	f.BoolVar(&devices, "devices", false, "list the devices admitted into rollout NAME")
	f.IntVar(&limit, "limit", 100, "with --devices: list at most this many (1…1000), in admission order")
	f.BoolVar(&asJSON, "json", false, "print what the management API returns, as JSON")
	cmd.AddCommand(newRolloutsLogCmd())
	return cmd
}

func newRolloutsLogCmd() *cobra.Command {
	var (
		mc     mgmtClient
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "log NAME DEVICE",
		Short: "Print the deployment log a device uploaded in a rollout",
		Long: `Print the log DEVICE (its Device manifest name) uploaded for its deployment in
rollout NAME's running generation: the Mender client uploads one when an
update fails. The controller keeps the last 200 lines within 64 KiB of the
latest upload; a note on stderr says how many earlier lines were dropped.
Device text is printed one line per entry, with control characters replaced.`,
		Example: `  gitfleet rollouts log hello-2 sim-003`,
		Args:    cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			var resp struct {
				Rollout    string              `json:"rollout"`
				Generation int64               `json:"generation"`
				Log        store.DeploymentLog `json:"log"`
			}
			path := "/api/management/v1/rollouts/" + url.PathEscape(args[0]) + "/devices/" + url.PathEscape(args[1]) + "/log"
			if err := mc.get(cmd.Context(), path, &resp); err != nil {
				return failed(err)
			}
			if asJSON {
				return printJSON(cmd, resp.Log)
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "log of %s in %s generation %d, stored %s", args[1], resp.Rollout, resp.Generation, since(resp.Log.Stored, time.Now()))
			if resp.Log.Dropped > 0 {
				fmt.Fprintf(cmd.ErrOrStderr(), " (%d earlier line%s dropped)", resp.Log.Dropped, plural(int64(resp.Log.Dropped)))
			}
			fmt.Fprintln(cmd.ErrOrStderr())
			for _, l := range resp.Log.Lines {
				fmt.Fprintf(cmd.OutOrStdout(), "%s %s %s\n", orDash(cell(l.Time, 64)), orDash(cell(l.Level, 16)), cell(l.Message, store.MaxLogLineBytes))
			}
			return nil
		},
	}
	mc.flags(cmd.Flags())
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the stored log as JSON")
	return cmd
}

// phaseStatus is a phase's STATUS cell.
func phaseStatus(r controller.RolloutView, p controller.PhaseView, now time.Time) string {
	switch {
	case p.Completed != nil:
		return "completed " + since(*p.Completed, now)
	case r.Aborted != "":
		return "aborted: " + cell(r.Aborted, 120)
	case len(p.Waiting) == 0:
		return "-"
	}
	var parts []string
	for _, w := range p.Waiting {
		parts = append(parts, cell(w.Words(now), 400))
	}
	return strings.Join(parts, "; ")
}

func plural(n int64) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// rolloutDevices lists the devices admitted into rollout name.
func rolloutDevices(cmd *cobra.Command, mc *mgmtClient, name string, limit int, asJSON bool) error {
	path := "/api/management/v1/rollouts/" + url.PathEscape(name) + "/devices?limit=" + strconv.Itoa(limit)
	now := time.Now()
	_, err := listing(cmd, mc, path, "devices", asJSON, "no device admitted into "+name+" yet",
		"DEVICE\tID\tPHASE\tSTATE\tATTEMPTS\tADMITTED\tDEADLINE\tLOG\tHISTORY", func(d controller.RolloutDevice) string {
			ph := d.PhaseName
			if ph == "" {
				ph = "#" + strconv.Itoa(d.Phase)
			}
			admitted, deadline := "-", "-"
			if d.Admitted != nil {
				admitted = since(*d.Admitted, now)
			}
			if d.Deadline != nil {
				deadline = d.Deadline.UTC().Format(time.RFC3339)
			}
			hasLog := "-"
			if d.HasLog {
				hasLog = "yes"
			}
			return fmt.Sprintf("%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s", cell(d.Name, 64), orDash(d.ID), cell(ph, 32), cell(d.State, 32),
				d.Attempts, admitted, deadline, hasLog, cell(strings.Join(d.History, " → "), 64))
		})
	return err
}
