package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/gitfleet/gitfleet/device/atomicfile"
	"github.com/gitfleet/gitfleet/device/devconfig"
)

// Device configuration in the daemon, following Mender Configure's device
// convention so that its apply scripts work unchanged:
//
//   - With every update poll the daemon fetches the configuration
//     (devconfig.ConfigPath) with If-None-Match, so an unchanged
//     configuration costs a 304.
//   - A configuration whose digest differs from the applied one is written
//     atomically, mode 0600, to the configuration file (devconfig.Encode's
//     bytes: a flat JSON object of strings), and every executable in the
//     scripts directory runs, in lexical order, with the file's path as its
//     only argument. The first script that fails stops the apply; the
//     status says which, its exit code and the tail of its output.
//   - A configuration whose apply failed is tried again when the desired
//     configuration changes, after RetryInterval, and once after each
//     reboot; not at every poll.
//   - At every poll the file is compared with the applied configuration: a
//     file changed on the device is reported once as drifted (and put back
//     only with RepairDrift, or when the desired configuration changes); a
//     missing file (a new root file system that does not keep it) is
//     written and applied again.
//
// The values may be secrets: they are never logged, and they are kept only
// in the configuration file and the state file in the data directory, both
// mode 0600.

// deviceConfigStateFile is the ConfigApplier's state in the data
// directory: the configuration last served and its ETag, the digest
// applied, the last failure, the drift reported and the reports not yet
// delivered.
const deviceConfigStateFile = "device-config-state.json"

// Exit codes of a failed devconfig.Status that are not a script's own.
const (
	// ConfigScriptTimedOut: the script ran past ScriptTimeout and its
	// process group was killed; the output ends with "timed out after".
	ConfigScriptTimedOut = -1
	// ConfigScriptNotRun: the script could not be started (not a valid
	// executable, no interpreter); the output says why.
	ConfigScriptNotRun = 126
	// ConfigScriptRebootRequested is what Mender Configure's scripts exit
	// with to say "applied, reboot needed". The agent takes it as success
	// and logs the request; it does not reboot the device for a
	// configuration.
	ConfigScriptRebootRequested = 20
)

// Defaults of ConfigApplierOptions.
const (
	DefaultConfigScriptTimeout = DefaultDeviceConfigTimeout * time.Second
	DefaultConfigRetryInterval = DefaultDeviceConfigRetry * time.Second
)

const (
	// maxPendingConfigStatuses bounds the statuses kept while the
	// controller cannot take them; the oldest go first.
	maxPendingConfigStatuses = 16
	// configKillGrace is the time between SIGTERM and SIGKILL to the
	// process group of a script that timed out.
	configKillGrace = 5 * time.Second
	// maxDeviceConfigState bounds the state file (the configuration and a
	// few statuses).
	maxDeviceConfigState = 4 * devconfig.MaxBody
)

// ConfigApplierOptions configure a ConfigApplier.
type ConfigApplierOptions struct {
	// DataDir holds the applier's state (device-config-state.json).
	// Required.
	DataDir string
	// Path is the configuration file the scripts read. Default
	// <DataDir>/device-config.json.
	Path string
	// ScriptsDir holds the apply scripts. Default
	// DefaultDeviceConfigScriptsDir. A missing directory is no scripts.
	ScriptsDir string
	// ScriptTimeout bounds one script. Default 5 minutes.
	ScriptTimeout time.Duration
	// RetryInterval: a failed configuration is tried again after this
	// long (and once after each reboot). Default 10 minutes.
	RetryInterval time.Duration
	// RepairDrift applies the desired configuration again when the file
	// is found changed (after reporting the drift).
	RepairDrift bool
	// BootID identifies the current boot ("" unknown); a failed
	// configuration is tried again once after each reboot. Default: no
	// retry on reboot.
	BootID func() string
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Logger; default slog.Default(). Values and the file's content are
	// never logged.
	Logger *slog.Logger
}

// ConfigApplier applies the device configuration the controller serves:
// the daemon's, and usable on its own (a load test runs many in one
// process, each with its own data directory). Its methods may be called
// from several goroutines; they run one at a time.
type ConfigApplier struct {
	opts   ConfigApplierOptions
	log    *slog.Logger
	now    func() time.Time
	bootID func() string

	run sync.Mutex // Poll and Reconcile, one at a time

	mu     sync.Mutex
	st     configState
	absent bool // the controller answered 404: it serves no configuration
}

// configState is the persisted state (deviceConfigStateFile).
type configState struct {
	// ETag and Desired: the configuration the controller served last.
	ETag    string                   `json:"etag,omitempty"`
	Desired *devconfig.Configuration `json:"desired,omitempty"`
	// Applied is the digest of the configuration whose scripts all
	// succeeded, written only after they did and cleared when an apply
	// starts: an apply interrupted by a crash or a power cut is done again.
	Applied string `json:"applied,omitempty"`
	// Failed is the last failed apply while it is the latest outcome, and
	// FailedBoot the boot it happened in.
	Failed     *devconfig.Status `json:"failed,omitempty"`
	FailedBoot string            `json:"failed_boot,omitempty"`
	// Drift is the digest of the changed file last reported as drifted.
	Drift string `json:"drift,omitempty"`
	// Pending are statuses not yet delivered, oldest first; Report is the
	// digest whose values are still to be reported (Mender's report).
	Pending []devconfig.Status `json:"pending,omitempty"`
	Report  string             `json:"report,omitempty"`
}

// NewConfigApplier returns an applier with the state its data directory
// holds (an unreadable state is logged and started afresh: the
// configuration is fetched and applied again).
func NewConfigApplier(opts ConfigApplierOptions) (*ConfigApplier, error) {
	if opts.DataDir == "" {
		return nil, errors.New("agent: device configuration: no data directory")
	}
	if opts.Path == "" {
		opts.Path = filepath.Join(opts.DataDir, "device-config.json")
	}
	if opts.ScriptsDir == "" {
		opts.ScriptsDir = DefaultDeviceConfigScriptsDir
	}
	// The scripts get the path as their argument; make it absolute so
	// that it means the same file whatever their working directory.
	for _, p := range []*string{&opts.DataDir, &opts.Path, &opts.ScriptsDir} {
		abs, err := filepath.Abs(*p)
		if err != nil {
			return nil, fmt.Errorf("agent: device configuration: %w", err)
		}
		*p = abs
	}
	if opts.ScriptTimeout <= 0 {
		opts.ScriptTimeout = DefaultConfigScriptTimeout
	}
	if opts.RetryInterval <= 0 {
		opts.RetryInterval = DefaultConfigRetryInterval
	}
	c := &ConfigApplier{opts: opts, log: opts.Logger, now: opts.Now, bootID: opts.BootID}
	if c.log == nil {
		c.log = slog.Default()
	}
	if c.now == nil {
		c.now = time.Now
	}
	if c.bootID == nil {
		c.bootID = func() string { return "" }
	}
	if err := os.MkdirAll(opts.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("agent: device configuration: data dir: %w", err)
	}
	path := c.statePath()
	b, err := readFileBounded(path, maxDeviceConfigState)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		c.log.Warn("device configuration state unreadable; starting afresh (the configuration is applied again)", "path", path, "err", err)
	default:
		if err := json.Unmarshal(b, &c.st); err != nil {
			c.st = configState{}
			c.log.Warn("device configuration state unreadable; starting afresh (the configuration is applied again)", "path", path, "err", err)
		}
	}
	return c, nil
}

// Path is the configuration file.
func (c *ConfigApplier) Path() string { return c.opts.Path }

func (c *ConfigApplier) statePath() string {
	return filepath.Join(c.opts.DataDir, deviceConfigStateFile)
}

// ConfigState is a ConfigApplier's view of the device configuration.
type ConfigState struct {
	// Desired is the digest of the configuration the controller served
	// last ("" before the first).
	Desired string
	// Applied is the digest of the configuration in force: its apply
	// scripts all succeeded ("" when none did, or the last apply failed).
	Applied string
	// Failed is the last failed apply while it is the latest outcome.
	Failed *devconfig.Status
	// Drift is the digest of the configuration file last reported as
	// changed on the device ("" while it is the applied one).
	Drift string
	// Pending counts the statuses and reports not yet delivered.
	Pending int
	// ServerAbsent: the controller's last answer was 404 (it serves no
	// device configuration).
	ServerAbsent bool
}

// State returns the applier's view of the configuration.
func (c *ConfigApplier) State() ConfigState {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := ConfigState{Applied: c.st.Applied, Drift: c.st.Drift, Pending: len(c.st.Pending), ServerAbsent: c.absent}
	if c.st.Desired != nil {
		s.Desired = c.st.Desired.Digest
	}
	if c.st.Failed != nil {
		f := *c.st.Failed
		s.Failed = &f
	}
	if c.st.Report != "" {
		s.Pending++
	}
	return s
}

// Poll is one round: it fetches the configuration (conditionally on the
// ETag kept), applies it when it is not the one in force (see Reconcile),
// and delivers the statuses and the configuration report not yet
// delivered. A 404 from the controller (it serves no configuration, e.g. a
// Mender server) is not an error: what is applied stays, and it is logged
// once. When the controller cannot be reached the stored configuration is
// still reconciled, and the error is returned.
func (c *ConfigApplier) Poll(ctx context.Context, api ConfigServer) error {
	c.run.Lock()
	defer c.run.Unlock()
	ferr := c.fetch(ctx, api)
	if err := ctx.Err(); err != nil {
		return err
	}
	c.reconcile(ctx)
	if err := ctx.Err(); err != nil {
		return err
	}
	c.mu.Lock()
	absent := c.absent
	c.mu.Unlock()
	if absent || errors.Is(ferr, ErrServer) || errors.Is(ferr, ErrUnauthorized) {
		return ferr // the deliveries would fail too; they wait for the next poll
	}
	return errors.Join(ferr, c.flush(ctx, api))
}

// Reconcile applies the stored configuration without asking the
// controller, what the daemon does when it starts: nothing when the
// applied configuration is the desired one and the file is intact; the
// configuration again when the file is missing (a new root file system
// that does not keep it) or its last apply was interrupted; a failed
// configuration again when it failed in an earlier boot or RetryInterval
// ago. A changed file is recorded as drift, reported at the next Poll.
func (c *ConfigApplier) Reconcile(ctx context.Context) {
	c.run.Lock()
	defer c.run.Unlock()
	c.reconcile(ctx)
}

// fetch asks the controller for the configuration and keeps it when it
// changed.
func (c *ConfigApplier) fetch(ctx context.Context, api ConfigServer) error {
	c.mu.Lock()
	etag := ""
	if c.st.Desired != nil {
		etag = c.st.ETag
	}
	c.mu.Unlock()
	ans, err := api.DeviceConfig(ctx, etag)
	if isStatus(err, http.StatusNotFound, http.StatusMethodNotAllowed) {
		c.mu.Lock()
		first := !c.absent
		c.absent = true
		c.mu.Unlock()
		if first {
			c.log.Info("the controller serves no device configuration (404); the configuration in use stays", "err", err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("device configuration: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.absent = false
	if ans.NotModified {
		return nil
	}
	cfg := ans.Config
	changed := c.st.Desired == nil || c.st.Desired.Digest != cfg.Digest
	if !changed && c.st.ETag == ans.ETag {
		return nil
	}
	c.st.Desired, c.st.ETag = &cfg, ans.ETag
	if changed {
		c.log.Info("device configuration received", "digest", cfg.Digest, "keys", len(cfg.Values))
	}
	c.saveLocked()
	return nil
}

// reconcile brings the device to the desired configuration (see
// Reconcile).
func (c *ConfigApplier) reconcile(ctx context.Context) {
	c.mu.Lock()
	var desired devconfig.Configuration
	if c.st.Desired != nil {
		desired = *c.st.Desired
	}
	applied, failed, failedBoot := c.st.Applied, c.st.Failed, c.st.FailedBoot
	c.mu.Unlock()
	if desired.Digest == "" {
		return // nothing served yet
	}
	if applied != desired.Digest {
		if failed != nil && failed.Digest == desired.Digest {
			boot := c.bootID()
			sinceReboot := boot != "" && failedBoot != "" && boot != failedBoot
			if !sinceReboot && c.now().Sub(failed.Time) < c.opts.RetryInterval {
				return
			}
			c.log.Info("applying the device configuration again after its failure", "digest", desired.Digest, "after_reboot", sinceReboot)
		}
		c.apply(ctx, desired)
		return
	}
	fd, err := fileDigest(c.opts.Path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		c.log.Info("the device configuration file is missing; applying the configuration again", "path", c.opts.Path, "digest", desired.Digest)
		c.apply(ctx, desired)
	case err != nil:
		c.log.Warn("the device configuration file cannot be read; drift not checked", "path", c.opts.Path, "err", err)
	case fd == desired.Digest:
		c.mu.Lock()
		if c.st.Drift != "" {
			c.st.Drift = ""
			c.queueLocked(devconfig.Status{Digest: desired.Digest, State: devconfig.Applied, Time: c.now().UTC()})
			c.saveLocked()
			c.log.Info("the device configuration file is the applied configuration again", "path", c.opts.Path, "digest", desired.Digest)
		}
		c.mu.Unlock()
	default:
		c.mu.Lock()
		if c.st.Drift != fd {
			c.st.Drift = fd
			c.queueLocked(devconfig.Status{Digest: desired.Digest, State: devconfig.Drifted, FileDigest: fd, Time: c.now().UTC()})
			c.saveLocked()
			c.log.Warn("the device configuration file was changed on the device (drift)", "path", c.opts.Path, "digest", desired.Digest, "file_digest", fd, "repair", c.opts.RepairDrift)
		}
		c.mu.Unlock()
		if c.opts.RepairDrift {
			c.apply(ctx, desired)
		}
	}
}

// apply writes cfg and runs the scripts, and records the outcome. Stopped
// by ctx, it records nothing but the cleared Applied: the next start
// applies again.
func (c *ConfigApplier) apply(ctx context.Context, cfg devconfig.Configuration) {
	c.mu.Lock()
	if c.st.Applied != "" {
		c.st.Applied = ""
		c.saveLocked()
	}
	c.mu.Unlock()
	start := c.now()
	st := c.runScripts(ctx, cfg)
	if ctx.Err() != nil {
		c.log.Info("stopped while applying the device configuration; it is applied again at the next start", "digest", cfg.Digest)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.queueLocked(st)
	if st.State == devconfig.Failed {
		f := st
		c.st.Failed, c.st.FailedBoot = &f, c.bootID()
		c.log.Warn("applying the device configuration failed; it is tried again when it changes, after a reboot or after the retry interval",
			"digest", cfg.Digest, "script", st.Script, "exit_code", st.ExitCode, "retry_in", c.opts.RetryInterval)
	} else {
		c.st.Applied, c.st.Failed, c.st.FailedBoot, c.st.Drift = cfg.Digest, nil, "", ""
		c.st.Report = cfg.Digest
		c.log.Info("device configuration applied", "digest", cfg.Digest, "path", c.opts.Path, "took", c.now().Sub(start).Round(time.Millisecond))
	}
	c.saveLocked()
}

// runScripts writes the file and runs the scripts; it returns the status
// to report (its State Applied or Failed).
func (c *ConfigApplier) runScripts(ctx context.Context, cfg devconfig.Configuration) devconfig.Status {
	st := devconfig.Status{Digest: cfg.Digest, State: devconfig.Failed, Time: c.now().UTC()}
	path := c.opts.Path
	err := os.MkdirAll(filepath.Dir(path), 0o755)
	if err == nil {
		err = atomicfile.WriteFile(path, devconfig.Encode(cfg.Values), 0o600)
	}
	if err != nil {
		st.Output = fmt.Sprintf("gitfleet-agent: cannot write the configuration file: %v", err)
		return st
	}
	scripts, err := c.scripts()
	if err != nil {
		st.Output = fmt.Sprintf("gitfleet-agent: cannot list the apply scripts: %v", err)
		return st
	}
	for _, s := range scripts {
		name := filepath.Base(s)
		res := runConfigScript(ctx, s, path, c.opts.ScriptTimeout)
		if ctx.Err() != nil {
			return st
		}
		c.log.Debug("device configuration script ran", "script", name, "exit_code", res.code, "took", res.took.Round(time.Millisecond))
		if res.code == 0 {
			continue
		}
		if res.code == ConfigScriptRebootRequested {
			c.log.Warn("a device configuration script asks for a reboot (exit 20); the agent does not reboot for a configuration", "script", name)
			continue
		}
		st.Script, st.ExitCode, st.Output = name, res.code, res.output
		return st
	}
	st.State = devconfig.Applied
	return st
}

// scripts lists the executables of the scripts directory in lexical
// order: regular files (or links to them) with an execute bit, not hidden.
// A missing directory has none.
func (c *ConfigApplier) scripts() ([]string, error) {
	entries, err := os.ReadDir(c.opts.ScriptsDir)
	if errors.Is(err, fs.ErrNotExist) {
		c.log.Debug("no device configuration scripts directory; the file is written and nothing runs", "dir", c.opts.ScriptsDir)
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries { // sorted by name
		if strings.HasPrefix(e.Name(), ".") {
			continue
		}
		p := filepath.Join(c.opts.ScriptsDir, e.Name())
		fi, err := os.Stat(p)
		if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
			continue
		}
		out = append(out, p)
	}
	return out, nil
}

// flush delivers the pending statuses, then the configuration report. A
// status or report the controller refuses (400, 404, 413, 422) is dropped
// and logged; any other failure keeps the rest for the next poll.
func (c *ConfigApplier) flush(ctx context.Context, api ConfigServer) error {
	changed := false
	defer func() {
		if changed {
			c.mu.Lock()
			c.saveLocked()
			c.mu.Unlock()
		}
	}()
	for {
		c.mu.Lock()
		if len(c.st.Pending) == 0 {
			c.mu.Unlock()
			break
		}
		st := c.st.Pending[0]
		c.mu.Unlock()
		err := api.SendConfigStatus(ctx, st)
		if err != nil && !dropReport(err) {
			return fmt.Errorf("device configuration status: %w", err)
		}
		if err != nil {
			c.log.Error("the controller refused a device configuration status; dropping it", "state", st.State, "digest", st.Digest, "err", err)
		}
		c.mu.Lock()
		c.st.Pending = c.st.Pending[1:]
		changed = true
		c.mu.Unlock()
	}
	c.mu.Lock()
	digest := c.st.Report
	var values map[string]string
	if digest != "" && c.st.Desired != nil && c.st.Desired.Digest == digest && c.st.Applied == digest {
		values = c.st.Desired.Values
	}
	c.mu.Unlock()
	if digest == "" {
		return nil
	}
	if values != nil {
		err := api.ReportConfig(ctx, values)
		if err != nil && !dropReport(err) {
			return fmt.Errorf("device configuration report: %w", err)
		}
		if err != nil {
			c.log.Error("the controller refused the device configuration report; dropping it", "digest", digest, "err", err)
		}
	}
	c.mu.Lock()
	if c.st.Report == digest {
		c.st.Report = ""
		changed = true
	}
	c.mu.Unlock()
	return nil
}

// dropReport: the controller refused the request itself; sending it again
// cannot succeed.
func dropReport(err error) bool {
	return refused(err) || isStatus(err, http.StatusNotFound, http.StatusMethodNotAllowed)
}

// queueLocked adds a status to deliver (c.mu held).
func (c *ConfigApplier) queueLocked(st devconfig.Status) {
	c.st.Pending = append(c.st.Pending, st)
	if n := len(c.st.Pending) - maxPendingConfigStatuses; n > 0 {
		c.st.Pending = slices.Delete(c.st.Pending, 0, n)
	}
}

// saveLocked writes the state (c.mu held); a failure is logged: the
// configuration is then applied again after a restart.
func (c *ConfigApplier) saveLocked() {
	b, err := json.Marshal(c.st)
	if err == nil {
		err = atomicfile.WriteFile(c.statePath(), b, 0o600)
	}
	if err != nil {
		c.log.Warn("device configuration state not saved; the configuration may be applied again after a restart", "err", err)
	}
}

// fileDigest is devconfig.DigestOf the file's content.
func fileDigest(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

// --- running a script -----------------------------------------------------------

// scriptResult is the outcome of one apply script.
type scriptResult struct {
	code   int    // exit code, 128+signal, ConfigScriptTimedOut or ConfigScriptNotRun
	output string // the tail of its output, at most devconfig.MaxOutput bytes
	took   time.Duration
}

// runConfigScript runs script with arg in its own process group, its
// combined output kept to the last devconfig.MaxOutput bytes. When timeout
// passes (or ctx ends) the group gets SIGTERM, and SIGKILL configKillGrace
// later.
func runConfigScript(ctx context.Context, script, arg string, timeout time.Duration) scriptResult {
	start := time.Now()
	out := &tailBuffer{max: devconfig.MaxOutput}
	cmd := exec.Command(script, arg)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// Stop waiting for the output of processes the script left running
	// (a daemon it started) once the script itself has exited.
	cmd.WaitDelay = time.Second
	if err := cmd.Start(); err != nil {
		return scriptResult{code: ConfigScriptNotRun, output: fitOutput(nil, "gitfleet-agent: cannot run the script: "+err.Error()), took: time.Since(start)}
	}
	tctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	done := make(chan struct{})
	killed := make(chan struct{})
	fired := false // read after killed is closed
	go func() {
		defer close(killed)
		select {
		case <-done:
			return
		case <-tctx.Done():
		}
		fired = true
		pid := cmd.Process.Pid
		_ = syscall.Kill(-pid, syscall.SIGTERM)
		t := time.NewTimer(configKillGrace)
		defer t.Stop()
		select {
		case <-done:
		case <-t.C:
			_ = syscall.Kill(-pid, syscall.SIGKILL)
		}
	}()
	err := cmd.Wait()
	close(done)
	<-killed
	// A script that exited 0 as the time ran out succeeded.
	timedOut := fired && err != nil && ctx.Err() == nil
	res := scriptResult{took: time.Since(start)}
	var ee *exec.ExitError
	switch {
	case timedOut:
		res.code = ConfigScriptTimedOut
		res.output = fitOutput(out.bytes(), fmt.Sprintf("\n[gitfleet-agent: %s timed out after %s; its process group was killed]", filepath.Base(script), timeout))
		return res
	case errors.As(err, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			res.code = 128 + int(ws.Signal())
			res.output = fitOutput(out.bytes(), fmt.Sprintf("\n[gitfleet-agent: killed by signal %s]", ws.Signal()))
			return res
		}
		res.code = ee.ExitCode()
	case err != nil && !errors.Is(err, exec.ErrWaitDelay):
		// exec.ErrWaitDelay: the script exited 0 but left a process
		// holding its output open; that is success.
		res.code = ConfigScriptNotRun
		res.output = fitOutput(out.bytes(), "\n[gitfleet-agent: "+err.Error()+"]")
		return res
	}
	if res.code != 0 {
		res.output = fitOutput(out.bytes(), "")
	}
	return res
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	max       int
	buf       []byte
	truncated bool
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	n := len(p)
	if len(p) >= t.max {
		t.truncated = t.truncated || len(p) > t.max || len(t.buf) > 0
		t.buf = append(t.buf[:0], p[len(p)-t.max:]...)
		return n, nil
	}
	if over := len(t.buf) + len(p) - t.max; over > 0 {
		t.truncated = true
		t.buf = t.buf[:copy(t.buf, t.buf[over:])]
	}
	t.buf = append(t.buf, p...)
	return n, nil
}

func (t *tailBuffer) bytes() []byte {
	if t.truncated {
		return append([]byte("…"), t.buf...)
	}
	return t.buf
}

// fitOutput is the tail of out followed by note, valid UTF-8, at most
// devconfig.MaxOutput bytes in all.
func fitOutput(out []byte, note string) string {
	limit := max(devconfig.MaxOutput-len(note), 0)
	s := strings.ToValidUTF8(string(out), "\uFFFD")
	if len(s) > limit {
		// The last limit bytes, from the first whole rune.
		s = s[len(s)-limit:]
		for len(s) > 0 && !utf8.RuneStart(s[0]) {
			s = s[1:]
		}
	}
	return s + note
}

// --- in the daemon ---------------------------------------------------------------

// configApplier returns the daemon's ConfigApplier and the API it talks
// to; nil when the configuration turns it off, the server serves no
// configuration API, or the applier cannot be made (logged: configuration
// never stands in the way of an update).
func (a *Agent) configApplier() (*ConfigApplier, ConfigServer) {
	if !a.cfg.DeviceConfigEnabled() {
		return nil, nil
	}
	api := a.cfgAPI
	if api == nil {
		api, _ = a.server.(ConfigServer)
	}
	if api == nil {
		a.log.Info("the server does not serve device configuration; none is applied")
		return nil, nil
	}
	opts := a.cfg.ConfigApplierOptions()
	opts.Now, opts.BootID = a.now, a.bootID
	opts.Logger = a.log.With("component", "deviceconfig")
	ca, err := NewConfigApplier(opts)
	if err != nil {
		a.log.Error("device configuration is off", "err", err)
		return nil, nil
	}
	return ca, api
}
