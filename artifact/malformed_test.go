package artifact

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"strings"
	"testing"
)

// hdrTar builds a header archive (uncompressed) from entries.
func hdrTar(t *testing.T, entries ...entry) []byte { return tarOf(t, entries...) }

var (
	okVersion    = entry{"version", []byte(`{"format":"mender","version":3}`), 0}
	okHeaderInfo = entry{"header-info", []byte(`{"payloads":[{"type":"m"}],"artifact_provides":{"artifact_name":"a"},"artifact_depends":{"device_type":["d"]}}`), 0}
	okTypeInfo   = entry{"headers/0000/type-info", []byte(`{"type":"m"}`), 0}
)

// assemble builds an artifact from a header archive and data entries,
// with a manifest that is correct for what it is given.
func assemble(t *testing.T, header []byte, files []entry, extra ...entry) []byte {
	t.Helper()
	h := entry{"header.tar", header, 0}
	listed := append([]entry{okVersion, h}, prefixed(files)...)
	data := entry{"data/0000.tar", tarOf(t, files...), 0}
	entries := []entry{okVersion, {"manifest", manifestOf(listed...), 0}, h}
	if len(files) > 0 {
		entries = append(entries, data)
	}
	return tarOf(t, append(entries, extra...)...)
}

func prefixed(files []entry) []entry {
	out := make([]entry, len(files))
	for i, f := range files {
		out[i] = entry{"data/0000/" + f.name, f.data, 0}
	}
	return out
}

func TestMalformed(t *testing.T) {
	goodHeader := hdrTar(t, okHeaderInfo, okTypeInfo)
	good := assemble(t, goodHeader, []entry{{"f", []byte("payload"), 0}})
	if _, _, err := readAll(good, ReaderOptions{}); err != nil {
		t.Fatalf("the baseline artifact is bad: %v", err)
	}
	signer := testKey(t, ECDSAP256)
	signed := build(t, moduleSpec(Gzip, signer))
	unsigned := build(t, moduleSpec(Gzip, nil))
	keys := ReaderOptions{Verifiers: []*Verifier{signer.Verifier()}}

	for _, tc := range []struct {
		name string
		data []byte
		opts ReaderOptions
		is   error
		says string
	}{
		{"empty input", nil, ReaderOptions{}, ErrTruncated, "empty archive"},
		{"not a tar", []byte(strings.Repeat("garbage!", 200)), ReaderOptions{}, ErrFormat, "artifact"},
		{"truncated in header", good[:1200], ReaderOptions{}, ErrTruncated, "ends early"},
		{"truncated in data", good[:len(good)-1100], ReaderOptions{}, ErrTruncated, ""},
		{"truncated before data", good[:bytes.Index(good, []byte("data/0000.tar"))-257], ReaderOptions{}, ErrTruncated, ""},
		{"no version first", tarOf(t, entry{"manifest", nil, 0}), ReaderOptions{}, ErrOrder, `want "version"`},
		{"unknown format", tarOf(t, entry{"version", []byte(`{"format":"other","version":3}`), 0}), ReaderOptions{}, ErrVersion, "format"},
		{"version 2", tarOf(t, entry{"version", []byte(`{"format":"mender","version":2}`), 0}), ReaderOptions{}, ErrVersion, "version 2"},
		{"version not json", tarOf(t, entry{"version", []byte(`mender 3`), 0}), ReaderOptions{}, ErrFormat, "version"},
		{"manifest missing", tarOf(t, okVersion, entry{"header.tar", goodHeader, 0}), ReaderOptions{}, ErrOrder, `want "manifest"`},
		{"manifest bad line", tarOf(t, okVersion, entry{"manifest", []byte("abc  version\n"), 0}), ReaderOptions{}, ErrFormat, "line 1"},
		{"manifest path escape", tarOf(t, okVersion, entry{"manifest", []byte(strings.Repeat("0", 64) + "  ../etc/passwd\n"), 0}), ReaderOptions{}, ErrPath, "clean relative"},
		{"manifest absolute path", tarOf(t, okVersion, entry{"manifest", []byte(strings.Repeat("0", 64) + "  /etc/passwd\n"), 0}), ReaderOptions{}, ErrPath, "absolute"},
		{"manifest lists absent entry", func() []byte {
			h := entry{"header.tar", goodHeader, 0}
			return tarOf(t, okVersion, entry{"manifest", manifestOf(okVersion, h, entry{"data/0000/ghost", []byte("x"), 0}), 0}, h)
		}(), ReaderOptions{}, ErrManifest, "data/0000/ghost"},
		{"manifest lists a stranger", func() []byte {
			h := entry{"header.tar", goodHeader, 0}
			return tarOf(t, okVersion, entry{"manifest", manifestOf(okVersion, h, entry{"extra", nil, 0}), 0}, h)
		}(), ReaderOptions{}, ErrManifest, "extra"},
		{"manifest misses header", tarOf(t, okVersion, entry{"manifest", manifestOf(okVersion), 0}, entry{"header.tar", goodHeader, 0}), ReaderOptions{}, ErrManifest, "does not list header.tar"},
		{"version digest", tarOf(t, entry{"version", []byte(`{"format":"mender", "version":3}`), 0}, entry{"manifest", manifestOf(okVersion, entry{"header.tar", goodHeader, 0}), 0}, entry{"header.tar", goodHeader, 0}), ReaderOptions{}, ErrDigest, "version"},
		{"header digest", tarOf(t, okVersion, entry{"manifest", manifestOf(okVersion, entry{"header.tar", hdrTar(t, okHeaderInfo, okTypeInfo, entry{"headers/0000/meta-data", nil, 0}), 0}), 0}, entry{"header.tar", goodHeader, 0}), ReaderOptions{}, ErrDigest, "header.tar"},
		{"payload digest", func() []byte {
			b := bytes.Clone(good)
			i := bytes.LastIndex(b, []byte("payload"))
			b[i] = 'P'
			return b
		}(), ReaderOptions{}, ErrDigest, "data/0000/f"},
		{"data file not in manifest", func() []byte {
			h := entry{"header.tar", goodHeader, 0}
			return tarOf(t, okVersion, entry{"manifest", manifestOf(okVersion, h), 0}, h, entry{"data/0000.tar", tarOf(t, entry{"sneaky", []byte("x"), 0}), 0})
		}(), ReaderOptions{}, ErrManifest, "sneaky"},
		{"data before header", tarOf(t, okVersion, entry{"manifest", manifestOf(okVersion), 0}, entry{"data/0000.tar", nil, 0}), ReaderOptions{}, ErrOrder, "before the header"},
		{"header after data", assemble(t, goodHeader, []entry{{"f", []byte("payload"), 0}}, entry{"header.tar", goodHeader, 0}), ReaderOptions{}, ErrOrder, "after the data"},
		{"unknown outer entry", tarOf(t, okVersion, entry{"manifest", manifestOf(okVersion), 0}, entry{"README", nil, 0}), ReaderOptions{}, ErrUnexpected, "README"},
		{"outer symlink", tarOf(t, okVersion, entry{"manifest", nil, tar.TypeSymlink}), ReaderOptions{}, ErrUnexpected, "not a regular file"},
		{"outer absolute path", tarOf(t, entry{"/version", okVersion.data, 0}), ReaderOptions{}, ErrPath, "absolute"},
		{"outer dotdot path", tarOf(t, okVersion, entry{"../manifest", nil, 0}), ReaderOptions{}, ErrPath, "clean relative"},
		{"payload path escape", func() []byte {
			h := entry{"header.tar", goodHeader, 0}
			return tarOf(t, okVersion, entry{"manifest", manifestOf(okVersion, h), 0}, h, entry{"data/0000.tar", tarOf(t, entry{"../../etc/shadow", []byte("x"), 0}), 0})
		}(), ReaderOptions{}, ErrPath, ""},
		{"payload in subdirectory", func() []byte {
			h := entry{"header.tar", goodHeader, 0}
			return tarOf(t, okVersion, entry{"manifest", manifestOf(okVersion, h, entry{"data/0000/a/b", []byte("x"), 0}), 0}, h, entry{"data/0000.tar", tarOf(t, entry{"a/b", []byte("x"), 0}), 0})
		}(), ReaderOptions{}, ErrManifest, "data/0000/a/b"},
		{"data index beyond payloads", func() []byte {
			h := entry{"header.tar", goodHeader, 0}
			return tarOf(t, okVersion, entry{"manifest", manifestOf(okVersion, h), 0}, h, entry{"data/0001.tar", tarOf(t), 0})
		}(), ReaderOptions{}, ErrUnexpected, "1 payload"},
		{"header-info not first", assemble(t, hdrTar(t, okTypeInfo, okHeaderInfo), nil), ReaderOptions{}, ErrOrder, "want header-info"},
		{"header-info no payloads", assemble(t, hdrTar(t, entry{"header-info", []byte(`{"payloads":[],"artifact_provides":{"artifact_name":"a"},"artifact_depends":{"device_type":["d"]}}`), 0}), nil), ReaderOptions{}, ErrFormat, "no payloads"},
		{"header-info no device type", assemble(t, hdrTar(t, entry{"header-info", []byte(`{"payloads":[{"type":"m"}],"artifact_provides":{"artifact_name":"a"},"artifact_depends":{}}`), 0}), nil), ReaderOptions{}, ErrFormat, "device_type"},
		{"type-info missing", assemble(t, hdrTar(t, okHeaderInfo), nil), ReaderOptions{}, ErrFormat, "no type-info"},
		{"type-info type mismatch", assemble(t, hdrTar(t, okHeaderInfo, entry{"headers/0000/type-info", []byte(`{"type":"other"}`), 0}), nil), ReaderOptions{}, ErrFormat, "says type"},
		{"meta-data not object", assemble(t, hdrTar(t, okHeaderInfo, okTypeInfo, entry{"headers/0000/meta-data", []byte(`[1]`), 0}), nil), ReaderOptions{}, ErrFormat, "meta-data"},
		{"unknown header entry", assemble(t, hdrTar(t, okHeaderInfo, okTypeInfo, entry{"headers/0000/files", nil, 0}), nil), ReaderOptions{}, ErrUnexpected, "files"},
		{"oversized header entry", assemble(t, hdrTar(t, okHeaderInfo, okTypeInfo, entry{"headers/0000/meta-data", []byte(`{"x":"` + strings.Repeat("y", 2<<20) + `"}`), 0}), nil), ReaderOptions{}, ErrTooLarge, "limit"},
		{"oversized manifest", tarOf(t, okVersion, entry{"manifest", bytes.Repeat([]byte("x"), 2<<20), 0}), ReaderOptions{}, ErrTooLarge, "manifest"},
		{"header bomb", headerBomb(t), ReaderOptions{}, ErrTooLarge, ""},
		{"garbage after archive", append(bytes.Clone(good), []byte("trailing garbage")...), ReaderOptions{}, ErrFormat, "after the end"},
		{"signature missing", unsigned, keys, ErrSignatureMissing, "not signed"},
		{"signature mismatch", func() []byte {
			var b bytes.Buffer
			if err := Sign(bytes.NewReader(unsigned), &b, testKey(t, ECDSAP256)); err != nil {
				t.Fatal(err)
			}
			return b.Bytes()
		}(), keys, ErrSignature, ""},
		{"signature not base64", func() []byte {
			b := bytes.Clone(signed)
			i := bytes.Index(b, []byte("manifest.sig"))
			j := i + 512 // content of manifest.sig follows its 512-byte header
			b[j] = '!'
			fixChecksum(b[i : i+512])
			return b
		}(), keys, ErrSignature, "base64"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := readAll(tc.data, tc.opts)
			if err == nil {
				t.Fatal("accepted")
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

// headerBomb is an artifact whose 20 KiB gzip header unpacks to 20 MiB.
func headerBomb(t *testing.T) []byte {
	var z bytes.Buffer
	zw := gzip.NewWriter(&z)
	zw.Write(hdrTar(t, okHeaderInfo, okTypeInfo))
	zw.Write(make([]byte, 20<<20)) // 20 MiB of zeros after the tar end
	zw.Close()
	h := entry{"header.tar.gz", z.Bytes(), 0}
	return tarOf(t, okVersion, entry{"manifest", manifestOf(okVersion, h), 0}, h)
}

// fixChecksum recomputes a tar header block's checksum after an edit.
func fixChecksum(blk []byte) {
	copy(blk[148:156], "        ")
	var sum int64
	for _, c := range blk {
		sum += int64(c)
	}
	copy(blk[148:156], []byte(strings.Repeat("0", 6-len(octal(sum)))+octal(sum)+"\x00 "))
}

func octal(n int64) string {
	s := ""
	for ; n > 0; n /= 8 {
		s = string(rune('0'+n%8)) + s
	}
	return s
}

func TestSignedStaysSticky(t *testing.T) {
	// After an error every call returns it, and nothing more is read.
	data := build(t, moduleSpec(None, nil))
	data = data[:len(data)-2000]
	ar, err := NewReader(bytes.NewReader(data), ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var first error
	for i := 0; i < 5; i++ {
		f, err := ar.Next()
		if err == nil {
			_, _ = io.Copy(io.Discard, f)
			continue
		}
		if first == nil {
			first = err
		} else if err != first {
			t.Fatalf("error changed from %v to %v", first, err)
		}
	}
	if first == nil || first == io.EOF {
		t.Fatalf("truncated artifact read cleanly: %v", first)
	}
}
