package artifact

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// These tests use Debian's mender-artifact 3.9 as the peer. It writes none,
// gzip and lzma (xz) compression and signs with RSA and ECDSA P-256; it
// supports neither zstd nor Ed25519, which stay Gitfleet extensions.

var interopCompressions = []struct {
	ours   Compression
	theirs string
}{{None, "none"}, {Gzip, "gzip"}, {XZ, "lzma"}}

type keyFiles struct {
	alg       Algorithm
	priv, pub string
	signer    *Signer
	verifier  *Verifier
}

func writeKeys(t *testing.T, dir string, alg Algorithm) keyFiles {
	t.Helper()
	priv, pub, err := GenerateKey(alg)
	if err != nil {
		t.Fatal(err)
	}
	k := keyFiles{alg: alg, priv: filepath.Join(dir, string(alg)+".key"), pub: filepath.Join(dir, string(alg)+".pub")}
	if err := os.WriteFile(k.priv, priv, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(k.pub, pub, 0o644); err != nil {
		t.Fatal(err)
	}
	if k.signer, err = LoadSigner(priv); err != nil {
		t.Fatal(err)
	}
	if k.verifier, err = LoadVerifier(pub); err != nil {
		t.Fatal(err)
	}
	return k
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func TestInteropMenderArtifactWrites(t *testing.T) {
	ma := needTool(t, "mender-artifact")
	dir := t.TempDir()
	rootfs := filepath.Join(dir, "rootfs.ext4")
	os.WriteFile(rootfs, bytes.Repeat([]byte("ext4 image "), 30000), 0o644)
	f1, f2 := filepath.Join(dir, "a.txt"), filepath.Join(dir, "b.bin")
	os.WriteFile(f1, []byte("hello module\n"), 0o644)
	os.WriteFile(f2, bytes.Repeat([]byte{0, 1, 2}, 5000), 0o644)
	meta := filepath.Join(dir, "meta.json")
	os.WriteFile(meta, []byte(`{"dest_dir":"/opt/app"}`), 0o644)

	for _, alg := range []Algorithm{ECDSAP256, RSA} {
		k := writeKeys(t, dir, alg)
		for _, c := range interopCompressions {
			for _, kind := range []string{"rootfs-image", "module-image"} {
				t.Run(string(alg)+"/"+c.theirs+"/"+kind, func(t *testing.T) {
					out := filepath.Join(dir, string(alg)+c.theirs+kind+".mender")
					args := []string{"write", kind, "-t", "board-x", "-t", "board-y", "-n", "their-1", "-o", out,
						"--compression", c.theirs, "-k", k.priv}
					if kind == "rootfs-image" {
						args = append(args, "-f", rootfs)
					} else {
						args = append(args, "-T", "app", "-f", f1, "-f", f2, "-m", meta, "-p", "app.version:7", "-d", "libc:2", "-g", "grp")
					}
					run(t, ma, args...)
					data, err := os.ReadFile(out)
					if err != nil {
						t.Fatal(err)
					}
					h, files, err := readAll(data, ReaderOptions{Verifiers: []*Verifier{k.verifier}})
					if err != nil {
						t.Fatalf("gitfleet refuses mender-artifact's %s: %v", kind, err)
					}
					if h.Name() != "their-1" || strings.Join(h.DeviceTypes(), ",") != "board-x,board-y" {
						t.Errorf("header %+v", h.Info)
					}
					if kind == "rootfs-image" {
						if len(files["data/0000/rootfs.ext4"]) != 330000 {
							t.Errorf("rootfs file: %d bytes", len(files["data/0000/rootfs.ext4"]))
						}
					} else {
						if string(files["data/0000/a.txt"]) != "hello module\n" || len(files["data/0000/b.bin"]) != 15000 {
							t.Errorf("module files %v", keysOf(files))
						}
						p := h.Payloads[0]
						if p.Type != "app" || p.TypeInfo.Provides["app.version"] != "7" || p.MetaData["dest_dir"] != "/opt/app" || h.Info.Provides.Group != "grp" {
							t.Errorf("payload %+v", p)
						}
					}
					// A flipped byte anywhere in their artifact is refused
					// (about 400 spread offsets here; TestFlipEveryByte
					// does every one on smaller artifacts).
					comp, _ := ParseCompression(c.theirs)
					checkFlips(t, data, ReaderOptions{Verifiers: []*Verifier{k.verifier}}, comp, max(7, len(data)/400))
					// And another key is refused.
					other := testKey(t, alg)
					if _, _, err := readAll(data, ReaderOptions{Verifiers: []*Verifier{other.Verifier()}}); !errors.Is(err, ErrSignature) {
						t.Errorf("wrong key: %v", err)
					}
				})
			}
		}
	}
}

func keysOf(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestInteropMenderArtifactReads(t *testing.T) {
	ma := needTool(t, "mender-artifact")
	dir := t.TempDir()
	rootfs := bytes.Repeat([]byte("ext4 image "), 30000)
	for _, alg := range []Algorithm{ECDSAP256, RSA} {
		k := writeKeys(t, dir, alg)
		for _, c := range interopCompressions {
			for _, kind := range []string{"rootfs-image", "module-image"} {
				t.Run(string(alg)+"/"+string(c.ours)+"/"+kind, func(t *testing.T) {
					spec := Spec{Name: "ours-1", DeviceTypes: []string{"board-x"}, Compression: c.ours, Signer: k.signer, Group: "grp"}
					if kind == "rootfs-image" {
						spec.Payloads = []PayloadSpec{RootfsImage(memFile("rootfs.ext4", rootfs), "ours-1", Software{})}
					} else {
						p := ModuleImage("app", []FileSpec{memFile("a.txt", []byte("hello\n")), memFile("b.bin", rootfs[:777])}, "ours-1", Software{})
						p.MetaData = map[string]any{"dest_dir": "/opt/app"}
						p.Depends = map[string]any{"libc": "2"}
						spec.Payloads = []PayloadSpec{p}
						spec.Scripts = []Script{{Name: "ArtifactInstall_Enter_00", Data: []byte("#!/bin/sh\ntrue\n")}}
					}
					path := filepath.Join(dir, string(alg)+string(c.ours)+kind+".mender")
					var buf bytes.Buffer
					if err := Write(context.Background(), &buf, spec); err != nil {
						t.Fatal(err)
					}
					os.WriteFile(path, buf.Bytes(), 0o644)
					out := run(t, ma, "validate", "-k", k.pub, path)
					if !strings.Contains(out, "validated successfully") {
						t.Fatalf("mender-artifact validate: %s", out)
					}
					out = run(t, ma, "read", "-k", k.pub, path)
					for _, want := range []string{"Name: ours-1", "Signature: signed and verified correctly", "board-x"} {
						if !strings.Contains(out, want) {
							t.Errorf("mender-artifact read does not show %q:\n%s", want, out)
						}
					}
					if kind == "module-image" && !strings.Contains(out, "ArtifactInstall_Enter_00") {
						t.Errorf("state script missing from mender-artifact read:\n%s", out)
					}
					// mender-artifact refuses it with another key, too.
					other := writeKeys(t, t.TempDir(), alg)
					if err := exec.Command(ma, "validate", "-k", other.pub, path).Run(); err == nil {
						t.Error("mender-artifact validated with the wrong key")
					}
				})
			}
		}
	}
}

func TestInteropSignEachOther(t *testing.T) {
	ma := needTool(t, "mender-artifact")
	dir := t.TempDir()
	k := writeKeys(t, dir, ECDSAP256)
	payload := filepath.Join(dir, "p")
	os.WriteFile(payload, []byte("payload"), 0o644)

	// Theirs unsigned, signed by us, validated by them.
	theirs := filepath.Join(dir, "theirs.mender")
	run(t, ma, "write", "module-image", "-t", "d", "-n", "n", "-T", "m", "-f", payload, "-o", theirs)
	in, _ := os.ReadFile(theirs)
	var signed bytes.Buffer
	if err := Sign(bytes.NewReader(in), &signed, k.signer); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(theirs, signed.Bytes(), 0o644)
	run(t, ma, "validate", "-k", k.pub, theirs)

	// Ours unsigned, signed by them, verified by us.
	ours := filepath.Join(dir, "ours.mender")
	var buf bytes.Buffer
	if err := Write(context.Background(), &buf, Spec{Name: "n", DeviceTypes: []string{"d"},
		Payloads: []PayloadSpec{ModuleImage("m", []FileSpec{{Path: payload}}, "n", Software{})}}); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(ours, buf.Bytes(), 0o644)
	run(t, ma, "sign", "-k", k.priv, ours)
	data, _ := os.ReadFile(ours)
	if _, _, err := readAll(data, ReaderOptions{Verifiers: []*Verifier{k.verifier}}); err != nil {
		t.Fatalf("their signature on our artifact: %v", err)
	}
}
