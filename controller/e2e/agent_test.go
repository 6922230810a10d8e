package e2e

import (
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/artifact"
	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gitfleet/gitfleet/device/agent"
)

// agentImageSize is the size of the test images (partitions are 4 MiB).
const agentImageSize = 3 << 20

// agentFleet starts a Redis, a fleet repository holding the signing keys,
// and a controller serving artifacts from storeDir.
func agentFleet(t *testing.T, storeDir string, keys map[string][]byte, serveFlags ...string) (*Env, *Controller) {
	t.Helper()
	mkdir(t, storeDir)
	dir := t.TempDir()
	for name, pub := range keys {
		for p, body := range SigningKeyManifest(name, pub) {
			writeFile(t, filepath.Join(dir, p), []byte(body), 0o644)
		}
	}
	env := newEnv(t, dir)
	seed := env.Repo.Head()
	c := env.StartController("a", append([]string{"--artifact-store", storeDir}, serveFlags...)...)
	c.AwaitServing(seed)
	return env, c
}

func merge(ms ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, m := range ms {
		maps.Copy(out, m)
	}
	return out
}

func generateKey(t *testing.T) (priv, pub []byte) {
	t.Helper()
	priv, pub, err := artifact.GenerateKey(artifact.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	return priv, pub
}

// rolloutView reads a rollout's first phase counts and whether it
// aborted from the management API.
func rolloutView(t *testing.T, c *Controller, name string) [3]any {
	t.Helper()
	ros, err := c.Rollouts()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range ros {
		if r["name"] != name {
			continue
		}
		phases, _ := r["phases"].([]any)
		if len(phases) == 0 {
			return [3]any{nil, nil, r["aborted"] != nil}
		}
		p, _ := phases[0].(map[string]any)
		return [3]any{p["succeeded"], p["failed"], r["aborted"] != nil && r["aborted"] != ""}
	}
	return [3]any{}
}

// TestAgentEndToEnd is the agent's story against the real controller
// (gitfleet serve, Redis, a fleet repository over HTTPS): three simulated
// devices running gitfleet-agent are declared in Git by identity. A
// rollout of a signed rootfs image installs on two of them, reboots into
// B and commits — one of them behind a proxy that drops its download
// halfway, which resumes. An image whose health check fails reboots the
// third back into A, is reported a failure, and aborts its rollout. An
// artifact the controller trusts but the agents do not is refused before
// the boot switch: partition B and the boot environment stay as they
// were.
func TestAgentEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: runs gitfleet serve, Redis and three agents")
	}
	work := t.TempDir()
	storeDir := filepath.Join(work, "artifact-store")
	releasePriv, releasePub := generateKey(t)
	roguePriv, roguePub := generateKey(t)
	// The devices download from the controller's public URL, which a
	// proxy fronts; it drops the first download halfway. (Download URLs
	// are built on the public URL, never on the Host a device asked for,
	// so the proxy must be that URL.) dev-2 also polls through it.
	proxy := StartCutProxy(t, "", 0)
	env, c := agentFleet(t, storeDir, map[string][]byte{"release": releasePub, "rogue": roguePub}, "--public-url", proxy.URL())

	initial := TestImage("rel-1", agentImageSize, true)
	good := WriteRootfsArtifact(t, storeDir, "rel-2", TestImage("rel-2", agentImageSize, true), releasePriv)
	sick := WriteRootfsArtifact(t, storeDir, "rel-3", TestImage("rel-3", agentImageSize, false), releasePriv)
	rogue := WriteRootfsArtifact(t, storeDir, "rel-4", TestImage("rel-4", agentImageSize, true), roguePriv)

	proxy.Retarget(c.Addr, good.Size/2)
	devs := map[string]*Agent{}
	for _, name := range []string{"dev-1", "dev-2", "dev-3"} {
		opts := AgentOptions{Name: name, Image: initial, ArtifactName: "rel-1", VerifyKeys: [][]byte{releasePub}}
		if name == "dev-2" {
			opts.ServerURL = proxy.URL()
		}
		devs[name] = NewAgent(t, c, opts)
	}
	dev1, dev2, dev3 := devs["dev-1"], devs["dev-2"], devs["dev-3"]

	// Declared in Git by the identity the agents report, before they start.
	sha := env.CommitAndServe(c, merge(dev1.Manifest(), dev2.Manifest(), dev3.Manifest()), "declare dev-1..3")
	for _, d := range devs {
		if err := d.Start(); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range devs {
		c.AwaitDevice(d.ID(), "accepted, reporting rel-1", func(rec store.Device) bool {
			return rec.Status == store.DeviceAccepted && Inventory(rec)["artifact_name"] == "rel-1"
		})
	}
	t.Logf("declared at %.12s; three agents accepted", sha)

	// (a) + (d): rel-2 to dev-1 and dev-2; (b): the unhealthy rel-3 to
	// dev-3, aborting at the first failure.
	sha = env.CommitAndServe(c, merge(
		ArtifactManifest(good, "2", "release"), RolloutManifest("good", good.Name, []string{"dev-1", "dev-2"}, true),
		ArtifactManifest(sick, "3", "release"), RolloutManifest("sick", sick.Name, []string{"dev-3"}, true),
	), "roll out rel-2 and rel-3")

	var wg sync.WaitGroup
	outcomes := map[string]string{}
	var mu sync.Mutex
	for _, x := range []struct {
		d       *Agent
		rollout string
	}{{dev1, "good"}, {dev2, "good"}, {dev3, "sick"}} {
		wg.Go(func() {
			o, err := x.d.awaitOutcome(c, x.rollout)
			if err != nil {
				t.Error(err)
			}
			mu.Lock()
			outcomes[x.d.Name] = o
			mu.Unlock()
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	// (a) installed, rebooted into B, committed; the controller counts the
	// successes and the devices report rel-2.
	for _, d := range []*Agent{dev1, dev2} {
		if outcomes[d.Name] != store.StateSuccess {
			t.Errorf("%s: outcome %q, want success", d.Name, outcomes[d.Name])
		}
		vars := d.BootEnv()
		if d.Booted() != "B" || d.ArtifactName() != "rel-2" || d.Reboots() != 1 || vars["mender_boot_part"] != "3" || vars["upgrade_available"] != "0" {
			t.Errorf("%s: booted %s, artifact %s, reboots %d, env %v", d.Name, d.Booted(), d.ArtifactName(), d.Reboots(), vars)
		}
		if got, want := d.PartitionDigest("B", agentImageSize), digest(good.Image); got != want {
			t.Errorf("%s: partition B holds %s, rel-2's image is %s", d.Name, got, want)
		}
		c.AwaitDevice(d.ID(), "reporting rel-2", func(rec store.Device) bool { return Inventory(rec)["artifact_name"] == "rel-2" })
	}
	rec, err := c.RolloutRecord("good")
	if err != nil {
		t.Fatal(err)
	}
	if p := c.Progress(store.GenerationRef{Rollout: rec.Name, Generation: rec.Generation}); len(p.Phases) == 0 || p.Phases[0].Succeeded != 2 || p.Phases[0].Failed != 0 || p.Aborted != "" {
		t.Errorf("progress of good: %+v", p)
	}

	// (d) the first download was dropped halfway and resumed with Range:
	// the proxy relayed each artifact about once (rel-2 to dev-1 and
	// dev-2, rel-3 to dev-3), not one of them once and a half.
	if !proxy.Cut() {
		t.Errorf("the proxy never dropped a download")
	}
	if r, all := proxy.Relayed(), 2*good.Size+sick.Size; r > all+good.Size/4 {
		t.Errorf("proxy relayed %d bytes for %d bytes of artifacts, one dropped at half: a download started over", r, all)
	}
	t.Logf("(a) dev-1, dev-2: success on B; (d) a download dropped at %d of %d bytes, resumed (%d bytes relayed over %d connections)",
		good.Size/2, good.Size, proxy.Relayed(), proxy.Conns())

	// (b) dev-3 booted rel-3 on B, failed its health check, rebooted back
	// into A and reported failure with its log; the rollout aborted.
	if outcomes["dev-3"] != store.StateFailure {
		t.Errorf("dev-3: outcome %q, want failure", outcomes["dev-3"])
	}
	vars := dev3.BootEnv()
	if dev3.Booted() != "A" || dev3.ArtifactName() != "rel-1" || dev3.Reboots() != 2 || vars["mender_boot_part"] != "2" || vars["upgrade_available"] != "0" {
		t.Errorf("dev-3: booted %s, artifact %s, reboots %d, env %v", dev3.Booted(), dev3.ArtifactName(), dev3.Reboots(), vars)
	}
	if got, want := dev3.PartitionDigest("A", agentImageSize), digest(initial); got != want {
		t.Errorf("dev-3: partition A holds %s, rel-1's image is %s", got, want)
	}
	c.AwaitEvent("rollout.aborted", "sick")
	// The management API shows both rollouts' counts to an operator.
	for name, want := range map[string][3]any{"good": {float64(2), float64(0), false}, "sick": {float64(0), float64(1), true}} {
		var got [3]any
		for deadline := time.Now().Add(Deadline); ; time.Sleep(50 * time.Millisecond) {
			if got = rolloutView(t, c, name); got == want || time.Now().After(deadline) {
				break
			}
		}
		if got != want {
			t.Errorf("management API, rollout %s: succeeded, failed, aborted = %v, want %v", name, got, want)
		}
	}
	c.AwaitLog(`"msg":"device log".*"rollout":"sick".*health check`)
	c.AwaitDevice(dev3.ID(), "still reporting rel-1", func(rec store.Device) bool { return Inventory(rec)["artifact_name"] == "rel-1" })
	t.Logf("(b) dev-3: failure, back on A, rollout sick aborted")

	// (c) rel-4 is signed by a key the controller trusts and the agents do
	// not: dev-3 refuses it before anything reaches partition B or the
	// boot environment.
	bBefore, envBefore := dev3.PartitionDigest("B", -1), dev3.BootEnv()
	reboots := dev3.Reboots()
	files := merge(ArtifactManifest(rogue, "4", "rogue"), RolloutManifest("rogue", rogue.Name, []string{"dev-3"}, false))
	files["rollouts/sick.yaml"] = ""
	sha = env.CommitAndServe(c, files, "roll out rel-4, signed by the rogue key")
	if o := dev3.AwaitOutcome(c, "rogue"); o != store.StateFailure {
		t.Errorf("dev-3: outcome of rogue %q, want failure", o)
	}
	if got := dev3.PartitionDigest("B", -1); got != bBefore {
		t.Errorf("dev-3: partition B changed (%s → %s) for an artifact the agent does not trust", bBefore, got)
	}
	if got := dev3.BootEnv(); !maps.Equal(got, envBefore) {
		t.Errorf("dev-3: boot environment changed: %v → %v", envBefore, got)
	}
	if dev3.Reboots() != reboots || dev3.Booted() != "A" || dev3.ArtifactName() != "rel-1" {
		t.Errorf("dev-3: reboots %d (was %d), booted %s, artifact %s", dev3.Reboots(), reboots, dev3.Booted(), dev3.ArtifactName())
	}
	c.AwaitLog(`"msg":"device log".*"rollout":"rogue".*signature`)
	t.Logf("(c) dev-3 refused rel-4 at %.12s: partition B and boot environment unchanged", sha)

	// Nobody else moved.
	if dev1.ArtifactName() != "rel-2" || dev2.ArtifactName() != "rel-2" {
		t.Errorf("dev-1 %s, dev-2 %s", dev1.ArtifactName(), dev2.ArtifactName())
	}
	for _, d := range devs {
		if err := d.Err(); err != nil {
			t.Errorf("%s: %v", d.Name, err)
		}
	}
}

// powerCutImageSize is the size of the power-cut test's images.
const powerCutImageSize = 2 << 20

// cutStates are the agent states a power cut aims at: download, install,
// reboot, verify and commit, the rollback path and the report.
var cutStates = []agent.StateName{
	agent.StateDownload, agent.StateArtifactInstall, agent.StateArtifactReboot,
	agent.StateArtifactVerifyReboot, agent.StateArtifactCommit, agent.StateCleanup, agent.StateReport,
	agent.StateArtifactRollback, agent.StateArtifactRollbackReboot, agent.StateArtifactVerifyRollbackReboot,
	agent.StateArtifactFailure,
}

// cutPaths are the states a deployment goes through, in order, when its
// image is healthy (true) and when its health check fails (false).
var cutPaths = map[bool][]agent.StateName{
	true: {agent.StateDownload, agent.StateArtifactInstall, agent.StateArtifactReboot,
		agent.StateArtifactVerifyReboot, agent.StateArtifactCommit, agent.StateCleanup, agent.StateReport},
	false: {agent.StateDownload, agent.StateArtifactInstall, agent.StateArtifactReboot,
		agent.StateArtifactVerifyReboot, agent.StateArtifactRollback, agent.StateArtifactRollbackReboot,
		agent.StateArtifactVerifyRollbackReboot, agent.StateArtifactFailure, agent.StateCleanup, agent.StateReport},
}

// cutDevice is one device of the power-cut test and what it should run.
type cutDevice struct {
	*Agent
	rng *rand.Rand

	mu       sync.Mutex
	known    map[string]bool // digests of the images the boot step may boot
	partials int             // boots of an incomplete image (a bug)
	cur      RootfsArtifact  // the committed image
}

func (d *cutDevice) bootable(img []byte) bool {
	ok := len(img) >= powerCutImageSize
	if ok {
		d.mu.Lock()
		ok = d.known[digest(img[:powerCutImageSize])]
		if !ok {
			d.partials++
		}
		d.mu.Unlock()
	}
	return ok
}

// TestAgentPowerCuts cuts the power of simulated devices (SIGKILL to the
// agent's process group) at seeded random points of deployments from the
// real controller, runs the boot step and starts the agent again. Each
// round rolls out a new signed image (every third one fails its health
// check) to three devices; each device is cut one to three times per round,
// each cut aimed at a random agent state (download, install, reboot,
// verify, commit, rollback, report) and landing a random 0-15 ms after the
// state record names it. After every cut the boot step must find a
// complete image (old or new, by digest) and the state record must load
// and name the round's deployment; after every round the controller's
// recorded outcome must match the device: success ⇔ it boots the new
// image and calls itself by its name, failure ⇔ the old one.
//
// GITFLEET_POWERCUTS sets the number of cuts that land inside a
// deployment (default 200, about a minute on two cores; cuts that find the
// agent idle are made and checked too, but not counted),
// GITFLEET_POWERCUT_SEED the seed (default 1).
func TestAgentPowerCuts(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: cuts the power of three agents many times")
	}
	want := 200
	if s := os.Getenv("GITFLEET_POWERCUTS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			t.Fatalf("GITFLEET_POWERCUTS=%q: want a positive number", s)
		}
		want = n
	}
	seed := uint64(1)
	if s := os.Getenv("GITFLEET_POWERCUT_SEED"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("GITFLEET_POWERCUT_SEED=%q: %v", s, err)
		}
		seed = n
	}
	start := time.Now()
	work := t.TempDir()
	storeDir := filepath.Join(work, "artifact-store")
	priv, pub := generateKey(t)
	env, c := agentFleet(t, storeDir, map[string][]byte{"release": pub})

	initial := RootfsArtifact{Name: "pc-000", Image: TestImage("pc-000", powerCutImageSize, true)}
	var devs []*cutDevice
	var names []string
	declare := map[string]string{}
	for i := range 3 {
		d := &cutDevice{rng: rand.New(rand.NewPCG(seed, uint64(i))), cur: initial,
			known: map[string]bool{digest(initial.Image): true}}
		d.Agent = NewAgent(t, c, AgentOptions{
			Name: fmt.Sprintf("pc-dev-%d", i+1), Image: initial.Image, ArtifactName: initial.Name,
			VerifyKeys: [][]byte{pub}, Bootable: d.bootable,
		})
		devs = append(devs, d)
		names = append(names, d.Name)
		maps.Copy(declare, d.Manifest())
	}
	env.CommitAndServe(c, declare, "declare the power-cut devices")
	for _, d := range devs {
		if err := d.Start(); err != nil {
			t.Fatal(err)
		}
	}

	var (
		cuts, rounds, healthyFailures int
		perState                      = map[agent.StateName]int{}
		outcomes                      = map[string]int{}
		prev                          RootfsArtifact
	)
	for round := 1; cuts-perState[""] < want; round++ {
		rounds = round
		healthy := round%3 != 0
		name := fmt.Sprintf("pc-%03d", round)
		a := WriteRootfsArtifact(t, storeDir, name, TestImage(name, powerCutImageSize, healthy), priv)
		for _, d := range devs {
			d.mu.Lock()
			d.known = map[string]bool{digest(d.cur.Image): true, digest(a.Image): true}
			d.mu.Unlock()
		}
		files := merge(ArtifactManifest(a, strconv.Itoa(round), "release"), RolloutManifest(name, a.Name, names, false))
		if prev.Name != "" {
			files["rollouts/"+prev.Name+".yaml"] = ""
			files["artifacts/"+prev.Name+".yaml"] = ""
		}
		env.CommitAndServe(c, files, "power-cut round "+name)
		if prev.Name != "" {
			os.Remove(filepath.Join(storeDir, prev.File))
		}
		prev = a
		rec, err := c.RolloutRecord(name)
		if err != nil {
			t.Fatal(err)
		}
		depID := fmt.Sprintf("%s-g%d", rec.Name, rec.Generation)

		type result struct {
			outcome string
			cutAt   []agent.StateName
			err     error
		}
		results := make([]result, len(devs))
		var wg sync.WaitGroup
		for i, d := range devs {
			wg.Go(func() {
				r := &results[i]
				for range 1 + d.rng.IntN(3) {
					state, err := d.cut(c, name, depID, healthy)
					r.cutAt = append(r.cutAt, state)
					if err != nil {
						r.err = err
						return
					}
				}
				r.outcome, r.err = d.awaitOutcome(c, name)
			})
		}
		wg.Wait()
		for i, d := range devs {
			r := results[i]
			cuts += len(r.cutAt)
			for _, s := range r.cutAt {
				perState[s]++
			}
			if r.err != nil {
				t.Fatalf("round %s, %s (cuts at %v): %v", name, d.Name, r.cutAt, r.err)
			}
			outcomes[r.outcome]++
			if err := d.check(a, r.outcome, healthy); err != nil {
				t.Fatalf("round %s, %s (cuts at %v): %v", name, d.Name, r.cutAt, err)
			}
			if healthy && r.outcome == store.StateFailure {
				healthyFailures++
			}
		}
	}
	for _, d := range devs {
		if d.partials > 0 {
			t.Errorf("%s: the boot step met an incomplete image %d times", d.Name, d.partials)
		}
	}
	var states []string
	for _, s := range cutStates {
		states = append(states, fmt.Sprintf("%s %d", s, perState[s]))
	}
	if n := perState[""]; n > 0 {
		states = append(states, fmt.Sprintf("idle %d", n))
	}
	t.Logf("seed %d: %d power cuts (%d inside a deployment) over %d rounds × %d devices in %s; outcomes: %d success, %d failure (%d of them healthy images rolled back after a cut); 0 partial boots; cuts by state: %v",
		seed, cuts, cuts-perState[""], rounds, len(devs), time.Since(start).Round(time.Second), outcomes[store.StateSuccess], outcomes[store.StateFailure], healthyFailures, states)
}

// cut waits until the agent's state record names a randomly chosen state
// of deployment depID (or the deployment is over), lets 0-15 ms pass,
// cuts the power, and checks what the boot step and the state record
// find. It returns the state the cut landed in ("" when idle).
func (d *cutDevice) cut(c *Controller, rollout, depID string, healthy bool) (agent.StateName, error) {
	path := cutPaths[healthy]
	target := d.rng.IntN(len(path))
	delay := time.Duration(d.rng.IntN(15)) * time.Millisecond
	deadline := time.Now().Add(Deadline)
	var at agent.StateName
	var asked time.Time
	for {
		rec, _ := d.Record()
		if rec != nil && rec.Deployment.ID == depID {
			// At the target, or past it (a state already left): cut.
			if i := slices.Index(path, rec.State); i >= target || (i < 0 && rec.State != "") {
				break
			}
		}
		if rec == nil && time.Since(asked) > 50*time.Millisecond {
			asked = time.Now()
			if o, _ := d.Outcome(c, rollout); o == store.StateSuccess || o == store.StateFailure {
				break // over: the cut lands on an idle agent
			}
		}
		if err := d.Err(); err != nil {
			return "", fmt.Errorf("agent exited: %v", err)
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("no state %s of %s within %s (record %+v)", path[target], depID, Deadline, rec)
		}
		time.Sleep(time.Millisecond)
	}
	time.Sleep(delay)
	if rec, _ := d.Record(); rec != nil {
		at = rec.State
	}
	if err := d.Kill(); err != nil {
		return at, fmt.Errorf("kill: %v", err)
	}
	if _, err := d.Boot(); err != nil {
		return at, fmt.Errorf("boot after a cut in %s: %v", at, err)
	}
	d.mu.Lock()
	partials := d.partials
	d.mu.Unlock()
	if partials > 0 {
		return at, fmt.Errorf("after a cut in %s the boot step met an incomplete image", at)
	}
	rec, err := d.Record()
	if err != nil {
		return at, fmt.Errorf("state record after a cut in %s: %v", at, err)
	}
	if rec != nil {
		switch {
		case rec.Deployment.ID != depID:
			return at, fmt.Errorf("state record after a cut in %s names deployment %q, not %q", at, rec.Deployment.ID, depID)
		case !slices.Contains(cutStates, rec.State) && rec.State != agent.StateName(""):
			return at, fmt.Errorf("state record after a cut in %s is in state %q", at, rec.State)
		case rec.Committed && rec.Status == store.StateFailure:
			return at, fmt.Errorf("state record after a cut in %s: committed, yet failure", at)
		}
	}
	if err := d.Start(); err != nil {
		return at, err
	}
	return at, nil
}

// check compares the device with the controller's outcome of a round
// that rolled out a.
func (d *cutDevice) check(a RootfsArtifact, outcome string, healthy bool) error {
	want := d.cur
	switch outcome {
	case store.StateSuccess:
		if !healthy {
			return errors.New("an image whose health check fails was reported a success")
		}
		want = a
	case store.StateFailure:
	default:
		return fmt.Errorf("outcome %q", outcome)
	}
	booted := d.Booted()
	img, err := d.Image()
	if err != nil {
		return err
	}
	vars, err := d.Env().Get(d.t.Context())
	if err != nil {
		return err
	}
	switch {
	case len(img) < powerCutImageSize || digest(img[:powerCutImageSize]) != digest(want.Image):
		return fmt.Errorf("controller says %s, but partition %s does not hold %s", outcome, booted, want.Name)
	case d.ArtifactName() != want.Name:
		return fmt.Errorf("controller says %s, but the device calls itself %s, not %s", outcome, d.ArtifactName(), want.Name)
	case vars["upgrade_available"] != "0":
		return fmt.Errorf("controller says %s, but the boot environment still tries an upgrade: %v", outcome, vars)
	}
	d.cur = want
	return nil
}
