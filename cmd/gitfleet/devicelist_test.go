package main

import (
	"fmt"
	"strings"
	"testing"
)

// deviceList returns a device-list file declaring devices first…last.
func deviceList(first, last int) string {
	var b strings.Builder
	b.WriteString("gitfleet.io/v1 devices\n# name key identity\n")
	for i := first; i <= last; i++ {
		fmt.Fprintf(&b, "line-%04d tofu mac=02:00:00:00:%02x:%02x +deviceType=rpi4\n", i, i>>8, i&0xff)
	}
	return b.String()
}

// validate reports a device-list file's errors at file:line:col, and plan
// summarizes a list change: the many devices it adds counted and the first
// few named, the two it removes listed.
func TestDeviceListValidateAndPlan(t *testing.T) {
	r := newGitRepo(t)
	fleet := map[string]string{
		"artifacts/app-2.yaml": testArtifact,
		"keys/release.yaml":    testKey,
		"groups/prod.yaml":     strings.Replace(testGroup, "members: [gw-1, gw-2]", "members: [line-0005]", 1),
		"devices/line.devices": deviceList(1, 10),
		"rollouts/app-2.yaml":  testRollout,
	}
	r.commit("Start the fleet", fleet)

	// A broken list: a bad key and a duplicate, at their lines.
	bad := deviceList(1, 10) + "line-0011 12ab mac=1\nline-0003 tofu mac=3\n"
	writeFleet(t, r.dir, map[string]string{"devices/line.devices": bad})
	out, _, err := gitfleet(t, "validate", r.dir)
	if err == nil {
		t.Fatalf("validate passed a broken device list:\n%s", out)
	}
	for _, want := range []string{
		`devices/line.devices:13:11: spec.publicKeySHA256: device "line-0011": the key column holds "12ab"`,
		`devices/line.devices:14:1: metadata.name: duplicate Device name "line-0003"; first declared at devices/line.devices:5:1`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("validate lacks %q:\n%s", want, out)
		}
	}

	r.run("switch", "--quiet", "-c", "more")
	r.commit("Second batch of line devices", map[string]string{"devices/line.devices": deviceList(3, 500)})
	out, errOut, err := gitfleet(t, "plan", "--repo", r.dir, "--base", "main", "--head", "more")
	if err != nil {
		t.Fatalf("plan: %v\n%s%s", err, out, errOut)
	}
	for _, want := range []string{
		"Summary: 490 devices accepted, 2 devices removed",
		"  + devices/line.devices (device list): 490 devices accepted\n      line-0011, line-0012, line-0013, line-0014, line-0015 and 485 more\n",
		"  - line-0001 is removed",
		"  - line-0002 is removed",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("plan lacks %q:\n%s", want, out)
		}
	}
	if n := strings.Count(out, "\n"); n > 40 {
		t.Errorf("the plan of a 490-device list change has %d lines:\n%s", n, out)
	}
}
