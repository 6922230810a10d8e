package main

import (
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/controller"
	"github.com/gitfleet/gitfleet/controller/deviceapi"
	"github.com/gitfleet/gitfleet/controller/gitsource/gittest"
	"github.com/gitfleet/gitfleet/controller/rollout"
	"github.com/gitfleet/gitfleet/controller/store"
)

var update = flag.Bool("update", false, "rewrite testdata/golden/ from the commands' output")

// TestMain keeps the tests away from the user's CLI configuration and
// GITFLEET_* variables: every connection setting a test uses is a flag.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "gitfleet-cli-config-")
	if err != nil {
		panic(err)
	}
	os.Setenv("XDG_CONFIG_HOME", dir)
	for _, k := range []string{"GITFLEET_SERVER", "GITFLEET_TOKEN", "GITFLEET_CA_CERT", "GITFLEET_CONFIG"} {
		os.Unsetenv(k)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// goldenFleet is what the golden tests' controller serves on top of
// examples/quickstart: the ranked rollout and a group "lab".
var goldenFleet = map[string]string{
	"rollout.yaml": rankedRollout,
	"lab.yaml":     "apiVersion: gitfleet.io/v1\nkind: DeviceGroup\nmetadata: {name: lab}\nspec:\n  members: [sim-001, sim-004]\n",
}

// goldenServer starts a real controller (replica "replica-1") following a
// real Git repository (examples/quickstart plus goldenFleet) on the
// embedded store, seeded with what every command shows: three devices
// seen with inventory, a pending device, a key conflict, alerts, device
// configuration reports, and the rollout's canary downloading with a
// deployment log. It returns the CLI's connection flags, the canary and
// the repository.
func goldenServer(t *testing.T) ([]string, string, *gittest.Repo) {
	t.Helper()
	var canary string
	conn, repo := mgmtServer(t, goldenFleet, func(c *controller.Controller) bool { return c.Live().Fleet.Group("lab") != nil },
		func(ctx context.Context, st store.Store, c *controller.Controller) {
			canary = goldenSeed(t, ctx, st, c)
		})
	return conn, canary, repo
}

// goldenSeed waits for the rollout's generation and seeds the store; it
// returns the canary.
func goldenSeed(t *testing.T, ctx context.Context, st store.Store, c *controller.Controller) string {
	t.Helper()
	var g store.GenerationRef
	for stop := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(stop) {
			t.Fatal("the fleet commit and its rollout were not recorded within 30s")
		}
		if c.Live() == nil || c.Live().Fleet.Group("lab") == nil {
			continue
		}
		recs, err := st.Rollouts(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info, ok := rollout.Compile(c.Live().Fleet, recs).Rollout("hello-2"); ok && info.Generation.Generation > 0 && len(info.Phases) == 3 {
			g = info.Generation
			break
		}
	}
	snap := c.Live()
	recs, _ := st.Rollouts(ctx)
	canary := rollout.Compile(snap.Fleet, recs).Ranked("hello-2", 0)[0]
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	t0 := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	// Three sims seen, with their inventory; a pending device; another
	// key claiming sim-001.
	key := func(b string) string { return strings.Repeat(b, 32) }
	for i, name := range []string{"sim-001", "sim-002", "sim-003"} {
		mac := "02:00:00:00:00:0" + strings.TrimPrefix(name, "sim-00")
		id := deviceapi.DeviceID(deviceapi.Attributes{"mac": mac})
		_, err := st.SeeDevice(ctx, store.Device{ID: id, Identity: json.RawMessage(`{"mac":"` + mac + `"}`), KeyFingerprint: key("a" + string(rune('1'+i))),
			Status: store.DeviceAccepted, FirstSeen: t0, LastSeen: t0.Add(time.Duration(i) * time.Minute)})
		must(err)
		must(st.SetInventory(ctx, id, json.RawMessage(`{"artifact_name":"hello-1","device_type":"gitfleet-sim"}`)))
		if name == "sim-001" {
			_, err := st.SeeDevice(ctx, store.Device{ID: id, Identity: json.RawMessage(`{"mac":"` + mac + `"}`), KeyFingerprint: key("cd"),
				Status: store.DevicePending, FirstSeen: t0, LastSeen: t0.Add(time.Hour)})
			if err == nil {
				t.Fatal("no key conflict recorded")
			}
		}
		// Configuration: sim-001 in sync, sim-002 failed, sim-003 not reported.
		_, digest := snap.Config.For(name, map[string]string{"mac": mac}, map[string]string{"device_type": "gitfleet-sim", "artifact_name": "hello-1"})
		switch name {
		case "sim-001":
			_, err = st.SetConfigStatus(ctx, store.ConfigStatus{Device: name, Digest: digest, State: "applied", Via: "agent", Reported: t0})
		case "sim-002":
			_, err = st.SetConfigStatus(ctx, store.ConfigStatus{Device: name, Digest: digest, State: "failed", Via: "agent", Reported: t0,
				Script: "10-greeting", ExitCode: 3, Output: "writing /etc/greeting\npermission denied"})
		}
		must(err)
	}
	_, err := st.SeeDevice(ctx, store.Device{ID: "0123456789abcdef0123456789abcdef", Identity: json.RawMessage(`{"mac":"dc:a6:32:00:00:07"}`),
		KeyFingerprint: key("ef"), Status: store.DevicePending, FirstSeen: t0, LastSeen: t0.Add(2 * time.Hour)})
	must(err)
	// Alerts: sim-001 open, sim-004 cleared.
	_, _, err = st.RecordAlerts(ctx, "sim-001", []store.AlertEvent{{Seq: 1, Check: "hello-errors", Kind: store.AlertRaised, Severity: "critical",
		Evidence: "ERROR hello failed", Time: t0}})
	must(err)
	_, _, err = st.RecordAlerts(ctx, "sim-004", []store.AlertEvent{
		{Seq: 1, Check: "disk-space", Key: "/data", Kind: store.AlertRaised, Severity: "warning", Evidence: "91% used", Time: t0},
		{Seq: 2, Check: "disk-space", Key: "/data", Kind: store.AlertCleared, Time: t0.Add(time.Minute)},
	})
	must(err)
	// The canary admitted, downloading, with a deployment log.
	if _, ok, err := st.Admit(ctx, g, 0, 1, canary); err != nil || !ok {
		t.Fatalf("admit %s: %v %v", canary, ok, err)
	}
	_, _, err = st.Report(ctx, g, canary, "downloading", 0)
	must(err)
	_, err = st.SetDeploymentLog(ctx, g, canary, store.DeploymentLog{Dropped: 2, Lines: []store.LogLine{
		{Time: "2025-06-01T12:00:00Z", Level: "info", Message: "downloading"},
		{Time: "2025-06-01T12:01:00Z", Level: "error", Message: "install: no space left"},
	}})
	must(err)

	return canary
}

// The golden replacer makes output comparable between runs. In this order
// it replaces:
//
//   - RFC 3339 times (with or without fractions) by <TIME>;
//   - relative times ("5s ago", "3m ago", "1h02m ago") by <AGO>;
//   - 40-digit commit SHAs by <SHA> and 12-digit short ones by <SHORT>;
//   - the Go version and platform of this build by <GO> and <PLATFORM>;
//   - in text output, runs of two or more spaces by two spaces, since
//     the replacements above change the width of table columns.
var (
	reTime  = regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)`)
	reAgo   = regexp.MustCompile(`\b\d+(s|m|h\d\dm) ago\b`)
	reSHA   = regexp.MustCompile(`\b[0-9a-f]{40}\b`)
	reShort = regexp.MustCompile(`\b[0-9a-f]{12}\b`)
	reSpace = regexp.MustCompile(`  +`)
)

func normalize(s string, text bool) string {
	s = reTime.ReplaceAllString(s, "<TIME>")
	s = reAgo.ReplaceAllString(s, "<AGO>")
	s = reSHA.ReplaceAllString(s, "<SHA>")
	s = reShort.ReplaceAllString(s, "<SHORT>")
	s = strings.ReplaceAll(s, runtime.Version(), "<GO>")
	s = strings.ReplaceAll(s, runtime.GOOS+"/"+runtime.GOARCH, "<PLATFORM>")
	if text {
		s = reSpace.ReplaceAllString(s, "  ")
	}
	return s
}

// TestGolden runs every management command, as text and as --json,
// against one seeded controller and compares the normalized output
// (stdout, then stderr) with testdata/golden/NAME.txt and NAME.json.
func TestGolden(t *testing.T) {
	conn, canary, _ := goldenServer(t)
	version, commit = "1.2.3", "0123456789abcdef0123456789abcdef01234567"
	readBuildInfo = func() (*debug.BuildInfo, bool) {
		return &debug.BuildInfo{Settings: []debug.BuildSetting{{Key: "vcs.time", Value: "2026-01-01T00:00:00Z"}}}, true
	}
	t.Cleanup(func() { version, commit, readBuildInfo = "", "", debug.ReadBuildInfo })

	for _, c := range []struct {
		name string
		args []string
	}{
		{"status", []string{"status"}},
		{"rollouts", []string{"rollouts"}},
		{"rollouts-devices", []string{"rollouts", "hello-2", "--devices"}},
		{"rollouts-log", []string{"rollouts", "log", "hello-2", canary}},
		{"devices-list", []string{"devices", "list"}},
		{"devices-pending", []string{"devices", "pending"}},
		{"devices-conflicts", []string{"devices", "conflicts"}},
		{"alerts", []string{"alerts"}},
		{"events", []string{"events"}},
		{"audit-device", []string{"audit", "sim-001"}},
		{"audit-rollout", []string{"audit", "hello-2"}},
		{"config-status", []string{"config", "status"}},
		{"reconcile", []string{"reconcile"}},
		{"version", []string{"version"}},
	} {
		for _, asJSON := range []bool{false, true} {
			args, file := c.args, c.name+".txt"
			if asJSON {
				args, file = append(append([]string{}, c.args...), "--json"), c.name+".json"
			}
			t.Run(file, func(t *testing.T) {
				if c.name != "version" {
					args = append(append([]string{}, args...), conn...)
				}
				stdout, stderr, err := gitfleet(t, args...)
				if err != nil {
					t.Fatalf("gitfleet %s: %v\n%s", strings.Join(c.args, " "), err, stderr)
				}
				if asJSON && !json.Valid([]byte(stdout)) {
					t.Fatalf("--json printed no JSON:\n%s", stdout)
				}
				got := "$ gitfleet " + strings.Join(args[:len(args)-len(conn)*boolInt(c.name != "version")], " ") + "\n" +
					normalize(stdout, !asJSON)
				if stderr != "" {
					got += "-- stderr --\n" + normalize(stderr, true)
				}
				compareGolden(t, filepath.Join("testdata", "golden", file), got)
			})
		}
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// compareGolden compares got with the golden file, or rewrites it with
// -update.
func compareGolden(t *testing.T, path, got string) {
	t.Helper()
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./cmd/gitfleet -run TestGolden -update to write it)", err)
	}
	if string(want) != got {
		t.Errorf("%s differs (review, then rewrite with -update):\n--- want\n%s\n--- got\n%s", path, want, got)
	}
}

// gitfleet reconcile after a commit the controller refuses: the errors,
// what is still served, and exit status 1; then a good commit goes live.
func TestReconcileCommand(t *testing.T) {
	conn, _, repo := goldenServer(t)
	repo.Commit(map[string]string{"bad.yaml": "apiVersion: gitfleet.io/v1\nkind: DeviceGroup\nmetadata: {name: lab2}\nspec:\n  members: [nobody]\n"}, "a group of nobody")
	stdout, stderr, err := gitfleet(t, append([]string{"reconcile"}, conn...)...)
	if exitCode(err) != 1 {
		t.Fatalf("exit %d (%v), want 1\n%s%s", exitCode(err), err, stdout, stderr)
	}
	compareGolden(t, filepath.Join("testdata", "golden", "reconcile-refused.txt"), "$ gitfleet reconcile\n"+normalize(stdout, true))

	sha := repo.Commit(map[string]string{"bad.yaml": "apiVersion: gitfleet.io/v1\nkind: DeviceGroup\nmetadata: {name: lab2}\nspec:\n  members: [sim-002]\n"}, "lab2 is sim-002")
	stdout, _, err = gitfleet(t, append([]string{"reconcile", "--json"}, conn...)...)
	var r controller.Reconcile
	if err != nil || json.Unmarshal([]byte(stdout), &r) != nil || r.Outcome != "live" || r.Serving == nil || r.Serving.SHA != sha {
		t.Fatalf("reconcile after the fix: %v\n%s", err, stdout)
	}
	if _, _, err := gitfleet(t, append([]string{"reconcile", "--wait", "3m"}, conn...)...); exitCode(err) != 2 {
		t.Fatalf("--wait 3m: %v", err)
	}
}
