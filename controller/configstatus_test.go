package controller_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/controller"
	"github.com/gitfleet/gitfleet/controller/deviceapi"
	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gitfleet/gitfleet/device/devconfig"
)

// configFleet adds to the quickstart (the DeviceConfig "sims" for the
// group selecting inventory device_type gitfleet-sim) a fleet-wide
// DeviceConfig and one for sim-001 alone.
var configFleet = map[string]string{
	"config/all.yaml":     "apiVersion: gitfleet.io/v1\nkind: DeviceConfig\nmetadata: {name: everyone}\nspec:\n  target: {all: true}\n  values: {ntp_server: pool.ntp.org}\n",
	"config/sim-001.yaml": "apiVersion: gitfleet.io/v1\nkind: DeviceConfig\nmetadata: {name: first}\nspec:\n  target: {devices: [sim-001]}\n  values: {ntp_server: ntp.example.com}\n",
}

func (tc *testController) getJSON(t *testing.T, path string, out any) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, tc.URL+path, nil)
	req.Header.Set("Authorization", "Bearer "+tc.Token)
	resp, err := tc.client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(body, out); err != nil {
			t.Fatalf("%s: %s: %v", path, body, err)
		}
	}
	return resp.StatusCode
}

// Per DeviceConfig, the devices it applies to and how many run what the
// live commit gives them: in sync, pending, drifted, failed (with why).
func TestConfigStatus(t *testing.T) {
	var st store.Store
	tc := startController(t, func(o *controller.Options, _ *controller.ServerOptions) { st = o.Store })
	sha := tc.Repo.Commit(configFleet, "configuration fixture")
	tc.Trigger()
	await(t, tc, "the configuration fixture live", func() bool { return tc.Live().Commit.SHA == sha })
	ctx := context.Background()
	snap := tc.Live()

	// sim-002 and sim-003 report device_type gitfleet-sim (so "sims"
	// applies to them); the others sent no inventory.
	for _, mac := range []string{"02:00:00:00:00:02", "02:00:00:00:00:03"} {
		identity := deviceapi.Attributes{"mac": mac}
		id := deviceapi.DeviceID(identity)
		if _, err := st.SeeDevice(ctx, store.Device{ID: id, Identity: identity.Canonical(), KeyFingerprint: strings.Repeat("1", 64),
			Status: store.DeviceAccepted, LastSeen: time.Now()}); err != nil {
			t.Fatal(err)
		}
		if err := st.SetInventory(ctx, id, json.RawMessage(`{"device_type":"gitfleet-sim"}`)); err != nil {
			t.Fatal(err)
		}
	}
	desired := func(name, mac, deviceType string) string {
		inv := map[string]string{}
		if deviceType != "" {
			inv["device_type"] = deviceType
		}
		_, d := snap.Config.For(name, map[string]string{"mac": mac}, inv)
		return d
	}
	report := func(s store.ConfigStatus) {
		t.Helper()
		s.Reported = time.Now()
		if _, err := st.SetConfigStatus(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	report(store.ConfigStatus{Device: "sim-001", Digest: desired("sim-001", "02:00:00:00:00:01", ""), State: devconfig.Applied, Via: "agent"})
	report(store.ConfigStatus{Device: "sim-002", Digest: desired("sim-002", "02:00:00:00:00:02", "gitfleet-sim"), State: devconfig.Failed,
		Script: "20-ntp", ExitCode: 2, Output: "ntpd: unknown server", Via: "agent"})
	report(store.ConfigStatus{Device: "sim-003", Digest: desired("sim-003", "02:00:00:00:00:03", "gitfleet-sim"), State: devconfig.Drifted,
		FileDigest: devconfig.DigestOf([]byte("{}")), Via: "agent"})
	// sim-004 runs an older configuration: pending. sim-005 never reported.
	report(store.ConfigStatus{Device: "sim-004", Digest: devconfig.Digest(map[string]string{"ntp_server": "old"}), State: devconfig.Applied, Via: "mender"})

	var sum struct {
		Commit  string                     `json:"commit"`
		Configs []controller.ConfigSummary `json:"configs"`
	}
	if code := tc.getJSON(t, "/api/management/v1/config", &sum); code != http.StatusOK {
		t.Fatalf("GET config: %d", code)
	}
	got := map[string]controller.ConfigSummary{}
	for _, c := range sum.Configs {
		got[c.Name] = c
	}
	type counts struct{ targets, inSync, pending, drifted, failed int }
	for name, want := range map[string]counts{
		"everyone": {5, 1, 2, 1, 1},
		"first":    {1, 1, 0, 0, 0},
		"sims":     {2, 0, 0, 1, 1},
	} {
		c := got[name]
		if have := (counts{c.Targets, c.InSync, c.Pending, c.Drifted, c.Failed}); have != want {
			t.Errorf("%s: %+v, want %+v", name, have, want)
		}
	}
	sims := got["sims"]
	if len(sims.Problems) != 2 || sims.Problems[0].Device != "sim-002" || sims.Problems[0].Script != "20-ntp" || sims.Problems[0].ExitCode != 2 ||
		!strings.Contains(sims.Problems[0].Output, "unknown server") || sims.Problems[1].Device != "sim-003" || sims.Problems[1].State != controller.ConfigDrifted {
		t.Errorf("sims problems %+v", sims.Problems)
	}
	if sims.Level != "group" || got["first"].Level != "device" || got["everyone"].Level != "fleet" || strings.Join(sims.Keys, ",") != "greeting,poll_interval_seconds" {
		t.Errorf("summaries %+v", sum.Configs)
	}

	var devs struct {
		Devices []controller.DeviceConfigState `json:"devices"`
	}
	if code := tc.getJSON(t, "/api/management/v1/config/devices?config=everyone&state=pending", &devs); code != http.StatusOK {
		t.Fatalf("GET config/devices: %d", code)
	}
	if len(devs.Devices) != 2 || devs.Devices[0].Device != "sim-004" || devs.Devices[1].Device != "sim-005" || devs.Devices[0].Reported == "" {
		t.Errorf("pending devices %+v", devs.Devices)
	}
	for _, q := range []string{"config=nope", "state=great", "limit=0"} {
		if code := tc.getJSON(t, "/api/management/v1/config/devices?"+q, &devs); code != http.StatusBadRequest {
			t.Errorf("?%s: %d, want 400", q, code)
		}
	}
}
