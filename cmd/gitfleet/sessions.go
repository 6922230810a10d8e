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

func newSessionsCmd() *cobra.Command {
	var (
		mc               mgmtClient
		operator, device string
		open, input      bool
		asJSON           bool
		limit            int
	)
	cmd := &cobra.Command{
		Use:   "sessions [--operator NAME] [--device NAME|ID] [--open] [--input]",
		Short: "List remote sessions: who opened a terminal, file transfer or port forward to which device",
		Long: `List the remote sessions operators opened to devices (mender-cli terminal, cp,
port-forward), newest first: the session, the operator, the device (its name
in the served commit, else its ID), the kind, when it started and ended (or
"open"), the bytes sent to and received from the device, why it ended, and
the commit whose Operator manifest granted it.

--operator and --device narrow the list (a device by its name or its ID);
--open lists only sessions still open. --input also prints, under each
session whose operator's manifest records input (recordInput), what the
operator typed, escaped (control characters and escape sequences are shown
as \x1b, \r, …, never sent to your terminal).

Talks to the controller's management API: --server, --token and --ca-cert
(or GITFLEET_SERVER, GITFLEET_TOKEN, GITFLEET_CA_CERT, or the CLI
configuration file; see gitfleet help login).`,
		Example: `  gitfleet sessions --open
  gitfleet sessions --operator alice --input
  gitfleet sessions --device sim-001 --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if limit < 1 || limit > 1000 {
				return fmt.Errorf("--limit %d: want 1…1000", limit)
			}
			q := url.Values{"limit": {strconv.Itoa(limit)}}
			if operator != "" {
				q.Set("operator", operator)
			}
			if device != "" {
				q.Set("device", device)
			}
			if open {
				q.Set("open", "true")
			}
			var resp struct {
				Sessions []controller.SessionView `json:"sessions"`
			}
			if err := mc.get(cmd.Context(), "/api/management/v1/sessions?"+q.Encode(), &resp); err != nil {
				return failed(err)
			}
			if asJSON {
				if resp.Sessions == nil {
					resp.Sessions = []controller.SessionView{}
				}
				return printJSON(cmd, resp.Sessions)
			}
			if len(resp.Sessions) == 0 {
				fmt.Fprintln(cmd.ErrOrStderr(), "no remote sessions recorded"+sessionsFilterText(operator, device, open))
				return nil
			}
			printSessions(cmd.OutOrStdout(), resp.Sessions, input, time.Now())
			return nil
		},
	}
	f := cmd.Flags()
	mc.flags(f)
	f.StringVar(&operator, "operator", "", "only this operator's sessions")
	f.StringVar(&device, "device", "", "only sessions to this device (its name or ID)")
	f.BoolVar(&open, "open", false, "only sessions still open")
	f.BoolVar(&input, "input", false, "print the recorded input of sessions that record it")
	f.IntVar(&limit, "limit", 100, "show at most this many of the newest sessions (1…1000)")
	f.BoolVar(&asJSON, "json", false, "print the sessions as JSON, as the management API returns them")
	return cmd
}

func sessionsFilterText(operator, device string, open bool) string {
	var parts []string
	if open {
		parts = append(parts, "open")
	}
	if operator != "" {
		parts = append(parts, "of operator "+operator)
	}
	if device != "" {
		parts = append(parts, "to device "+device)
	}
	if len(parts) == 0 {
		return ""
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

// printSessions prints sessions as a table; with input, each recorded
// session's typed input follows it, escaped.
func printSessions(w io.Writer, list []controller.SessionView, input bool, now time.Time) {
	tw := newTabWriter(w)
	fmt.Fprintln(tw, "SESSION\tOPERATOR\tDEVICE\tKIND\tSTARTED\tENDED\tTO DEVICE\tFROM DEVICE\tREASON\tCOMMIT")
	for _, s := range list {
		fmt.Fprintln(tw, sessionRow(s, now))
		if input && s.RecordInput {
			tw.Flush()
			in := strconv.Quote(s.Input)
			if s.InputTruncated {
				in += " (truncated)"
			}
			fmt.Fprintf(w, "  input: %s\n", in)
		}
	}
	tw.Flush()
}

func sessionRow(s controller.SessionView, now time.Time) string {
	dev := s.Device
	if s.DeviceName != "" && s.DeviceName != s.Device {
		dev = s.DeviceName
	}
	ended := "open"
	switch {
	case !s.Ended.IsZero():
		ended = s.Ended.UTC().Format(time.RFC3339)
	case !s.Open(now):
		ended = "lapsed"
	}
	kind := s.Kind
	if len(s.Protocols) > 0 {
		kind += " (" + strings.Join(s.Protocols, ",") + ")"
	}
	return strings.Join([]string{cell(shortID(s.ID), 24), cell(s.Operator, 48), cell(dev, 64), cell(kind, 48),
		s.Started.UTC().Format(time.RFC3339), ended, byteSize(s.Traffic.ToDevice), byteSize(s.Traffic.FromDevice),
		orDash(cell(s.Reason, 64)), orDash(shortSHA(s.Commit))}, "\t")
}

// shortID keeps session IDs readable in a table.
func shortID(id string) string {
	if len(id) > 16 {
		return id[:16]
	}
	return id
}

// byteSize writes a byte count for people: 512 B, 1.5 KiB, 3.2 MiB.
func byteSize(n int64) string {
	switch {
	case n < 1<<10:
		return strconv.FormatInt(n, 10) + " B"
	case n < 1<<20:
		return strconv.FormatFloat(float64(n)/(1<<10), 'f', 1, 64) + " KiB"
	case n < 1<<30:
		return strconv.FormatFloat(float64(n)/(1<<20), 'f', 1, 64) + " MiB"
	}
	return strconv.FormatFloat(float64(n)/(1<<30), 'f', 1, 64) + " GiB"
}
