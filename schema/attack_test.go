package schema

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// hostileInputs are manifest files that once made Load run for minutes
// or exhaust memory (or would have), each with the error that now stops
// it early. A regression shows as a test that does not finish. FuzzLoad
// starts from them too.
func hostileInputs() []struct{ name, data, want string } {
	var merge strings.Builder // merge keys doubling a map 40 times
	merge.WriteString("apiVersion: gitfleet.io/v1\nkind: Device\nm0: &m0 {a: 1, b: 2}\n")
	for i := 1; i <= 40; i++ {
		fmt.Fprintf(&merge, "m%d: &m%d {x: {<<: *m%d}, y: {<<: *m%d}}\n", i, i, i-1, i-1)
	}
	var laughs strings.Builder // aliases: ten lists of ten, nine deep
	laughs.WriteString("apiVersion: gitfleet.io/v1\nkind: Device\na0: &a0 [x, x, x, x, x, x, x, x, x, x]\n")
	for i := 1; i <= 9; i++ {
		fmt.Fprintf(&laughs, "a%d: &a%d [%s]\n", i, i, strings.TrimSuffix(strings.Repeat(fmt.Sprintf("*a%d, ", i-1), 10), ", "))
	}
	var refs strings.Builder // references doubling a list 40 times
	refs.WriteString("kind: \"Device\"\nspec: identity: a0\n")
	for i := range 40 {
		fmt.Fprintf(&refs, "a%d: [a%d, a%d]\n", i, i+1, i+1)
	}
	refs.WriteString("a40: \"x\"\n")
	var wide, wideCUE strings.Builder // one mapping of 70,000 keys: 3 s in the CUE evaluator
	wide.WriteString("apiVersion: gitfleet.io/v1\nkind: DeviceConfig\nmetadata: {name: c}\nspec:\n  target: {all: true}\n  values:\n")
	wideCUE.WriteString("apiVersion: \"gitfleet.io/v1\"\nkind: \"DeviceConfig\"\nmetadata: name: \"c\"\nspec: target: all: true\nspec: values: {\n")
	for i := range 70_000 {
		fmt.Fprintf(&wide, "    k%d: v\n", i)
		fmt.Fprintf(&wideCUE, "k%d: \"v\"\n", i)
	}
	wideCUE.WriteString("}\n")
	const cueOnly = "not supported in manifest files, which hold data only"
	return []struct{ name, data, want string }{
		{"merge.yaml", merge.String(), "merge.yaml:12: aliases and merge keys expand to more than 10000 nodes"},
		{"laughs.yaml", laughs.String(), "laughs.yaml:6: aliases and merge keys expand to more than 10000 nodes"},
		{"deep.yaml", "kind: Device\nspec: " + strings.Repeat("[", 20_000) + strings.Repeat("]", 20_000) + "\n", "deep.yaml:2: exceeded max depth of 10000"},
		{"deep.cue", "kind: \"Device\"\nspec: " + strings.Repeat("{a: ", 20_000) + "1" + strings.Repeat("}", 20_000) + "\n", "expression exceeds maximum nesting depth of 10000"},
		{"wide.yaml", wide.String(), "wide.yaml:7:5: a mapping with more than 1000 keys"},
		{"wide.cue", wideCUE.String(), "wide.cue:5:15: a mapping with more than 1000 keys"},
		{"refs.cue", refs.String(), "refs.cue:2:17: references (a0): " + cueOnly},
		{"for.cue", "kind: \"Device\"\nl: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]\nspec: x: [for a in l for b in l for c in l for d in l for e in l for f in l for g in l {a + b}]\n", "for.cue:3:11: comprehensions: " + cueOnly},
		{"or.cue", "kind: \"Device\"\nspec: x: (1 | 2) & (1 | 2) & (1 | 2)\n", "or.cue:2:10: operators (&): " + cueOnly},
		{"let.cue", "let x = [1, 2]\nkind: \"Device\"\n", "let.cue:1:1: let clauses: " + cueOnly},
		{"interp.cue", "kind: \"Dev\\(\"ice\")\"\n", "interp.cue:1:7: string interpolations: " + cueOnly},
		{"def.cue", "#D: {a: 1}\nkind: \"Device\"\n", "def.cue:1:1: definitions and hidden fields (#D): " + cueOnly},
		{"pattern.cue", "kind: \"Device\"\nspec: [string]: 1\n", "pattern.cue:2:7: computed labels and pattern constraints: " + cueOnly},
		{"optional.cue", "kind: \"Device\"\nspec?: {}\n", "optional.cue:2:1: optional and required markers (?): " + cueOnly},
		{"open.cue", "kind: \"Device\"\nspec: identity: [...]\n", "open.cue:2:18: open lists and structs (...): " + cueOnly},
		{"import.cue", "import \"list\"\nkind: \"Device\"\nspec: x: list.Range(0, 100000000, 1)\n", "import.cue:1:8: imports are not supported in manifest files"},
	}
}

// TestAttackHostileManifests loads each hostile manifest file on its own:
// it is refused early, with its position, instead of making the loader
// run for minutes or take gigabytes.
func TestAttackHostileManifests(t *testing.T) {
	names := map[string]string{
		"merge.yaml":   "YAML merge keys doubling a map 40 times → refused past 10,000 expanded nodes",
		"laughs.yaml":  "YAML aliases, ten lists of ten nine deep (billion laughs) → refused past 10,000 expanded nodes",
		"deep.yaml":    "YAML nested 20,000 deep → refused by the decoder's depth limit",
		"deep.cue":     "CUE nested 20,000 deep → refused by the parser's depth limit",
		"wide.yaml":    "YAML mapping of 70,000 keys (quadratic in the evaluator) → refused past 1,000 keys",
		"wide.cue":     "CUE struct of 70,000 fields → refused past 1,000 fields",
		"refs.cue":     "CUE references doubling a list 40 times → refused: manifests hold data only",
		"for.cue":      "CUE comprehension seven deep → refused: manifests hold data only",
		"or.cue":       "CUE disjunctions → refused: manifests hold data only",
		"let.cue":      "CUE let clause → refused: manifests hold data only",
		"interp.cue":   "CUE string interpolation → refused: manifests hold data only",
		"def.cue":      "CUE definition → refused: manifests hold data only",
		"pattern.cue":  "CUE pattern constraint → refused: manifests hold data only",
		"optional.cue": "CUE optional field → refused: manifests hold data only",
		"open.cue":     "CUE open list → refused: manifests hold data only",
		"import.cue":   "CUE import of list.Range → refused: manifests import nothing",
	}
	for _, tc := range hostileInputs() {
		name := names[tc.name]
		if name == "" {
			t.Fatalf("hostile input %s has no description", tc.name)
		}
		t.Run(name, func(t *testing.T) {
			_, err := Load(fstestFS(tc.name, tc.data))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Load error:\n%v\nwant it to contain %q", err, tc.want)
			}
		})
	}
}

// TestAttackBadFiles loads a tree holding files Load must not read: each
// is reported by name, nothing outside the tree is read, and the valid
// file beside them is not reported.
func TestAttackBadFiles(t *testing.T) {
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
	if strings.Contains(got, "ok.yaml") {
		t.Errorf("valid file reported:\n%s", got)
	}
	for _, tc := range []struct{ name, want string }{
		{"binary file → refused as not text, at the NUL byte", "binary.yaml:2:1: not a text file: a NUL byte"},
		{"Latin-1 file → refused as not UTF-8, at the byte", "latin1.yml:2:7: not UTF-8 text: byte 0xe9; save the file as UTF-8"},
		{"file over 1 MiB → refused unread", "huge.yaml: file is "},
		{"1,001 documents in one file → refused", "many.yaml: more than 1000 documents in one file"},
		{"manifest that is a symbolic link out of the tree → refused unread", "link.yaml: manifest is a symbolic link"},
		{"publicKeyFile through a linked directory → refused", `spec.publicKeyFile: linkdir is a symbolic link`},
		{"publicKeyFile with .. → refused", `spec.publicKeyFile: "../secret.yaml": want a clean relative path`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(got, tc.want) {
				t.Errorf("errors lack %q; got:\n%s", tc.want, got)
			}
		})
	}
}

// TestAttackOverlapPairs loads 3,001 DeviceConfigs of one specificity
// setting one key for the devices a group's selector picks, one of them to
// another value: every pair may overlap, and no index can rule one out.
// The 4.5 million comparisons (3 s; 32 million for 8,000 rollouts: 80 s)
// stop at MaxOverlapPairs, with
// an error.
func TestAttackOverlapPairs(t *testing.T) {
	fsys := fstestFS("group.yaml", "apiVersion: gitfleet.io/v1\nkind: DeviceGroup\nmetadata: {name: linux}\nspec: {selector: {inventory: {os: linux}}}\n")
	for f := range 4 {
		var b strings.Builder
		for i := range 1000 {
			n := f*1000 + i
			if n > 3000 {
				break
			}
			value := "a"
			if n == 3000 {
				value = "b"
			}
			fmt.Fprintf(&b, "---\napiVersion: gitfleet.io/v1\nkind: DeviceConfig\nmetadata: {name: c%d}\nspec:\n  target: {groups: [linux]}\n  values: {k: %s}\n", n, value)
		}
		fsys[fmt.Sprintf("configs/%d.yaml", f)] = fstestFS("", b.String())[""]
	}
	for _, tc := range []struct{ name, want string }{
		{"3,001 configs that may all reach the same devices → overlap checks stopped at 2,000,000 pairs",
			"spec.target: more than 2000000 pairs of DeviceConfigs may reach the same devices; checking stopped"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(fsys)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Load error:\n%.2000v\nwant it to contain %q", err, tc.want)
			}
		})
	}
}
