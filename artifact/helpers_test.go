package artifact

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"testing"
)

// memFile is a payload file held in memory, for tests.
func memFile(name string, data []byte) FileSpec {
	return FileSpec{Name: name, Open: func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	}}
}

// testKeys hands out pre-made keys: 3072-bit RSA generation takes a second
// or more, and the tests need a dozen distinct keys.
var testKeys = struct {
	sync.Mutex
	made map[Algorithm][]*Signer
	next map[Algorithm]int
}{made: map[Algorithm][]*Signer{}, next: map[Algorithm]int{}}

// testKey returns a signer for alg distinct from the ones returned before
// in this test binary (up to a pool of 4 per algorithm, then reused
// round-robin; no test needs more than 3 distinct keys at once).
func testKey(t testing.TB, alg Algorithm) *Signer {
	t.Helper()
	testKeys.Lock()
	defer testKeys.Unlock()
	i := testKeys.next[alg] % 4
	testKeys.next[alg]++
	for len(testKeys.made[alg]) <= i {
		priv, _, err := GenerateKey(alg)
		if err != nil {
			t.Fatal(err)
		}
		s, err := LoadSigner(priv)
		if err != nil {
			t.Fatal(err)
		}
		testKeys.made[alg] = append(testKeys.made[alg], s)
	}
	return testKeys.made[alg][i]
}

// build writes spec to memory.
func build(t testing.TB, spec Spec) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := Write(context.Background(), &buf, spec); err != nil {
		t.Fatalf("write: %v", err)
	}
	return buf.Bytes()
}

// moduleSpec is a small two-file module-image spec.
func moduleSpec(c Compression, s *Signer) Spec {
	return Spec{
		Name: "mod-1", DeviceTypes: []string{"board-a", "board-b"}, Compression: c, Signer: s,
		Payloads: []PayloadSpec{ModuleImage("script", []FileSpec{
			memFile("run.sh", []byte("#!/bin/sh\necho hello\n")),
			memFile("data.bin", bytes.Repeat([]byte{1, 2, 3, 4, 5}, 300)),
		}, "mod-1", Software{})},
	}
}

// readAll reads an artifact fully and returns its header and file contents
// keyed by data/NNNN/name.
func readAll(data []byte, opts ReaderOptions) (*Header, map[string][]byte, error) {
	ar, err := NewReader(bytes.NewReader(data), opts)
	if err != nil {
		return nil, nil, err
	}
	files := map[string][]byte{}
	for {
		f, err := ar.Next()
		if err == io.EOF {
			return ar.Header(), files, nil
		}
		if err != nil {
			return nil, nil, err
		}
		b, err := io.ReadAll(f)
		if err != nil {
			return nil, nil, err
		}
		files[fmt.Sprintf("data/%04d/%s", f.Payload, f.Name)] = b
	}
}

// entry is one outer-archive entry for hand-built (often malformed)
// artifacts.
type entry struct {
	name string
	data []byte
	typ  byte
}

func tarOf(t testing.TB, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		typ := e.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		h := &tar.Header{Typeflag: typ, Name: e.name, Size: int64(len(e.data)), Mode: 0o644}
		if typ != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if typ == tar.TypeReg {
			if _, err := tw.Write(e.data); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func manifestOf(entries ...entry) []byte {
	m := Manifest{}
	for _, e := range entries {
		m[e.name] = sha256.Sum256(e.data)
	}
	b, _ := m.MarshalText()
	return b
}

// needTool finds a real peer binary; missing fails under CI=true.
func needTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s not installed (make test installs it via scripts/test-deps)", name)
		}
		t.Skipf("%s not installed; run scripts/test-deps", name)
	}
	return p
}

// pkcs8 re-encodes a PEM private key as PKCS#8.
func pkcs8(t testing.TB, privPEM []byte) []byte {
	t.Helper()
	k, err := parsePrivateKey(privPEM)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}
