package deviceapi

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/gitfleet/gitfleet/controller/artifacts"
	"github.com/gitfleet/gitfleet/controller/reconcile"
	"github.com/gitfleet/gitfleet/controller/rollout"
	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gitfleet/gitfleet/schema"
)

// With the real rollout engine: a fleet loaded from YAML, 20 devices, a
// canary of 2 then everyone, abort on the first failure after the canary.
// Exact phase sizes, the canary gate, the abort, 409 for the rest and
// nobody admitted after it.
func TestRealPlan(t *testing.T) {
	const n = 20
	files := fstest.MapFS{
		"artifacts/hello.yaml": {Data: []byte(`apiVersion: gitfleet.io/v1
kind: Artifact
metadata: {name: hello-2}
spec:
  source: artifacts/hello-2.mender
  artifactName: hello-2.0
  deviceTypes: [qemux86-64]
`)},
		"rollouts/hello.yaml": {Data: []byte(`apiVersion: gitfleet.io/v1
kind: Rollout
metadata: {name: hello}
spec:
  artifact: hello-2
  target: {all: true}
  phases:
    - name: canary
      count: 2
    - name: all
      percent: 100
      abort: {maxFailures: 0}
`)},
	}
	var devs strings.Builder
	devs.WriteString("apiVersion: gitfleet.io/v1\nkind: Device\nmetadata: {name: lab}\nspec:\n  devices:\n")
	for i := range n {
		fmt.Fprintf(&devs, "    - {name: dev-%02d, identity: {mac: \"%02d\"}, trustOnFirstUse: true}\n", i, i)
	}
	files["devices/lab.yaml"] = &fstest.MapFile{Data: []byte(devs.String())}
	fleet, err := schema.Load(files)
	if err != nil {
		t.Fatal(err)
	}

	e := newEnv(t)
	e.api.opts.Compile = func(f *schema.Fleet, r []store.RolloutRecord) Planner {
		p := rollout.Compile(f, r)
		if len(p.Problems()) > 0 {
			t.Errorf("plan problems: %v", p.Problems())
		}
		return p
	}
	sha := strings.Repeat("c", 40)
	if ok, err := e.store.SetLive(ctx(), store.CommitRecord{SHA: sha}, ""); !ok || err != nil {
		t.Fatal(ok, err)
	}
	if _, err := e.store.PutRollouts(ctx(), sha, []store.RolloutRecord{{Name: "hello", Artifact: "hello-2.0@x"}}); err != nil {
		t.Fatal(err)
	}
	e.snap.Store(&reconcile.Snapshot{Commit: store.CommitRecord{SHA: sha}, Fleet: fleet})
	e.arts.entries["hello-2"] = &artifacts.Entry{Name: "hello-2", Digest: strings.Repeat("ab", 32), ArtifactName: "hello-2.0", DeviceTypes: []string{"qemux86-64"}}

	devices := make([]*testDevice, n)
	for i := range devices {
		devices[i] = newDevice(t, "ecdsa", map[string]any{"mac": fmt.Sprintf("%02d", i)})
		if code, _ := devices[i].auth(e); code != http.StatusOK {
			t.Fatalf("auth dev-%02d: %d", i, code)
		}
	}
	poll := func() (got []int) {
		for i, d := range devices {
			code, b, _ := e.do(http.MethodPost, nextV2, d.token, v2Body("hello-1.0", "qemux86-64"), nil)
			switch code {
			case http.StatusOK:
				got = append(got, i)
			case http.StatusNoContent:
			default:
				t.Fatalf("poll dev-%02d: %d %s", i, code, b)
			}
		}
		return got
	}
	report := func(i int, status string) int {
		code, _, _ := e.do(http.MethodPut, statusPath("hello-g1"), devices[i].token, []byte(`{"status":"`+status+`"}`), nil)
		return code
	}

	canary := poll()
	if len(canary) != 2 {
		t.Fatalf("canary phase admitted %v, want 2 devices", canary)
	}
	if again := poll(); fmt.Sprint(again) != fmt.Sprint(canary) {
		t.Fatalf("second poll offered %v, want only the canaries %v again", again, canary)
	}
	for _, i := range canary {
		for _, s := range []string{"downloading", "installing", "rebooting", "success"} {
			if c := report(i, s); c != http.StatusNoContent {
				t.Fatalf("canary dev-%02d %s: %d", i, s, c)
			}
		}
	}
	e.clock.Add(time.Second)
	rest := poll()
	if len(rest) != n-2 {
		t.Fatalf("phase all admitted %d devices, want %d", len(rest), n-2)
	}
	p, _ := e.store.Progress(ctx(), store.GenerationRef{Rollout: "hello", Generation: 1})
	if len(p.Phases) != 2 || p.Phases[0].Admitted != 2 || p.Phases[0].Succeeded != 2 || p.Phases[1].Admitted != n-2 {
		t.Fatalf("progress %+v", p)
	}

	// One failure in phase "all" aborts (maxFailures 0).
	if c := report(rest[0], "failure"); c != http.StatusNoContent {
		t.Fatalf("failure report: %d", c)
	}
	p, _ = e.store.Progress(ctx(), store.GenerationRef{Rollout: "hello", Generation: 1})
	if p.Aborted == "" {
		t.Fatalf("not aborted: %+v", p)
	}
	if c := report(rest[1], "installing"); c != http.StatusConflict {
		t.Fatalf("report after abort: %d, want 409", c)
	}
	if got := poll(); len(got) != 0 {
		t.Fatalf("after the abort %v still got a deployment", got)
	}
	evs, _ := e.store.RecentEvents(ctx(), 10)
	var kinds []string
	for _, ev := range evs {
		kinds = append(kinds, ev.Kind)
	}
	if strings.Join(kinds, ",") != "rollout.phase_opened,rollout.phase_completed,rollout.phase_opened,rollout.aborted" {
		t.Fatalf("events %v", kinds)
	}
}
