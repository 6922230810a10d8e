package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gitfleet/gitfleet/artifact"
	"github.com/gitfleet/gitfleet/artifact/artifacttest"
)

// TestAttackAugmentedFiles: `gitfleet artifact verify --key` and `read
// --key` refuse an artifact whose signature leaves files uncovered (exit 1,
// the reason on stderr, nothing on stdout).
func TestAttackAugmentedFiles(t *testing.T) {
	dir := t.TempDir()
	keys := genKeys(t, dir, "ecdsa")
	priv, err := os.ReadFile(keys["ecdsa"].priv)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := artifact.LoadSigner(priv)
	if err != nil {
		t.Fatal(err)
	}
	data, err := artifacttest.Augmented(artifacttest.AugmentedOptions{
		Signer:    signer,
		Signed:    map[string][]byte{"run.sh": []byte("#!/bin/sh\necho signed\n")},
		Augmented: map[string][]byte{"evil.sh": []byte("#!/bin/sh\necho unsigned\n")},
	})
	if err != nil {
		t.Fatal(err)
	}
	art := filepath.Join(dir, "augmented.mender")
	if err := os.WriteFile(art, data, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"verify --key of a signed artifact + file listed only in manifest-augment → exit 1, augmented content refused",
			[]string{"artifact", "verify", art, "-q", "-k", keys["ecdsa"].pub}},
		{"read --key of the same artifact → exit 1, augmented content refused",
			[]string{"artifact", "read", art, "-q", "-k", keys["ecdsa"].pub}},
		{"read --json --key of the same artifact → exit 1, augmented content refused",
			[]string{"artifact", "read", art, "-q", "--json", "-k", keys["ecdsa"].pub}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, _, err := gitfleet(t, tc.args...)
			if exitCode(err) != 1 || err == nil || !strings.Contains(err.Error(), "augmented content is not covered by the signature") ||
				!strings.Contains(err.Error(), "data/0000/evil.sh") {
				t.Fatalf("exit %d, error %v; want exit 1 refusing data/0000/evil.sh", exitCode(err), err)
			}
			if out != "" {
				t.Errorf("stdout %q", out)
			}
		})
	}
	// Without a key the artifact reads as mender-artifact reads it, and the
	// summary says what the signature does not cover.
	summary := mustGitfleet(t, "artifact", "read", "-q", art)
	if !strings.Contains(summary, "Not covered by the signature: manifest-augment, data/0000/evil.sh") {
		t.Errorf("summary without a key:\n%s", summary)
	}
}
