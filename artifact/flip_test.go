package artifact

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestFlipEveryByte flips each byte of signed artifacts in turn. Every flip
// must be refused, with two exceptions whose accepted flips must leave what
// the reader returns identical to the original (checked below):
//   - gzip: the MTIME, XFL and OS bytes of a payload stream's gzip header,
//     which no checksum covers and which carry no content;
//   - xz (read-only legacy, mender-artifact's "lzma"): the xz decoder does
//     not check every redundant field of the block structure; the block
//     check still covers all content;
//   - any compression: a flip that changes only how the same bytes are
//     encoded — every entry of the artifact unpacks to exactly the bytes
//     it unpacked to before (gzip's FTEXT flag; a deflate match that
//     copies a run of zeros from another distance, as mender-artifact's
//     payloads, whose inner tar ends in zeros, allow) — so that what is
//     signed and verified, the unpacked content, is unchanged.
func TestFlipEveryByte(t *testing.T) {
	s := testKey(t, ECDSAP256)
	keys := ReaderOptions{Verifiers: []*Verifier{s.Verifier()}}
	for _, c := range []Compression{None, Gzip, Zstd, XZ} {
		t.Run(string(c), func(t *testing.T) {
			checkFlips(t, build(t, moduleSpec(c, s)), keys, c, 1)
		})
	}
}

// sameUnpacked, the last exception of TestFlipEveryByte, holds for an
// artifact and its copy, and fails for a change of content or of an
// entry's name.
func TestSameUnpacked(t *testing.T) {
	s := testKey(t, ECDSAP256)
	gz := build(t, moduleSpec(Gzip, s))
	if !sameUnpacked(gz, bytes.Clone(gz)) {
		t.Error("an artifact differs from its copy")
	}
	spec := moduleSpec(Gzip, s)
	spec.Payloads[0].Files[1] = memFile("data.bin", bytes.Repeat([]byte{1, 2, 3, 4, 6}, 300))
	if sameUnpacked(gz, build(t, spec)) {
		t.Error("a changed payload file unpacks the same")
	}
	if sameUnpacked(gz, build(t, moduleSpec(Zstd, s))) {
		t.Error("entries of other names (data/0000.tar.zst) unpack the same")
	}
	plain := build(t, moduleSpec(None, s))
	i := bytes.Index(plain, []byte("echo hello"))
	if i < 0 {
		t.Fatal("the stored artifact does not hold run.sh's text")
	}
	flipped := bytes.Clone(plain)
	flipped[i] ^= 0x20
	if sameUnpacked(plain, flipped) {
		t.Errorf("a flipped byte of a stored payload file (at %d) unpacks the same", i)
	}
}

// checkFlips flips the bytes of orig at offsets 0, stride, 2·stride, … and
// checks each flip is refused, or, where the rules above allow it, that the
// reader returns exactly what it returns for orig.
func checkFlips(t *testing.T, orig []byte, keys ReaderOptions, c Compression, stride int) {
	t.Helper()
	wantHdr, wantFiles, err := readAll(orig, keys)
	if err != nil {
		t.Fatal(err)
	}
	want := snapshot(wantHdr, wantFiles)
	harmless := harmlessOffsets(orig, c)
	var accepted []int
	tried := 0
	for i := 0; i < len(orig); i += stride {
		tried++
		mut := bytes.Clone(orig)
		mut[i] ^= 0xFF
		h, files, err := readAll(mut, keys)
		if err != nil {
			continue
		}
		accepted = append(accepted, i)
		if !harmless[i] && c != XZ && !sameUnpacked(orig, mut) {
			t.Errorf("flip at offset %d of %d accepted", i, len(orig))
		}
		if diff := cmp.Diff(want, snapshot(h, files)); diff != "" {
			t.Errorf("flip at offset %d changed what the reader returns:\n%s", i, diff)
		}
	}
	t.Logf("%d bytes, %d flips tried, %d refused, %d accepted with identical content at %v", len(orig), tried, tried-len(accepted), len(accepted), accepted)
}

func snapshot(h *Header, files map[string][]byte) string {
	b, _ := json.Marshal(h)
	return fmt.Sprintf("%s\n%q", b, files)
}

// harmlessOffsets returns the offsets of gzip MTIME/XFL/OS bytes of the data
// archives: the gzip format covers them by no checksum, and the manifest
// covers the decompressed files, not the compressed stream.
func harmlessOffsets(a []byte, c Compression) map[int]bool {
	out := map[int]bool{}
	if c != Gzip {
		return out
	}
	for off := 0; ; {
		i := bytes.Index(a[off:], []byte("data/0"))
		if i < 0 {
			return out
		}
		hdr := off + i - (off+i)%512
		content := hdr + 512
		if content+10 <= len(a) && a[content] == 0x1f && a[content+1] == 0x8b {
			for k := 4; k < 10; k++ {
				out[content+k] = true
			}
		}
		off = content
	}
}

// sameUnpacked reports whether every entry of the artifacts a and b has
// the same name and, once unpacked (a compressed entry decompressed), the
// same bytes.
func sameUnpacked(a, b []byte) bool {
	ua, ub := unpacked(a), unpacked(b)
	return ua != nil && ub != nil && slices.EqualFunc(ua, ub, func(x, y entry) bool {
		return x.name == y.name && bytes.Equal(x.data, y.data)
	})
}

// unpacked returns the entries of an artifact, each archive within it
// decompressed; nil if anything fails to read.
func unpacked(a []byte) []entry {
	es, err := readTarEntries(a)
	if err != nil {
		return nil
	}
	for i, e := range es {
		comp := None
		if k := strings.Index(e.name, ".tar"); k >= 0 {
			comp, _ = compressionFor(e.name, e.name[:k+len(".tar")])
		}
		d, err := decompress(comp, bytes.NewReader(e.data))
		if err != nil {
			return nil
		}
		body, err := io.ReadAll(d)
		d.Close()
		if err != nil {
			return nil
		}
		es[i].data = body
	}
	return es
}
