package e2e

import (
	"fmt"
	"github.com/gitfleet/gitfleet/controller"
	"net/http"
	"strings"
	"testing"
	"time"
)

// labGroup is a valid DeviceGroup manifest whose members change per commit.
func labGroup(members ...string) map[string]string {
	return map[string]string{"groups/canary.yaml": fmt.Sprintf(`apiVersion: gitfleet.io/v1
kind: DeviceGroup
metadata:
  name: canary
spec:
  members: [%s]
`, strings.Join(members, ", "))}
}

// TestController is the controller's story: a webhook makes a commit live,
// a bad commit is refused while the good one keeps serving, a forged
// webhook does nothing, a Redis restart loses nothing, and a second replica
// agrees on the live commit.
func TestController(t *testing.T) {
	env := New(t, "fleet-repo-template")
	seed := env.Repo.Head()
	a := env.StartController("a")
	a.AwaitServing(seed)

	// A commit, announced by a signed webhook, goes live.
	good := env.Commit(labGroup("lab-pi-01"), "canary group")
	if code := env.Push(a, good, false); code != http.StatusAccepted {
		t.Fatalf("signed webhook: HTTP %d", code)
	}
	a.AwaitServing(good)

	// A commit with a bad manifest is refused with its errors; the previous
	// commit stays live.
	bad := env.Commit(map[string]string{"rollouts/broken.yaml": "apiVersion: gitfleet.io/v1\nkind: Rollout\nmetadata: {name: broken}\nspec:\n  artifact: no-such-artifact\n  target: {groups: [lab]}\n  phases: [{name: all, percent: 100, abort: {maxFailures: 0}}]\n"}, "broken rollout")
	env.Push(a, bad, false)
	st := a.AwaitRefused(bad)
	if st.Serving.SHA != good {
		t.Fatalf("serving %s after a refused commit, want %s", st.Serving.SHA, good)
	}
	if errs := strings.Join(st.Refused.Errors, "\n"); !strings.Contains(errs, "rollouts/broken.yaml:5") || !strings.Contains(errs, "no-such-artifact") {
		t.Fatalf("refusal does not say file:line and what is wrong:\n%s", errs)
	}

	// Fix it: the fix goes live.
	fixed := env.Commit(map[string]string{"rollouts/broken.yaml": "# removed\n"}, "remove broken rollout")
	env.Push(a, fixed, false)
	a.AwaitServing(fixed)

	// A forged webhook is refused and triggers no fetch.
	pending := env.Commit(labGroup("lab-pi-01", "lab-pi-02"), "second canary device")
	fetches := env.Git.Requests()
	if code := env.Push(a, pending, true); code != http.StatusUnauthorized {
		t.Fatalf("forged webhook: HTTP %d, want 401", code)
	}
	time.Sleep(2 * time.Second) // an observation window: nothing may happen in it
	if n := env.Git.Requests(); n != fetches {
		t.Fatalf("a forged webhook made the controller fetch (%d → %d requests)", fetches, n)
	}
	if st, _ := a.Status(); st.Serving.SHA != fixed {
		t.Fatalf("a forged webhook changed the live commit to %s", st.Serving.SHA)
	}
	if _, body := a.Get("/metrics"); !strings.Contains(body, `gitfleet_webhook_requests_total{outcome="unauthorized",provider="github"} 1`) {
		t.Errorf("the forged webhook is not counted in /metrics")
	}

	// The Git host goes down: the controller keeps serving the last good
	// commit, reports the failures, and catches up once the host is back.
	env.Git.SetDown(true)
	env.Push(a, pending, false)
	st = a.Await("reporting the unreachable repository", func(st controller.Status) bool {
		return st.Git.Failures > 0 && st.Git.LastError != ""
	})
	if st.Serving.SHA != fixed {
		t.Fatalf("serving %s while the Git host is down, want %s", st.Serving.SHA, fixed)
	}
	if code, _ := a.Get("/readyz"); code != 200 {
		t.Errorf("/readyz while Git is down but a commit is served: %d", code)
	}
	env.Git.SetDown(false)

	// Redis restarts mid-run: nothing is lost, and the next push works.
	eventsBefore, err := a.Events()
	if err != nil {
		t.Fatal(err)
	}
	env.RestartRedis()
	env.Push(a, pending, false)
	a.AwaitServing(pending)
	eventsAfter, err := a.Events()
	if err != nil {
		t.Fatal(err)
	}
	if len(eventsAfter) <= len(eventsBefore) {
		t.Fatalf("events after the Redis restart: %d, before: %d", len(eventsAfter), len(eventsBefore))
	}
	for i, e := range eventsBefore {
		if eventsAfter[i]["id"] != e["id"] {
			t.Fatalf("event %d changed across the Redis restart: %v → %v", i, e, eventsAfter[i])
		}
	}
	if st, _ := a.Status(); st.Refused == nil || st.Refused.SHA != bad {
		t.Fatalf("the refused commit was forgotten across the Redis restart: %+v", st.Refused)
	}

	// A second replica on the same Redis agrees on the live commit, and
	// follows a commit announced only to the first.
	b := env.StartController("b")
	b.AwaitServing(pending)
	last := env.Commit(labGroup("lab-pi-02"), "swap canary device")
	env.Push(a, last, false)
	a.AwaitServing(last)
	b.AwaitServing(last)

	// Each commit went live once, whoever applied it.
	evs, _ := b.Events()
	live := map[string]int{}
	for _, e := range evs {
		if e["kind"] == "commit.live" {
			live[e["commit"].(string)]++
		}
	}
	for _, sha := range []string{seed, good, fixed, pending, last} {
		if live[sha] != 1 {
			t.Errorf("commit %.12s went live %d times in the event log", sha, live[sha])
		}
	}
	if code, _ := a.Get("/readyz"); code != 200 {
		t.Errorf("/readyz: %d", code)
	}
}

// TestManagementAPIRequiresToken checks the management API refuses
// requests without the bearer token and that plain HTTP is refused.
func TestManagementAPIRequiresToken(t *testing.T) {
	env := New(t, "examples/quickstart")
	c := env.StartController("a")
	c.AwaitServing(env.Repo.Head())
	if code, _ := c.Get("/api/management/v1/status"); code != http.StatusUnauthorized {
		t.Fatalf("status without token: %d", code)
	}
	resp, err := http.Get("http://" + c.Addr + "/healthz")
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode < 400 {
			t.Fatalf("plain HTTP answered %d", resp.StatusCode)
		}
	}
}
