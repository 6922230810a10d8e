package e2e

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/gitfleet/gitfleet/controller/store"
)

// menderFleet is the seed fleet of TestStockMender: the signing key and
// nothing else. Devices, artifacts and rollouts arrive by commits.
func menderFleet(t *testing.T, pubPEM []byte) string {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "keys", "release.yaml"), []byte(`apiVersion: gitfleet.io/v1
kind: SigningKey
metadata:
  name: release
spec:
  algorithm: ecdsa-p256
  publicKey: |
`+indent(string(pubPEM), "    ")), 0o644)
	return dir
}

// menderDevice is the Device manifest that accepts the test client: its
// identity and its key's fingerprint.
func menderDevice(name string, m *Mender, fingerprint string) map[string]string {
	var ident strings.Builder
	for _, k := range slices.Sorted(maps.Keys(m.Identity)) {
		fmt.Fprintf(&ident, "    %s: %q\n", k, m.Identity[k])
	}
	return map[string]string{"devices/" + name + ".yaml": fmt.Sprintf(`apiVersion: gitfleet.io/v1
kind: Device
metadata:
  name: %s
spec:
  identity:
%s  publicKeySHA256: %s
  deviceType: %s
`, name, ident.String(), fingerprint, MenderDeviceType)}
}

// menderRollout declares an artifact (in the artifact store, pinned by its
// sha256, signed by the release key) and a one-phase rollout of it to one
// device, aborted by its first failure.
func menderRollout(rollout, device string, a MenderArtifact, version string) map[string]string {
	return map[string]string{
		"artifacts/" + a.Name + ".yaml": fmt.Sprintf(`apiVersion: gitfleet.io/v1
kind: Artifact
metadata:
  name: %[1]s
spec:
  source: %[1]s.mender
  sha256: %[2]s
  artifactName: %[1]s
  version: %[3]q
  deviceTypes: [%[4]s]
  signedBy: [release]
  minSignatures: 1
`, a.Name, a.SHA256, version, MenderDeviceType),
		"rollouts/" + rollout + ".yaml": fmt.Sprintf(`apiVersion: gitfleet.io/v1
kind: Rollout
metadata:
  name: %s
spec:
  artifact: %s
  target:
    devices: [%s]
  phases:
    - name: all
      percent: 100
      abort:
        maxFailures: 0
`, rollout, a.Name, device),
	}
}

// TestStockMender is the stock client's story against the real binary:
// Debian's mender 3.4 daemon, configured only through its own files, shows
// up pending; a commit accepts it; a commit rolls out a module-image
// artifact built and signed by mender-artifact, which the client
// downloads, installs through an update module and reports as a success;
// a later rollout whose artifact fails to install ends as a failure and
// aborts, and the device keeps the artifact it had.
func TestStockMender(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: runs the stock Mender client")
	}
	RequireMender(t)
	guard := hostMenderDirs(t)

	work := t.TempDir()
	key, pub := GenerateSigningKey(t, filepath.Join(work, "keys", "release"))
	storeDir := filepath.Join(work, "artifact-store")
	good := WriteMenderArtifact(t, storeDir, MenderArtifactSpec{
		Name: "hello-1", Module: MenderModuleOK, Key: key,
		Files: map[string]string{"hello.txt": "hello from gitfleet 1\n"},
	})
	bad := WriteMenderArtifact(t, storeDir, MenderArtifactSpec{
		Name: "hello-2", Module: MenderModuleFail, Key: key,
		Files: map[string]string{"hello.txt": "hello from gitfleet 2\n"},
	})

	env := newEnv(t, menderFleet(t, pub))
	seed := env.Repo.Head()
	c := env.StartController("a", menderServeFlags(storeDir)...)
	c.AwaitServing(seed)
	if ok, code := c.DeviceAPIServed(); !ok {
		t.Skipf("gitfleet serve does not serve the device API yet (POST auth_requests: HTTP %d)", code)
	}

	// The client starts with nothing but its config: it makes a key,
	// asks to be admitted, and is listed pending.
	m := StartMender(t, c.URL(), c.CertPEM(), MenderOptions{VerifyKey: pub})
	pending := c.AwaitPending(m.ID())
	if pending.Status != store.DevicePending || pending.KeyFingerprint == "" {
		t.Fatalf("pending record %+v", pending)
	}
	if fp := m.KeyFingerprint(); pending.KeyFingerprint != fp {
		t.Fatalf("pending key fingerprint %s, the client's key is %s", pending.KeyFingerprint, fp)
	}
	m.AwaitLog(`authentication request rejected`)
	t.Logf("pending: device %s, key %.16s…", pending.ID, pending.KeyFingerprint)

	// A commit accepts it: it authenticates and reports its inventory.
	sha := env.Commit(menderDevice("mender-1", m, pending.KeyFingerprint), "accept mender-1")
	env.Push(c, sha, false)
	c.AwaitServing(sha)
	c.AwaitDevice(m.ID(), "accepted with its inventory", func(d store.Device) bool {
		inv := Inventory(d)
		return d.Status == store.DeviceAccepted && inv["artifact_name"] == "factory" &&
			inv["device_type"] == MenderDeviceType && inv["os"] == "gitfleet-test"
	})
	t.Logf("accepted at %.12s", sha)

	// A commit rolls out hello-1: the client downloads it, checks its
	// signature, installs it through the update module and reports success.
	sha = env.Commit(menderRollout("hello", "mender-1", good, "1"), "roll out hello-1")
	env.Push(c, sha, false)
	c.AwaitServing(sha)
	m.AwaitInstalled("hello.txt", "hello from gitfleet 1\n")
	g := c.AwaitDeployment("hello", "mender-1", store.StateSuccess)
	if p := c.Progress(g); len(p.Phases) == 0 || p.Phases[0].Succeeded != 1 || p.Phases[0].Failed != 0 || p.Aborted != "" {
		t.Fatalf("progress of %s after the success: %+v", g, p)
	}
	c.AwaitDevice(m.ID(), "reporting hello-1", func(d store.Device) bool { return Inventory(d)["artifact_name"] == "hello-1" })
	if states := m.ModuleStates(); !slices.Contains(states, "ArtifactInstall") || !slices.Contains(states, "ArtifactCommit") {
		t.Fatalf("update module calls %v: no install and commit", states)
	}
	t.Logf("%s: success; update module calls %v", g, m.ModuleStates())

	// A later rollout of hello-2, whose update module fails to install:
	// the client reports failure and its log, rolls back, and the rollout
	// aborts at its first failure.
	files := menderRollout("hello-2", "mender-1", bad, "2")
	files["rollouts/hello.yaml"] = "" // the first rollout is done
	sha = env.Commit(files, "roll out hello-2")
	env.Push(c, sha, false)
	c.AwaitServing(sha)
	m.Await("hello-2's install failing", func() bool { return slices.Contains(m.ModuleStates(), "fail:ArtifactInstall") })
	g2 := c.AwaitDeployment("hello-2", "mender-1", store.StateFailure)
	c.AwaitEvent("rollout.aborted", "hello-2")
	if p := c.Progress(g2); len(p.Phases) == 0 || p.Phases[0].Failed != 1 || p.Aborted == "" {
		t.Fatalf("progress of %s after the failure: %+v", g2, p)
	}
	// The management API shows the same to an operator.
	ros, err := c.Rollouts()
	if err != nil {
		t.Fatal(err)
	}
	var shown map[string]any
	for _, r := range ros {
		if r["name"] == "hello-2" {
			shown = r
		}
	}
	if phases, _ := shown["phases"].([]any); shown == nil || shown["aborted"] == "" || len(phases) == 0 || phases[0].(map[string]any)["failed"] != float64(1) {
		t.Fatalf("management API rollout view: %v", shown)
	}
	// Its deployment log reached the controller, update module's words
	// included.
	c.AwaitLog(`"msg":"device log".*"rollout":"hello-2".*refusing to install, as the test asks`)
	if states := m.ModuleStates(); !slices.Contains(states, "fail:ArtifactRollback") {
		t.Errorf("update module calls %v: no rollback after the failed install", states)
	}
	if got, _ := m.Installed("hello.txt"); got != "hello from gitfleet 1\n" {
		t.Errorf("after the failed rollout hello.txt is %q", got)
	}
	// The client stays on hello-1.
	c.AwaitDevice(m.ID(), "still reporting hello-1", func(d store.Device) bool { return Inventory(d)["artifact_name"] == "hello-1" })
	t.Logf("%s: failure, aborted (%s); update module calls %v", g2, c.Progress(g2).Aborted, m.ModuleStates())

	m.Stop()
	guard()
}

// menderServeFlags are the serve flags that point the controller at the
// artifact store.
func menderServeFlags(storeDir string) []string {
	return []string{"--artifact-store", storeDir}
}

// hostMenderDirs records the machine's own Mender directories and returns
// a check that they are unchanged: the namespace must keep tests out.
func hostMenderDirs(t *testing.T) func() {
	t.Helper()
	list := func() string {
		var b strings.Builder
		for _, root := range []string{"/etc/mender", "/usr/share/mender", "/var/lib/mender/"} {
			filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
				if err != nil {
					return nil
				}
				fmt.Fprintf(&b, "%s %d %s\n", p, fi.Size(), fi.ModTime())
				return nil
			})
		}
		return b.String()
	}
	before := list()
	return func() {
		t.Helper()
		if after := list(); after != before {
			t.Errorf("the machine's own Mender directories changed:\nbefore:\n%s\nafter:\n%s", before, after)
		}
	}
}
