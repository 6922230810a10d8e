// Command gitfleet-agent is the Gitfleet device agent. It speaks the Mender
// device API, so it updates from a Gitfleet controller (or a Mender server),
// and reads a mender.conf-compatible JSON configuration.
//
//	gitfleet-agent [--config FILE] daemon          managed mode: poll, install, report
//	gitfleet-agent [--config FILE] check-update    one poll (and the deployment it brings)
//	gitfleet-agent [--config FILE] send-inventory  send the inventory once
//	gitfleet-agent [--config FILE] install FILE|URL  standalone install; then reboot and commit
//	gitfleet-agent [--config FILE] commit          commit the update in progress
//	gitfleet-agent [--config FILE] rollback        roll the update in progress back
//	gitfleet-agent [--config FILE] show-artifact   print the running artifact's name
//	gitfleet-agent [--config FILE] show-provides   print everything the device provides
//
// The daemon also runs the device's monitoring checks (device/monitor) and
// delivers their alerts to the controller; --no-monitor, or "Monitor":
// false in the configuration, turns that off. It applies the device
// configuration the controller serves the way Mender Configure does;
// --no-device-config, or "DeviceConfig": false, turns that off.
//
// Exit status: 0 success, 1 failure (the reason is the last line on
// stderr), 2 usage, 75 (with RebootByExit) the agent wants the device
// rebooted and started again. See usage for what counts as a failure.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"

	"github.com/gitfleet/gitfleet/device/agent"
)

const defaultConfig = "/etc/gitfleet/agent.json"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage: gitfleet-agent [--config FILE] [--log-level LEVEL] [--no-monitor] [--no-device-config] COMMAND [ARG]

commands:
  daemon            managed mode: resume, poll for deployments, send inventory
  check-update      poll once and run the deployment it brings
  send-inventory    send the inventory once
  install FILE|URL  install an artifact without a server; reboot, then commit
  commit            commit the update in progress
  rollback          roll the update in progress back
  show-artifact     print the running artifact's name
  show-provides     print everything the device provides

monitoring: the daemon runs the monitoring checks the controller assigns
to the device and delivers their alerts; --no-monitor (or "Monitor": false
in the configuration) turns that off. "MonitorRoot" (default /) is the
directory the checks read /proc, /sys, /etc and watched paths under.

device configuration: the daemon fetches the configuration the controller
serves (DeviceConfig in the fleet repository) after every update poll,
writes it as a JSON object to "DeviceConfigPath" (default
<DataDir>/device-config.json, mode 0600) and runs every executable in
"DeviceConfigScriptsDir" (default /usr/lib/gitfleet/apply-device-config.d)
in lexical order with the file's path as argument, as Mender Configure
does (to reuse its scripts and file, point these at
/usr/lib/mender-configure/apply-device-config.d and
/var/lib/mender-configure/device-config.json). Each script has
"DeviceConfigScriptTimeoutSeconds" (default 300); a failed configuration
is tried again after "DeviceConfigRetrySeconds" (default 600), after a
reboot, or when it changes. A file changed by hand is reported as drift
(and rewritten with "DeviceConfigRepairDrift": true). --no-device-config
(or "DeviceConfig": false) turns it off.

exit status:
  0   success: install installed the artifact (reboot, then commit),
      check-update found nothing or its deployment succeeded, commit
      committed, rollback rolled back
  1   failure, with a one-line reason as the last line on stderr: the
      artifact is damaged, unsigned or signed by an untrusted key (when
      ArtifactVerifyKey(s) is set), carries content its signature does not
      cover, is not for this device, or its install, commit or rollback
      failed; a deployment that failed (and was reported to the server);
      nothing to commit or roll back; a bad configuration
  2   usage error
  75  with RebootByExit: reboot the device, then start the agent again

download sources: install takes a local file or an http(s) URL. A
deployment from the server is downloaded only from an https URL (plain http
too with "AllowHTTPDownloads": true); any other source it names (a local
path, file://) fails the deployment, and the failure is reported.
`)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("gitfleet-agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { usage(stderr) }
	cfgPath := fs.String("config", defaultConfig, "configuration file (JSON, mender.conf names)")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	noMonitor := fs.Bool("no-monitor", false, `do not run the monitoring checks (as "Monitor": false in the configuration)`)
	noDeviceConfig := fs.Bool("no-device-config", false, `do not apply the device configuration (as "DeviceConfig": false in the configuration)`)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() == 0 {
		usage(stderr)
		return 2
	}
	cmd, rest := fs.Arg(0), fs.Args()[1:]
	want := 0
	if cmd == "install" {
		want = 1
	}
	if len(rest) != want {
		usage(stderr)
		return 2
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(*level)); err != nil {
		fmt.Fprintln(stderr, "gitfleet-agent: --log-level:", err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lv}))

	cfg, err := agent.LoadConfig(*cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, "gitfleet-agent:", err)
		return 1
	}
	if *noMonitor {
		off := false
		cfg.Monitor = &off
	}
	if *noDeviceConfig {
		off := false
		cfg.DeviceConfig = &off
	}
	a, err := newAgent(cfg, log, cmd == "daemon" || cmd == "check-update" || cmd == "send-inventory")
	if err != nil {
		fmt.Fprintln(stderr, "gitfleet-agent:", err)
		return 1
	}
	switch cmd {
	case "daemon":
		err = a.Daemon(ctx)
	case "check-update":
		var found bool
		found, err = a.CheckUpdate(ctx)
		if err == nil && !found {
			fmt.Fprintln(stdout, "no update")
		}
	case "send-inventory":
		err = a.SendInventory(ctx)
	case "install":
		if err = a.Install(ctx, rest[0]); err == nil {
			if rec, _ := a.Record(); rec != nil {
				fmt.Fprintf(stdout, "installed %s: reboot, then run \"gitfleet-agent commit\" (or \"rollback\")\n", rec.Deployment.ArtifactName)
			}
		}
	case "commit":
		err = a.Commit(ctx)
		if err == nil {
			fmt.Fprintln(stdout, "committed")
		}
	case "rollback":
		err = a.Rollback(ctx)
		if err == nil {
			fmt.Fprintln(stdout, "rolled back; reboot to run the old software if it is not running")
		}
	case "show-artifact":
		var info map[string]string
		if info, err = a.ArtifactInfo(); err == nil {
			fmt.Fprintln(stdout, info["artifact_name"])
		}
	case "show-provides":
		var info map[string]string
		if info, err = a.ArtifactInfo(); err == nil {
			keys := make([]string, 0, len(info))
			for k := range info {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				fmt.Fprintf(stdout, "%s=%s\n", k, info[k])
			}
		}
	default:
		fmt.Fprintf(stderr, "gitfleet-agent: unknown command %q\n", cmd)
		usage(stderr)
		return 2
	}
	switch {
	case errors.Is(err, agent.ErrRebooting):
		if cfg.RebootByExit {
			log.Info("reboot requested")
			return agent.ExitRebootRequested
		}
		return 0
	case err != nil && ctx.Err() != nil && errors.Is(err, context.Canceled):
		return 0 // stopped by a signal; the state record says where to go on
	case err != nil:
		// One line: scripts read the last line of stderr.
		msg := strings.Join(strings.Fields(strings.TrimPrefix(err.Error(), "agent: ")), " ")
		fmt.Fprintln(stderr, "gitfleet-agent:", msg)
		return 1
	}
	return 0
}
