package controller_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/controller"
	"github.com/gitfleet/gitfleet/controller/deviceapi"
	"github.com/gitfleet/gitfleet/controller/store"
)

// do sends method path with the management token (or token, when not
// empty) and decodes a JSON answer into out; it returns the status code
// and the body.
func (tc *testController) do(t *testing.T, method, path, token string, out any) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, tc.URL+path, nil)
	if token == "" {
		token = tc.Token
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := tc.client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if out != nil && resp.StatusCode/100 == 2 {
		if err := json.Unmarshal(body, out); err != nil {
			t.Fatalf("%s %s: %v\n%s", method, path, err, body)
		}
	}
	return resp.StatusCode, string(body)
}

// audit of a rollout: the commits that changed its file (newest first,
// with the change), its events, and its current waits; of a device: its
// file's commits, groups, targeting rollouts with its deployment, configs,
// config state, alerts and events.
func TestAudit(t *testing.T) {
	var st store.Store
	tc := startController(t, func(o *controller.Options, _ *controller.ServerOptions) { st = o.Store })
	first := tc.Repo.Commit(map[string]string{"rollout.yaml": strings.Replace(rankedRollout, "hold: 1h", "hold: 2h", 1)}, "hello-2 by name")
	tc.Trigger()
	await(t, tc, "first commit live", func() bool { return tc.Live().Commit.SHA == first })
	second := tc.Repo.Commit(map[string]string{"rollout.yaml": rankedRollout}, "hold the canary 1h\n\nbody")
	tc.Trigger()
	await(t, tc, "second commit live", func() bool { return tc.Live().Commit.SHA == second })
	ctx := context.Background()

	var ros []store.RolloutRecord
	await(t, tc, "hello-2 recorded", func() bool {
		ros, _ = st.Rollouts(ctx)
		return len(ros) == 1 && ros[0].Generation > 0
	})
	g := store.GenerationRef{Rollout: "hello-2", Generation: ros[0].Generation}
	if _, ok, err := st.Admit(ctx, g, 0, 1, "sim-003"); err != nil || !ok {
		t.Fatalf("admit: %v %v", ok, err)
	}
	if _, _, err := st.Report(ctx, g, "sim-003", "installing", 0); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Truncate(time.Second)
	if _, _, err := st.RecordAlerts(ctx, "sim-003", []store.AlertEvent{{Seq: 1, Check: "hello-errors", Kind: store.AlertRaised,
		Severity: "critical", Evidence: "ERROR hello", Time: now}}); err != nil {
		t.Fatal(err)
	}
	id := deviceapi.DeviceID(deviceapi.Attributes{"mac": macOf("sim-003")})
	if _, err := st.SeeDevice(ctx, store.Device{ID: id, Status: store.DeviceAccepted, LastSeen: now,
		Identity: json.RawMessage(`{"mac":"` + macOf("sim-003") + `"}`)}); err != nil {
		t.Fatal(err)
	}
	if err := st.SetInventory(ctx, id, json.RawMessage(`{"artifact_name":"hello-1","device_type":"gitfleet-sim"}`)); err != nil {
		t.Fatal(err)
	}

	var a controller.Audit
	if code, body := tc.do(t, http.MethodGet, "/api/management/v1/audit?rollout=hello-2", "", &a); code != http.StatusOK {
		t.Fatalf("audit rollout: %d %s", code, body)
	}
	if a.Kind != "rollout" || a.Commit != second || a.Manifest == nil || a.Manifest.File != "rollout.yaml" {
		t.Fatalf("audit rollout head: %+v", a)
	}
	var shas []string
	for _, c := range a.Commits {
		shas = append(shas, c.SHA)
	}
	if len(a.Commits) != 3 || shas[0] != second || shas[1] != first || a.Commits[2].Change != "added" ||
		a.Commits[0].Change != "modified" || a.Commits[0].Subject != "hold the canary 1h" || a.Commits[0].Author == "" {
		t.Fatalf("rollout commits: %+v", a.Commits)
	}
	kinds := eventKinds(a.Events)
	for _, want := range []string{"rollout.started", "rollout.settings"} {
		if !slices.Contains(kinds, want) {
			t.Errorf("rollout events %v lack %s", kinds, want)
		}
	}
	for _, e := range a.Events {
		if e.Subject != "hello-2" && !strings.HasPrefix(e.Subject, "hello-2/") {
			t.Errorf("event about something else: %+v", e)
		}
	}
	if a.Rollout == nil || len(a.Rollout.Phases) != 3 || a.Rollout.Phases[0].Waiting[0].InProgress["installing"] != 1 {
		t.Fatalf("rollout view: %+v", a.Rollout)
	}
	// ?limit keeps the newest events.
	var one controller.Audit
	tc.do(t, http.MethodGet, "/api/management/v1/audit?rollout=hello-2&limit=1", "", &one)
	if len(one.Events) != 1 || one.Events[0].ID != a.Events[len(a.Events)-1].ID {
		t.Errorf("limit=1: %+v, want the last of %v", one.Events, kinds)
	}

	var d controller.Audit
	if code, body := tc.do(t, http.MethodGet, "/api/management/v1/audit?device=sim-003", "", &d); code != http.StatusOK {
		t.Fatalf("audit device: %d %s", code, body)
	}
	if d.Kind != "device" || d.Manifest == nil || d.Manifest.File != "devices.yaml" || len(d.Commits) != 1 || d.Commits[0].Change != "added" {
		t.Fatalf("device manifest and commits: %+v %+v", d.Manifest, d.Commits)
	}
	dv := d.Device
	if dv == nil || dv.ID != id || dv.Status != "accepted" || dv.Artifact != "hello-1" || !slices.Equal(dv.Groups, []string{"sims"}) ||
		!slices.Equal(dv.Configs, []string{"sims"}) || dv.Config == nil || dv.Config.State != controller.ConfigPending {
		t.Fatalf("device: %+v", dv)
	}
	if len(dv.Rollouts) != 1 || dv.Rollouts[0].Rollout != "hello-2" || !dv.Rollouts[0].Following || dv.Rollouts[0].Phase != "canary" ||
		dv.Rollouts[0].State != "installing" || dv.Rollouts[0].Generation != g.Generation {
		t.Fatalf("device rollouts: %+v", dv.Rollouts)
	}
	if len(dv.Alerts) != 1 || dv.Alerts[0].Check != "hello-errors" || dv.Alerts[0].State != store.AlertOpen {
		t.Fatalf("device alerts: %+v", dv.Alerts)
	}
	// A device outside the rollout's named devices is not targeted.
	var other controller.Audit
	tc.do(t, http.MethodGet, "/api/management/v1/audit?device=sim-001", "", &other)
	if other.Device == nil || other.Device.Status != "never-seen" || len(other.Device.Rollouts) != 1 || other.Device.Rollouts[0].State != "" {
		t.Fatalf("sim-001: %+v", other.Device)
	}

	for _, c := range []struct {
		query string
		code  int
		want  string
	}{
		{"", http.StatusBadRequest, "one of ?device=NAME or ?rollout=NAME"},
		{"device=a&rollout=b", http.StatusBadRequest, "one of"},
		{"device=sim-0003", http.StatusNotFound, "it declares sim-001, sim-002, sim-003"},
		{"rollout=hello", http.StatusNotFound, "it declares hello-2"},
		{"rollout=hello-2&limit=0", http.StatusBadRequest, "limit must be"},
	} {
		if code, body := tc.do(t, http.MethodGet, "/api/management/v1/audit?"+c.query, "", nil); code != c.code || !strings.Contains(body, c.want) {
			t.Errorf("%q: %d %s, want %d %q", c.query, code, body, c.code, c.want)
		}
	}
	if code, _ := tc.do(t, http.MethodGet, "/api/management/v1/audit?rollout=hello-2", "wrong", nil); code != http.StatusUnauthorized {
		t.Errorf("wrong token: %d", code)
	}
}

func eventKinds(evs []controller.AuditEvent) []string {
	var out []string
	for _, e := range evs {
		out = append(out, e.Kind)
	}
	return out
}

// POST /reconcile fetches now and answers with the outcome: the new
// commit live, or refused with the errors; GET is not allowed, and the
// token is required.
func TestReconcileNow(t *testing.T) {
	tc := startController(t, nil)
	// The controller polls hourly: only the trigger fetches this commit.
	good := tc.Repo.Commit(map[string]string{"extra.yaml": "apiVersion: gitfleet.io/v1\nkind: DeviceGroup\nmetadata: {name: lab}\nspec:\n  members: [sim-001]\n"}, "a group")
	var r controller.Reconcile
	if code, body := tc.do(t, http.MethodPost, "/api/management/v1/reconcile", "", &r); code != http.StatusOK {
		t.Fatalf("reconcile: %d %s", code, body)
	}
	if r.Outcome != "live" || r.Head != good || r.Serving == nil || r.Serving.SHA != good {
		t.Fatalf("reconcile after a good commit: %+v", r)
	}

	bad := tc.Repo.Commit(map[string]string{"bad.yaml": "apiVersion: gitfleet.io/v1\nkind: DeviceGroup\nmetadata: {name: lab2}\nspec:\n  members: [nobody-declared]\n"}, "a bad group")
	r = controller.Reconcile{}
	if code, body := tc.do(t, http.MethodPost, "/api/management/v1/reconcile?wait=1m", "", &r); code != http.StatusOK {
		t.Fatalf("reconcile: %d %s", code, body)
	}
	if r.Outcome != "refused" || r.Head != bad || r.Serving == nil || r.Serving.SHA != good || len(r.Errors) == 0 ||
		!strings.Contains(strings.Join(r.Errors, "\n"), "bad.yaml") {
		t.Fatalf("reconcile after a bad commit: %+v", r)
	}

	// Unchanged head: settles at once on what is known.
	r = controller.Reconcile{}
	tc.do(t, http.MethodPost, "/api/management/v1/reconcile", "", &r)
	if r.Outcome != "refused" || r.Head != bad {
		t.Fatalf("reconcile again: %+v", r)
	}
	r = controller.Reconcile{}
	if code, _ := tc.do(t, http.MethodPost, "/api/management/v1/reconcile?wait=0s", "", &r); code != http.StatusAccepted || r.Outcome != "triggered" {
		t.Fatalf("wait=0: %d %+v", code, r)
	}
	for _, c := range []struct {
		method, path, token string
		code                int
	}{
		{http.MethodGet, "/api/management/v1/reconcile", "", http.StatusMethodNotAllowed},
		{http.MethodPost, "/api/management/v1/reconcile", "wrong", http.StatusUnauthorized},
		{http.MethodPost, "/api/management/v1/reconcile?wait=1h", "", http.StatusBadRequest},
		{http.MethodPost, "/api/management/v1/reconcile?wait=soon", "", http.StatusBadRequest},
	} {
		if code, body := tc.do(t, c.method, c.path, c.token, nil); code != c.code {
			t.Errorf("%s %s: %d %s, want %d", c.method, c.path, code, body, c.code)
		}
	}
}
