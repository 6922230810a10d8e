package bootenv

// Interop with the real tools from Debian: fw_printenv/fw_setenv from
// libubootenv-tool and grub-editenv from grub-common (scripts/test-deps
// installs them). Skipped when a tool is missing, except under CI=true.

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s not installed (CI=true): run scripts/test-deps", name)
		}
		t.Skipf("%s not installed", name)
	}
	return p
}

func run(t *testing.T, stdin string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %q: %v\n%s", name, args, err, stderr.String())
	}
	return stdout.String()
}

// fwFixture is an environment described by an fw_env.config that both the
// tools and UBoot read.
type fwFixture struct {
	*ubootFixture
	cfg, defenv string
	u           *UBoot
}

type fwLayout struct {
	name    string
	copies  int
	oneFile bool // both copies in one image at different offsets
}

var fwLayouts = []fwLayout{
	{"single", 1, false},
	{"redundant", 2, false},
	{"redundant-one-image", 2, true},
}

func newFW(t *testing.T, l fwLayout) *fwFixture {
	t.Helper()
	needTool(t, "fw_printenv")
	needTool(t, "fw_setenv")
	const size = 0x4000
	fx := &ubootFixture{dir: t.TempDir()}
	fx.lock = filepath.Join(fx.dir, "lock")
	var cfg strings.Builder
	cfg.WriteString("# device offset size\n")
	if l.oneFile {
		img := filepath.Join(fx.dir, "disk.img")
		os.WriteFile(img, bytes.Repeat([]byte{0x5A}, 0x20000), 0o600)
		fx.devs = []Device{{Path: img, Offset: 0x8000, EnvSize: size}, {Path: img, Offset: 0x10000, EnvSize: size}}
		fmt.Fprintf(&cfg, "%s 0x8000 0x4000\n%s 65536 4000\n", img, img)
	} else {
		for i := range l.copies {
			p := filepath.Join(fx.dir, fmt.Sprintf("env%d", i))
			os.WriteFile(p, make([]byte, size), 0o600)
			fx.devs = append(fx.devs, Device{Path: p, EnvSize: size})
			fmt.Fprintf(&cfg, "%s\t0x0\t0x4000\n", p)
		}
	}
	f := &fwFixture{ubootFixture: fx, cfg: filepath.Join(fx.dir, "fw_env.config"), defenv: filepath.Join(fx.dir, "defenv")}
	os.WriteFile(f.cfg, []byte(cfg.String()), 0o644)
	os.WriteFile(f.defenv, nil, 0o644)
	var err error
	if f.u, err = NewUBoot(UBootOptions{Config: f.cfg, LockFile: fx.lock}); err != nil {
		t.Fatal(err)
	}
	return f
}

// setenv runs fw_setenv NAME VALUE (the empty default env is used only while
// no copy is valid).
func (f *fwFixture) setenv(t *testing.T, name, value string) {
	t.Helper()
	run(t, "", "fw_setenv", "-c", f.cfg, "-f", f.defenv, name, value)
}

// script runs fw_setenv -s - with name=value lines.
func (f *fwFixture) script(t *testing.T, vars map[string]string) {
	t.Helper()
	var b strings.Builder
	for _, k := range sortedNames(vars) {
		fmt.Fprintf(&b, "%s=%s\n", k, vars[k])
	}
	run(t, b.String(), "fw_setenv", "-c", f.cfg, "-f", f.defenv, "-s", "-")
}

// printenv returns what fw_printenv lists.
func (f *fwFixture) printenv(t *testing.T) map[string]string {
	t.Helper()
	env := NewTools(ToolsOptions{Config: f.cfg})
	got, err := env.Get(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// printenvN returns one value with fw_printenv -n, which prints it raw.
func (f *fwFixture) printenvN(t *testing.T, name string) string {
	t.Helper()
	return strings.TrimSuffix(run(t, "", "fw_printenv", "-c", f.cfg, "-n", name), "\n")
}

func TestInteropFwSetenvToUBoot(t *testing.T) {
	for _, l := range fwLayouts {
		t.Run(l.name, func(t *testing.T) {
			f := newFW(t, l)
			want := map[string]string{
				"bootcmd":          "run mender_setup; run mender_try_to_recover",
				"mender_boot_part": "2",
				"spaces":           "a b  c",
				"equals":           "x=y=z",
				"special":          `"q" 'q' \ $x ${y} ; # ü`,
			}
			f.script(t, want)
			f.setenv(t, "multi", "line1\nline2") // positional: newlines pass through
			want["multi"] = "line1\nline2"
			if got := mustGet(t, f.u); !maps.Equal(got, want) {
				t.Errorf("UBoot read %q\nwant %q", got, want)
			}
			f.script(t, map[string]string{"spaces": ""}) // delete
			delete(want, "spaces")
			if got := mustGet(t, f.u); !maps.Equal(got, want) {
				t.Errorf("after delete: %q\nwant %q", got, want)
			}
		})
	}
}

func TestInteropUBootToFwPrintenv(t *testing.T) {
	for _, l := range fwLayouts {
		t.Run(l.name, func(t *testing.T) {
			f := newFW(t, l)
			f.setenv(t, "seed", "1") // a valid environment to start from
			vars := map[string]string{
				"bootcmd": "run mender_setup", "spaces": " a b ", "equals": "k=v", "special": `"'\$;#ü`,
			}
			mustSet(t, f.u, vars)
			if err := Switch(context.Background(), f.u, 3); err != nil {
				t.Fatal(err)
			}
			want := maps.Clone(vars)
			maps.Copy(want, map[string]string{"seed": "1", VarBootPart: "3", VarBootPartHex: "3", VarUpgradeAvailable: "1", VarBootCount: "0"})
			if got := f.printenv(t); !maps.Equal(got, want) {
				t.Errorf("fw_printenv read %q\nwant %q", got, want)
			}
			mustSet(t, f.u, map[string]string{"multi": "x\ny"})
			if got := f.printenvN(t, "multi"); got != "x\ny" {
				t.Errorf("fw_printenv -n multi = %q", got)
			}
		})
	}
}

// TestInteropAlternate has fw_setenv and UBoot take turns writing; every
// write must be read by both, and in a redundant environment each write must
// go to the other copy with the flags counter one up, through its wrap.
func TestInteropAlternate(t *testing.T) {
	for _, l := range fwLayouts {
		// Which copy holds the newer counter at the start decides which copy
		// holds 0xFF at the wrap; run both.
		for start := range l.copies {
			t.Run(fmt.Sprintf("%s/start-%d", l.name, start), func(t *testing.T) {
				alternate(t, l, start)
			})
		}
	}
}

func alternate(t *testing.T, l fwLayout, start int) {
	f := newFW(t, l)
	redundant := l.copies == 2
	f.setenv(t, "n", "init")
	if redundant {
		// Start near the wrap: rewrite both copies with high counters.
		cur := mustGet(t, f.u)
		f.seed(t, start, cur, 0xF8)
		f.seed(t, 1-start, cur, 0xF7)
	}
	lastFlags, lastCopy := byte(0xF8), start
	for i := range 24 {
		v := fmt.Sprintf("v%d", i)
		writer := "fw_setenv"
		if i%2 == 0 {
			f.setenv(t, "n", v)
		} else {
			writer = "UBoot"
			mustSet(t, f.u, map[string]string{"n": v})
		}
		if got := mustGet(t, f.u, "n")["n"]; got != v {
			t.Fatalf("write %d by %s: UBoot read n=%q", i, writer, got)
		}
		if got := f.printenvN(t, "n"); got != v {
			t.Fatalf("write %d by %s: fw_printenv read n=%q", i, writer, got)
		}
		if !redundant {
			continue
		}
		wantCopy, wantFlags := 1-lastCopy, lastFlags+1
		st := checkCopy(f.raw(t, wantCopy), true)
		if !st.ok || st.flags != wantFlags {
			t.Fatalf("write %d by %s: copy %d = %+v, want valid with flags %#x", i, writer, wantCopy, st, wantFlags)
		}
		lastCopy, lastFlags = wantCopy, wantFlags
	}
	if redundant && lastFlags >= 0xF8 {
		t.Fatalf("counter ended at %#x; the test should have wrapped it", lastFlags)
	}
}

// TestInteropCorruptCopy breaks the newer copy; both readers must fall back
// to the older one, and the next write (from either side) repairs it.
func TestInteropCorruptCopy(t *testing.T) {
	for _, l := range fwLayouts[1:] {
		for _, repairer := range []string{"fw_setenv", "UBoot"} {
			t.Run(l.name+"/repair-by-"+repairer, func(t *testing.T) {
				f := newFW(t, l)
				f.setenv(t, "v", "old")
				mustSet(t, f.u, map[string]string{"v": "new"})
				newer := 0
				if st := checkCopy(f.raw(t, 1), true); st.ok && st.flags > checkCopy(f.raw(t, 0), true).flags {
					newer = 1
				}
				img := f.raw(t, newer)
				img[len(img)/2] ^= 0xFF
				f.writeRaw(t, newer, img)

				if got := mustGet(t, f.u, "v")["v"]; got != "old" {
					t.Errorf("UBoot read v=%q, want old", got)
				}
				if got := f.printenvN(t, "v"); got != "old" {
					t.Errorf("fw_printenv read v=%q, want old", got)
				}
				if repairer == "fw_setenv" {
					f.setenv(t, "v", "fixed")
				} else {
					mustSet(t, f.u, map[string]string{"v": "fixed"})
				}
				if !checkCopy(f.raw(t, newer), true).ok {
					t.Errorf("the corrupt copy was not the one rewritten")
				}
				if a, b := mustGet(t, f.u, "v")["v"], f.printenvN(t, "v"); a != "fixed" || b != "fixed" {
					t.Errorf("after repair: UBoot %q, fw_printenv %q", a, b)
				}
			})
		}
	}
}

func TestInteropBothCopiesBad(t *testing.T) {
	f := newFW(t, fwLayouts[1])
	if _, err := f.u.Get(context.Background()); err == nil {
		t.Fatal("UBoot read an environment with no valid copy")
	}
	// fw_printenv with a default env file falls back to it; so does UBoot
	// with Default.
	os.WriteFile(f.defenv, []byte("bootcmd=boot\n"), 0o644)
	got := run(t, "", "fw_printenv", "-c", f.cfg, "-f", f.defenv)
	if !strings.Contains(got, "bootcmd=boot") {
		t.Fatalf("fw_printenv -f: %q", got)
	}
	u, err := NewUBoot(UBootOptions{Config: f.cfg, LockFile: f.lock, Default: map[string]string{"bootcmd": "boot"}})
	if err != nil {
		t.Fatal(err)
	}
	mustSet(t, u, map[string]string{"a": "1"})
	if got := f.printenv(t); !maps.Equal(got, map[string]string{"bootcmd": "boot", "a": "1"}) {
		t.Errorf("fw_printenv after UBoot wrote over a default env: %q", got)
	}
}

func TestInteropTools(t *testing.T) {
	f := newFW(t, fwLayouts[1])
	f.setenv(t, "seed", "1")
	tools := NewTools(ToolsOptions{Config: f.cfg})
	if err := Switch(context.Background(), tools, 5); err != nil {
		t.Fatal(err)
	}
	st, err := ReadState(context.Background(), f.u)
	if err != nil || st != (State{Part: 5, UpgradeAvailable: true}) {
		t.Errorf("UBoot read the state Tools wrote as %+v, %v", st, err)
	}
	mustSet(t, f.u, map[string]string{"x": "a=b c"})
	if got := mustGet(t, tools, "x", "seed"); !maps.Equal(got, map[string]string{"x": "a=b c", "seed": "1"}) {
		t.Errorf("Tools read %q", got)
	}
}

// grubList returns what grub-editenv FILE list prints, parsed the way GRUB
// parses it is not possible (it prints values raw), so the caller compares
// text.
func grubList(t *testing.T, path string) string {
	return run(t, "", "grub-editenv", path, "list")
}

func grubSpecial() map[string]string {
	return map[string]string{
		"a":         "1",
		"spaces":    " x  y ",
		"equals":    "k=v=w",
		"backslash": `C:\dir\\`,
		"quotes":    `"double" 'single'`,
		"dollar":    "${prefix}/grub $(x)",
		"hash":      "#value",
		"utf8":      "grüße ✓",
		"newline":   "line1\nline2",
	}
}

func TestInteropGrubEditenvToGRUB(t *testing.T) {
	needTool(t, "grub-editenv")
	path := filepath.Join(t.TempDir(), "grubenv")
	run(t, "", "grub-editenv", path, "create")
	want := grubSpecial()
	args := []string{path, "set"}
	for _, k := range sortedNames(want) {
		args = append(args, k+"="+want[k])
	}
	run(t, "", "grub-editenv", args...)
	g := NewGRUB(path)
	if got := mustGet(t, g); !maps.Equal(got, want) {
		t.Errorf("GRUB read %q\nwant %q", got, want)
	}
	run(t, "", "grub-editenv", path, "unset", "spaces", "newline")
	delete(want, "spaces")
	delete(want, "newline")
	if got := mustGet(t, g); !maps.Equal(got, want) {
		t.Errorf("after unset: %q\nwant %q", got, want)
	}
}

func TestInteropGRUBToGrubEditenv(t *testing.T) {
	needTool(t, "grub-editenv")
	path := filepath.Join(t.TempDir(), "grubenv")
	g := NewGRUB(path) // creates the file
	vars := grubSpecial()
	mustSet(t, g, vars)
	var want strings.Builder
	for _, k := range sortedNames(vars) {
		fmt.Fprintf(&want, "%s=%s\n", k, vars[k])
	}
	if got := grubList(t, path); got != want.String() {
		t.Errorf("grub-editenv list:\n%s\nwant:\n%s", got, want.String())
	}
}

// TestInteropGRUBSameBytes makes the same changes with grub-editenv and with
// GRUB and compares the files byte for byte.
func TestInteropGRUBSameBytes(t *testing.T) {
	needTool(t, "grub-editenv")
	dir := t.TempDir()
	theirs, ours := filepath.Join(dir, "theirs"), filepath.Join(dir, "ours")
	run(t, "", "grub-editenv", theirs, "create")
	g := NewGRUB(ours)
	steps := []map[string]string{
		grubSpecial(),
		{"a": "a much longer value than before"},
		{"equals": ""},
		{"backslash": "x", "z": "last"},
		{"a": ""},
		{VarBootPart: "3", VarBootPartHex: "3", VarUpgradeAvailable: "1", VarBootCount: "0"},
		{VarBootCount: "1"},
	}
	for i, step := range steps {
		var set, unset []string
		for _, k := range sortedNames(step) {
			if step[k] == "" {
				unset = append(unset, k)
			} else {
				set = append(set, k+"="+step[k])
			}
		}
		// GRUB applies a step in name order; run grub-editenv the same way.
		for _, k := range sortedNames(step) {
			if slices.Contains(unset, k) {
				run(t, "", "grub-editenv", theirs, "unset", k)
			} else {
				run(t, "", "grub-editenv", theirs, "set", k+"="+step[k])
			}
		}
		mustSet(t, g, step)
		a, _ := os.ReadFile(theirs)
		b, _ := os.ReadFile(ours)
		if !bytes.Equal(a, b) {
			t.Fatalf("step %d: files differ\ngrub-editenv: %q\nGRUB:         %q", i, a, b)
		}
	}
	// A value that does not fit is refused by both, leaving the file as it was.
	before, _ := os.ReadFile(ours)
	if err := g.Set(context.Background(), map[string]string{"big": strings.Repeat("x", 1024)}); err == nil {
		t.Error("GRUB accepted a value larger than the block")
	}
	if after, _ := os.ReadFile(ours); !bytes.Equal(before, after) {
		t.Error("a refused Set changed the block")
	}
	if err := exec.Command("grub-editenv", theirs, "set", "big="+strings.Repeat("x", 1024)).Run(); err == nil {
		t.Error("grub-editenv accepted a value larger than the block")
	}
}
