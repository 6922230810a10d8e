package artifact

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// fuzzLimits keep each fuzz input's memory small.
var fuzzLimits = Limits{Manifest: 64 << 10, Signature: 4 << 10, HeaderEntry: 64 << 10, Header: 1 << 20, Payloads: 16, Trailer: 64 << 10}

// FuzzReader feeds mutated artifacts to the reader. Seeds are real
// artifacts from mender-artifact (testdata/) and Gitfleet's own in every
// compression. It checks the reader never panics, that it is deterministic,
// and that whatever it accepts is self-consistent.
func FuzzReader(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/*.mender")
	for _, p := range seeds {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	for _, c := range []Compression{None, Gzip, Zstd, XZ} {
		f.Add(build(f, moduleSpec(c, testKey(f, Ed25519))))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		a, errA := readDigests(data)
		b, errB := readDigests(data)
		if fmt.Sprint(errA) != fmt.Sprint(errB) || a != b {
			t.Fatalf("two reads differ:\n%v %s\n%v %s", errA, a, errB, b)
		}
		if errA != nil {
			return
		}
		if _, err := Verify(bytes.NewReader(data), ReaderOptions{Limits: fuzzLimits}); err != nil {
			t.Fatalf("read accepted what Verify refuses: %v", err)
		}
	})
}

// readDigests reads an artifact, hashing payloads instead of keeping them,
// and checks what an accepted artifact must satisfy.
func readDigests(data []byte) (string, error) {
	ar, err := NewReader(bytes.NewReader(data), ReaderOptions{Limits: fuzzLimits})
	if err != nil {
		return "", err
	}
	h := ar.Header()
	if h.Name() == "" || len(h.DeviceTypes()) == 0 || len(h.Payloads) == 0 {
		return "", fmt.Errorf("accepted header without name, device type or payload: %+v", h.Info)
	}
	out, _ := h.MarshalJSON()
	var buf bytes.Buffer
	buf.Write(out)
	for {
		f, err := ar.Next()
		if err == io.EOF {
			return buf.String(), nil
		}
		if err != nil {
			return "", err
		}
		sum := sha256.New()
		n, err := io.Copy(sum, f)
		if err != nil {
			return "", err
		}
		if n != f.Size || Digest(sum.Sum(nil)) != f.Digest {
			return "", fmt.Errorf("file %s passed with wrong size or digest", f.Name)
		}
		fmt.Fprintf(&buf, "\n%d/%s %d %x", f.Payload, f.Name, n, sum.Sum(nil))
	}
}

// TestMenderFixtures verifies the committed artifacts written by
// mender-artifact 3.9 with their keys, so compatibility is checked even
// where mender-artifact is not installed.
func TestMenderFixtures(t *testing.T) {
	for _, tc := range []struct{ file, key, name string }{
		{"mender-rootfs-gzip-ecdsa.mender", "mender-ecdsa.pub", "seed-rootfs"},
		{"mender-module-none-rsa.mender", "mender-rsa.pub", "seed-mod"},
		{"mender-module-lzma.mender", "", "seed-lzma"},
	} {
		t.Run(tc.file, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("testdata", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			var opts ReaderOptions
			if tc.key != "" {
				pem, err := os.ReadFile(filepath.Join("testdata", tc.key))
				if err != nil {
					t.Fatal(err)
				}
				v, err := LoadVerifier(pem)
				if err != nil {
					t.Fatal(err)
				}
				opts.Verifiers = []*Verifier{v}
			}
			h, err := Verify(bytes.NewReader(data), opts)
			if err != nil {
				t.Fatal(err)
			}
			if h.Name() != tc.name {
				t.Errorf("name %q, want %q", h.Name(), tc.name)
			}
			if tc.file == "mender-module-none-rsa.mender" {
				if len(h.Scripts) != 1 || h.Info.Provides.Group != "grp" || h.Info.Depends.Groups[0] != "grp0" ||
					h.Info.Depends.Names[0] != "seed-0" || h.Payloads[0].TypeInfo.Provides["app.v"] != "1" || len(h.Payloads[0].Files) != 2 {
					t.Errorf("header %s", mustJSON(h))
				}
			}
		})
	}
}

func mustJSON(h *Header) string {
	b, _ := h.MarshalJSON()
	return string(b)
}
