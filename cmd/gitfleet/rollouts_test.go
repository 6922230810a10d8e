package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/gitfleet/gitfleet/controller"
	"github.com/gitfleet/gitfleet/controller/deviceapi"
	"github.com/gitfleet/gitfleet/controller/rollout"
	"github.com/gitfleet/gitfleet/controller/store"
)

// rankedRollout replaces the quickstart's rollout by one over the five
// sims by name: a held canary, one more device, then the rest after
// approval.
const rankedRollout = `apiVersion: gitfleet.io/v1
kind: Rollout
metadata: {name: hello-2}
spec:
  artifact: hello-2
  target: {devices: [sim-001, sim-002, sim-003, sim-004, sim-005]}
  phases:
    - {name: canary, count: 1, hold: 1h}
    - {name: early, count: 2}
    - {name: all, percent: 100, requiresApproval: true}
`

// rolloutsServer serves the ranked rollout with its canary admitted and
// downloading; it returns the connection flags and the canary's name.
func rolloutsServer(t *testing.T) ([]string, string) {
	t.Helper()
	var canary string
	conn, _ := mgmtServer(t, map[string]string{"rollout.yaml": rankedRollout}, func(c *controller.Controller) bool {
		ro := c.Live().Fleet.Rollout("hello-2")
		return ro != nil && len(ro.Spec.Phases) == 3
	}, func(ctx context.Context, st store.Store, c *controller.Controller) {
		recs, err := st.Rollouts(ctx)
		if err != nil {
			t.Fatal(err)
		}
		plan := rollout.Compile(c.Live().Fleet, recs)
		info, ok := plan.Rollout("hello-2")
		if !ok || info.Generation.Generation == 0 {
			t.Fatalf("hello-2 not recorded: %+v", recs)
		}
		canary = plan.Ranked("hello-2", 0)[0]
		if _, ok, err := st.Admit(ctx, info.Generation, 0, 1, canary); err != nil || !ok {
			t.Fatalf("admit %s: %v %v", canary, ok, err)
		}
		if _, _, err := st.Report(ctx, info.Generation, canary, "downloading", 0); err != nil {
			t.Fatal(err)
		}
		if _, err := st.SetDeploymentLog(ctx, info.Generation, canary, store.DeploymentLog{Dropped: 2, Lines: []store.LogLine{
			{Time: "2025-06-01T12:00:00Z", Level: "info", Message: "downloading"},
			{Time: "2025-06-01T12:01:00Z", Level: "error", Message: "install:\x1b[31m no space\tleft"},
		}}); err != nil {
			t.Fatal(err)
		}
	})
	return conn, canary
}

func TestRolloutsCommand(t *testing.T) {
	conn, canary := rolloutsServer(t)
	run := func(args ...string) (string, string, error) {
		return gitfleet(t, append(append([]string{"rollouts"}, conn...), args...)...)
	}

	out, _, err := run()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("gitfleet rollouts:\n%s", out)
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "ROLLOUT") {
		t.Fatalf("want a header and a row per phase:\n%s", out)
	}
	for i, want := range []string{"canary 1/1 0 0 0 devices in progress: 1 downloading", "early 0/1 0 0 0 waits for the previous phase to complete",
		`all 0/3 0 0 0 waits for approval: add "all" to spec.approvedPhases`} {
		if got := strings.Join(strings.Fields(lines[i+1]), " "); !strings.Contains(got, "hello-2 1 "+want) {
			t.Errorf("row %d: %q, want %q", i+1, got, want)
		}
	}

	out, _, err = run("hello-2", "--devices")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("gitfleet rollouts hello-2 --devices:\n%s", out)
	id := deviceapi.DeviceID(deviceapi.Attributes{"mac": "02:00:00:00:00:0" + strings.TrimPrefix(canary, "sim-00")})
	lines = strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "DEVICE") {
		t.Fatalf("want a header and the canary:\n%s", out)
	}
	if f := strings.Fields(lines[1]); len(f) < 5 || f[0] != canary || f[1] != id || f[2] != "canary" || f[3] != "downloading" || f[4] != "0" ||
		f[len(f)-2] != "yes" || f[len(f)-1] != "admitted" {
		t.Errorf("canary row %q", lines[1])
	}

	out, _, err = run("hello-2", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var views []controller.RolloutView
	if err := json.Unmarshal([]byte(out), &views); err != nil || len(views) != 1 || views[0].Phases[0].Waiting[0].InProgress["downloading"] != 1 {
		t.Fatalf("--json: %v\n%s", err, out)
	}

	out, stderr, err := run("log", "hello-2", canary)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("gitfleet rollouts log:\n%s%s", stderr, out)
	if want := "2025-06-01T12:00:00Z info downloading\n2025-06-01T12:01:00Z error install: [31m no space left\n"; out != want {
		t.Errorf("log:\n%q\nwant\n%q", out, want)
	}
	if !strings.Contains(stderr, "2 earlier lines dropped") {
		t.Errorf("log stderr %q", stderr)
	}
	if _, stderr, err := run("log", "hello-2", "sim-005"); err == nil || !strings.Contains(err.Error()+stderr, "no deployment log") {
		t.Errorf("log of a device without one: %v %s", err, stderr)
	}

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"nope"}, `no running rollout "nope"`},
		{[]string{"--devices"}, "--devices needs a rollout NAME"},
		{[]string{"nope", "--devices"}, `no rollout "nope"`},
		{[]string{"hello-2", "--devices", "--limit", "0"}, "--limit 0"},
	} {
		if _, stderr, err := run(c.args...); err == nil || !strings.Contains(err.Error()+stderr, c.want) {
			t.Errorf("%v: %v %s, want %q", c.args, err, stderr, c.want)
		}
	}
}
