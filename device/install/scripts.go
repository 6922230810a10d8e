package install

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gitfleet/gitfleet/artifact"
	"github.com/gitfleet/gitfleet/device/atomicfile"
)

// State names a state of the update flow, as state scripts and update
// modules name it.
type State string

// The states. Idle, Sync and Download scripts come from the root
// filesystem; the Artifact* ones from the artifact. ArtifactVerifyReboot,
// ArtifactVerifyRollbackReboot and Cleanup are module states without
// scripts.
const (
	StateIdle                         State = "Idle"
	StateSync                         State = "Sync"
	StateDownload                     State = "Download"
	StateArtifactInstall              State = "ArtifactInstall"
	StateArtifactReboot               State = "ArtifactReboot"
	StateArtifactVerifyReboot         State = "ArtifactVerifyReboot"
	StateArtifactCommit               State = "ArtifactCommit"
	StateArtifactRollback             State = "ArtifactRollback"
	StateArtifactRollbackReboot       State = "ArtifactRollbackReboot"
	StateArtifactVerifyRollbackReboot State = "ArtifactVerifyRollbackReboot"
	StateArtifactFailure              State = "ArtifactFailure"
	StateCleanup                      State = "Cleanup"
)

// rootfsStates are the states whose scripts live on the root filesystem.
var rootfsStates = []State{StateIdle, StateSync, StateDownload}

// Action is when a script runs within its state.
type Action string

// The actions.
const (
	Enter Action = "Enter"
	Leave Action = "Leave"
	Error Action = "Error"
)

// ExitRetryLater is the exit status with which a script asks to be run again
// after RunnerOptions.RetryInterval.
const ExitRetryLater = 21

// Clock is the time source of retries; tests inject a fake one.
type Clock interface {
	Now() time.Time
	// Sleep waits for d or until ctx is done (then it returns ctx.Err()).
	Sleep(ctx context.Context, d time.Duration) error
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// RunnerOptions configure state scripts. Defaults are the Mender client's.
type RunnerOptions struct {
	// RootfsDir holds the Idle, Sync and Download scripts that ship with
	// the root filesystem. Default /etc/mender/scripts.
	RootfsDir string
	// ArtifactDir is where Store puts the artifact's scripts, which the
	// Artifact* states run. Default /var/lib/mender/scripts.
	ArtifactDir string
	// Timeout bounds one run of one script (StateScriptTimeoutSeconds).
	// Default 1 hour.
	Timeout time.Duration
	// RetryInterval is the wait before running again a script that exited
	// with 21 (StateScriptRetryIntervalSeconds). Default 60 seconds.
	RetryInterval time.Duration
	// RetryTimeout is how long after its first run a script may still ask
	// for a retry; past it, exit 21 is a failure
	// (StateScriptRetryTimeoutSeconds). Default 30 minutes.
	RetryTimeout time.Duration
	// Versions are the accepted contents of a scripts directory's
	// "version" file, which must exist when the directory holds scripts.
	// Default 2 and 3.
	Versions []int
	// Exec runs the scripts. Default OSExec{}.
	Exec Exec
	// Clock defaults to the system clock.
	Clock Clock
	// Logger defaults to slog.Default(). Script output (stdout and stderr)
	// is logged line by line, at most 64 KiB per stream and run.
	Logger *slog.Logger
}

// Runner runs state scripts. See the package documentation for the order
// the agent calls Run in.
type Runner struct {
	opts RunnerOptions
	log  *slog.Logger
}

// NewRunner returns a Runner.
func NewRunner(opts RunnerOptions) *Runner {
	if opts.RootfsDir == "" {
		opts.RootfsDir = "/etc/mender/scripts"
	}
	if opts.ArtifactDir == "" {
		opts.ArtifactDir = "/var/lib/mender/scripts"
	}
	if opts.Timeout <= 0 {
		opts.Timeout = time.Hour
	}
	if opts.RetryInterval <= 0 {
		opts.RetryInterval = 60 * time.Second
	}
	if opts.RetryTimeout <= 0 {
		opts.RetryTimeout = 30 * time.Minute
	}
	if len(opts.Versions) == 0 {
		opts.Versions = []int{2, 3}
	}
	if opts.Exec == nil {
		opts.Exec = OSExec{}
	}
	if opts.Clock == nil {
		opts.Clock = realClock{}
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Runner{opts: opts, log: opts.Logger}
}

// scriptName matches <State>_<Action>_<NN>[_comment].
var scriptName = regexp.MustCompile(`^([A-Za-z]+)_(Enter|Leave|Error)_([0-9][0-9])(_\S+)?$`)

// ParseScriptName splits a state script's file name. ok is false for a name
// that is not <State>_<Enter|Leave|Error>_<NN>[_comment].
func ParseScriptName(name string) (state State, action Action, order int, ok bool) {
	m := scriptName.FindStringSubmatch(name)
	if m == nil {
		return "", "", 0, false
	}
	order, _ = strconv.Atoi(m[3])
	return State(m[1]), Action(m[2]), order, true
}

// Store replaces the artifact scripts with those of a new artifact (the
// header's scripts), with a version file of 3: the old directory is
// removed, the new one written under a temporary name, fsynced and renamed
// into place, so that after a power cut ArtifactDir holds one artifact's
// scripts, old or new.
func (r *Runner) Store(scripts []artifact.Script) error {
	dir := filepath.Clean(r.opts.ArtifactDir)
	if dir == "/" || !filepath.IsAbs(dir) {
		return fmt.Errorf("install: scripts directory %q must be absolute and not /", dir)
	}
	parent := filepath.Dir(dir)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(dir)+".new-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	write := func(name string, data []byte, perm os.FileMode) error {
		f, err := os.OpenFile(filepath.Join(tmp, name), os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
		if err != nil {
			return err
		}
		if _, err := f.Write(data); err != nil {
			f.Close()
			return err
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return err
		}
		return f.Close()
	}
	for _, s := range scripts {
		if s.Name == "" || s.Name == "version" || strings.ContainsAny(s.Name, "/\x00") || s.Name[0] == '.' {
			return fmt.Errorf("%w: unsafe script name %q", ErrScript, clip(s.Name))
		}
		if err := write(s.Name, s.Data, 0o755); err != nil {
			return fmt.Errorf("store script %s: %w", s.Name, err)
		}
	}
	if err := write("version", []byte("3"), 0o644); err != nil {
		return fmt.Errorf("store scripts: %w", err)
	}
	if err := atomicfile.SyncDir(tmp); err != nil {
		return err
	}
	if err := r.Clear(); err != nil {
		return err
	}
	if err := os.Rename(tmp, dir); err != nil {
		return fmt.Errorf("store scripts: %w", err)
	}
	return atomicfile.SyncDir(parent)
}

// Clear removes the artifact scripts.
func (r *Runner) Clear() error {
	dir := filepath.Clean(r.opts.ArtifactDir)
	if dir == "/" || !filepath.IsAbs(dir) {
		return fmt.Errorf("install: scripts directory %q must be absolute and not /", dir)
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("clear scripts: %w", err)
	}
	return atomicfile.SyncDir(filepath.Dir(dir))
}

// Scripts returns the paths of the scripts Run(state, action) runs, in
// order. A directory that holds scripts must hold a version file with one
// of RunnerOptions.Versions.
func (r *Runner) Scripts(state State, action Action) ([]string, error) {
	dir := r.opts.ArtifactDir
	if slices.Contains(rootfsStates, state) {
		dir = r.opts.RootfsDir
	}
	ents, err := os.ReadDir(dir) // sorted by name: NN order
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrScript, err)
	}
	var out []string
	for _, e := range ents {
		name := e.Name()
		if !strings.HasPrefix(name, string(state)+"_"+string(action)+"_") {
			continue
		}
		if s, a, _, ok := ParseScriptName(name); !ok || s != state || a != action {
			r.log.Warn("state script name does not match <State>_<Enter|Leave|Error>_<NN>[_comment]; not run", "script", filepath.Join(dir, name))
			continue
		}
		out = append(out, filepath.Join(dir, name))
	}
	if len(out) == 0 {
		return nil, nil
	}
	if err := r.checkVersion(dir); err != nil {
		return nil, err
	}
	return out, nil
}

func (r *Runner) checkVersion(dir string) error {
	b, err := readSmall(filepath.Join(dir, "version"), 64)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: %s holds scripts but no version file", ErrScript, dir)
	}
	if err != nil {
		return fmt.Errorf("%w: %w", ErrScript, err)
	}
	v, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || !slices.Contains(r.opts.Versions, v) {
		return fmt.Errorf("%w: %s/version is %q; supported: %v", ErrScript, dir, clip(strings.TrimSpace(string(b))), r.opts.Versions)
	}
	return nil
}

// Run runs the scripts of state and action in NN order and stops at the
// first failure. Exit status 0 is success; ExitRetryLater (21) runs the
// script again after RetryInterval, for as long as RetryTimeout has not
// passed since its first run; anything else (or a script that is not
// executable, or a missing or unsupported version file) fails. For Error
// scripts failures are logged and Run goes on with the next script and
// returns nil: the state has failed already.
func (r *Runner) Run(ctx context.Context, state State, action Action) error {
	ignore := action == Error
	scripts, err := r.Scripts(state, action)
	if err != nil {
		if ignore {
			r.log.Error("state scripts not run", "state", state, "action", action, "err", err)
			return nil
		}
		return err
	}
	for _, path := range scripts {
		if err := r.runOne(ctx, path); err != nil {
			if ctx.Err() != nil {
				return err
			}
			if ignore {
				r.log.Error("error script failed; ignored", "script", path, "err", err)
				continue
			}
			return err
		}
	}
	return nil
}

func (r *Runner) runOne(ctx context.Context, path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrScript, err)
	}
	if !fi.Mode().IsRegular() || fi.Mode()&0o111 == 0 {
		return fmt.Errorf("%w: %s is not an executable file", ErrScript, path)
	}
	name := filepath.Base(path)
	first := r.opts.Clock.Now()
	for attempt := 1; ; attempt++ {
		code, err := r.exec(ctx, path)
		switch {
		case code == 0:
			return nil
		case ctx.Err() != nil:
			return fmt.Errorf("%w: %s: %w", ErrScript, name, ctx.Err())
		case code == ExitRetryLater:
			if r.opts.Clock.Now().Sub(first) > r.opts.RetryTimeout {
				return fmt.Errorf("%w: %s still asks for a retry (exit 21) after %s, %d runs", ErrScript, name, r.opts.RetryTimeout, attempt)
			}
			r.log.Info("state script asks for a retry", "script", name, "attempt", attempt, "retry_in", r.opts.RetryInterval)
			if err := r.opts.Clock.Sleep(ctx, r.opts.RetryInterval); err != nil {
				return fmt.Errorf("%w: %s: %w", ErrScript, name, err)
			}
		default:
			return fmt.Errorf("%w: %s: %w", ErrScript, name, err)
		}
	}
}

// exec runs a script once and returns its exit status (-1 when it has
// none) and the error.
func (r *Runner) exec(ctx context.Context, path string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
	defer cancel()
	log := r.log.With("script", filepath.Base(path))
	stdout := &logWriter{log: log, msg: "state script stdout", level: slog.LevelInfo}
	stderr := &logWriter{log: log, msg: "state script stderr", level: slog.LevelWarn}
	err := run(ctx, r.opts.Exec, Command{Path: path, Stdout: stdout, Stderr: stderr})
	stdout.Flush()
	stderr.Flush()
	if err != nil && ctx.Err() != nil {
		err = fmt.Errorf("%w (%w)", err, ctx.Err())
	}
	return exitCode(err), err
}
