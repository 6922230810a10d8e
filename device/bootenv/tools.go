package bootenv

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os/exec"
	"strings"
)

// Runner runs a command with stdin and returns its standard output. It is
// the seam through which Tools shells out, so tests can fake the tools.
type Runner interface {
	Run(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error)
}

// ExecRunner runs commands with os/exec. Output beyond 1 MiB is an error;
// a failing command's error carries the end of its standard error.
type ExecRunner struct{}

const maxToolOutput = 1 << 20

// Run implements Runner.
func (ExecRunner) Run(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var stdout, stderr limitedBuffer
	stdout.max, stderr.max = maxToolOutput, 4<<10
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %s", name, err, strings.TrimSpace(stderr.b.String()))
	}
	if stdout.over {
		return nil, fmt.Errorf("%s: more than %d bytes of output", name, maxToolOutput)
	}
	return stdout.b.Bytes(), nil
}

type limitedBuffer struct {
	b    bytes.Buffer
	max  int
	over bool
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	n := len(p)
	if room := l.max - l.b.Len(); len(p) > room {
		p, l.over = p[:max(room, 0)], true
	}
	l.b.Write(p)
	return n, nil
}

var _ io.Writer = (*limitedBuffer)(nil)

// ToolsOptions configures a Tools environment.
type ToolsOptions struct {
	// PrintEnv and SetEnv are the tools. Defaults "fw_printenv" and
	// "fw_setenv". SetEnv must accept "-s -" (a script of name=value lines
	// on standard input), as libubootenv's fw_setenv does.
	PrintEnv, SetEnv string
	// Config, when set, is passed to both tools as "-c Config".
	Config string
	// Runner runs the tools. Default ExecRunner.
	Runner Runner
}

// Tools is a U-Boot environment reached through fw_printenv and fw_setenv,
// for devices whose environment only the vendor's tools can reach (a UBI
// volume, a vendor-patched format).
//
// Atomicity: Set hands every variable to one "fw_setenv -s -", which stores
// them in one write; how safe that write is depends on the tool and the
// environment (libubootenv with a redundant environment: as safe as UBoot).
// Values cannot contain newlines (the script is line-based), and a
// multi-line value written by another tool reads back with its lines joined
// by "\n" only if no continuation line contains '='.
type Tools struct {
	printEnv, setEnv string
	config           string
	run              Runner
}

// NewTools returns a Tools environment. It does not check that the tools exist.
func NewTools(opts ToolsOptions) *Tools {
	t := &Tools{printEnv: opts.PrintEnv, setEnv: opts.SetEnv, config: opts.Config, run: opts.Runner}
	if t.printEnv == "" {
		t.printEnv = "fw_printenv"
	}
	if t.setEnv == "" {
		t.setEnv = "fw_setenv"
	}
	if t.run == nil {
		t.run = ExecRunner{}
	}
	return t
}

func (t *Tools) args(extra ...string) []string {
	if t.config == "" {
		return extra
	}
	return append([]string{"-c", t.config}, extra...)
}

// Get implements Env. It always lists the whole environment: libubootenv's
// fw_printenv prints "name=" for a variable that is not set, which cannot be
// told apart from an empty value.
func (t *Tools) Get(ctx context.Context, names ...string) (map[string]string, error) {
	out, err := t.run.Run(ctx, nil, t.printEnv, t.args()...)
	if err != nil {
		return nil, err
	}
	vars := make(map[string]string)
	last := ""
	for _, line := range strings.Split(strings.TrimSuffix(string(out), "\n"), "\n") {
		name, value, ok := strings.Cut(line, "=")
		if !ok || name == "" {
			if last != "" { // continuation of a multi-line value
				vars[last] += "\n" + line
			}
			continue
		}
		vars[name], last = value, name
	}
	return pick(vars, names), nil
}

// maxScriptLine is the line buffer of libubootenv's script reader (fgets
// into 2048 bytes, so 2047 characters and the newline).
const maxScriptLine = 2047

// Set implements Env.
func (t *Tools) Set(ctx context.Context, vars map[string]string) error {
	if err := checkVars(vars); err != nil {
		return err
	}
	if len(vars) == 0 {
		return nil
	}
	var script bytes.Buffer
	for _, name := range sortedNames(vars) {
		v := vars[name]
		switch {
		case strings.HasPrefix(name, "#"):
			return fmt.Errorf("%w: %q starts with '#' (a comment in the script)", ErrInvalidName, name)
		case strings.ContainsAny(name+v, "\n\r"):
			return fmt.Errorf("%w: %s: %s cannot pass a newline", ErrInvalidValue, name, t.setEnv)
		case len(name)+len(v)+2 > maxScriptLine:
			return fmt.Errorf("%w: %s: longer than the %d-byte lines %s reads", ErrInvalidValue, name, maxScriptLine, t.setEnv)
		}
		fmt.Fprintf(&script, "%s=%s\n", name, v)
	}
	_, err := t.run.Run(ctx, script.Bytes(), t.setEnv, t.args("-s", "-")...)
	return err
}
