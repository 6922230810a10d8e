package artifact_test

// The attacks on package artifact, each with the refusal it must meet.
// docs/security.md lists them.

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gitfleet/gitfleet/artifact"
	"github.com/gitfleet/gitfleet/artifact/artifacttest"
)

var (
	runScript  = []byte("#!/bin/sh\necho signed\n")
	evilScript = []byte("#!/bin/sh\necho unsigned >/tmp/pwned\n")
)

func newSigner(t *testing.T) *artifact.Signer {
	t.Helper()
	priv, _, err := artifact.GenerateKey(artifact.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	s, err := artifact.LoadSigner(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// augmentedAttack is the attack of issue 10: a signed script artifact whose
// payload carries evil.sh, listed only in the unsigned manifest-augment.
func augmentedAttack(t *testing.T, s *artifact.Signer) []byte {
	t.Helper()
	data, err := artifacttest.Augmented(artifacttest.AugmentedOptions{
		Signer:    s,
		Signed:    map[string][]byte{"run.sh": runScript},
		Augmented: map[string][]byte{"evil.sh": evilScript},
	})
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// menderAugmented has mender-artifact write a signed module artifact with
// an --augment-file (skipped when mender-artifact is not installed).
func menderAugmented(t *testing.T) (data []byte, pub []byte) {
	t.Helper()
	ma, err := exec.LookPath("mender-artifact")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("mender-artifact not installed")
		}
		t.Skip("mender-artifact not installed")
	}
	dir := t.TempDir()
	priv, pub, err := artifact.GenerateKey(artifact.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	key, run, evil := write("k.pem", priv), write("run.sh", runScript), write("evil.sh", evilScript)
	out := filepath.Join(dir, "a.mender")
	cmd := exec.Command(ma, "write", "module-image", "-T", "script", "-t", "sim", "-n", "their-aug-1",
		"-f", run, "--augment-file", evil, "--augment-type", "script", "-k", key, "-o", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mender-artifact: %v\n%s", err, b)
	}
	data, err = os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return data, pub
}

type attack struct {
	name string
	data func(t *testing.T) ([]byte, artifact.ReaderOptions)
	is   error
	says string
}

func runAttacks(t *testing.T, attacks []attack) {
	t.Helper()
	for _, tc := range attacks {
		t.Run(tc.name, func(t *testing.T) {
			data, opts := tc.data(t)
			h, files, err := artifact.ReadFiles(data, opts)
			if err == nil {
				t.Fatalf("accepted: %s with files %v", h.Name(), keys(files))
			}
			if !errors.Is(err, tc.is) {
				t.Errorf("error %q is not %v", err, tc.is)
			}
			if !strings.Contains(err.Error(), tc.says) {
				t.Errorf("error %q does not say %q", err, tc.says)
			}
		})
	}
}

func keys(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func withKey(s *artifact.Signer) artifact.ReaderOptions {
	return artifact.ReaderOptions{Verifiers: []*artifact.Verifier{s.Verifier()}}
}

func TestAttackAugmentedFiles(t *testing.T) {
	runAttacks(t, []attack{
		{"signed script artifact + data file listed only in manifest-augment, read with the key → ErrAugmented naming it",
			func(t *testing.T) ([]byte, artifact.ReaderOptions) {
				s := newSigner(t)
				return augmentedAttack(t, s), withKey(s)
			}, artifact.ErrAugmented, "manifest-augment, data/0000/evil.sh"},
		{"same artifact, signature checked elsewhere (RequireCovered) → ErrAugmented",
			func(t *testing.T) ([]byte, artifact.ReaderOptions) {
				return augmentedAttack(t, newSigner(t)), artifact.ReaderOptions{RequireCovered: true}
			}, artifact.ErrAugmented, "delta updates"},
		{"mender-artifact write --augment-file, signed, read with the key → ErrAugmented",
			func(t *testing.T) ([]byte, artifact.ReaderOptions) {
				data, pub := menderAugmented(t)
				v, err := artifact.LoadVerifier(pub)
				if err != nil {
					t.Fatal(err)
				}
				return data, artifact.ReaderOptions{Verifiers: []*artifact.Verifier{v}}
			}, artifact.ErrAugmented, "header-augment.tar.gz"},
		{"unsigned artifact with augmented files, read with a key → ErrAugmented",
			func(t *testing.T) ([]byte, artifact.ReaderOptions) {
				s := newSigner(t)
				data, err := artifacttest.Augmented(artifacttest.AugmentedOptions{
					Signed: map[string][]byte{"run.sh": runScript}, Augmented: map[string][]byte{"evil.sh": evilScript}})
				if err != nil {
					t.Fatal(err)
				}
				return data, withKey(s)
			}, artifact.ErrAugmented, "evil.sh"},
		{"signed artifact + data file listed in no manifest → ErrManifest",
			func(t *testing.T) ([]byte, artifact.ReaderOptions) {
				s := newSigner(t)
				data := augmentedAttack(t, s)
				// Drop the manifest-augment entry: evil.sh is now listed nowhere.
				return dropEntry(t, data, "manifest-augment"), withKey(s)
			}, artifact.ErrManifest, "data/0000/evil.sh"},
	})
}

// TestAugmentedWithoutKey: with no key to verify with, augmented artifacts
// read as mender-artifact reads them, and Header.Covered names what the
// signature does not cover (the controller's check with detached
// signatures).
func TestAugmentedWithoutKey(t *testing.T) {
	check := func(t *testing.T, data []byte, evil string) {
		h, files, err := artifact.ReadFiles(data, artifact.ReaderOptions{})
		if err != nil {
			t.Fatalf("without a key: %v", err)
		}
		if !bytes.Equal(files["data/0000/run.sh"], runScript) || !bytes.Equal(files["data/0000/"+evil], evilScript) {
			t.Fatalf("files %v", keys(files))
		}
		if err := h.Covered(); !errors.Is(err, artifact.ErrAugmented) || !strings.Contains(err.Error(), "data/0000/"+evil) {
			t.Fatalf("Covered() = %v, want ErrAugmented naming data/0000/%s", err, evil)
		}
	}
	t.Run("hand-built", func(t *testing.T) { check(t, augmentedAttack(t, newSigner(t)), "evil.sh") })
	t.Run("mender-artifact", func(t *testing.T) {
		data, _ := menderAugmented(t)
		check(t, data, "evil.sh")
	})
	t.Run("plain signed artifact is covered", func(t *testing.T) {
		s := newSigner(t)
		data, err := artifacttest.Augmented(artifacttest.AugmentedOptions{Signer: s, Signed: map[string][]byte{"run.sh": runScript}})
		if err != nil {
			t.Fatal(err)
		}
		h, _, err := artifact.ReadFiles(data, withKey(s))
		if err != nil {
			t.Fatal(err)
		}
		if err := h.Covered(); err != nil {
			t.Fatal(err)
		}
	})
}

// TestAttackUnsignedHeader: state scripts, meta-data and type-info live in
// header.tar*, whose digest the signed manifest lists; changing any of them
// after signing is refused.
func TestAttackUnsignedHeader(t *testing.T) {
	swapHeader := func(extra ...string) func(t *testing.T) ([]byte, artifact.ReaderOptions) {
		return func(t *testing.T) ([]byte, artifact.ReaderOptions) {
			s := newSigner(t)
			data := augmentedAttack(t, s)
			data = dropEntry(t, data, "manifest-augment")
			return editHeader(t, data, extra...), withKey(s)
		}
	}
	runAttacks(t, []attack{
		{"state script added to the header after signing → ErrDigest",
			swapHeader("scripts/ArtifactInstall_Enter_00", "#!/bin/sh\nrm -rf /\n"), artifact.ErrDigest, "header.tar"},
		{"meta-data added to the header after signing → ErrDigest",
			swapHeader("headers/0000/meta-data", `{"dest_dir":"/etc"}`), artifact.ErrDigest, "header.tar"},
	})
}

func TestAttackDecompressionBombs(t *testing.T) {
	runAttacks(t, []attack{
		{"gzip header that unpacks to 20 MiB → ErrTooLarge",
			func(t *testing.T) ([]byte, artifact.ReaderOptions) {
				return artifact.HeaderBomb(t), artifact.ReaderOptions{}
			},
			artifact.ErrTooLarge, "header.tar.gz"},
		{"xz header asking for a 4 GiB dictionary → ErrTooLarge",
			func(t *testing.T) ([]byte, artifact.ReaderOptions) {
				return artifact.XZDictBomb(t), artifact.ReaderOptions{}
			}, artifact.ErrTooLarge, "dictionary"},
		{"zstd payload asking for a 2 TiB window → refused before allocating",
			func(t *testing.T) ([]byte, artifact.ReaderOptions) {
				return artifact.ZstdWindowBomb(t), artifact.ReaderOptions{}
			}, artifact.ErrFormat, "window"},
	})
}

func TestAttackBadSignatures(t *testing.T) {
	runAttacks(t, []attack{
		{"unsigned artifact where a key is required → ErrSignatureMissing",
			func(t *testing.T) ([]byte, artifact.ReaderOptions) {
				data, err := artifacttest.Augmented(artifacttest.AugmentedOptions{Signed: map[string][]byte{"run.sh": runScript}})
				if err != nil {
					t.Fatal(err)
				}
				return data, withKey(newSigner(t))
			}, artifact.ErrSignatureMissing, "not signed"},
		{"artifact signed by an untrusted key → ErrSignature",
			func(t *testing.T) ([]byte, artifact.ReaderOptions) {
				data, err := artifacttest.Augmented(artifacttest.AugmentedOptions{Signer: newSigner(t), Signed: map[string][]byte{"run.sh": runScript}})
				if err != nil {
					t.Fatal(err)
				}
				return data, withKey(newSigner(t))
			}, artifact.ErrSignature, ""},
		{"manifest edited after signing → ErrSignature",
			func(t *testing.T) ([]byte, artifact.ReaderOptions) {
				s := newSigner(t)
				data := artifact.ReplaceEntry(t, dropEntry(t, augmentedAttack(t, s), "manifest-augment"), "manifest", func(b []byte) []byte {
					return append(b, []byte(strings.Repeat("0", 64)+"  data/0000/evil.sh\n")...)
				})
				return data, withKey(s)
			}, artifact.ErrSignature, ""},
		{"manifest.sig that is not base64 → ErrSignature",
			func(t *testing.T) ([]byte, artifact.ReaderOptions) {
				s := newSigner(t)
				data := artifact.ReplaceEntry(t, dropEntry(t, augmentedAttack(t, s), "manifest-augment"), "manifest.sig", func(b []byte) []byte {
					return append([]byte("!"), b[1:]...)
				})
				return data, withKey(s)
			}, artifact.ErrSignature, "base64"},
		{"empty manifest.sig → ErrSignature",
			func(t *testing.T) ([]byte, artifact.ReaderOptions) {
				s := newSigner(t)
				data := artifact.ReplaceEntry(t, dropEntry(t, augmentedAttack(t, s), "manifest-augment"), "manifest.sig", func([]byte) []byte { return nil })
				return data, withKey(s)
			}, artifact.ErrSignature, "empty"},
	})
}

func TestAttackBadKeyTypes(t *testing.T) {
	pubPEM := func(t *testing.T, pub any) []byte {
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	}
	for _, tc := range []struct {
		name string
		key  func(t *testing.T) []byte
		says string
	}{
		{"RSA key of 1024 bits → ErrUnsupportedKey", func(t *testing.T) []byte {
			k, err := rsa.GenerateKey(rand.Reader, 1024)
			if err != nil {
				t.Fatal(err)
			}
			return pubPEM(t, &k.PublicKey)
		}, "1024 bits"},
		{"ECDSA P-384 key → ErrUnsupportedKey", func(t *testing.T) []byte {
			k, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			return pubPEM(t, &k.PublicKey)
		}, "P-384"},
		{"private key given as a trusted key → ErrUnsupportedKey", func(t *testing.T) []byte {
			priv, _, err := artifact.GenerateKey(artifact.ECDSAP256)
			if err != nil {
				t.Fatal(err)
			}
			return priv
		}, "private key"},
		{"not PEM → ErrUnsupportedKey", func(t *testing.T) []byte { return []byte("ssh-ed25519 AAAA…") }, "not a PEM"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := artifact.LoadVerifier(tc.key(t))
			if !errors.Is(err, artifact.ErrUnsupportedKey) || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("LoadVerifier: %v, want ErrUnsupportedKey saying %q", err, tc.says)
			}
		})
	}
}

func dropEntry(t *testing.T, data []byte, name string) []byte {
	return artifact.ReplaceEntry(t, data, name, nil)
}

// editHeader adds name=content pairs to the (uncompressed) header.tar.
func editHeader(t *testing.T, data []byte, pairs ...string) []byte {
	return artifact.ReplaceEntry(t, data, "header.tar", func(b []byte) []byte {
		return artifact.AppendTar(t, b, pairs...)
	})
}
