package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestKeysGenerate generates each key type and checks the files, their
// modes and PEM types, and that generate, public and fingerprint agree.
func TestKeysGenerate(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ typ, pemType string }{
		{"ecdsa", "EC PRIVATE KEY"}, // SEC1: mender-artifact refuses PKCS#8
		{"rsa", "RSA PRIVATE KEY"},
		{"ed25519", "PRIVATE KEY"},
	} {
		t.Run(tc.typ, func(t *testing.T) {
			prefix := filepath.Join(dir, tc.typ)
			out, stderr, err := gitfleet(t, "keys", "generate", "--type", tc.typ, "--out", prefix)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(stderr, prefix+".key") {
				t.Errorf("stderr does not name the key file: %q", stderr)
			}
			fp := strings.TrimSpace(out)

			priv, pub := prefix+".key", prefix+".pub"
			for path, mode := range map[string]os.FileMode{priv: 0o600, pub: 0o644} {
				st, err := os.Stat(path)
				if err != nil {
					t.Fatal(err)
				}
				if st.Mode().Perm() != mode {
					t.Errorf("%s has mode %v, want %v", path, st.Mode().Perm(), mode)
				}
			}
			if block, _ := pem.Decode(readBytes(t, priv)); block == nil || block.Type != tc.pemType {
				t.Errorf("private key PEM type %v, want %s", block, tc.pemType)
			}
			// The fingerprint is the SHA-256 of the PKIX DER public key.
			block, _ := pem.Decode(readBytes(t, pub))
			if block == nil || block.Type != "PUBLIC KEY" {
				t.Fatalf("public key is not a PKIX PEM: %v", block)
			}
			sum := sha256.Sum256(block.Bytes)
			if want := hex.EncodeToString(sum[:]); fp != want {
				t.Errorf("generate printed fingerprint %q, want %s", fp, want)
			}
			for _, key := range []string{pub, priv} {
				if got := strings.TrimSpace(mustGitfleet(t, "keys", "fingerprint", key)); got != fp {
					t.Errorf("keys fingerprint %s = %s, want %s", filepath.Base(key), got, fp)
				}
			}
			if got := mustGitfleet(t, "keys", "public", priv); got != string(readBytes(t, pub)) {
				t.Errorf("keys public printed\n%s\nwant\n%s", got, readBytes(t, pub))
			}
		})
	}
}

// TestKeysGenerateNoOverwrite checks existing key files are kept unless
// --force is given.
func TestKeysGenerateNoOverwrite(t *testing.T) {
	dir := t.TempDir()
	prefix := filepath.Join(dir, "k")
	mustGitfleet(t, "keys", "generate", "--type", "ed25519", "--out", prefix)
	priv := readBytes(t, prefix+".key")

	_, _, err := gitfleet(t, "keys", "generate", "--type", "ed25519", "--out", prefix)
	if exitCode(err) != 1 || !strings.Contains(err.Error(), "already exists") || !strings.Contains(err.Error(), "--force") {
		t.Errorf("generate over existing files: exit %d, %v", exitCode(err), err)
	}
	if string(readBytes(t, prefix+".key")) != string(priv) {
		t.Error("the existing private key was replaced without --force")
	}
	// Only the public half present still refuses: the pair must match.
	if err := os.Remove(prefix + ".key"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := gitfleet(t, "keys", "generate", "--type", "ed25519", "--out", prefix); exitCode(err) != 1 {
		t.Errorf("generate with an existing .pub: exit %d, %v", exitCode(err), err)
	}
	if _, err := os.Stat(prefix + ".key"); err == nil {
		t.Error("a private key was written next to an existing public key")
	}

	mustGitfleet(t, "keys", "generate", "--type", "ed25519", "--out", prefix, "--force")
	fp := strings.TrimSpace(mustGitfleet(t, "keys", "fingerprint", prefix+".key"))
	if got := strings.TrimSpace(mustGitfleet(t, "keys", "fingerprint", prefix+".pub")); got != fp {
		t.Error("after --force the key files do not belong together")
	}
	assertNoTempFiles(t, dir)
}

// TestKeysErrors checks bad arguments give clear errors.
func TestKeysErrors(t *testing.T) {
	dir := t.TempDir()
	keys := genKeys(t, dir, "ed25519")
	garbage := filepath.Join(dir, "garbage.pem")
	writeFile(t, garbage, []byte("not a key"))
	tests := []struct {
		name string
		args []string
		want string
		code int
	}{
		{"unknown type", []string{"keys", "generate", "--type", "dsa", "--out", filepath.Join(dir, "x")}, "use ecdsa, rsa or ed25519", 2},
		{"empty prefix", []string{"keys", "generate", "--out", ""}, "--out: empty prefix", 2},
		{"public of a public key", []string{"keys", "public", keys["ed25519"].pub}, "this is a public key", 1},
		{"public of garbage", []string{"keys", "public", garbage}, "not a PEM private key", 1},
		{"fingerprint of garbage", []string{"keys", "fingerprint", garbage}, "not a PEM public key", 1},
		{"fingerprint of nothing", []string{"keys", "fingerprint", filepath.Join(dir, "nope.pub")}, "no such file", 1},
		{"fingerprint without argument", []string{"keys", "fingerprint"}, "want 1 argument", 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := gitfleet(t, tc.args...)
			if exitCode(err) != tc.code || err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("exit %d, error %v; want exit %d and %q", exitCode(err), err, tc.code, tc.want)
			}
		})
	}
}

// TestKeysHelpNotesExtensions checks the help says which choices stock
// Mender tools do not support.
func TestKeysHelpNotesExtensions(t *testing.T) {
	for _, args := range [][]string{
		{"keys", "generate", "--help"},
		{"artifact", "write", "rootfs-image", "--help"},
		{"artifact", "write", "module-image", "--help"},
	} {
		out := mustGitfleet(t, args...)
		if !strings.Contains(out, "ed25519") || !strings.Contains(out, "mender-artifact 3.9") {
			t.Errorf("%s does not note the Gitfleet extensions:\n%s", strings.Join(args, " "), out)
		}
	}
	if out := mustGitfleet(t, "artifact", "write", "rootfs-image", "--help"); !strings.Contains(out, "zstd") {
		t.Errorf("write help does not mention zstd:\n%s", out)
	}
}
