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
