package agent

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestConfigMenderConf loads a mender.conf that sets every key of the
// Mender client 3.4 (conf.MenderConfigFromFile): it loads, the shared
// settings take effect and the rest are listed as ignored.
func TestConfigMenderConf(t *testing.T) {
	c, err := LoadConfig(filepath.Join("testdata", "mender-3.4.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if c.ServerURL != "https://docker.mender.io" || c.RootfsPartB != "/dev/mmcblk0p3" || c.ArtifactVerifyKey == "" || c.DaemonLogLevel != "info" {
		t.Errorf("shared settings not taken: %+v", c)
	}
	want := []string{
		"BootUtilitiesGetNextActivePart", "BootUtilitiesSetActivePart", "Connectivity", "DBus",
		"HttpsClient", "RetryPollCount", "Security", "SkipVerify", "StateScriptRetryIntervalSeconds",
		"StateScriptRetryTimeoutSeconds", "UpdateControlMapBootExpirationTimeSeconds",
		"UpdateControlMapExpirationTimeSeconds", "UpdateLogPath",
	}
	if diff := cmp.Diff(want, c.Ignored); diff != "" {
		t.Errorf("Ignored (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(MenderOnlyKeys, want); diff != "" {
		t.Errorf("MenderOnlyKeys (-want +got):\n%s", diff)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		json string
		want []string // substrings of the error
	}{
		{"typo", `{"ServerURL": "https://x", "UpdatePolIntervalSeconds": 5}`,
			[]string{`unknown key "UpdatePolIntervalSeconds"`, `did you mean "UpdatePollIntervalSeconds"`, "docs/agent.md"}},
		{"unknown, no suggestion", `{"Frobnicate": true}`,
			[]string{`unknown key "Frobnicate"`}},
		{"two unknown", `{"Zzz": 1, "Aaa": 2}`,
			[]string{`unknown key "Aaa"; unknown key "Zzz"`}},
		{"wrong type", "{\n  \"ServerURL\": \"https://x\",\n  \"UpdatePollIntervalSeconds\": \"5\"\n}",
			[]string{"line 3", "UpdatePollIntervalSeconds must be a whole number, not string"}},
		{"wrong type bool pointer", `{"Monitor": "no"}`,
			[]string{"Monitor must be true or false, not string"}},
		{"syntax", "{\n  \"ServerURL\": \"https://x\"\n  \"TenantToken\": \"t\"\n}",
			[]string{"line 3, column 3"}},
		{"not an object", `[1, 2]`,
			[]string{"must be a JSON object"}},
		{"trailing data", `{"ServerURL": "https://x"} {}`,
			[]string{"line 1"}},
		{"bad value", `{"BootEnv": "lilo", "DaemonLogLevel": "loud"}`,
			[]string{`BootEnv "lilo"`, `DaemonLogLevel "loud"`}},
		{"remote terminal typo", `{"RemoteTerminal": {"Enabled": true, "ShelCommand": "/bin/bash"}}`,
			[]string{`unknown key "ShelCommand" in RemoteTerminal`, `did you mean "ShellCommand"`, "docs/agent.md"}},
		{"remote terminal wrong type", `{"RemoteTerminal": {"Enabled": "yes"}}`,
			[]string{"line 1", "Enabled must be true or false, not string"}},
		{"remote terminal bad values", `{"RemoteTerminal": {"ShellCommand": "bash", "MaxSessions": 100, "IdleTimeoutSeconds": -1, "PortForwardAllow": ["localhost", "127.0.0.1:0", "127.0.0.1:*"]}}`,
			[]string{`ShellCommand "bash" is not an absolute path`, "MaxSessions 100 is not between 1 and 64", "IdleTimeoutSeconds -1 is negative",
				`PortForwardAllow "localhost" is not HOST:PORT`, `PortForwardAllow "127.0.0.1:0": port "0"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "agent.json")
			if err := os.WriteFile(path, []byte(tc.json), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := LoadConfig(path)
			if !errors.Is(err, ErrConfig) {
				t.Fatalf("err = %v, want ErrConfig", err)
			}
			msg := err.Error()
			for _, w := range append(tc.want, path) {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not contain %q", msg, w)
				}
			}
			if strings.Contains(msg, "\n") {
				t.Errorf("error is more than one line: %q", msg)
			}
		})
	}
}

// TestConfigKeysCaseInsensitive: encoding/json (and so the Mender client)
// matches names case-insensitively; the unknown-key check must too.
func TestConfigKeysCaseInsensitive(t *testing.T) {
	c, err := ParseConfig([]byte(`{"serverurl": "https://x", "dbus": {"Enabled": true}}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.ServerURL != "https://x" || len(c.Ignored) != 1 || c.Ignored[0] != "DBus" {
		t.Errorf("got ServerURL %q, Ignored %v", c.ServerURL, c.Ignored)
	}
}

func TestConfigDefaults(t *testing.T) {
	c, err := ParseConfig([]byte(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.IdentityScript != DefaultIdentityScript || c.InventoryScriptsDir != DefaultInventoryScriptsDir || c.DataDir != DefaultDataDir {
		t.Errorf("defaults: identity %q, inventory %q, data %q", c.IdentityScript, c.InventoryScriptsDir, c.DataDir)
	}
}

// TestConfigRemoteTerminal: the remote terminal is off unless configured;
// its defaults fill what the file leaves out.
func TestConfigRemoteTerminal(t *testing.T) {
	c, err := ParseConfig([]byte(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.RemoteTerminal != nil || c.RemoteTerminalSettings().Enabled {
		t.Errorf("remote terminal on by default: %+v", c.RemoteTerminal)
	}
	c, err = ParseConfig([]byte(`{"remoteterminal": {"enabled": true, "FileTransfer": false, "PortForward": true}}`))
	if err != nil {
		t.Fatal(err)
	}
	rt := c.RemoteTerminalSettings()
	if !rt.Enabled || !*rt.Terminal || *rt.FileTransfer || !rt.PortForward || rt.ShellCommand != DefaultRemoteShell ||
		rt.MaxSessions != DefaultRemoteSessions || rt.IdleTimeoutSeconds != DefaultRemoteIdleTimeout ||
		!cmp.Equal(rt.PortForwardAllow, DefaultPortForwardAllow) {
		t.Errorf("settings: %+v", rt)
	}
}
