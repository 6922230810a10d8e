package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/artifact"
	"github.com/gitfleet/gitfleet/device/monitor"
)

// fakeMonitorController stands in for the controller's device API: device
// authentication and the two monitoring endpoints, on 127.0.0.1. Its alert
// store behaves like controller/store's: events at or below the device's
// last recorded Seq are skipped, and the answer is that last Seq.
type fakeMonitorController struct {
	srv *httptest.Server

	mu          sync.Mutex
	token       string
	auths       int
	checks      string // the CheckSet body
	etag        string
	gets        int // checks requests
	notModified int // of which answered 304
	// mode of the alerts endpoint: "" records and acknowledges; "down"
	// answers 503; "lose-answer" records, then answers 503 once;
	// "partial" records only the first event of a batch; "stuck" records
	// nothing and acknowledges seq 0.
	mode      string
	refuseKey string // answers 400 to a batch holding an event with this key
	lastSeq   uint64
	events    []monitor.Event
	posts     int
}

func newFakeMonitorController(t *testing.T) *fakeMonitorController {
	c := &fakeMonitorController{checks: `{"checks":[]}`, etag: `"0"`}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/devices/v1/authentication/auth_requests", func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.auths++
		c.token = fmt.Sprintf("tok%d", c.auths)
		w.Write([]byte(c.token))
	})
	authed := func(w http.ResponseWriter, r *http.Request) bool {
		if r.Header.Get("Authorization") != "Bearer "+c.token {
			http.Error(w, `{"error":"unauthorized"}`, http.StatusUnauthorized)
			return false
		}
		return true
	}
	mux.HandleFunc("GET "+monitor.ChecksPath, func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		defer c.mu.Unlock()
		if !authed(w, r) {
			return
		}
		c.gets++
		if r.Header.Get("If-None-Match") == c.etag {
			c.notModified++
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Header().Set("ETag", c.etag)
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(c.checks))
	})
	mux.HandleFunc("POST "+monitor.AlertsPath, func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		defer c.mu.Unlock()
		if !authed(w, r) {
			return
		}
		c.posts++
		if c.mode == "down" {
			http.Error(w, `{"error":"unavailable"}`, http.StatusServiceUnavailable)
			return
		}
		var b monitor.AlertBatch
		if err := json.NewDecoder(r.Body).Decode(&b); err != nil || len(b.Events) == 0 || len(b.Events) > monitor.MaxBatch {
			http.Error(w, `{"error":"bad batch"}`, http.StatusBadRequest)
			return
		}
		for _, e := range b.Events {
			if c.refuseKey != "" && e.Key == c.refuseKey {
				http.Error(w, `{"error":"key refused"}`, http.StatusBadRequest)
				return
			}
		}
		if c.mode == "stuck" {
			json.NewEncoder(w).Encode(monitor.AlertAck{Seq: 0})
			return
		}
		for i, e := range b.Events {
			if c.mode == "partial" && i > 0 {
				break
			}
			if e.Seq <= c.lastSeq {
				continue
			}
			c.events = append(c.events, e)
			c.lastSeq = e.Seq
		}
		if c.mode == "lose-answer" {
			c.mode = ""
			http.Error(w, "gateway timeout", http.StatusGatewayTimeout)
			return
		}
		json.NewEncoder(w).Encode(monitor.AlertAck{Seq: c.lastSeq})
	})
	c.srv = httptest.NewServer(mux)
	t.Cleanup(c.srv.Close)
	return c
}

// setChecks serves checks (JSON objects) under a new ETag.
func (c *fakeMonitorController) setChecks(etag string, checks ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.checks = `{"checks":[` + strings.Join(checks, ",") + `]}`
	c.etag = etag
}

func (c *fakeMonitorController) setMode(mode string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.mode = mode
}

func (c *fakeMonitorController) recorded() []monitor.Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.events)
}

func (c *fakeMonitorController) counts() (gets, notModified, posts, auths int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gets, c.notModified, c.posts, c.auths
}

func (c *fakeMonitorController) client(t *testing.T) *Client {
	return testClient(t, c.srv, "02:00:00:00:00:01")
}

// testClient is a Client of srv with a new key, identified by mac.
func testClient(t *testing.T, srv *httptest.Server, mac string) *Client {
	t.Helper()
	key, pub, err := LoadOrCreateKey(filepath.Join(t.TempDir(), "device.key"))
	if err != nil {
		t.Fatal(err)
	}
	return NewClient(ClientOptions{ServerURL: srv.URL, HTTP: srv.Client(), Key: key, PublicKeyPEM: pub,
		Identity: func(context.Context) (map[string]string, error) {
			return map[string]string{"mac": mac}, nil
		}})
}

// testClock is the monitoring's injected clock.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// monEnv is a device (testEnv: the fake A/B device and deployment server)
// whose monitoring talks to a fakeMonitorController, reads its files
// under root and runs on an injected clock.
type monEnv struct {
	*testEnv
	ctl   *fakeMonitorController
	root  string
	clock *testClock
}

func newMonEnv(t *testing.T) *monEnv {
	t.Helper()
	e := &monEnv{testEnv: newTestEnv(t, "release-1"), ctl: newFakeMonitorController(t), root: t.TempDir(),
		clock: &testClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}}
	e.cfg.MonitorRoot = e.root
	client := e.ctl.client(t)
	e.opts = func(o *Options) {
		o.MonitorAPI = client
		o.Now = e.clock.Now
	}
	return e
}

// file writes content at path under the monitoring root.
func (e *monEnv) file(path, content string) {
	e.t.Helper()
	full := filepath.Join(e.root, path)
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		e.t.Fatal(err)
	}
	if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
		e.t.Fatal(err)
	}
}

func (e *monEnv) appendLine(path, line string) {
	e.t.Helper()
	f, err := os.OpenFile(filepath.Join(e.root, path), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		e.t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(line + "\n"); err != nil {
		e.t.Fatal(err)
	}
}

// start is one agent process's daemon start, driven by the test instead of
// the daemon's goroutines: saved checks and outcomes, then one poll.
func (e *monEnv) start() (*Agent, *monitoring, context.Context) {
	e.t.Helper()
	a, ctx := e.agent()
	e.t.Cleanup(a.closeMonitoring)
	mo := a.monitoring()
	if mo == nil {
		e.t.Fatal("monitoring is off")
	}
	mo.resume()
	if err := mo.poll(ctx); err != nil {
		e.t.Fatal(err)
	}
	return a, mo, ctx
}

// step advances the clock by d and runs the checks that are due.
func (e *monEnv) step(mo *monitoring, d time.Duration) {
	e.t.Helper()
	e.clock.Add(d)
	if _, err := mo.m.Step(context.Background()); err != nil {
		e.t.Fatal(err)
	}
}

func (e *monEnv) deliver(mo *monitoring) {
	e.t.Helper()
	if err := mo.deliver(context.Background()); err != nil {
		e.t.Fatalf("deliver: %v", err)
	}
	if q, _ := mo.m.Pending(); len(q) != 0 {
		e.t.Fatalf("%d events still queued after a delivery: %+v", len(q), q)
	}
}

func (mo *monitoring) appliedCount() int {
	mo.mu.Lock()
	defer mo.mu.Unlock()
	return mo.applied
}

func (mo *monitoring) checkNames() []string {
	mo.mu.Lock()
	defer mo.mu.Unlock()
	var out []string
	for _, c := range mo.checks {
		out = append(out, c.Name)
	}
	return out
}

// raised returns the raised events of check.
func raised(evs []monitor.Event, check string) []monitor.Event {
	var out []monitor.Event
	for _, e := range evs {
		if e.Kind == monitor.Raised && e.Check == check {
			out = append(out, e)
		}
	}
	return out
}

const (
	appLogCheck  = `{"name":"app-errors","severity":"critical","interval":"5s","log":{"path":"/var/log/app.log","pattern":"ERROR"}}`
	deploysCheck = `{"name":"deploys","failedDeployments":{}}`
)

func TestMonitoringChecksFetchedAndNotModified(t *testing.T) {
	e := newMonEnv(t)
	e.file("/var/log/app.log", "")
	e.ctl.setChecks(`"v1"`,
		appLogCheck,
		`{"name":"relative-log","log":{"path":"var/log/x","pattern":"x"}}`, // fails Validate
		`{"name":"bad-interval","interval":"soon","service":{"name":"x"}}`, // does not decode
		`{"name":"app-errors","service":{"name":"twice"}}`,                 // a repeated name
		`{"name":"from-the-future","quantumProbe":{}}`,                     // no probe this agent knows
		deploysCheck)
	_, mo, ctx := e.start()
	if got := mo.checkNames(); !slices.Equal(got, []string{"app-errors", "deploys"}) {
		t.Fatalf("checks applied %v, want the two valid ones", got)
	}
	if mo.appliedCount() != 1 {
		t.Fatalf("SetChecks called %d times", mo.appliedCount())
	}
	// Unchanged: 304, nothing applied again.
	for range 3 {
		if err := mo.poll(ctx); err != nil {
			t.Fatal(err)
		}
	}
	gets, notModified, _, _ := e.ctl.counts()
	if gets != 4 || notModified != 3 || mo.appliedCount() != 1 {
		t.Errorf("%d polls, %d answered 304, SetChecks %d times; want 4, 3, 1", gets, notModified, mo.appliedCount())
	}
	// The checks run: a matching line raises the check's alert.
	e.step(mo, 0)
	e.appendLine("/var/log/app.log", "ERROR disk full")
	e.step(mo, 5*time.Second)
	q, _ := mo.m.Pending()
	if r := raised(q, "app-errors"); len(r) != 1 || r[0].Evidence != "ERROR disk full" || r[0].Severity != monitor.Critical {
		t.Errorf("queued %+v, want one critical app-errors alert", q)
	}
	// A change in Git arrives with the next poll; the token expired
	// meanwhile (401): the client authenticates again, as for deployments.
	e.ctl.mu.Lock()
	e.ctl.token = "expired"
	e.ctl.mu.Unlock()
	e.ctl.setChecks(`"v2"`, deploysCheck)
	if err := mo.poll(ctx); err != nil {
		t.Fatal(err)
	}
	if got := mo.checkNames(); !slices.Equal(got, []string{"deploys"}) || mo.appliedCount() != 2 {
		t.Errorf("after the change: checks %v, SetChecks %d times", got, mo.appliedCount())
	}
	if _, _, _, auths := e.ctl.counts(); auths != 2 {
		t.Errorf("%d authentications, want 2 (one after the 401)", auths)
	}
	// The removed check's open alert is cleared for the controller.
	e.deliver(mo)
	var kinds []string
	for _, ev := range e.ctl.recorded() {
		kinds = append(kinds, ev.Check+":"+string(ev.Kind))
	}
	if !slices.Equal(kinds, []string{"app-errors:raised", "app-errors:cleared"}) {
		t.Errorf("controller recorded %v", kinds)
	}
}

// The daemon itself: Monitor.Run in its goroutine, the checks polled with
// the updates, an alert delivered as it happens. Real time, so the only
// test here that waits (each wait has a deadline).
func TestMonitoringDaemonDeliversAlert(t *testing.T) {
	e := newMonEnv(t)
	e.file("/var/log/app.log", "")
	e.ctl.setChecks(`"v1"`, strings.Replace(appLogCheck, `"5s"`, `"1s"`, 1))
	e.cfg.UpdatePollIntervalSeconds = 1
	e.cfg.RetryPollIntervalSeconds = 1
	e.cfg.InventoryPollIntervalSeconds = 3600
	opts := e.opts
	e.opts = func(o *Options) {
		opts(o)
		o.Now, o.Sleep = nil, sleepCtx
	}
	a, ctx := e.agent()
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- a.Daemon(ctx) }()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Daemon = %v", err)
			}
		}
	}
	defer stop()

	waitFor := func(what string, cond func() bool, each func()) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("no %s within 30 s", what)
			}
			if each != nil {
				each()
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	// The follower starts at the end of the file once the check first
	// runs; lines are written until one is read after that.
	waitFor("alert at the controller", func() bool { return len(e.ctl.recorded()) > 0 },
		func() { e.appendLine("/var/log/app.log", "ERROR out of memory") })
	a.monMu.Lock()
	mo := a.mon
	a.monMu.Unlock()
	if mo == nil {
		t.Fatal("no monitoring while the daemon runs")
	}
	// More matching lines change nothing while the alert is open; the
	// next polls answer 304 and apply nothing.
	waitFor("a 304 poll", func() bool { _, n, _, _ := e.ctl.counts(); return n > 0 }, nil)
	if n := mo.appliedCount(); n != 1 {
		t.Errorf("SetChecks called %d times with unchanged checks", n)
	}
	// A change in Git arrives within a poll: the check is removed and its
	// alert cleared at the controller.
	e.ctl.setChecks(`"v2"`, deploysCheck)
	waitFor("the changed checks", func() bool { return mo.appliedCount() == 2 }, nil)
	waitFor("the cleared alert", func() bool {
		evs := e.ctl.recorded()
		return len(evs) > 0 && evs[len(evs)-1].Kind == monitor.Cleared
	}, nil)
	stop()
	evs := e.ctl.recorded()
	if r := raised(evs, "app-errors"); len(r) != 1 || !strings.Contains(r[0].Evidence, "ERROR out of memory") {
		t.Errorf("raised alerts at the controller: %+v (all: %+v)", r, evs)
	}
	if len(evs) != 2 {
		t.Errorf("controller recorded %+v, want raised then cleared", evs)
	}
}

func TestMonitoringRestartRaisesNothingAgain(t *testing.T) {
	e := newMonEnv(t)
	e.file("/etc/app.conf", "v1")
	e.file("/var/log/app.log", "")
	e.ctl.setChecks(`"v1"`, appLogCheck, `{"name":"etc","fileChange":{"paths":["/etc/app.conf"]}}`)
	_, mo, _ := e.start()
	e.step(mo, 0) // baselines
	e.file("/etc/app.conf", "tampered")
	e.appendLine("/var/log/app.log", "ERROR once")
	e.step(mo, 5*time.Minute)
	e.deliver(mo)
	before := e.ctl.recorded()
	if len(raised(before, "etc")) != 1 || len(raised(before, "app-errors")) != 1 {
		t.Fatalf("controller recorded %+v, want one alert of each check", before)
	}
	// A new agent process on the same data directory: the saved checks
	// apply at once, the poll answers 304, the scans find what they knew.
	for range 2 {
		_, mo, _ := e.start()
		if mo.appliedCount() != 1 {
			t.Errorf("SetChecks called %d times; want once (the saved checks)", mo.appliedCount())
		}
		e.step(mo, 0)
		e.step(mo, 5*time.Minute)
		e.deliver(mo)
	}
	_, notModified, _, _ := e.ctl.counts()
	if notModified != 2 {
		t.Errorf("%d polls answered 304 after the restarts, want 2 (the ETag is saved)", notModified)
	}
	if after := e.ctl.recorded(); len(after) != len(before) {
		t.Errorf("events after the restarts: %+v", after[len(before):])
	}
}

// queueFailures makes the deploys check raise one alert per id.
func queueFailures(e *monEnv, mo *monitoring, ids ...string) {
	e.t.Helper()
	for _, id := range ids {
		mo.m.ReportDeployment(monitor.DeploymentOutcome{ID: id, Artifact: "release-x", Status: StatusFailure})
	}
	e.step(mo, time.Minute)
	if q, _ := mo.m.Pending(); len(q) != len(ids) {
		e.t.Fatalf("%d events queued, want %d", len(q), len(ids))
	}
}

func keys(evs []monitor.Event) []string {
	var out []string
	for _, e := range evs {
		out = append(out, e.Key)
	}
	return out
}

func TestMonitoringDeliveryRetriesAndDeliversOnce(t *testing.T) {
	e := newMonEnv(t)
	e.ctl.setChecks(`"v1"`, deploysCheck)
	_, mo, _ := e.start()
	queueFailures(e, mo, "d1")

	e.ctl.setMode("down")
	err := mo.deliver(context.Background())
	if !errors.Is(err, ErrServer) {
		t.Fatalf("deliver to a 503 = %v, want ErrServer", err)
	}
	if q, _ := mo.m.Pending(); len(q) != 1 {
		t.Fatalf("queue after a 503: %+v", q)
	}
	// The queue is persisted: another process finds the event.
	_, mo2, _ := e.start()
	if q, _ := mo2.m.Pending(); len(q) != 1 || q[0].Key != "d1" {
		t.Fatalf("queue in a new process: %+v", q)
	}
	e.ctl.setMode("")
	e.deliver(mo2)
	e.deliver(mo2) // nothing left: nothing sent
	if got := e.ctl.recorded(); len(got) != 1 || got[0].Key != "d1" {
		t.Errorf("controller recorded %+v, want the one alert", got)
	}
	_, _, posts, _ := e.ctl.counts()
	if posts != 2 {
		t.Errorf("%d POSTs, want 2 (the 503 and the delivery)", posts)
	}

	// The answer is lost after the controller recorded the batch: it is
	// sent again and recorded once.
	queueFailures(e, mo2, "d2")
	e.ctl.setMode("lose-answer")
	if err := mo2.deliver(context.Background()); !errors.Is(err, ErrServer) {
		t.Fatalf("deliver with a lost answer = %v", err)
	}
	e.deliver(mo2)
	if got := keys(e.ctl.recorded()); !slices.Equal(got, []string{"d1", "d2"}) {
		t.Errorf("controller recorded %v, want d1 d2 once each", got)
	}
}

func TestMonitoringAckSemantics(t *testing.T) {
	t.Run("partial", func(t *testing.T) {
		e := newMonEnv(t)
		e.ctl.setChecks(`"v1"`, deploysCheck)
		_, mo, _ := e.start()
		queueFailures(e, mo, "a", "b", "c")
		e.ctl.setMode("partial") // records and acknowledges the first event of each batch
		e.deliver(mo)
		got := e.ctl.recorded()
		if !slices.Equal(keys(got), []string{"a", "b", "c"}) || got[0].Seq != 1 || got[2].Seq != 3 {
			t.Errorf("controller recorded %+v", got)
		}
		if _, _, posts, _ := e.ctl.counts(); posts != 3 {
			t.Errorf("%d POSTs, want 3 (each acknowledging one event)", posts)
		}
	})
	t.Run("below the batch", func(t *testing.T) {
		e := newMonEnv(t)
		e.ctl.setChecks(`"v1"`, deploysCheck)
		_, mo, _ := e.start()
		queueFailures(e, mo, "a", "b")
		e.ctl.setMode("stuck")
		if err := mo.deliver(context.Background()); !errors.Is(err, ErrServer) {
			t.Fatalf("deliver = %v, want ErrServer", err)
		}
		if q, _ := mo.m.Pending(); len(q) != 2 {
			t.Errorf("queue %+v: an acknowledgement below the batch drops nothing", q)
		}
	})
	t.Run("lost device state", func(t *testing.T) {
		e := newMonEnv(t)
		e.ctl.setChecks(`"v1"`, deploysCheck)
		e.ctl.mu.Lock()
		e.ctl.lastSeq = 100 // recorded from this device before its state was lost
		e.ctl.mu.Unlock()
		_, mo, _ := e.start()
		queueFailures(e, mo, "a", "b")
		e.deliver(mo)
		got := e.ctl.recorded()
		if !slices.Equal(keys(got), []string{"a", "b"}) || got[0].Seq != 101 || got[1].Seq != 102 {
			t.Errorf("controller recorded %+v, want a and b renumbered after 100", got)
		}
		queueFailures(e, mo, "c")
		e.deliver(mo)
		if got := e.ctl.recorded(); len(got) != 3 || got[2].Seq != 103 {
			t.Errorf("next event recorded as %+v", got[len(got)-1])
		}
	})
	t.Run("one refused event", func(t *testing.T) {
		e := newMonEnv(t)
		e.ctl.setChecks(`"v1"`, deploysCheck)
		_, mo, _ := e.start()
		queueFailures(e, mo, "a", "poison", "c")
		e.ctl.mu.Lock()
		e.ctl.refuseKey = "poison"
		e.ctl.mu.Unlock()
		e.deliver(mo)
		if got := keys(e.ctl.recorded()); !slices.Equal(got, []string{"a", "c"}) {
			t.Errorf("controller recorded %v, want a and c (poison dropped)", got)
		}
	})
}

func TestMonitoringFailedDeploymentFromEarlierProcess(t *testing.T) {
	e := newMonEnv(t)
	e.ctl.setChecks(`"v1"`, deploysCheck)
	signer, _ := signers(t)
	// Fails after the reboot (health check), rolls back, and reports from
	// the process after the rollback reboot: none of them runs monitoring.
	e.deploy("release-2", buildArtifact(t, e.dir, "release-2", []byte("new but unhealthy image"), signer))
	e.runToEnd()
	if got := e.server.final(); !slices.Equal(got, []string{"failure"}) {
		t.Fatalf("final statuses %v", got)
	}
	// The daemon starts: the failure is handed over once.
	_, mo, _ := e.start()
	e.step(mo, 0)
	e.deliver(mo)
	got := raised(e.ctl.recorded(), "deploys")
	if len(got) != 1 || got[0].Key != "dep-release-2" || !strings.Contains(got[0].Evidence, "deployment dep-release-2 of release-2 failed") {
		t.Fatalf("controller recorded %+v", e.ctl.recorded())
	}
	// Restarts, soon (the outcome is handed over again; the check knows it)
	// and later (it is not handed over any more): no second alert.
	for _, d := range []time.Duration{time.Second, time.Hour} {
		e.clock.Add(d)
		_, mo, _ := e.start()
		e.step(mo, 0)
		e.step(mo, time.Minute)
		e.deliver(mo)
	}
	if got := e.ctl.recorded(); len(got) != 1 {
		t.Errorf("controller recorded %+v, want the one alert", got)
	}

	// A failure within the daemon's own process is handed over as it ends.
	a, mo, ctx := e.start()
	_, other := signers(t)
	e.deploy("release-3", buildArtifact(t, e.dir, "release-3", []byte("new image"), other)) // untrusted key
	if _, err := a.CheckUpdate(ctx); !errors.Is(err, ErrFailed) {
		t.Fatalf("CheckUpdate = %v, want ErrFailed", err)
	}
	e.step(mo, time.Minute)
	e.deliver(mo)
	if got := raised(e.ctl.recorded(), "deploys"); len(got) != 2 || got[1].Key != "dep-release-3" {
		t.Errorf("controller recorded %+v", e.ctl.recorded())
	}
}

// buildArtifactMeta is buildArtifact with payload meta-data.
func buildArtifactMeta(t *testing.T, dir, name string, image []byte, meta map[string]any) string {
	t.Helper()
	signer, _ := signers(t)
	img := filepath.Join(dir, name+".ext4")
	if err := os.WriteFile(img, image, 0o644); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name+".mender")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p := artifact.RootfsImage(artifact.FileSpec{Path: img}, name, artifact.Software{})
	p.MetaData = meta
	spec := artifact.Spec{Name: name, DeviceTypes: []string{"sim"}, Payloads: []artifact.PayloadSpec{p},
		Signer: signer, TempDir: dir, Compression: artifact.None}
	if err := artifact.Write(context.Background(), f, spec); err != nil {
		t.Fatal(err)
	}
	return path
}

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

func TestMonitoringExpectedDigestsFromMetaData(t *testing.T) {
	e := newMonEnv(t)
	e.file("/etc/app.conf", "version 1")
	e.file("/etc/other.conf", "version 1")
	e.ctl.setChecks(`"v1"`, `{"name":"etc","fileChange":{"paths":["/etc/app.conf","/etc/other.conf"]}}`)
	_, mo, _ := e.start()
	e.step(mo, 0) // baselines of the running software

	e.deploy("release-2", buildArtifactMeta(t, e.dir, "release-2", []byte("new image"), map[string]any{
		ExpectedDigestsKey: map[string]any{
			"/etc/app.conf":   "sha256:" + sha256Hex("version 2"),
			"/etc/other.conf": "sha256:" + sha256Hex("version 2"),
			"relative/path":   "sha256:" + sha256Hex("x"), // left out, with a warning
		},
	}))
	e.runToEnd()
	if got := e.server.final(); !slices.Equal(got, []string{"success"}) {
		t.Fatalf("final statuses %v", got)
	}
	// The new software: app.conf as announced, other.conf not.
	e.file("/etc/app.conf", "version 2")
	e.file("/etc/other.conf", "version 2, edited on the device")
	_, mo, _ = e.start()
	e.step(mo, 0)
	e.deliver(mo)
	got := raised(e.ctl.recorded(), "etc")
	if len(got) != 1 || got[0].Key != "/etc/other.conf" {
		t.Fatalf("controller recorded %+v, want one alert, for /etc/other.conf", e.ctl.recorded())
	}
	// app.conf's new digest is its baseline now: tampering with it alerts.
	e.file("/etc/app.conf", "version 2, tampered")
	e.step(mo, 5*time.Minute)
	e.deliver(mo)
	if got := raised(e.ctl.recorded(), "etc"); len(got) != 2 || got[1].Key != "/etc/app.conf" {
		t.Errorf("controller recorded %+v", e.ctl.recorded())
	}
}

func TestExpectedDigestsParsing(t *testing.T) {
	d1, d2 := sha256Hex("one"), sha256Hex("two")
	h := &HeaderRecord{Payloads: []PayloadRecord{
		{MetaData: map[string]any{ExpectedDigestsKey: map[string]any{
			"/etc/a":     "sha256:" + strings.ToUpper(d1),
			"/etc/b":     d2, // bare hex
			"/etc/c":     "sha256:" + d1,
			"/etc/../x":  "sha256:" + d1,
			"/etc/short": "sha256:abcd",
			"/etc/num":   42,
		}}},
		{MetaData: map[string]any{"other": 1}},
		{MetaData: map[string]any{ExpectedDigestsKey: map[string]any{"/etc/c": "sha256:" + d2}}},
		{MetaData: map[string]any{ExpectedDigestsKey: "not an object"}},
	}}
	got, problems := expectedDigests(h)
	want := map[string]string{"/etc/a": "sha256:" + d1, "/etc/b": "sha256:" + d2}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("digests %v, want %v", got, want)
	}
	all := strings.Join(problems, "\n")
	for _, s := range []string{`"/etc/../x"`, `"/etc/short"`, `"/etc/num"`, "/etc/c: payloads expect different digests", "payload 3: not an object"} {
		if !strings.Contains(all, s) {
			t.Errorf("problems lack %s:\n%s", s, all)
		}
	}
}

func TestMonitorConfig(t *testing.T) {
	c, err := ParseConfig([]byte(`{"ServerURL":"https://x"}`))
	if err != nil {
		t.Fatal(err)
	}
	if !c.MonitorEnabled() || c.MonitorRoot != "/" {
		t.Errorf("defaults: enabled %v, root %q", c.MonitorEnabled(), c.MonitorRoot)
	}
	c, err = ParseConfig([]byte(`{"ServerURL":"https://x","Monitor":false,"MonitorRoot":"/srv/root"}`))
	if err != nil || c.MonitorEnabled() || c.MonitorRoot != "/srv/root" {
		t.Errorf("Monitor false: enabled %v, root %q, %v", c.MonitorEnabled(), c.MonitorRoot, err)
	}
	if _, err := ParseConfig([]byte(`{"MonitorRoot":"relative"}`)); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "MonitorRoot") {
		t.Errorf("relative MonitorRoot: %v", err)
	}
	// Off: no Monitor, nothing in the data directory, Daemon-free paths
	// unaffected.
	e := newMonEnv(t)
	off := false
	e.cfg.Monitor = &off
	a, _ := e.agent()
	if a.monitoring() != nil {
		t.Error("monitoring made with Monitor false")
	}
}
