package schema

import (
	"slices"
	"testing"

	"cuelang.org/go/cue"
	"cuelang.org/go/cue/cuecontext"
)

// The schema's #Event and Events() are one list: the same names in the
// same order, so neither can gain an event the other lacks.
func TestEventsAreTheSchemaEventDisjunction(t *testing.T) {
	v, err := compileSchema(cuecontext.New())
	if err != nil {
		t.Fatal(err)
	}
	ev := v.LookupPath(cue.MakePath(cue.Def("Event")))
	if !ev.Exists() {
		t.Fatal("no #Event in the schema")
	}
	var fromCUE []string
	var walk func(cue.Value)
	walk = func(x cue.Value) {
		if op, args := x.Expr(); op == cue.OrOp {
			for _, a := range args {
				walk(a)
			}
			return
		}
		s, err := x.String()
		if err != nil {
			t.Fatalf("#Event alternative %v is not a string: %v", x, err)
		}
		fromCUE = append(fromCUE, s)
	}
	walk(ev)
	if got := Events(); !slices.Equal(got, fromCUE) {
		t.Errorf("Events() = %q\n#Event   = %q", got, fromCUE)
	}
	for _, e := range fromCUE {
		if !IsEvent(e) {
			t.Errorf("IsEvent(%q) = false", e)
		}
	}
	for _, e := range []string{"", "rollout.phase-completed", "alert", "commit.live ", "Commit.Live"} {
		if IsEvent(e) {
			t.Errorf("IsEvent(%q) = true", e)
		}
	}
	// Events returns a copy.
	Events()[0] = "changed"
	if Events()[0] != EventCommitLive {
		t.Error("Events() shares its backing array")
	}
}
