package deviceapi

import (
	"net/http"
	"testing"

	"github.com/gitfleet/gitfleet/controller/store"
)

// TestAttackOtherDevicesDeployment: a device's token reaches only its own
// deployment. dev-3 is admitted to the generation; dev-1, holding a valid
// token of its own, tries to report for it.
func TestAttackOtherDevicesDeployment(t *testing.T) {
	e, d1, _ := deploymentEnv(t, 10)
	if _, ok, err := e.store.Admit(ctx(), gen1, 0, 10, "dev-3"); !ok || err != nil {
		t.Fatal("admit dev-3", err)
	}
	id := DeploymentID(gen1)
	cases := []struct {
		name, path, body string
		want             int
	}{
		{"success reported for a deployment the device was not admitted to → 404", statusPath(id), `{"status":"success"}`, http.StatusNotFound},
		{"failure reported for a deployment the device was not admitted to → 404", statusPath(id), `{"status":"failure"}`, http.StatusNotFound},
		{"log uploaded to a deployment the device was not admitted to → 404", logPath(id), `{"messages":[{"timestamp":"2025-06-01T12:00:00Z","level":"info","message":"x"}]}`, http.StatusNotFound},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if code, b, _ := e.do(http.MethodPut, tc.path, d1.token, []byte(tc.body), nil); code != tc.want {
				t.Fatalf("%d %s, want %d", code, b, tc.want)
			}
		})
	}
	p, err := e.store.Progress(ctx(), gen1)
	if err != nil {
		t.Fatal(err)
	}
	if ph := p.Phases[0]; ph.Admitted != 1 || ph.Succeeded != 0 || ph.Failed != 0 || p.Aborted != "" {
		t.Fatalf("another device's reports changed the rollout's progress: %+v", p)
	}
	dep, err := e.store.Deployment(ctx(), gen1, "dev-3")
	if err != nil || dep.State != store.StateAdmitted {
		t.Fatalf("dev-3's deployment changed: %+v %v", dep, err)
	}
}
