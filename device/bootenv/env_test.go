package bootenv

import (
	"context"
	"errors"
	"io/fs"
	"maps"
	"path/filepath"
	"strings"
	"testing"
)

// backend makes an empty environment of one kind.
type backend struct {
	name      string
	newEnv    func(t *testing.T) Env
	multiline bool // values may hold newlines
}

func allBackends() []backend {
	return []backend{
		{"uboot-single", func(t *testing.T) Env {
			fx := newUBootFixture(t, false, 0x2000)
			fx.seed(t, 0, map[string]string{}, 0)
			return fx.open(t)
		}, true},
		{"uboot-redundant", func(t *testing.T) Env {
			fx := newUBootFixture(t, true, 0x2000)
			fx.seed(t, 0, map[string]string{}, 0)
			return fx.open(t)
		}, true},
		{"grub", func(t *testing.T) Env { return NewGRUB(filepath.Join(t.TempDir(), "grubenv")) }, true},
		{"file", func(t *testing.T) Env { return NewFile(filepath.Join(t.TempDir(), "env")) }, true},
		{"tools-fake", func(t *testing.T) Env {
			return NewTools(ToolsOptions{Runner: &fakeTools{vars: map[string]string{}}})
		}, false},
	}
}

// TestEnvConformance runs the same script against every backend.
func TestEnvConformance(t *testing.T) {
	ctx := context.Background()
	for _, b := range allBackends() {
		t.Run(b.name, func(t *testing.T) {
			env := b.newEnv(t)
			want := map[string]string{"a": "1", "b": "x y", "c": "k=v"}
			mustSet(t, env, want)
			if got := mustGet(t, env); !maps.Equal(got, want) {
				t.Fatalf("Get() = %q, want %q", got, want)
			}
			if got := mustGet(t, env, "a", "missing"); !maps.Equal(got, map[string]string{"a": "1"}) {
				t.Errorf("Get(a, missing) = %q", got)
			}
			mustSet(t, env, map[string]string{"a": "", "b": "2", "never": ""})
			want = map[string]string{"b": "2", "c": "k=v"}
			if got := mustGet(t, env); !maps.Equal(got, want) {
				t.Fatalf("after delete: %q, want %q", got, want)
			}
			mustSet(t, env, nil)

			for _, bad := range []map[string]string{
				{"": "x"}, {"x=y": "1"}, {"nul\x00": "1"}, {"new\nline": "1"},
			} {
				bad["b"] = "changed"
				if err := env.Set(ctx, bad); !errors.Is(err, ErrInvalidName) {
					t.Errorf("Set(%q): err = %v, want ErrInvalidName", bad, err)
				}
			}
			if err := env.Set(ctx, map[string]string{"b": "changed", "v": "nul\x00"}); !errors.Is(err, ErrInvalidValue) {
				t.Errorf("NUL in value: err = %v, want ErrInvalidValue", err)
			}
			if got := mustGet(t, env); !maps.Equal(got, want) {
				t.Fatalf("a refused Set changed the environment: %q", got)
			}

			special := map[string]string{
				"spaces":    "  leading and trailing  ",
				"equals":    "a=b=c",
				"backslash": `C:\path\` + `\`,
				"quotes":    `"double" 'single' $(not run) ${x}`,
				"hash":      "#not a comment",
				"utf8":      "grüße ✓",
				"tab":       "a\tb",
			}
			if b.multiline {
				special["multi"] = "line1\nline2\n"
			}
			mustSet(t, env, special)
			got := mustGet(t, env, sortedNames(special)...)
			if !maps.Equal(got, special) {
				t.Errorf("special values: got %q\nwant %q", got, special)
			}
		})
	}
}

func TestBootSwitch(t *testing.T) {
	ctx := context.Background()
	for _, b := range allBackends() {
		t.Run(b.name, func(t *testing.T) {
			env := b.newEnv(t)
			mustSet(t, env, map[string]string{VarBootPart: "2", VarBootPartHex: "2", "bootcmd": "keep me"})
			st, err := ReadState(ctx, env)
			if err != nil || st != (State{Part: 2}) {
				t.Fatalf("initial state = %+v, %v", st, err)
			}
			if err := Switch(ctx, env, 10); err != nil {
				t.Fatal(err)
			}
			want := map[string]string{VarBootPart: "10", VarBootPartHex: "a", VarUpgradeAvailable: "1", VarBootCount: "0", "bootcmd": "keep me"}
			if got := mustGet(t, env); !maps.Equal(got, want) {
				t.Errorf("after Switch: %q, want %q", got, want)
			}
			// The bootloader counts a boot.
			mustSet(t, env, map[string]string{VarBootCount: "1"})
			if st, err := ReadState(ctx, env); err != nil || st != (State{Part: 10, UpgradeAvailable: true, BootCount: 1}) {
				t.Errorf("on trial: %+v, %v", st, err)
			}
			if err := Commit(ctx, env); err != nil {
				t.Fatal(err)
			}
			if st, err := ReadState(ctx, env); err != nil || st != (State{Part: 10}) {
				t.Errorf("committed: %+v, %v", st, err)
			}
			if err := Rollback(ctx, env, 2); err != nil {
				t.Fatal(err)
			}
			if st, err := ReadState(ctx, env); err != nil || st != (State{Part: 2}) {
				t.Errorf("rolled back: %+v, %v", st, err)
			}
			if err := Switch(ctx, env, 0); !errors.Is(err, ErrState) {
				t.Errorf("Switch(0): err = %v, want ErrState", err)
			}
		})
	}
}

func TestReadState(t *testing.T) {
	tests := []struct {
		name string
		vars map[string]string
		want State
		err  string
	}{
		{"minimal", map[string]string{VarBootPart: "3"}, State{Part: 3}, ""},
		{"full", map[string]string{VarBootPart: "11", VarBootPartHex: "b", VarUpgradeAvailable: "1", VarBootCount: "2"}, State{11, true, 2}, ""},
		{"uppercase hex", map[string]string{VarBootPart: "11", VarBootPartHex: "B"}, State{Part: 11}, ""},
		{"missing part", map[string]string{VarUpgradeAvailable: "0"}, State{}, "not set"},
		{"part not a number", map[string]string{VarBootPart: "A"}, State{}, "not a partition"},
		{"hex disagrees", map[string]string{VarBootPart: "2", VarBootPartHex: "3"}, State{}, "mender_boot_part_hex"},
		{"bad upgrade_available", map[string]string{VarBootPart: "2", VarUpgradeAvailable: "yes"}, State{}, "upgrade_available"},
		{"bad bootcount", map[string]string{VarBootPart: "2", VarBootCount: "-1"}, State{}, "bootcount"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env := NewTools(ToolsOptions{Runner: &fakeTools{vars: tc.vars}})
			got, err := ReadState(context.Background(), env)
			if tc.err != "" {
				if !errors.Is(err, ErrState) || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want ErrState mentioning %q", err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("ReadState = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func TestGetMissingFile(t *testing.T) {
	dir := t.TempDir()
	for _, env := range []Env{NewGRUB(filepath.Join(dir, "g")), NewFile(filepath.Join(dir, "f"))} {
		if _, err := env.Get(context.Background()); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%T: err = %v, want fs.ErrNotExist", env, err)
		}
	}
}
