package agent

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestDependencies keeps the device side apart from the controller and the
// agent small: nothing under device/ and nothing gitfleet-agent links may
// import the controller, Redis, CUE, Git, the controller's HTTP, CLI and
// metrics frameworks, or sigstore (artifact verifies with the standard
// library; sigstore and its protobuf types added 2 MB to the agent).
func TestDependencies(t *testing.T) {
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	cmd := exec.Command(goBin, "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}",
		"github.com/gitfleet/gitfleet/device/...", "github.com/gitfleet/gitfleet/cmd/gitfleet-agent")
	out, err := cmd.Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("go list: %v\n%s", err, stderr)
	}
	forbidden := []string{
		"github.com/gitfleet/gitfleet/controller",
		"github.com/gitfleet/gitfleet/schema",
		"github.com/gitfleet/gitfleet/policies",
		"github.com/gitfleet/gitfleet/webhooks",
		"github.com/redis/",
		"cuelang.org/",
		"cuelabs.dev/",
		"github.com/labstack/echo",
		"github.com/spf13/", // cobra and pflag: the agent's CLI is the flag package
		"github.com/go-git/",
		"github.com/sigstore/",
		"google.golang.org/protobuf",
		"github.com/prometheus/",
		"github.com/google/go-containerregistry",
	}
	deps := strings.Fields(string(out))
	if len(deps) == 0 {
		t.Fatal("go list printed no dependencies")
	}
	// Leaf packages under forbidden trees that import nothing of them.
	allowed := map[string]bool{"github.com/gitfleet/gitfleet/schema/didyoumean": true}
	for _, p := range deps {
		if allowed[p] {
			continue
		}
		for _, f := range forbidden {
			if p == f || strings.HasPrefix(p, f+"/") || (strings.HasSuffix(f, "/") && strings.HasPrefix(p, f)) {
				t.Errorf("device/... or cmd/gitfleet-agent depends on %s", p)
			}
		}
	}
}
