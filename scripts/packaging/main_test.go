package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/gitfleet/gitfleet/device/agent"
)

// menderSize is the size of Debian's mender 3.4 client binary for amd64
// (mender-client 3.4.0+ds1, /usr/bin/mender): the agent must stay smaller.
const menderSize = 10_275_080

// TestDeb builds the agent as scripts/dist does (stripped, version linked
// in), packages it for this machine's architecture, installs the package
// with dpkg into a scratch root and checks what landed there: files,
// modes, the conffile, that the installed binary runs, that the shipped
// configuration is the agent's defaults written out and that the
// directories it names are in the package, and that systemd accepts the
// unit.
func TestDeb(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "gitfleet-agent")
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -X main.version=9.8.7-test", "-o", bin, "github.com/gitfleet/gitfleet/cmd/gitfleet-agent")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	st, err := os.Stat(bin)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("gitfleet-agent %s/%s, stripped: %d bytes", runtime.GOOS, runtime.GOARCH, st.Size())
	if runtime.GOARCH == "amd64" && st.Size() >= menderSize {
		t.Errorf("gitfleet-agent is %d bytes, not smaller than the mender 3.4 client (%d bytes): see go list -deps ./cmd/gitfleet-agent for what came back", st.Size(), menderSize)
	}

	deb, err := BuildDeb(Options{
		Arch: runtime.GOARCH, GOARM: "7", Binary: bin, Version: "v9.8.7-2-gabcdef0-dirty",
		Readme: "../../docs/agent.md", License: "../../LICENSE", Out: filepath.Join(dir, "dist"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := "gitfleet-agent_9.8.7+2.gabcdef0.dirty_"; !strings.HasPrefix(filepath.Base(deb), want) {
		t.Errorf("package file %s, want %s<arch>.deb", filepath.Base(deb), want)
	}

	root := filepath.Join(dir, "root")
	conffiles := install(t, deb, root)
	if diff := cmp.Diff([]string{"/etc/gitfleet/agent.json"}, conffiles); diff != "" {
		t.Errorf("conffiles (-want +got):\n%s", diff)
	}

	for _, f := range []struct {
		path string
		mode os.FileMode
	}{
		{"/usr/bin/gitfleet-agent", 0o755},
		{"/lib/systemd/system/gitfleet-agent.service", 0o644},
		{"/etc/gitfleet/agent.json", 0o600},
		{"/usr/share/gitfleet/identity", os.ModeDir | 0o755},
		{"/usr/share/gitfleet/identity/gitfleet-device-identity", 0o755},
		{"/usr/share/gitfleet/inventory", os.ModeDir | 0o755},
		{"/usr/share/gitfleet/inventory/mender-inventory-os", 0o755},
		{"/usr/lib/gitfleet/apply-device-config.d", os.ModeDir | 0o755},
		{"/var/lib/gitfleet", os.ModeDir | 0o700},
		{"/usr/share/doc/gitfleet-agent/README.md", 0o644},
		{"/usr/share/doc/gitfleet-agent/copyright", 0o644},
	} {
		st, err := os.Stat(filepath.Join(root, f.path))
		if err != nil {
			t.Errorf("installed package lacks %s: %v", f.path, err)
			continue
		}
		if got := st.Mode() & (os.ModeDir | os.ModePerm); got != f.mode {
			t.Errorf("%s: mode %v, want %v", f.path, got, f.mode)
		}
	}

	out, err := exec.Command(filepath.Join(root, "usr/bin/gitfleet-agent"), "version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "gitfleet-agent 9.8.7-test ") {
		t.Errorf("installed gitfleet-agent version: %v\n%s", err, out)
	}
	for _, script := range []string{"usr/share/gitfleet/identity/gitfleet-device-identity", "usr/share/gitfleet/inventory/mender-inventory-os"} {
		if out, err := exec.Command("sh", "-n", filepath.Join(root, script)).CombinedOutput(); err != nil {
			t.Errorf("sh -n %s: %v\n%s", script, err, out)
		}
	}

	checkShippedConfig(t, root)
	verifyUnit(t, root)
}

// install installs deb into root with dpkg and returns the package's
// conffiles. As root it runs dpkg --root (a real install with a scratch
// database); otherwise it unpacks with dpkg-deb, which needs no privilege.
func install(t *testing.T, deb, root string) []string {
	t.Helper()
	if _, err := exec.LookPath("dpkg"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("dpkg not installed")
		}
		t.Skip("dpkg not installed; the package was built but not installed")
	}
	run := func(name string, args ...string) {
		t.Helper()
		if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
	}
	var conffiles []byte
	if os.Geteuid() == 0 {
		admin := filepath.Join(root, "var/lib/dpkg")
		for _, d := range []string{"updates", "info", "triggers"} {
			if err := os.MkdirAll(filepath.Join(admin, d), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(admin, "status"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		run("dpkg", "--root="+root, "--force-not-root", "--force-bad-path", "--log=/dev/null", "--install", deb)
		out, err := exec.Command("dpkg-query", "--root="+root, "--show", "--showformat=${db:Status-Status}", "gitfleet-agent").CombinedOutput()
		if err != nil || string(out) != "installed" {
			t.Fatalf("dpkg-query: %v: status %q", err, out)
		}
		conffiles, err = os.ReadFile(filepath.Join(admin, "info", "gitfleet-agent.conffiles"))
		if err != nil {
			t.Fatal(err)
		}
	} else {
		t.Log("not root: unpacking with dpkg-deb -x instead of installing with dpkg --root")
		run("dpkg-deb", "-x", deb, root)
		control := filepath.Join(t.TempDir(), "DEBIAN")
		run("dpkg-deb", "-e", deb, control)
		var err error
		if conffiles, err = os.ReadFile(filepath.Join(control, "conffiles")); err != nil {
			t.Fatal(err)
		}
	}
	return strings.Fields(string(conffiles))
}

// checkShippedConfig: /etc/gitfleet/agent.json loads, and is the agent's
// defaults written out (ServerURL aside), so the package and the built-in
// defaults say the same; the paths it names are in the package.
func checkShippedConfig(t *testing.T, root string) {
	t.Helper()
	shipped, err := agent.LoadConfig(filepath.Join(root, "etc/gitfleet/agent.json"))
	if err != nil {
		t.Fatalf("the shipped configuration does not load: %v", err)
	}
	defaults, err := agent.ParseConfig([]byte(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	norm := func(c agent.Config) map[string]any {
		c.Monitor, c.DeviceConfig = nil, nil // true either way: compared below
		b, _ := json.Marshal(c)
		var m map[string]any
		_ = json.Unmarshal(b, &m)
		return m
	}
	if diff := cmp.Diff(norm(defaults), norm(shipped)); diff != "" {
		t.Errorf("the shipped agent.json differs from the agent's defaults (-defaults +shipped):\n%s", diff)
	}
	if !shipped.MonitorEnabled() || !shipped.DeviceConfigEnabled() {
		t.Error("the shipped agent.json turns monitoring or device configuration off")
	}
	for _, p := range []string{shipped.IdentityScript, shipped.InventoryScriptsDir, shipped.DeviceConfigScriptsDir, shipped.DataDir} {
		if _, err := os.Stat(filepath.Join(root, p)); err != nil {
			t.Errorf("the configuration names %s, which the package does not install", p)
		}
	}
}

// verifyUnit runs systemd-analyze verify on the installed unit. The root
// gets the host's target units (a real root has them, from systemd).
func verifyUnit(t *testing.T, root string) {
	t.Helper()
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("systemd-analyze not installed (Debian package systemd)")
		}
		t.Log("systemd-analyze not installed: the unit file was not verified")
		return
	}
	targets, _ := filepath.Glob("/lib/systemd/system/*.target")
	if len(targets) == 0 {
		t.Fatal("no /lib/systemd/system/*.target on this machine to verify the unit against")
	}
	unitDir := filepath.Join(root, "lib/systemd/system")
	for _, tg := range targets {
		b, err := os.ReadFile(tg)
		if err != nil {
			continue // a dangling alias
		}
		if err := os.WriteFile(filepath.Join(unitDir, filepath.Base(tg)), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("systemd-analyze", "verify", "--root="+root, "/lib/systemd/system/gitfleet-agent.service")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	// Unknown keys and bad values are warnings with exit status 0: any
	// output is a finding.
	if err != nil || out.Len() > 0 {
		t.Errorf("systemd-analyze verify gitfleet-agent.service: %v\n%s", err, out.String())
	}
}

func TestDebianVersion(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"v1.2.0", "1.2.0"},
		{"1.2.0", "1.2.0"},
		{"v1.2.0-3-gabc1234", "1.2.0+3.gabc1234"},
		{"v1.2.0-3-gabc1234-dirty", "1.2.0+3.gabc1234.dirty"},
		{"v1.2.0-dirty", "1.2.0+dirty"},
		{"abc1234", "0.0.0+git.abc1234"},
		{"1234abc", "0.0.0+git.1234abc"},
		{"abc1234-dirty", "0.0.0+git.abc1234.dirty"},
		{"", "0.0.0+dev"},
		{"release candidate", "0.0.0+dev"},
	} {
		if got := DebianVersion(tc.in); got != tc.want {
			t.Errorf("DebianVersion(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestDebianArch(t *testing.T) {
	for _, tc := range []struct{ goarch, goarm, want string }{
		{"amd64", "", "amd64"}, {"arm64", "", "arm64"}, {"arm", "7", "armhf"}, {"arm", "6", "armel"},
	} {
		if got, err := debianArch(tc.goarch, tc.goarm); err != nil || got != tc.want {
			t.Errorf("debianArch(%s, %s) = %q, %v; want %q", tc.goarch, tc.goarm, got, err, tc.want)
		}
	}
	for _, bad := range [][2]string{{"", ""}, {"mips", ""}, {"arm", "8"}} {
		if _, err := debianArch(bad[0], bad[1]); err == nil {
			t.Errorf("debianArch(%q, %q) accepted", bad[0], bad[1])
		}
	}
}
