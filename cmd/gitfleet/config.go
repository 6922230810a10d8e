package main

import (
	"fmt"
	"net/url"
	"strings"

	"github.com/spf13/cobra"

	"github.com/gitfleet/gitfleet/controller"
	"github.com/gitfleet/gitfleet/controller/store"
)

func newConfigCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Device configuration: what the fleet's devices run",
	}
	cmd.AddCommand(newConfigStatusCmd())
	return cmd
}

func newConfigStatusCmd() *cobra.Command {
	var (
		mc      mgmtClient
		devices bool
		state   string
		limit   int
		asJSON  bool
	)
	cmd := &cobra.Command{
		Use:   "status [DEVICECONFIG]",
		Short: "Show, per DeviceConfig, how many devices run the configuration the live commit gives them",
		Long: `Show, for each DeviceConfig of the commit the controller serves, the devices
it applies to and how many of them run the configuration that commit gives
them: IN SYNC (applied), PENDING (not reported yet, or still running an older
configuration), DRIFTED (applied, then its file was changed on the device) and
FAILED (an apply script failed: the script, its exit code and the end of its
output are listed below the table). A device's configuration merges every
DeviceConfig that applies to it, so a device counts under each of them.

With --devices, list devices one by one instead (of DEVICECONFIG, or of the
whole fleet), optionally only those in --state.

Secret values are never shown: keys only.

Talks to the controller's management API: --server, --token and --ca-cert
(or GITFLEET_SERVER, GITFLEET_TOKEN, GITFLEET_CA_CERT, or the CLI
configuration file; see gitfleet help login).`,
		Example: `  gitfleet config status
  gitfleet config status wifi --devices --state failed`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := ""
			if len(args) == 1 {
				name = args[0]
			}
			switch state {
			case "", controller.ConfigInSync, controller.ConfigPending, controller.ConfigDrifted, controller.ConfigFailed:
			default:
				return fmt.Errorf("--state %q: want in_sync, pending, drifted or failed", state)
			}
			if state != "" && !devices {
				return fmt.Errorf("--state lists devices: add --devices")
			}
			if limit < 1 || limit > store.MaxPage {
				return fmt.Errorf("--limit %d: want 1…%d", limit, store.MaxPage)
			}
			if devices {
				q := url.Values{"limit": {fmt.Sprint(limit)}}
				if name != "" {
					q.Set("config", name)
				}
				if state != "" {
					q.Set("state", state)
				}
				_, err := listing(cmd, &mc, "/api/management/v1/config/devices?"+q.Encode(), "devices", asJSON,
					"no devices match", "DEVICE\tSTATE\tDESIRED\tREPORTED\tVIA\tDETAIL", func(d controller.DeviceConfigState) string {
						return fmt.Sprintf("%s\t%s\t%s\t%s\t%s\t%s", cell(d.Device, 64), d.State, shortDigest(d.Desired),
							orDash(shortDigest(d.Reported)), orDash(d.Via), orDash(configDetail(d)))
					})
				return err
			}
			var resp struct {
				Configs []controller.ConfigSummary `json:"configs"`
			}
			if err := mc.get(cmd.Context(), "/api/management/v1/config", &resp); err != nil {
				return failed(err)
			}
			var shown []controller.ConfigSummary
			for _, c := range resp.Configs {
				if name == "" || c.Name == name {
					shown = append(shown, c)
				}
			}
			if name != "" && len(shown) == 0 {
				return failed(fmt.Errorf("no DeviceConfig called %q in the commit the controller serves", name))
			}
			if asJSON {
				return printJSON(cmd, shown)
			}
			if len(shown) == 0 {
				fmt.Fprintln(cmd.ErrOrStderr(), "the commit the controller serves declares no DeviceConfig")
				return nil
			}
			tw := newTable(cmd)
			fmt.Fprintln(tw, "DEVICECONFIG\tLEVEL\tKEYS\tDEVICES\tIN SYNC\tPENDING\tDRIFTED\tFAILED")
			for _, c := range shown {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\n", cell(c.Name, 64), c.Level, cell(strings.Join(c.Keys, ","), 48),
					c.Targets, c.InSync, c.Pending, c.Drifted, c.Failed)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			for _, c := range shown {
				for _, p := range c.Problems {
					fmt.Fprintf(cmd.OutOrStdout(), "%s: %s %s: %s\n", c.Name, cell(p.Device, 64), p.State, configDetail(p))
				}
			}
			return nil
		},
	}
	f := cmd.Flags()
	mc.flags(f)
	f.BoolVar(&devices, "devices", false, "list devices one by one")
	f.StringVar(&state, "state", "", "with --devices, only those in_sync, pending, drifted or failed")
	f.IntVar(&limit, "limit", 100, "with --devices, list at most this many (1…1000)")
	f.BoolVar(&asJSON, "json", false, "print JSON, as the management API returns it")
	return cmd
}

// configDetail says why a device is not in sync.
func configDetail(d controller.DeviceConfigState) string {
	switch d.State {
	case controller.ConfigFailed:
		out := strings.TrimSpace(d.Output)
		if i := strings.LastIndexByte(out, '\n'); i >= 0 {
			out = out[i+1:]
		}
		return fmt.Sprintf("%s exited %d: %s", cell(d.Script, 64), d.ExitCode, cell(out, 80))
	case controller.ConfigDrifted:
		return "the configuration file was changed on the device"
	case controller.ConfigPending:
		if d.Reported != "" {
			return "runs an older configuration"
		}
		return "has not reported a configuration"
	}
	return ""
}

// shortDigest is "sha256:" and the first 12 hex digits.
func shortDigest(d string) string {
	if len(d) > len("sha256:")+12 {
		return d[:len("sha256:")+12]
	}
	return d
}
