package e2e

import (
	"maps"
	"path/filepath"
	"sync"
	"testing"

	"github.com/gitfleet/gitfleet/artifact"
	"github.com/gitfleet/gitfleet/controller/store"
)

// agentImageSize is the size of the test images (partitions are 4 MiB).
const agentImageSize = 3 << 20

// agentFleet starts a Redis, a fleet repository holding the signing keys,
// and a controller serving artifacts from storeDir.
func agentFleet(t *testing.T, storeDir string, keys map[string][]byte) (*Env, *Controller) {
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
	c := env.StartController("a", "--artifact-store", storeDir)
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
	env, c := agentFleet(t, storeDir, map[string][]byte{"release": releasePub, "rogue": roguePub})

	initial := TestImage("rel-1", agentImageSize, true)
	good := WriteRootfsArtifact(t, storeDir, "rel-2", TestImage("rel-2", agentImageSize, true), releasePriv)
	sick := WriteRootfsArtifact(t, storeDir, "rel-3", TestImage("rel-3", agentImageSize, false), releasePriv)
	rogue := WriteRootfsArtifact(t, storeDir, "rel-4", TestImage("rel-4", agentImageSize, true), roguePriv)

	// dev-2 reaches the controller through a proxy that drops the first
	// connection to carry half the artifact.
	proxy := StartCutProxy(t, c.Addr, good.Size/2)
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
			o := x.d.AwaitOutcome(c, x.rollout)
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

	// (d) dev-2's download was dropped halfway and resumed with Range: the
	// proxy relayed the artifact about once, not once and a half.
	if !proxy.Cut() {
		t.Errorf("the proxy never dropped dev-2's download")
	}
	if r := proxy.Relayed(); r > good.Size+good.Size/4 {
		t.Errorf("proxy relayed %d bytes for a %d-byte artifact dropped at half: the download started over", r, good.Size)
	}
	t.Logf("(a) dev-1, dev-2: success on B; (d) dev-2's download dropped at %d of %d bytes, resumed (%d bytes relayed over %d connections)",
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
