// Package sim is a simulated A/B device for tests and demos. It runs the
// real agent (the gitfleet-agent binary, as a process) against files that
// stand in for the hardware:
//
//	DIR/mmcblk0p2, DIR/mmcblk0p3   partitions A and B (plain files of a fixed size)
//	DIR/env                        the bootloader environment (bootenv.File)
//	DIR/booted                     which partition the last boot step booted
//	DIR/boot_id                    a new random ID at every boot
//	DIR/agent.json                 the agent's configuration
//	DIR/data/                      the agent's data dir (key, state record, artifact_info)
//	DIR/device_type, DIR/artifact_info, DIR/identity, DIR/inventory/
//	DIR/apply-device-config.d/     the device configuration's apply scripts (empty;
//	                               the file is DIR/data/device-config.json)
//
// The boot step ([Device.Boot]) does what U-Boot does with Mender's
// integration: boot mender_boot_part; while upgrade_available=1 count the
// boot in bootcount, and once bootcount exceeds bootlimit switch
// mender_boot_part back to the other partition and clear
// upgrade_available (altbootcmd). It then records the booted partition for
// the agent to check.
//
// "Reboot" is: stop the agent process, run the boot step, start it again.
// The agent asks for one by exiting with agent.ExitRebootRequested
// (RebootByExit); [Device.Start] supervises it and does exactly that.
// [Device.Kill] is a power cut: SIGKILL at whatever instant; follow it
// with Boot and Start.
package sim

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gitfleet/gitfleet/device/agent"
	"github.com/gitfleet/gitfleet/device/bootenv"
)

// Options configure a simulated device. Zero values take the defaults
// given.
type Options struct {
	// AgentBinary is the gitfleet-agent executable. Required for Start.
	AgentBinary string
	// ServerURL and ServerCertificate (a PEM file) point at the controller.
	ServerURL, ServerCertificate string
	// DeviceType; default "sim".
	DeviceType string
	// ArtifactName is the artifact of the initial image; default "initial".
	ArtifactName string
	// Image is the initial content of partition A; default "initial image".
	Image []byte
	// PartitionSize is the size of each partition file; default 4 MiB.
	PartitionSize int64
	// BootLimit is U-Boot's bootlimit; default 1 (Mender's).
	BootLimit int
	// Identity is what the identity script prints; default
	// mac=<a random address>.
	Identity map[string]string
	// ArtifactVerifyKeys are PEM public key files the agent trusts.
	ArtifactVerifyKeys []string
	// HealthCheck is the agent's health check command.
	HealthCheck []string
	// AllowDowngrade, MaxBootCount: passed to the agent.
	AllowDowngrade bool
	MaxBootCount   int
	// Poll intervals in seconds; defaults 1 (update), 3600 (inventory),
	// 1 (retry).
	UpdatePollSeconds, InventoryPollSeconds, RetryPollSeconds int
	// Bootable, when set, is asked at each boot whether the partition's
	// content boots; an unbootable trial partition makes the boot step
	// try again (as a watchdog reset would), which counts the trial down.
	Bootable func(image []byte) bool
	// Config, when set, edits the agent configuration before it is written.
	Config func(*agent.Config)
	// Log receives the agent's output; default io.Discard.
	Log io.Writer
}

// Device is a simulated device.
type Device struct {
	dir  string
	opts Options
	env  *bootenv.File

	mu       sync.Mutex
	cmd      *exec.Cmd
	stopping bool
	done     chan struct{}
	reboots  int
	exitErr  error
}

// Partition numbers of A and B (mender_boot_part).
const (
	PartA = 2
	PartB = 3
)

// ErrUnbootable: no partition boots (the device is bricked).
var ErrUnbootable = errors.New("sim: no bootable partition")

// New creates a device in dir (which must exist), or opens the device
// already there.
func New(dir string, opts Options) (*Device, error) {
	if opts.DeviceType == "" {
		opts.DeviceType = "sim"
	}
	if opts.ArtifactName == "" {
		opts.ArtifactName = "initial"
	}
	if opts.Image == nil {
		opts.Image = []byte("initial image")
	}
	if opts.PartitionSize <= 0 {
		opts.PartitionSize = 4 << 20
	}
	if opts.BootLimit <= 0 {
		opts.BootLimit = 1
	}
	if opts.UpdatePollSeconds <= 0 {
		opts.UpdatePollSeconds = 1
	}
	if opts.InventoryPollSeconds <= 0 {
		opts.InventoryPollSeconds = 3600
	}
	if opts.RetryPollSeconds <= 0 {
		opts.RetryPollSeconds = 1
	}
	if opts.Log == nil {
		opts.Log = io.Discard
	}
	d := &Device{dir: dir, opts: opts, env: bootenv.NewFile(filepath.Join(dir, "env"))}
	if _, err := os.Stat(d.path("agent.json")); err == nil {
		return d, nil // an existing device
	}
	if err := d.create(); err != nil {
		return nil, fmt.Errorf("sim: %w", err)
	}
	return d, nil
}

func (d *Device) path(name string) string { return filepath.Join(d.dir, name) }

// PartitionPath returns the file of partition A or B ("A", "B").
func (d *Device) PartitionPath(name string) string {
	if name == "B" {
		return d.path("mmcblk0p3")
	}
	return d.path("mmcblk0p2")
}

// ConfigPath is the agent's configuration file.
func (d *Device) ConfigPath() string { return d.path("agent.json") }

// Dir is the device's directory.
func (d *Device) Dir() string { return d.dir }

func (d *Device) create() error {
	for _, name := range []string{"A", "B"} {
		f, err := os.Create(d.PartitionPath(name))
		if err != nil {
			return err
		}
		if name == "A" {
			if _, err := f.Write(d.opts.Image); err != nil {
				f.Close()
				return err
			}
		}
		if err := f.Truncate(d.opts.PartitionSize); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
	}
	id := d.opts.Identity
	if id == nil {
		b := make([]byte, 6)
		rand.Read(b)
		b[0] = b[0]&^1 | 2 // locally administered unicast
		id = map[string]string{"mac": fmt.Sprintf("%02x:%02x:%02x:%02x:%02x:%02x", b[0], b[1], b[2], b[3], b[4], b[5])}
	}
	script := "#!/bin/sh\n"
	for k, v := range id {
		script += fmt.Sprintf("echo %s\n", shellQuote(k+"="+v))
	}
	files := map[string]string{
		"identity":      script,
		"device_type":   "device_type=" + d.opts.DeviceType + "\n",
		"artifact_info": "artifact_name=" + d.opts.ArtifactName + "\n",
	}
	for name, body := range files {
		if err := os.WriteFile(d.path(name), []byte(body), 0o755); err != nil {
			return err
		}
	}
	for _, sub := range []string{"data", "inventory", "modules", "scripts", "apply-device-config.d"} {
		if err := os.MkdirAll(d.path(sub), 0o755); err != nil {
			return err
		}
	}
	inv := "#!/bin/sh\necho sim=true\n"
	if err := os.WriteFile(d.path("inventory/mender-inventory-sim"), []byte(inv), 0o755); err != nil {
		return err
	}
	ctx := context.Background()
	if err := d.env.Set(ctx, map[string]string{
		bootenv.VarBootPart: strconv.Itoa(PartA), bootenv.VarBootPartHex: strconv.FormatInt(PartA, 16),
		bootenv.VarUpgradeAvailable: "0", bootenv.VarBootCount: "0",
		"bootlimit": strconv.Itoa(d.opts.BootLimit),
	}); err != nil {
		return err
	}
	cfg := agent.Config{
		ServerURL:                    d.opts.ServerURL,
		ServerCertificate:            d.opts.ServerCertificate,
		UpdatePollIntervalSeconds:    d.opts.UpdatePollSeconds,
		InventoryPollIntervalSeconds: d.opts.InventoryPollSeconds,
		RetryPollIntervalSeconds:     d.opts.RetryPollSeconds,
		ArtifactVerifyKeys:           d.opts.ArtifactVerifyKeys,
		RootfsPartA:                  d.PartitionPath("A"),
		RootfsPartB:                  d.PartitionPath("B"),
		DeviceTypeFile:               d.path("device_type"),
		ArtifactScriptsPath:          d.path("data/scripts"),
		RootfsScriptsPath:            d.path("scripts"),
		DataDir:                      d.path("data"),
		IdentityScript:               d.path("identity"),
		InventoryScriptsDir:          d.path("inventory"),
		ModulesDir:                   d.path("modules"),
		ModulesWorkDir:               d.path("data/modules"),
		ArtifactInfoFile:             d.path("artifact_info"),
		BootEnv:                      "file",
		BootEnvFile:                  d.path("env"),
		BootedPartitionFile:          d.path("booted"),
		BootIDFile:                   d.path("boot_id"),
		RebootByExit:                 true,
		HealthCheck:                  d.opts.HealthCheck,
		AllowDowngrade:               d.opts.AllowDowngrade,
		MaxBootCount:                 d.opts.MaxBootCount,
		DeviceConfigScriptsDir:       d.path("apply-device-config.d"),
	}
	if d.opts.Config != nil {
		d.opts.Config(&cfg)
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(d.ConfigPath(), b, 0o644)
}

func shellQuote(s string) string {
	out := "'"
	for _, r := range s {
		if r == '\'' {
			out += `'\''`
		} else {
			out += string(r)
		}
	}
	return out + "'"
}

// Env returns the bootloader environment.
func (d *Device) Env() bootenv.Env { return d.env }

// Boot is the bootloader's boot step (see the package documentation). It
// returns the partition booted ("A" or "B").
func (d *Device) Boot() (string, error) {
	ctx := context.Background()
	for tries := 0; tries < 16; tries++ {
		part, err := d.bootOnce(ctx)
		if err != nil {
			return "", err
		}
		if d.opts.Bootable != nil {
			img, err := os.ReadFile(d.PartitionPath(part))
			if err != nil {
				return "", err
			}
			if !d.opts.Bootable(img) {
				st, err := bootenv.ReadState(ctx, d.env)
				if err != nil {
					return "", err
				}
				if st.UpgradeAvailable {
					continue // the watchdog resets; the trial counts down
				}
				return "", fmt.Errorf("%w: partition %s does not boot", ErrUnbootable, part)
			}
		}
		id := make([]byte, 16)
		rand.Read(id)
		if err := writeFile(d.path("boot_id"), hex.EncodeToString(id)+"\n"); err != nil {
			return "", err
		}
		if err := writeFile(d.path("booted"), d.PartitionPath(part)+"\n"); err != nil {
			return "", err
		}
		return part, nil
	}
	return "", fmt.Errorf("%w: the boot loops", ErrUnbootable)
}

// bootOnce applies U-Boot's bootcount logic to the environment and returns
// the partition it boots.
func (d *Device) bootOnce(ctx context.Context) (string, error) {
	vars, err := d.env.Get(ctx)
	if err != nil {
		return "", err
	}
	st, err := bootenv.ReadState(ctx, d.env)
	if err != nil {
		return "", err
	}
	limit, err := strconv.Atoi(vars["bootlimit"])
	if err != nil {
		limit = 1
	}
	part := st.Part
	if st.UpgradeAvailable {
		count := st.BootCount + 1
		set := map[string]string{bootenv.VarBootCount: strconv.Itoa(count)}
		if count > limit {
			// altbootcmd: back to the other partition, trial over.
			part = other(part)
			set[bootenv.VarBootPart] = strconv.Itoa(part)
			set[bootenv.VarBootPartHex] = strconv.FormatInt(int64(part), 16)
			set[bootenv.VarUpgradeAvailable] = "0"
		}
		if err := d.env.Set(ctx, set); err != nil {
			return "", err
		}
	}
	switch part {
	case PartA:
		return "A", nil
	case PartB:
		return "B", nil
	}
	return "", fmt.Errorf("%w: mender_boot_part=%d", ErrUnbootable, part)
}

func other(part int) int {
	if part == PartA {
		return PartB
	}
	return PartA
}

// Booted returns the partition the last boot step booted ("A" or "B"), or
// "" before the first boot.
func (d *Device) Booted() string {
	b, err := os.ReadFile(d.path("booted"))
	if err != nil {
		return ""
	}
	switch strings.TrimSpace(string(b)) {
	case d.PartitionPath("A"):
		return "A"
	case d.PartitionPath("B"):
		return "B"
	}
	return ""
}

// Image returns the content of the booted partition.
func (d *Device) Image() ([]byte, error) {
	p := d.Booted()
	if p == "" {
		return nil, errors.New("sim: not booted")
	}
	return os.ReadFile(d.PartitionPath(p))
}

// Record returns the agent's state record (nil when idle).
func (d *Device) Record() (*agent.Record, error) {
	return agent.NewRecords(d.path("data/state.json")).Load()
}

// ArtifactName returns the artifact the agent says the device runs.
func (d *Device) ArtifactName() string {
	for _, p := range []string{d.path("data/artifact_info"), d.path("artifact_info")} {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "artifact_name="); ok {
				return v
			}
		}
	}
	return ""
}

// Start boots the device if it has never booted and starts the agent
// daemon, supervising it: when the agent asks for a reboot (exit status
// agent.ExitRebootRequested) the boot step runs and the agent starts
// again.
func (d *Device) Start() error {
	if d.opts.AgentBinary == "" {
		return errors.New("sim: Options.AgentBinary is not set")
	}
	if d.Booted() == "" {
		if _, err := d.Boot(); err != nil {
			return err
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.done != nil {
		return errors.New("sim: agent already running")
	}
	d.stopping = false
	d.done = make(chan struct{})
	if err := d.startLocked(); err != nil {
		close(d.done)
		d.done = nil
		return err
	}
	go d.supervise(d.cmd, d.done)
	return nil
}

func (d *Device) startLocked() error {
	cmd := exec.Command(d.opts.AgentBinary, "--config", d.ConfigPath(), "--log-level", "debug", "daemon")
	cmd.Stdout, cmd.Stderr = d.opts.Log, d.opts.Log
	cmd.Dir = d.dir
	cmd.SysProcAttr = agentProcAttr()
	cmd.WaitDelay = time.Second
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("sim: start agent: %w", err)
	}
	d.cmd = cmd
	return nil
}

func (d *Device) supervise(cmd *exec.Cmd, done chan struct{}) {
	defer close(done)
	for {
		err := cmd.Wait()
		d.mu.Lock()
		if d.stopping {
			d.mu.Unlock()
			return
		}
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != agent.ExitRebootRequested {
			d.exitErr = fmt.Errorf("sim: agent exited: %v", err)
			d.mu.Unlock()
			return
		}
		d.reboots++
		d.mu.Unlock()
		if _, err := d.Boot(); err != nil {
			d.mu.Lock()
			d.exitErr = err
			d.mu.Unlock()
			return
		}
		d.mu.Lock()
		if d.stopping {
			d.mu.Unlock()
			return
		}
		if err := d.startLocked(); err != nil {
			d.exitErr = err
			d.mu.Unlock()
			return
		}
		cmd = d.cmd
		d.mu.Unlock()
	}
}

// Stop stops the agent with SIGTERM and waits for it.
func (d *Device) Stop() error { return d.halt(syscall.SIGTERM) }

// Kill stops the agent with SIGKILL, at whatever it is doing (a power
// cut), and waits for it. Run Boot before starting it again.
func (d *Device) Kill() error { return d.halt(syscall.SIGKILL) }

func (d *Device) halt(sig syscall.Signal) error {
	d.mu.Lock()
	done := d.done
	if done == nil {
		d.mu.Unlock()
		return nil
	}
	d.stopping = true
	if d.cmd != nil && d.cmd.Process != nil {
		// The whole process group: a power cut stops the modules and
		// scripts the agent started too.
		syscall.Kill(-d.cmd.Process.Pid, sig)
	}
	d.mu.Unlock()
	<-done
	d.mu.Lock()
	d.done = nil
	err := d.exitErr
	d.exitErr = nil
	d.mu.Unlock()
	return err
}

// Running reports whether the agent is supervised (started, not stopped,
// not exited).
func (d *Device) Running() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.done == nil {
		return false
	}
	select {
	case <-d.done:
		return false
	default:
		return true
	}
}

// Reboots counts the reboots the agent asked for since New.
func (d *Device) Reboots() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.reboots
}

// Err returns why the agent exited on its own, if it did.
func (d *Device) Err() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.exitErr
}

// RunCommand runs a one-shot agent command (install, commit, rollback,
// show-artifact, …) and returns its output and exit status.
func (d *Device) RunCommand(ctx context.Context, args ...string) (string, int, error) {
	cmd := exec.CommandContext(ctx, d.opts.AgentBinary, append([]string{"--config", d.ConfigPath()}, args...)...)
	cmd.Dir = d.dir
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(out), ee.ExitCode(), nil
	}
	if err != nil {
		return string(out), -1, err
	}
	return string(out), 0, nil
}

func writeFile(path, s string) error {
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(s); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
