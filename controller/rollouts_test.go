package controller_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/controller"
	"github.com/gitfleet/gitfleet/controller/artifacts"
	"github.com/gitfleet/gitfleet/controller/deviceapi"
	"github.com/gitfleet/gitfleet/controller/store"
)

// rankedRollout replaces the quickstart's rollout by one over a closed
// target (the five sims by name): a held canary, a second device (count 2 is cumulative), and a
// last phase that requires approval.
const rankedRollout = `apiVersion: gitfleet.io/v1
kind: Rollout
metadata: {name: hello-2}
spec:
  artifact: hello-2
  target: {devices: [sim-001, sim-002, sim-003, sim-004, sim-005]}
  phases:
    - {name: canary, count: 1, hold: 1h}
    - {name: early, count: 2}
    - {name: all, percent: 100, requiresApproval: true}
`

func macOf(name string) string { return "02:00:00:00:00:0" + strings.TrimPrefix(name, "sim-00") }

// The management API says, per phase by name, what it waits for, and
// lists the admitted devices by manifest name and ID with their history.
func TestRolloutsWaiting(t *testing.T) {
	var st store.Store
	tc := startController(t, func(o *controller.Options, _ *controller.ServerOptions) { st = o.Store })
	sha := tc.Repo.Commit(map[string]string{"rollout.yaml": rankedRollout}, "ranked rollout")
	tc.Trigger()
	await(t, tc, "the ranked rollout live", func() bool { return tc.Live().Commit.SHA == sha })
	ctx := context.Background()

	var list struct {
		Rollouts []controller.RolloutView `json:"rollouts"`
	}
	get := func() controller.RolloutView {
		t.Helper()
		list.Rollouts = nil
		if code := tc.getJSON(t, "/api/management/v1/rollouts", &list); code != http.StatusOK {
			t.Fatalf("GET rollouts: %d", code)
		}
		for _, r := range list.Rollouts {
			if r.Name == "hello-2" && !r.Stopped {
				return r
			}
		}
		t.Fatalf("no running hello-2 in %+v", list.Rollouts)
		return controller.RolloutView{}
	}
	v := get()
	if len(v.Phases) != 3 || v.Phases[0].Name != "canary" || v.Phases[1].Name != "early" || v.Phases[2].Name != "all" ||
		v.Phases[0].Limit != 1 || v.Phases[1].Limit != 1 || v.Phases[2].Limit != 3 || v.DeviceTimeout == "" {
		t.Fatalf("phases %+v", v)
	}
	// Nobody admitted: the canary waits for the device ranked first, never
	// seen; the others for the phase before them.
	w := v.Phases[0].Waiting
	if len(w) != 1 || w[0].Reason != "not-polled" || w[0].Places != 1 || len(w[0].Devices) != 1 || w[0].Never != 1 || w[0].OldestLastSeen != nil {
		t.Fatalf("canary waits for %+v", w)
	}
	canary := w[0].Devices[0]
	if w := v.Phases[1].Waiting; len(w) != 1 || w[0].Reason != "previous-phase" {
		t.Errorf("early waits for %+v", w)
	}
	if w := v.Phases[2].Waiting; len(w) != 1 || w[0].Reason != "approval" || !strings.Contains(w[0].Commit, `"all"`) {
		t.Errorf("all waits for %+v", w)
	}

	// The canary was seen once: its last authentication is the oldest.
	seen := time.Now().Add(-3 * time.Hour).UTC().Truncate(time.Millisecond)
	identity := deviceapi.Attributes{"mac": macOf(canary)}
	id := deviceapi.DeviceID(identity)
	if _, err := st.SeeDevice(ctx, store.Device{ID: id, Identity: identity.Canonical(), KeyFingerprint: strings.Repeat("1", 64),
		Status: store.DeviceAccepted, LastSeen: seen}); err != nil {
		t.Fatal(err)
	}
	if w := get().Phases[0].Waiting; len(w) != 1 || w[0].Never != 0 || w[0].OldestLastSeen == nil || !w[0].OldestLastSeen.Equal(seen) {
		t.Fatalf("canary waits for %+v, want last seen %v", w, seen)
	}

	// Admitted and downloading: the canary waits for it.
	g := store.GenerationRef{Rollout: "hello-2", Generation: v.Generation}
	if _, ok, err := st.Admit(ctx, g, 0, 1, canary); err != nil || !ok {
		t.Fatalf("admit %s: %v %v", canary, ok, err)
	}
	if _, _, err := st.Report(ctx, g, canary, "downloading", 0); err != nil {
		t.Fatal(err)
	}
	v = get()
	if w := v.Phases[0].Waiting; len(w) != 1 || w[0].Reason != "devices" || w[0].InProgress["downloading"] != 1 || len(w[0].InProgress) != 1 {
		t.Fatalf("canary waits for %+v", w)
	}
	if v.Phases[0].Admitted != 1 {
		t.Errorf("canary counts %+v", v.Phases[0])
	}

	// Succeeded and recorded complete: early holds for an hour, all waits
	// for its approval.
	if _, _, err := st.Report(ctx, g, canary, store.StateSuccess, 0); err != nil {
		t.Fatal(err)
	}
	done, _, err := st.CompletePhase(ctx, g, 0, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	v = get()
	if v.Phases[0].Completed == nil || len(v.Phases[0].Waiting) != 0 || v.Phases[0].Succeeded != 1 {
		t.Errorf("canary %+v", v.Phases[0])
	}
	if w := v.Phases[1].Waiting; len(w) != 1 || w[0].Reason != "hold" || w[0].Until == nil || !w[0].Until.Equal(done.Add(time.Hour)) {
		t.Errorf("early waits for %+v, want hold until %v", w, done.Add(time.Hour))
	}
	if w := v.Phases[2].Waiting; len(w) != 1 || w[0].Reason != "approval" {
		t.Errorf("all waits for %+v", w)
	}

	// The devices: by manifest name and ID, with their history.
	var devs struct {
		Total   int                        `json:"total"`
		Devices []controller.RolloutDevice `json:"devices"`
	}
	if code := tc.getJSON(t, "/api/management/v1/rollouts/hello-2/devices", &devs); code != http.StatusOK {
		t.Fatalf("GET devices: %d", code)
	}
	if devs.Total != 1 || len(devs.Devices) != 1 {
		t.Fatalf("devices %+v", devs)
	}
	d := devs.Devices[0]
	if d.Name != canary || d.ID != id || d.PhaseName != "canary" || d.State != store.StateSuccess || d.Deadline != nil ||
		d.Admitted == nil || !slices.Equal(d.History, []string{store.StateAdmitted, store.StateSuccess}) || d.LastSeen == nil {
		t.Errorf("device %+v", d)
	}
	if d.HasLog {
		t.Errorf("%s has a log before uploading one", canary)
	}
	var logResp struct {
		Device string              `json:"device"`
		ID     string              `json:"id"`
		Log    store.DeploymentLog `json:"log"`
	}
	logPath := "/api/management/v1/rollouts/hello-2/devices/" + canary + "/log"
	if code := tc.getJSON(t, logPath, &logResp); code != http.StatusNotFound {
		t.Errorf("log before any upload: %d, want 404", code)
	}
	lines := []store.LogLine{{Time: "2025-06-01T12:00:00Z", Level: "error", Message: "install: no space left on device"}}
	if _, err := st.SetDeploymentLog(ctx, g, canary, store.DeploymentLog{Lines: lines}); err != nil {
		t.Fatal(err)
	}
	devs.Devices = nil
	if code := tc.getJSON(t, "/api/management/v1/rollouts/hello-2/devices", &devs); code != http.StatusOK || len(devs.Devices) != 1 || !devs.Devices[0].HasLog {
		t.Errorf("after the upload: %d %+v, want has_log", code, devs.Devices)
	}
	if code := tc.getJSON(t, logPath, &logResp); code != http.StatusOK || logResp.Device != canary || logResp.ID != id ||
		!slices.Equal(logResp.Log.Lines, lines) || logResp.Log.Stored.IsZero() {
		t.Errorf("log: %d %+v", code, logResp)
	}
	if code := tc.getJSON(t, "/api/management/v1/rollouts/nope/devices", &devs); code != http.StatusNotFound {
		t.Errorf("unknown rollout: %d, want 404", code)
	}
	if code := tc.getJSON(t, "/api/management/v1/rollouts/hello-2/devices?from=-1", &devs); code != http.StatusBadRequest {
		t.Errorf("from=-1: %d, want 400", code)
	}
}

// refusingArtifacts refuses every artifact, as the cache does one whose
// signature it does not trust.
type refusingArtifacts struct{}

func (refusingArtifacts) Lookup(name string) (*artifacts.Entry, error) {
	return nil, fmt.Errorf("artifact %s: signature: the artifact's signer \"ci\" is not trusted", name)
}

func (refusingArtifacts) PresignURL(string, *artifacts.Entry, string, time.Duration) (string, time.Time) {
	return "", time.Time{}
}

// An artifact the controller refuses is a rollout state: the API says so,
// with the check that failed, on the rollout and on its open phase.
func TestRolloutsArtifactRefused(t *testing.T) {
	tc := startController(t, func(o *controller.Options, _ *controller.ServerOptions) {
		o.Devices.Artifacts, o.Devices.PublicURL = refusingArtifacts{}, "https://gitfleet.test"
	})
	sha := tc.Repo.Commit(map[string]string{"rollout.yaml": rankedRollout}, "ranked rollout")
	tc.Trigger()
	await(t, tc, "the ranked rollout live", func() bool { return tc.Live().Commit.SHA == sha })
	var list struct {
		Rollouts []controller.RolloutView `json:"rollouts"`
	}
	if code := tc.getJSON(t, "/api/management/v1/rollouts", &list); code != http.StatusOK {
		t.Fatalf("GET rollouts: %d", code)
	}
	for _, r := range list.Rollouts {
		if r.Name != "hello-2" || r.Stopped {
			continue
		}
		if !strings.Contains(r.ArtifactRefused, "not trusted") {
			t.Errorf("artifact_refused %q", r.ArtifactRefused)
		}
		if w := r.Phases[0].Waiting; len(w) == 0 || w[0].Reason != "artifact-refused" || !strings.Contains(w[0].Detail, "signature") {
			t.Errorf("the canary waits for %+v, want the refused artifact first", w)
		}
		return
	}
	t.Fatalf("no running hello-2 in %+v", list.Rollouts)
}
