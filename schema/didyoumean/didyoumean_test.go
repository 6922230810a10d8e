package didyoumean

import (
	"os/exec"
	"strings"
	"testing"
)

func TestClosest(t *testing.T) {
	names := []string{"branch", "poll_interval", "ServerURL", "UpdatePollIntervalSeconds", "hold"}
	for in, want := range map[string]string{
		"brnach":                    "branch",    // a swap is one edit
		"serverurl":                 "ServerURL", // case does not count
		"UpdatePolIntervalSeconds":  "UpdatePollIntervalSeconds",
		"hodl":                      "hold",
		"zzz":                       "",
		"poll_intervalXXXXXXXXXXXX": "",
	} {
		if got := Closest(in, names); got != want {
			t.Errorf("Closest(%q) = %q, want %q", in, got, want)
		}
	}
}

// The agent imports this package: it must import nothing of Gitfleet's.
func TestLeaf(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range strings.Fields(string(out)) {
		if strings.HasPrefix(p, "github.com/") && p != "github.com/gitfleet/gitfleet/schema/didyoumean" {
			t.Errorf("didyoumean depends on %s", p)
		}
	}
}
