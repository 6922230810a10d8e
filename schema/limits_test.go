package schema

import (
	"fmt"
	"strings"
	"testing"
)

// hostileInputs are manifest files that once made Load run for minutes
// or exhaust memory (or would have), each with the error that now stops
// it early. A regression shows as a test that does not finish.
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
	const cueOnly = "not supported in manifest files, which hold data only"
	return []struct{ name, data, want string }{
		{"merge.yaml", merge.String(), "merge.yaml:12: aliases and merge keys expand to more than 10000 nodes"},
		{"laughs.yaml", laughs.String(), "laughs.yaml:6: aliases and merge keys expand to more than 10000 nodes"},
		{"deep.yaml", "kind: Device\nspec: " + strings.Repeat("[", 20_000) + strings.Repeat("]", 20_000) + "\n", "deep.yaml:2: exceeded max depth of 10000"},
		{"deep.cue", "kind: \"Device\"\nspec: " + strings.Repeat("{a: ", 20_000) + "1" + strings.Repeat("}", 20_000) + "\n", "expression exceeds maximum nesting depth of 10000"},
		{"refs.cue", refs.String(), "refs.cue:2:17: references (a0): " + cueOnly},
		{"for.cue", "kind: \"Device\"\nl: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]\nspec: x: [for a in l for b in l for c in l for d in l for e in l for f in l for g in l {a + b}]\n", "for.cue:3:11: comprehensions: " + cueOnly},
		{"or.cue", "kind: \"Device\"\nspec: x: (1 | 2) & (1 | 2) & (1 | 2)\n", "or.cue:2:10: operators (&): " + cueOnly},
		{"let.cue", "let x = [1, 2]\nkind: \"Device\"\n", "let.cue:1:1: let clauses: " + cueOnly},
		{"interp.cue", "kind: \"Dev\\(\"ice\")\"\n", "interp.cue:1:7: string interpolations: " + cueOnly},
		{"def.cue", "#D: {a: 1}\nkind: \"Device\"\n", "def.cue:1:1: definitions and hidden fields (#D): " + cueOnly},
		{"pattern.cue", "kind: \"Device\"\nspec: [string]: 1\n", "pattern.cue:2:7: computed labels and pattern constraints: " + cueOnly},
		{"optional.cue", "kind: \"Device\"\nspec?: {}\n", "optional.cue:2:1: optional and required markers (?): " + cueOnly},
		{"open.cue", "kind: \"Device\"\nspec: identity: [...]\n", "open.cue:2:18: open lists and structs (...): " + cueOnly},
	}
}

func TestHostileInputs(t *testing.T) {
	for _, tc := range hostileInputs() {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(fstestFS(tc.name, tc.data))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Load error:\n%v\nwant it to contain %q", err, tc.want)
			}
		})
	}
}

// TestManyUnknownReferences checks that a fleet with thousands of unknown
// references reports them without comparing each with every name.
func TestManyUnknownReferences(t *testing.T) {
	var b strings.Builder
	for i := range 1000 {
		fmt.Fprintf(&b, "---\napiVersion: gitfleet.io/v1\nkind: DeviceGroup\nmetadata: {name: group-%04d}\nspec: {members: [device-%04d-a, device-%04d-b, device-%04d-c]}\n", i, i, i, i)
	}
	_, err := Load(fstestFS("groups.yaml", b.String()))
	es, ok := err.(Errors)
	if !ok || len(es) != MaxErrors+1 {
		t.Fatalf("Load: %d errors, want %d", len(es), MaxErrors+1)
	}
	if got, want := es[len(es)-1].Msg, "2000 more errors not shown"; got != want {
		t.Errorf("last error %q, want %q", got, want)
	}
}

// TestCarriageReturns checks that a file whose lines end in a lone CR
// (which once made the YAML decoder panic) loads, with CRs counted as
// line breaks.
func TestCarriageReturns(t *testing.T) {
	data := strings.ReplaceAll(validArtifact, "\n", "\r") + "bogus: 1\r"
	_, err := Load(fstestFS("cr.yaml", data))
	if want := `cr.yaml:5:1: bogus: unknown field "bogus"`; err == nil || err.Error() != want {
		t.Errorf("Load error:\n%v\nwant %s", err, want)
	}
}
