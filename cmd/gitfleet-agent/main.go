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
//	gitfleet-agent version                         print the agent's version
//	gitfleet-agent help [COMMAND]                  usage, or one command's help
//
// The flags may come before the command or after it; unknown commands and
// flags are usage errors. The daemon also runs the device's monitoring
// checks (device/monitor) and applies the device configuration the
// controller serves; --no-monitor and --no-device-config (or "Monitor" and
// "DeviceConfig": false in the configuration) turn them off. With
// "RemoteTerminal": {"Enabled": true} the daemon also takes remote
// sessions (device/remote: mender-cli terminal, cp, port-forward).
//
// Exit status: 0 success, 1 failure (the reason is the last line on
// stderr), 2 usage, 75 (with RebootByExit) the agent wants the device
// rebooted and started again. docs/agent.md is the user's reference.
//
// Release builds set the version with -ldflags "-X main.version=…";
// without it the module version or VCS revision Go recorded is printed.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"sort"
	"strings"
	"syscall"

	"github.com/gitfleet/gitfleet/cmd/internal/buildinfo"
	"github.com/gitfleet/gitfleet/device/agent"
)

const defaultConfig = "/etc/gitfleet/agent.json"

// version is set at link time by release builds (scripts/dist).
var version = ""

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// options are the flags; every command accepts the common ones, before or
// after its name.
type options struct {
	config         string
	logLevel       string
	noMonitor      bool
	noDeviceConfig bool
}

func (o *options) common(fs *flag.FlagSet) {
	fs.StringVar(&o.config, "config", defaultConfig, "configuration `FILE` (JSON, mender.conf names)")
	fs.StringVar(&o.logLevel, "log-level", "", "`LEVEL`: debug, info, warn or error (default: the configuration's DaemonLogLevel, else info)")
}

func (o *options) daemon(fs *flag.FlagSet) {
	fs.BoolVar(&o.noMonitor, "no-monitor", false, `do not run the monitoring checks (as "Monitor": false in the configuration)`)
	fs.BoolVar(&o.noDeviceConfig, "no-device-config", false, `do not apply the device configuration (as "DeviceConfig": false in the configuration)`)
}

// command is one subcommand.
type command struct {
	name   string
	args   string // argument synopsis
	nargs  int
	short  string
	long   string
	online bool // needs the server (ServerURL, the device key)
	daemon bool // takes --no-monitor and --no-device-config
	run    func(ctx context.Context, a *agent.Agent, args []string, stdout io.Writer) error
}

var commands = []*command{
	{
		name: "daemon", short: "managed mode: resume, poll for deployments, send inventory",
		online: true, daemon: true, run: runDaemon,
		long: `Resumes the deployment in progress, then polls the server for deployments
every UpdatePollIntervalSeconds and sends the inventory every
InventoryPollIntervalSeconds; while the server cannot be reached it backs
off up to RetryPollIntervalSeconds. Stops on SIGTERM or SIGINT; the state
record says where to go on after a restart or a power cut.

Monitoring: runs the monitoring checks the controller assigns to the device
and delivers their alerts. "MonitorRoot" (default /) is the directory the
checks read /proc, /sys, /etc and watched paths under. --no-monitor (or
"Monitor": false) turns monitoring off.

Device configuration: after every update poll, fetches the configuration
the controller serves, writes it as a JSON object to "DeviceConfigPath"
(default <DataDir>/device-config.json, mode 0600) and runs every executable
in "DeviceConfigScriptsDir" (default /usr/lib/gitfleet/apply-device-config.d)
in lexical order with the file's path as argument, as Mender Configure
does. A failed configuration is tried again after "DeviceConfigRetrySeconds",
after a reboot, or when it changes. --no-device-config (or "DeviceConfig":
false) turns it off.

A deployment is downloaded only from an https URL (plain http too with
"AllowHTTPDownloads": true); any other source fails the deployment, and the
failure is reported.

Remote terminal: with "RemoteTerminal": {"Enabled": true}, keeps a
connection to the controller for operators' mender-cli terminal, cp and
port-forward (as mender-connect does for the Mender client). Off by default:
the device then takes no remote session.`,
	},
	{
		name: "check-update", short: "poll once and run the deployment it brings",
		online: true, run: runCheckUpdate,
		long: `Asks the server once for a deployment and, when there is one, runs it to
its end (or to the reboot it needs). Prints "no update" when there is none.
Exit status 1 when the deployment failed (the failure was reported).`,
	},
	{
		name: "send-inventory", short: "send the inventory once",
		online: true, run: func(ctx context.Context, a *agent.Agent, _ []string, _ io.Writer) error { return a.SendInventory(ctx) },
		long: `Runs the inventory scripts ("InventoryScriptsDir") and sends their
attributes, with the device's own, to the server once.`,
	},
	{
		name: "install", args: "FILE|URL", nargs: 1, short: "install an artifact without a server; reboot, then commit",
		run: runInstall,
		long: `Installs the artifact in FILE, or downloads it from an http(s) URL, without a
server. Then reboot, and run "gitfleet-agent commit" (or "rollback"). When
ArtifactVerifyKey(s) is set, the artifact must be signed by one of the keys.
Exit status 1 when the artifact is damaged, unsigned or signed by an
untrusted key, carries content its signature does not cover, is not for
this device, or its install failed.`,
	},
	{
		name: "commit", short: "commit the update in progress", run: runCommit,
		long: `Makes the update installed by "install" permanent, after the reboot into it.
Exit status 1 when there is nothing to commit or the commit failed.`,
	},
	{
		name: "rollback", short: "roll the update in progress back", run: runRollback,
		long: `Returns to the software that ran before the update in progress. Reboot
afterwards if the old software is not the one running. Exit status 1 when
there is nothing to roll back or the rollback failed.`,
	},
	{
		name: "show-artifact", short: "print the running artifact's name", run: runShowArtifact,
		long: `Prints the name of the artifact the device runs (artifact_name).`,
	},
	{
		name: "show-provides", short: "print everything the device provides", run: runShowProvides,
		long: `Prints every name=value the running software provides (artifact_name,
rootfs-image.checksum, …), sorted.`,
	},
}

func lookup(name string) *command {
	for _, c := range commands {
		if c.name == name {
			return c
		}
	}
	return nil
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage: gitfleet-agent [--config FILE] [--log-level LEVEL] COMMAND [FLAGS] [ARG]

commands:
`)
	for _, c := range commands {
		fmt.Fprintf(w, "  %-18s %s\n", strings.TrimSpace(c.name+" "+c.args), c.short)
	}
	fmt.Fprint(w, `  version            print the agent's version
  help [COMMAND]     this text, or one command's help

flags (before or after the command):
  --config FILE      configuration (default /etc/gitfleet/agent.json)
  --log-level LEVEL  debug, info, warn or error (default: DaemonLogLevel, else info)
  --no-monitor, --no-device-config   daemon only; see "gitfleet-agent help daemon"

exit status:
  0   success
  1   failure, with a one-line reason as the last line on stderr
  2   usage error
  75  with RebootByExit: reboot the device, then start the agent again

The configuration reference is docs/agent.md.
`)
}

func commandUsage(w io.Writer, c *command, fs *flag.FlagSet) {
	fmt.Fprintf(w, "usage: gitfleet-agent %s [FLAGS]", c.name)
	if c.args != "" {
		fmt.Fprintf(w, " %s", c.args)
	}
	fmt.Fprintf(w, "\n\n%s\n\n%s\n\nflags:\n", c.short, c.long)
	fs.SetOutput(w)
	fs.PrintDefaults()
}

// newFlagSet returns the flags of command c (nil: the flags that may come
// before the command) writing into o.
func newFlagSet(c *command, o *options, stderr io.Writer) *flag.FlagSet {
	name := "gitfleet-agent"
	if c != nil {
		name += " " + c.name
	}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	o.common(fs)
	if c == nil || c.daemon {
		o.daemon(fs)
	}
	return fs
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var o options
	global := newFlagSet(nil, &o, io.Discard)
	if err := global.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			usage(stdout)
			return 0
		}
		fmt.Fprintf(stderr, "gitfleet-agent: %v\n\n", err)
		usage(stderr)
		return 2
	}
	if global.NArg() == 0 {
		fmt.Fprint(stderr, "gitfleet-agent: no command given\n\n")
		usage(stderr)
		return 2
	}
	name, rest := global.Arg(0), global.Args()[1:]
	switch name {
	case "help":
		return help(rest, stdout, stderr)
	case "version":
		if len(rest) > 0 {
			fmt.Fprintf(stderr, "gitfleet-agent: version takes no arguments (got %q)\n", rest)
			return 2
		}
		fmt.Fprintf(stdout, "gitfleet-agent %s (%s, %s/%s)\n", agentVersion(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return 0
	}
	c := lookup(name)
	if c == nil {
		fmt.Fprintf(stderr, "gitfleet-agent: unknown command %q\n\n", name)
		usage(stderr)
		return 2
	}
	// Flags given before the command keep their values unless given again.
	before := map[string]string{}
	global.Visit(func(f *flag.Flag) { before[f.Name] = f.Value.String() })
	fs := newFlagSet(c, &o, io.Discard)
	for name, v := range before {
		if fs.Lookup(name) == nil {
			fmt.Fprintf(stderr, "gitfleet-agent: --%s applies to daemon only\n\n", name)
			commandUsage(stderr, c, fs)
			return 2
		}
		_ = fs.Set(name, v)
	}
	if err := fs.Parse(rest); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			commandUsage(stdout, c, fs)
			return 0
		}
		fmt.Fprintf(stderr, "gitfleet-agent %s: %v\n\n", c.name, err)
		commandUsage(stderr, c, fs)
		return 2
	}
	if fs.NArg() != c.nargs {
		if c.nargs == 0 {
			fmt.Fprintf(stderr, "gitfleet-agent %s: takes no arguments (got %q)\n\n", c.name, fs.Args())
		} else {
			fmt.Fprintf(stderr, "gitfleet-agent %s: wants %s (got %d arguments)\n\n", c.name, c.args, fs.NArg())
		}
		commandUsage(stderr, c, fs)
		return 2
	}
	return execute(ctx, c, &o, fs, stdout, stderr)
}

func help(args []string, stdout, stderr io.Writer) int {
	switch {
	case len(args) == 0:
		usage(stdout)
		return 0
	case len(args) > 1:
		fmt.Fprintf(stderr, "gitfleet-agent help: one command at a time (got %q)\n", args)
		return 2
	}
	switch args[0] {
	case "version":
		fmt.Fprintln(stdout, "usage: gitfleet-agent version\n\nPrints the agent's version, the Go version it was built with and its platform.")
		return 0
	case "help":
		fmt.Fprintln(stdout, "usage: gitfleet-agent help [COMMAND]\n\nPrints the list of commands, or one command's help.")
		return 0
	}
	c := lookup(args[0])
	if c == nil {
		fmt.Fprintf(stderr, "gitfleet-agent help: unknown command %q\n\n", args[0])
		usage(stderr)
		return 2
	}
	var o options
	commandUsage(stdout, c, newFlagSet(c, &o, stdout))
	return 0
}

// execute loads the configuration, builds the agent and runs c.
func execute(ctx context.Context, c *command, o *options, flags *flag.FlagSet, stdout, stderr io.Writer) int {
	cfg, err := agent.LoadConfig(o.config)
	if errors.Is(err, fs.ErrNotExist) {
		fmt.Fprintf(stderr, "gitfleet-agent: %s; write it (docs/agent.md lists the keys) or name another with --config FILE\n", oneLine(err))
		return 1
	}
	if err != nil {
		fmt.Fprintln(stderr, "gitfleet-agent:", oneLine(err))
		return 1
	}
	level := o.logLevel
	if level == "" {
		level = cfg.DaemonLogLevel
	}
	var lv slog.Level
	if level != "" {
		if err := lv.UnmarshalText([]byte(level)); err != nil {
			fmt.Fprintf(stderr, "gitfleet-agent: --log-level %q: want debug, info, warn or error\n", level)
			return 2
		}
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lv}))
	if len(cfg.Ignored) > 0 {
		lvl := slog.LevelDebug
		if c.name == "daemon" {
			lvl = slog.LevelWarn
		}
		log.Log(ctx, lvl, "mender.conf settings without effect on gitfleet-agent", "config", o.config, "keys", strings.Join(cfg.Ignored, ","))
	}
	if o.noMonitor {
		off := false
		cfg.Monitor = &off
	}
	if o.noDeviceConfig {
		off := false
		cfg.DeviceConfig = &off
	}
	a, err := newAgent(cfg, log, c.online)
	if err != nil {
		fmt.Fprintln(stderr, "gitfleet-agent:", oneLine(err))
		return 1
	}
	if c.name == "daemon" {
		stopRemote, err := startRemote(ctx, a.Config(), a, log)
		if err != nil {
			fmt.Fprintln(stderr, "gitfleet-agent:", oneLine(err))
			return 1
		}
		defer stopRemote()
	}
	err = c.run(ctx, a, flags.Args(), stdout)
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
		fmt.Fprintln(stderr, "gitfleet-agent:", oneLine(err))
		return 1
	}
	return 0
}

// oneLine is err's message on one line: scripts read the last line of
// stderr.
func oneLine(err error) string {
	return strings.Join(strings.Fields(strings.TrimPrefix(err.Error(), "agent: ")), " ")
}

func runDaemon(ctx context.Context, a *agent.Agent, _ []string, _ io.Writer) error {
	return a.Daemon(ctx)
}

func runCheckUpdate(ctx context.Context, a *agent.Agent, _ []string, stdout io.Writer) error {
	found, err := a.CheckUpdate(ctx)
	if err == nil && !found {
		fmt.Fprintln(stdout, "no update")
	}
	return err
}

func runInstall(ctx context.Context, a *agent.Agent, args []string, stdout io.Writer) error {
	if err := a.Install(ctx, args[0]); err != nil {
		return err
	}
	if rec, _ := a.Record(); rec != nil {
		fmt.Fprintf(stdout, "installed %s: reboot, then run \"gitfleet-agent commit\" (or \"rollback\")\n", rec.Deployment.ArtifactName)
	}
	return nil
}

func runCommit(ctx context.Context, a *agent.Agent, _ []string, stdout io.Writer) error {
	if err := a.Commit(ctx); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "committed")
	return nil
}

func runRollback(ctx context.Context, a *agent.Agent, _ []string, stdout io.Writer) error {
	if err := a.Rollback(ctx); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "rolled back; reboot to run the old software if it is not running")
	return nil
}

func runShowArtifact(_ context.Context, a *agent.Agent, _ []string, stdout io.Writer) error {
	info, err := a.ArtifactInfo()
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, info["artifact_name"])
	return nil
}

func runShowProvides(_ context.Context, a *agent.Agent, _ []string, stdout io.Writer) error {
	info, err := a.ArtifactInfo()
	if err != nil {
		return err
	}
	keys := make([]string, 0, len(info))
	for k := range info {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(stdout, "%s=%s\n", k, info[k])
	}
	return nil
}

// agentVersion is the version set at link time, else what the Go
// toolchain recorded.
func agentVersion() string { return buildinfo.Read(version, "").Short() }
