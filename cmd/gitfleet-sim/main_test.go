package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Command-line mistakes exit 2 with the usage; a missing device is an
// error naming where it looked; alert appends one ERROR line to the
// device's hello log.
func TestCommandLine(t *testing.T) {
	run1 := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := run(context.Background(), args, &out, &errb)
		return code, out.String(), errb.String()
	}
	for _, args := range [][]string{nil, {"frobnicate"}, {"run"}, {"run", "--dir", "d", "--server", "http://x"}, {"run", "--dir", "d", "--server", "https://x", "--count", "0"}, {"status", "--bogus"}} {
		if code, _, stderr := run1(args...); code != 2 || !strings.Contains(stderr, "usage: gitfleet-sim") {
			t.Errorf("gitfleet-sim %q: exit %d, stderr %q; want 2 with the usage", args, code, stderr)
		}
	}
	if code, out, _ := run1("version"); code != 0 || !strings.HasPrefix(out, "gitfleet-sim ") {
		t.Errorf("version: %d %q", code, out)
	}
	dir := t.TempDir()
	if code, _, stderr := run1("alert", "--dir", dir, "--device", "sim-001"); code != 1 || !strings.Contains(stderr, "no device sim-001") {
		t.Errorf("alert on a missing device: %d %q", code, stderr)
	}
	if code, _, stderr := run1("alert", "--dir", dir, "--device", "../etc"); code != 2 {
		t.Errorf("alert --device ../etc: %d %q, want a usage error", code, stderr)
	}
	dev := filepath.Join(dir, "sim-001")
	if err := os.MkdirAll(filepath.Join(dev, "root", "var", "log"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dev, "agent.json"), []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := run1("alert", "--dir", dir, "--device", "sim-001", "disk\nfull"); code != 0 {
		t.Fatalf("alert: %d %s", code, stderr)
	}
	b, err := os.ReadFile(filepath.Join(dev, "root", helloLog))
	if err != nil || strings.Count(string(b), "\n") != 1 || !strings.Contains(string(b), " ERROR disk full") {
		t.Errorf("hello log after alert: %q, %v", b, err)
	}
}
