package artifact

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"testing"

	"github.com/ulikunitz/xz"
)

func TestXZDictionaryBound(t *testing.T) {
	good, bad := xzHugeDict(t)

	for _, tc := range []struct {
		name string
		data []byte
		ok   bool
	}{{"8 MiB dictionary", good, true}, {"4 GiB dictionary", bad, false}} {
		t.Run(tc.name, func(t *testing.T) {
			rc, err := decompress(XZ, bufio.NewReader(bytes.NewReader(tc.data)))
			if tc.ok {
				if err != nil {
					t.Fatal(err)
				}
				out, err := io.ReadAll(rc)
				if err != nil || string(out) != "hello hello hello" {
					t.Fatalf("%q %v", out, err)
				}
				return
			}
			if !errors.Is(err, ErrTooLarge) {
				t.Fatalf("error %v, want ErrTooLarge", err)
			}
		})
	}
}

// xzHugeDict returns an xz stream of "hello hello hello" and the same
// stream whose LZMA2 properties ask for a 4 GiB dictionary; the block
// header's CRC32 is fixed up so only the bound can refuse it.
func xzHugeDict(t testing.TB) (good, bad []byte) {
	var buf bytes.Buffer
	zw, err := xz.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	zw.Write([]byte("hello hello hello"))
	zw.Close()
	good = buf.Bytes()
	bad = bytes.Clone(good)
	hsize := (int(bad[12]) + 1) * 4
	blk := bad[12 : 12+hsize]
	props := bytes.Index(blk, []byte{0x21, 0x01}) + 2
	if props < 2 {
		t.Fatal("no LZMA2 filter in the block header")
	}
	blk[props] = 40
	binary.LittleEndian.PutUint32(blk[hsize-4:], crc32.ChecksumIEEE(blk[:hsize-4]))
	return good, bad
}

func TestParseCompression(t *testing.T) {
	for in, want := range map[string]Compression{"": Gzip, "gzip": Gzip, "none": None, "lzma": XZ, "xz": XZ, "zstd_best": Zstd, "ZSTD": Zstd} {
		if got, err := ParseCompression(in); err != nil || got != want {
			t.Errorf("%q: %v %v", in, got, err)
		}
	}
	if _, err := ParseCompression("lz4"); !errors.Is(err, ErrUnknownCompression) {
		t.Errorf("lz4: %v", err)
	}
}
