package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestEncryptedSigningKey: a key generated with --encrypt is written
// encrypted (no plain key on disk), signs only with its password
// (GITFLEET_KEY_PASSWORD_FILE), and what it signs passes gitfleet's verify
// and mender-artifact 3.9's validate; keys encrypt turns a plain key into
// one.
func TestEncryptedSigningKey(t *testing.T) {
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "pw")
	writeFile(t, pwFile, []byte("tr0ub4dor&3\n"))
	prefix := filepath.Join(dir, "release")

	if _, _, err := gitfleet(t, "keys", "generate", "--encrypt", "--out", prefix); err == nil || !strings.Contains(err.Error(), "GITFLEET_KEY_PASSWORD") {
		t.Fatalf("--encrypt without a password: %v, want an error naming GITFLEET_KEY_PASSWORD", err)
	}
	t.Setenv("GITFLEET_KEY_PASSWORD_FILE", pwFile)
	mustGitfleet(t, "keys", "generate", "--encrypt", "--out", prefix)
	key, err := os.ReadFile(prefix + ".key")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(key), "-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----") {
		t.Fatalf("the private key is not written encrypted:\n%.80s", key)
	}

	img := filepath.Join(dir, "rootfs.ext4")
	writeFile(t, img, []byte(strings.Repeat("image", 1000)))
	out := filepath.Join(dir, "a.mender")
	write := []string{"artifact", "write", "rootfs-image", "-t", "board", "-n", "rel-1", "-f", img, "-k", prefix + ".key", "-o", out}

	t.Setenv("GITFLEET_KEY_PASSWORD_FILE", "")
	t.Setenv("GITFLEET_KEY_PASSWORD", "wrong")
	if _, _, err := gitfleet(t, write...); err == nil || !strings.Contains(err.Error(), "wrong password") {
		t.Fatalf("signing with a wrong password: %v", err)
	}
	if _, err := os.Stat(out); err == nil {
		t.Fatal("an artifact was written although signing failed")
	}
	os.Unsetenv("GITFLEET_KEY_PASSWORD")
	if _, _, err := gitfleet(t, write...); err == nil || !strings.Contains(err.Error(), "encrypted") {
		t.Fatalf("signing without a password: %v", err)
	}
	t.Setenv("GITFLEET_KEY_PASSWORD_FILE", pwFile)
	mustGitfleet(t, write...)
	mustGitfleet(t, "artifact", "verify", "--key", prefix+".pub", out)
	mustMenderArtifact(t, "validate", "-k", prefix+".pub", out)

	// The public half of the encrypted key, and a plain key encrypted.
	if pub := mustGitfleet(t, "keys", "public", prefix+".key"); pub != string(mustRead(t, prefix+".pub")) {
		t.Errorf("keys public of the encrypted key:\n%s\nwant\n%s", pub, mustRead(t, prefix+".pub"))
	}
	plain := filepath.Join(dir, "plain")
	t.Setenv("GITFLEET_KEY_PASSWORD_FILE", "")
	mustGitfleet(t, "keys", "generate", "--type", "rsa", "--out", plain)
	t.Setenv("GITFLEET_KEY_PASSWORD_FILE", pwFile)
	mustGitfleet(t, "keys", "encrypt", plain+".key", "--out", plain+".enc")
	if fp := mustGitfleet(t, "keys", "fingerprint", plain+".enc"); fp != mustGitfleet(t, "keys", "fingerprint", plain+".pub") {
		t.Errorf("the encrypted copy is another key: %s", fp)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
