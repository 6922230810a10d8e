package deviceapi

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
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

// With the real engine: an artifact the controller refuses admits nobody
// and is announced as artifact.refused with the failed check; once it is
// accepted the canary is admitted, vanishes mid-update, and the sweep of
// the other devices' polls counts it timed out after spec.deviceTimeout,
// which completes the canary phase, so everyone else is admitted. The
// canary's late report changes nothing.
func TestRealPlanRefusedAndTimeout(t *testing.T) {
	const n = 4
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
  deviceTimeout: 1h
  phases:
    - {name: canary, count: 1}
    - {name: all, percent: 100}
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
	e.api.opts.Compile = func(f *schema.Fleet, r []store.RolloutRecord) Planner { return rollout.Compile(f, r) }
	sha := strings.Repeat("c", 40)
	if ok, err := e.store.SetLive(ctx(), store.CommitRecord{SHA: sha}, ""); !ok || err != nil {
		t.Fatal(ok, err)
	}
	if _, err := e.store.PutRollouts(ctx(), sha, []store.RolloutRecord{{Name: "hello", Artifact: "hello-2.0@x"}}); err != nil {
		t.Fatal(err)
	}
	e.snap.Store(&reconcile.Snapshot{Commit: store.CommitRecord{SHA: sha}, Fleet: fleet})
	e.arts.refused = map[string]error{"hello-2": &artifacts.Error{Name: "hello-2", Kind: artifacts.ErrSignature, Err: errors.New(`no signature by key "release"`)}}
	g := store.GenerationRef{Rollout: "hello", Generation: 1}

	devices := make([]*testDevice, n)
	for i := range devices {
		devices[i] = newDevice(t, "ecdsa", map[string]any{"mac": fmt.Sprintf("%02d", i)})
		if code, _ := devices[i].auth(e); code != http.StatusOK {
			t.Fatalf("auth dev-%02d: %d", i, code)
		}
	}
	poll := func(skip int) (got []int) {
		for i, d := range devices {
			if i == skip {
				continue
			}
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
	progress := func() store.Progress {
		e.refresh()
		p, err := e.store.Progress(ctx(), g)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}

	if got := poll(-1); len(got) != 0 {
		t.Fatalf("refused artifact: %v got a deployment", got)
	}
	if p := progress(); p.ChangeCount() != 0 {
		t.Fatalf("refused artifact: progress %+v, want nobody admitted", p)
	}

	e.arts.mu.Lock()
	e.arts.refused = nil
	e.arts.entries["hello-2"] = &artifacts.Entry{Name: "hello-2", Digest: strings.Repeat("ab", 32), ArtifactName: "hello-2.0", DeviceTypes: []string{"qemux86-64"}}
	e.arts.mu.Unlock()
	canary := poll(-1)
	if len(canary) != 1 {
		t.Fatalf("canary phase admitted %v, want 1 device", canary)
	}
	c := canary[0]
	code, _, _ := e.do(http.MethodPut, statusPath("hello-g1"), devices[c].token, []byte(`{"status":"downloading"}`), nil)
	if code != http.StatusNoContent {
		t.Fatalf("canary downloading: %d", code)
	}

	// Within the timeout nothing moves.
	e.clock.Add(30 * time.Minute)
	if got := poll(c); len(got) != 0 {
		t.Fatalf("within the device timeout %v were admitted", got)
	}
	// Past it, the others' polls count the canary timed out.
	e.clock.Add(31 * time.Minute)
	poll(c)
	p := progress()
	if len(p.Phases) == 0 || p.Phases[0].TimedOut != 1 || p.Phases[0].Completed.IsZero() {
		t.Fatalf("after the timeout: progress %+v, want the canary timed out and its phase complete", p)
	}
	if got := poll(c); len(got) != n-1 {
		t.Fatalf("after the canary timed out %v were admitted, want %d devices", got, n-1)
	}
	// The canary comes back: nothing for it, and its report is ignored.
	code, _, _ = e.do(http.MethodPost, nextV2, devices[c].token, v2Body("hello-1.0", "qemux86-64"), nil)
	if code != http.StatusNoContent {
		t.Fatalf("timed-out canary polls: %d, want 204", code)
	}
	code, _, _ = e.do(http.MethodPut, statusPath("hello-g1"), devices[c].token, []byte(`{"status":"success"}`), nil)
	if code != http.StatusNoContent {
		t.Fatalf("timed-out canary reports: %d", code)
	}
	if p := progress(); p.Phases[0].TimedOut != 1 || p.Phases[0].Succeeded != 0 {
		t.Fatalf("late report counted: %+v", p)
	}

	evs, _ := e.store.RecentEvents(ctx(), 20)
	var kinds []string
	var refusal string
	for _, ev := range evs {
		kinds = append(kinds, ev.Kind)
		if ev.Kind == schema.EventArtifactRefused {
			refusal = ev.Message
		}
	}
	want := []string{schema.EventArtifactRefused, schema.EventRolloutPhaseOpened, schema.EventRolloutPhaseCompleted, schema.EventRolloutPhaseOpened}
	if !slices.Equal(kinds, want) {
		t.Fatalf("events %v, want %v", kinds, want)
	}
	if !strings.Contains(refusal, "signature check failed") || !strings.Contains(refusal, `"release"`) {
		t.Errorf("artifact.refused message %q does not name the failed check", refusal)
	}
}
