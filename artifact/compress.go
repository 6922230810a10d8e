package artifact

import (
	"fmt"
	"io"
	"strings"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// Compression is how the header and data archives inside an artifact are
// compressed. The outer archive is never compressed.
type Compression string

// Compressions Gitfleet reads and writes. mender-artifact 3.9 writes none,
// gzip and lzma (which is xz); newer releases also write zstd.
const (
	None Compression = "none"
	Gzip Compression = "gzip"
	Zstd Compression = "zstd"
	XZ   Compression = "xz"
)

// ParseCompression accepts the names mender-artifact uses too ("lzma" for
// xz, "zstd_fastest"/"zstd_better"/"zstd_best" for zstd).
func ParseCompression(s string) (Compression, error) {
	switch strings.ToLower(s) {
	case "", "gzip", "gz":
		return Gzip, nil
	case "none":
		return None, nil
	case "zstd", "zstd_fastest", "zstd_better", "zstd_best", "zst":
		return Zstd, nil
	case "xz", "lzma":
		return XZ, nil
	}
	return "", fmt.Errorf("%w %q: use none, gzip, zstd or xz", ErrUnknownCompression, s)
}

// Suffix is the file name suffix for the compression (".gz"; "" for none).
func (c Compression) Suffix() string {
	switch c {
	case Gzip:
		return ".gz"
	case Zstd:
		return ".zst"
	case XZ:
		return ".xz"
	}
	return ""
}

// compressionFor returns the compression of an entry named base+suffix,
// e.g. "header.tar.gz" with base "header.tar".
func compressionFor(name, base string) (Compression, bool) {
	if !strings.HasPrefix(name, base) {
		return "", false
	}
	switch name[len(base):] {
	case "":
		return None, true
	case ".gz":
		return Gzip, true
	case ".zst":
		return Zstd, true
	case ".xz":
		return XZ, true
	}
	return "", false
}

// zstdMaxWindow bounds the memory a zstd stream can make the reader allocate.
// 64 MiB covers every standard level, including zstd --ultra -22.
const zstdMaxWindow = 64 << 20

// xzMaxDict bounds the LZMA2 dictionary an xz stream may ask for (xz -9
// uses 64 MiB; mender-artifact uses 8 MiB). The decoder allocates whatever
// the stream header says, up to 4 GiB, so it is checked before decoding.
const xzMaxDict = 64 << 20

// checkXZDict peeks at the xz stream header and first block header and
// refuses an LZMA2 dictionary larger than xzMaxDict. mender-artifact and
// xz(1) write single-block streams; the decoder checks the rest.
func checkXZDict(r io.Reader) error {
	br, ok := r.(interface{ Peek(int) ([]byte, error) })
	if !ok {
		return nil
	}
	hdr, err := br.Peek(13)
	if err != nil || string(hdr[:6]) != "\xfd7zXZ\x00" {
		return nil // the decoder reports what is wrong
	}
	size := (int(hdr[12]) + 1) * 4
	if hdr[12] == 0 {
		return nil // no blocks: an empty stream
	}
	blk, err := br.Peek(12 + size)
	if err != nil {
		return nil
	}
	blk = blk[12:]
	flags := blk[1]
	pos := 2
	varint := func() (uint64, bool) {
		var v uint64
		for i := 0; i < 9 && pos < len(blk); i++ {
			b := blk[pos]
			pos++
			v |= uint64(b&0x7f) << (7 * i)
			if b&0x80 == 0 {
				return v, true
			}
		}
		return 0, false
	}
	if flags&0x40 != 0 {
		varint()
	}
	if flags&0x80 != 0 {
		varint()
	}
	for f := 0; f <= int(flags&0x03); f++ {
		id, ok1 := varint()
		n, ok2 := varint()
		if !ok1 || !ok2 || pos+int(n) > len(blk) {
			return nil
		}
		if id == 0x21 && n == 1 { // LZMA2
			bits := uint(blk[pos] & 0x3f)
			if bits > 40 {
				return nil
			}
			dict := uint64(1<<32 - 1)
			if bits < 40 {
				dict = uint64(2|bits&1) << (bits/2 + 11)
			}
			if dict > xzMaxDict {
				return fmt.Errorf("%w: xz stream asks for a %d MiB dictionary, limit %d MiB", ErrTooLarge, dict>>20, xzMaxDict>>20)
			}
		}
		pos += int(n)
	}
	return nil
}

// decompress returns a reader of r's decompressed content. The closer
// releases decoder resources; it does not close r.
func decompress(c Compression, r io.Reader) (io.ReadCloser, error) {
	switch c {
	case None:
		return io.NopCloser(r), nil
	case Gzip:
		zr, err := gzip.NewReader(r)
		if err != nil {
			return nil, fmt.Errorf("%w: gzip: %v", ErrFormat, err)
		}
		// One member only: anything after it is trailing garbage.
		zr.Multistream(false)
		return zr, nil
	case Zstd:
		zr, err := zstd.NewReader(r,
			zstd.WithDecoderConcurrency(1),
			zstd.WithDecoderLowmem(true),
			zstd.WithDecoderMaxWindow(zstdMaxWindow))
		if err != nil {
			return nil, fmt.Errorf("%w: zstd: %v", ErrFormat, err)
		}
		return readCloser{zr, func() error { zr.Close(); return nil }}, nil
	case XZ:
		if err := checkXZDict(r); err != nil {
			return nil, err
		}
		zr, err := xz.NewReader(r)
		if err != nil {
			return nil, fmt.Errorf("%w: xz: %v", ErrFormat, err)
		}
		return io.NopCloser(zr), nil
	}
	return nil, fmt.Errorf("%w %q", ErrUnknownCompression, c)
}

// compress returns a writer that compresses into w. Close flushes it; it
// does not close w.
func compress(c Compression, w io.Writer) (io.WriteCloser, error) {
	switch c {
	case None:
		return nopWriteCloser{w}, nil
	case Gzip:
		return gzip.NewWriterLevel(w, gzip.DefaultCompression)
	case Zstd:
		return zstd.NewWriter(w, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedDefault))
	case XZ:
		return xz.NewWriter(w)
	}
	return nil, fmt.Errorf("%w %q", ErrUnknownCompression, c)
}

type readCloser struct {
	io.Reader
	close func() error
}

func (r readCloser) Close() error { return r.close() }

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }
