package deviceapi

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/controller/artifacts"
	"github.com/gitfleet/gitfleet/controller/rollout"
	"github.com/gitfleet/gitfleet/controller/store"
)

var gen1 = store.GenerationRef{Rollout: "canary.v2", Generation: 1}

const (
	nextV2 = "/api/devices/v2/deployments/device/deployments/next"
	nextV1 = "/api/devices/v1/deployments/device/deployments/next"
)

func statusPath(id string) string {
	return "/api/devices/v1/deployments/device/deployments/" + id + "/status"
}
func logPath(id string) string {
	return "/api/devices/v1/deployments/device/deployments/" + id + "/log"
}

// deploymentEnv: two accepted devices, a rollout routed to gen1 whose
// plan admits into phase 0 with quota limit, and the artifact "hello-2".
func deploymentEnv(t *testing.T, limit int64) (*env, *testDevice, *testDevice) {
	e := newEnv(t)
	d1 := newDevice(t, "ecdsa", map[string]any{"mac": "01"})
	d2 := newDevice(t, "rsa", map[string]any{"mac": "02"})
	snap := e.setFleet(manifest("dev-1", 1, map[string]string{"mac": "01"}, ""), manifest("dev-2", 2, map[string]string{"mac": "02"}, ""))
	snap.Fleet.Devices[0].Spec.DeviceType = "qemux86-64"
	for _, d := range []*testDevice{d1, d2} {
		if code, _ := d.auth(e); code != http.StatusOK {
			t.Fatal(code)
		}
	}
	e.arts.entries["hello-2"] = &artifacts.Entry{Name: "hello-2", Digest: strings.Repeat("ab", 32), ArtifactName: "hello-2.0", DeviceTypes: []string{"qemux86-64", "rpi4"}}
	e.plan.route = func(d *rollout.Device) (store.GenerationRef, rollout.Reason, bool) { return gen1, "", true }
	e.plan.next = func(in rollout.NextInput) rollout.Decision {
		if in.Device.Provides["artifact_name"] == "hello-2.0" {
			return rollout.Decision{Action: rollout.Installed, Generation: gen1, Phase: 0, Limit: limit, Artifact: "hello-2", ArtifactName: "hello-2.0"}
		}
		if in.Deployment != nil {
			if in.Deployment.State == store.StateSuccess || in.Deployment.State == store.StateFailure {
				return rollout.Decision{Reason: rollout.ReasonDone, Generation: gen1}
			}
			return rollout.Decision{Action: rollout.Resume, Generation: gen1, Phase: in.Deployment.Phase, Artifact: "hello-2"}
		}
		return rollout.Decision{Action: rollout.Admit, Generation: gen1, Phase: 0, Limit: limit, Artifact: "hello-2", ArtifactName: "hello-2.0"}
	}
	return e, d1, d2
}

func v2Body(artifactName, deviceType string) []byte {
	b, _ := json.Marshal(map[string]any{"device_provides": map[string]string{
		"artifact_name": artifactName, "device_type": deviceType, "rootfs-image.version": "1"}, "update_control_map": true})
	return b
}

// The three forms of deployments/next all offer the deployment, and the
// answer is what the Mender client validates (id, artifact_name, source
// uri, device types).
func TestNextForms(t *testing.T) {
	e, d1, _ := deploymentEnv(t, 10)
	v1, _ := json.Marshal(map[string]string{"artifact_name": "hello-1.0", "device_type": "qemux86-64"})
	forms := []struct {
		name, method, path string
		body               []byte
	}{
		{"POST v2", http.MethodPost, nextV2, v2Body("hello-1.0", "qemux86-64")},
		{"POST v1", http.MethodPost, nextV1, v1},
		{"GET v1", http.MethodGet, nextV1 + "?artifact_name=hello-1.0&device_type=qemux86-64", nil},
	}
	for _, f := range forms {
		t.Run(f.name, func(t *testing.T) {
			code, b, h := e.do(f.method, f.path, d1.token, f.body, nil)
			if code != http.StatusOK || !strings.HasPrefix(h.Get("Content-Type"), "application/json") {
				t.Fatalf("%d %s", code, b)
			}
			var got struct {
				ID       string
				Artifact struct {
					Source struct {
						URI    string
						Expire string
					}
					CompatibleDevices []string `json:"device_types_compatible"`
					ArtifactName      string   `json:"artifact_name"`
				}
			}
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatal(err)
			}
			u, err := url.Parse(got.Artifact.Source.URI)
			if got.ID != "canary.v2-g1" || got.Artifact.ArtifactName != "hello-2.0" || err != nil || u.Scheme != "https" ||
				!strings.HasPrefix(u.Path, artifacts.DownloadPath) || u.Query().Get("device") != "dev-1" ||
				len(got.Artifact.CompatibleDevices) != 2 || got.Artifact.Source.Expire != "2025-06-01T13:00:00Z" {
				t.Fatalf("response %s", b)
			}
		})
	}
	// What the plan saw: the manifest name as device ID, identity, provides.
	in := e.plan.seen[0]
	if in.Device.ID != "dev-1" || in.Device.Identity["mac"] != "01" || in.Device.DeviceType != "qemux86-64" ||
		in.Device.Provides["rootfs-image.version"] != "1" || in.Generation != gen1 || in.Deployment != nil {
		t.Fatalf("plan input %+v %+v", in, in.Device)
	}
	// Later polls resume the same deployment (admitted once).
	if in := e.plan.seen[2]; in.Deployment == nil || in.Deployment.State != store.StateAdmitted {
		t.Fatalf("third poll saw deployment %+v", in.Deployment)
	}
	p, _ := e.store.Progress(ctx(), gen1)
	if len(p.Phases) != 1 || p.Phases[0].Admitted != 1 {
		t.Fatalf("progress %+v", p)
	}
}

func TestNextNothing(t *testing.T) {
	e, d1, d2 := deploymentEnv(t, 1)
	cases := []struct {
		name  string
		dev   *testDevice
		body  []byte
		setup func()
		want  int
	}{
		{"device type not the declared one", d1, v2Body("hello-1.0", "rpi4"), nil, http.StatusNoContent},
		{"phase full", d2, v2Body("hello-1.0", "rpi4"), func() {
			if _, ok, _ := e.store.Admit(ctx(), gen1, 0, 1, "someone"); !ok {
				t.Fatal("admit someone")
			}
		}, http.StatusNoContent},
		{"not targeted", d1, v2Body("hello-1.0", "qemux86-64"), func() { e.plan.route = nil }, http.StatusNoContent},
		{"missing device_type", d1, []byte(`{"device_provides":{"artifact_name":"a"}}`), nil, http.StatusBadRequest},
		{"provides not an object", d1, []byte(`{"device_provides":[1]}`), nil, http.StatusBadRequest},
		{"oversized", d1, bytes.Repeat([]byte(" "), MaxNextBody+1), nil, http.StatusRequestEntityTooLarge},
		{"no token", nil, v2Body("hello-1.0", "qemux86-64"), nil, http.StatusUnauthorized},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.setup != nil {
				tc.setup()
			}
			tok := ""
			if tc.dev != nil {
				tok = tc.dev.token
			}
			if code, b, _ := e.do(http.MethodPost, nextV2, tok, tc.body, nil); code != tc.want {
				t.Fatalf("%d %s, want %d", code, b, tc.want)
			}
		})
	}
}

// An artifact the cache does not offer yet: admitted, 204, and served at
// a later poll once it is.
func TestNextArtifactPending(t *testing.T) {
	e, d1, _ := deploymentEnv(t, 5)
	ent := e.arts.entries["hello-2"]
	delete(e.arts.entries, "hello-2")
	if code, _, _ := e.do(http.MethodPost, nextV2, d1.token, v2Body("hello-1.0", "qemux86-64"), nil); code != http.StatusNoContent {
		t.Fatalf("%d, want 204", code)
	}
	e.arts.entries["hello-2"] = ent
	if code, _, _ := e.do(http.MethodPost, nextV2, d1.token, v2Body("hello-1.0", "qemux86-64"), nil); code != http.StatusOK {
		t.Fatalf("%d, want 200", code)
	}
}

// A device that already runs the artifact is admitted and counted as a
// success; the poll gets 204.
func TestNextAlreadyInstalled(t *testing.T) {
	e, d1, _ := deploymentEnv(t, 5)
	if code, _, _ := e.do(http.MethodPost, nextV2, d1.token, v2Body("hello-2.0", "qemux86-64"), nil); code != http.StatusNoContent {
		t.Fatalf("%d, want 204", code)
	}
	p, _ := e.store.Progress(ctx(), gen1)
	if len(p.Phases) != 1 || p.Phases[0].Admitted != 1 || p.Phases[0].Succeeded != 1 {
		t.Fatalf("progress %+v", p)
	}
	if len(e.plan.statuses) != 1 || e.plan.statuses[0].Progress.Phases[0].Succeeded != 1 {
		t.Fatalf("OnStatus calls %+v", e.plan.statuses)
	}
}

func TestStatusAndAbort(t *testing.T) {
	e, d1, d2 := deploymentEnv(t, 10)
	e.plan.onStatus = func(in rollout.StatusInput) rollout.StatusDecision {
		if in.Progress.Phases[in.Phase].Failed >= 1 {
			return rollout.StatusDecision{Abort: true, Reason: "1 failure > maxFailures 0", Criterion: "maxFailures"}
		}
		return rollout.StatusDecision{PhaseCompleted: in.Progress.Phases[in.Phase].Succeeded == 1}
	}
	for _, d := range []*testDevice{d1, d2} {
		dt := "qemux86-64"
		if code, b, _ := e.do(http.MethodPost, nextV2, d.token, v2Body("hello-1.0", dt), nil); code != http.StatusOK {
			t.Fatalf("next: %d %s", code, b)
		}
	}
	if _, ok, err := e.store.Admit(ctx(), gen1, 0, 10, "dev-3"); !ok || err != nil {
		t.Fatal("admit dev-3", err)
	}
	id := DeploymentID(gen1)
	put := func(d *testDevice, path, body string) int {
		code, _, _ := e.do(http.MethodPut, path, d.token, []byte(body), nil)
		return code
	}
	steps := []struct {
		name string
		dev  *testDevice
		path string
		body string
		want int
	}{
		{"downloading", d1, statusPath(id), `{"status":"downloading"}`, 204},
		{"installing", d1, statusPath(id), `{"status":"installing","substate":"writing rootfs"}`, 204},
		{"pause", d1, statusPath(id), `{"status":"pause_before_committing"}`, 204},
		{"rebooting", d1, statusPath(id), `{"status":"rebooting"}`, 204},
		{"unknown status", d1, statusPath(id), `{"status":"exploded"}`, 400},
		{"bad body", d1, statusPath(id), `status=success`, 400},
		{"bad deployment ID", d1, statusPath("nope"), `{"status":"success"}`, 400},
		{"never admitted to that generation", d1, statusPath("canary.v2-g7"), `{"status":"success"}`, 404},
		{"success", d1, statusPath(id), `{"status":"success"}`, 204},
		{"success again changes nothing", d1, statusPath(id), `{"status":"success"}`, 204},
		{"log", d1, logPath(id), `{"messages":[{"timestamp":"2025-06-01T12:00:00Z","level":"info","message":"hello"}]}`, 204},
		{"log without messages", d1, logPath(id), `{}`, 400},
		{"log of another generation", d1, logPath("canary.v2-g9"), `{"messages":[]}`, 404},
		{"d2 downloading", d2, statusPath(id), `{"status":"downloading"}`, 204},
		{"d2 failure aborts", d2, statusPath(id), `{"status":"failure"}`, 204},
	}
	for _, s := range steps {
		if got := put(s.dev, s.path, s.body); got != s.want {
			t.Fatalf("%s: %d, want %d", s.name, got, s.want)
		}
	}
	p, _ := e.store.Progress(ctx(), gen1)
	if p.Aborted == "" || p.Phases[0].Succeeded != 1 || p.Phases[0].Failed != 1 {
		t.Fatalf("progress %+v", p)
	}
	// d1's success completed phase 0 (recorded once), then d2 aborted.
	evs, _ := e.store.RecentEvents(ctx(), 10)
	kinds := []string{}
	for _, ev := range evs {
		kinds = append(kinds, ev.Kind+" "+ev.Subject)
	}
	if strings.Join(kinds, "; ") != "rollout.phase_opened canary.v2/g1/phase0; rollout.phase_completed canary.v2/g1/phase0; rollout.aborted canary.v2/g1" {
		t.Fatalf("events %q", kinds)
	}
	if c := completed(p, 1); !c[0].Equal(e.clock.Now().Truncate(time.Millisecond)) {
		t.Fatalf("phase 0 completion %v", c)
	}

	// After the abort: progress reports get 409, so the client stops; a
	// final report is still counted (204).
	d3 := newDevice(t, "ed25519", map[string]any{"mac": "03"})
	e.setFleet(append(e.snap.Load().Fleet.Devices, manifest("dev-3", 3, map[string]string{"mac": "03"}, ""))...)
	if code, _ := d3.auth(e); code != http.StatusOK {
		t.Fatal(code)
	}
	if got := put(d1, statusPath(id), `{"status":"installing"}`); got != http.StatusConflict {
		t.Fatalf("progress report after abort: %d, want 409", got)
	}
	if got := put(d3, statusPath(id), `{"status":"downloading"}`); got != http.StatusConflict {
		t.Fatalf("report of a device admitted before the abort: %d, want 409", got)
	}
	if got := put(d3, statusPath(id), `{"status":"failure"}`); got != http.StatusNoContent {
		t.Fatalf("final report after abort: %d, want 204", got)
	}
	// And nobody new is admitted.
	e.plan.next = func(in rollout.NextInput) rollout.Decision {
		return rollout.Decision{Action: rollout.Admit, Generation: gen1, Phase: 0, Limit: 10, Artifact: "hello-2"}
	}
	d4 := newDevice(t, "ecdsa", map[string]any{"mac": "04"})
	e.setFleet(append(e.snap.Load().Fleet.Devices, manifest("dev-4", 4, map[string]string{"mac": "04"}, ""))...)
	d4.auth(e)
	if code, _, _ := e.do(http.MethodPost, nextV2, d4.token, v2Body("hello-1.0", "rpi4"), nil); code != http.StatusNoContent {
		t.Fatalf("next after abort: %d, want 204", code)
	}
}

// A device whose failure the store turns into a retry is not counted and
// does not abort.
func TestStatusRetry(t *testing.T) {
	e, d1, _ := deploymentEnv(t, 10)
	e.snap.Load().Fleet.Rollouts = append(e.snap.Load().Fleet.Rollouts, rolloutManifest("canary.v2", 1))
	aborts := 0
	e.plan.onStatus = func(in rollout.StatusInput) rollout.StatusDecision {
		aborts++
		return rollout.StatusDecision{Abort: true, Reason: "x"}
	}
	if code, _, _ := e.do(http.MethodPost, nextV2, d1.token, v2Body("hello-1.0", "qemux86-64"), nil); code != http.StatusOK {
		t.Fatal(code)
	}
	id := DeploymentID(gen1)
	if code, _, _ := e.do(http.MethodPut, statusPath(id), d1.token, []byte(`{"status":"failure"}`), nil); code != http.StatusNoContent {
		t.Fatal(code)
	}
	d, _ := e.store.Deployment(ctx(), gen1, "dev-1")
	p, _ := e.store.Progress(ctx(), gen1)
	if d.State != store.StateRetrying || d.Attempts != 1 || p.Aborted != "" || aborts != 0 {
		t.Fatalf("deployment %+v, progress %+v, OnStatus calls %d", d, p, aborts)
	}
	// The next poll resumes it.
	if code, _, _ := e.do(http.MethodPost, nextV2, d1.token, v2Body("hello-1.0", "qemux86-64"), nil); code != http.StatusOK {
		t.Fatal(code)
	}
}

func TestInventory(t *testing.T) {
	e, d1, _ := deploymentEnv(t, 1)
	steps := []struct {
		method, body string
		want         int
		inv          string
	}{
		{http.MethodPut, `[{"name":"device_type","value":"qemux86-64"},{"name":"ips","value":["10.0.0.1","10.0.0.2"]},{"name":"mem","value":512}]`, 200,
			`{"device_type":"qemux86-64","ips":["10.0.0.1","10.0.0.2"],"mem":512}`},
		{http.MethodPatch, `[{"name":"hostname","value":"box"},{"name":"mem","value":1024}]`, 200,
			`{"device_type":"qemux86-64","hostname":"box","ips":["10.0.0.1","10.0.0.2"],"mem":1024}`},
		{http.MethodPut, `[{"name":"hostname","value":"box2"}]`, 200, `{"hostname":"box2"}`},
		{http.MethodPut, `[{"name":"","value":"x"}]`, 400, `{"hostname":"box2"}`},
		{http.MethodPut, `[{"name":"a","value":{"nested":1}}]`, 400, `{"hostname":"box2"}`},
		{http.MethodPatch, `{"name":"a"}`, 400, `{"hostname":"box2"}`},
		{http.MethodPut, `[{"name":"big","value":"` + strings.Repeat("x", 3000) + `"},{"name":"big2","value":"` + strings.Repeat("x", 3000) + `"},` +
			`{"name":"big3","value":"` + strings.Repeat("x", 3000) + `"},{"name":"big4","value":"` + strings.Repeat("x", 3000) + `"},` +
			`{"name":"big5","value":"` + strings.Repeat("x", 3000) + `"},{"name":"big6","value":"` + strings.Repeat("x", 3000) + `"}]`, 413, `{"hostname":"box2"}`},
		{http.MethodPut, strings.Repeat(" ", MaxInventoryBody+1), 413, `{"hostname":"box2"}`},
	}
	for i, s := range steps {
		code, b, _ := e.do(s.method, inventoryPath, d1.token, []byte(s.body), nil)
		if code != s.want {
			t.Fatalf("step %d: %d %s, want %d", i, code, b, s.want)
		}
		rec, err := e.store.Device(ctx(), d1.id())
		if err != nil || string(rec.Inventory) != s.inv {
			t.Fatalf("step %d: inventory %s, %v; want %s", i, rec.Inventory, err, s.inv)
		}
	}
	// Polls see the inventory, flattened.
	e.do(http.MethodPut, inventoryPath, d1.token, []byte(`[{"name":"site","value":"lab"},{"name":"ips","value":["a","b"]}]`), nil)
	e.do(http.MethodPost, nextV2, d1.token, v2Body("hello-1.0", "qemux86-64"), nil)
	last := e.plan.seen[len(e.plan.seen)-1].Device.Inventory
	if last["site"] != "lab" || last["ips"] != "a,b" {
		t.Fatalf("inventory seen by the plan: %v", last)
	}
}

func TestDeploymentIDs(t *testing.T) {
	for _, g := range []store.GenerationRef{
		{Rollout: "a", Generation: 1}, {Rollout: "canary-g2", Generation: 3},
		{Rollout: "x-g", Generation: 12}, {Rollout: "Fleet.Wide_1", Generation: 9999999},
	} {
		got, err := ParseDeploymentID(DeploymentID(g))
		if err != nil || got != g {
			t.Errorf("%v → %q → %v, %v", g, DeploymentID(g), got, err)
		}
	}
	for _, bad := range []string{"", "-g1", "a-g0", "a-g01", "a-g-1", "a", "a-gx", "a/b-g1", "a{b}-g1", "a-g1 "} {
		if _, err := ParseDeploymentID(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

// A poll whose cached progress does not show a phase completion another
// replica already recorded decides again with the recorded moment (a
// hold runs from it), instead of treating the phase as completing now.
func TestNextCompletionRecordedElsewhere(t *testing.T) {
	e, d1, _ := deploymentEnv(t, 10)
	admit := e.plan.next
	var phaseDone atomic.Bool // phase 0's counts say it is complete
	e.plan.next = func(in rollout.NextInput) rollout.Decision {
		switch {
		case !phaseDone.Load():
			return rollout.Decision{Reason: rollout.ReasonWaitPhase, Generation: gen1}
		case len(in.Completed) == 0 || in.Completed[0].IsZero():
			// Complete but unrecorded: its hold would run from now.
			return rollout.Decision{Reason: rollout.ReasonHold, Generation: gen1, NewlyComplete: 1}
		case !in.Now.After(in.Completed[0].Add(time.Hour)):
			return rollout.Decision{Reason: rollout.ReasonHold, Generation: gen1}
		}
		return admit(in)
	}
	if code, _ := e.poll(d1); code != http.StatusNoContent { // caches the progress
		t.Fatalf("first poll: %d, want 204", code)
	}
	// Another replica saw phase 0 complete two hours ago and recorded it.
	if _, _, err := e.store.CompletePhase(ctx(), gen1, 0, e.clock.Now().Add(-2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	phaseDone.Store(true)
	if code, _ := e.poll(d1); code != http.StatusOK {
		t.Fatalf("poll after another replica recorded the completion 2h ago: %d, want 200 (the 1h hold is over)", code)
	}
	if n := len(e.plan.seen); n != 3 {
		t.Fatalf("%d decisions, want 3 (the second poll decided twice)", n)
	}
}
