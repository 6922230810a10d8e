package agent

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Commander runs a command and returns its standard output. It is the seam
// through which the agent runs identity and inventory scripts, the health
// check and the reboot command, so tests can fake them.
type Commander interface {
	Output(ctx context.Context, argv []string) ([]byte, error)
}

// OSCommander runs commands with os/exec. Output beyond 1 MiB is an error.
type OSCommander struct{}

const maxScriptOutput = 1 << 20

// Output implements Commander.
func (OSCommander) Output(ctx context.Context, argv []string) ([]byte, error) {
	if len(argv) == 0 {
		return nil, fmt.Errorf("empty command")
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var out, errb limitedBuffer
	out.limit, errb.limit = maxScriptOutput, 4<<10
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	if out.over {
		return nil, fmt.Errorf("%s: output larger than %d bytes", argv[0], maxScriptOutput)
	}
	if err != nil {
		if msg := strings.TrimSpace(errb.String()); msg != "" {
			return nil, fmt.Errorf("%s: %w: %s", argv[0], err, msg)
		}
		return nil, fmt.Errorf("%s: %w", argv[0], err)
	}
	return out.Bytes(), nil
}

type limitedBuffer struct {
	bytes.Buffer
	limit int
	over  bool
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := b.limit - b.Len(); len(p) > room {
		b.over = true
		if room > 0 {
			b.Buffer.Write(p[:room])
		}
		return len(p), nil
	}
	return b.Buffer.Write(p)
}

// parseKeyValues reads the name=value lines identity and inventory scripts
// print (and artifact_info and device_type hold). A name given several
// times collects several values. Lines without '=' and '#' comments are
// skipped.
func parseKeyValues(b []byte) map[string][]string {
	out := map[string][]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 64<<10)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			continue
		}
		out[k] = append(out[k], strings.TrimSpace(v))
	}
	return out
}

// Identity runs the identity script and returns its attributes; a name
// printed several times has its values joined with ",".
func Identity(ctx context.Context, run Commander, script string) (map[string]string, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	b, err := run.Output(ctx, []string{script})
	if err != nil {
		return nil, fmt.Errorf("identity script: %w", err)
	}
	kv := parseKeyValues(b)
	if len(kv) == 0 {
		return nil, fmt.Errorf("identity script %s printed no name=value line", script)
	}
	out := make(map[string]string, len(kv))
	for k, vs := range kv {
		out[k] = strings.Join(vs, ",")
	}
	return out, nil
}

// Inventory runs every executable mender-inventory-* in dir, in name
// order, and merges what they print. A script that fails is skipped (its
// error is returned alongside the rest, joined).
func Inventory(ctx context.Context, run Commander, dir string) (map[string][]string, []error) {
	out := map[string][]string{}
	ents, err := os.ReadDir(dir)
	if err != nil {
		if os.IsNotExist(err) {
			return out, nil
		}
		return out, []error{fmt.Errorf("inventory scripts: %w", err)}
	}
	var errs []error
	names := make([]string, 0, len(ents))
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "mender-inventory-") && !e.IsDir() {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	for _, n := range names {
		p := filepath.Join(dir, n)
		if fi, err := os.Stat(p); err != nil || fi.Mode()&0o111 == 0 {
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, time.Minute)
		b, err := run.Output(sctx, []string{p})
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("inventory script %s: %w", n, err))
			continue
		}
		for k, vs := range parseKeyValues(b) {
			out[k] = append(out[k], vs...)
		}
	}
	return out, errs
}

// readKeyValueFile reads a name=value file (artifact_info, device_type).
func readKeyValueFile(path string) (map[string]string, error) {
	b, err := readFileBounded(path, 1<<20)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for k, vs := range parseKeyValues(b) {
		out[k] = vs[len(vs)-1]
	}
	return out, nil
}

// formatKeyValues writes a name=value file, artifact_name first, then the
// rest sorted.
func formatKeyValues(m map[string]string) []byte {
	keys := make([]string, 0, len(m))
	for k := range m {
		if k != "artifact_name" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	if _, ok := m["artifact_name"]; ok {
		keys = append([]string{"artifact_name"}, keys...)
	}
	var b bytes.Buffer
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%s\n", k, strings.ReplaceAll(m[k], "\n", " "))
	}
	return b.Bytes()
}
