package reconcile

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/controller/gitsource"
	"github.com/gitfleet/gitfleet/controller/gitsource/gittest"
	"github.com/gitfleet/gitfleet/policies"
)

// TestAttackHostilePolicyCommit follows a real Git repository as the
// controller does (gitsource.Run feeding Apply): a commit adding a policy
// that would run for hours (or take gigabytes) is refused when its budget
// runs out, with an error naming the file and the budget; the previous
// commit keeps serving; the next commit, which removes the policy, goes
// live; and no evaluator process is left behind.
func TestAttackHostilePolicyCommit(t *testing.T) {
	for _, tc := range []struct {
		name, policy, want string
	}{
		{
			"policy with a 10^8-step comprehension pushed → commit refused over the time budget, the fix goes live",
			"import \"list\"\nfleet: _\npolicy: slow: violations: [\n" +
				"\tfor a in list.Range(0, 100, 1) for b in list.Range(0, 100, 1)\n" +
				"\tfor c in list.Range(0, 100, 1) for d in list.Range(0, 100, 1)\n" +
				"\tif a+b+c+d < 0 {message: \"x\"}]\n",
			"policies/hostile.cue: policy evaluation went over its time budget of 2s",
		},
		{
			"policy building a 2 GiB string pushed → commit refused over the memory budget, the fix goes live",
			"import \"strings\"\nfleet: _\n_s: strings.Repeat(strings.Repeat(\"x\", 65536), 32768)\n" +
				"policy: big: violations: [if len(_s) < 0 {message: \"x\"}]\n",
			"policies/hostile.cue: policy evaluation went over its memory budget of 256MiB",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			repo := gittest.NewRepo(t)
			good := fleetFiles(digestA, 1)
			good["policies/owner.cue"] = "fleet: _\npolicy: owner: {severity: \"warn\", violations: [for r in fleet.rollouts {manifest: r, message: \"fair policy ran\"}]}\n"
			c1 := repo.Commit(good, "a fleet with a fair policy")

			src, err := gitsource.New(gitsource.Options{
				URL: repo.URL(), Dir: filepath.Join(t.TempDir(), "clone"),
				PollInterval: time.Hour, // only the trigger fetches
				Logger:       slog.New(slog.NewTextHandler(t.Output(), nil)),
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { src.Close() })
			st := openStore(t)
			r := New(Options{Store: st, History: src, Branch: "main",
				PolicyBudget: policies.Budget{Time: 2 * time.Second, Memory: 256 << 20}})

			ctx, cancel := context.WithCancel(t.Context())
			trigger := make(chan struct{}, 1)
			var (
				mu      sync.Mutex
				results = map[string]Result{}
			)
			stopped := make(chan struct{})
			go func() {
				defer close(stopped)
				src.Run(ctx, trigger, func(ctx context.Context, rev gitsource.Revision) {
					res, err := r.Apply(ctx, rev)
					if err != nil && ctx.Err() == nil {
						t.Errorf("Apply %.12s: %v", rev.SHA, err)
					}
					mu.Lock()
					results[rev.SHA] = res
					mu.Unlock()
				})
			}()
			defer func() {
				cancel()
				select {
				case <-stopped:
				case <-time.After(30 * time.Second):
					t.Error("the follow loop is still busy 30s after it was stopped")
				}
			}()
			await := func(sha string) Result {
				t.Helper()
				deadline := time.Now().Add(60 * time.Second)
				for time.Now().Before(deadline) {
					mu.Lock()
					res, ok := results[sha]
					mu.Unlock()
					if ok {
						return res
					}
					time.Sleep(20 * time.Millisecond)
				}
				t.Fatalf("commit %.12s not decided after 60s", sha)
				return Result{}
			}
			push := func(c gittest.Change) string {
				t.Helper()
				sha := repo.Apply(c)
				select {
				case trigger <- struct{}{}:
				default:
				}
				return sha
			}

			if res := await(c1); res.Outcome != Applied {
				t.Fatalf("first commit: %+v", res)
			}

			c2 := push(gittest.Change{Files: map[string]string{"policies/hostile.cue": tc.policy}, Message: "a hostile policy"})
			res := await(c2)
			if res.Outcome != Refused || !strings.Contains(strings.Join(res.Errors, "\n"), tc.want) {
				t.Fatalf("hostile commit: %s %q, want refused with %q", res.Outcome, res.Errors, tc.want)
			}
			if got := r.Live().Commit.SHA; got != c1 {
				t.Fatalf("serving %.12s after the hostile commit, want %.12s", got, c1)
			}
			if live, err := st.Live(ctx); err != nil || live.SHA != c1 {
				t.Fatalf("store live %.12s %v, want %.12s", live.SHA, err, c1)
			}
			ref, err := st.LastRefused(ctx)
			if err != nil || ref.SHA != c2 || !strings.Contains(strings.Join(ref.Errors, "\n"), tc.want) {
				t.Fatalf("recorded refusal %+v %v", ref, err)
			}
			assertNoEvaluator(t)

			c3 := push(gittest.Change{Remove: []string{"policies/hostile.cue"}, Message: "remove the hostile policy"})
			if res := await(c3); res.Outcome != Applied {
				t.Fatalf("fixing commit: %+v", res)
			}
			snap := r.Live()
			if snap.Commit.SHA != c3 || len(snap.Warnings) != 1 || !strings.Contains(snap.Warnings[0], "fair policy ran") {
				t.Fatalf("serving %.12s with warnings %q, want %.12s with the fair policy's", snap.Commit.SHA, snap.Warnings, c3)
			}
			assertNoEvaluator(t)
		})
	}
}

// assertNoEvaluator fails the test if a policy evaluator process started
// by this process is still there.
func assertNoEvaluator(t *testing.T) {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	self := fmt.Sprint(os.Getpid())
	for _, e := range entries {
		cmdline, err1 := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		stat, err2 := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err1 != nil || err2 != nil || !strings.HasPrefix(string(cmdline), "gitfleet-policy-eval") {
			continue
		}
		if _, rest, ok := strings.Cut(string(stat), ") "); ok {
			if f := strings.Fields(rest); len(f) > 1 && f[1] == self {
				t.Fatalf("policy evaluator process %s left running", e.Name())
			}
		}
	}
}
