package deviceapi

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/gitfleet/gitfleet/controller/artifacts"
	"github.com/gitfleet/gitfleet/controller/reconcile"
	"github.com/gitfleet/gitfleet/controller/rollout"
	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gitfleet/gitfleet/schema"
)

// An alert named by a phase's abort criteria, raised on a device of the
// generation (through the store, where the agents' monitoring reports
// arrive), aborts the rollout at the next decision.
func TestAlertAborts(t *testing.T) {
	files := fstest.MapFS{
		"artifact.yaml": {Data: []byte("apiVersion: gitfleet.io/v1\nkind: Artifact\nmetadata: {name: hello-2}\nspec:\n  source: artifacts/hello-2.mender\n  deviceTypes: [qemux86-64]\n")},
		"check.yaml":    {Data: []byte("apiVersion: gitfleet.io/v1\nkind: MonitorCheck\nmetadata: {name: app-errors}\nspec:\n  target: {all: true}\n  severity: error\n  expiry: 1h\n  log: {path: /var/log/app.log, pattern: ERROR}\n")},
		"rollout.yaml":  {Data: []byte("apiVersion: gitfleet.io/v1\nkind: Rollout\nmetadata: {name: hello}\nspec:\n  artifact: hello-2\n  target: {all: true}\n  phases:\n    - {name: all, percent: 100, abort: {maxFailures: 5, alerts: [app-errors]}}\n")},
		"devices.yaml":  {Data: []byte("apiVersion: gitfleet.io/v1\nkind: Device\nmetadata: {name: lab}\nspec:\n  devices:\n    - {name: dev-0, identity: {mac: \"00\"}, trustOnFirstUse: true}\n    - {name: dev-1, identity: {mac: \"01\"}, trustOnFirstUse: true}\n")},
	}
	fleet, err := schema.Load(files)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t)
	e.api.opts.Compile = func(f *schema.Fleet, r []store.RolloutRecord) Planner { return rollout.Compile(f, r) }
	sha := strings.Repeat("d", 40)
	if ok, err := e.store.SetLive(ctx(), store.CommitRecord{SHA: sha}, ""); !ok || err != nil {
		t.Fatal(ok, err)
	}
	if _, err := e.store.PutRollouts(ctx(), sha, []store.RolloutRecord{{Name: "hello", Artifact: "hello-2@x"}}); err != nil {
		t.Fatal(err)
	}
	e.snap.Store(&reconcile.Snapshot{Commit: store.CommitRecord{SHA: sha}, Fleet: fleet})
	e.arts.entries["hello-2"] = &artifacts.Entry{Name: "hello-2", Digest: strings.Repeat("ab", 32), ArtifactName: "hello-2", DeviceTypes: []string{"qemux86-64"}}

	var devs []*testDevice
	for i := range 2 {
		d := newDevice(t, "ed25519", map[string]any{"mac": fmt.Sprintf("%02d", i)})
		if code, _ := d.auth(e); code != http.StatusOK {
			t.Fatalf("auth: %d", code)
		}
		if code, b, _ := e.do(http.MethodPost, nextV2, d.token, v2Body("hello-1", "qemux86-64"), nil); code != http.StatusOK {
			t.Fatalf("next: %d %s", code, b)
		}
		devs = append(devs, d)
	}
	g := store.GenerationRef{Rollout: "hello", Generation: 1}
	// dev-0 updated and its monitoring raised the alert.
	if code, _, _ := e.do(http.MethodPut, statusPath("hello-g1"), devs[0].token, []byte(`{"status":"success"}`), nil); code != http.StatusNoContent {
		t.Fatalf("success: %d", code)
	}
	if p, _ := e.store.Progress(ctx(), g); p.Aborted != "" {
		t.Fatalf("aborted before any alert: %q", p.Aborted)
	}
	if _, err := e.store.SetAlert(ctx(), g, "dev-0", "app-errors", true); err != nil {
		t.Fatal(err)
	}
	// The next final report decides with the alert counted: abort.
	if code, _, _ := e.do(http.MethodPut, statusPath("hello-g1"), devs[1].token, []byte(`{"status":"success"}`), nil); code != http.StatusNoContent {
		t.Fatalf("second success: %d", code)
	}
	p, _ := e.store.Progress(ctx(), g)
	if !strings.Contains(p.Aborted, "app-errors") {
		t.Fatalf("abort reason %q does not name the alert", p.Aborted)
	}
}
