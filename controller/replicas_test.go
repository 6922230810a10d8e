package controller_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/controller"
	"github.com/gitfleet/gitfleet/controller/store"
)

// A commit this replica refused, made live by another replica (one whose
// policy evaluation fitted its budget), is not evaluated here again at
// every watch tick: the replica keeps serving its last good commit, says so
// once, and takes the next commit as usual.
func TestRefusedCommitLiveElsewhere(t *testing.T) {
	var st store.Store
	tc := startController(t, func(o *controller.Options, _ *controller.ServerOptions) {
		o.WatchInterval = 10 * time.Millisecond
		st = o.Store
	})
	good := tc.Live().Commit.SHA
	bad := tc.Repo.Commit(map[string]string{"rollouts/broken.yaml": "apiVersion: gitfleet.io/v1\nkind: Rollout\nmetadata: {name: broken}\nspec:\n  artifact: no-such-artifact\n  target: {groups: [lab]}\n  phases: [{name: all, percent: 100}]\n"}, "broken rollout")
	tc.Trigger()
	await(t, tc, "the broken commit refused", func() bool { return strings.Contains(tc.logs.String(), `"msg":"commit refused"`) })

	// Another replica makes it live.
	if ok, err := st.SetLive(context.Background(), store.CommitRecord{SHA: bad, Branch: "main", Loaded: time.Now()}, good); !ok || err != nil {
		t.Fatalf("SetLive: %v %v", ok, err)
	}
	await(t, tc, "the warning about the refused live commit", func() bool {
		return strings.Contains(tc.logs.String(), "was refused here")
	})
	// Many watch ticks later: evaluated once, warned once, still serving
	// the last good commit.
	time.Sleep(300 * time.Millisecond) // an observation window of ~30 ticks; nothing may happen in it
	logs := tc.logs.String()
	if n := strings.Count(logs, `"msg":"commit refused"`); n != 1 {
		t.Errorf("the refused commit was evaluated %d times, want 1", n)
	}
	if n := strings.Count(logs, "was refused here"); n != 1 {
		t.Errorf("warned %d times, want 1", n)
	}
	if sha := tc.Live().Commit.SHA; sha != good {
		t.Errorf("serving %.12s, want the last good %.12s", sha, good)
	}

	// The next commit is taken as usual.
	fixed := tc.Repo.Commit(map[string]string{"rollouts/broken.yaml": "# removed\n"}, "remove the broken rollout")
	tc.Trigger()
	await(t, tc, "the fix live", func() bool { return tc.Live().Commit.SHA == fixed })
}

func await(t *testing.T, tc *testController, what string, ok func() bool) {
	t.Helper()
	stop := time.Now().Add(deadline)
	for !ok() {
		if time.Now().After(stop) {
			t.Fatalf("not %s within %s:\n%s", what, deadline, tc.logs)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
