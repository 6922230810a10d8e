package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// writeFleet writes files (slash-separated path → content) under dir.
func writeFleet(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// The manifests of the validate and plan tests.
const (
	testArtifact = `apiVersion: gitfleet.io/v1
kind: Artifact
metadata: {name: app-2}
spec:
  source: artifacts/app-2.mender
  deviceTypes: [rpi4]
  signedBy: [release]
`
	testKey = `apiVersion: gitfleet.io/v1
kind: SigningKey
metadata: {name: release}
spec:
  algorithm: ed25519
  publicKey: |
    -----BEGIN PUBLIC KEY-----
    MCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=
    -----END PUBLIC KEY-----
`
	testGroup = `apiVersion: gitfleet.io/v1
kind: DeviceGroup
metadata:
  name: prod
  labels: {environment: production}
spec:
  members: [gw-1, gw-2]
`
	testDevices = `apiVersion: gitfleet.io/v1
kind: Device
metadata: {name: gateways}
spec:
  devices:
    - {name: gw-1, identity: {mac: "02:00:00:00:00:01"}, trustOnFirstUse: true}
    - {name: gw-2, identity: {mac: "02:00:00:00:00:02"}, trustOnFirstUse: true}
`
	testRollout = `apiVersion: gitfleet.io/v1
kind: Rollout
metadata: {name: app-2}
spec:
  artifact: app-2
  target: {groups: [prod]}
  phases:
    - name: canary
      percent: 5
      abort: {maxFailures: 0}
    - name: all
      percent: 100
      requiresApproval: true
      abort: {maxFailurePercent: 5, minSample: 10}
`
	testPacks = "packs: [production-safety, signed-artifacts, critical-windows]\n"
)

func TestValidateExamples(t *testing.T) {
	for _, dir := range []string{"../../examples/quickstart", "../../fleet-repo-template"} {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			out, errOut, err := gitfleet(t, "validate", dir)
			if err != nil {
				t.Fatalf("validate %s: %v\n%s%s", dir, err, out, errOut)
			}
			if !strings.HasSuffix(out, "validation passed\n") {
				t.Errorf("validate %s printed\n%s", dir, out)
			}
		})
	}
}

// badFleet has one schema error (phase sizes past 100 %), one denied
// policy and one warning.
func badFleet(t *testing.T) {
	t.Chdir(t.TempDir())
	writeFleet(t, "fleet", map[string]string{
		"policies/packs.yaml": testPacks,
		"artifact.yaml":       testArtifact,
		"key.yaml":            testKey,
		"groups.yaml":         testGroup,
		"devices.yaml":        testDevices,
		"rollouts/app-2.yaml": strings.Replace(strings.Replace(testRollout, "percent: 5\n", "percent: 20\n", 1),
			"      requiresApproval: true\n", "", 1),
		"rollouts/broken.yaml": "apiVersion: gitfleet.io/v1\nkind: Rollout\nmetadata: {name: broken}\nspec:\n  artifact: app-2\n  target: {devices: [gw-1]}\n  priority: 1\n  phases:\n    - {name: all, percent: 120}\n",
	})
}

func TestValidateText(t *testing.T) {
	badFleet(t)
	out, _, err := gitfleet(t, "validate", "fleet")
	if got := exitCode(err); got != 1 {
		t.Errorf("exit code = %d, want 1 (err %v)", got, err)
	}
	want := `fleet/rollouts/broken.yaml:9:28: spec.phases[0].percent: invalid value 120: want at most 100
fleet/rollouts/app-2.yaml:8:5: warn: spec.phases: rollout targets production group "prod" but no phase after the canary requires approval; set requiresApproval on the phase that goes wide (production-safety/approval-gate)
fleet/rollouts/app-2.yaml:9:16: deny: spec.phases[0].percent: rollout targets production group "prod" but its first phase "canary" admits 20%; start with a canary of at most 5% (production-safety/canary-first)
6 manifests: validation failed: 1 error, 1 policy denial, 1 warning
`
	if diff := cmp.Diff(want, out); diff != "" {
		t.Errorf("output (-want +got):\n%s", diff)
	}
}

func TestValidateGitHub(t *testing.T) {
	badFleet(t)
	out, _, err := gitfleet(t, "validate", "--format", "github", "fleet")
	if got := exitCode(err); got != 1 {
		t.Errorf("exit code = %d, want 1 (err %v)", got, err)
	}
	for _, want := range []string{
		"::error file=fleet/rollouts/broken.yaml,line=9,col=28,title=gitfleet validate::spec.phases[0].percent: invalid value 120: want at most 100\n",
		"::error file=fleet/rollouts/app-2.yaml,line=9,col=16,title=policy production-safety/canary-first::spec.phases[0].percent: rollout targets production group \"prod\" but its first phase \"canary\" admits 20%25; start with a canary of at most 5%25\n",
		"::warning file=fleet/rollouts/app-2.yaml,line=8,col=5,title=policy production-safety/approval-gate::spec.phases: ",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestValidateJSON(t *testing.T) {
	badFleet(t)
	out, _, err := gitfleet(t, "validate", "--format", "json", "fleet")
	if got := exitCode(err); got != 1 {
		t.Errorf("exit code = %d, want 1 (err %v)", got, err)
	}
	var got struct {
		OK     bool `json:"ok"`
		Errors []struct {
			File    string `json:"file"`
			Line    int    `json:"line"`
			Path    string `json:"path"`
			Message string `json:"message"`
		} `json:"errors"`
		Violations []struct {
			Policy   string `json:"policy"`
			Severity string `json:"severity"`
			File     string `json:"file"`
			Kind     string `json:"kind"`
			Name     string `json:"name"`
		} `json:"violations"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	if got.OK || len(got.Errors) != 1 || got.Errors[0].File != "fleet/rollouts/broken.yaml" || got.Errors[0].Path != "spec.phases[0].percent" {
		t.Errorf("ok/errors = %v %+v", got.OK, got.Errors)
	}
	if len(got.Violations) != 2 || got.Violations[0].Kind != "Rollout" || got.Violations[0].Name != "app-2" {
		t.Errorf("violations = %+v", got.Violations)
	}
}

func TestValidateWarningsPass(t *testing.T) {
	dir := t.TempDir()
	writeFleet(t, dir, map[string]string{
		"policies/packs.yaml": testPacks,
		"artifact.yaml":       testArtifact,
		"key.yaml":            testKey,
		"groups.yaml":         testGroup,
		"devices.yaml":        testDevices,
		"rollout.yaml":        strings.Replace(testRollout, "      requiresApproval: true\n", "", 1),
	})
	out, _, err := gitfleet(t, "validate", dir)
	if err != nil {
		t.Fatalf("validate: %v\n%s", err, out)
	}
	if !strings.Contains(out, "warn: spec.phases: ") || !strings.HasSuffix(out, "validation passed: 1 warning\n") {
		t.Errorf("output:\n%s", out)
	}
}

func TestValidateUsageErrors(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file.yaml")
	writeFleet(t, dir, map[string]string{"file.yaml": testArtifact})
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"validate", "--format", "xml", dir}, `--format: unknown format "xml"`},
		{[]string{"validate", file}, "is not a directory"},
		{[]string{"validate", filepath.Join(dir, "missing")}, "no such file or directory"},
		{[]string{"validate", dir, dir}, "accepts at most 1 arg"},
	} {
		_, _, err := gitfleet(t, tc.args...)
		if exitCode(err) != 2 || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("gitfleet %s: err = %v (exit %d), want exit 2 and %q", strings.Join(tc.args, " "), err, exitCode(err), tc.want)
		}
	}
}

// slowPolicy would run for hours: four comprehensions nested over 100
// elements each.
const slowPolicy = "import \"list\"\nfleet: _\npolicy: slow: violations: [\n" +
	"\tfor a in list.Range(0, 100, 1) for b in list.Range(0, 100, 1)\n" +
	"\tfor c in list.Range(0, 100, 1) for d in list.Range(0, 100, 1)\n" +
	"\tif a+b+c+d < 0 {message: \"x\"}]\n"

// TestAttackSlowPolicyCLI checks that validate and plan stop a policy
// over its budget, say which file and how to raise the budget, and exit
// 1; and that a budget that would refuse every policy is a usage error.
func TestAttackSlowPolicyCLI(t *testing.T) {
	const want = "policies/slow.cue: policy evaluation went over its time budget of 2s and was stopped; " +
		"make the policy cheaper (fewer nested comprehensions over large lists, no large generated values) " +
		"or raise the budget with --policy-timeout\n"
	r := pullRequest(t)
	r.commit("A slow policy", map[string]string{"policies/slow.cue": slowPolicy})
	for _, tc := range []struct {
		name string
		args []string
		want string
		code int
	}{
		{"validate of a repository with a 10^8-step policy → exit 1, the file and the budget named",
			[]string{"validate", "--policy-timeout", "2s", r.dir}, r.dir + "/" + want, 1},
		{"plan of a head adding a 10^8-step policy → exit 1, the file and the budget named",
			[]string{"plan", "--repo", r.dir, "--base", "main", "--policy-timeout", "2s"}, want, 1},
		{"validate with --policy-timeout 0 → usage error",
			[]string{"validate", "--policy-timeout", "0s", r.dir}, "--policy-timeout: want a positive duration", 2},
		{"validate with --policy-memory 10 → usage error",
			[]string{"validate", "--policy-memory", "10", r.dir}, "--policy-memory: want at least 16MiB", 2},
		{"serve with --policy-timeout 0 → refused at start",
			[]string{"serve", "--repo", "file:///nonexistent", "--public-url", "https://fleet.example.com", "--data-dir", t.TempDir(), "--policy-timeout", "0s"},
			"--policy-timeout: want a positive duration", 2},
		{"serve with --policy-memory in an unknown unit → refused at start",
			[]string{"serve", "--repo", "file:///nonexistent", "--public-url", "https://fleet.example.com", "--data-dir", t.TempDir(), "--policy-memory", "1TB"},
			`--policy-memory: unknown unit "TB"`, 2},
		{"plan with --policy-output in an unknown unit → usage error",
			[]string{"plan", "--repo", r.dir, "--base", "main", "--policy-output", "1TB"}, `unknown unit "TB"`, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, _, err := gitfleet(t, tc.args...)
			if got := exitCode(err); got != tc.code {
				t.Fatalf("exit code %d (%v), want %d\n%s", got, err, tc.code, out)
			}
			if !strings.Contains(out, tc.want) && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Errorf("output lacks %q:\n%s\nerr: %v", tc.want, out, err)
			}
		})
	}
}
