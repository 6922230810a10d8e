package schema

import (
	"os"
	"testing"
)

// TestExamples keeps the fleets shipped with Gitfleet valid.
func TestExamples(t *testing.T) {
	for _, dir := range []string{"../examples/quickstart", "../fleet-repo-template"} {
		t.Run(dir, func(t *testing.T) {
			f, err := Load(os.DirFS(dir))
			if err != nil {
				t.Fatalf("Load(%s):\n%v", dir, err)
			}
			if f.Len() == 0 {
				t.Fatalf("Load(%s): no manifests", dir)
			}
		})
	}
}
