package main

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gitfleet/gitfleet/artifact"
)

// --config-signing-key: a private key only its owner reads; the name
// needs the key.
func TestServeConfigSigningKey(t *testing.T) {
	dir := t.TempDir()
	priv, pub, err := artifact.GenerateKey(artifact.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "config.key")
	pubFile := filepath.Join(dir, "config.pub")
	os.WriteFile(keyFile, priv, 0o600)
	os.WriteFile(pubFile, pub, 0o600)
	for _, tc := range []struct {
		name, key, keyName, want string
		mode                     os.FileMode
	}{
		{"good", keyFile, "config", "", 0o600},
		{"readable by others", keyFile, "", "accessible by others (mode 0644)", 0o644},
		{"public key", pubFile, "", "this is a public key", 0o600},
		{"missing", filepath.Join(dir, "nope"), "", "no such file", 0o600},
		{"name without key", "", "config", "--config-signing-key-name needs --config-signing-key", 0o600},
	} {
		t.Run(tc.name, func(t *testing.T) {
			os.Chmod(keyFile, tc.mode)
			c := defaultServeConfig()
			c.ConfigSigningKey, c.ConfigSignKeyName = tc.key, tc.keyName
			errs := c.validateConfigSigning()
			if tc.want == "" {
				if len(errs) != 0 || c.configSigner == nil {
					t.Fatalf("errors %v, signer %v", errs, c.configSigner)
				}
				cf, err := c.configure(slog.New(slog.DiscardHandler))
				if err != nil || cf == nil {
					t.Fatalf("configure: %v", err)
				}
				return
			}
			if len(errs) != 1 || !strings.Contains(errs[0].Error(), tc.want) {
				t.Fatalf("errors %v, want %q", errs, tc.want)
			}
		})
	}
}
