package main

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/artifact"
	"github.com/google/go-cmp/cmp"
)

// gitfleet runs the CLI in-process, as `gitfleet args...` would.
func gitfleet(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	root := newRootCmd()
	var out, errb bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errb)
	root.SetArgs(args)
	err = root.ExecuteContext(t.Context())
	return out.String(), errb.String(), err
}

// mustGitfleet runs the CLI and fails the test unless it succeeds.
func mustGitfleet(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, err := gitfleet(t, args...)
	if err != nil {
		t.Fatalf("gitfleet %s: %v\nstderr: %s", strings.Join(args, " "), err, errOut)
	}
	return out
}

// exitCode is the status main would exit with for err.
func exitCode(err error) int {
	var ee *exitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.code
	}
	return 2
}

// tool finds a real binary the tests talk to. Missing, it skips the test,
// except in CI, where every peer must be installed.
func tool(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is not installed (CI=true requires it; run scripts/test-deps)", name)
		}
		t.Skipf("%s is not installed", name)
	}
	return path
}

// menderArtifact runs mender-artifact and returns its combined output.
func menderArtifact(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), tool(t, "mender-artifact"), args...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func mustMenderArtifact(t *testing.T, args ...string) string {
	t.Helper()
	out, err := menderArtifact(t, args...)
	if err != nil {
		t.Fatalf("mender-artifact %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

type keyPair struct{ priv, pub string }

// genKeys makes one key pair per type in dir with `gitfleet keys generate`.
func genKeys(t *testing.T, dir string, types ...string) map[string]keyPair {
	t.Helper()
	keys := map[string]keyPair{}
	for _, typ := range types {
		prefix := filepath.Join(dir, typ)
		mustGitfleet(t, "keys", "generate", "--type", typ, "--out", prefix)
		keys[typ] = keyPair{prefix + ".key", prefix + ".pub"}
	}
	return keys
}

// payloadFiles writes two small payload files and a meta-data file.
func payloadFiles(t *testing.T, dir string) (img, extra, meta string) {
	t.Helper()
	img = filepath.Join(dir, "rootfs.ext4")
	extra = filepath.Join(dir, "app.conf")
	meta = filepath.Join(dir, "meta.json")
	data := bytes.Repeat([]byte("gitfleet-payload-"), 300)
	writeFile(t, img, data)
	writeFile(t, extra, []byte("answer=42\n"))
	writeFile(t, meta, []byte(`{"service":"app","build":12345678901234567890,"tags":["a","b"]}`))
	return img, extra, meta
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// readJSON runs `artifact read --json` and decodes it.
func readJSON(t *testing.T, args ...string) map[string]any {
	t.Helper()
	out := mustGitfleet(t, append([]string{"artifact", "read", "--json"}, args...)...)
	var v map[string]any
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("read --json output is not JSON: %v\n%s", err, out)
	}
	return v
}

// TestWriteInterop writes every payload kind with every compression and key
// type, reads each back with gitfleet, and has mender-artifact 3.9 validate
// and read those it supports (not zstd, not ed25519).
func TestWriteInterop(t *testing.T) {
	dir := t.TempDir()
	keys := genKeys(t, dir, "ecdsa", "rsa", "ed25519")
	img, extra, meta := payloadFiles(t, dir)
	menderSupports := map[string]bool{"none": true, "gzip": true, "xz": true, "lzma": true, "ecdsa": true, "rsa": true}
	for _, kind := range []string{"rootfs-image", "module-image"} {
		for _, comp := range []string{"none", "gzip", "zstd", "xz"} {
			for _, alg := range []string{"ecdsa", "rsa", "ed25519"} {
				t.Run(kind+"/"+comp+"/"+alg, func(t *testing.T) {
					out := filepath.Join(dir, kind+"-"+comp+"-"+alg+".mender")
					args := []string{"artifact", "write", kind, "-n", "release-1", "-t", "pi4", "-t", "pi5",
						"--compression", comp, "-k", keys[alg].priv, "-o", out}
					if kind == "rootfs-image" {
						args = append(args, "-f", img)
					} else {
						args = append(args, "-T", "single-file", "-f", img, "-f", extra, "-m", meta)
					}
					_, stderr, err := gitfleet(t, args...)
					if err != nil {
						t.Fatalf("write: %v", err)
					}
					extension := comp == "zstd" || alg == "ed25519"
					if noted := strings.Contains(stderr, "note: ") && strings.Contains(stderr, "cannot read this artifact"); noted != extension {
						t.Errorf("write stderr %q: want a note on Gitfleet extensions: %v", stderr, extension)
					}

					got := mustGitfleet(t, "artifact", "verify", out, "-k", keys[alg].pub)
					if !strings.HasPrefix(got, "verified: release-1 signed by ") {
						t.Errorf("verify printed %q", got)
					}
					v := readJSON(t, out, "-k", keys[alg].pub)
					sig := v["signature"].(map[string]any)
					if sig["status"] != "verified" || v["compression"] != comp || v["artifact_name"] != "release-1" {
						t.Errorf("read --json: signature %v, compression %v, name %v", sig, v["compression"], v["artifact_name"])
					}
					files := v["payloads"].([]any)[0].(map[string]any)["files"].([]any)
					if size := files[len(files)-1].(map[string]any)["size"]; size != float64(5100) {
						t.Errorf("read --json: size of rootfs.ext4 is %v, want 5100", size)
					}

					if !menderSupports[comp] || !menderSupports[alg] {
						return
					}
					mustMenderArtifact(t, "validate", "-k", keys[alg].pub, out)
					info := mustMenderArtifact(t, "read", "-k", keys[alg].pub, out)
					for _, want := range []string{"Name: release-1", "Signature: signed and verified correctly", "rootfs.ext4"} {
						if !strings.Contains(info, want) {
							t.Errorf("mender-artifact read output lacks %q:\n%s", want, info)
						}
					}
				})
			}
		}
	}
}

// TestMenderWrittenVerifies has mender-artifact write and sign artifacts with
// gitfleet-generated keys and checks gitfleet verifies and reads them.
func TestMenderWrittenVerifies(t *testing.T) {
	dir := t.TempDir()
	keys := genKeys(t, dir, "ecdsa", "rsa")
	img, extra, _ := payloadFiles(t, dir)
	for _, kind := range []string{"rootfs-image", "module-image"} {
		for _, comp := range []string{"none", "gzip", "lzma"} {
			for _, alg := range []string{"ecdsa", "rsa"} {
				t.Run(kind+"/"+comp+"/"+alg, func(t *testing.T) {
					out := filepath.Join(dir, "mender-"+kind+"-"+comp+"-"+alg+".mender")
					args := []string{"write", kind, "-n", "from-mender", "-t", "pi4", "--compression", comp,
						"-k", keys[alg].priv, "-o", out, "-f", img}
					if kind == "module-image" {
						args = append(args, "-T", "single-file", "-f", extra)
					}
					mustMenderArtifact(t, args...)

					got := mustGitfleet(t, "artifact", "verify", out, "-k", keys[alg].pub)
					if !strings.Contains(got, "verified: from-mender signed by") {
						t.Errorf("verify printed %q", got)
					}
					other := "rsa"
					if alg == "rsa" {
						other = "ecdsa"
					}
					_, _, err := gitfleet(t, "artifact", "verify", out, "-k", keys[other].pub)
					if exitCode(err) != 1 || !strings.Contains(err.Error(), "signature does not verify") {
						t.Errorf("verify with the wrong key: exit %d, %v", exitCode(err), err)
					}
					summary := mustGitfleet(t, "artifact", "read", out, "-k", keys[alg].pub)
					if !strings.Contains(summary, "Signature: verified by") || !strings.Contains(summary, "rootfs.ext4") {
						t.Errorf("read summary:\n%s", summary)
					}
				})
			}
		}
	}
}

// TestSignMenderArtifact signs an unsigned mender-artifact artifact with
// gitfleet, in place and to another file, and has mender-artifact validate
// the result.
func TestSignMenderArtifact(t *testing.T) {
	dir := t.TempDir()
	keys := genKeys(t, dir, "ecdsa", "rsa")
	img, _, _ := payloadFiles(t, dir)
	unsigned := filepath.Join(dir, "unsigned.mender")
	mustMenderArtifact(t, "write", "rootfs-image", "-n", "to-sign", "-t", "pi4", "-f", img, "-o", unsigned)
	before := readBytes(t, unsigned)

	signed := filepath.Join(dir, "signed.mender")
	out := mustGitfleet(t, "artifact", "sign", unsigned, "-k", keys["ecdsa"].priv, "-o", signed)
	if !strings.HasPrefix(out, "signed: "+signed+" with ecdsa-p256 key ") {
		t.Errorf("sign printed %q", out)
	}
	if !bytes.Equal(readBytes(t, unsigned), before) {
		t.Error("sign -o changed the input file")
	}
	mustMenderArtifact(t, "validate", "-k", keys["ecdsa"].pub, signed)

	// In place, replacing the ECDSA signature with an RSA one.
	mustGitfleet(t, "artifact", "sign", signed, "-k", keys["rsa"].priv)
	mustMenderArtifact(t, "validate", "-k", keys["rsa"].pub, signed)
	mustGitfleet(t, "artifact", "verify", signed, "-k", keys["rsa"].pub)
	if _, err := menderArtifact(t, "validate", "-k", keys["ecdsa"].pub, signed); err == nil {
		t.Error("the old ECDSA signature still validates after re-signing with RSA")
	}
	assertNoTempFiles(t, dir)
}

// TestSignRefusesDamaged checks sign verifies digests first and leaves a
// damaged artifact alone.
func TestSignRefusesDamaged(t *testing.T) {
	dir := t.TempDir()
	keys := genKeys(t, dir, "ecdsa")
	img, _, _ := payloadFiles(t, dir)
	art := filepath.Join(dir, "a.mender")
	mustGitfleet(t, "artifact", "write", "rootfs-image", "-n", "a", "-t", "pi4", "-f", img, "--compression", "none", "-o", art)
	data := readBytes(t, art)
	i := bytes.Index(data, []byte("gitfleet-payload-"))
	data[i] ^= 1
	writeFile(t, art, data)

	_, _, err := gitfleet(t, "artifact", "sign", art, "-k", keys["ecdsa"].priv)
	if exitCode(err) != 1 || !strings.Contains(err.Error(), "digest mismatch") {
		t.Fatalf("sign of a damaged artifact: exit %d, %v", exitCode(err), err)
	}
	if !bytes.Equal(readBytes(t, art), data) {
		t.Error("sign changed a damaged artifact")
	}
	assertNoTempFiles(t, dir)
}

// TestTampered flips bytes across a signed artifact: read and verify must
// exit 1, print nothing on stdout, and say what is wrong.
func TestTampered(t *testing.T) {
	dir := t.TempDir()
	keys := genKeys(t, dir, "ecdsa")
	img, _, _ := payloadFiles(t, dir)
	art := filepath.Join(dir, "a.mender")
	mustGitfleet(t, "artifact", "write", "rootfs-image", "-n", "a", "-t", "pi4", "-f", img,
		"--compression", "none", "-k", keys["ecdsa"].priv, "-o", art)
	orig := readBytes(t, art)

	named := map[string]int64{
		"payload":   int64(bytes.Index(orig, []byte("gitfleet-payload-"))) + 100,
		"manifest":  entryOffset(t, orig, "manifest") + 3,
		"signature": entryOffset(t, orig, "manifest.sig") + 10,
		"header":    entryOffset(t, orig, "header.tar") + 700,
		"version":   entryOffset(t, orig, "version") + 12,
	}
	wantErr := map[string]string{
		"payload":   "digest mismatch",
		"manifest":  "artifact:",
		"signature": "signature does not verify",
		"header":    "artifact:",
		"version":   "artifact:",
	}
	sigStart := entryOffset(t, orig, "manifest.sig")
	sigEnd := sigStart + 88 // base64 of a 64-byte ECDSA signature
	check := func(t *testing.T, off int64, want string) {
		data := bytes.Clone(orig)
		data[off] ^= 0x20
		bad := filepath.Join(t.TempDir(), "bad.mender")
		writeFile(t, bad, data)
		for _, args := range [][]string{
			{"artifact", "verify", bad, "-k", keys["ecdsa"].pub},
			{"artifact", "read", bad, "-k", keys["ecdsa"].pub},
			{"artifact", "read", "--json", bad},
		} {
			if args[2] == "--json" && off >= sigStart && off < sigEnd {
				continue // without a key the signature is not checked
			}
			out, _, err := gitfleet(t, args...)
			if exitCode(err) != 1 || out != "" {
				t.Fatalf("%v with byte %d flipped: exit %d, err %v, stdout %q", args[:2], off, exitCode(err), err, out)
			}
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%v with byte %d flipped: error %q lacks %q", args[:2], off, err, want)
			}
		}
	}
	for name, off := range named {
		t.Run(name, func(t *testing.T) { check(t, off, wantErr[name]) })
	}
	// A coarse sweep over the whole file; artifact's own tests flip every
	// byte.
	t.Run("sweep", func(t *testing.T) {
		for off := int64(0); off < int64(len(orig)); off += 211 {
			if allZeroTail(orig, off) {
				break
			}
			check(t, off, "artifact")
		}
	})
}

// allZeroTail reports whether off lies in the zero blocks that end the
// archive, where a flipped byte may be beyond what any reader looks at.
func allZeroTail(data []byte, off int64) bool {
	return len(bytes.Trim(data[off:], "\x00")) == 0
}

// entryOffset returns the offset of the content of the outer tar entry whose
// name starts with prefix.
func entryOffset(t *testing.T, data []byte, prefix string) int64 {
	t.Helper()
	cr := &countingReader{r: bytes.NewReader(data)}
	tr := tar.NewReader(cr)
	for {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("no entry %s: %v", prefix, err)
		}
		if strings.HasPrefix(h.Name, prefix) {
			return cr.n
		}
	}
}

// headerEntry returns an entry of the uncompressed header.tar of an
// artifact.
func headerEntry(t *testing.T, artifactData []byte, name string) string {
	t.Helper()
	off := entryOffset(t, artifactData, "header.tar")
	tr := tar.NewReader(bytes.NewReader(artifactData[off:]))
	for {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("header.tar has no %s: %v", name, err)
		}
		if h.Name == name {
			data, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			return string(data)
		}
	}
}

func readBytes(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// assertNoTempFiles fails if a temporary file of writeFileAtomic is left.
func assertNoTempFiles(t *testing.T, dir string) {
	t.Helper()
	tmps, _ := filepath.Glob(filepath.Join(dir, ".*.tmp-*"))
	if len(tmps) > 0 {
		t.Errorf("temporary files left behind: %v", tmps)
	}
}

// TestWriteFlags checks the flags reach the artifact as mender-artifact's
// do, plus Gitfleet's list-valued --depends, with the default output name.
func TestWriteFlags(t *testing.T) {
	dir := t.TempDir()
	img, extra, meta := payloadFiles(t, dir)
	script := filepath.Join(dir, "ArtifactInstall_Enter_00_migrate")
	writeFile(t, script, []byte("#!/bin/sh\nexit 0\n"))
	t.Chdir(dir)
	out := mustGitfleet(t, "artifact", "write", "module-image", "-n", "app-2.1", "-t", "pi4",
		"-T", "single-file", "-f", img, "-f", extra, "-m", meta,
		"-p", "app.version:2.1", "-p", "url:http://x:8080/",
		"-d", "hw:rev1", "-d", "hw:rev2", "-d", "app.version:2.0",
		"--clears-provides", "app.*", "-g", "beta", "-G", "alpha", "-G", "beta", "-N", "app-2.0",
		"-s", script, "--software-name", "app", "--software-version", "2.1.0", "--software-filesystem", "data",
		"--compression", "lzma")
	if out != "wrote app-2.1.mender (xz, unsigned)\n" {
		t.Errorf("write printed %q", out)
	}
	v := readJSON(t, "app-2.1.mender")
	p := v["payloads"].([]any)[0].(map[string]any)
	got := map[string]any{
		"group": v["artifact_group"], "depends_groups": v["depends_artifact_group"],
		"depends_names": v["depends_artifact_name"], "scripts": v["scripts"],
		"type": p["type"], "provides": p["provides"], "depends": p["depends"],
		"clears": p["clears_provides"], "meta": p["meta_data"], "signature": v["signature"],
	}
	want := map[string]any{
		"group": "beta", "depends_groups": []any{"alpha", "beta"},
		"depends_names": []any{"app-2.0"}, "scripts": []any{"ArtifactInstall_Enter_00_migrate"},
		"type":     "single-file",
		"provides": map[string]any{"app.version": "2.1", "url": "http://x:8080/", "data.app.version": "2.1.0"},
		"depends":  map[string]any{"hw": []any{"rev1", "rev2"}, "app.version": "2.0"},
		"clears":   []any{"app.*", "data.app.*"},
		"meta": map[string]any{"service": "app", "build": float64(12345678901234567890),
			"tags": []any{"a", "b"}},
		"signature": map[string]any{"status": "none"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("artifact read --json (-want +got):\n%s", diff)
	}
	// The big number is written as given, not rounded through a float.
	mustGitfleet(t, "artifact", "write", "module-image", "-n", "md", "-t", "pi4", "-T", "x", "-m", meta,
		"--compression", "none", "-o", "md.mender")
	if md := headerEntry(t, readBytes(t, "md.mender"), "headers/0000/meta-data"); !strings.Contains(md, `"build":12345678901234567890`) {
		t.Errorf("meta-data written as %s", md)
	}
	summary := mustGitfleet(t, "artifact", "read", "app-2.1.mender")
	for _, want := range []string{"Name: app-2.1", "Signature: none", "Compression: xz", "Compatible devices: pi4",
		"Provides group: beta", "ArtifactInstall_Enter_00_migrate", `hw: ["rev1","rev2"]`, "size:     10"} {
		if !strings.Contains(summary, want) {
			t.Errorf("read summary lacks %q:\n%s", want, summary)
		}
	}
	// mender-artifact reads the list-valued depends too.
	info := mustMenderArtifact(t, "read", "app-2.1.mender")
	if !strings.Contains(info, "hw: [rev1 rev2]") {
		t.Errorf("mender-artifact read:\n%s", info)
	}

	// rootfs-image defaults, as mender-artifact writes them.
	mustGitfleet(t, "artifact", "write", "rootfs-image", "-n", "os-1", "-t", "pi4", "-f", img, "--no-default-clears-provides")
	p = readJSON(t, "os-1.mender")["payloads"].([]any)[0].(map[string]any)
	if p["clears_provides"] != nil || p["provides"].(map[string]any)["rootfs-image.version"] != "os-1" {
		t.Errorf("rootfs-image payload: %v", p)
	}

	// --expect: the digests of files the new image changes, read from the
	// tree it is built from, in the meta-data the agent hands to its
	// monitoring.
	tree := filepath.Join(dir, "rootfs")
	if err := os.MkdirAll(filepath.Join(tree, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(tree, "etc", "app.conf"), []byte("level = debug\n"))
	mustGitfleet(t, "artifact", "write", "rootfs-image", "-n", "os-2", "-t", "pi4", "-f", img,
		"--expect-root", tree, "--expect", "/etc/app.conf", "-m", meta)
	p = readJSON(t, "os-2.mender")["payloads"].([]any)[0].(map[string]any)
	md, _ := p["meta_data"].(map[string]any)
	sum := sha256.Sum256([]byte("level = debug\n"))
	if want := map[string]any{"/etc/app.conf": "sha256:" + hex.EncodeToString(sum[:])}; !cmp.Equal(md[artifact.ExpectedDigestsKey], want) || md["service"] != "app" {
		t.Errorf("rootfs-image meta-data %v, want %s %v and the -m file's keys", md, artifact.ExpectedDigestsKey, want)
	}
}

// TestWriteErrors checks bad flags give one clear error each, exit 2, and
// leave no file behind.
func TestWriteErrors(t *testing.T) {
	dir := t.TempDir()
	keys := genKeys(t, dir, "ed25519")
	img, extra, _ := payloadFiles(t, dir)
	notObject := filepath.Join(dir, "list.json")
	writeFile(t, notObject, []byte(`[1,2]`))
	badScript := filepath.Join(dir, "install.sh")
	writeFile(t, badScript, []byte("#!/bin/sh\n"))
	out := filepath.Join(dir, "out.mender")
	base := []string{"artifact", "write", "rootfs-image", "-n", "x", "-t", "pi4", "-o", out}
	module := []string{"artifact", "write", "module-image", "-n", "x", "-t", "pi4", "-o", out}
	tests := []struct {
		name string
		args []string
		want []string
		code int
	}{
		{"nothing", []string{"artifact", "write", "rootfs-image"},
			[]string{"-n/--artifact-name is required", "-t/--device-type is required", "exactly one file, got 0"}, 2},
		{"two rootfs files", append(base, "-f", img, "-f", extra), []string{"exactly one file, got 2", "use module-image"}, 2},
		{"missing file", append(base, "-f", filepath.Join(dir, "nope")), []string{"-f/--file", "no such file"}, 2},
		{"directory as file", append(base, "-f", dir), []string{"not a regular file"}, 2},
		{"module without type", append(module, "-f", img), []string{"-T/--type is required"}, 2},
		{"bad provides", append(base, "-f", img, "-p", "novalue"), []string{`-p/--provides "novalue": want KEY:VALUE`}, 2},
		{"duplicate provides", append(base, "-f", img, "-p", "a:1", "-p", "a:2"), []string{"a given twice"}, 2},
		{"artifact_name as provides", append(base, "-f", img, "-p", "artifact_name:y"), []string{"set with -n/--artifact-name"}, 2},
		{"bad depends", append(base, "-f", img, "-d", ":v"), []string{"-d/--depends", "want KEY:VALUE"}, 2},
		{"bad compression", append(base, "-f", img, "--compression", "bz2"), []string{"--compression", "use none, gzip, zstd or xz"}, 2},
		{"public key to sign", append(base, "-f", img, "-k", keys["ed25519"].pub), []string{"-k/--key", "public key; signing needs the private key"}, 2},
		{"meta-data not object", append(module, "-T", "x", "-f", img, "-m", notObject), []string{"-m/--meta-data", "must be a JSON object", "an array"}, 2},
		{"meta-data not JSON", append(module, "-T", "x", "-f", img, "-m", img), []string{"-m/--meta-data", "not valid JSON"}, 2},
		{"expect without root", append(base, "-f", img, "--expect", "/etc/passwd"), []string{"--expect needs --expect-root"}, 2},
		{"expect root without files", append(base, "-f", img, "--expect-root", dir), []string{"--expect-root without --expect"}, 2},
		{"expect relative path", append(base, "-f", img, "--expect-root", dir, "--expect", "etc/passwd"), []string{"--expect", "not a clean absolute path"}, 2},
		{"expect missing file", append(base, "-f", img, "--expect-root", dir, "--expect", "/etc/nope"), []string{"--expect", "/etc/nope", "no such file"}, 2},
		{"positional argument", append(base, img), []string{"unexpected argument", "-f/--file"}, 2},
		{"unknown flag", append(base, "--bogus"), []string{"unknown flag: --bogus"}, 2},
		{"bad script name", append(base, "-f", img, "-s", badScript), []string{`state script "install.sh"`}, 1},
		{"bad module type", append(module, "-T", "a b", "-f", img), []string{"not a valid update type"}, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			stdout, _, err := gitfleet(t, tc.args...)
			if err == nil {
				t.Fatalf("no error; stdout %q", stdout)
			}
			if code := exitCode(err); code != tc.code {
				t.Errorf("exit %d, want %d (%v)", code, tc.code, err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
			if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("output file exists after a failed write")
			}
			assertNoTempFiles(t, dir)
		})
	}
}

// TestWriteKeepsOldOutput checks a failing write leaves an existing output
// file as it was.
func TestWriteKeepsOldOutput(t *testing.T) {
	dir := t.TempDir()
	img, _, _ := payloadFiles(t, dir)
	out := filepath.Join(dir, "a.mender")
	writeFile(t, out, []byte("old"))
	bad := filepath.Join(dir, "Bogus_Enter_00")
	writeFile(t, bad, []byte("#!/bin/sh\n"))
	_, _, err := gitfleet(t, "artifact", "write", "rootfs-image", "-n", "a", "-t", "pi4", "-f", img, "-s", bad, "-o", out)
	if err == nil {
		t.Fatal("write with an invalid state script name succeeded")
	}
	if got := string(readBytes(t, out)); got != "old" {
		t.Errorf("output file now holds %q", got)
	}
	assertNoTempFiles(t, dir)
}

// TestReadVerifyErrors covers the usage and trust errors of read and verify.
func TestReadVerifyErrors(t *testing.T) {
	dir := t.TempDir()
	keys := genKeys(t, dir, "ecdsa")
	img, _, _ := payloadFiles(t, dir)
	art := filepath.Join(dir, "unsigned.mender")
	mustGitfleet(t, "artifact", "write", "rootfs-image", "-n", "u", "-t", "pi4", "-f", img, "-o", art)
	tests := []struct {
		name string
		args []string
		want string
		code int
	}{
		{"verify without key", []string{"artifact", "verify", art}, "-k/--key is required", 2},
		{"verify unsigned", []string{"artifact", "verify", art, "-k", keys["ecdsa"].pub}, "signature missing", 1},
		{"verify with private key", []string{"artifact", "verify", art, "-k", keys["ecdsa"].priv}, "private key; verification takes the public key", 2},
		{"read missing file", []string{"artifact", "read", filepath.Join(dir, "nope.mender")}, "no such file", 1},
		{"read not an artifact", []string{"artifact", "read", img}, "artifact:", 1},
		{"read two files", []string{"artifact", "read", art, art}, "want 1 argument", 2},
		{"sign without key", []string{"artifact", "sign", art}, "-k/--key is required", 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := gitfleet(t, tc.args...)
			if exitCode(err) != tc.code || err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("exit %d, error %v; want exit %d and %q", exitCode(err), err, tc.code, tc.want)
			}
		})
	}
	summary := mustGitfleet(t, "artifact", "read", art)
	if !strings.Contains(summary, "Signature: none") {
		t.Errorf("summary of an unsigned artifact:\n%s", summary)
	}
	signed := filepath.Join(dir, "signed.mender")
	mustGitfleet(t, "artifact", "sign", art, "-k", keys["ecdsa"].priv, "-o", signed)
	if s := mustGitfleet(t, "artifact", "read", signed); !strings.Contains(s, "Signature: present, not verified") {
		t.Errorf("summary of a signed artifact read without a key:\n%s", s)
	}
}

// TestProgressBar checks the progress line is throttled, shows percent, MiB
// and rate, and is cleared; and that it is never drawn off a terminal.
func TestProgressBar(t *testing.T) {
	var buf bytes.Buffer
	now := time.Unix(1000, 0)
	clock := func() time.Time { return now }
	p := newProgressBar(&buf, "reading", 100<<20, clock)
	p.Update(0)
	now = now.Add(50 * time.Millisecond)
	p.Update(10 << 20) // too soon after the first draw
	now = now.Add(950 * time.Millisecond)
	p.Update(50 << 20)
	p.Done()
	want := "\rreading   0%  0.0/100.0 MiB  0.0 MiB/s" +
		"\rreading  50%  50.0/100.0 MiB  50.0 MiB/s" +
		"\r" + strings.Repeat(" ", len("reading  50%  50.0/100.0 MiB  50.0 MiB/s")) + "\r"
	if got := buf.String(); got != want {
		t.Errorf("progress output\n got %q\nwant %q", got, want)
	}

	var nilBar *progressBar
	nilBar.Update(1) // a nil bar draws nothing and does not panic
	nilBar.Done()
	for _, tc := range []struct {
		name  string
		quiet bool
		total int64
	}{{"not a terminal", false, 1 << 30}, {"quiet", true, 1 << 30}, {"small", false, 1 << 20}} {
		if p := newProgress(&buf, tc.quiet, "x", tc.total); p != nil {
			t.Errorf("%s: newProgress returned a bar", tc.name)
		}
	}
	// Commands given a non-terminal stderr print no progress, even for an
	// artifact above the threshold.
	dir := t.TempDir()
	big := filepath.Join(dir, "big.img")
	writeFile(t, big, bytes.Repeat([]byte{7}, progressThreshold+1))
	art := filepath.Join(dir, "big.mender")
	_, stderr, err := gitfleet(t, "artifact", "write", "rootfs-image", "-n", "b", "-t", "pi4", "-f", big, "--compression", "none", "-o", art)
	if err != nil || stderr != "" {
		t.Errorf("write: err %v, stderr %q", err, stderr)
	}
	if _, stderr, err = gitfleet(t, "artifact", "read", art); err != nil || stderr != "" {
		t.Errorf("read: err %v, stderr %q", err, stderr)
	}
}
