package bootenv

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestDependencies keeps the agent small: this package may use the standard
// library, golang.org/x/sys and device/atomicfile (itself standard library
// only) — never the controller, Redis or CUE.
func TestDependencies(t *testing.T) {
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	out, err := exec.Command(goBin, "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".").Output()
	if err != nil {
		t.Skipf("go list: %v", err)
	}
	for _, p := range strings.Fields(string(out)) {
		if p == "github.com/gitfleet/gitfleet/device/bootenv" || p == "github.com/gitfleet/gitfleet/device/atomicfile" || strings.HasPrefix(p, "golang.org/x/sys/") {
			continue
		}
		t.Errorf("device/bootenv depends on %s", p)
	}
}
