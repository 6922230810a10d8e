package sim_test

// Attacks on the device agent, run against the real gitfleet-agent binary
// on a simulated device. Each case reads as "attack → expected refusal".

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/artifact"
	"github.com/gitfleet/gitfleet/artifact/artifacttest"
	"github.com/gitfleet/gitfleet/device/sim"
)

// scriptModule is an update module "script": ArtifactInstall runs every
// payload file with sh.
const scriptModule = `#!/bin/sh
case "$1" in
ArtifactInstall) for f in "$2"/files/*; do sh "$f" || exit 1; done ;;
NeedsArtifactReboot) echo No ;;
SupportsRollback) echo No ;;
esac
exit 0
`

type keyPair struct {
	signer  *artifact.Signer
	pubPath string
}

func newKeyPair(t *testing.T) keyPair {
	t.Helper()
	priv, pub, err := artifact.GenerateKey(artifact.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	s, err := artifact.LoadSigner(priv)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "artifact.pub")
	if err := os.WriteFile(p, pub, 0o644); err != nil {
		t.Fatal(err)
	}
	return keyPair{s, p}
}

// scriptDevice is a simulated device with the script module, trusting the
// given artifact keys (none: unsigned artifacts are accepted).
func scriptDevice(t *testing.T, mod func(*sim.Options), keys ...string) *sim.Device {
	t.Helper()
	dir := t.TempDir()
	opts := sim.Options{AgentBinary: agentBinary, ArtifactName: "release-1", ArtifactVerifyKeys: keys}
	if mod != nil {
		mod(&opts)
	}
	d, err := sim.New(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "modules", "script"), []byte(scriptModule), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Boot(); err != nil {
		t.Fatal(err)
	}
	return d
}

// scriptArtifact writes a script artifact whose signed run.sh touches
// DIR/signed-ran (or runs body instead, when given) and, with evil, whose
// evil.sh, listed only in manifest-augment, touches DIR/pwned.
func scriptArtifact(t *testing.T, d *sim.Device, name string, signer *artifact.Signer, evil bool, body string) string {
	t.Helper()
	if body == "" {
		body = fmt.Sprintf("touch %q\n", filepath.Join(d.Dir(), "signed-ran"))
	}
	o := artifacttest.AugmentedOptions{
		Name: name, Signer: signer,
		Signed: map[string][]byte{"run.sh": []byte("#!/bin/sh\n" + body)},
	}
	if evil {
		o.Augmented = map[string][]byte{"evil.sh": fmt.Appendf(nil, "#!/bin/sh\ntouch %q\n", filepath.Join(d.Dir(), "pwned"))}
	}
	data, err := artifacttest.Augmented(o)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), name+".mender")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// cmdCtx bounds one agent command.
func cmdCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func exists(d *sim.Device, name string) bool {
	_, err := os.Stat(filepath.Join(d.Dir(), name))
	return err == nil
}

// lastLine is the last non-empty line of out.
func lastLine(out string) string {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	return lines[len(lines)-1]
}

// TestAttackAugmentedFiles: a signed artifact whose extra file is listed
// only in the unsigned manifest-augment never reaches the update module of
// an agent that requires signatures.
func TestAttackAugmentedFiles(t *testing.T) {
	k := newKeyPair(t)
	d := scriptDevice(t, nil, k.pubPath)
	art := scriptArtifact(t, d, "release-2", k.signer, true, "")
	out, code, err := d.RunCommand(cmdCtx(t), "install", art)
	if err != nil {
		t.Fatal(err)
	}
	if code != 1 || !strings.Contains(lastLine(out), "augmented content is not covered by the signature") {
		t.Fatalf("install of a signed script artifact + file listed only in manifest-augment: exit %d, want 1 refusing augmented content\n%s", code, out)
	}
	if exists(d, "pwned") || exists(d, "signed-ran") {
		t.Fatal("the module ran")
	}
	if got := d.ArtifactName(); got != "release-1" {
		t.Fatalf("show-artifact says %s", got)
	}
}

// TestAugmentedWithoutKeyRunsAsBefore: without ArtifactVerifyKeys the agent
// installs augmented artifacts as the Mender client does (and the module of
// these tests does run every file it is given).
func TestAugmentedWithoutKeyRunsAsBefore(t *testing.T) {
	d := scriptDevice(t, nil)
	art := scriptArtifact(t, d, "release-2", nil, true, "")
	out, code, err := d.RunCommand(cmdCtx(t), "install", art)
	if err != nil || code != 0 {
		t.Fatalf("install: exit %d, %v\n%s", code, err, out)
	}
	if !exists(d, "pwned") || !exists(d, "signed-ran") {
		t.Fatal("the module did not run both files")
	}
}

// TestAttackStandaloneInstall: gitfleet-agent install exits 1 with a
// one-line reason on stderr whenever the artifact is refused or its
// install fails; 0 only when it installed.
func TestAttackStandaloneInstall(t *testing.T) {
	trusted, untrusted := newKeyPair(t), newKeyPair(t)
	for _, tc := range []struct {
		name string
		art  func(t *testing.T, d *sim.Device) string
		says string
	}{
		{"tampered payload → exit 1, digest mismatch", func(t *testing.T, d *sim.Device) string {
			p := scriptArtifact(t, d, "release-2", trusted.signer, false, "")
			b, _ := os.ReadFile(p)
			i := bytes.Index(b, []byte("signed-ran"))
			b[i] = 'S'
			os.WriteFile(p, b, 0o644)
			return p
		}, "digest mismatch"},
		{"unsigned artifact where a key is configured → exit 1, signature missing", func(t *testing.T, d *sim.Device) string {
			return scriptArtifact(t, d, "release-2", nil, false, "")
		}, "signature missing"},
		{"artifact signed by an untrusted key → exit 1, signature does not verify", func(t *testing.T, d *sim.Device) string {
			return scriptArtifact(t, d, "release-2", untrusted.signer, false, "")
		}, "signature does not verify"},
		{"artifact whose update module fails → exit 1, update failed", func(t *testing.T, d *sim.Device) string {
			return scriptArtifact(t, d, "release-2", trusted.signer, false, "exit 3\n")
		}, "ArtifactInstall"},
		{"a file that is not an artifact → exit 1", func(t *testing.T, d *sim.Device) string {
			p := filepath.Join(t.TempDir(), "junk.mender")
			os.WriteFile(p, bytes.Repeat([]byte("junk"), 1000), 0o644)
			return p
		}, "artifact"},
		{"a file that does not exist → exit 1", func(t *testing.T, d *sim.Device) string {
			return filepath.Join(t.TempDir(), "missing.mender")
		}, "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := scriptDevice(t, nil, trusted.pubPath)
			out, code, err := d.RunCommand(cmdCtx(t), "install", tc.art(t, d))
			if err != nil {
				t.Fatal(err)
			}
			last := lastLine(out)
			if code != 1 || !strings.HasPrefix(last, "gitfleet-agent: ") || !strings.Contains(last, tc.says) {
				t.Fatalf("exit %d, last line %q; want exit 1 and a line saying %q\n%s", code, last, tc.says, out)
			}
			if got := d.ArtifactName(); got != "release-1" {
				t.Errorf("show-artifact says %s", got)
			}
			if rec, _ := d.Record(); rec != nil {
				t.Errorf("record left in %s", rec.State)
			}
		})
	}
	t.Run("good artifact → exit 0, then commit → exit 0", func(t *testing.T) {
		d := scriptDevice(t, nil, trusted.pubPath)
		art := scriptArtifact(t, d, "release-2", trusted.signer, false, "")
		for _, args := range [][]string{{"install", art}, {"commit"}} {
			if out, code, err := d.RunCommand(cmdCtx(t), args...); err != nil || code != 0 {
				t.Fatalf("%v: exit %d, %v\n%s", args, code, err, out)
			}
		}
		if got := d.ArtifactName(); got != "release-2" {
			t.Errorf("show-artifact says %s", got)
		}
	})
	for _, tc := range []struct {
		name string
		args []string
		code int
	}{
		{"commit with nothing in progress → exit 1", []string{"commit"}, 1},
		{"rollback with nothing in progress → exit 1", []string{"rollback"}, 1},
		{"unknown command → exit 2", []string{"frobnicate"}, 2},
		{"install without a file → exit 2", []string{"install"}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := scriptDevice(t, nil, trusted.pubPath)
			out, code, err := d.RunCommand(cmdCtx(t), tc.args...)
			if err != nil || code != tc.code {
				t.Fatalf("exit %d, %v; want %d\n%s", code, err, tc.code, out)
			}
		})
	}
}

// TestAttackServerSentSources: a deployment whose source is not an https
// URL is refused before anything is read, and the failure is reported to
// the server; check-update exits 1.
func TestAttackServerSentSources(t *testing.T) {
	k := newKeyPair(t)
	for _, tc := range []struct {
		name string
		uri  func(local string) string
	}{
		{"uri is a local path to a valid signed artifact → refused, failure reported", func(local string) string { return local }},
		{"uri is file:// → refused, failure reported", func(local string) string { return "file://" + local }},
		{"uri is plain http without AllowHTTPDownloads → refused, failure reported", func(string) string { return "http://127.0.0.1:1/a.mender" }},
		{"uri is scheme-relative //host/path → refused, failure reported", func(string) string { return "//127.0.0.1/a.mender" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newMenderServer(t)
			d := scriptDevice(t, func(o *sim.Options) {
				o.ServerURL, o.ServerCertificate = srv.srv.URL, srv.certFile(t.TempDir())
			}, k.pubPath)
			local := scriptArtifact(t, d, "release-2", k.signer, false, "")
			srv.deploy("dep", "release-2", nil)
			srv.uri = tc.uri(local)
			out, code, err := d.RunCommand(cmdCtx(t), "check-update")
			if err != nil {
				t.Fatal(err)
			}
			if code != 1 || !strings.Contains(lastLine(out), "downloads deployments only from https URLs") {
				t.Fatalf("check-update: exit %d; want 1 refusing the source\n%s", code, out)
			}
			if exists(d, "signed-ran") || d.ArtifactName() != "release-1" {
				t.Fatal("installed from the refused source")
			}
			srv.mu.Lock()
			defer srv.mu.Unlock()
			if !srv.done("dep") || !slicesContains(srv.statuses["dep"], "failure") {
				t.Fatalf("statuses %v, want failure reported", srv.statuses["dep"])
			}
			if !strings.Contains(fmt.Sprint(srv.logs["dep"]), "only from https") {
				t.Errorf("deployment log %v does not say why", srv.logs["dep"])
			}
		})
	}
}

func slicesContains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
