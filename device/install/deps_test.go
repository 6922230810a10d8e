package install

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestDependencies keeps the agent small: device/install reaches the
// artifact reader and the boot environment, never the controller, Redis or
// CUE.
func TestDependencies(t *testing.T) {
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	out, err := exec.Command(goBin, "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".").Output()
	if err != nil {
		t.Skipf("go list: %v", err)
	}
	for _, p := range strings.Fields(string(out)) {
		switch {
		case strings.HasPrefix(p, "github.com/gitfleet/gitfleet/") &&
			p != "github.com/gitfleet/gitfleet/artifact" &&
			!strings.HasPrefix(p, "github.com/gitfleet/gitfleet/device/"),
			strings.Contains(p, "redis"),
			strings.HasPrefix(p, "cuelang.org/"), strings.HasPrefix(p, "cuelabs.dev/"):
			t.Errorf("device/install depends on %s", p)
		}
	}
}
