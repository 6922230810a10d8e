package schema

import (
	"fmt"
	"strings"
	"testing"
)

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
