package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/artifact"
	"github.com/gitfleet/gitfleet/controller"
	"github.com/gitfleet/gitfleet/controller/artifacts"
	"github.com/gitfleet/gitfleet/controller/deviceapi"
	"github.com/gitfleet/gitfleet/controller/gitsource"
	"github.com/gitfleet/gitfleet/controller/gitsource/gittest"
	"github.com/gitfleet/gitfleet/controller/rollout"
	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gitfleet/gitfleet/controller/store/redis"
	"github.com/gitfleet/gitfleet/controller/store/redistest"
)

// TestSimulation drives 10,000 simulated devices (SimDevice: signed auth
// requests, tokens, POST v2 deployments/next, presigned Range downloads,
// status reports, all over TLS) through a three-phase rollout against the
// real controller: controller.New with the Redis store on a real
// redis-server, gitsource following a real Git repository, the real device
// API, rollout engine and artifact cache (a signed Mender artifact). The
// controller runs in this process so that its clock can be moved: holds
// are hours long and the test moves the device API's clock past them
// instead of sleeping. Approvals arrive as later Git commits adding
// spec.approvedPhases.
//
// The fleet: 10,000 devices declared in Git (four Device manifests with
// spec.devices lists, identity and key fingerprint each) and one rollout
// targeting all of them:
//
//	canary  count 100        hold 1h                    abort maxFailures 3
//	wave    30 % (2,900)     hold 2h, requiresApproval  abort maxFailurePercent 10, minSample 500
//	all     100 % (7,000)    requiresApproval           abort maxFailurePercent 2, minSample 1000
//
// Injected failures: 3 canaries (exactly maxFailures: no abort), 145
// devices of the wave (5 %: no abort), and in the last phase 1.5 % of the
// first batch of 1,000 and 3 % of the second: the rollout aborts at the
// failure that takes the phase's share above 2 %. Within a batch,
// successes are reported concurrently and failures one at a time, and
// after each failure the store's abort state must equal what the phase's
// criteria say of its counts: no abort one failure early, abort exactly
// at the threshold.
//
// It asserts exact phase sizes (the admitted sets are exactly the devices
// of lowest rollout.Key rank), that nobody is admitted during a hold or
// before an approval commit, that a device asking again mid-deployment
// gets the same deployment, that nobody is admitted after the abort
// (devices still updating get 409), the store's counts, and the events
// (phase completions, one abort) through the management API.
//
// Devices share one HTTP/1.1 keep-alive transport (a pool of as many
// connections as workers) rather than a TLS connection each; every
// device does download, but only the first 4 KiB of the artifact, by
// Range (a 206 with the right Content-Range proves the presigned URI
// works; the cache's own tests cover whole and resumed downloads).
//
// Two controller replicas share the Redis (each with its own Git clone,
// store client and artifact cache, as in production), and every device's
// requests take turns between them, as behind a load balancer that does
// not pin devices: one replica admits a device, the other hears its
// status reports and its next poll. Exact phase sizes then also show
// that replicas never admit beyond a quota, and that each replica's
// deployment index follows what the other did.
//
// GITFLEET_SIM_DEVICES=N runs it with another fleet size (≥ 1,000),
// GITFLEET_SIM_REPLICAS=R with R replicas (1…8).
func TestSimulation(t *testing.T) {
	if testing.Short() {
		t.Skip("simulation of 10,000 devices: not in -short")
	}
	n, replicas := 10_000, 2
	if v := os.Getenv("GITFLEET_SIM_DEVICES"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1000 {
			t.Fatalf("GITFLEET_SIM_DEVICES=%q: want a number ≥ 1000", v)
		}
	}
	if v := os.Getenv("GITFLEET_SIM_REPLICAS"); v != "" {
		var err error
		if replicas, err = strconv.Atoi(v); err != nil || replicas < 1 || replicas > 8 {
			t.Fatalf("GITFLEET_SIM_REPLICAS=%q: want 1…8", v)
		}
	}
	start := time.Now()
	s := newSimEnv(t, n, replicas)
	t.Logf("setup (keys, repository of %d devices, controller, artifact): %s", n, time.Since(start).Round(time.Millisecond))

	// Everyone authenticates (Ed25519-signed auth requests) and sends
	// its inventory.
	step := time.Now()
	s.each(s.all(), func(d *simDev) error {
		if err := d.Authenticate(s.ctx); err != nil {
			return err
		}
		return d.SendInventory(s.ctx, map[string]string{"hostname": d.Name, "kernel": "6.1.0-sim"})
	})
	t.Logf("%d devices authenticated and sent inventory: %s", n, time.Since(step).Round(time.Millisecond))

	canaryN := int64(n / 100)
	waveCum := int64(math.Ceil(30 * float64(n) / 100))
	ranks := s.byRank()

	// Phase "canary": exactly the canaryN devices of lowest rank.
	step = time.Now()
	got := s.pollRound("canary opens", canaryN)
	s.expectSet("canary", got, ranks[:canaryN])
	// A device that asks again mid-deployment gets the same deployment.
	for _, d := range got[:10] {
		if err := d.Report(s.ctx, d.dep.ID, deviceapi.StatusDownloading); err != nil {
			t.Fatal(err)
		}
		again, err := d.Next(s.ctx)
		if err != nil || again == nil || again.ID != d.dep.ID || again.Artifact.ArtifactName != d.dep.Artifact.ArtifactName {
			t.Fatalf("%s asked again mid-deployment: %+v, %v; want deployment %s", d.Name, again, err, d.dep.ID)
		}
	}
	canaryFails := map[*simDev]bool{got[10]: true, got[50%len(got)]: true, got[len(got)-1]: true}
	s.update(0, got, canaryFails)
	s.expectProgress(0, canaryN, canaryN-3, 3)
	s.expectAborted("")
	t1 := s.clock.Now()
	t.Logf("canary: %d admitted, 3 failed (= maxFailures: no abort): %s", canaryN, time.Since(step).Round(time.Millisecond))

	// The hold (1h), then the approval gate, keep the wave closed.
	step = time.Now()
	s.clock.Set(t1.Add(time.Hour - time.Minute))
	s.pollRound("canary hold, 1 minute left", 0)
	s.clock.Set(t1.Add(time.Hour + time.Second))
	s.pollRound("hold over, wave not approved", 0)
	s.approve("wave")
	got = s.pollRound("wave approved", waveCum-canaryN)
	s.expectSet("wave", got, ranks[canaryN:waveCum])
	t.Logf("hold and approval of the wave respected; %d admitted: %s", len(got), time.Since(step).Round(time.Millisecond))

	// Phase "wave": 5 % fail, below its 10 %.
	step = time.Now()
	waveFails := map[*simDev]bool{}
	for i, d := range got {
		if i%20 == 7 {
			waveFails[d] = true
		}
	}
	s.update(1, got, waveFails)
	s.expectProgress(1, waveCum-canaryN, waveCum-canaryN-int64(len(waveFails)), int64(len(waveFails)))
	s.expectAborted("")
	t2 := s.clock.Now()
	t.Logf("wave: %d failed of %d (below 10 %%): %s", len(waveFails), len(got), time.Since(step).Round(time.Millisecond))

	// An approval that arrives during the hold does not shorten it.
	step = time.Now()
	s.approve("wave", "all")
	s.pollRound("all approved, wave hold just started", 0)
	s.clock.Set(t2.Add(2*time.Hour - time.Minute))
	s.pollRound("wave hold, 1 minute left", 0)
	s.clock.Set(t2.Add(2*time.Hour + time.Second))
	t.Logf("hold of the wave respected although approved early: %s", time.Since(step).Round(time.Millisecond))

	// Phase "all", in batches of n/10 devices: the first batch fails
	// 1.5 %, the second 3 %: the abort comes in the second batch.
	step = time.Now()
	rest := slices.Clone(ranks[waveCum:])
	shuffle(rest)
	batch := n / 10
	var admitted int64
	abortedIn := -1
	for b := 0; b*batch < len(rest); b++ {
		devs := rest[b*batch : min(len(rest), (b+1)*batch)]
		want := int64(len(devs))
		if abortedIn >= 0 {
			want = 0
		}
		got := s.pollDevices(fmt.Sprintf("all, batch %d", b), devs, want)
		admitted += int64(len(got))
		if len(got) == 0 {
			continue
		}
		fails := map[*simDev]bool{}
		nf := []int{batch * 15 / 1000, batch * 30 / 1000}[min(b, 1)]
		for _, d := range got[:nf] {
			fails[d] = true
		}
		// Ten devices of each batch stall after "downloading": still
		// updating when the abort comes.
		stalled := got[len(got)-10:]
		s.each(stalled, func(d *simDev) error { return d.Report(s.ctx, d.dep.ID, deviceapi.StatusDownloading) })
		s.update(2, got[:len(got)-10], fails)
		if s.aborted() != "" {
			abortedIn = b
			// The stalled devices are told the deployment was aborted.
			s.each(stalled, func(d *simDev) error {
				if err := d.Report(s.ctx, d.dep.ID, deviceapi.StatusInstalling); !errors.Is(err, ErrAborted) {
					return fmt.Errorf("%s reported installing after the abort: %v, want 409", d.Name, err)
				}
				return nil
			})
			continue
		}
		s.each(stalled, func(d *simDev) error { d.phase = 2; return d.Update(s.ctx, d.dep, Succeed, 4096) })
	}
	if abortedIn != 1 {
		t.Fatalf("rollout aborted in batch %d of the last phase, want 1", abortedIn)
	}
	if c := s.progress().Phases[2]; c.Admitted != admitted || admitted != int64(2*batch) {
		t.Errorf("phase all: %d admitted in the store, %d by the devices' count, want %d", c.Admitted, admitted, 2*batch)
	}
	t.Logf("all: %d admitted before the abort, none after: %s", admitted, time.Since(step).Round(time.Millisecond))

	// After the abort nobody is admitted, whoever asks (the ten devices
	// stalled when it came get no deployment either).
	s.pollRound("after the abort", 0)
	p := s.progress()
	for k, want := range []int64{canaryN, waveCum - canaryN, admitted} {
		if p.Phases[k].Admitted != want {
			t.Errorf("phase %d admitted %d, want %d", k, p.Phases[k].Admitted, want)
		}
	}
	t.Logf("final progress: %+v, aborted: %q", p.Phases, p.Aborted)

	// Events, through the management API.
	evs := s.events()
	var completed []string
	aborts := 0
	for _, e := range evs {
		switch e.Kind {
		case "rollout.phase_completed":
			completed = append(completed, e.Subject)
		case "rollout.aborted":
			aborts++
			if e.Subject != "fleet/g1" || !strings.Contains(e.Message, s.aborted()) {
				t.Errorf("abort event %+v", e)
			}
		}
	}
	if !slices.Equal(completed, []string{"fleet/g1/phase0", "fleet/g1/phase1"}) || aborts != 1 {
		t.Errorf("events: phases completed %v, %d aborts; want phase0, phase1 and one abort", completed, aborts)
	}
	t.Logf("%d requests in %s (%.0f/s); total %s", s.requests.Load(), time.Since(start).Round(time.Millisecond),
		float64(s.requests.Load())/time.Since(start).Seconds(), time.Since(start).Round(time.Millisecond))
	for r, n := range s.served {
		share := float64(n.Load()) / float64(s.requests.Load())
		t.Logf("replica %d served %d requests (%.1f %%)", r, n.Load(), share*100)
		if share < 0.8/float64(len(s.served)) {
			t.Errorf("replica %d served %.1f %% of the requests; the devices should spread them evenly", r, share*100)
		}
	}
}

// simDev is a SimDevice with what the test remembers of it.
type simDev struct {
	*SimDevice
	key   uint64 // rollout.Key("fleet", Name)
	dep   *deviceapi.NextResponse
	phase int // phase it was admitted to, -1 before
}

// simEnv is the controller, its Redis, the fleet repository and the devices.
type simEnv struct {
	t        testing.TB
	ctx      context.Context
	clock    *simClock
	repo     *gittest.Repo
	ctrls    []*controller.Controller // the replicas
	store    *redis.Store             // the test's own client of the shared Redis
	srvs     []*httptest.Server       // one per replica
	devices  []*simDev
	fleet    map[string]string // the repository's files
	requests atomic.Int64
	served   []*atomic.Int64 // requests per replica
	logs     *lockedBuffer
	workers  int
	token    string
}

const simRollout = `apiVersion: gitfleet.io/v1
kind: Rollout
metadata: {name: fleet}
spec:
  artifact: app-2
  target: {all: true}
  phases:
    - name: canary
      count: %d
      hold: 1h
      abort: {maxFailures: 3}
    - name: wave
      percent: 30
      hold: 2h
      requiresApproval: true
      abort: {maxFailurePercent: 10, minSample: 500}
    - name: all
      percent: 100
      requiresApproval: true
      abort: {maxFailurePercent: 2, minSample: 1000}
`

// criteria mirrors the rollout's abort criteria per phase, to say when
// the store must have aborted: maxFailures m (failed > m) or
// maxFailurePercent p with minSample s.
var simCriteria = []struct {
	maxFailures int64 // -1: none
	pct         float64
	minSample   int64
}{{3, -1, 0}, {-1, 10, 500}, {-1, 2, 1000}}

func newSimEnv(t testing.TB, n, replicas int) *simEnv {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	t.Cleanup(cancel)
	s := &simEnv{t: t, ctx: ctx, clock: &simClock{}, logs: &lockedBuffer{}, workers: 64, token: "sim-mgmt-token"}
	s.clock.Set(time.Now().UTC().Truncate(time.Second))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("controller log (warnings and errors, last 40 lines):\n%s", tailLines(s.logs.String(), 40))
		}
	})

	// A signed module-image artifact in the artifact store.
	priv, pub, err := artifact.GenerateKey(artifact.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := artifact.LoadSigner(priv)
	if err != nil {
		t.Fatal(err)
	}
	storeDir := t.TempDir()
	payload := make([]byte, 64<<10)
	rand.Read(payload)
	p := artifact.ModuleImage("app", []artifact.FileSpec{{Name: "app.bin", Open: func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(payload)), nil
	}}}, "app-2", artifact.Software{})
	var art bytes.Buffer
	if err := artifact.Write(ctx, &art, artifact.Spec{Name: "app-2", DeviceTypes: []string{"sim-board"},
		Payloads: []artifact.PayloadSpec{p}, Signer: signer, TempDir: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(storeDir, "app-2.mender"), art.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}

	// The fleet: devices in four manifests, the key, the artifact, the rollout.
	s.fleet = map[string]string{
		"keys/release.yaml": "apiVersion: gitfleet.io/v1\nkind: SigningKey\nmetadata: {name: release}\nspec:\n  algorithm: ecdsa-p256\n  publicKey: |\n    " +
			strings.ReplaceAll(strings.TrimSpace(string(pub)), "\n", "\n    ") + "\n",
		"artifacts/app-2.yaml": "apiVersion: gitfleet.io/v1\nkind: Artifact\nmetadata: {name: app-2}\nspec:\n  source: app-2.mender\n  version: \"2\"\n  deviceTypes: [sim-board]\n  signedBy: [release]\n",
		"rollouts/fleet.yaml":  fmt.Sprintf(simRollout, n/100),
	}
	files := 4
	var buf []strings.Builder = make([]strings.Builder, files)
	for f := range files {
		fmt.Fprintf(&buf[f], "apiVersion: gitfleet.io/v1\nkind: Device\nmetadata: {name: sims-%d}\nspec:\n  devices:\n", f)
	}
	s.devices = make([]*simDev, n)
	for i := range n {
		name := fmt.Sprintf("sim-%05d", i)
		id := map[string]string{"mac": fmt.Sprintf("02:00:00:%02x:%02x:%02x", i>>16&0xff, i>>8&0xff, i&0xff)}
		d := &simDev{SimDevice: NewSimDevice("", nil, name, id, "sim-board", "app-1", nil), key: rollout.Key("fleet", name), phase: -1}
		s.devices[i] = d
		fmt.Fprintf(&buf[i*files/n], "    - {name: %s, identity: {mac: %q}, publicKeySHA256: %s, deviceType: sim-board}\n", name, id["mac"], d.Fingerprint())
	}
	for f := range files {
		s.fleet[fmt.Sprintf("devices/sims-%d.yaml", f)] = buf[f].String()
	}
	s.repo = gittest.NewRepo(t)
	head := s.repo.Commit(s.fleet, "fleet of simulated devices, rollout of app-2")

	// Redis (fsync every second, as for benchmarks), the controllers.
	addr, _ := redistest.Start(t, "--appendfsync", "everysec")
	s.store, err = redis.New(redis.Options{Addrs: []string{addr}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.store.Close() })
	dlKey, err := s.store.SharedSecret(ctx, "artifacts.download", func() ([]byte, error) {
		k := make([]byte, 32)
		_, err := rand.Read(k)
		return k, err
	})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(s.logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	var bases []string
	for r := range replicas {
		// Each replica as in production: its own Git clone, store client
		// and artifact cache; only Redis is shared.
		st, err := redis.New(redis.Options{Addrs: []string{addr}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		rlog := log.With("replica", r)
		src, err := gitsource.New(gitsource.Options{URL: s.repo.URL(), Ref: "main", PollInterval: time.Hour, Logger: rlog})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { src.Close() })
		cache, err := artifacts.New(artifacts.Options{Dir: t.TempDir(), StoreDir: storeDir, DownloadKeys: [][]byte{dlKey}, Logger: rlog})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cache.Close() })
		var handler http.Handler
		served := new(atomic.Int64)
		s.served = append(s.served, served)
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			s.requests.Add(1)
			served.Add(1)
			handler.ServeHTTP(w, r)
		}))
		// Download URLs are built on the replica's public URL: its own
		// address, known once its listener is open.
		ctrl, err := controller.New(controller.Options{
			Source: src, Store: st, Branch: "main", Logger: rlog, ManagementToken: s.token,
			Devices: deviceapi.Options{Artifacts: cache, Now: s.clock.Now, Logger: rlog,
				PublicURL: "https://" + srv.Listener.Addr().String()},
			Downloads: cache.DownloadHandler,
		})
		if err != nil {
			t.Fatal(err)
		}
		handler = ctrl.Handler()
		srv.StartTLS()
		t.Cleanup(srv.Close)
		runCtx, stop := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); ctrl.Run(runCtx) }()
		t.Cleanup(func() { stop(); <-done })
		s.ctrls, s.srvs = append(s.ctrls, ctrl), append(s.srvs, srv)
		bases = append(bases, srv.URL)
		s.awaitServing(head)
		if err := cache.Sync(ctx, ctrl.Live().Fleet); err != nil {
			t.Fatal(err)
		}
		if _, err := cache.Lookup("app-2"); err != nil {
			t.Fatalf("replica %d: artifact not offered: %v", r, err)
		}
	}

	// The replicas' test servers share one certificate: one client
	// trusts both.
	tr := s.srvs[0].Client().Transport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = s.workers
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	for _, d := range s.devices {
		d.client = client
		d.SetBases(bases...)
	}
	return s
}

// awaitServing triggers a fetch and waits until every replica serves sha.
func (s *simEnv) awaitServing(sha string) {
	s.t.Helper()
	deadline := time.Now().Add(Deadline)
	for r, c := range s.ctrls {
		for {
			if l := c.Live(); l != nil && l.Commit.SHA == sha {
				break
			}
			if time.Now().After(deadline) || s.ctx.Err() != nil {
				s.t.Fatalf("replica %d does not serve %.12s within %s", r, sha, Deadline)
			}
			c.Trigger()
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// approve commits spec.approvedPhases and waits until it is served.
func (s *simEnv) approve(phases ...string) {
	s.t.Helper()
	ro := s.fleet["rollouts/fleet.yaml"] + "  approvedPhases: [" + strings.Join(phases, ", ") + "]\n"
	sha := s.repo.Commit(map[string]string{"rollouts/fleet.yaml": ro}, "approve "+strings.Join(phases, ", "))
	s.awaitServing(sha)
}

// all returns every device.
func (s *simEnv) all() []*simDev { return s.devices }

// byRank returns the devices ordered by their key in the rollout.
func (s *simEnv) byRank() []*simDev {
	out := slices.Clone(s.devices)
	slices.SortFunc(out, func(a, b *simDev) int {
		if a.key != b.key {
			if a.key < b.key {
				return -1
			}
			return 1
		}
		return strings.Compare(a.Name, b.Name)
	})
	return out
}

// each runs fn for every device with s.workers goroutines and fails the
// test on the first error.
func (s *simEnv) each(devs []*simDev, fn func(d *simDev) error) {
	s.t.Helper()
	var (
		next atomic.Int64
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for range min(s.workers, len(devs)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(devs) || s.ctx.Err() != nil {
					return
				}
				if err := fn(devs[i]); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := s.ctx.Err(); err != nil {
		errs = append(errs, fmt.Errorf("simulation deadline: %w", err))
	}
	if len(errs) > 0 {
		s.t.Fatalf("%d devices failed; first: %v", len(errs), errs[0])
	}
}

// pollRound makes every device that has no deployment poll once and
// checks that exactly want of them got one; it returns those.
func (s *simEnv) pollRound(what string, want int64) []*simDev {
	s.t.Helper()
	var idle []*simDev
	for _, d := range s.devices {
		if d.phase < 0 {
			idle = append(idle, d)
		}
	}
	return s.pollDevices(what, idle, want)
}

// pollDevices makes devs poll once; devices that get a deployment are
// returned in rank order and remember it.
func (s *simEnv) pollDevices(what string, devs []*simDev, want int64) []*simDev {
	s.t.Helper()
	before := s.progress()
	var (
		mu  sync.Mutex
		got []*simDev
	)
	s.each(devs, func(d *simDev) error {
		dep, err := d.Next(s.ctx)
		if err != nil || dep == nil {
			return err
		}
		if dep.Artifact.ArtifactName != "app-2" || dep.ID != "fleet-g1" {
			return fmt.Errorf("%s got deployment %+v", d.Name, dep)
		}
		mu.Lock()
		d.dep = dep
		got = append(got, d)
		mu.Unlock()
		return nil
	})
	if int64(len(got)) != want {
		s.t.Fatalf("%s: %d of %d devices got a deployment, want %d", what, len(got), len(devs), want)
	}
	after := s.progress()
	var newly int64
	for k := range after.Phases {
		newly += after.Phases[k].Admitted
		if k < len(before.Phases) {
			newly -= before.Phases[k].Admitted
		}
	}
	if newly != want {
		s.t.Fatalf("%s: the store admitted %d, want %d", what, newly, want)
	}
	slices.SortFunc(got, func(a, b *simDev) int { return cmpKey(a.key, b.key) })
	s.t.Logf("%s: %d polls, %d admitted", what, len(devs), len(got))
	return got
}

// update makes devs (all admitted to phase) carry out their deployment:
// those not in fails succeed concurrently, then those in fails report
// failure one at a time; after each failure the store must be aborted
// exactly when the phase's criteria say so.
func (s *simEnv) update(phase int, devs []*simDev, fails map[*simDev]bool) {
	s.t.Helper()
	var ok, bad []*simDev
	for _, d := range devs {
		d.phase = phase
		if fails[d] {
			bad = append(bad, d)
		} else {
			ok = append(ok, d)
		}
	}
	s.each(ok, func(d *simDev) error { return d.Update(s.ctx, d.dep, Succeed, 4096) })
	c := simCriteria[phase]
	for _, d := range bad {
		wasAborted := s.aborted() != ""
		err := d.Update(s.ctx, d.dep, Fail, 4096)
		if wasAborted {
			// Non-final reports are refused once aborted; the device stops.
			if !errors.Is(err, ErrAborted) {
				s.t.Fatalf("%s updating after the abort: %v, want 409", d.Name, err)
			}
			continue
		}
		if err != nil {
			s.t.Fatal(err)
		}
		pc := s.progress().Phases[phase]
		finished := pc.Succeeded + pc.Failed
		want := c.maxFailures >= 0 && pc.Failed > c.maxFailures ||
			c.pct >= 0 && finished >= max(c.minSample, 1) && float64(pc.Failed)*100 > c.pct*float64(finished)
		if got := s.aborted(); (got != "") != want {
			s.t.Fatalf("phase %d after %d failures of %d finished: aborted %q, want aborted %v", phase, pc.Failed, finished, got, want)
		} else if want {
			s.t.Logf("phase %d aborted at failure %d of %d finished (%.2f %%): %s", phase, pc.Failed, finished, float64(pc.Failed)*100/float64(finished), got)
		}
	}
}

func (s *simEnv) gen() store.GenerationRef {
	return store.GenerationRef{Rollout: "fleet", Generation: 1}
}

func (s *simEnv) progress() store.Progress {
	s.t.Helper()
	p, err := s.store.Progress(s.ctx, s.gen())
	if err != nil {
		s.t.Fatal(err)
	}
	return p
}

func (s *simEnv) aborted() string { return s.progress().Aborted }

func (s *simEnv) expectAborted(want string) {
	s.t.Helper()
	if got := s.aborted(); got != want {
		s.t.Fatalf("aborted %q, want %q", got, want)
	}
}

func (s *simEnv) expectProgress(phase int, admitted, succeeded, failed int64) {
	s.t.Helper()
	p := s.progress()
	if len(p.Phases) <= phase {
		s.t.Fatalf("progress %+v has no phase %d", p, phase)
	}
	got := p.Phases[phase]
	if got.Admitted != admitted || got.Succeeded != succeeded || got.Failed != failed {
		s.t.Fatalf("phase %d: %+v, want %d admitted, %d succeeded, %d failed", phase, got, admitted, succeeded, failed)
	}
	// The phase completed with its last report: the hold runs from now.
	if now := s.clock.Now().Truncate(time.Millisecond); !got.Completed.Equal(now) {
		s.t.Fatalf("phase %d completed at %s, want %s", phase, got.Completed, now)
	}
}

// expectSet checks that got (rank order) holds exactly the devices of want.
func (s *simEnv) expectSet(what string, got, want []*simDev) {
	s.t.Helper()
	if len(got) != len(want) {
		s.t.Fatalf("%s: %d devices, want %d", what, len(got), len(want))
	}
	for i := range got {
		if got[i] != want[i] {
			s.t.Fatalf("%s: device %s admitted, but rank %d is %s", what, got[i].Name, i, want[i].Name)
		}
	}
}

type simEvent struct {
	Kind, Subject, Message string
}

// events reads the event log through the management API.
func (s *simEnv) events() []simEvent {
	s.t.Helper()
	req, _ := http.NewRequestWithContext(s.ctx, http.MethodGet, s.srvs[0].URL+"/api/management/v1/events?limit=1000", nil)
	req.Header.Set("Authorization", "Bearer "+s.token)
	resp, err := s.srvs[0].Client().Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct{ Events []simEvent }
	if err := json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(&out); err != nil || resp.StatusCode != 200 {
		s.t.Fatalf("events: %s, %v", resp.Status, err)
	}
	return out.Events
}

func cmpKey(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// shuffle orders devs deterministically by a hash of their names.
func shuffle(devs []*simDev) {
	slices.SortFunc(devs, func(a, b *simDev) int { return cmpKey(rollout.Key("order", a.Name), rollout.Key("order", b.Name)) })
}

// simClock is the device API's clock; the test moves it.
type simClock struct{ ns atomic.Int64 }

func (c *simClock) Now() time.Time  { return time.Unix(0, c.ns.Load()).UTC() }
func (c *simClock) Set(t time.Time) { c.ns.Store(t.UnixNano()) }

// BenchmarkDevicePoll measures one POST v2 deployments/next of an
// accepted device that gets no deployment (the canary phase is full), over
// a kept-alive TLS connection, against the in-process controller on real
// Redis, from as many goroutines as GOMAXPROCS × 8. Profile it with
//
//	go test ./controller/e2e -run '^$' -bench DevicePoll -cpuprofile cpu.out
func BenchmarkDevicePoll(b *testing.B) {
	s := newSimEnv(b, 2000, 1)
	s.each(s.all(), func(d *simDev) error { return d.Authenticate(s.ctx) })
	s.each(s.all(), func(d *simDev) error {
		_, err := d.Next(s.ctx) // the canaries are admitted; the rest wait
		return err
	})
	var i atomic.Int64
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			d := s.devices[int(i.Add(1))%len(s.devices)]
			if _, err := d.Next(s.ctx); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
