package bootenv

import (
	"bytes"
	"context"
	"errors"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// ubootFixture is a U-Boot environment on files in a temp dir.
type ubootFixture struct {
	dir  string
	devs []Device
	lock string
}

// newUBootFixture creates zero-filled files for one copy, or two.
func newUBootFixture(t *testing.T, redundant bool, envSize int64) *ubootFixture {
	t.Helper()
	fx := &ubootFixture{dir: t.TempDir()}
	fx.lock = filepath.Join(fx.dir, "lock")
	n := 1
	if redundant {
		n = 2
	}
	for i := range n {
		p := filepath.Join(fx.dir, []string{"env1", "env2"}[i])
		if err := os.WriteFile(p, make([]byte, envSize), 0o600); err != nil {
			t.Fatal(err)
		}
		fx.devs = append(fx.devs, Device{Path: p, EnvSize: envSize})
	}
	return fx
}

func (fx *ubootFixture) open(t *testing.T, mod ...func(*UBootOptions)) *UBoot {
	t.Helper()
	opts := UBootOptions{Devices: fx.devs, LockFile: fx.lock}
	for _, m := range mod {
		m(&opts)
	}
	u, err := NewUBoot(opts)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// seed writes a copy directly.
func (fx *ubootFixture) seed(t *testing.T, i int, vars map[string]string, flags byte) {
	t.Helper()
	d := fx.devs[i]
	img, err := encodeCopy(vars, int(d.EnvSize), len(fx.devs) == 2, flags)
	if err != nil {
		t.Fatal(err)
	}
	fx.writeRaw(t, i, img)
}

func (fx *ubootFixture) raw(t *testing.T, i int) []byte {
	t.Helper()
	d := fx.devs[i]
	b, err := os.ReadFile(d.Path)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Clone(b[d.Offset : d.Offset+d.EnvSize])
}

func (fx *ubootFixture) writeRaw(t *testing.T, i int, img []byte) {
	t.Helper()
	d := fx.devs[i]
	f, err := os.OpenFile(d.Path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(img, d.Offset); err != nil {
		t.Fatal(err)
	}
}

func mustGet(t *testing.T, e Env, names ...string) map[string]string {
	t.Helper()
	got, err := e.Get(context.Background(), names...)
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	return got
}

func mustSet(t *testing.T, e Env, vars map[string]string) {
	t.Helper()
	if err := e.Set(context.Background(), vars); err != nil {
		t.Fatalf("Set(%q): %v", vars, err)
	}
}

func TestUBootNoValidEnv(t *testing.T) {
	for _, redundant := range []bool{false, true} {
		fx := newUBootFixture(t, redundant, 0x1000)
		u := fx.open(t)
		if _, err := u.Get(context.Background()); !errors.Is(err, ErrNoValidEnv) {
			t.Errorf("redundant=%v: Get err = %v, want ErrNoValidEnv", redundant, err)
		}
		if err := u.Set(context.Background(), map[string]string{"a": "1"}); !errors.Is(err, ErrNoValidEnv) {
			t.Errorf("redundant=%v: Set err = %v, want ErrNoValidEnv", redundant, err)
		}
		for i := range fx.devs {
			if !bytes.Equal(fx.raw(t, i), make([]byte, 0x1000)) {
				t.Errorf("redundant=%v: copy %d written after a refused Set", redundant, i)
			}
		}
	}
}

func TestUBootDefault(t *testing.T) {
	fx := newUBootFixture(t, true, 0x1000)
	def := map[string]string{"bootcmd": "run mender_setup", "bootlimit": "1"}
	u := fx.open(t, func(o *UBootOptions) { o.Default = def })
	if got := mustGet(t, u); !maps.Equal(got, def) {
		t.Errorf("Get = %q, want the default %q", got, def)
	}
	mustSet(t, u, map[string]string{"a": "1"})
	// libubootenv: neither copy valid → current 0 (flags 0), write copy 1 with flags 1.
	if st := checkCopy(fx.raw(t, 1), true); !st.ok || st.flags != 1 {
		t.Errorf("copy 1 = %+v, want valid with flags 1", st)
	}
	want := map[string]string{"bootcmd": "run mender_setup", "bootlimit": "1", "a": "1"}
	if got := mustGet(t, fx.open(t)); !maps.Equal(got, want) {
		t.Errorf("after Set: %q, want %q", got, want)
	}
}

func TestUBootRedundantCounter(t *testing.T) {
	fx := newUBootFixture(t, true, 0x1000)
	fx.seed(t, 0, map[string]string{"n": "start"}, 250)
	fx.seed(t, 1, map[string]string{"n": "older"}, 249)
	u := fx.open(t)
	current, flags := 0, byte(250)
	for i := range 20 { // through the wrap 255 → 0
		v := string(rune('a' + i))
		mustSet(t, u, map[string]string{"n": v})
		current, flags = 1-current, flags+1
		st := checkCopy(fx.raw(t, current), true)
		if !st.ok || st.flags != flags {
			t.Fatalf("write %d: copy %d = %+v, want valid with flags %d", i, current, st, flags)
		}
		if other := checkCopy(fx.raw(t, 1-current), true); !other.ok || other.flags != flags-1 {
			t.Fatalf("write %d: previous copy %d = %+v, want intact with flags %d", i, 1-current, other, flags-1)
		}
		if got := mustGet(t, u, "n")["n"]; got != v {
			t.Fatalf("write %d: n = %q, want %q", i, got, v)
		}
	}
}

func TestUBootCorruptCopy(t *testing.T) {
	fx := newUBootFixture(t, true, 0x1000)
	fx.seed(t, 0, map[string]string{"v": "old"}, 1)
	fx.seed(t, 1, map[string]string{"v": "new"}, 2)
	u := fx.open(t)
	if got := mustGet(t, u, "v")["v"]; got != "new" {
		t.Fatalf("v = %q, want new", got)
	}
	img := fx.raw(t, 1)
	img[100] ^= 0x40
	fx.writeRaw(t, 1, img)
	if got := mustGet(t, u, "v")["v"]; got != "old" {
		t.Fatalf("newer copy corrupt: v = %q, want old", got)
	}
	// The next write repairs the corrupt copy, one past the valid one.
	mustSet(t, u, map[string]string{"v": "repaired"})
	if st := checkCopy(fx.raw(t, 1), true); !st.ok || st.flags != 2 {
		t.Errorf("repaired copy = %+v, want valid with flags 2", st)
	}
}

// TestUBootPowerCut writes a new environment into the inactive copy with only
// some of its 512-byte sectors reaching the disk, in every order the disk
// might have persisted them, and checks that the environment then reads as
// exactly the old or exactly the new variables.
func TestUBootPowerCut(t *testing.T) {
	const size, sector = 0x2000, 512
	fx := newUBootFixture(t, true, size)
	oldVars := map[string]string{"mender_boot_part": "2", "mender_boot_part_hex": "2", "upgrade_available": "0", "bootcount": "0", "bootcmd": "run mender_setup; boot"}
	fx.seed(t, 0, oldVars, 9)
	fx.seed(t, 1, map[string]string{"stale": "yes"}, 8)
	u := fx.open(t)
	newVars := maps.Clone(oldVars)
	maps.Copy(newVars, map[string]string{"mender_boot_part": "3", "mender_boot_part_hex": "3", "upgrade_available": "1"})
	for i := range 40 { // a long value spreads the change over several sectors
		newVars["filler"] += "0123456789abcdef"[i%16:] + "-"
	}
	target, err := encodeCopy(newVars, size, true, 10)
	if err != nil {
		t.Fatal(err)
	}
	orig := fx.raw(t, 1)
	rng := rand.New(rand.NewPCG(1, 2))
	sawOld, sawNew := false, false
	for run := range 300 {
		img := bytes.Clone(orig)
		for s := 0; s < size; s += sector {
			if run == 1 || (run > 1 && rng.IntN(2) == 0) { // run 0: none landed; run 1: all
				copy(img[s:s+sector], target[s:s+sector])
			}
		}
		fx.writeRaw(t, 1, img)
		got, err := u.Get(context.Background())
		if err != nil {
			t.Fatalf("run %d: %v", run, err)
		}
		switch {
		case maps.Equal(got, oldVars):
			sawOld = true
		case maps.Equal(got, newVars):
			sawNew = true
		default:
			t.Fatalf("run %d: read %q, neither old nor new", run, got)
		}
	}
	if !sawOld || !sawNew {
		t.Errorf("saw old %v, new %v; want both", sawOld, sawNew)
	}
}

func TestUBootOffsets(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "disk.img")
	disk := bytes.Repeat([]byte{0xAA}, 0x10000)
	if err := os.WriteFile(path, disk, 0o600); err != nil {
		t.Fatal(err)
	}
	devs := []Device{
		{Path: path, Offset: 0x2000, EnvSize: 0x1000},
		{Path: path, Offset: -0x3000, EnvSize: 0x1000}, // 0xD000
	}
	u, err := NewUBoot(UBootOptions{Devices: devs, LockFile: "-", Default: map[string]string{}})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		mustSet(t, u, map[string]string{"i": string(rune('0' + i))})
	}
	if got := mustGet(t, u, "i")["i"]; got != "2" {
		t.Errorf("i = %q, want 2", got)
	}
	after, _ := os.ReadFile(path)
	for _, r := range [][2]int{{0, 0x2000}, {0x3000, 0xD000}, {0xE000, 0x10000}} {
		if !bytes.Equal(after[r[0]:r[1]], disk[r[0]:r[1]]) {
			t.Errorf("bytes %#x..%#x outside the copies changed", r[0], r[1])
		}
	}
	for _, off := range []int{0x2000, 0xD000} {
		if !checkCopy(after[off:off+0x1000], true).ok {
			t.Errorf("copy at %#x not valid", off)
		}
	}
}

func TestUBootPastEnd(t *testing.T) {
	fx := newUBootFixture(t, false, 0x1000)
	fx.devs[0].EnvSize = 0x2000 // larger than the file
	u := fx.open(t)
	if _, err := u.Get(context.Background()); !errors.Is(err, ErrConfig) {
		t.Errorf("err = %v, want ErrConfig", err)
	}
}

func TestUBootUnchangedNotWritten(t *testing.T) {
	fx := newUBootFixture(t, true, 0x1000)
	fx.seed(t, 0, map[string]string{"a": "1"}, 3)
	u := fx.open(t)
	before := [2][]byte{fx.raw(t, 0), fx.raw(t, 1)}
	mustSet(t, u, map[string]string{"a": "1", "gone": ""})
	if !bytes.Equal(before[0], fx.raw(t, 0)) || !bytes.Equal(before[1], fx.raw(t, 1)) {
		t.Error("a Set that changes nothing wrote the environment")
	}
}

func TestUBootTooLarge(t *testing.T) {
	fx := newUBootFixture(t, false, 0x100)
	fx.seed(t, 0, map[string]string{"a": "1"}, 0)
	u := fx.open(t)
	before := fx.raw(t, 0)
	err := u.Set(context.Background(), map[string]string{"big": string(bytes.Repeat([]byte("x"), 0x100))})
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("err = %v, want ErrTooLarge", err)
	}
	if !bytes.Equal(before, fx.raw(t, 0)) {
		t.Error("refused Set changed the environment")
	}
}

func TestUBootConfigFile(t *testing.T) {
	fx := newUBootFixture(t, true, 0x1000)
	cfg := filepath.Join(fx.dir, "fw_env.config")
	os.WriteFile(cfg, []byte("# test\n"+fx.devs[0].Path+" 0 0x1000\n"+fx.devs[1].Path+" 0x0 1000\n"), 0o644)
	u, err := NewUBoot(UBootOptions{Config: cfg, LockFile: fx.lock, Default: map[string]string{}})
	if err != nil {
		t.Fatal(err)
	}
	if !u.Redundant() {
		t.Error("two config lines should make a redundant environment")
	}
	mustSet(t, u, map[string]string{"a": "b"})
	if _, err := NewUBoot(UBootOptions{Config: filepath.Join(fx.dir, "missing")}); !errors.Is(err, ErrConfig) {
		t.Errorf("missing config: err = %v, want ErrConfig", err)
	}
	if _, err := NewUBoot(UBootOptions{Devices: []Device{{Path: "/dev/ubi0_0", EnvSize: 0x1000}}}); !errors.Is(err, ErrUnsupported) {
		t.Errorf("UBI: err = %v, want ErrUnsupported", err)
	}
}

func TestUBootLock(t *testing.T) {
	fx := newUBootFixture(t, false, 0x1000)
	fx.seed(t, 0, map[string]string{}, 0)
	u := fx.open(t, func(o *UBootOptions) { o.LockTimeout = 30 * time.Millisecond })

	held, err := os.OpenFile(fx.lock, os.O_WRONLY|os.O_CREATE, 0o666)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	if err := syscall.Flock(int(held.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	if err := u.Set(context.Background(), map[string]string{"a": "1"}); err == nil {
		t.Fatal("Set succeeded while another process held the lock")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := fx.open(t).Get(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Get with a cancelled context while locked: err = %v", err)
	}
	syscall.Flock(int(held.Fd()), syscall.LOCK_UN)
	mustSet(t, u, map[string]string{"a": "1"})

	// No lock file can be created: carry on unlocked, as libubootenv does.
	nolock := fx.open(t, func(o *UBootOptions) { o.LockFile = filepath.Join(fx.dir, "no", "such", "dir", "lock") })
	mustSet(t, nolock, map[string]string{"b": "2"})
}

func TestUnprotectEMMCBoot(t *testing.T) {
	sysfs := t.TempDir()
	ro := filepath.Join(sysfs, "class", "block", "mmcblk0boot1", "force_ro")
	os.MkdirAll(filepath.Dir(ro), 0o755)
	os.WriteFile(ro, []byte("1\n"), 0o644)
	d := &devFile{Device: Device{Path: "/dev/mmcblk0boot1"}, sysfs: sysfs}
	restore := d.unprotect()
	if b, _ := os.ReadFile(ro); string(b) != "0" {
		t.Errorf("during write force_ro = %q, want 0", b)
	}
	restore()
	if b, _ := os.ReadFile(ro); string(b) != "1" {
		t.Errorf("after write force_ro = %q, want 1", b)
	}
	// Not a boot partition, or already writable: untouched.
	os.WriteFile(ro, []byte("0\n"), 0o644)
	d.unprotect()()
	if b, _ := os.ReadFile(ro); string(b) != "0\n" {
		t.Errorf("writable partition: force_ro = %q, want untouched", b)
	}
}
