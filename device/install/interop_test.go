package install

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/gitfleet/gitfleet/artifact"
)

// Mender's own update modules, as Debian's mender-client ships them, run
// unchanged on artifacts made by mender-artifact.
const menderModules = "/usr/share/mender/modules/v3"

// need skips the test when a tool is missing, or fails it under CI.
func need(t *testing.T, paths ...string) {
	t.Helper()
	for _, p := range paths {
		if _, err := exec.LookPath(p); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is not installed (Debian: mender-artifact, mender-client)", p)
			}
			t.Skipf("%s is not installed", p)
		}
	}
}

// menderArtifact runs mender-artifact write module-image with files from
// dir and returns the artifact's bytes.
func menderArtifact(t *testing.T, dir, typ string, files []string, extra ...string) []byte {
	t.Helper()
	out := filepath.Join(t.TempDir(), "a.mender")
	args := []string{"write", "module-image", "-T", typ, "-n", "interop-1", "-t", "test-board", "-o", out}
	for _, f := range files {
		args = append(args, "-f", filepath.Join(dir, f))
	}
	args = append(args, extra...)
	cmd := exec.Command("mender-artifact", args...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mender-artifact: %v\n%s", err, b)
	}
	return readFile(t, out)
}

func write(t *testing.T, path string, data []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
}

// runModule downloads payload 0 through the stock module and returns it.
func stockModule(t *testing.T, data []byte, verifiers ...*artifact.Verifier) *Module {
	t.Helper()
	ar, err := artifact.NewReader(bytes.NewReader(data), artifact.ReaderOptions{Verifiers: verifiers})
	if err != nil {
		t.Fatal(err)
	}
	m, err := NewModule(ModuleOptions{Dir: menderModules, WorkDir: t.TempDir(), ArtifactName: "interop-0", DeviceType: "test-board"},
		Payload{Header: ar.Header(), Index: 0})
	if err != nil {
		t.Fatal(err)
	}
	if err := DownloadAll(context.Background(), ar, []Installer{m}); err != nil {
		t.Fatalf("Download: %v", err)
	}
	return m
}

func checkQueries(t *testing.T, m *Module, wantReboot Reboot, wantRollback bool) {
	t.Helper()
	ctx := context.Background()
	if r, err := m.NeedsArtifactReboot(ctx); err != nil || r != wantReboot {
		t.Errorf("NeedsArtifactReboot: %v %v", r, err)
	}
	if ok, err := m.SupportsRollback(ctx); err != nil || ok != wantRollback {
		t.Errorf("SupportsRollback: %v %v", ok, err)
	}
}

func TestMenderSingleFileModule(t *testing.T) {
	need(t, "mender-artifact", filepath.Join(menderModules, "single-file"))
	ctx := context.Background()
	src, dest := t.TempDir(), t.TempDir()
	write(t, filepath.Join(src, "app.conf"), []byte("version=2\n"), 0o644)
	write(t, filepath.Join(src, "dest_dir"), []byte(dest), 0o644)
	write(t, filepath.Join(src, "filename"), []byte("app.conf"), 0o644)
	write(t, filepath.Join(src, "permissions"), []byte("640"), 0o644)
	write(t, filepath.Join(dest, "app.conf"), []byte("version=1\n"), 0o644)

	// Signed by mender-artifact with a key Gitfleet made, verified here.
	priv, pub, err := artifact.GenerateKey(artifact.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	keyPath := filepath.Join(t.TempDir(), "key.pem")
	write(t, keyPath, priv, 0o600)
	verifier, err := artifact.LoadVerifier(pub)
	if err != nil {
		t.Fatal(err)
	}
	data := menderArtifact(t, src, "single-file", []string{"app.conf", "dest_dir", "filename", "permissions"}, "-k", keyPath)

	m := stockModule(t, data, verifier)
	checkQueries(t, m, RebootNo, true)
	if err := m.ArtifactInstall(ctx); err != nil {
		t.Fatal(err)
	}
	if got := string(readFile(t, filepath.Join(dest, "app.conf"))); got != "version=2\n" {
		t.Fatalf("installed %q", got)
	}
	if fi, _ := os.Stat(filepath.Join(dest, "app.conf")); fi.Mode().Perm() != 0o640 {
		t.Errorf("mode %v", fi.Mode())
	}
	// Roll back: the module restores its backup; twice is the same.
	for range 2 {
		if err := m.ArtifactRollback(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if got := string(readFile(t, filepath.Join(dest, "app.conf"))); got != "version=1\n" {
		t.Fatalf("after rollback %q", got)
	}
	for _, st := range []func(context.Context) error{m.ArtifactFailure, m.Cleanup, m.Cleanup} {
		if err := st(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(m.Tree()); !os.IsNotExist(err) {
		t.Errorf("tree after Cleanup: %v", err)
	}
}

func TestMenderScriptModule(t *testing.T) {
	need(t, "mender-artifact", filepath.Join(menderModules, "script"))
	ctx := context.Background()
	src, out := t.TempDir(), t.TempDir()
	write(t, filepath.Join(src, "migrate.sh"), []byte("#!/bin/sh\necho migrated > "+filepath.Join(out, "done")+"\n"), 0o644)
	data := menderArtifact(t, src, "script", []string{"migrate.sh"}, "--compression", "lzma")
	m := stockModule(t, data)
	checkQueries(t, m, RebootNo, false) // the module answers nothing: No
	if err := m.ArtifactInstall(ctx); err != nil {
		t.Fatal(err)
	}
	if got := string(readFile(t, filepath.Join(out, "done"))); got != "migrated\n" {
		t.Fatalf("script output %q", got)
	}
	if err := m.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestMenderDirectoryModule(t *testing.T) {
	need(t, "mender-artifact", "tar", filepath.Join(menderModules, "directory"))
	ctx := context.Background()
	src, content, dest := t.TempDir(), t.TempDir(), filepath.Join(t.TempDir(), "www")
	write(t, filepath.Join(content, "index.html"), []byte("<h1>v2</h1>\n"), 0o644)
	if b, err := exec.Command("tar", "-cf", filepath.Join(src, "update.tar"), "-C", content, ".").CombinedOutput(); err != nil {
		t.Fatalf("tar: %v %s", err, b)
	}
	write(t, filepath.Join(src, "dest_dir"), []byte(dest), 0o644)
	if err := os.MkdirAll(dest, 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(dest, "index.html"), []byte("<h1>v1</h1>\n"), 0o644)
	m := stockModule(t, menderArtifact(t, src, "directory", []string{"update.tar", "dest_dir"}))
	checkQueries(t, m, RebootNo, true)
	if err := m.ArtifactInstall(ctx); err != nil {
		t.Fatal(err)
	}
	if got := string(readFile(t, filepath.Join(dest, "index.html"))); got != "<h1>v2</h1>\n" {
		t.Fatalf("installed %q", got)
	}
	if err := m.ArtifactRollback(ctx); err != nil {
		t.Fatal(err)
	}
	if got := string(readFile(t, filepath.Join(dest, "index.html"))); got != "<h1>v1</h1>\n" {
		t.Fatalf("after rollback %q", got)
	}
	if err := m.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
}
