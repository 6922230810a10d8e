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
