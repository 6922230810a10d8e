package artifact

import (
	"archive/tar"
	"bytes"
	"io"
	"testing"
)

// Hostile inputs built by the package's own tests, for attack_test.go
// (package artifact_test).

// ReadFiles is readAll: an artifact read whole, its files keyed by
// data/NNNN/name.
var ReadFiles = readAll

// HeaderBomb is headerBomb: a gzip header that unpacks to 20 MiB.
func HeaderBomb(t *testing.T) []byte { return headerBomb(t) }

// XZDictBomb is an artifact whose header.tar.xz asks for a 4 GiB LZMA2
// dictionary (xzHugeDict).
func XZDictBomb(t *testing.T) []byte {
	_, bad := xzHugeDict(t)
	h := entry{"header.tar.xz", bad, 0}
	return tarOf(t, okVersion, entry{"manifest", manifestOf(okVersion, h), 0}, h)
}

// ZstdWindowBomb is an artifact whose data/0000.tar.zst frame declares a
// 2 TiB window.
func ZstdWindowBomb(t *testing.T) []byte {
	header := entry{"header.tar", hdrTar(t, okHeaderInfo, okTypeInfo), 0}
	// Magic, frame header descriptor 0 (no single segment, no checksum,
	// no dictionary, no content size), window descriptor exponent 31
	// (2^41 bytes), then a raw last block of 512 zero bytes.
	frame := []byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, 31 << 3}
	size := 512
	bh := uint32(size<<3) | 1 // last block, raw
	frame = append(frame, byte(bh), byte(bh>>8), byte(bh>>16))
	frame = append(frame, make([]byte, size)...)
	data := entry{"data/0000.tar.zst", frame, 0}
	f := entry{"data/0000/f", []byte("x"), 0}
	return tarOf(t, okVersion, entry{"manifest", manifestOf(okVersion, header, f), 0}, header, data)
}

// ReplaceEntry rewrites the tar archive data with entry name's content
// replaced by edit(content); a nil edit drops the entry.
func ReplaceEntry(t *testing.T, data []byte, name string, edit func([]byte) []byte) []byte {
	t.Helper()
	var out []entry
	found := false
	for _, e := range tarEntries(t, data) {
		if e.name == name {
			found = true
			if edit == nil {
				continue
			}
			e.data = edit(e.data)
		}
		out = append(out, e)
	}
	if !found {
		t.Fatalf("no entry %s", name)
	}
	return tarOf(t, out...)
}

// AppendTar adds name, content pairs to the tar archive data.
func AppendTar(t *testing.T, data []byte, pairs ...string) []byte {
	t.Helper()
	out := tarEntries(t, data)
	for i := 0; i+1 < len(pairs); i += 2 {
		out = append(out, entry{pairs[i], []byte(pairs[i+1]), 0})
	}
	return tarOf(t, out...)
}

// tarEntries reads every entry (name and content) of the tar archive data.
func tarEntries(t *testing.T, data []byte) []entry {
	t.Helper()
	out, err := readTarEntries(data)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// readTarEntries is tarEntries returning its error.
func readTarEntries(data []byte) ([]entry, error) {
	var out []entry
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			return nil, err
		}
		out = append(out, entry{h.Name, b, 0})
	}
}
