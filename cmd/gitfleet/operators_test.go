package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestOperatorsToken: the token written and the hash printed belong
// together, the file is private, an existing file is kept unless
// --force, and two tokens differ.
func TestOperatorsToken(t *testing.T) {
	dir := t.TempDir()
	run := func(args ...string) (string, string, error) {
		var stdout, stderr bytes.Buffer
		cmd := newRootCmd()
		cmd.SetArgs(append([]string{"operators", "token"}, args...))
		cmd.SetOut(&stdout)
		cmd.SetErr(&stderr)
		err := cmd.ExecuteContext(context.Background())
		return stdout.String(), stderr.String(), err
	}
	path := filepath.Join(dir, "alice.token")
	out, _, err := run("--out", path)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	token := strings.TrimSpace(string(data))
	sum := sha256.Sum256([]byte(token))
	if want := "tokenSHA256: " + hex.EncodeToString(sum[:]) + "\n"; out != want {
		t.Fatalf("printed %q, want %q", out, want)
	}
	if len(token) < 40 || !strings.HasPrefix(token, "gfp_") {
		t.Fatalf("token %q: want gfp_ and 256 bits", token)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file mode %v, want 0600", fi.Mode().Perm())
	}
	if _, _, err := run("--out", path); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("second run over the same file: err = %v, want 'already exists'", err)
	}
	if again, _ := os.ReadFile(path); !bytes.Equal(again, data) {
		t.Fatal("a refused run changed the token file")
	}
	out2, _, err := run("--out", path, "--force")
	if err != nil || out2 == out {
		t.Fatalf("--force: err %v, same hash %v", err, out2 == out)
	}
	if _, _, err := run(); err == nil || !strings.Contains(err.Error(), "--out is required") {
		t.Fatalf("no --out: err = %v", err)
	}
}
