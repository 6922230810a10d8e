package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// gitRepo is a repository driven by the real git binary.
type gitRepo struct {
	t   *testing.T
	dir string
	git string
}

func newGitRepo(t *testing.T) *gitRepo {
	r := &gitRepo{t: t, dir: t.TempDir(), git: tool(t, "git")}
	r.run("init", "--quiet", "--initial-branch=main")
	return r
}

func (r *gitRepo) run(args ...string) string {
	r.t.Helper()
	cmd := exec.Command(r.git, args...)
	cmd.Dir = r.dir
	cmd.Env = append(os.Environ(),
		"GIT_AUTHOR_NAME=Fleet Engineer", "GIT_AUTHOR_EMAIL=fe@example.com",
		"GIT_COMMITTER_NAME=Fleet Engineer", "GIT_COMMITTER_EMAIL=fe@example.com",
		"GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		r.t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// commit writes files ("" deletes one) and commits them all.
func (r *gitRepo) commit(msg string, files map[string]string) {
	r.t.Helper()
	for name, content := range files {
		if content == "" {
			r.run("rm", "--quiet", name)
			delete(files, name)
		}
	}
	writeFleet(r.t, r.dir, files)
	r.run("add", "--all")
	r.run("commit", "--quiet", "-m", msg)
}

// pullRequest builds main with a valid fleet, and a branch "promote" that
// approves the rollout's last phase and accepts a device.
func pullRequest(t *testing.T) *gitRepo {
	r := newGitRepo(t)
	r.commit("Start the fleet", map[string]string{
		"policies/packs.yaml":   testPacks,
		"artifacts/app-2.yaml":  testArtifact,
		"keys/release.yaml":     testKey,
		"groups/prod.yaml":      testGroup,
		"devices/gateways.yaml": testDevices,
		"rollouts/app-2.yaml":   testRollout,
	})
	r.run("switch", "--quiet", "-c", "promote")
	r.commit("Promote app-2 to all of prod\n\nThe canary has been healthy for a day.", map[string]string{
		"rollouts/app-2.yaml":   strings.Replace(testRollout, "  phases:\n", "  approvedPhases: [all]\n  phases:\n", 1),
		"devices/gateways.yaml": testDevices + `    - {name: gw-3, identity: {mac: "02:00:00:00:00:03"}, trustOnFirstUse: true}` + "\n",
		"groups/prod.yaml":      strings.Replace(testGroup, "[gw-1, gw-2]", "[gw-1, gw-2, gw-3]", 1),
	})
	return r
}

func TestPlanText(t *testing.T) {
	r := pullRequest(t)
	// The work tree plays no part: a broken, uncommitted manifest.
	writeFleet(t, r.dir, map[string]string{"rollouts/wip.yaml": "kind: Rollout\nspec: [\n"})

	out, errOut, err := gitfleet(t, "plan", "--repo", r.dir, "--base", "main", "--head", "promote")
	if err != nil {
		t.Fatalf("plan: %v\n%s%s", err, out, errOut)
	}
	head := r.run("rev-parse", "--short=7", "promote")
	for _, want := range []string{
		"Plan: merging promote (" + head + ") into main (",
		"Validation of promote (" + head + ") passed\n",
		"Summary: 1 rollout promoted, 1 device accepted, 1 group changed\n",
		`  ~ app-2 is promoted: phase "all" approved` + "\n",
		`      phase "all" approved: admits 100 % once the phase before it completes its hold` + "\n",
		"  + gw-3 is accepted: mac=02:00:00:00:00:03\n",
		"      targeted by rollout app-2 (artifact app-2)\n",
		"  ~ prod changes: 3 devices (was 2); affects rollout app-2\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("plan lacks %q:\n%s", want, out)
		}
	}
}

func TestPlanMarkdownAndJSON(t *testing.T) {
	r := pullRequest(t)
	// Revisions are anything Git resolves: here a SHA and HEAD~1 on the
	// checked-out branch.
	base := r.run("rev-parse", "main")
	md := mustGitfleet(t, "plan", "--repo", r.dir, "--base", base, "--format", "markdown")
	for _, want := range []string{
		"<!-- gitfleet-plan -->\n## Gitfleet plan: 1 rollout promoted, 1 device accepted, 1 group changed\n",
		"✅ **Validation passed.**",
		"| `app-2` | promoted | group prod | 3 devices |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}

	out := mustGitfleet(t, "plan", "--repo", filepath.Join(r.dir, "rollouts"), "--base", "HEAD~1", "--format", "json")
	var p struct {
		Base struct {
			Commit string `json:"commit"`
		} `json:"base"`
		Head struct {
			Subject string `json:"subject"`
		} `json:"head"`
		Validation struct {
			OK bool `json:"ok"`
		} `json:"validation"`
		Changes []struct {
			Kind    string   `json:"kind"`
			Name    string   `json:"name"`
			Actions []string `json:"actions"`
			Targets *struct {
				Devices []string `json:"devices"`
				Exact   bool     `json:"exact"`
			} `json:"targets"`
		} `json:"changes"`
	}
	if err := json.Unmarshal([]byte(out), &p); err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	if p.Base.Commit != base || p.Head.Subject != "Promote app-2 to all of prod" || !p.Validation.OK {
		t.Errorf("base %s, head subject %q, ok %v", p.Base.Commit, p.Head.Subject, p.Validation.OK)
	}
	if len(p.Changes) != 3 || p.Changes[0].Kind != "Rollout" || p.Changes[0].Actions[0] != "promoted" ||
		p.Changes[0].Targets == nil || len(p.Changes[0].Targets.Devices) != 3 || !p.Changes[0].Targets.Exact {
		t.Errorf("changes = %+v", p.Changes)
	}
}

func TestPlanInvalidHead(t *testing.T) {
	r := pullRequest(t)
	r.commit("Go wide at once", map[string]string{
		"rollouts/app-2.yaml": strings.Replace(testRollout, "percent: 5\n", "percent: 50\n", 1),
	})
	out, _, err := gitfleet(t, "plan", "--repo", r.dir, "--base", "main")
	if exitCode(err) != 1 {
		t.Errorf("exit code = %d (%v), want 1", exitCode(err), err)
	}
	if !strings.Contains(out, "failed: 1 policy denial") || !strings.Contains(out, "(production-safety/canary-first)") {
		t.Errorf("plan:\n%s", out)
	}
	if !strings.Contains(out, `phase "canary": percent: 5 → 50`) {
		t.Errorf("plan does not describe the change:\n%s", out)
	}
}

func TestPlanErrors(t *testing.T) {
	r := pullRequest(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"plan", "--repo", r.dir}, `required flag(s) "base" not set`},
		{[]string{"plan", "--repo", r.dir, "--base", "no-such-branch"}, `base: resolve "no-such-branch"`},
		{[]string{"plan", "--repo", r.dir, "--base", "main", "--head", "main~5"}, `head: resolve "main~5"`},
		{[]string{"plan", "--repo", r.dir, "--base", "main", "--format", "html"}, `--format: unknown format "html"`},
		{[]string{"plan", "--repo", t.TempDir(), "--base", "main"}, "is not in a Git repository"},
	} {
		_, _, err := gitfleet(t, tc.args...)
		if exitCode(err) != 2 || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("gitfleet %s: err = %v (exit %d), want exit 2 and %q", strings.Join(tc.args, " "), err, exitCode(err), tc.want)
		}
	}
}

// TestPlanTemplate starts a fleet repository from fleet-repo-template, as
// a team would, and plans the promotion its README describes.
func TestPlanTemplate(t *testing.T) {
	r := newGitRepo(t)
	if err := os.CopyFS(r.dir, os.DirFS("../../fleet-repo-template")); err != nil {
		t.Fatal(err)
	}
	r.commit("Start from the template", map[string]string{})
	rollout := filepath.Join(r.dir, "rollouts", "app-1.4.0.yaml")
	data, err := os.ReadFile(rollout)
	if err != nil {
		t.Fatal(err)
	}
	promoted := strings.Replace(string(data), "approvedPhases: []", "approvedPhases: [early]", 1)
	if promoted == string(data) {
		t.Fatal("the template's rollout has no approvedPhases: [] to edit")
	}
	r.commit("Promote app-1.4.0 to early", map[string]string{"rollouts/app-1.4.0.yaml": promoted})

	md := mustGitfleet(t, "plan", "--repo", r.dir, "--base", "HEAD~1", "--format", "markdown")
	for _, want := range []string{
		"## Gitfleet plan: 1 rollout promoted\n",
		"✅ **Validation passed.**",
		`**` + "`app-1.4.0`" + `** is promoted: phase "early" approved`,
	} {
		if !strings.Contains(md, want) {
			t.Errorf("plan lacks %q:\n%s", want, md)
		}
	}
}
