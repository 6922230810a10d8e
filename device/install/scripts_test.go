package install

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/artifact"
)

type scriptEnv struct {
	rootfs, art, log string
}

func newScriptEnv(t *testing.T) *scriptEnv {
	root := t.TempDir()
	e := &scriptEnv{rootfs: filepath.Join(root, "etc-scripts"), art: filepath.Join(root, "var-scripts"), log: filepath.Join(root, "ran.log")}
	if err := os.MkdirAll(e.rootfs, 0o755); err != nil {
		t.Fatal(err)
	}
	return e
}

// script is a shell state script that logs its name and exits with code.
func (e *scriptEnv) script(name string, code int) artifact.Script {
	return artifact.Script{Name: name, Data: []byte(fmt.Sprintf("#!/bin/sh\necho %s >> %q\nexit %d\n", name, e.log, code))}
}

func (e *scriptEnv) ran(t *testing.T) string {
	b, err := os.ReadFile(e.log)
	if errors.Is(err, os.ErrNotExist) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(e.log)
	return strings.Join(strings.Fields(string(b)), " ")
}

func (e *scriptEnv) runner(opts RunnerOptions) *Runner {
	opts.RootfsDir = e.rootfs
	opts.ArtifactDir = e.art
	return NewRunner(opts)
}

func TestScriptsOrderAndOutcome(t *testing.T) {
	ctx := context.Background()
	e := newScriptEnv(t)
	r := e.runner(RunnerOptions{})
	err := r.Store([]artifact.Script{
		e.script("ArtifactInstall_Enter_10", 0),
		e.script("ArtifactInstall_Enter_01", 0),
		e.script("ArtifactInstall_Enter_05_wifi-driver", 0),
		e.script("ArtifactInstall_Enter_5", 0),       // malformed: not run
		e.script("ArtifactInstall_Enter_07.bak~", 0), // no "_" before the comment: not run
		e.script("ArtifactInstall_Leave_00", 0),
		e.script("ArtifactCommit_Enter_01", 1),
		e.script("ArtifactCommit_Enter_02", 0),
		e.script("ArtifactCommit_Error_01", 7),
		e.script("ArtifactCommit_Error_02", 0),
		e.script("ArtifactRollback_Enter_00", 0),
		e.script("ArtifactRollbackReboot_Enter_00", 0),
		e.script("Download_Enter_00", 0), // artifact Download scripts are not run
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		state  State
		action Action
		ran    string
		fails  bool
	}{
		{StateArtifactInstall, Enter, "ArtifactInstall_Enter_01 ArtifactInstall_Enter_05_wifi-driver ArtifactInstall_Enter_10", false},
		{StateArtifactInstall, Leave, "ArtifactInstall_Leave_00", false},
		{StateArtifactInstall, Error, "", false},
		{StateArtifactCommit, Enter, "ArtifactCommit_Enter_01", true},
		{StateArtifactCommit, Error, "ArtifactCommit_Error_01 ArtifactCommit_Error_02", false},
		{StateArtifactRollback, Enter, "ArtifactRollback_Enter_00", false},
		{StateArtifactRollbackReboot, Enter, "ArtifactRollbackReboot_Enter_00", false},
		{StateDownload, Enter, "", false},
		{StateArtifactVerifyReboot, Enter, "", false},
	} {
		err := r.Run(ctx, tc.state, tc.action)
		if tc.fails != (err != nil) || (err != nil && !errors.Is(err, ErrScript)) {
			t.Errorf("%s_%s: %v", tc.state, tc.action, err)
		}
		if got := e.ran(t); got != tc.ran {
			t.Errorf("%s_%s ran %q, want %q", tc.state, tc.action, got, tc.ran)
		}
	}
}

func TestScriptsRootfsDir(t *testing.T) {
	ctx := context.Background()
	e := newScriptEnv(t)
	for _, s := range []artifact.Script{e.script("Download_Enter_00", 0), e.script("Idle_Leave_00", 0), e.script("Sync_Enter_00", 21)} {
		if err := os.WriteFile(filepath.Join(e.rootfs, s.Name), s.Data, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	r := e.runner(RunnerOptions{})
	// No version file: the scripts do not run.
	if err := r.Run(ctx, StateDownload, Enter); !errors.Is(err, ErrScript) {
		t.Fatalf("without a version file: %v", err)
	}
	if err := r.Run(ctx, StateDownload, Error); err != nil {
		t.Fatalf("Error scripts without a version file: %v", err)
	}
	for _, v := range []string{"1", "three"} {
		if err := os.WriteFile(filepath.Join(e.rootfs, "version"), []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := r.Run(ctx, StateDownload, Enter); !errors.Is(err, ErrScript) {
			t.Fatalf("version %q: %v", v, err)
		}
	}
	if err := os.WriteFile(filepath.Join(e.rootfs, "version"), []byte("3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := r.Run(ctx, StateDownload, Enter); err != nil {
		t.Fatal(err)
	}
	if err := r.Run(ctx, StateIdle, Leave); err != nil {
		t.Fatal(err)
	}
	if got := e.ran(t); got != "Download_Enter_00 Idle_Leave_00" {
		t.Fatalf("ran %q", got)
	}
	// A script that is not executable fails an Enter state.
	if err := os.Chmod(filepath.Join(e.rootfs, "Download_Enter_00"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := r.Run(ctx, StateDownload, Enter); !errors.Is(err, ErrScript) {
		t.Fatalf("not executable: %v", err)
	}
}

func TestScriptsStore(t *testing.T) {
	e := newScriptEnv(t)
	r := e.runner(RunnerOptions{})
	if err := r.Store([]artifact.Script{e.script("ArtifactInstall_Enter_00", 0), e.script("ArtifactCommit_Leave_00", 0)}); err != nil {
		t.Fatal(err)
	}
	if got := string(readFile(t, filepath.Join(e.art, "version"))); got != "3" {
		t.Fatalf("version %q", got)
	}
	if err := r.Store([]artifact.Script{e.script("ArtifactFailure_Enter_00", 0)}); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(e.art)
	var names []string
	for _, de := range ents {
		names = append(names, de.Name())
	}
	if got := strings.Join(names, " "); got != "ArtifactFailure_Enter_00 version" {
		t.Fatalf("after the second Store: %s", got)
	}
	if fi, err := os.Stat(filepath.Join(e.art, "ArtifactFailure_Enter_00")); err != nil || fi.Mode().Perm() != 0o755 {
		t.Fatalf("stored script: %v %v", fi.Mode(), err)
	}
	for _, bad := range []string{"../evil", "", "version", ".hidden", "a/b"} {
		if err := r.Store([]artifact.Script{{Name: bad}}); !errors.Is(err, ErrScript) {
			t.Errorf("Store(%q): %v", bad, err)
		}
	}
	if err := r.Clear(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(e.art); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("Clear left the directory")
	}
	if err := NewRunner(RunnerOptions{ArtifactDir: "relative"}).Store(nil); err == nil {
		t.Fatal("Store into a relative directory")
	}
}

// fakeClock advances only when slept on.
type fakeClock struct {
	now    time.Time
	sleeps []time.Duration
}

func (c *fakeClock) Now() time.Time { return c.now }
func (c *fakeClock) Sleep(ctx context.Context, d time.Duration) error {
	c.sleeps = append(c.sleeps, d)
	c.now = c.now.Add(d)
	return ctx.Err()
}

// codeExec exits with the next code of the script's list (the last one
// repeats) and counts runs.
type codeExec struct {
	codes map[string][]int
	runs  map[string]int
}

func (x *codeExec) Start(_ context.Context, c Command) (Process, error) {
	name := filepath.Base(c.Path)
	codes := x.codes[name]
	i := min(x.runs[name], len(codes)-1)
	x.runs[name]++
	if codes[i] == 0 {
		return fakeProcess{}, nil
	}
	return fakeProcess{exitErr(codes[i])}, nil
}

func TestScriptsRetryLater(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		action Action
		codes  []int
		runs   int
		fails  bool
	}{
		{"succeeds on the third run", Enter, []int{21, 21, 0}, 3, false},
		// Runs at 0, 10, …, 60 s may ask again; the run at 70 s is past
		// the 60 s retry timeout.
		{"retries until the timeout", Leave, []int{21}, 8, true},
		{"error script retried, then ignored", Error, []int{21}, 8, false},
		{"other code after a retry", Enter, []int{21, 2}, 2, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newScriptEnv(t)
			name := "ArtifactInstall_" + string(tc.action) + "_00"
			x := &codeExec{codes: map[string][]int{name: tc.codes}, runs: map[string]int{}}
			clock := &fakeClock{now: time.Unix(1000, 0)}
			r := e.runner(RunnerOptions{Exec: x, Clock: clock, RetryInterval: 10 * time.Second, RetryTimeout: time.Minute})
			if err := r.Store([]artifact.Script{{Name: name, Data: []byte("#!/bin/sh\n")}}); err != nil {
				t.Fatal(err)
			}
			err := r.Run(ctx, StateArtifactInstall, tc.action)
			if tc.fails != (err != nil) {
				t.Fatalf("Run: %v", err)
			}
			if x.runs[name] != tc.runs {
				t.Fatalf("%d runs, want %d", x.runs[name], tc.runs)
			}
			for _, d := range clock.sleeps {
				if d != 10*time.Second {
					t.Fatalf("slept %v", d)
				}
			}
			if len(clock.sleeps) != tc.runs-1 {
				t.Fatalf("%d sleeps for %d runs", len(clock.sleeps), tc.runs)
			}
		})
	}
}

func TestScriptsRetryWithRealScript(t *testing.T) {
	// A real script that asks once for a retry, with a tiny interval.
	e := newScriptEnv(t)
	marker := filepath.Join(t.TempDir(), "asked")
	r := e.runner(RunnerOptions{RetryInterval: time.Millisecond, RetryTimeout: time.Minute})
	err := r.Store([]artifact.Script{{Name: "ArtifactReboot_Enter_00", Data: []byte(fmt.Sprintf(
		"#!/bin/sh\nif [ ! -e %[1]q ]; then touch %[1]q; exit 21; fi\necho ran >> %[2]q\n", marker, e.log))}})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Run(context.Background(), StateArtifactReboot, Enter); err != nil {
		t.Fatal(err)
	}
	if got := e.ran(t); got != "ran" {
		t.Fatalf("ran %q", got)
	}
}

func TestScriptsTimeout(t *testing.T) {
	e := newScriptEnv(t)
	r := e.runner(RunnerOptions{Timeout: 100 * time.Millisecond, Exec: OSExec{KillGrace: 100 * time.Millisecond}})
	if err := r.Store([]artifact.Script{{Name: "ArtifactCommit_Enter_00", Data: []byte("#!/bin/sh\nsleep 30\n")}}); err != nil {
		t.Fatal(err)
	}
	err := r.Run(context.Background(), StateArtifactCommit, Enter)
	if !errors.Is(err, ErrScript) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Run: %v, want a timeout", err)
	}
}

func TestParseScriptName(t *testing.T) {
	for _, tc := range []struct {
		name   string
		state  State
		action Action
		order  int
		ok     bool
	}{
		{"ArtifactInstall_Enter_00", StateArtifactInstall, Enter, 0, true},
		{"Download_Leave_99_fetch-keys", StateDownload, Leave, 99, true},
		{"ArtifactRollbackReboot_Error_42_x_y", StateArtifactRollbackReboot, Error, 42, true},
		{"ArtifactInstall_Enter_5", "", "", 0, false},
		{"ArtifactInstall_Enter_005", "", "", 0, false},
		{"ArtifactInstall_Start_00", "", "", 0, false},
		{"ArtifactInstall_Enter_00_", "", "", 0, false},
		{"version", "", "", 0, false},
	} {
		s, a, o, ok := ParseScriptName(tc.name)
		if s != tc.state || a != tc.action || o != tc.order || ok != tc.ok {
			t.Errorf("%s: %q %q %d %v", tc.name, s, a, o, ok)
		}
	}
}
