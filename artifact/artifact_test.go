package artifact

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestRoundTrip(t *testing.T) {
	rootfs := bytes.Repeat([]byte("rootfs block "), 40000)
	for _, c := range []Compression{None, Gzip, Zstd, XZ} {
		for _, alg := range []Algorithm{ECDSAP256, RSA, Ed25519} {
			t.Run(string(c)+"/"+string(alg), func(t *testing.T) {
				s := testKey(t, alg)
				spec := Spec{
					Name: "rel-2", DeviceTypes: []string{"rpi4"}, Group: "stable",
					DependsNames: []string{"rel-1"}, DependsGroups: []string{"stable"},
					Compression: c, Signer: s,
					Scripts: []Script{{Name: "ArtifactInstall_Enter_00", Data: []byte("#!/bin/sh\nexit 0\n")}},
					Payloads: []PayloadSpec{
						RootfsImage(memFile("rootfs.ext4", rootfs), "rel-2", Software{}),
						{Type: "app", Files: []FileSpec{memFile("app.bin", []byte("app")), memFile("empty", nil)},
							MetaData: map[string]any{"restart": true}, Depends: map[string]any{"app.version": []string{"1", "2"}},
							Provides: map[string]string{"app.version": "3"}},
						{Type: "no-files", MetaData: map[string]any{"url": "https://example.invalid/x"}},
					},
				}
				data := build(t, spec)
				h, files, err := readAll(data, ReaderOptions{Verifiers: []*Verifier{s.Verifier()}})
				if err != nil {
					t.Fatalf("read: %v", err)
				}
				if got := h.Name(); got != "rel-2" {
					t.Errorf("name %q", got)
				}
				want := map[string][]byte{"data/0000/rootfs.ext4": rootfs, "data/0001/app.bin": []byte("app"), "data/0001/empty": {}}
				if diff := cmp.Diff(want, files); diff != "" {
					t.Errorf("files (-want +got):\n%s", diff)
				}
				if diff := cmp.Diff(HeaderInfo{
					Payloads: []PayloadType{{"rootfs-image"}, {"app"}, {"no-files"}},
					Provides: ArtifactProvides{Name: "rel-2", Group: "stable"},
					Depends:  ArtifactDepends{Names: []string{"rel-1"}, DeviceTypes: []string{"rpi4"}, Groups: []string{"stable"}},
				}, h.Info); diff != "" {
					t.Errorf("header-info (-want +got):\n%s", diff)
				}
				p0 := h.Payloads[0].TypeInfo
				if p0.Provides["rootfs-image.version"] != "rel-2" || len(p0.Provides["rootfs-image.checksum"]) != 64 {
					t.Errorf("rootfs provides %v", p0.Provides)
				}
				if got := h.Payloads[1].MetaData["restart"]; got != true {
					t.Errorf("meta-data %v", h.Payloads[1].MetaData)
				}
				if got := h.Depends()["app.version"]; !cmp.Equal(got, []string{"1", "2"}) {
					t.Errorf("depends %v", got)
				}
				if len(h.Scripts) != 1 || h.Scripts[0].Name != "ArtifactInstall_Enter_00" {
					t.Errorf("scripts %v", h.Scripts)
				}
			})
		}
	}
}

func TestDeterministic(t *testing.T) {
	a := build(t, moduleSpec(Gzip, nil))
	b := build(t, moduleSpec(Gzip, nil))
	if !bytes.Equal(a, b) {
		t.Fatal("the same spec wrote different bytes")
	}
}

func TestFileDigestAtEOF(t *testing.T) {
	// A consumer streaming a payload must not see a clean EOF on a tampered
	// file: the read that reaches the end reports the mismatch.
	data := build(t, Spec{Name: "x", DeviceTypes: []string{"d"}, Compression: None,
		Payloads: []PayloadSpec{{Type: "m", Files: []FileSpec{memFile("f", bytes.Repeat([]byte("A"), 5000))}}}})
	i := bytes.Index(data, bytes.Repeat([]byte("A"), 5000))
	data[i+4999] = 'B'
	ar, err := NewReader(bytes.NewReader(data), ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	f, err := ar.Next()
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.Copy(io.Discard, f)
	if !errors.Is(err, ErrDigest) {
		t.Fatalf("copy error %v, want ErrDigest", err)
	}
	if _, err := ar.Next(); !errors.Is(err, ErrDigest) {
		t.Fatalf("next after failure: %v, want the same sticky error", err)
	}
}

func TestUnreadFileIsChecked(t *testing.T) {
	data := build(t, Spec{Name: "x", DeviceTypes: []string{"d"}, Compression: Gzip,
		Payloads: []PayloadSpec{{Type: "m", Files: []FileSpec{memFile("a", []byte("aaaa")), memFile("b", []byte("bbbb"))}}}})
	ar, err := NewReader(bytes.NewReader(data), ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for {
		f, err := ar.Next() // files are never read by the caller
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, f.Name)
	}
	if !cmp.Equal(names, []string{"a", "b"}) {
		t.Fatalf("files %v", names)
	}
}

func TestSignVerify(t *testing.T) {
	for _, alg := range []Algorithm{ECDSAP256, RSA, Ed25519} {
		t.Run(string(alg), func(t *testing.T) {
			s, other := testKey(t, alg), testKey(t, alg)
			unsigned := build(t, moduleSpec(Gzip, nil))
			if _, _, err := readAll(unsigned, ReaderOptions{Verifiers: []*Verifier{s.Verifier()}}); !errors.Is(err, ErrSignatureMissing) {
				t.Fatalf("unsigned with key: %v, want ErrSignatureMissing", err)
			}
			var signed bytes.Buffer
			if err := Sign(bytes.NewReader(unsigned), &signed, s); err != nil {
				t.Fatal(err)
			}
			if _, _, err := readAll(signed.Bytes(), ReaderOptions{Verifiers: []*Verifier{s.Verifier()}}); err != nil {
				t.Fatalf("signed: %v", err)
			}
			if _, _, err := readAll(signed.Bytes(), ReaderOptions{Verifiers: []*Verifier{other.Verifier()}}); !errors.Is(err, ErrSignature) {
				t.Fatalf("wrong key: %v, want ErrSignature", err)
			}
			// Either trusted key is enough.
			ar, err := NewReader(bytes.NewReader(signed.Bytes()), ReaderOptions{Verifiers: []*Verifier{other.Verifier(), s.Verifier()}})
			if err != nil {
				t.Fatalf("two keys: %v", err)
			}
			if ar.SignedBy().Fingerprint() != s.Verifier().Fingerprint() {
				t.Fatal("SignedBy names the wrong key")
			}
			// Re-signing replaces the signature.
			var resigned bytes.Buffer
			if err := Sign(bytes.NewReader(signed.Bytes()), &resigned, other); err != nil {
				t.Fatal(err)
			}
			if _, _, err := readAll(resigned.Bytes(), ReaderOptions{Verifiers: []*Verifier{other.Verifier()}}); err != nil {
				t.Fatalf("re-signed: %v", err)
			}
			if _, _, err := readAll(resigned.Bytes(), ReaderOptions{Verifiers: []*Verifier{s.Verifier()}}); !errors.Is(err, ErrSignature) {
				t.Fatalf("old key on re-signed: %v", err)
			}
		})
	}
}

func TestECDSASignatureIsRaw(t *testing.T) {
	s := testKey(t, ECDSAP256)
	sig, err := s.Sign([]byte("manifest"))
	if err != nil {
		t.Fatal(err)
	}
	if len(sig) != 88 { // base64 of 64 bytes
		t.Fatalf("ECDSA manifest.sig is %d base64 chars, want 88 (raw r‖s)", len(sig))
	}
	if err := s.Verifier().Verify([]byte("manifest"), sig); err != nil {
		t.Fatal(err)
	}
	if err := s.Verifier().Verify([]byte("manifesT"), sig); !errors.Is(err, ErrSignature) {
		t.Fatalf("other message verified: %v", err)
	}
}

func TestKeyFormats(t *testing.T) {
	// PKCS#8, SEC1 and PKCS#1 private keys all load; public keys refuse to
	// sign and private keys refuse to verify, with a hint.
	for _, alg := range []Algorithm{ECDSAP256, RSA, Ed25519} {
		priv, pub, err := GenerateKey(alg)
		if err != nil {
			t.Fatal(err)
		}
		s, err := LoadSigner(priv)
		if err != nil {
			t.Fatalf("%s: %v", alg, err)
		}
		pk8 := pkcs8(t, priv)
		if _, err := LoadSigner(pk8); err != nil {
			t.Errorf("%s PKCS#8: %v", alg, err)
		}
		if _, err := LoadSigner(pub); err == nil || !strings.Contains(err.Error(), "public key") {
			t.Errorf("%s: signing with a public key: %v", alg, err)
		}
		if _, err := LoadVerifier(priv); err == nil || !strings.Contains(err.Error(), "private key") {
			t.Errorf("%s: verifying with a private key: %v", alg, err)
		}
		v, err := LoadVerifier(pub)
		if err != nil {
			t.Fatal(err)
		}
		if v.Fingerprint() != s.Verifier().Fingerprint() {
			t.Errorf("%s: fingerprints differ", alg)
		}
	}
	if _, err := LoadSigner([]byte("not a key")); !errors.Is(err, ErrUnsupportedKey) {
		t.Errorf("garbage key: %v", err)
	}
}

func TestWriteRefusesBadSpecs(t *testing.T) {
	for _, tc := range []struct {
		name string
		spec Spec
		want string
	}{
		{"no name", Spec{DeviceTypes: []string{"d"}, Payloads: []PayloadSpec{{Type: "m"}}}, "artifact name is required"},
		{"no device type", Spec{Name: "n", Payloads: []PayloadSpec{{Type: "m"}}}, "device type is required"},
		{"no payload", Spec{Name: "n", DeviceTypes: []string{"d"}}, "payload is required"},
		{"bad type", Spec{Name: "n", DeviceTypes: []string{"d"}, Payloads: []PayloadSpec{{Type: "../x"}}}, "not a valid update type"},
		{"two rootfs files", Spec{Name: "n", DeviceTypes: []string{"d"}, Payloads: []PayloadSpec{{Type: "rootfs-image",
			Files: []FileSpec{memFile("a", nil), memFile("b", nil)}}}}, "exactly one file"},
		{"dup file", Spec{Name: "n", DeviceTypes: []string{"d"}, Payloads: []PayloadSpec{{Type: "m",
			Files: []FileSpec{memFile("a", nil), memFile("a", nil)}}}}, "two files named"},
		{"path name", Spec{Name: "n", DeviceTypes: []string{"d"}, Payloads: []PayloadSpec{{Type: "m",
			Files: []FileSpec{memFile("../a", nil)}}}}, "plain file name"},
		{"bad script", Spec{Name: "n", DeviceTypes: []string{"d"}, Payloads: []PayloadSpec{{Type: "m"}},
			Scripts: []Script{{Name: "Evil"}}}, "state script"},
		{"bad compression", Spec{Name: "n", DeviceTypes: []string{"d"}, Payloads: []PayloadSpec{{Type: "m"}}, Compression: "lz4"}, "unknown compression"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Write(context.Background(), io.Discard, tc.spec)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to say %q", err, tc.want)
			}
		})
	}
}

func TestFileChangedWhileWriting(t *testing.T) {
	calls := 0
	f := FileSpec{Name: "f", Open: func() (io.ReadCloser, error) {
		calls++
		return io.NopCloser(strings.NewReader(strings.Repeat("x", calls))), nil
	}}
	err := Write(context.Background(), io.Discard, Spec{Name: "n", DeviceTypes: []string{"d"}, Payloads: []PayloadSpec{{Type: "m", Files: []FileSpec{f}}}})
	if err == nil || !strings.Contains(err.Error(), "changed while") {
		t.Fatalf("error %v", err)
	}
}

func TestMetaDataNumbersKeepPrecision(t *testing.T) {
	data := build(t, Spec{Name: "n", DeviceTypes: []string{"d"}, Compression: None,
		Payloads: []PayloadSpec{{Type: "x", MetaData: map[string]any{"n": json.Number("12345678901234567890")}}}})
	h, _, err := readAll(data, ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := h.Payloads[0].MetaData["n"]; got != json.Number("12345678901234567890") {
		t.Fatalf("meta-data number read back as %v (%T)", got, got)
	}
}

func TestTypeInfoCannotRename(t *testing.T) {
	spec := Spec{Name: "real", DeviceTypes: []string{"d"}, Payloads: []PayloadSpec{{Type: "x", Provides: map[string]string{"artifact_name": "fake"}}}}
	if err := Write(context.Background(), io.Discard, spec); err == nil || !strings.Contains(err.Error(), "only header-info") {
		t.Fatalf("writer: %v", err)
	}
	header := tarOf(t, okHeaderInfo, entry{"headers/0000/type-info", []byte(`{"type":"m","artifact_provides":{"artifact_group":"g"}}`), 0})
	if _, _, err := readAll(assemble(t, header, nil), ReaderOptions{}); !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), "artifact_group") {
		t.Fatalf("reader: %v", err)
	}
}
