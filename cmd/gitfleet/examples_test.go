package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"text/template"
	"time"

	"github.com/gitfleet/gitfleet/controller/artifacts"
	"github.com/gitfleet/gitfleet/controller/deviceapi"
	"github.com/gitfleet/gitfleet/device/monitor"
	"github.com/gitfleet/gitfleet/schema"
)

const securityExample = "../../examples/security-monitoring"

// TestValidateEveryExample keeps every fleet under examples/ valid, with
// no policy warning: a new example is covered by being there.
func TestValidateEveryExample(t *testing.T) {
	dirs, err := filepath.Glob("../../examples/*")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, dir := range dirs {
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			continue
		}
		seen[filepath.Base(dir)] = true
		t.Run(filepath.Base(dir), func(t *testing.T) {
			out, errOut, err := gitfleet(t, "validate", dir)
			if err != nil {
				t.Fatalf("validate %s: %v\n%s%s", dir, err, out, errOut)
			}
			if !strings.HasSuffix(out, "validation passed\n") || strings.Contains(out, "warn:") {
				t.Errorf("validate %s printed\n%s", dir, out)
			}
		})
	}
	for _, want := range []string{"quickstart", "security-monitoring"} {
		if !seen[want] {
			t.Errorf("examples/%s was not validated; found %v", want, dirs)
		}
	}
}

// TestSecurityMonitoringScannerShell runs the scanner's own shell test
// (module states, scans with a fake trivy, rollback) with the system's sh.
func TestSecurityMonitoringScannerShell(t *testing.T) {
	cmd := exec.Command("sh", filepath.Join(securityExample, "scanner", "test.sh"))
	cmd.Env = append(os.Environ(), "TMPDIR="+t.TempDir())
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.HasSuffix(string(out), "# all passed\n") {
		t.Fatalf("scanner/test.sh: %v\n%s", err, out)
	}
}

// TestSecurityMonitoringScanChain follows a finding from the scanner to
// the alert, with the real parts: scanner/build.sh builds and signs the
// artifact (with gitfleet, and with mender-artifact when installed); the
// controller's artifact cache accepts it for the example's Artifact
// manifest; gitfleet-agent installs it through the vuln-scan update module
// under a scratch root; the installed scan runs on a report rendered from
// findings.tpl as Trivy would; and the device monitor, running the
// example's vuln-* MonitorChecks as the controller hands them out, raises
// the alerts with the scan's lines as evidence.
func TestSecurityMonitoringScanChain(t *testing.T) {
	tools := map[string][]string{"gitfleet": {"GITFLEET=" + gitfleetBinary(t)}}
	if ma, err := exec.LookPath("mender-artifact"); err == nil {
		tools["mender-artifact"] = []string{"MENDER_ARTIFACT=" + ma}
	} else {
		t.Log("mender-artifact is not installed: only gitfleet builds the artifact")
	}
	agent := agentBinary(t)
	for tool, env := range tools {
		t.Run(tool, func(t *testing.T) { scanChain(t, env, agent) })
	}
}

func scanChain(t *testing.T, toolEnv []string, agent string) {
	dir := t.TempDir()
	ctx := t.Context()

	// The example fleet, its release key replaced by one made here (as
	// serve.sh does), and the artifact built into a store.
	fleetDir := filepath.Join(dir, "fleet")
	if err := os.CopyFS(fleetDir, os.DirFS(securityExample)); err != nil {
		t.Fatal(err)
	}
	mustGitfleet(t, "keys", "generate", "--type", "ecdsa", "--out", filepath.Join(dir, "release"))
	pub, err := os.ReadFile(filepath.Join(dir, "release.pub"))
	if err != nil {
		t.Fatal(err)
	}
	key := "apiVersion: gitfleet.io/v1\nkind: SigningKey\nmetadata: {name: release}\nspec:\n  algorithm: ecdsa-p256\n  environment: production\n  publicKey: |\n    " +
		strings.ReplaceAll(strings.TrimSpace(string(pub)), "\n", "\n    ") + "\n"
	if err := os.WriteFile(filepath.Join(fleetDir, "keys.yaml"), []byte(key), 0o644); err != nil {
		t.Fatal(err)
	}
	fleet, err := schema.Load(os.DirFS(fleetDir))
	if err != nil {
		t.Fatal(err)
	}
	manifest := fleet.Artifact("vuln-scan-1.0")
	if manifest == nil {
		t.Fatal("the example declares no Artifact vuln-scan-1.0")
	}
	store := filepath.Join(dir, "store")
	out := filepath.Join(store, filepath.FromSlash(manifest.Spec.Source))
	runExample(t, toolEnv, "sh", filepath.Join(securityExample, "scanner", "build.sh"),
		"-k", filepath.Join(dir, "release.key"), "-o", out)
	if _, err := os.Stat(out + ".sha256"); err != nil {
		t.Errorf("build.sh wrote no digest file: %v", err)
	}
	cache, err := artifacts.New(artifacts.Options{
		Dir: filepath.Join(dir, "cache"), StoreDir: store,
		DownloadKeys: [][]byte{[]byte("download-url-signing-key-of-32-bytes!")},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cache.Close() })
	entry, err := cache.Ensure(ctx, *manifest, fleet.Keys)
	if err != nil {
		t.Fatalf("the controller refuses the built artifact for its manifest: %v", err)
	}
	if strings.Join(entry.PayloadTypes, ",") != "vuln-scan" {
		t.Errorf("payload types %v, want [vuln-scan]", entry.PayloadTypes)
	}

	// A gateway: the module where the agent looks for it, a scratch root,
	// and a systemctl that only records what it is asked.
	dev := filepath.Join(dir, "gateway")
	root := filepath.Join(dev, "root")
	for _, d := range []string{filepath.Join(dev, "modules"), root, filepath.Join(dev, "bin")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeExampleFile(t, filepath.Join(dev, "modules", "vuln-scan"), readExampleFile(t, filepath.Join(securityExample, "scanner", "vuln-scan")), 0o755)
	systemctlLog := filepath.Join(dev, "systemctl.log")
	writeExampleFile(t, filepath.Join(dev, "bin", "systemctl"), "#!/bin/sh\necho \"$*\" >>"+systemctlLog+"\n[ \"$1\" != is-enabled ]\n", 0o755)
	writeExampleFile(t, filepath.Join(dev, "device_type"), "device_type=edge-gateway\n", 0o644)
	writeExampleFile(t, filepath.Join(dev, "artifact_info"), "artifact_name=factory\n", 0o644)
	writeExampleFile(t, filepath.Join(dev, "boot_id"), "boot-1\n", 0o644)
	writeExampleFile(t, filepath.Join(dev, "agent.json"), `{
  "DataDir": "`+dev+`/data", "DeviceTypeFile": "`+dev+`/device_type", "ModulesDir": "`+dev+`/modules",
  "ArtifactInfoFile": "`+dev+`/artifact_info", "ArtifactVerifyKey": "`+dir+`/release.pub",
  "BootEnv": "file", "BootEnvFile": "`+dev+`/env", "BootIDFile": "`+dev+`/boot_id", "Monitor": false
}`, 0o644)
	moduleEnv := []string{"VULN_SCAN_ROOT=" + root, "VULN_SCAN_SYSTEMCTL=" + filepath.Join(dev, "bin", "systemctl")}
	cfg := filepath.Join(dev, "agent.json")
	runExample(t, moduleEnv, agent, "--config", cfg, "install", out)
	runExample(t, moduleEnv, agent, "--config", cfg, "commit")
	if got := runExample(t, nil, agent, "--config", cfg, "show-provides"); !strings.Contains(got, "rootfs-image.vuln-scan.version=1.0\n") {
		t.Errorf("after the install the gateway provides\n%s", got)
	}
	for src, dst := range map[string]string{
		"vuln-scan":         "usr/local/sbin/vuln-scan",
		"findings.tpl":      "usr/local/share/vuln-scan/findings.tpl",
		"vuln-scan.service": "etc/systemd/system/vuln-scan.service",
		"vuln-scan.timer":   "etc/systemd/system/vuln-scan.timer",
	} {
		if readExampleFile(t, filepath.Join(root, dst)) != readExampleFile(t, filepath.Join(securityExample, "scanner", "payload", src)) {
			t.Errorf("/%s is not the payload's %s", dst, src)
		}
	}
	if got := readExampleFile(t, systemctlLog); !strings.Contains(got, "enable vuln-scan.timer\n") || !strings.Contains(got, "restart vuln-scan.timer\n") {
		t.Errorf("systemctl was asked\n%s\nwant the timer enabled and restarted", got)
	}

	// The gateway's monitoring, with the example's scan checks as the
	// controller hands them to the agent.
	var checks []monitor.Check
	for _, name := range []string{"vuln-critical", "vuln-high", "vuln-scan-failed"} {
		mc := fleet.Check(name)
		if mc == nil {
			t.Fatalf("the example declares no MonitorCheck %s", name)
		}
		c, err := deviceapi.MonitorCheck(mc)
		if err != nil {
			t.Fatalf("MonitorCheck %s: %v", name, err)
		}
		checks = append(checks, c)
	}
	now := time.Date(2026, 3, 2, 4, 0, 0, 0, time.UTC)
	mon, err := monitor.New(monitor.Options{Root: root, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mon.Close() })
	if err := mon.SetChecks(checks); err != nil {
		t.Fatal(err)
	}
	step := func() map[string]monitor.Event {
		t.Helper()
		now = now.Add(time.Minute)
		if _, err := mon.Step(ctx); err != nil {
			t.Fatal(err)
		}
		got := map[string]monitor.Event{}
		err := mon.Drain(ctx, 100, func(_ context.Context, evs []monitor.Event) error {
			for _, e := range evs {
				if _, dup := got[e.Check]; dup {
					t.Errorf("two events of %s in one step: %+v", e.Check, evs)
				}
				got[e.Check] = e
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	if evs := step(); len(evs) != 0 {
		t.Fatalf("before any scan the checks raised %+v", evs)
	}

	// A scan: Trivy renders findings.tpl over its results; the fake trivy
	// hands that report over, or fails as Trivy does without its database.
	report := renderFindings(t)
	fakeBin := filepath.Join(dev, "fakebin")
	writeExampleFile(t, filepath.Join(fakeBin, "trivy"), `#!/bin/sh
[ -z "${FAIL:-}" ] || { echo "FATAL	init error: DB error: failed to download vulnerability DB" >&2; exit 1; }
while [ $# -gt 0 ]; do [ "$1" != --output ] || cp "`+report+`" "$2"; shift; done
`, 0o755)
	scanEnv := []string{"VULN_SCAN_ROOT=" + root, "PATH=" + fakeBin + ":" + os.Getenv("PATH")}
	scan := filepath.Join(root, "usr", "local", "sbin", "vuln-scan")
	if got := runExample(t, scanEnv, scan); got != "vuln-scan: scan finished: 1 critical, 2 high\n" {
		t.Errorf("the scan printed %q", got)
	}
	evs := step()
	for check, want := range map[string]string{
		"vuln-critical": " vuln-scan: CVE-2024-6119 CRITICAL openssl 3.0.13-r0 fixed=3.0.15-r0",
		"vuln-high":     " vuln-scan: CVE-2024-45490 HIGH expat 2.6.2-r0 fixed=2.6.3-r0",
	} {
		e, ok := evs[check]
		if !ok || e.Kind != monitor.Raised || !strings.HasSuffix(e.Evidence, want) {
			t.Errorf("after the scan, %s: %+v; want raised with evidence ending %q", check, e, want)
		}
	}
	if e, ok := evs["vuln-scan-failed"]; ok {
		t.Errorf("a scan that finished raised vuln-scan-failed: %+v", e)
	}
	if sev := evs["vuln-critical"].Severity; sev != monitor.Critical {
		t.Errorf("vuln-critical severity %q, want critical", sev)
	}

	// A scan that cannot finish is an alert of its own.
	cmd := exec.Command(scan)
	cmd.Env = append(os.Environ(), append(scanEnv, "FAIL=1")...)
	if out, err := cmd.CombinedOutput(); err == nil {
		t.Errorf("a failing scanner: the scan succeeded:\n%s", out)
	}
	evs = step()
	e, ok := evs["vuln-scan-failed"]
	if want := " vuln-scan: ERROR scanner trivy failed: FATAL init error: DB error: failed to download vulnerability DB"; !ok || e.Kind != monitor.Raised || !strings.HasSuffix(e.Evidence, want) {
		t.Errorf("after a failed scan, vuln-scan-failed: %+v; want raised with evidence ending %q", e, want)
	}
	if len(evs) != 1 {
		t.Errorf("after a failed scan: %+v; want vuln-scan-failed only", evs)
	}
}

// renderFindings renders the scanner's findings.tpl as Trivy does (Go's
// text/template over a list of results, each with its vulnerabilities;
// Severity comes from the embedded vulnerability record) and returns the
// report's path.
func renderFindings(t *testing.T) string {
	t.Helper()
	type Vulnerability struct{ Severity string }
	type DetectedVulnerability struct {
		VulnerabilityID, PkgName, InstalledVersion, FixedVersion string
		Vulnerability
	}
	type Result struct {
		Target          string
		Vulnerabilities []DetectedVulnerability
	}
	results := []Result{
		{Target: "gateway (debian 12.5)", Vulnerabilities: []DetectedVulnerability{
			{"CVE-2024-45490", "expat", "2.6.2-r0", "2.6.3-r0", Vulnerability{"HIGH"}},
			{"CVE-2024-6119", "openssl", "3.0.13-r0", "3.0.15-r0", Vulnerability{"CRITICAL"}},
		}},
		{Target: "usr/bin/app", Vulnerabilities: nil},
		{Target: "usr/lib/app/requirements.txt", Vulnerabilities: []DetectedVulnerability{
			{"CVE-2024-6345", "setuptools", "69.0.3", "", Vulnerability{"HIGH"}},
		}},
	}
	tpl, err := template.ParseFiles(filepath.Join(securityExample, "scanner", "payload", "findings.tpl"))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "report")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := tpl.Execute(f, results); err != nil {
		t.Fatal(err)
	}
	return path
}

// agentBinary builds gitfleet-agent once for the test.
func agentBinary(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "gitfleet-agent")
	if out, err := exec.Command("go", "build", "-o", path, "../gitfleet-agent").CombinedOutput(); err != nil {
		t.Fatalf("go build gitfleet-agent: %v\n%s", err, out)
	}
	return path
}

// runExample runs a command with env added to the test's environment and
// returns its standard output; it fails the test unless the command
// succeeds.
func runExample(t *testing.T, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, out, stderr.String())
	}
	return string(out)
}

func readExampleFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func writeExampleFile(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}
