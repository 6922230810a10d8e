// Command gitfleet-sim runs simulated devices for demos and the quickstart:
// each is a directory standing in for an A/B device (device/sim) whose
// agent is the real gitfleet-agent binary, with a small root file system
// of its own under DIR/NAME/root that update modules write into and
// monitoring checks read.
//
//	gitfleet-sim run    --dir DIR --server URL --ca-cert FILE [--count 5] ...
//	gitfleet-sim alert  --dir DIR [--device NAME] [MESSAGE]
//	gitfleet-sim status --dir DIR
//
// Device N (from 1) is named PREFIX-00N and identifies itself with the MAC
// address 02:00:00:00:00:NN (hex), so its Device manifest can be committed
// before it first starts (the quickstart's examples/quickstart/devices.yaml).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/gitfleet/gitfleet/cmd/internal/buildinfo"
	"github.com/gitfleet/gitfleet/device/agent"
	"github.com/gitfleet/gitfleet/device/sim"
)

// version is set at release builds with -ldflags "-X main.version=…".
var version = ""

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

const usageText = `usage: gitfleet-sim COMMAND [flags]

commands:
  run      start simulated devices and supervise them until interrupted
  alert    make a device's "hello" application log an ERROR line (the
           quickstart's hello-errors check raises an alert from it)
  status   print each device's artifact, booted partition and hello file
  version  print the version

'gitfleet-sim COMMAND -h' lists a command's flags.
`

// usageError is a command-line mistake: exit status 2 with the usage.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usageText)
		return 2
	}
	var err error
	switch args[0] {
	case "run":
		err = cmdRun(ctx, args[1:], stdout, stderr)
	case "alert":
		err = cmdAlert(args[1:], stdout, stderr)
	case "status":
		err = cmdStatus(args[1:], stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, "gitfleet-sim", buildVersion())
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usageText)
		return 0
	default:
		err = usageError{fmt.Sprintf("unknown command %q", args[0])}
	}
	if err == nil {
		return 0
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	fmt.Fprintln(stderr, "gitfleet-sim:", err)
	var ue usageError
	if errors.As(err, &ue) {
		fmt.Fprint(stderr, usageText)
		return 2
	}
	return 1
}

func buildVersion() string { return buildinfo.Read(version, "").Short() }

// newFlags returns a flag set whose errors are returned, not printed and
// exited on, with the usage of the command on stderr.
func newFlags(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: gitfleet-sim %s\n\nflags:\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses args and refuses positional arguments beyond max.
func parse(fs *flag.FlagSet, args []string, max int) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err.Error()}
	}
	if fs.NArg() > max {
		return usageError{fmt.Sprintf("%s: unexpected argument %q", fs.Name(), fs.Arg(max))}
	}
	return nil
}

// simConfig is what run needs to make or reopen one device.
type simConfig struct {
	dir, server, caCert, agentBin, deviceType, initial string
	keys                                               []string
	poll                                               int
}

func cmdRun(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("run", "run --dir DIR --server URL --ca-cert FILE [flags]", stderr)
	var (
		c      simConfig
		count  int
		prefix string
		keys   stringList
	)
	fs.StringVar(&c.dir, "dir", "", "directory holding the devices (one subdirectory each; made when missing)")
	fs.StringVar(&c.server, "server", "", "the controller's URL, e.g. https://127.0.0.1:8443")
	fs.StringVar(&c.caCert, "ca-cert", "", "PEM certificate the devices trust for --server (the controller's dev-tls.crt)")
	fs.IntVar(&count, "count", 5, "number of devices (1…99)")
	fs.StringVar(&prefix, "prefix", "sim", "device names are PREFIX-001, PREFIX-002, …")
	fs.StringVar(&c.deviceType, "device-type", "gitfleet-sim", "device type the devices report")
	fs.StringVar(&c.initial, "artifact", "hello-1", "artifact name of the devices' initial image")
	fs.Var(&keys, "artifact-key", "PEM public key the devices verify artifacts with (repeat for several)")
	fs.IntVar(&c.poll, "poll", 5, "seconds between update polls")
	fs.StringVar(&c.agentBin, "agent", "", "gitfleet-agent binary (default: next to gitfleet-sim, else on PATH)")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	c.keys = keys
	switch {
	case c.dir == "":
		return usageError{"run: --dir is required"}
	case c.server == "":
		return usageError{"run: --server is required (the controller's https:// URL)"}
	case !strings.HasPrefix(c.server, "https://"):
		return usageError{fmt.Sprintf("run: --server %q: the agent talks to the controller over https:// only", c.server)}
	case count < 1 || count > 99:
		return usageError{fmt.Sprintf("run: --count %d: want 1…99", count)}
	case c.poll < 1:
		return usageError{fmt.Sprintf("run: --poll %d: want at least 1 second", c.poll)}
	}
	if c.caCert != "" {
		if _, err := os.Stat(c.caCert); err != nil {
			return fmt.Errorf("run: --ca-cert: %w", err)
		}
	}
	bin, err := agentBinary(c.agentBin)
	if err != nil {
		return err
	}
	c.agentBin = bin
	for i, k := range c.keys {
		abs, err := filepath.Abs(k)
		if err != nil {
			return err
		}
		c.keys[i] = abs
	}
	if c.dir, err = filepath.Abs(c.dir); err != nil {
		return err
	}
	if c.caCert != "" {
		if c.caCert, err = filepath.Abs(c.caCert); err != nil {
			return err
		}
	}

	var devices []*sim.Device
	var names []string
	var logs []*os.File
	defer func() {
		for _, d := range devices {
			_ = d.Stop()
		}
		for _, f := range logs {
			f.Close()
		}
	}()
	for i := 1; i <= count; i++ {
		name := fmt.Sprintf("%s-%03d", prefix, i)
		d, logf, err := openDevice(c, name, i)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		logs = append(logs, logf)
		if err := d.Start(); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		devices = append(devices, d)
		names = append(names, name)
		fmt.Fprintf(stdout, "%s: started (artifact %s, log %s)\n", name, d.ArtifactName(), logf.Name())
	}

	// Report what changes: a new artifact, a reboot, an agent that died.
	last := make([]string, len(devices))
	for i, d := range devices {
		last[i] = d.ArtifactName()
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			fmt.Fprintf(stdout, "stopping %d devices\n", len(devices))
			return nil
		case <-tick.C:
		}
		for i, d := range devices {
			if now := d.ArtifactName(); now != last[i] {
				fmt.Fprintf(stdout, "%s: now runs %s\n", names[i], now)
				last[i] = now
			}
			if err := d.Err(); err != nil && !d.Running() {
				return fmt.Errorf("%s: %w (see %s)", names[i], err, logs[i].Name())
			}
		}
	}
}

// openDevice makes device number i in c.dir/name, or opens the one there
// (pointing it at c.server, which may have changed since it was made).
func openDevice(c simConfig, name string, i int) (*sim.Device, *os.File, error) {
	dir := filepath.Join(c.dir, name)
	root := filepath.Join(dir, "root")
	for _, sub := range []string{dir, filepath.Join(root, "var/log"), filepath.Join(root, "etc"), filepath.Join(root, "opt")} {
		if err := os.MkdirAll(sub, 0o755); err != nil {
			return nil, nil, err
		}
	}
	// The hello application's log exists from the start, so the
	// monitoring check watching it sees every line written later.
	if hl := filepath.Join(root, helloLog); !exists(hl) {
		line := time.Now().UTC().Format(time.RFC3339) + " INFO hello: started\n"
		if err := os.WriteFile(hl, []byte(line), 0o644); err != nil {
			return nil, nil, err
		}
	}
	logf, err := os.OpenFile(filepath.Join(dir, "agent.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, nil, err
	}
	yes := true
	d, err := sim.New(dir, sim.Options{
		AgentBinary:        c.agentBin,
		ServerURL:          c.server,
		ServerCertificate:  c.caCert,
		DeviceType:         c.deviceType,
		ArtifactName:       c.initial,
		Identity:           map[string]string{"mac": fmt.Sprintf("02:00:00:00:00:%02x", i)},
		ArtifactVerifyKeys: c.keys,
		UpdatePollSeconds:  c.poll,
		// Inventory often enough that a new device joins its groups soon.
		InventoryPollSeconds: 30,
		RetryPollSeconds:     c.poll,
		Config: func(cfg *agent.Config) {
			cfg.Monitor = &yes
			cfg.MonitorRoot = root
		},
		Log: logf,
	})
	if err != nil {
		logf.Close()
		return nil, nil, err
	}
	if err := pointAt(d.ConfigPath(), c); err != nil {
		logf.Close()
		return nil, nil, err
	}
	if err := writeDeviceFiles(d, root); err != nil {
		logf.Close()
		return nil, nil, err
	}
	return d, logf, nil
}

// pointAt rewrites the server, CA and trusted keys of an existing device's
// agent configuration.
func pointAt(path string, c simConfig) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var cfg map[string]any
	if err := json.Unmarshal(b, &cfg); err != nil {
		return fmt.Errorf("%s: %w (delete the device's directory to make it anew)", path, err)
	}
	cfg["ServerURL"] = c.server
	delete(cfg, "ServerCertificate")
	if c.caCert != "" {
		cfg["ServerCertificate"] = c.caCert
	}
	delete(cfg, "ArtifactVerifyKeys")
	if len(c.keys) > 0 {
		cfg["ArtifactVerifyKeys"] = c.keys
	}
	out, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, out, 0o644)
}

// writeDeviceFiles installs the device's update module and configuration
// script, both working inside its root.
func writeDeviceFiles(d *sim.Device, root string) error {
	files := map[string]string{
		filepath.Join(d.Dir(), "modules", "single-file"):                   singleFileModule(root),
		filepath.Join(d.Dir(), "apply-device-config.d", "50-hello-config"): applyConfigScript(root),
	}
	for path, body := range files {
		if err := os.WriteFile(path, []byte(body), 0o755); err != nil {
			return err
		}
	}
	return nil
}

// singleFileModule is an update module speaking the stock single-file
// module's payload convention (files dest_dir, filename and the file) that
// installs under root instead of "/", keeping the replaced file for
// rollback.
func singleFileModule(root string) string {
	return `#!/bin/sh
# The single-file update module of a simulated device: installs the file
# named by the payload's "filename" into the payload's "dest_dir" under
# the device's root (written by gitfleet-sim).
set -eu
ROOT=` + shellQuote(root) + `
STATE="$1"
FILES="$2"
backup="$FILES/tmp/backup"
dest() {
  d=$(cat "$FILES/files/dest_dir"); f=$(cat "$FILES/files/filename")
  case "$d/$f" in *..*) echo "single-file: refusing a path with '..': $d/$f" >&2; exit 1;; esac
  case "$f" in */*|"") echo "single-file: filename must be a plain file name: '$f'" >&2; exit 1;; esac
  echo "$ROOT/$d/$f"
}
case "$STATE" in
  NeedsArtifactReboot) echo No ;;
  SupportsRollback) echo Yes ;;
  ArtifactInstall)
    target=$(dest)
    mkdir -p "$(dirname "$target")" "$backup"
    if [ -e "$target" ]; then cp -p "$target" "$backup/file"; else : > "$backup/absent"; fi
    cp "$FILES/files/$(cat "$FILES/files/filename")" "$target.tmp"
    mv "$target.tmp" "$target"
    ;;
  ArtifactRollback)
    target=$(dest)
    if [ -e "$backup/file" ]; then cp -p "$backup/file" "$target.tmp" && mv "$target.tmp" "$target"
    elif [ -e "$backup/absent" ]; then rm -f "$target"; fi
    ;;
esac
exit 0
`
}

// applyConfigScript writes the device configuration's greeting where the
// hello application reads it.
func applyConfigScript(root string) string {
	return `#!/bin/sh
# Applies the DeviceConfig the controller serves (written by gitfleet-sim).
set -eu
ROOT=` + shellQuote(root) + `
cp "$1" "$ROOT/etc/hello.json.tmp" && mv "$ROOT/etc/hello.json.tmp" "$ROOT/etc/hello.json"
`
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// agentBinary finds gitfleet-agent: the flag, else next to this
// executable, else on PATH.
func agentBinary(flagValue string) (string, error) {
	if flagValue != "" {
		if _, err := os.Stat(flagValue); err != nil {
			return "", fmt.Errorf("--agent: %w", err)
		}
		return filepath.Abs(flagValue)
	}
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), "gitfleet-agent")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	p, err := exec.LookPath("gitfleet-agent")
	if err != nil {
		return "", errors.New("gitfleet-agent not found next to gitfleet-sim or on PATH: build it (make build) or pass --agent")
	}
	return p, nil
}

type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// helloLog is where the quickstart's hello application logs, inside a
// device's root; the hello-errors MonitorCheck watches it.
const helloLog = "var/log/hello.log"

func cmdAlert(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("alert", "alert --dir DIR [--device NAME] [MESSAGE]", stderr)
	dir := fs.String("dir", "", "directory holding the devices")
	device := fs.String("device", "sim-005", "the device whose hello application logs the error")
	if err := parse(fs, args, 1); err != nil {
		return err
	}
	if *dir == "" {
		return usageError{"alert: --dir is required"}
	}
	if strings.ContainsAny(*device, `/\`) || *device == "" || *device == "." || *device == ".." {
		return usageError{fmt.Sprintf("alert: --device %q is not a device name", *device)}
	}
	root := filepath.Join(*dir, *device, "root")
	if _, err := os.Stat(filepath.Join(*dir, *device, "agent.json")); err != nil {
		return fmt.Errorf("alert: no device %s in %s (gitfleet-sim status lists them)", *device, *dir)
	}
	msg := "hello: cannot reach the upstream service"
	if fs.NArg() == 1 {
		msg = strings.ReplaceAll(fs.Arg(0), "\n", " ")
	}
	f, err := os.OpenFile(filepath.Join(root, helloLog), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	line := fmt.Sprintf("%s ERROR %s\n", time.Now().UTC().Format(time.RFC3339), msg)
	if _, err := f.WriteString(line); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: logged %q to /%s; its agent reports the alert at its next check\n", *device, strings.TrimSpace(line), helloLog)
	return nil
}

func cmdStatus(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("status", "status --dir DIR", stderr)
	dir := fs.String("dir", "", "directory holding the devices")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	if *dir == "" {
		return usageError{"status: --dir is required"}
	}
	entries, err := os.ReadDir(*dir)
	if err != nil {
		return err
	}
	var names []string
	for _, e := range entries {
		if _, err := os.Stat(filepath.Join(*dir, e.Name(), "agent.json")); e.IsDir() && err == nil {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	if len(names) == 0 {
		return fmt.Errorf("status: no devices in %s", *dir)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DEVICE\tARTIFACT\tBOOTED\tUPDATE\t/opt/hello/hello.txt")
	for _, n := range names {
		d, err := sim.New(filepath.Join(*dir, n), sim.Options{})
		if err != nil {
			return err
		}
		update := "-"
		if rec, err := d.Record(); err == nil && rec != nil {
			update = string(rec.State)
		}
		hello := "-"
		if b, err := os.ReadFile(filepath.Join(*dir, n, "root/opt/hello/hello.txt")); err == nil {
			hello = strings.TrimSpace(string(b))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", n, d.ArtifactName(), orDash(d.Booted()), update, hello)
	}
	return tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
