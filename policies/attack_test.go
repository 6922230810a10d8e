package policies

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/gitfleet/gitfleet/schema"
)

// testBudget is small, so that a hostile policy is stopped quickly; a
// fair policy over a test fleet takes a few milliseconds.
var testBudget = Budget{Time: 3 * time.Second, Memory: 256 << 20, Output: 64 << 10}

// hostilePolicies are policy files that would keep a core busy for hours,
// take gigabytes or flood the report, each with the budget that stops it.
// Each sits beside a fair policy file evaluated after it.
func hostilePolicies() []struct{ name, src, want string } {
	var share strings.Builder // a value shared 2^30 times, then encoded
	share.WriteString("import \"encoding/json\"\nfleet: _\n_a0: {x: 1, y: 2}\n")
	for i := 1; i <= 30; i++ {
		fmt.Fprintf(&share, "_a%d: {l: _a%d, r: _a%d}\n", i, i-1, i-1)
	}
	share.WriteString("policy: share: violations: [if len(json.Marshal(_a30)) < 0 {message: \"x\"}]\n")
	const over = "policy evaluation went over its "
	return []struct{ name, src, want string }{
		{
			"nested comprehensions over list.Range (10^8 steps) → refused over the time budget",
			"import \"list\"\nfleet: _\npolicy: slow: violations: [\n" +
				"\tfor a in list.Range(0, 100, 1) for b in list.Range(0, 100, 1)\n" +
				"\tfor c in list.Range(0, 100, 1) for d in list.Range(0, 100, 1)\n" +
				"\tif a+b+c+d < 0 {message: \"x\"}]\n",
			over + "time budget of 3s",
		},
		{
			"exponential structure sharing encoded to JSON → refused over the time or memory budget",
			share.String(),
			over,
		},
		{
			"list.Range of 10^8 elements → refused over the memory budget",
			"import \"list\"\nfleet: _\n_l: list.Range(0, 100000000, 1)\npolicy: big: violations: [if len(_l) < 0 {message: \"x\"}]\n",
			over + "memory budget of 256MiB",
		},
		{
			"strings.Repeat to 2 GiB → refused over the memory budget",
			"import \"strings\"\nfleet: _\n_s: strings.Repeat(strings.Repeat(\"x\", 65536), 32768)\npolicy: str: violations: [if len(_s) < 0 {message: \"x\"}]\n",
			over + "memory budget of 256MiB",
		},
		{
			"regexp over a large generated string in a 1000-fold comprehension → refused over the time budget",
			"import \"regexp\"\nimport \"strings\"\nfleet: _\n_s: strings.Repeat(\"ab\", 500000)\n" +
				"policy: re: violations: [for i in [0,1,2,3,4,5,6,7,8,9] for j in [0,1,2,3,4,5,6,7,8,9] for k in [0,1,2,3,4,5,6,7,8,9]\n" +
				"\tif regexp.Match(\"((a|b)*(a|b)*(ab)*)*c\\(i)\\(j)\\(k)\", _s) {message: \"x\"}]\n",
			over + "time budget of 3s",
		},
		{
			"2,000 violations of 1,000 bytes each → refused over the output budget",
			"import (\"list\", \"strings\")\nfleet: _\n_m: strings.Repeat(\"x\", 1000)\npolicy: flood: violations: [for i in list.Range(0, 2000, 1) {message: _m}]\n",
			over + "output budget of 64KiB",
		},
	}
}

const fairPolicy = "fleet: _\npolicy: fair: violations: [{message: \"fair policy ran\"}]\n"

// TestAttackHostilePolicies evaluates each hostile policy file with the
// test budget: the commit is refused with an error naming the file and
// the budget, the fair file after it is reported as not evaluated, the
// evaluator is gone, and a repository without the hostile file is then
// evaluated as usual.
func TestAttackHostilePolicies(t *testing.T) {
	for _, tc := range hostilePolicies() {
		t.Run(tc.name, func(t *testing.T) {
			fsys := fstest.MapFS{
				"policies/a-hostile.cue": {Data: []byte(tc.src)},
				"policies/b-fair.cue":    {Data: []byte(fairPolicy)},
			}
			budget := testBudget
			if strings.Contains(tc.want, "memory budget") {
				// Memory must trip first, also on a loaded machine where
				// building the value takes longer than the time budget.
				budget.Time = time.Minute
			}
			vs, err := checkWithDeadline(t, fsys, budget)
			var es schema.Errors
			if !errors.As(err, &es) {
				t.Fatalf("err = %v (%T), want schema.Errors", err, err)
			}
			if len(es) != 2 || es[0].File != "policies/a-hostile.cue" || !strings.Contains(es[0].Msg, tc.want) {
				t.Fatalf("errors:\n%v\nwant policies/a-hostile.cue: …%s…", err, tc.want)
			}
			if !strings.Contains(es[0].Msg, "--policy-") {
				t.Errorf("error does not say how to raise the budget: %s", es[0].Msg)
			}
			if want := "policies/b-fair.cue: not evaluated: policies/a-hostile.cue went over its budget first"; es[1].Error() != want {
				t.Errorf("second error %q, want %q", es[1].Error(), want)
			}
			if len(vs) != 0 {
				t.Errorf("violations %v, want none", vs)
			}
			assertNoEvaluator(t)

			// The fix: the same repository without the hostile file.
			delete(fsys, "policies/a-hostile.cue")
			vs, err = checkWithDeadline(t, fsys, testBudget)
			if err != nil || len(vs) != 1 || vs[0].Message != "fair policy ran" {
				t.Fatalf("after the fix: %v, %v", vs, err)
			}
		})
	}
}

// TestAttackEvaluatorProcess checks the process boundary itself.
func TestAttackEvaluatorProcess(t *testing.T) {
	slow := hostilePolicies()[0].src
	for _, tc := range []struct {
		name string
		run  func(t *testing.T)
	}{
		{"controller shutting down during a slow policy → evaluator killed, no refusal recorded", func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan error, 1)
			go func() {
				_, err := CheckContext(ctx, fstest.MapFS{"policies/slow.cue": {Data: []byte(slow)}}, nil, Budget{Time: time.Hour})
				done <- err
			}()
			waitEvaluator(t, true)
			cancel()
			select {
			case err := <-done:
				if !errors.Is(err, context.Canceled) {
					t.Fatalf("err = %v, want context.Canceled", err)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("CheckContext did not return after its context ended")
			}
			assertNoEvaluator(t)
		}},
		{"secret in the controller's environment → not in the evaluator's", func(t *testing.T) {
			t.Setenv("GITFLEET_TEST_SECRET", "hunter2")
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			go CheckContext(ctx, fstest.MapFS{"policies/slow.cue": {Data: []byte(slow)}}, nil, Budget{Time: time.Hour})
			pid := waitEvaluator(t, true)
			env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
			if err != nil {
				t.Skipf("cannot read the evaluator's environment: %v", err)
			}
			if strings.Contains(string(env), "hunter2") {
				t.Errorf("evaluator environment holds the parent's secret: %q", env)
			}
			cancel()
			waitEvaluator(t, false)
		}},
		{"built-in pack selected by a hostile repository → runs in-process, bounded by the fleet", func(t *testing.T) {
			vs, err := checkWithDeadline(t, fstest.MapFS{ConfigFile: {Data: []byte("packs: [production-safety]\n")}}, testBudget)
			if err != nil || len(vs) != 0 {
				t.Fatalf("%v, %v", vs, err)
			}
		}},
	} {
		t.Run(tc.name, tc.run)
	}
}

// checkWithDeadline runs CheckContext with budget b, failing the test if
// it has not returned after a deadline far beyond b.
func checkWithDeadline(t *testing.T, fsys fstest.MapFS, b Budget) ([]Violation, error) {
	t.Helper()
	type result struct {
		vs  []Violation
		err error
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel() // kills an evaluator left running when the defence is gone
	done := make(chan result, 1)
	go func() {
		vs, err := CheckContext(ctx, fsys, &schema.Fleet{}, b)
		done <- result{vs, err}
	}()
	select {
	case r := <-done:
		return r.vs, r.err
	case <-time.After(b.Time + 60*time.Second):
		t.Fatalf("CheckContext still running long after its %s budget", b.Time)
		return nil, nil
	}
}

// evaluators returns the PIDs of this process's policy evaluators.
func evaluators(t *testing.T) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	var pids []int
	self := fmt.Sprint(os.Getpid())
	for _, e := range entries {
		var pid int
		if _, err := fmt.Sscan(e.Name(), &pid); err != nil {
			continue
		}
		cmdline, err1 := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		stat, err2 := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err1 != nil || err2 != nil || !strings.HasPrefix(string(cmdline), childArgv0) {
			continue
		}
		// stat: pid (comm) state ppid …
		if _, rest, ok := strings.Cut(string(stat), ") "); ok {
			if f := strings.Fields(rest); len(f) > 1 && f[1] == self {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

// assertNoEvaluator fails the test if an evaluator started by this
// process is still there.
func assertNoEvaluator(t *testing.T) {
	t.Helper()
	if pids := evaluators(t); len(pids) > 0 {
		t.Fatalf("policy evaluator processes left running: %v", pids)
	}
}

// waitEvaluator waits until an evaluator runs (running) or none does,
// and returns the PID of one running.
func waitEvaluator(t *testing.T, running bool) int {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		pids := evaluators(t)
		if running && len(pids) > 0 {
			return pids[0]
		}
		if !running && len(pids) == 0 {
			return 0
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("waited 30s for the evaluator to be running=%v", running)
	return 0
}
