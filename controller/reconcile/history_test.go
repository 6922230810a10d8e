package reconcile

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gitfleet/gitfleet/controller/gitsource"
	"github.com/gitfleet/gitfleet/controller/gitsource/gittest"
	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gitfleet/gitfleet/controller/store/embedded"
	"github.com/gitfleet/gitfleet/controller/store/redis"
	"github.com/gitfleet/gitfleet/controller/store/redistest"
)

// artifact2YAML declares a second artifact, app-2.
const artifact2YAML = `apiVersion: gitfleet.io/v1
kind: Artifact
metadata: {name: app-2}
spec:
  source: artifacts/app-2.mender
  sha256: %s
  deviceTypes: [board]
`

// newSource follows repo's main branch in a clone of its own, as one
// controller replica does.
func newSource(t *testing.T, repo *gittest.Repo) *gitsource.Source {
	t.Helper()
	src, err := gitsource.New(gitsource.Options{URL: repo.URL(), Dir: filepath.Join(t.TempDir(), "clone")})
	if err != nil {
		t.Fatal(err)
	}
	return src
}

// gitCLI runs the git binary in repo's work tree.
func gitCLI(t *testing.T, repo *gittest.Repo, args ...string) string {
	t.Helper()
	gittest.RequireGit(t)
	cmd := exec.Command("git", append([]string{"-C", repo.Dir}, args...)...)
	cmd.Env = append(os.Environ(),
		"GIT_AUTHOR_NAME=Ada", "GIT_AUTHOR_EMAIL=ada@example.com",
		"GIT_COMMITTER_NAME=Ada", "GIT_COMMITTER_EMAIL=ada@example.com",
		"GIT_CONFIG_NOSYSTEM=1", "HOME="+t.TempDir())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// fetchApply fetches the branch head with src and reconciles it with r.
func fetchApply(t *testing.T, src *gitsource.Source, r *Reconciler) Result {
	t.Helper()
	rev, err := src.Fetch(t.Context())
	if err != nil {
		t.Fatal("fetch:", err)
	}
	res, err := r.Apply(t.Context(), rev)
	if err != nil {
		t.Fatalf("apply %s: %v", rev.SHA, err)
	}
	return res
}

// logLines renders the store's event log as "kind subject" lines, with
// commit SHAs replaced by their names.
func logLines(t *testing.T, st store.EventLog, names map[string]string) []string {
	t.Helper()
	evs, err := st.Events(t.Context(), "", 1000)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range evs {
		subject := e.Subject
		if n, ok := names[subject]; ok {
			subject = n
		}
		out = append(out, e.Kind+" "+subject+" @"+names[e.Commit])
	}
	return out
}

func equalLines(t *testing.T, what string, got, want []string) {
	t.Helper()
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("%s:\ngot:\n  %s\nwant:\n  %s", what, strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

// TestScriptedHistory pushes, refuses, reverts, force-pushes back and
// pushes again on a real repository, reconciled by the real reconciler
// with an embedded store and with Redis; the event log must be exactly
// the expected list.
func TestScriptedHistory(t *testing.T) {
	t.Run("embedded", func(t *testing.T) {
		st, err := embedded.Open(filepath.Join(t.TempDir(), "state.db"), embedded.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		scriptedHistory(t, st)
	})
	t.Run("redis", func(t *testing.T) {
		addr, _ := redistest.Start(t)
		st, err := redis.New(redis.Options{URL: "redis://" + addr})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		scriptedHistory(t, st)
	})
}

func scriptedHistory(t *testing.T, st store.Store) {
	ctx := t.Context()
	repo := gittest.NewRepo(t)
	src := newSource(t, repo)
	r := New(Options{Store: st, History: src, Branch: "main"})
	names := map[string]string{}
	step := func(name, sha string, want Outcome, wantSeq int64) {
		t.Helper()
		names[sha] = name
		res := fetchApply(t, src, r)
		if res.Outcome != want || res.SHA != sha {
			t.Fatalf("%s: %s %s, want %s %s (%v)", name, res.Outcome, names[res.SHA], want, name, res.Errors)
		}
		live, err := st.Live(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if live.Seq != wantSeq {
			t.Fatalf("%s: live %s seq %d, want seq %d", name, names[live.SHA], live.Seq, wantSeq)
		}
	}

	// c1: the fleet, rollout app on app-1.
	c1 := repo.Commit(fleetFiles(digestA, 1), "c1: fleet with rollout app on app-1")
	step("c1", c1, Applied, 1)
	// c2: points app at app-2, whose Artifact is not committed yet: refused.
	rollout2 := strings.Replace(sprintf(rolloutYAML, 1), "artifact: app-1", "artifact: app-2", 1)
	c2 := repo.Commit(map[string]string{"rollout.yaml": rollout2}, "c2: roll out app-2")
	step("c2", c2, Refused, 1)
	// c3: adds the Artifact: live, a new generation on app-2.
	c3 := repo.Commit(map[string]string{"artifact2.yaml": sprintf(artifact2YAML, digestB)}, "c3: add artifact app-2")
	step("c3", c3, Applied, 2)
	// c4: the revert workflow: git revert of c2, back to app-1.
	gitCLI(t, repo, "revert", "--no-edit", c2)
	c4 := repo.Head()
	step("c4", c4, Applied, 3)
	// The branch force-pushed back to c3: c3 is live again, a rewind.
	repo.Reset(c3)
	step("c3", c3, Applied, 4)
	// c4 pushed again: live again.
	repo.Reset(c4)
	step("c4", c4, Applied, 5)

	equalLines(t, "event log", logLines(t, st, names), []string{
		"commit.live c1 @c1",
		"rollout.started app @c1",
		"commit.refused c2 @c2",
		"commit.live c3 @c3",
		"rollout.artifact app @c3",
		"commit.live c4 @c4",
		"rollout.artifact app @c4",
		"commit.rewound c3 @c3",
		"commit.live c3 @c3",
		"rollout.artifact app @c3",
		"commit.live c4 @c4",
		"rollout.artifact app @c4",
	})
	evs, _ := st.Events(ctx, "", 1000)
	if m := evs[7].Message; !strings.Contains(m, fmt.Sprintf("main moved back from %s to %s", short(c4), short(c3))) {
		t.Errorf("commit.rewound message %q does not say from and to", m)
	}
	ros, err := st.Rollouts(ctx)
	if err != nil || len(ros) != 1 || ros[0].Generation != 5 || !strings.Contains(ros[0].Artifact, "app-1@") {
		t.Fatalf("rollouts %+v %v: want app in generation 5 on app-1", ros, err)
	}
	// Fetching the same head again changes nothing and logs nothing.
	if res := fetchApply(t, src, r); res.Outcome != Unchanged {
		t.Fatalf("same head again: %s", res.Outcome)
	}
	if n := len(logLines(t, st, names)); n != 12 {
		t.Fatalf("%d events after an unchanged fetch, want 12", n)
	}
}

// noFetch hides a Source's Fetch method: a History that cannot fetch.
type noFetch struct{ src *gitsource.Source }

func (h noFetch) IsAncestor(a, b string) (bool, bool, error) { return h.src.IsAncestor(a, b) }

// TestReplicasDoNotFlap: two replicas with their own clones share one
// store. One sees the branch move back; the other still holds a head it
// fetched before that (which descends from the new live commit, so
// ancestry would take it forward): it must not bring it back.
func TestReplicasDoNotFlap(t *testing.T) {
	ctx := t.Context()
	st := openStore(t)
	repo := gittest.NewRepo(t)
	srcA, srcB := newSource(t, repo), newSource(t, repo)
	a := New(Options{Store: st, History: srcA, Branch: "main"})
	b := New(Options{Store: st, History: srcB, Branch: "main"})
	blind := New(Options{Store: st, History: noFetch{srcB}, Branch: "main"})
	names := map[string]string{}

	c1 := repo.Commit(fleetFiles(digestA, 1), "c1")
	names[c1] = "c1"
	for _, r := range []*Reconciler{a, b, blind} {
		if res := fetchApply(t, srcA, r); res.Outcome != Applied {
			t.Fatalf("c1: %s", res.Outcome)
		}
	}
	c2 := repo.Commit(fleetFiles(digestA, 2), "c2")
	names[c2] = "c2"
	// B fetches c2 but is slow to reconcile it.
	held, err := srcB.Fetch(ctx)
	if err != nil || held.SHA != c2 {
		t.Fatal(held.SHA, err)
	}
	if res := fetchApply(t, srcA, a); res.Outcome != Applied || res.SHA != c2 {
		t.Fatalf("A on c2: %s %s", res.Outcome, names[res.SHA])
	}
	// The branch is moved back to c1; A sees it.
	repo.Reset(c1)
	if res := fetchApply(t, srcA, a); res.Outcome != Applied || res.SHA != c1 {
		t.Fatalf("A on the rewind: %s %s", res.Outcome, names[res.SHA])
	}

	// The blind replica, without a way to fetch, is behind.
	if res, err := blind.Apply(ctx, held); err != nil || res.Outcome != Behind {
		t.Fatalf("blind replica with the stale c2: %+v %v", res, err)
	}
	// B fetches again, finds c1 and follows it.
	res, err := b.Apply(ctx, held)
	if err != nil || res.Outcome != Applied || res.SHA != c1 {
		t.Fatalf("B with the stale c2: %+v %v", res, err)
	}
	if got := b.Live().Commit.SHA; got != c1 {
		t.Fatalf("B serves %s, want c1", names[got])
	}
	live, err := st.Live(ctx)
	if err != nil || live.SHA != c1 || live.Seq != 3 {
		t.Fatalf("live %s seq %d (%v), want c1 seq 3", names[live.SHA], live.Seq, err)
	}
	equalLines(t, "event log", logLines(t, st, names), []string{
		"commit.live c1 @c1",
		"rollout.started app @c1",
		"commit.live c2 @c2",
		"rollout.settings app @c2",
		"commit.rewound c1 @c1",
		"commit.live c1 @c1",
		"rollout.settings app @c1",
	})

	// A push after all this: both replicas take it, once.
	c3 := repo.Commit(fleetFiles(digestB, 2), "c3")
	names[c3] = "c3"
	for _, r := range []*Reconciler{b, a} {
		src := map[*Reconciler]*gitsource.Source{a: srcA, b: srcB}[r]
		if res := fetchApply(t, src, r); res.Outcome != Applied || res.SHA != c3 {
			t.Fatalf("c3: %s %s", res.Outcome, names[res.SHA])
		}
	}
	lines := logLines(t, st, names)
	equalLines(t, "events of c3", lines[7:], []string{"commit.live c3 @c3", "rollout.artifact app @c3"})
}
