package policies

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"golang.org/x/tools/txtar"

	"github.com/gitfleet/gitfleet/schema"
)

// FuzzParseConfig feeds arbitrary policies/packs.yaml files (which the
// manifest loader, and so FuzzLoad, never reads) to the pack selection:
// it must not panic, and every problem is located in the file.
func FuzzParseConfig(f *testing.F) {
	for _, s := range []string{
		"packs: [production-safety]\n",
		"packs:\n  - signed-artifacts\n  - name: critical-windows\n    severity: warn\n",
		"packs: &a [*a]\n",
		"packs: {name: x}\n",
		"- a\n- b\n",
		"packs: [production-safety, production-safety, nope]\nother: 1\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg := parseConfig(data)
		for _, e := range cfg.errs {
			if e.File != ConfigFile || e.Msg == "" {
				t.Errorf("error %#v not located in %s", e, ConfigFile)
			}
		}
		for _, p := range cfg.packs {
			if p.severity != "" && p.severity != Deny && p.severity != Warn {
				t.Errorf("pack %s selected with severity %q", p.name, p.severity)
			}
		}
	})
}

// FuzzPolicyFile evaluates arbitrary policy files the way the controller
// does, in the evaluator process under a small budget: every outcome is
// violations or errors located in the policy file (a budget error
// included), never a failure of the evaluator itself.
func FuzzPolicyFile(f *testing.F) {
	paths, _ := filepath.Glob("testdata/*.txtar")
	for _, p := range paths {
		ar, err := txtar.ParseFile(p)
		if err != nil {
			f.Fatal(err)
		}
		for _, af := range ar.Files {
			if strings.HasSuffix(af.Name, ".cue") {
				f.Add(af.Data)
			}
		}
	}
	// The hostile policies of attack_test.go would each take the whole
	// budget in every run of the seed corpus: start from cheap ones.
	f.Add([]byte("import \"list\"\nfleet: _\npolicy: p: violations: [for i in list.Range(0, 3, 1) {message: \"\\(i)\"}]\n"))
	fleet := benchFleetSmall()
	budget := Budget{Time: 2 * time.Second, Memory: 128 << 20, Output: 64 << 10}
	f.Fuzz(func(t *testing.T, src []byte) {
		const name = "policies/f.cue"
		_, err := CheckContext(t.Context(), fstest.MapFS{name: {Data: src}}, fleet, budget)
		if err == nil {
			return
		}
		var es schema.Errors
		if !errors.As(err, &es) {
			t.Fatalf("error is %T, want schema.Errors: %v", err, err)
		}
		for _, e := range es {
			if e.File != name && !strings.HasPrefix(e.File, "policies") {
				t.Errorf("error not in the policy file: %v", e)
			}
			if strings.Contains(e.Msg, "please report it") {
				t.Errorf("evaluator failure: %v", e)
			}
		}
	})
}

// benchFleetSmall is a few manifests of each kind policies look at.
func benchFleetSmall() *schema.Fleet {
	f := benchFleet()
	f.Devices, f.Groups = f.Devices[:5], f.Groups[:2]
	f.Artifacts, f.Rollouts, f.Configs = f.Artifacts[:2], f.Rollouts[:2], f.Configs[:2]
	return f
}
