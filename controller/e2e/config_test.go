package e2e

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/controller"
	"github.com/gitfleet/gitfleet/device/agent"
	"github.com/gitfleet/gitfleet/device/devconfig"
)

// configDevice is one simulated device running the agent's configuration
// code (agent.ConfigApplier with an agent.Client) in this process.
type configDevice struct {
	name    string
	dir     string
	client  *agent.Client
	applier *agent.ConfigApplier
}

// configFleet makes n devices named dev-0000…, with their keys, data
// directories and the shared scripts directory scripts (per-device
// directories in override), and the Device manifests that accept them.
func configFleet(t testing.TB, c *Controller, n int, scripts string, override map[string]string) ([]*configDevice, map[string]string) {
	t.Helper()
	caFile := filepath.Join(t.TempDir(), "controller.crt")
	writeFile(t, caFile, c.CertPEM(), 0o644)
	hc, err := agent.HTTPClient(caFile)
	if err != nil {
		t.Fatal(err)
	}
	hc.Transport.(*http.Transport).MaxIdleConnsPerHost = 256
	var manifest strings.Builder
	manifest.WriteString("apiVersion: gitfleet.io/v1\nkind: Device\nmetadata: {name: config-fleet}\nspec:\n  devices:\n")
	base := t.TempDir()
	log := slog.New(slog.DiscardHandler)
	devs := make([]*configDevice, n)
	for i := range devs {
		name := fmt.Sprintf("dev-%04d", i)
		mac := fmt.Sprintf("02:cf:00:00:%02x:%02x", i>>8, i&0xff)
		fmt.Fprintf(&manifest, "    - {name: %s, identity: {mac: %q}, trustOnFirstUse: true}\n", name, mac)
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		der, _ := x509.MarshalPKIXPublicKey(priv.Public())
		ident := map[string]string{"mac": mac}
		d := &configDevice{name: name, dir: filepath.Join(base, name)}
		d.client = agent.NewClient(agent.ClientOptions{ServerURL: c.URL(), HTTP: hc, Key: priv,
			PublicKeyPEM: pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}),
			Identity:     func(context.Context) (map[string]string, error) { return ident, nil }})
		sd := scripts
		if o, ok := override[name]; ok {
			sd = o
		}
		if d.applier, err = agent.NewConfigApplier(agent.ConfigApplierOptions{DataDir: d.dir, ScriptsDir: sd, Logger: log}); err != nil {
			t.Fatal(err)
		}
		devs[i] = d
	}
	return devs, map[string]string{"devices/config-fleet.yaml": manifest.String()}
}

// pollAll has every device poll once (at most par at a time), as when
// their poll timers fire.
func pollAll(t testing.TB, devs []*configDevice, par int) {
	t.Helper()
	sem := make(chan struct{}, par)
	errs := make(chan error, len(devs))
	var wg sync.WaitGroup
	for _, d := range devs {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(context.Background(), Deadline)
			defer cancel()
			if err := d.applier.Poll(ctx, d.client); err != nil {
				errs <- fmt.Errorf("%s: %w", d.name, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// configSummary reads the management API's summary of DeviceConfig name.
func (c *Controller) configSummary(t testing.TB, name string) controller.ConfigSummary {
	t.Helper()
	var out struct {
		Configs []controller.ConfigSummary `json:"configs"`
	}
	if err := c.getJSON("/api/management/v1/config", &out); err != nil {
		t.Fatal(err)
	}
	for _, s := range out.Configs {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no DeviceConfig %s in %+v", name, out.Configs)
	return controller.ConfigSummary{}
}

func (c *Controller) awaitConfig(t testing.TB, name string, ok func(controller.ConfigSummary) bool) controller.ConfigSummary {
	t.Helper()
	var s controller.ConfigSummary
	c.awaitFunc("DeviceConfig "+name+" status", func() bool { s = c.configSummary(t, name); return ok(s) },
		func() string { return fmt.Sprintf("%+v", s) })
	return s
}

const configSecret = "s3cr3t-api-key-7f1c9a"

func deviceConfigs(ntp string) map[string]string {
	return map[string]string{
		"config/everyone.yaml": `apiVersion: gitfleet.io/v1
kind: DeviceConfig
metadata: {name: everyone}
spec:
  target: {all: true}
  values: {ntp_server: ` + ntp + `, motd: hello}
  secrets:
    api_key: {file: api-key}
`,
		"config/half.yaml": `apiVersion: gitfleet.io/v1
kind: DeviceGroup
metadata: {name: half}
spec:
  members: [dev-0000, dev-0001, dev-0002, dev-0003]
---
apiVersion: gitfleet.io/v1
kind: DeviceConfig
metadata: {name: half}
spec:
  target: {groups: [half]}
  values: {motd: hi}
`,
	}
}

// TestDeviceConfigFleet: a DeviceConfig commit reaches 1,000 simulated
// devices running the agent's configuration code against gitfleet serve
// (Redis); they apply it with their apply-device-config.d scripts and
// report its digest. A device whose script fails shows as failed with the
// script's output (its secret scrubbed), one edited by hand as drifted; a
// change in Git and its revert bring every device along. The secret value
// never appears in the controller's log, its events or its API answers.
func TestDeviceConfigFleet(t *testing.T) {
	n := 1000
	if testing.Short() {
		n = 100
	}
	secrets := t.TempDir()
	writeFile(t, filepath.Join(secrets, "api-key"), []byte(configSecret+"\n"), 0o600)
	seed := t.TempDir()
	writeFile(t, filepath.Join(seed, "README.md"), []byte("fleet\n"), 0o644)
	env := newEnv(t, seed)
	c := env.StartController("a", "--config-secrets-dir", secrets)
	c.AwaitServing(env.Repo.Head())

	// Every device records what it applied next to the file; dev-0013's
	// script prints the file and fails.
	scripts := t.TempDir()
	writeFile(t, filepath.Join(scripts, "10-record"), []byte("#!/bin/sh\ncp \"$1\" \"$1.applied\"\n"), 0o755)
	failing := t.TempDir()
	writeFile(t, filepath.Join(failing, "10-fail"), []byte("#!/bin/sh\necho \"applying $(cat \"$1\")\"\necho 'wpa_cli: no such interface' >&2\nexit 3\n"), 0o755)
	devs, manifest := configFleet(t, c, n, scripts, map[string]string{"dev-0013": failing})

	start := time.Now()
	sha := env.CommitAndServe(c, merge(manifest, deviceConfigs("pool.ntp.org")), "configure the fleet")
	pollAll(t, devs, 64)
	s := c.awaitConfig(t, "everyone", func(s controller.ConfigSummary) bool { return s.InSync+s.Failed == n })
	t.Logf("%d devices configured in %s (commit %.8s)", n, time.Since(start).Round(time.Millisecond), sha)
	if s.Targets != n || s.InSync != n-1 || s.Failed != 1 || len(s.Problems) != 1 {
		t.Fatalf("everyone: %+v", s)
	}
	p := s.Problems[0]
	if p.Device != "dev-0013" || p.Script != "10-fail" || p.ExitCode != 3 || !strings.Contains(p.Output, "wpa_cli: no such interface") ||
		!strings.Contains(p.Output, "<secret>") {
		t.Errorf("the failure %+v does not name dev-0013's script, exit code and output (with the secret scrubbed)", p)
	}
	if h := c.configSummary(t, "half"); h.Targets != 4 || h.InSync != 4 {
		t.Errorf("half: %+v", h)
	}
	// What the scripts saw: the merged configuration, with the secret.
	for _, d := range []*configDevice{devs[0], devs[500%n]} {
		b, err := os.ReadFile(d.applier.Path() + ".applied")
		if err != nil {
			t.Fatal(err)
		}
		motd := "hello"
		if d.name == "dev-0000" {
			motd = "hi"
		}
		want := string(devconfig.Encode(map[string]string{"ntp_server": "pool.ntp.org", "motd": motd, "api_key": configSecret}))
		if string(b) != want {
			t.Errorf("%s's script got %s, want %s", d.name, b, want)
		}
	}

	// dev-0042's file is edited by hand: drifted at its next poll.
	drifter := devs[42%n]
	if err := os.WriteFile(drifter.applier.Path(), []byte(`{"ntp_server":"evil.example.com"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	pollAll(t, devs[42%n:42%n+1], 1)
	s = c.awaitConfig(t, "everyone", func(s controller.ConfigSummary) bool { return s.Drifted == 1 })
	if s.InSync != n-2 || s.Problems[0].Device != drifter.name && s.Problems[1].Device != drifter.name {
		t.Errorf("after the hand edit: %+v", s)
	}

	// A change in Git reaches everyone (the drifted file is replaced), and
	// its revert brings the old configuration back.
	env.CommitAndServe(c, deviceConfigs("time.example.com"), "move NTP")
	pollAll(t, devs, 64)
	c.awaitConfig(t, "everyone", func(s controller.ConfigSummary) bool { return s.InSync == n-1 && s.Failed == 1 })
	if b, _ := os.ReadFile(drifter.applier.Path()); !strings.Contains(string(b), "time.example.com") {
		t.Errorf("the drifted device did not apply the new configuration: %s", b)
	}
	revert := exec.Command("git", "revert", "--no-edit", "HEAD")
	revert.Dir = env.Repo.Dir
	if out, err := revert.CombinedOutput(); err != nil {
		t.Fatalf("git revert: %v\n%s", err, out)
	}
	env.Push(c, env.Repo.Head(), false)
	c.AwaitServing(env.Repo.Head())
	pollAll(t, devs, 64)
	c.awaitConfig(t, "everyone", func(s controller.ConfigSummary) bool { return s.InSync == n-1 && s.Failed == 1 })
	if b, _ := os.ReadFile(devs[0].applier.Path()); !strings.Contains(string(b), "pool.ntp.org") {
		t.Errorf("after the revert dev-0000 runs %s", b)
	}

	// The secret appears in no log line, event or API answer.
	var answers strings.Builder
	for _, path := range []string{"/api/management/v1/config", "/api/management/v1/config/devices?limit=1000",
		"/api/management/v1/events?limit=1000", "/api/management/v1/status", "/api/management/v1/rollouts"} {
		req, _ := http.NewRequest(http.MethodGet, c.URL()+path, nil)
		req.Header.Set("Authorization", "Bearer "+env.Token)
		resp, err := c.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		answers.Write(b)
	}
	for what, text := range map[string]string{"the controller's log": c.Logs(), "the management API": answers.String()} {
		if strings.Contains(text, configSecret) {
			t.Errorf("the secret value appears in %s", what)
		}
	}
}

// BenchmarkDeviceConfigRollout measures, with GITFLEET_BENCH_DEVICES
// simulated devices (default 10,000; no apply scripts, so the figures are
// the protocol's and the controller's), the time from a DeviceConfig
// commit going live to every device having fetched, applied and reported
// its new digest, when every device polls once (64 at a time), and the
// controller's CPU per applied configuration. The devices are
// authenticated and configured once first; the measured change is the
// second.
//
//	go test -run '^$' -bench DeviceConfigRollout -benchtime 1x -timeout 30m ./controller/e2e/
func BenchmarkDeviceConfigRollout(b *testing.B) {
	n := 10_000
	if s := os.Getenv("GITFLEET_BENCH_DEVICES"); s != "" {
		if _, err := fmt.Sscan(s, &n); err != nil || n < 1 {
			b.Fatalf("GITFLEET_BENCH_DEVICES=%q", s)
		}
	}
	secrets := b.TempDir()
	writeFile(b, filepath.Join(secrets, "api-key"), []byte(configSecret+"\n"), 0o600)
	seed := b.TempDir()
	writeFile(b, filepath.Join(seed, "README.md"), []byte("fleet\n"), 0o644)
	env := newEnv(b, seed)
	c := env.StartController("a", "--config-secrets-dir", secrets, "--log-level", "info")
	c.AwaitServing(env.Repo.Head())
	devs, manifest := configFleet(b, c, n, filepath.Join(b.TempDir(), "no-scripts"), nil)
	env.CommitAndServe(c, merge(manifest, deviceConfigs("pool.ntp.org")), "configure the fleet")
	warm := time.Now()
	pollAll(b, devs, 64)
	c.awaitConfig(b, "everyone", func(s controller.ConfigSummary) bool { return s.InSync == n })
	b.Logf("first configuration (authentication included): %d devices in %s", n, time.Since(warm).Round(time.Millisecond))

	b.ResetTimer()
	for i := range b.N {
		before, err := ReadProcUsage(c.PID())
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		env.CommitAndServe(c, deviceConfigs(fmt.Sprintf("ntp-%d.example.com", i)), "move NTP")
		live := time.Since(start)
		pollAll(b, devs, 64) // every report has been answered when it returns
		took := time.Since(start)
		after, err := ReadProcUsage(c.PID())
		if err != nil {
			b.Fatal(err)
		}
		c.awaitConfig(b, "everyone", func(s controller.ConfigSummary) bool { return s.InSync == n })
		cpu := after.CPU - before.CPU
		b.ReportMetric(took.Seconds(), "s-commit-to-all-reported")
		b.ReportMetric(float64(cpu.Microseconds())/float64(n), "controller-µs/device")
		b.Logf("%d devices: commit live after %s, all reported the new digest after %s; controller CPU %s (%.0f µs per applied configuration: fetch, status, report), RSS %d MiB",
			n, live.Round(time.Millisecond), took.Round(time.Millisecond), cpu.Round(time.Millisecond), float64(cpu.Microseconds())/float64(n), after.RSS>>20)
	}
}
