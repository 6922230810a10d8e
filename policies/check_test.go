package policies

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/fstest"

	"cuelang.org/go/cue/parser"
	"github.com/google/go-cmp/cmp"

	"github.com/gitfleet/gitfleet/schema"
)

// TestCheckRefusesLinks checks that a policy file or packs.yaml that is a
// symbolic link is reported, never read.
func TestCheckRefusesLinks(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(t.TempDir(), "secret.cue")
	if err := os.WriteFile(secret, []byte("fleet: _\npolicy: leak: violations: [{message: \"read outside\"}]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "policies"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"leak.cue", "packs.yaml"} {
		if err := os.Symlink(secret, filepath.Join(dir, "policies", name)); err != nil {
			t.Fatal(err)
		}
	}
	vs, err := Check(os.DirFS(dir), &schema.Fleet{})
	if len(vs) != 0 {
		t.Errorf("violations = %v, want none", vs)
	}
	want := "policies/leak.cue: policy file is not a regular file (symbolic links are not followed)\n" +
		"policies/packs.yaml: not a regular file (symbolic links are not followed)"
	if err == nil || err.Error() != want {
		t.Errorf("err = %v, want\n%s", err, want)
	}

	// The policies folder itself may not be a link either.
	dir2 := t.TempDir()
	if err := os.Symlink(filepath.Join(dir, "policies"), filepath.Join(dir2, "policies")); err != nil {
		t.Fatal(err)
	}
	if _, err := Check(os.DirFS(dir2), &schema.Fleet{}); err == nil || !strings.Contains(err.Error(), "policies: not a directory") {
		t.Errorf("linked policies folder: err = %v", err)
	}
}

func TestCheckRefusesLargeFiles(t *testing.T) {
	big := "fleet: _\n// " + strings.Repeat("x", schema.MaxFileSize) + "\n"
	_, err := Check(fstest.MapFS{"policies/big.cue": {Data: []byte(big)}}, &schema.Fleet{})
	want := fmt.Sprintf("policies/big.cue: file is larger than %d bytes", schema.MaxFileSize)
	if err == nil || err.Error() != want {
		t.Errorf("err = %v, want %s", err, want)
	}
}

func TestParseConfig(t *testing.T) {
	for _, tc := range []struct {
		name  string
		in    string
		packs []packRef
		errs  []string
	}{
		{name: "empty", in: ""},
		{name: "names", in: "packs: [production-safety, signed-artifacts]\n",
			packs: []packRef{{name: "production-safety"}, {name: "signed-artifacts"}}},
		{name: "severity override", in: "packs:\n  - name: critical-windows\n    severity: warn\n",
			packs: []packRef{{name: "critical-windows", severity: Warn}}},
		{name: "unknown pack", in: "packs:\n  - prod-safety\n",
			errs: []string{"policies/packs.yaml:2:5: packs[0]: unknown pack \"prod-safety\" (built-in packs: critical-windows, production-safety, signed-artifacts)"}},
		{name: "twice", in: "packs: [signed-artifacts, signed-artifacts]\n",
			packs: []packRef{{name: "signed-artifacts"}},
			errs:  []string{"policies/packs.yaml:1:27: packs[1]: pack \"signed-artifacts\" is listed twice"}},
		{name: "bad severity", in: "packs:\n  - {name: signed-artifacts, severity: error}\n",
			errs: []string{"policies/packs.yaml:2:40: packs[0]: severity: want deny or warn, not \"error\""}},
		{name: "unknown field", in: "pack: [signed-artifacts]\n",
			errs: []string{"policies/packs.yaml:1:1: unknown field \"pack\" (want packs)"}},
		{name: "not a list", in: "packs: signed-artifacts\n",
			errs: []string{"policies/packs.yaml:1:8: packs: want a list of pack names"}},
		{name: "malformed", in: "packs: [\n",
			errs: []string{"policies/packs.yaml:1: did not find expected node content"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := parseConfig([]byte(tc.in))
			var errs []string
			for _, e := range cfg.errs {
				errs = append(errs, e.Error())
			}
			if diff := cmp.Diff(tc.packs, cfg.packs, cmp.AllowUnexported(packRef{})); diff != "" {
				t.Errorf("packs (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.errs, errs); diff != "" {
				t.Errorf("errors (-want +got):\n%s", diff)
			}
		})
	}
}

func TestCollectionsUsed(t *testing.T) {
	for _, tc := range []struct {
		src  string
		used []string
		all  bool
	}{
		{src: "fleet: _\nx: fleet.rollouts\ny: [for g in fleet.groups {g}]", used: []string{"groups", "rollouts"}},
		{src: "fleet: _\nx: 1"},
		{src: "fleet: _\nn: len([for k, _ in fleet {k}])", all: true},
		{src: "fleet: _\nlet f = fleet\nx: f.devices", all: true},
		{src: "fleet: _\nx: fleet[\"keys\"]", all: true},
	} {
		f, err := parser.ParseFile("p.cue", tc.src)
		if err != nil {
			t.Fatal(err)
		}
		used, all := collectionsUsed(f)
		if got := slices.Sorted(maps.Keys(used)); !slices.Equal(got, tc.used) || all != tc.all {
			t.Errorf("collectionsUsed(%q) = %v, %v; want %v, %v", tc.src, got, all, tc.used, tc.all)
		}
	}
}
