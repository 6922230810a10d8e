package main

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/controller"
	"github.com/gitfleet/gitfleet/controller/gitsource/gittest"
	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gitfleet/gitfleet/device/devconfig"
)

// configServer serves the quickstart plus a fleet-wide DeviceConfig with a
// secret; sim-001 applied its configuration, sim-002's apply script failed.
func configServer(t *testing.T) []string {
	t.Helper()
	conn, _ := mgmtServer(t, map[string]string{
		"all.yaml": "apiVersion: gitfleet.io/v1\nkind: DeviceConfig\nmetadata: {name: everyone}\nspec:\n  target: {all: true}\n  values: {ntp_server: pool.ntp.org}\n",
	}, func(c *controller.Controller) bool { return c.Live().Config.Len() == 2 }, func(ctx context.Context, st store.Store, c *controller.Controller) {
		for _, s := range []store.ConfigStatus{
			{Device: "sim-001", State: devconfig.Applied, Via: "agent"},
			{Device: "sim-002", State: devconfig.Failed, Script: "20-ntp", ExitCode: 2, Output: "starting\nntpd: unknown server\n", Via: "agent"},
		} {
			_, s.Digest = c.Live().Config.For(s.Device, nil, nil)
			s.Reported = time.Now()
			if _, err := st.SetConfigStatus(ctx, s); err != nil {
				t.Fatal(err)
			}
		}
	})
	return conn
}

func TestConfigStatusCommand(t *testing.T) {
	conn := configServer(t)
	run := func(args ...string) (string, string, error) {
		return gitfleet(t, append(append([]string{"config", "status"}, conn...), args...)...)
	}
	out, _, err := run()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("gitfleet config status:\n%s", out)
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) < 3 || !strings.HasPrefix(lines[0], "DEVICECONFIG") {
		t.Fatalf("want a header and a row per DeviceConfig:\n%s", out)
	}
	// everyone: the five sims, one in sync, one failed, three pending.
	row := strings.Fields(lines[1])
	if row[0] != "everyone" || strings.Join(row[3:], " ") != "5 1 3 0 1" {
		t.Errorf("everyone's row %q, want 5 devices: 1 in sync, 3 pending, 0 drifted, 1 failed", lines[1])
	}
	if !strings.Contains(out, "everyone: sim-002 failed: 20-ntp exited 2: ntpd: unknown server") {
		t.Errorf("the failure is not explained:\n%s", out)
	}

	out, _, err = run("--devices", "--state", "failed", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var devs []controller.DeviceConfigState
	if err := json.Unmarshal([]byte(out), &devs); err != nil || len(devs) != 1 || devs[0].Device != "sim-002" || devs[0].Script != "20-ntp" {
		t.Errorf("--devices --state failed --json: %s (%v)", out, err)
	}
	out, _, err = run("everyone", "--devices", "--state", "pending")
	if err != nil || strings.Count(out, "has not reported") != 3 {
		t.Errorf("pending devices:\n%s (%v)", out, err)
	}

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"nope"}, `no DeviceConfig called "nope"`},
		{[]string{"--state", "failed"}, "add --devices"},
		{[]string{"--devices", "--state", "great"}, "want in_sync, pending, drifted or failed"},
		{[]string{"--devices", "--limit", "0"}, "--limit 0"},
	} {
		if _, _, err := run(c.args...); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("config status %v: err %v, want %q", c.args, err, c.want)
		}
	}
}

// gitfleet plan --server ends with how the devices run each DeviceConfig
// now.
func TestPlanShowsConfigNow(t *testing.T) {
	conn := configServer(t)
	repo := gittest.NewRepo(t)
	repo.CopyDir(filepath.Join("..", "..", "examples", "quickstart"), "seed")
	repo.Commit(map[string]string{
		"all.yaml": "apiVersion: gitfleet.io/v1\nkind: DeviceConfig\nmetadata: {name: everyone}\nspec:\n  target: {all: true}\n  values: {ntp_server: time.example.com}\n",
	}, "move NTP")
	for _, format := range []string{"text", "markdown"} {
		out, _, err := gitfleet(t, append([]string{"plan", "--repo", repo.Dir, "--base", "HEAD~1", "--format", format}, conn...)...)
		if err != nil {
			t.Fatal(err)
		}
		want := "everyone: 1 of 5 devices in sync, 3 pending, 0 drifted, 1 failed"
		if format == "markdown" {
			want = "| `everyone` | 5 | 1 | 3 | 0 | 1 |"
		}
		if !strings.Contains(out, want) {
			t.Errorf("plan --format %s lacks %q:\n%s", format, want, out)
		}
	}
}
