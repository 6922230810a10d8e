package schema

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
)

const validArtifact = `apiVersion: gitfleet.io/v1
kind: Artifact
metadata: {name: a}
spec: {source: a.mender, deviceTypes: [pi]}
`

// TestBadFiles checks that files Load must not read are reported by name
// and nothing outside the tree is read.
func TestBadFiles(t *testing.T) {
	dir := t.TempDir()
	outside := filepath.Join(t.TempDir(), "secret.yaml")
	write := func(name, data string) {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("ok.yaml", validArtifact)
	write("binary.yaml", "apiVersion: gitfleet.io/v1\n\x00\x01\x02")
	write("latin1.yml", "kind: Rollout\nname: \xe9\n")
	write("huge.yaml", "# "+strings.Repeat("x", MaxFileSize)+"\n")
	write("many.yaml", strings.Repeat(validArtifact+"---\n", MaxDocuments+1))
	if err := os.WriteFile(outside, []byte(validArtifact), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(dir, "link.yaml")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Dir(outside), filepath.Join(dir, "linkdir")); err != nil {
		t.Fatal(err)
	}
	write("keys/k.yaml", `apiVersion: gitfleet.io/v1
kind: SigningKey
metadata: {name: k}
spec: {algorithm: ed25519, publicKeyFile: linkdir/secret.yaml}
---
apiVersion: gitfleet.io/v1
kind: SigningKey
metadata: {name: k2}
spec: {algorithm: ed25519, publicKeyFile: ../secret.yaml}
`)

	_, err := Load(os.DirFS(dir))
	var es Errors
	if !errors.As(err, &es) {
		t.Fatalf("Load: %v, want Errors", err)
	}
	got := err.Error()
	for _, want := range []string{
		"binary.yaml: not a text file",
		"latin1.yml: not a text file",
		"huge.yaml: file is ",
		"many.yaml: more than 1000 documents in one file",
		"link.yaml: manifest is a symbolic link",
		`spec.publicKeyFile: linkdir is a symbolic link`,
		`spec.publicKeyFile: "../secret.yaml": want a clean relative path`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("errors lack %q; got:\n%s", want, got)
		}
	}
	if strings.Contains(got, "ok.yaml") {
		t.Errorf("valid file reported:\n%s", got)
	}
}

func TestLoadEmpty(t *testing.T) {
	f, err := Load(fstest.MapFS{"README.md": {Data: []byte("# fleet")}})
	if err != nil || f.Len() != 0 {
		t.Fatalf("Load(empty) = %d manifests, %v; want 0, nil", f.Len(), err)
	}
}

func TestErrorString(t *testing.T) {
	for _, tc := range []struct {
		e    Error
		want string
	}{
		{Error{File: "a.yaml", Line: 3, Col: 4, Path: "spec.x", Msg: "bad"}, "a.yaml:3:4: spec.x: bad"},
		{Error{File: "a.yaml", Line: 3, Msg: "bad"}, "a.yaml:3: bad"},
		{Error{File: "a.yaml", Msg: "bad"}, "a.yaml: bad"},
		{Error{Msg: "bad"}, "bad"},
	} {
		if got := tc.e.Error(); got != tc.want {
			t.Errorf("Error() = %q, want %q", got, tc.want)
		}
	}
}
