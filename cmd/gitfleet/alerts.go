package main

import (
	"fmt"
	"net/url"
	"strings"
	"time"
	"unicode"

	"github.com/spf13/cobra"

	"github.com/gitfleet/gitfleet/controller/store"
)

func newAlertsCmd() *cobra.Command {
	var (
		mc                   mgmtClient
		check, device, group string
		severity             string
		open, closed, errs   bool
		limit                int
		asJSON               bool
	)
	cmd := &cobra.Command{
		Use:   "alerts [--check C] [--device D] [--group G] [--severity S] [--open|--closed|--errors]",
		Short: "List what devices' monitoring reported, most recently changed first",
		Long: `List the alerts devices raised for the MonitorChecks of the fleet repository:
one record per device, check and condition (KEY: a port, a file, a unit…),
with its state (open; closed, when cleared or expired; error, when the check
cannot run on the device), severity and the evidence that raised it. SINCE is
when an open alert was raised, a closed one closed, or a check last failed to
run, by the device's clock.

--device, --check and --group name manifests of the commit the controller
serves; a name it does not declare is refused. A group is its members and the
devices its selector matches (by the identity in their manifest and the
inventory they last reported). With --group the controller looks through the
1000 most recently changed alerts that match the other filters, so older
alerts of the group can be missed: narrow with --check, --severity or a state
to reach them.

Talks to the controller's management API: --server, --token and --ca-cert
(or GITFLEET_SERVER, GITFLEET_TOKEN, GITFLEET_CA_CERT, or the CLI
configuration file; see gitfleet help login).`,
		Example: `  gitfleet alerts --open
  gitfleet alerts --group production --severity critical
  gitfleet alerts --device lab-pi-03 --check disk-space --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			q := url.Values{}
			var states []string
			for _, s := range []struct {
				set         bool
				flag, state string
			}{{open, "--open", store.AlertOpen}, {closed, "--closed", store.AlertClosed}, {errs, "--errors", store.AlertError}} {
				if s.set {
					states = append(states, s.flag)
					q.Set("state", s.state)
				}
			}
			if len(states) > 1 {
				return fmt.Errorf("%s: pick one state (--open, --closed or --errors), or none for all", strings.Join(states, " and "))
			}
			if limit < 1 || limit > store.MaxPage {
				return fmt.Errorf("--limit %d: want 1…%d", limit, store.MaxPage)
			}
			for _, p := range []struct{ key, val string }{{"device", device}, {"check", check}, {"group", group}, {"severity", severity}} {
				if p.val != "" {
					q.Set(p.key, p.val)
				}
			}
			q.Set("limit", fmt.Sprint(limit))
			now := time.Now()
			none := "no alerts"
			if len(q) > 1 {
				none = "no alerts match"
			}
			_, err := listing(cmd, &mc, "/api/management/v1/alerts?"+q.Encode(), "alerts", asJSON,
				none, "STATE\tSEVERITY\tDEVICE\tCHECK\tKEY\tSINCE\tEVIDENCE", func(a store.Alert) string {
					return fmt.Sprintf("%s\t%s\t%s\t%s\t%s\t%s\t%s", alertState(a), orDash(cell(a.Severity, 16)), cell(a.Device, 64),
						cell(a.Check, 64), orDash(cell(a.Key, 48)), since(alertSince(a), now), cell(a.Evidence, maxEvidenceCell))
				})
			return err
		},
	}
	f := cmd.Flags()
	mc.flags(cmd.Flags())
	f.StringVar(&check, "check", "", "only alerts of this MonitorCheck")
	f.StringVar(&device, "device", "", "only alerts of this Device (its manifest name)")
	f.StringVar(&group, "group", "", "only alerts of the devices of this DeviceGroup")
	f.StringVar(&severity, "severity", "", "only alerts of this severity: critical, error, warning or info")
	f.BoolVar(&open, "open", false, "only open alerts")
	f.BoolVar(&closed, "closed", false, "only closed alerts (cleared or expired)")
	f.BoolVar(&errs, "errors", false, "only checks that cannot run on their device")
	f.IntVar(&limit, "limit", 100, "list at most this many (1…1000)")
	f.BoolVar(&asJSON, "json", false, "print the alert records as JSON, as the management API returns them")
	return cmd
}

// maxEvidenceCell is how much of an alert's evidence the table shows, in
// characters; --json has all of it.
const maxEvidenceCell = 60

// alertState is the STATE cell: the state, with how a closed alert closed
// and whether the alert is flapping.
func alertState(a store.Alert) string {
	var notes []string
	if a.State == store.AlertClosed && a.Closing != "" {
		notes = append(notes, a.Closing)
	}
	if a.Flapping {
		notes = append(notes, "flapping")
	}
	s := cell(a.State, 16)
	if len(notes) > 0 {
		s += " (" + cell(strings.Join(notes, ", "), 32) + ")"
	}
	return s
}

// alertSince is when a's current state began: raised for an open alert,
// closed for a closed one, the last event for a check error.
func alertSince(a store.Alert) time.Time {
	switch {
	case a.State == store.AlertOpen && !a.Raised.IsZero():
		return a.Raised
	case a.State == store.AlertClosed && !a.Closed.IsZero():
		return a.Closed
	}
	return a.Updated
}

// since formats t relative to now ("5m ago") within two days, else as an
// absolute UTC time. A time ahead of now (a device clock ahead of this
// machine's) is shown absolute too.
func since(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t)
	switch {
	case d < 0 || d >= 48*time.Hour:
		return t.UTC().Format(time.RFC3339)
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d/time.Minute))
	default:
		return fmt.Sprintf("%dh%02dm ago", int(d/time.Hour), int(d%time.Hour/time.Minute))
	}
}

// cell makes s safe for one table cell: devices report evidence and keys,
// so control and bidirectional-control characters (a terminal escape, a
// tab that would shift the columns, a newline) and runs of spaces become
// one space, and the result is cut to max characters with "…".
func cell(s string, max int) string {
	fields := strings.FieldsFunc(strings.ToValidUTF8(s, "?"), func(r rune) bool {
		return unicode.IsSpace(r) || unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r)
	})
	clean := []rune(strings.Join(fields, " "))
	if len(clean) <= max {
		return string(clean)
	}
	return strings.TrimRight(string(clean[:max-1]), " ") + "…"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
