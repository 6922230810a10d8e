package artifact

import (
	"bytes"
	"encoding/json"
	"fmt"
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
//     check still covers all content.
func TestFlipEveryByte(t *testing.T) {
	s := testKey(t, ECDSAP256)
	keys := ReaderOptions{Verifiers: []*Verifier{s.Verifier()}}
	for _, c := range []Compression{None, Gzip, Zstd, XZ} {
		t.Run(string(c), func(t *testing.T) {
			checkFlips(t, build(t, moduleSpec(c, s)), keys, c, 1)
		})
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
		if !harmless[i] && c != XZ {
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
