package e2e

import (
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gitfleet/gitfleet/device/agent"
)

// offlineDeadline bounds the offline test's waits: a vanished device
// times out deviceTimeout after its admission, and the other devices'
// polls sweep a generation only once a minute per replica, so a
// vanished canary and then vanished devices of the second phase take up
// to two sweeps.
const offlineDeadline = 4 * time.Minute

// offlineRollout rolls artifactName out to devices in a canary phase of
// one device and a second phase of all of them, with a short online
// window and device timeout.
func offlineRollout(name, artifactName string, devices []string, onlineWindow, deviceTimeout time.Duration) map[string]string {
	return map[string]string{"rollouts/" + name + ".yaml": fmt.Sprintf(`apiVersion: gitfleet.io/v1
kind: Rollout
metadata:
  name: %s
spec:
  artifact: %s
  target:
    devices: [%s]
  onlineWindow: %s
  deviceTimeout: %s
  phases:
    - name: canary
      count: 1
    - name: all
      percent: 100
`, name, artifactName, strings.Join(devices, ", "), onlineWindow, deviceTimeout)}
}

// TestOfflineDevicesRollout is issue 13's story with the real agent: five
// simulated devices are declared in Git (trustOnFirstUse) and come
// online; a rollout with a canary phase (count 1) and a second phase
// (percent 100) targets all five. Two of them vanish mid-update: their
// health check after the reboot hangs and their power is cut there
// (SIGKILL to the agent's process group), so they never report again.
// The three online devices succeed; the vanished two are timed out after
// the rollout's deviceTimeout by the sweep the other devices' polls run;
// both phases complete and rollout.completed is logged. The controller
// logs each timeout with the device's name; the rollouts API counts the
// timed-out devices per phase (timed_out) and, while a vanished device is
// gone and not timed out yet, shows its phase waiting for a device in
// progress (waiting, when the API has it). The devices API's last_seen is
// the last authentication, not the last poll, so it does not tell the
// offline devices from the online ones; it is logged only.
//
// A sixth device, dev-6, is declared and targeted but never comes online:
// it is never admitted, and the last phase is over without it once every
// present device finished (the sweep finds the phase settled), so the
// rollout still completes; the rollouts API names it among the devices not
// polled while it waits.
func TestOfflineDevicesRollout(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: runs gitfleet serve, Redis and five agents for about two minutes")
	}
	const (
		onlineWindow  = 10 * time.Second
		deviceTimeout = 20 * time.Second
	)
	work := t.TempDir()
	storeDir := filepath.Join(work, "artifact-store")
	priv, pub := generateKey(t)
	env, c := agentFleet(t, storeDir, map[string][]byte{"release": pub})

	initial := TestImage("off-1", agentImageSize, true)
	next := WriteRootfsArtifact(t, storeDir, "off-2", TestImage("off-2", agentImageSize, true), priv)

	online := []string{"dev-1", "dev-2", "dev-3"}
	vanishing := []string{"dev-4", "dev-5"}
	names := append(slices.Clone(online), vanishing...)
	const never = "dev-6" // declared, never online
	devs := map[string]*Agent{}
	declare := map[string]string{}
	for _, name := range names {
		opts := AgentOptions{Name: name, Image: initial, ArtifactName: "off-1", VerifyKeys: [][]byte{pub}}
		if slices.Contains(vanishing, name) {
			// The health check after the reboot hangs, so the device is
			// caught mid-update, never done before its power is cut.
			opts.HealthCheck = []string{"/bin/sh", "-c", "sleep 600"}
		}
		devs[name] = NewAgent(t, c, opts)
		maps.Copy(declare, devs[name].Manifest())
	}
	neverAgent := NewAgent(t, c, AgentOptions{Name: never, Image: initial, ArtifactName: "off-1", VerifyKeys: [][]byte{pub}})
	maps.Copy(declare, neverAgent.Manifest())
	env.CommitAndServe(c, declare, "declare dev-1..6")
	for _, name := range names {
		if err := devs[name].Start(); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range names {
		c.AwaitDevice(devs[name].ID(), "accepted, reporting off-1", func(rec store.Device) bool {
			return rec.Status == store.DeviceAccepted && Inventory(rec)["artifact_name"] == "off-1"
		})
	}

	sha := env.CommitAndServe(c, merge(ArtifactManifest(next, "2", "release"),
		offlineRollout("fleet", next.Name, append(slices.Clone(names), never), onlineWindow, deviceTimeout)), "roll out off-2 to dev-1..6")
	t.Logf("rollout fleet at %.12s: onlineWindow %s, deviceTimeout %s", sha, onlineWindow, deviceTimeout)

	// Wait for every device's end: the online ones succeed, each vanishing
	// one has its power cut in the hanging health check and is timed out.
	cut := map[string]time.Time{}
	outcomes := map[string]string{}
	var midView map[string]any // the API's view of fleet with a device gone, not yet timed out
	deadline := time.Now().Add(offlineDeadline)
	for {
		done := true
		for _, name := range names {
			d := devs[name]
			o, err := d.Outcome(c, "fleet")
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			outcomes[name] = o
			if slices.Contains(vanishing, name) {
				if _, ok := cut[name]; !ok {
					if err := d.Err(); err != nil {
						t.Fatalf("%s: agent stopped before its power cut: %v\n%s", name, err, tailLines(d.Logs(), 40))
					}
					if rec, _ := d.Record(); rec != nil && rec.State == agent.StateArtifactVerifyReboot {
						if err := d.Kill(); err != nil {
							t.Fatalf("%s: power cut: %v", name, err)
						}
						cut[name] = time.Now()
						t.Logf("%s: power cut in %s of %s (controller says %q)", name, rec.State, rec.Deployment.ID, o)
					}
				}
				done = done && o == store.StateTimeout
				continue
			}
			if err := d.Err(); err != nil {
				t.Fatalf("%s: agent stopped: %v\n%s", name, err, tailLines(d.Logs(), 40))
			}
			done = done && (o == store.StateSuccess || o == store.StateFailure)
		}
		if done {
			break
		}
		gone := false // a device whose power was cut and that is not timed out yet
		for name := range cut {
			gone = gone || outcomes[name] != store.StateTimeout
		}
		if midView == nil && gone {
			if ros, err := c.Rollouts(); err == nil {
				for _, r := range ros {
					if r["name"] == "fleet" && r["stopped"] != true {
						midView = r
					}
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("not every device finished within %s: outcomes %v, power cut %v\ncontroller log:\n%s",
				offlineDeadline, outcomes, slices.Collect(maps.Keys(cut)), tailLines(c.Logs(), 60))
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, name := range online {
		if outcomes[name] != store.StateSuccess {
			t.Errorf("%s: outcome %q, want success", name, outcomes[name])
		}
	}
	t.Logf("outcomes: %v", outcomes)

	// While a vanished device was gone and not yet timed out, the
	// management API showed its phase waiting for a device in progress.
	t.Logf("management API, rollout fleet with a device gone, not timed out yet: phases %v", midView["phases"])
	if mid, _ := midView["phases"].([]any); len(mid) > 0 {
		var hasWaiting bool
		var inProgress float64
		for _, ph := range mid {
			m, _ := ph.(map[string]any)
			ws, ok := m["waiting"].([]any)
			hasWaiting = hasWaiting || ok
			for _, w := range ws {
				wm, _ := w.(map[string]any)
				if wm["reason"] == "devices" {
					ip, _ := wm["in_progress"].(map[string]any)
					for _, n := range ip {
						f, _ := n.(float64)
						inProgress += f
					}
				}
			}
		}
		if hasWaiting && inProgress < 1 {
			t.Errorf("management API, rollout fleet with a device gone: no phase waits for devices in progress: %v", mid)
		}
	}

	// The online devices committed off-2 and report it.
	for _, name := range online {
		d := devs[name]
		if o := d.AwaitOutcome(c, "fleet"); o != store.StateSuccess {
			t.Errorf("%s: outcome %q, want success", name, o)
		}
		if d.Booted() != "B" || d.ArtifactName() != "off-2" {
			t.Errorf("%s: booted %s, artifact %s; want B, off-2", name, d.Booted(), d.ArtifactName())
		}
		c.AwaitDevice(d.ID(), "reporting off-2", func(rec store.Device) bool { return Inventory(rec)["artifact_name"] == "off-2" })
	}

	// The rollout completes past the vanished devices.
	// Every present device finished; until the controller's periodic check
	// (once a minute) finds the last phase over, the rollouts API names
	// dev-6 as the device not polled that the phase waits for.
	if ros, err := c.Rollouts(); err == nil {
		for _, r := range ros {
			if r["name"] != "fleet" || r["stopped"] == true {
				continue
			}
			phases, _ := r["phases"].([]any)
			if len(phases) == 2 {
				last, _ := phases[1].(map[string]any)
				if last["completed"] == nil && !strings.Contains(fmt.Sprint(last["waiting"]), never) {
					t.Errorf("the last phase waits, but the rollouts API does not name %s: %v", never, last)
				}
				t.Logf("management API, last phase once every present device finished: %v", last)
			}
		}
	}
	ev := c.AwaitEvent("rollout.completed", "fleet")
	t.Logf("event: %v %v: %v", ev["kind"], ev["subject"], ev["message"])
	for _, name := range vanishing {
		c.AwaitLog(`deployment timed out.*"device":"` + name + `".*"rollout":"fleet"`)
	}
	rec, err := c.RolloutRecord("fleet")
	if err != nil {
		t.Fatal(err)
	}
	p := c.Progress(store.GenerationRef{Rollout: rec.Name, Generation: rec.Generation})
	var succeeded, timedOut int64
	for _, ph := range p.Phases {
		succeeded += ph.Succeeded
		timedOut += ph.TimedOut
	}
	if len(p.Phases) != 2 || succeeded != 3 || timedOut != 2 || p.Aborted != "" || p.Phases[0].Succeeded+p.Phases[0].TimedOut != 1 {
		t.Errorf("progress of fleet: %+v; want 2 phases, 3 succeeded, 2 timed out, the canary phase 1 device, no abort", p)
	}

	// The management API's rollout view: both phases completed, three
	// successes; and the per-phase fields it has beyond those are logged.
	ros, err := c.Rollouts()
	if err != nil {
		t.Fatal(err)
	}
	var view map[string]any
	for _, r := range ros {
		if r["name"] == "fleet" && r["stopped"] != true {
			view = r
		}
	}
	phases, _ := view["phases"].([]any)
	if len(phases) != 2 {
		t.Fatalf("management API, rollout fleet: phases %v, want 2", view["phases"])
	}
	var apiSucceeded, apiTimedOut float64
	for i, ph := range phases {
		m, _ := ph.(map[string]any)
		if m["completed"] == nil {
			t.Errorf("management API, rollout fleet phase %d: not completed: %v", i, m)
		}
		s, _ := m["succeeded"].(float64)
		apiSucceeded += s
		if to, ok := m["timed_out"].(float64); ok {
			apiTimedOut += to
		}
		t.Logf("management API, rollout fleet phase %d: %v", i, m)
	}
	if apiSucceeded != 3 {
		t.Errorf("management API, rollout fleet: %v devices succeeded, want 3", apiSucceeded)
	}
	if _, ok := phases[0].(map[string]any)["timed_out"]; ok && apiTimedOut != 2 {
		t.Errorf("management API, rollout fleet: %v devices timed out, want 2", apiTimedOut)
	}
	if v, ok := view["aborted"]; ok && v != nil && v != "" {
		t.Errorf("management API, rollout fleet: aborted %v", v)
	}

	// The devices API: the store keeps each device's last authentication
	// (polls do not move it), so last_seen cannot tell the online devices
	// from the vanished ones yet; logged for the record.
	for _, name := range names {
		d, err := c.Device(devs[name].ID())
		if err != nil {
			t.Fatalf("management API, device %s: %v", name, err)
		}
		t.Logf("management API, device %s (%.12s): status %s, last_seen %s", name, d.ID, d.Status, d.LastSeen.Format(time.RFC3339Nano))
		if at, ok := cut[name]; ok && !d.LastSeen.Before(at) {
			t.Errorf("device %s: last_seen %s, after its power cut at %s", name, d.LastSeen, at)
		}
	}
	for _, name := range online {
		if err := devs[name].Err(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}
