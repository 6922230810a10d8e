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

// alertsFleet adds to the quickstart fleet (sim-001…sim-005, the group
// "sims" selecting inventory device_type gitfleet-sim, the check
// hello-errors): a device declared by its key alone, a group with a static
// member and an identity selector, and a second check.
var alertsFleet = map[string]string{
	"alerts/keyonly.yaml": "apiVersion: gitfleet.io/v1\nkind: Device\nmetadata: {name: keyonly}\nspec:\n  publicKeySHA256: " + strings.Repeat("ab", 32) + "\n",
	"alerts/lab.yaml":     "apiVersion: gitfleet.io/v1\nkind: DeviceGroup\nmetadata: {name: lab}\nspec:\n  members: [sim-001]\n  selector:\n    identity: {mac: \"02:00:00:00:00:04\"}\n",
	"alerts/check.yaml":   "apiVersion: gitfleet.io/v1\nkind: MonitorCheck\nmetadata: {name: config-files}\nspec:\n  target: {all: true}\n  severity: critical\n  fileChange: {paths: [/etc/passwd]}\n",
}

// startAlertsController starts a controller serving alertsFleet, with
// alerts recorded for every device and the inventory of sim-002, sim-003
// (device_type gitfleet-sim, so in "sims") and sim-005 (another type).
// The alerts, in the order they changed (device clock and store calls
// alike):
//
//	sim-001  hello-errors        open    error
//	sim-002  hello-errors        open    error
//	sim-003  config-files /etc   open    critical
//	sim-004  config-files /etc   closed  critical (cleared)
//	sim-005  hello-errors        error   (the check cannot run)
//	keyonly  config-files /etc   open    critical
func startAlertsController(t *testing.T) *testController {
	t.Helper()
	var st store.Store
	tc := startController(t, func(o *controller.Options, _ *controller.ServerOptions) { st = o.Store })
	sha := tc.Repo.Commit(alertsFleet, "alerts fixture")
	tc.Trigger()
	await(t, tc, "the alerts fixture live", func() bool { return tc.Live().Commit.SHA == sha })

	ctx := context.Background()
	now := time.Now()
	for i, inv := range []struct{ mac, deviceType string }{
		{"02:00:00:00:00:02", "gitfleet-sim"}, {"02:00:00:00:00:03", "gitfleet-sim"}, {"02:00:00:00:00:05", "other-board"},
	} {
		identity := deviceapi.Attributes{"mac": inv.mac}
		id := deviceapi.DeviceID(identity)
		if _, err := st.SeeDevice(ctx, store.Device{ID: id, Identity: identity.Canonical(), KeyFingerprint: strings.Repeat("0", 63) + string(rune('1'+i)),
			Status: store.DeviceAccepted, LastSeen: now}); err != nil {
			t.Fatal(err)
		}
		if err := st.SetInventory(ctx, id, json.RawMessage(`{"device_type":"`+inv.deviceType+`","hostname":"h"}`)); err != nil {
			t.Fatal(err)
		}
	}
	t0 := now.Add(-time.Hour).UTC().Truncate(time.Second)
	at := func(m int) time.Time { return t0.Add(time.Duration(m) * time.Minute) }
	record := func(device string, evs ...store.AlertEvent) {
		t.Helper()
		changed, _, err := st.RecordAlerts(ctx, device, evs)
		if err != nil || len(changed) == 0 {
			t.Fatalf("RecordAlerts %s: %v (changed %v)", device, err, changed)
		}
	}
	raised := func(seq uint64, check, key, sev, evidence string, m int) store.AlertEvent {
		return store.AlertEvent{Seq: seq, Check: check, Key: key, Kind: store.AlertRaised, Severity: sev, Evidence: evidence, Time: at(m)}
	}
	record("sim-001", raised(1, "hello-errors", "", "error", "ERROR one", 1))
	record("sim-002", raised(1, "hello-errors", "", "error", "ERROR two", 2))
	record("sim-003", raised(1, "config-files", "/etc/passwd", "critical", "changed", 3))
	record("sim-004", raised(1, "config-files", "/etc/passwd", "critical", "changed", 4),
		store.AlertEvent{Seq: 2, Check: "config-files", Key: "/etc/passwd", Kind: store.AlertCleared, Time: at(5)})
	record("sim-005", store.AlertEvent{Seq: 1, Check: "hello-errors", Kind: store.AlertCheckError, Evidence: "open /var/log/hello.log: permission denied", Time: at(6)})
	record("keyonly", raised(1, "config-files", "/etc/passwd", "critical", "changed", 7))
	return tc
}

// getAlerts calls the alerts endpoint with query and the management
// token; it returns the status, the devices of the alerts in order (on
// 200) and the body.
func (tc *testController) getAlerts(t *testing.T, query, token string) (int, []string, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, tc.URL+"/api/management/v1/alerts?"+query, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := tc.client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, nil, string(body)
	}
	var out struct {
		Alerts []store.Alert `json:"alerts"`
	}
	if err := json.Unmarshal(body, &out); err != nil || out.Alerts == nil {
		t.Fatalf("?%s: body %s is not {\"alerts\": […]}: %v", query, body, err)
	}
	devices := []string{}
	for _, a := range out.Alerts {
		devices = append(devices, a.Device)
	}
	return resp.StatusCode, devices, string(body)
}

func TestAlertsFilters(t *testing.T) {
	tc := startAlertsController(t)
	for _, c := range []struct {
		name, query string
		want        []string // devices, newest change first
	}{
		{"no filter: every alert, the most recently changed first", "", []string{"keyonly", "sim-005", "sim-004", "sim-003", "sim-002", "sim-001"}},
		{"limit", "limit=2", []string{"keyonly", "sim-005"}},
		{"device", "device=sim-001", []string{"sim-001"}},
		{"check", "check=config-files", []string{"keyonly", "sim-004", "sim-003"}},
		{"severity", "severity=error", []string{"sim-002", "sim-001"}},
		{"state open", "state=open", []string{"keyonly", "sim-003", "sim-002", "sim-001"}},
		{"state closed", "state=closed", []string{"sim-004"}},
		{"state error: checks that cannot run", "state=error", []string{"sim-005"}},
		{"check and state", "check=config-files&state=open", []string{"keyonly", "sim-003"}},
		{"a declared device without alerts", "device=sim-002&check=config-files", []string{}},
		{"group by static member and identity selector", "group=lab", []string{"sim-004", "sim-001"}},
		{"group by inventory selector: reported device_type, not another type, not a device without a record", "group=sims", []string{"sim-003", "sim-002"}},
		{"group cut to limit after membership", "group=lab&limit=1", []string{"sim-004"}},
		{"group with other filters", "group=sims&check=config-files", []string{"sim-003"}},
		{"group with a state", "group=lab&state=open", []string{"sim-001"}},
		{"group and a member device", "group=lab&device=sim-004", []string{"sim-004"}},
		{"group and a device outside it", "group=lab&device=sim-002", []string{}},
		{"group and a device its inventory selector matches", "group=sims&device=sim-003", []string{"sim-003"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, got, body := tc.getAlerts(t, c.query, tc.Token)
			if code != http.StatusOK {
				t.Fatalf("?%s: %d %s", c.query, code, body)
			}
			if !slices.Equal(got, c.want) {
				t.Fatalf("?%s: devices %v, want %v\n%s", c.query, got, c.want, body)
			}
		})
	}

	// The records come as the store keeps them.
	_, _, body := tc.getAlerts(t, "device=sim-004", tc.Token)
	var out struct{ Alerts []store.Alert }
	if err := json.Unmarshal([]byte(body), &out); err != nil {
		t.Fatal(err)
	}
	if a := out.Alerts[0]; a.Check != "config-files" || a.Key != "/etc/passwd" || a.State != store.AlertClosed ||
		a.Closing != store.AlertCleared || a.Severity != "critical" || a.Count != 1 || a.Raised.IsZero() || a.Closed.IsZero() {
		t.Fatalf("sim-004's record: %+v", a)
	}
}

func TestAlertsBadRequests(t *testing.T) {
	tc := startAlertsController(t)
	for _, c := range []struct {
		name, query string
		want        []string // in the error message
	}{
		{"unknown group", "group=nope", []string{`no DeviceGroup called \"nope\" in the live commit`, "lab", "sims"}},
		{"unknown check", "check=hello-error", []string{`no MonitorCheck called \"hello-error\"`, "hello-errors"}},
		{"unknown device, with the names near it", "device=sim-01", []string{`no Device called \"sim-01\"`, "sim-001"}},
		{"unknown device with a group", "group=lab&device=ghost", []string{`no Device called \"ghost\"`}},
		{"bad state", "state=opened", []string{"open, closed, error"}},
		{"bad severity", "severity=fatal", []string{"critical, error, warning, info"}},
		{"limit zero", "limit=0", []string{"limit must be 1…1000"}},
		{"limit too large", "limit=1001", []string{"limit must be 1…1000"}},
		{"limit not a number", "limit=ten", []string{"limit must be 1…1000"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, _, body := tc.getAlerts(t, c.query, tc.Token)
			if code != http.StatusBadRequest {
				t.Fatalf("?%s: %d, want 400: %s", c.query, code, body)
			}
			for _, w := range c.want {
				if !strings.Contains(body, w) {
					t.Fatalf("?%s: %s does not say %q", c.query, body, w)
				}
			}
		})
	}
	t.Run("no token → 401", func(t *testing.T) {
		if code, _, body := tc.getAlerts(t, "", ""); code != http.StatusUnauthorized {
			t.Fatalf("%d %s", code, body)
		}
	})
	t.Run("wrong token → 401, nothing listed", func(t *testing.T) {
		if code, _, body := tc.getAlerts(t, "state=open", "not-the-token"); code != http.StatusUnauthorized || strings.Contains(body, "sim-00") {
			t.Fatalf("%d %s", code, body)
		}
	})
}
