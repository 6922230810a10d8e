package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// TestSchemaReferenceCommand: `gitfleet schema reference` run at the top
// of the source tree with its example repositories writes exactly the
// committed docs/reference, and `gitfleet schema json` prints its JSON
// Schema.
func TestSchemaReferenceCommand(t *testing.T) {
	out := t.TempDir()
	t.Chdir(filepath.Join("..", ".."))
	var stdout, stderr bytes.Buffer
	root := newRootCmd()
	root.SetOut(&stdout)
	root.SetErr(&stderr)
	root.SetArgs([]string{"schema", "reference", "--out", out,
		"--examples", "examples/quickstart", "--examples", "examples/security-monitoring", "--examples", "fleet-repo-template"})
	if err := root.Execute(); err != nil {
		t.Fatalf("schema reference: %v\n%s", err, stderr.String())
	}
	entries, err := os.ReadDir("docs/reference")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		want, _ := os.ReadFile(filepath.Join("docs/reference", e.Name()))
		got, err := os.ReadFile(filepath.Join(out, e.Name()))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: the command's output differs from docs/reference (%v)", e.Name(), err)
		}
	}

	stdout.Reset()
	root = newRootCmd()
	root.SetOut(&stdout)
	root.SetErr(&stderr)
	root.SetArgs([]string{"schema", "json"})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	var js map[string]any
	if err := json.Unmarshal(stdout.Bytes(), &js); err != nil || js["$schema"] == nil || js["$defs"] == nil {
		t.Fatalf("schema json: not a JSON Schema (%v): %.200s", err, stdout.String())
	}

	root = newRootCmd()
	root.SetOut(&stdout)
	root.SetErr(&stderr)
	root.SetArgs([]string{"schema", "reference", "--out", out, "--examples", "no/such/dir"})
	if err := root.Execute(); err == nil {
		t.Fatal("schema reference with a missing --examples directory succeeded")
	}
}
