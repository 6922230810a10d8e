package bootenv

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"testing"
)

// fakeTools behaves like libubootenv's fw_printenv (no names) and
// "fw_setenv -s -" over an in-memory environment, and records the calls.
type fakeTools struct {
	vars  map[string]string
	calls []string
	fail  error
}

func (f *fakeTools) Run(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error) {
	f.calls = append(f.calls, strings.TrimSpace(name+" "+strings.Join(args, " ")))
	if f.fail != nil {
		return nil, f.fail
	}
	if len(args) >= 2 && args[0] == "-c" {
		args = args[2:]
	}
	switch {
	case strings.HasSuffix(name, "printenv") && len(args) == 0:
		var b strings.Builder
		for _, k := range sortedNames(f.vars) {
			fmt.Fprintf(&b, "%s=%s\n", k, f.vars[k])
		}
		return []byte(b.String()), nil
	case strings.HasSuffix(name, "setenv") && strings.Join(args, " ") == "-s -":
		for _, line := range strings.Split(string(stdin), "\n") {
			k, v, ok := strings.Cut(line, "=")
			if !ok || strings.HasPrefix(line, "#") {
				continue
			}
			if v == "" {
				delete(f.vars, k)
			} else {
				f.vars[k] = v
			}
		}
		return nil, nil
	}
	return nil, fmt.Errorf("fake: unexpected %s %q", name, args)
}

func TestToolsCommands(t *testing.T) {
	fake := &fakeTools{vars: map[string]string{}}
	env := NewTools(ToolsOptions{Config: "/etc/alt.config", Runner: fake})
	mustSet(t, env, map[string]string{"b": "2", "a": "1"})
	mustGet(t, env)
	want := []string{"fw_setenv -c /etc/alt.config -s -", "fw_printenv -c /etc/alt.config"}
	if strings.Join(fake.calls, "|") != strings.Join(want, "|") {
		t.Errorf("calls %q, want %q", fake.calls, want)
	}
	mustSet(t, env, nil)
	if len(fake.calls) != 2 {
		t.Errorf("an empty Set ran %q", fake.calls[2:])
	}
}

func TestToolsSetRefuses(t *testing.T) {
	fake := &fakeTools{vars: map[string]string{}}
	env := NewTools(ToolsOptions{Runner: fake})
	tests := []struct {
		vars map[string]string
		err  error
	}{
		{map[string]string{"a": "x\ny"}, ErrInvalidValue},
		{map[string]string{"a": "x\r"}, ErrInvalidValue},
		{map[string]string{"#a": "1"}, ErrInvalidName},
		{map[string]string{"a": strings.Repeat("v", maxScriptLine)}, ErrInvalidValue},
	}
	for _, tc := range tests {
		if err := env.Set(context.Background(), tc.vars); !errors.Is(err, tc.err) {
			t.Errorf("Set(%.20q): err = %v, want %v", tc.vars, err, tc.err)
		}
	}
	if len(fake.calls) != 0 {
		t.Errorf("refused Sets ran %q", fake.calls)
	}
}

func TestToolsParse(t *testing.T) {
	out := "a=1\nmulti=first\nsecond line\nthird\nb=x=y\nempty=\n"
	fake := runnerFunc(func(context.Context, []byte, string, ...string) ([]byte, error) { return []byte(out), nil })
	got := mustGet(t, NewTools(ToolsOptions{Runner: fake}))
	want := map[string]string{"a": "1", "multi": "first\nsecond line\nthird", "b": "x=y", "empty": ""}
	if !maps.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestToolsError(t *testing.T) {
	boom := errors.New("boom")
	env := NewTools(ToolsOptions{Runner: &fakeTools{fail: boom}})
	if _, err := env.Get(context.Background()); !errors.Is(err, boom) {
		t.Errorf("Get: err = %v", err)
	}
	if err := env.Set(context.Background(), map[string]string{"a": "1"}); !errors.Is(err, boom) {
		t.Errorf("Set: err = %v", err)
	}
}

func TestExecRunner(t *testing.T) {
	out, err := ExecRunner{}.Run(context.Background(), []byte("hello"), "cat")
	if err != nil || string(out) != "hello" {
		t.Errorf("cat: %q, %v", out, err)
	}
	_, err = ExecRunner{}.Run(context.Background(), nil, "sh", "-c", "echo oops >&2; exit 3")
	if err == nil || !strings.Contains(err.Error(), "oops") {
		t.Errorf("failing command: err = %v, want stderr in it", err)
	}
}

type runnerFunc func(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error)

func (f runnerFunc) Run(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error) {
	return f(ctx, stdin, name, args...)
}
