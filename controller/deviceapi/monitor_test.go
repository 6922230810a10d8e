package deviceapi

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/gitfleet/gitfleet/controller/artifacts"
	"github.com/gitfleet/gitfleet/controller/reconcile"
	"github.com/gitfleet/gitfleet/controller/rollout"
	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gitfleet/gitfleet/device/monitor"
	"github.com/gitfleet/gitfleet/schema"
)

const (
	checksPath = "/api/devices/v1/devicemonitor/checks"
	alertsPath = "/api/devices/v1/devicemonitor/alerts"
)

// monitorFleet is a fleet of three devices (dev-0 in group "gw", dev-1
// and dev-2 not), checks for everyone, for the group, for one device and
// by identity selector, and a rollout whose phase aborts on "app-errors".
func monitorFleet(t *testing.T, extra map[string]string) *schema.Fleet {
	t.Helper()
	files := fstest.MapFS{
		"artifact.yaml": {Data: []byte("apiVersion: gitfleet.io/v1\nkind: Artifact\nmetadata: {name: hello-2}\nspec:\n  source: artifacts/hello-2.mender\n  deviceTypes: [qemux86-64]\n")},
		"checks.yaml": {Data: []byte(`apiVersion: gitfleet.io/v1
kind: MonitorCheck
metadata: {name: app-errors}
spec:
  target: {all: true}
  severity: error
  expiry: 1h
  log: {path: /var/log/app.log, pattern: ERROR}
---
apiVersion: gitfleet.io/v1
kind: MonitorCheck
metadata: {name: gw-ports}
spec:
  target: {groups: [gw]}
  listeningPorts: {allow: [22, 443]}
---
apiVersion: gitfleet.io/v1
kind: MonitorCheck
metadata: {name: one-sshd}
spec:
  target: {devices: [dev-2]}
  processRestart: {name: sshd}
---
apiVersion: gitfleet.io/v1
kind: MonitorCheck
metadata: {name: mac-01}
spec:
  target: {selector: {identity: {mac: "01"}}}
  setuid: {}
`)},
		"group.yaml":   {Data: []byte("apiVersion: gitfleet.io/v1\nkind: DeviceGroup\nmetadata: {name: gw}\nspec:\n  members: [dev-0]\n")},
		"rollout.yaml": {Data: []byte("apiVersion: gitfleet.io/v1\nkind: Rollout\nmetadata: {name: hello}\nspec:\n  artifact: hello-2\n  target: {devices: [dev-0, dev-1]}\n  phases:\n    - {name: all, percent: 100, abort: {alerts: [app-errors]}}\n")},
		"devices.yaml": {Data: []byte("apiVersion: gitfleet.io/v1\nkind: Device\nmetadata: {name: lab}\nspec:\n  devices:\n    - {name: dev-0, identity: {mac: \"00\"}, trustOnFirstUse: true}\n    - {name: dev-1, identity: {mac: \"01\"}, trustOnFirstUse: true}\n    - {name: dev-2, identity: {mac: \"02\"}, trustOnFirstUse: true}\n")},
	}
	for name, data := range extra {
		files[name] = &fstest.MapFile{Data: []byte(data)}
	}
	fleet, err := schema.Load(files)
	if err != nil {
		t.Fatal(err)
	}
	return fleet
}

type monitorEnv struct {
	*env
	devs []*testDevice
	sha  string

	mu       sync.Mutex
	notified []string
}

func newMonitorEnv(t *testing.T) *monitorEnv {
	t.Helper()
	return newFleetEnv(t, monitorFleet(t, nil), 3)
}

// newFleetEnv serves fleet with the real rollout engine, its rollout
// "hello" recorded (generation 1 of hello-2), and n authenticated devices
// with identities mac 00, 01, ….
func newFleetEnv(t *testing.T, fleet *schema.Fleet, n int) *monitorEnv {
	t.Helper()
	e := &monitorEnv{env: newEnv(t)}
	e.api.opts.Compile = func(f *schema.Fleet, r []store.RolloutRecord) Planner { return rollout.Compile(f, r) }
	e.api.opts.Notify = func(_ context.Context, a store.Alert, event string) {
		e.mu.Lock()
		defer e.mu.Unlock()
		e.notified = append(e.notified, event+" "+a.Device+" "+a.Check+" "+a.Key)
	}
	e.publish(fleet)
	e.arts.entries["hello-2"] = &artifacts.Entry{Name: "hello-2", Digest: strings.Repeat("ab", 32), ArtifactName: "hello-2", DeviceTypes: []string{"qemux86-64"}}
	for i := range n {
		d := newDevice(t, "ed25519", map[string]any{"mac": fmt.Sprintf("%02d", i)})
		if code, _ := d.auth(e.env); code != http.StatusOK {
			t.Fatalf("auth dev-%d: %d", i, code)
		}
		e.devs = append(e.devs, d)
	}
	return e
}

// publish makes fleet the live commit (a new SHA each time).
func (e *monitorEnv) publish(fleet *schema.Fleet) {
	e.commits++
	e.sha = fmt.Sprintf("%040x", e.commits)
	if ok, err := e.store.SetLive(ctx(), store.CommitRecord{SHA: e.sha}, e.prevSHA()); !ok || err != nil {
		e.t.Fatal("SetLive", ok, err)
	}
	if _, err := e.store.PutRollouts(ctx(), e.sha, []store.RolloutRecord{{Name: "hello", Artifact: "hello-2@x"}}); err != nil {
		e.t.Fatal(err)
	}
	e.snap.Store(&reconcile.Snapshot{Commit: store.CommitRecord{SHA: e.sha}, Fleet: fleet})
}

func (e *monitorEnv) prevSHA() string {
	if s := e.snap.Load(); s != nil {
		return s.Commit.SHA
	}
	return ""
}

func (e *monitorEnv) checks(dev int, etag string) (int, []string, string) {
	e.t.Helper()
	hdr := map[string]string{}
	if etag != "" {
		hdr["If-None-Match"] = etag
	}
	code, body, h := e.do(http.MethodGet, checksPath, e.devs[dev].token, nil, hdr)
	var names []string
	if code == http.StatusOK {
		var cs monitor.CheckSet
		if err := json.Unmarshal(body, &cs); err != nil {
			e.t.Fatalf("check set %s: %v", body, err)
		}
		for _, c := range cs.Checks {
			if err := c.Validate(); err != nil {
				e.t.Errorf("served check does not validate on the agent: %v", err)
			}
			names = append(names, c.Name)
		}
	}
	return code, names, h.Get("ETag")
}

func (e *monitorEnv) send(dev int, events ...monitor.Event) (int, uint64, string) {
	e.t.Helper()
	body, _ := json.Marshal(monitor.AlertBatch{Events: events})
	code, resp, _ := e.do(http.MethodPost, alertsPath, e.devs[dev].token, body, nil)
	var ack monitor.AlertAck
	if code == http.StatusOK {
		if err := json.Unmarshal(resp, &ack); err != nil {
			e.t.Fatalf("ack %s: %v", resp, err)
		}
	}
	return code, ack.Seq, string(resp)
}

func raised(seq uint64, check, key, evidence string) monitor.Event {
	return monitor.Event{Seq: seq, Check: check, Key: key, Kind: monitor.Raised, Severity: monitor.Error, Evidence: evidence,
		Time: time.Date(2025, 6, 1, 12, 0, int(seq), 0, time.UTC)}
}

func (e *monitorEnv) alerts(f store.AlertFilter) []store.Alert {
	e.t.Helper()
	f.Limit = 100
	as, err := e.store.ListAlerts(ctx(), f)
	if err != nil {
		e.t.Fatal(err)
	}
	return as
}

func TestMonitorChecksByTarget(t *testing.T) {
	e := newMonitorEnv(t)
	want := map[int]string{
		0: "app-errors gw-ports",
		1: "app-errors mac-01",
		2: "app-errors one-sshd",
	}
	etags := map[int]string{}
	for dev, names := range want {
		code, got, etag := e.checks(dev, "")
		if code != http.StatusOK || strings.Join(got, " ") != names {
			t.Errorf("dev-%d: %d %v, want 200 %s", dev, code, got, names)
		}
		if etag == "" {
			t.Errorf("dev-%d: no ETag", dev)
		}
		etags[dev] = etag
		// Unchanged: 304, no body.
		if code, got, etag2 := e.checks(dev, etag); code != http.StatusNotModified || got != nil || etag2 != etag {
			t.Errorf("dev-%d with If-None-Match: %d %v %q, want 304", dev, code, got, etag2)
		}
	}
	if etags[1] == etags[2] {
		t.Error("different check sets share an ETag")
	}
	// A new commit that changes nothing for dev-2 keeps its ETag; a new
	// check for everyone changes it.
	e.publish(monitorFleet(t, nil))
	if code, _, _ := e.checks(2, etags[2]); code != http.StatusNotModified {
		t.Errorf("unchanged set after a new commit: %d, want 304", code)
	}
	e.publish(monitorFleet(t, map[string]string{"more.yaml": "apiVersion: gitfleet.io/v1\nkind: MonitorCheck\nmetadata: {name: inject}\nspec:\n  libraryInjection: {}\n"}))
	code, got, etag := e.checks(2, etags[2])
	if code != http.StatusOK || strings.Join(got, " ") != "app-errors one-sshd inject" || etag == etags[2] {
		t.Errorf("after adding a check: %d %v %q", code, got, etag)
	}
	// No token: 401.
	if code, _, _ := e.do(http.MethodGet, checksPath, "", nil, nil); code != http.StatusUnauthorized {
		t.Errorf("without a token: %d, want 401", code)
	}
}

// A batch is applied once: sending it again (a lost answer) changes
// nothing and notifies nothing; the ack names the last seq either way.
func TestMonitorAlertsRecordedOnce(t *testing.T) {
	e := newMonitorEnv(t)
	batch := []monitor.Event{
		raised(1, "app-errors", "", "ERROR disk full"),
		raised(2, "gw-ports", "tcp/8080", "tcp 0.0.0.0:8080 by nc (/usr/bin/nc)"),
	}
	for range 2 {
		if code, ack, body := e.send(0, batch...); code != http.StatusOK || ack != 2 {
			t.Fatalf("send: %d ack %d %s", code, ack, body)
		}
	}
	open := e.alerts(store.AlertFilter{State: store.AlertOpen})
	if len(open) != 2 {
		t.Fatalf("open alerts %+v, want 2", open)
	}
	for _, a := range open {
		if a.Device != "dev-0" || a.Count != 1 {
			t.Errorf("alert %+v: want device dev-0 counted once", a)
		}
	}
	e.mu.Lock()
	got := strings.Join(e.notified, "; ")
	e.mu.Unlock()
	if got != "alert.raised dev-0 app-errors ; alert.raised dev-0 gw-ports tcp/8080" {
		t.Errorf("notified %q", got)
	}
	// Cleared: one alert.cleared.
	clear := monitor.Event{Seq: 3, Check: "gw-ports", Key: "tcp/8080", Kind: monitor.Cleared, Time: time.Now()}
	if code, ack, _ := e.send(0, clear); code != http.StatusOK || ack != 3 {
		t.Fatalf("clear: %d %d", code, ack)
	}
	if a := e.alerts(store.AlertFilter{Check: "gw-ports"}); len(a) != 1 || a[0].State != store.AlertClosed || a[0].Closing != store.AlertCleared {
		t.Errorf("after clear: %+v", a)
	}
	e.mu.Lock()
	n := len(e.notified)
	e.mu.Unlock()
	if n != 3 {
		t.Errorf("%d notifications, want 3", n)
	}
}

// A device cannot raise a check the live commit does not declare; the
// event is acknowledged (its queue moves on) and nothing is stored.
func TestMonitorUndeclaredCheckIgnored(t *testing.T) {
	e := newMonitorEnv(t)
	if code, ack, _ := e.send(1, raised(1, "made-up", "", "x")); code != http.StatusOK || ack != 1 {
		t.Fatalf("send: %d %d", code, ack)
	}
	if a := e.alerts(store.AlertFilter{}); len(a) != 0 {
		t.Errorf("stored %+v", a)
	}
}

func TestMonitorAlertsBadInput(t *testing.T) {
	e := newMonitorEnv(t)
	tok := e.devs[0].token
	many := make([]monitor.Event, monitor.MaxBatch+1)
	for i := range many {
		many[i] = raised(uint64(i+1), "app-errors", fmt.Sprint(i), "x")
	}
	manyBody, _ := json.Marshal(monitor.AlertBatch{Events: many})
	for name, body := range map[string]string{
		"not json":       "{",
		"unknown field":  `{"events":[],"extra":1}`,
		"seq not rising": `{"events":[{"seq":2,"check":"app-errors","kind":"raised","time":"2025-01-01T00:00:00Z"},{"seq":1,"check":"app-errors","kind":"raised","time":"2025-01-01T00:00:00Z"}]}`,
		"seq zero":       `{"events":[{"seq":0,"check":"app-errors","kind":"raised","time":"2025-01-01T00:00:00Z"}]}`,
		"bad kind":       `{"events":[{"seq":1,"check":"app-errors","kind":"exploded","time":"2025-01-01T00:00:00Z"}]}`,
		"bad severity":   `{"events":[{"seq":1,"check":"app-errors","kind":"raised","severity":"meh","time":"2025-01-01T00:00:00Z"}]}`,
		"too many":       string(manyBody),
	} {
		code, resp, _ := e.do(http.MethodPost, alertsPath, tok, []byte(body), nil)
		if code != http.StatusBadRequest || !strings.Contains(string(resp), "error") {
			t.Errorf("%s: %d %s, want 400 with a reason", name, code, resp)
		}
	}
	if a := e.alerts(store.AlertFilter{}); len(a) != 0 {
		t.Errorf("bad input stored %+v", a)
	}
	if code, _, _ := e.do(http.MethodPost, alertsPath, "forged", []byte(`{"events":[]}`), nil); code != http.StatusUnauthorized {
		t.Errorf("forged token: %d", code)
	}
}

// Past its rate a device gets 429 with Retry-After and nothing recorded.
func TestMonitorAlertsRateLimited(t *testing.T) {
	e := newMonitorEnv(t)
	var limited bool
	for i := range DefaultAlertBurst + 5 {
		code, _, _ := e.send(2, raised(uint64(i+1), "one-sshd", "", "pid changed"))
		if code == http.StatusTooManyRequests {
			limited = true
			if a := e.alerts(store.AlertFilter{}); len(a) != 1 || a[0].Seq != uint64(i) {
				t.Errorf("after 429: %+v, want the last accepted event only", a)
			}
			break
		}
	}
	if !limited {
		t.Error("no 429 within burst+5 batches at a stopped clock")
	}
}

// The rollout's phase aborts on "app-errors": raised on a device the
// rollout admitted, it aborts with the alert named; raised on a device not
// admitted (dev-2, not targeted) or before admission, it does not.
func TestMonitorAlertAbortsRollout(t *testing.T) {
	e := newMonitorEnv(t)
	g := store.GenerationRef{Rollout: "hello", Generation: 1}
	// dev-1 raises before it is admitted: does not count.
	if code, _, _ := e.send(1, raised(1, "app-errors", "", "ERROR before")); code != http.StatusOK {
		t.Fatal(code)
	}
	// dev-2 is not in the rollout.
	if code, _, _ := e.send(2, raised(1, "app-errors", "", "ERROR elsewhere")); code != http.StatusOK {
		t.Fatal(code)
	}
	if code, b, _ := e.do(http.MethodPost, nextV2, e.devs[0].token, v2Body("hello-1", "qemux86-64"), nil); code != http.StatusOK {
		t.Fatalf("next dev-0: %d %s", code, b)
	}
	if code, b, _ := e.do(http.MethodPost, nextV2, e.devs[1].token, v2Body("hello-1", "qemux86-64"), nil); code != http.StatusOK {
		t.Fatalf("next dev-1: %d %s", code, b)
	}
	if p, _ := e.store.Progress(ctx(), g); p.Aborted != "" {
		t.Fatalf("aborted by alerts raised outside the rollout: %q", p.Aborted)
	}
	// dev-0 updated successfully, then its app logs errors.
	if code, _, _ := e.do(http.MethodPut, statusPath("hello-g1"), e.devs[0].token, []byte(`{"status":"success"}`), nil); code != http.StatusNoContent {
		t.Fatalf("success: %d", code)
	}
	if code, _, _ := e.send(0, raised(1, "app-errors", "", "ERROR segfault in app")); code != http.StatusOK {
		t.Fatal(code)
	}
	p, err := e.store.Progress(ctx(), g)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(p.Aborted, `alert "app-errors"`) || !strings.Contains(p.Aborted, "dev-0") || !strings.Contains(p.Aborted, "segfault") {
		t.Fatalf("abort reason %q does not name the alert, the device and its evidence", p.Aborted)
	}
	evs, _ := e.store.RecentEvents(ctx(), 10)
	var aborted int
	for _, ev := range evs {
		if ev.Kind == schema.EventRolloutAborted {
			aborted++
		}
	}
	if aborted != 1 {
		t.Errorf("%d rollout.aborted events, want 1: %+v", aborted, evs)
	}
	// dev-1 still installing: its next status is refused (409), so the
	// client rolls back.
	if code, _, _ := e.do(http.MethodPut, statusPath("hello-g1"), e.devs[1].token, []byte(`{"status":"installing"}`), nil); code != http.StatusConflict {
		t.Errorf("status after abort: %d, want 409", code)
	}
}

// Every probe the schema admits reaches the agent as the same probe, and
// validates there.
func TestMonitorCheckEveryProbe(t *testing.T) {
	probes := map[string]string{
		"log":               "log: {path: \"@journalctl -f\", pattern: \"ERR\"}",
		"service":           "service: {name: sshd.service}",
		"listeningPorts":    "listeningPorts: {allow: [22]}",
		"setuid":            "setuid: {}",
		"fileChange":        "fileChange: {paths: [/etc/passwd]}",
		"processRestart":    "processRestart: {name: app}",
		"traffic":           "traffic: {interface: eth0, maxBytes: 1000000, window: 10m}",
		"wifi":              "wifi: {interface: wlan0, expected: corp}",
		"rootLogin":         "rootLogin: {}",
		"failedDeployments": "failedDeployments: {}",
		"libraryInjection":  "libraryInjection: {}",
	}
	var docs []string
	for name, spec := range probes {
		docs = append(docs, fmt.Sprintf("apiVersion: gitfleet.io/v1\nkind: MonitorCheck\nmetadata: {name: %s}\nspec:\n  interval: 2m\n  %s\n", strings.ToLower(name), spec))
	}
	fleet, err := schema.Load(fstest.MapFS{"checks.yaml": {Data: []byte(strings.Join(docs, "---\n"))}})
	if err != nil {
		t.Fatal(err)
	}
	if len(fleet.Checks) != len(probes) {
		t.Fatalf("%d checks loaded, want %d", len(fleet.Checks), len(probes))
	}
	for i := range fleet.Checks {
		mc := &fleet.Checks[i]
		probe, _ := mc.Spec.Probe()
		c, err := MonitorCheck(mc)
		if err != nil {
			t.Errorf("%s: %v", probe, err)
			continue
		}
		b, _ := json.Marshal(c)
		var fields map[string]json.RawMessage
		_ = json.Unmarshal(b, &fields)
		if _, ok := fields[probe]; !ok || c.Interval != 2*time.Minute || c.Severity != monitor.Warning {
			t.Errorf("%s became %s", probe, b)
		}
	}
}

// blockingAlerts holds RecordAlerts until release is closed.
type blockingAlerts struct {
	*countingStore
	entered chan struct{}
	release chan struct{}
}

func (b *blockingAlerts) RecordAlerts(ctx context.Context, device string, events []store.AlertEvent) ([]store.Alert, uint64, error) {
	b.entered <- struct{}{}
	<-b.release
	return b.countingStore.RecordAlerts(ctx, device, events)
}

// Past AlertConcurrency batches in progress, a batch waits AlertWait and
// is answered 503 with Retry-After, recording nothing; the one in progress
// completes.
func TestMonitorAlertsConcurrencyBound(t *testing.T) {
	e := newMonitorEnv(t)
	blk := &blockingAlerts{countingStore: e.seen, entered: make(chan struct{}, 1), release: make(chan struct{})}
	e.api.opts.Store = blk
	e.api.opts.AlertWait = 100 * time.Millisecond
	e.api.alertSem = make(chan struct{}, 1)
	done := make(chan int, 1)
	go func() {
		code, _, _ := e.send(0, raised(1, "app-errors", "", "ERROR first"))
		done <- code
	}()
	<-blk.entered
	body, _ := json.Marshal(monitor.AlertBatch{Events: []monitor.Event{raised(1, "app-errors", "", "ERROR second")}})
	code, resp, h := e.do(http.MethodPost, alertsPath, e.devs[1].token, body, nil)
	if code != http.StatusServiceUnavailable || h.Get("Retry-After") == "" {
		t.Errorf("second batch while the first holds the only slot: %d %s (Retry-After %q), want 503 with Retry-After", code, resp, h.Get("Retry-After"))
	}
	close(blk.release)
	if code := <-done; code != http.StatusOK {
		t.Errorf("first batch: %d", code)
	}
	if as := e.alerts(store.AlertFilter{}); len(as) != 1 || as[0].Device != "dev-0" {
		t.Errorf("recorded %+v, want only dev-0's", as)
	}
}
