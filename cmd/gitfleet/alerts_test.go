package main

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/controller"
	"github.com/gitfleet/gitfleet/controller/gitsource"
	"github.com/gitfleet/gitfleet/controller/gitsource/gittest"
	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gitfleet/gitfleet/controller/store/embedded"
)

// mgmtServer starts a real controller following a Git repository seeded
// from examples/quickstart plus files, with an embedded store that seed
// fills once ready reports the commit served, and serves its handler over
// TLS. It returns the CLI's connection flags and the repository.
func mgmtServer(t *testing.T, files map[string]string, ready func(*controller.Controller) bool, seed func(context.Context, store.Store, *controller.Controller)) ([]string, *gittest.Repo) {
	t.Helper()
	gittest.RequireGit(t)
	repo := gittest.NewRepo(t)
	repo.CopyDir(filepath.Join("..", "..", "examples", "quickstart"), "seed")
	repo.Commit(files, "fixture")
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	src, err := gitsource.New(gitsource.Options{URL: repo.URL(), Ref: "main", Dir: filepath.Join(t.TempDir(), "clone"), Logger: log, PollInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	st, err := embedded.Open(filepath.Join(t.TempDir(), "state.db"), embedded.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	c, err := controller.New(controller.Options{Source: src, Store: st, Branch: "main", Logger: log, ManagementToken: "s3cret", ReplicaID: "replica-1"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	for stop := time.Now().Add(30 * time.Second); c.Live() == nil || !ready(c); {
		if time.Now().After(stop) {
			t.Fatal("the fleet commit was not served within 30s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	seed(ctx, st, c)

	srv := httptest.NewTLSServer(c.Handler())
	t.Cleanup(srv.Close)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	return []string{"--server", srv.URL, "--token", "s3cret", "--ca-cert", ca}, repo
}

// alertsServer is mgmtServer with a group "lab" (sim-001 and sim-004) and
// alerts of three devices.
func alertsServer(t *testing.T) []string {
	t.Helper()
	conn, _ := mgmtServer(t, map[string]string{
		"lab.yaml": "apiVersion: gitfleet.io/v1\nkind: DeviceGroup\nmetadata: {name: lab}\nspec:\n  members: [sim-001, sim-004]\n",
	}, func(c *controller.Controller) bool { return c.Live().Fleet.Group("lab") != nil }, func(ctx context.Context, st store.Store, _ *controller.Controller) {
		t0 := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
		for _, r := range []struct {
			device string
			events []store.AlertEvent
		}{
			{"sim-001", []store.AlertEvent{{Seq: 1, Check: "hello-errors", Kind: store.AlertRaised, Severity: "error",
				Evidence: "ERROR\tdisk \x1b[31mfull\x1b[0m on /data\nand a very long tail that the table has to cut somewhere before the end", Time: t0}}},
			{"sim-002", []store.AlertEvent{{Seq: 1, Check: "hello-errors", Kind: store.AlertRaised, Severity: "error", Evidence: "ERROR two", Time: t0.Add(time.Minute)}}},
			{"sim-004", []store.AlertEvent{
				{Seq: 1, Check: "hello-errors", Kind: store.AlertRaised, Severity: "error", Evidence: "ERROR four", Time: t0.Add(2 * time.Minute)},
				{Seq: 2, Check: "hello-errors", Kind: store.AlertExpired, Time: t0.Add(3 * time.Minute)},
			}},
		} {
			if _, _, err := st.RecordAlerts(ctx, r.device, r.events); err != nil {
				t.Fatal(err)
			}
		}
	})
	return conn
}

func TestAlertsCommand(t *testing.T) {
	conn := alertsServer(t)
	run := func(args ...string) (string, string, error) {
		// The connection flags first: a test's own --token comes later and wins.
		return gitfleet(t, append(append([]string{"alerts"}, conn...), args...)...)
	}

	t.Run("table, most recently changed first, device text made safe", func(t *testing.T) {
		out, _, err := run()
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("gitfleet alerts:\n%s", out)
		lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
		if len(lines) != 4 || !strings.HasPrefix(lines[0], "STATE") || !strings.Contains(lines[0], "EVIDENCE") {
			t.Fatalf("want a header and 3 rows:\n%s", out)
		}
		for i, want := range []string{"sim-004", "sim-002", "sim-001"} {
			if !strings.Contains(lines[i+1], want) {
				t.Fatalf("row %d is not %s:\n%s", i+1, want, out)
			}
		}
		if !strings.HasPrefix(lines[1], "closed (expired)") || !strings.Contains(lines[1], "2025-06-01T12:03:00Z") {
			t.Fatalf("sim-004's row wants its state, how it closed and when:\n%s", lines[1])
		}
		if !strings.HasPrefix(lines[3], "open") || !strings.Contains(lines[3], "2025-06-01T12:00:00Z") ||
			!strings.Contains(lines[3], "ERROR disk [31mfull [0m on /data and a very long") || !strings.HasSuffix(lines[3], "…") {
			t.Fatalf("sim-001's row wants its raise time and its evidence on one line, cut:\n%q", lines[3])
		}
		if strings.ContainsAny(out, "\x1b\t") {
			t.Fatalf("control characters from a device reached the terminal:\n%q", out)
		}
	})

	t.Run("filters reach the server", func(t *testing.T) {
		for _, c := range []struct {
			args []string
			want []string
		}{
			{[]string{"--open"}, []string{"sim-002", "sim-001"}},
			{[]string{"--closed"}, []string{"sim-004"}},
			{[]string{"--group", "lab"}, []string{"sim-004", "sim-001"}},
			{[]string{"--group", "lab", "--open"}, []string{"sim-001"}},
			{[]string{"--device", "sim-002", "--check", "hello-errors", "--severity", "error"}, []string{"sim-002"}},
			{[]string{"--limit", "1"}, []string{"sim-004"}},
		} {
			out, _, err := run(append(c.args, "--json")...)
			if err != nil {
				t.Fatalf("%v: %v", c.args, err)
			}
			var got []store.Alert
			if err := json.Unmarshal([]byte(out), &got); err != nil {
				t.Fatalf("%v: --json is not a list of alert records: %v\n%s", c.args, err, out)
			}
			var devices []string
			for _, a := range got {
				devices = append(devices, a.Device)
			}
			if strings.Join(devices, ",") != strings.Join(c.want, ",") {
				t.Fatalf("%v: %v, want %v", c.args, devices, c.want)
			}
		}
	})

	t.Run("none", func(t *testing.T) {
		out, errOut, err := run("--errors")
		if err != nil || out != "" || !strings.Contains(errOut, "no alerts match") {
			t.Fatalf("%v\nstdout %q\nstderr %q", err, out, errOut)
		}
	})

	t.Run("refusals exit non-zero and say why", func(t *testing.T) {
		for _, c := range []struct {
			args []string
			code int
			want string
		}{
			{[]string{"--group", "nope"}, 1, `400 no DeviceGroup called "nope" in the live commit`},
			{[]string{"--check", "nope"}, 1, `no MonitorCheck called "nope"`},
			{[]string{"--severity", "fatal"}, 1, "critical, error, warning, info"},
			{[]string{"--open", "--closed"}, 2, "--open and --closed: pick one state"},
			{[]string{"--limit", "0"}, 2, "--limit 0: want 1…1000"},
			{[]string{"--token", "wrong"}, 1, "check --token"},
		} {
			_, _, err := run(c.args...)
			if exitCode(err) != c.code || err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("%v: exit %d (%v), want %d and %q", c.args, exitCode(err), err, c.code, c.want)
			}
		}
	})
}

func TestAlertCell(t *testing.T) {
	for _, c := range []struct {
		in   string
		max  int
		want string
	}{
		{"plain", 10, "plain"},
		{"  tabs\tand\nnew\r\nlines  ", 40, "tabs and new lines"},
		{"\x1b]0;title\x07evil", 40, "]0;title evil"},
		{"right\u202eto left", 40, "right to left"},
		{"0123456789abc", 10, "012345678…"},
		{"word      next", 6, "word…"},
		{"bad \xff utf8", 20, "bad ? utf8"},
	} {
		if got := cell(c.in, c.max); got != c.want {
			t.Errorf("cell(%q, %d) = %q, want %q", c.in, c.max, got, c.want)
		}
	}
}

func TestAlertSince(t *testing.T) {
	now := time.Date(2025, 6, 3, 12, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		t    time.Time
		want string
	}{
		{time.Time{}, "-"},
		{now.Add(-42 * time.Second), "42s ago"},
		{now.Add(-5 * time.Minute), "5m ago"},
		{now.Add(-(26*time.Hour + 7*time.Minute)), "26h07m ago"},
		{now.Add(-72 * time.Hour), "2025-05-31T12:00:00Z"},
		{now.Add(time.Hour), "2025-06-03T13:00:00Z"}, // a device clock ahead
	} {
		if got := since(c.t, now); got != c.want {
			t.Errorf("since(%v) = %q, want %q", c.t, got, c.want)
		}
	}
}
