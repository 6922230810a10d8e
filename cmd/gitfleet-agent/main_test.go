package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/gitfleet/gitfleet/device/agent"
)

// TestCLI runs the command line as a user types it: usage errors exit 2
// with the usage on stderr, help exits 0 with it on stdout, and a bad
// configuration exits 1 naming the key and the file.
func TestCLI(t *testing.T) {
	dir := t.TempDir()
	badKey := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(badKey, []byte(`{"ServerURL": "https://x", "UpdatePollIntervalSecs": 5}`), 0o644); err != nil {
		t.Fatal(err)
	}
	good := filepath.Join(dir, "agent.json")
	data := filepath.Join(dir, "data")
	info := filepath.Join(dir, "artifact_info")
	if err := os.WriteFile(good, []byte(`{"DataDir": "`+data+`", "ArtifactInfoFile": "`+info+`"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(info, []byte("artifact_name=release-7\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	badRemote := filepath.Join(dir, "remote.json")
	if err := os.WriteFile(badRemote, []byte(`{"ServerURL": "https://127.0.0.1:1", "DataDir": "`+data+`", "ArtifactInfoFile": "`+info+`",
		"RemoteTerminal": {"Enabled": true, "User": "no-such-user-for-gitfleet"}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name       string
		args       []string
		code       int
		stdout     []string // substrings
		stderr     []string
		lastStderr string // the last line of stderr, when set
	}{
		{name: "no command", args: nil, code: 2, stderr: []string{"no command given", "usage: gitfleet-agent", "commands:"}},
		{name: "unknown command", args: []string{"frobnicate"}, code: 2, stderr: []string{`unknown command "frobnicate"`, "usage: gitfleet-agent"}},
		{name: "unknown global flag", args: []string{"--frob", "daemon"}, code: 2, stderr: []string{"flag provided but not defined: -frob", "usage: gitfleet-agent"}},
		{name: "unknown command flag", args: []string{"daemon", "--frob"}, code: 2, stderr: []string{"gitfleet-agent daemon: flag provided but not defined: -frob", "usage: gitfleet-agent daemon"}},
		{name: "daemon flag on another command", args: []string{"--no-monitor", "commit"}, code: 2, stderr: []string{"--no-monitor applies to daemon only"}},
		{name: "daemon flag after another command", args: []string{"commit", "--no-monitor"}, code: 2, stderr: []string{"flag provided but not defined: -no-monitor"}},
		{name: "missing argument", args: []string{"install"}, code: 2, stderr: []string{"install: wants FILE|URL", "usage: gitfleet-agent install"}},
		{name: "extra argument", args: []string{"commit", "now"}, code: 2, stderr: []string{"commit: takes no arguments"}},
		{name: "help", args: []string{"help"}, code: 0, stdout: []string{"usage: gitfleet-agent", "show-provides", "version"}},
		{name: "--help", args: []string{"--help"}, code: 0, stdout: []string{"usage: gitfleet-agent", "commands:"}},
		{name: "help daemon", args: []string{"help", "daemon"}, code: 0, stdout: []string{"usage: gitfleet-agent daemon", "-no-monitor", "DeviceConfigScriptsDir"}},
		{name: "daemon --help", args: []string{"daemon", "--help"}, code: 0, stdout: []string{"usage: gitfleet-agent daemon", "-no-device-config"}},
		{name: "install -h", args: []string{"install", "-h"}, code: 0, stdout: []string{"usage: gitfleet-agent install [FLAGS] FILE|URL", "-config FILE"}},
		{name: "help unknown", args: []string{"help", "frob"}, code: 2, stderr: []string{`unknown command "frob"`}},
		{name: "version", args: []string{"version"}, code: 0, stdout: []string{"gitfleet-agent ", "go1."}},
		{name: "version with argument", args: []string{"version", "x"}, code: 2, stderr: []string{"takes no arguments"}},
		{name: "missing config", args: []string{"--config", filepath.Join(dir, "nope.json"), "show-artifact"}, code: 1,
			lastStderr: "gitfleet-agent: config: open " + filepath.Join(dir, "nope.json") + ": no such file or directory; write it (docs/agent.md lists the keys) or name another with --config FILE"},
		{name: "unknown config key", args: []string{"show-artifact", "--config", badKey}, code: 1,
			lastStderr: `gitfleet-agent: invalid configuration: ` + badKey + `: unknown key "UpdatePollIntervalSecs" (did you mean "UpdatePollIntervalSeconds"?) (docs/agent.md lists every key)`},
		{name: "remote terminal for an unknown user", args: []string{"daemon", "--config", badRemote}, code: 1,
			stderr: []string{`gitfleet-agent: RemoteTerminal: remote: invalid options: user "no-such-user-for-gitfleet"`}},
		{name: "bad log level", args: []string{"--config", good, "--log-level", "loud", "show-artifact"}, code: 2, stderr: []string{`--log-level "loud"`}},
		{name: "show-artifact, flags before", args: []string{"--config", good, "show-artifact"}, code: 0, stdout: []string{"release-7\n"}},
		{name: "show-artifact, flags after", args: []string{"show-artifact", "--config", good}, code: 0, stdout: []string{"release-7\n"}},
		{name: "show-provides", args: []string{"show-provides", "--config", good}, code: 0, stdout: []string{"artifact_name=release-7\n"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), tc.args, &stdout, &stderr)
			if code != tc.code {
				t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tc.code, stdout.String(), stderr.String())
			}
			for _, w := range tc.stdout {
				if !strings.Contains(stdout.String(), w) {
					t.Errorf("stdout lacks %q:\n%s", w, stdout.String())
				}
			}
			for _, w := range tc.stderr {
				if !strings.Contains(stderr.String(), w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr.String())
				}
			}
			if tc.lastStderr != "" {
				lines := strings.Split(strings.TrimRight(stderr.String(), "\n"), "\n")
				if got := lines[len(lines)-1]; got != tc.lastStderr {
					t.Errorf("last line of stderr:\n got %s\nwant %s", got, tc.lastStderr)
				}
			}
			if tc.code == 0 && tc.name != "show-artifact, flags before" && strings.Contains(stderr.String(), "error") {
				t.Errorf("stderr on success: %s", stderr.String())
			}
		})
	}
}

// TestConfigReferenceComplete: docs/agent.md names every configuration key
// the agent accepts.
func TestConfigReferenceComplete(t *testing.T) {
	doc, err := os.ReadFile("../../docs/agent.md")
	if err != nil {
		t.Fatal(err)
	}
	keys := append([]string{}, agent.MenderOnlyKeys...)
	for f := range reflect.TypeFor[agent.Config]().Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name != "-" && name != "" {
			keys = append(keys, name)
		}
	}
	if len(keys) < 40 {
		t.Fatalf("found only %d keys", len(keys))
	}
	for f := range reflect.TypeFor[agent.RemoteTerminal]().Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		keys = append(keys, "RemoteTerminal."+name)
	}
	for _, k := range keys {
		if !strings.Contains(string(doc), "`"+k+"`") {
			t.Errorf("docs/agent.md does not document %s", k)
		}
	}
}
