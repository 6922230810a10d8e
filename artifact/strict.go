package artifact

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"
)

// blockSize is the tar block size.
const blockSize = 512

// padding returns the zero padding that follows size bytes of tar content.
func padding(size int64) int64 { return (blockSize - size%blockSize) % blockSize }

// strictSource is the stream under a tar.Reader. archive/tar skips the
// padding after each entry without looking at it; strictSource makes the
// padding count: after an entry has been read to its end, expectPadding
// demands that the next bytes through, which tar.Reader reads as padding
// before the following header, are zero. A flipped byte anywhere in an
// artifact thus fails a digest, a tar header checksum, or this check.
type strictSource struct {
	r     io.Reader
	name  string // for errors: "the artifact", "data/0000.tar.gz"
	zeros int64
	// offset counts bytes read, for error messages.
	offset int64
	// last holds the last blockSize bytes read: right after tar.Reader.Next
	// returns, that is the header block of the entry it returned.
	last [blockSize]byte
}

var errPadding = errors.New("non-zero tar padding")

func (s *strictSource) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if s.zeros > 0 && n > 0 {
		k := min(int64(n), s.zeros)
		for i, b := range p[:k] {
			if b != 0 {
				return 0, fmt.Errorf("%w: %w at offset %d of %s", ErrFormat, errPadding, s.offset+int64(i), s.name)
			}
		}
		s.zeros -= k
	}
	s.offset += int64(n)
	s.remember(p[:n])
	return n, err
}

func (s *strictSource) remember(p []byte) {
	if len(p) >= blockSize {
		copy(s.last[:], p[len(p)-blockSize:])
		return
	}
	copy(s.last[:], s.last[len(p):])
	copy(s.last[blockSize-len(p):], p)
}

// checkHeaderBlock checks the checksum field of the header block just read
// is in its one canonical form, six octal digits, NUL, space: archive/tar
// stops reading the field at the NUL, so the byte after it would otherwise
// be covered by nothing.
func (s *strictSource) checkHeaderBlock(name string) error {
	blk := s.last
	var sum int64
	for i, c := range blk {
		if i >= 148 && i < 156 {
			c = ' '
		}
		sum += int64(c)
	}
	want := fmt.Sprintf("%06o\x00 ", sum)
	if string(blk[148:156]) != want {
		return fmt.Errorf("%w: tar header of %s: checksum field is not in canonical form", ErrFormat, clip(name))
	}
	return nil
}

func (s *strictSource) expectPadding(size int64) { s.zeros = padding(size) }

// drainZeros reads r to its end and fails if it holds anything but at most
// limit zero bytes: the end-of-archive record padding tar tools write.
func drainZeros(r io.Reader, limit int64, what string) error {
	buf := make([]byte, 4096)
	var total int64
	for {
		n, err := r.Read(buf)
		for _, b := range buf[:n] {
			if b != 0 {
				return fmt.Errorf("%w: data after the end of %s", ErrFormat, what)
			}
		}
		total += int64(n)
		if total > limit {
			return fmt.Errorf("%w: more than %d bytes of padding after the end of %s", ErrTooLarge, limit, what)
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return readErr(what, err)
		}
	}
}

// readErr turns I/O errors from tar and decompressors into artifact errors.
func readErr(what string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%w: %s ends early", ErrTruncated, what)
	case isArtifactErr(err):
		return err // already says what and where
	default:
		return fmt.Errorf("%w: %s in %s", ErrFormat, strings.TrimPrefix(err.Error(), "archive/tar: "), what)
	}
}

func isArtifactErr(err error) bool {
	for _, e := range []error{ErrFormat, ErrVersion, ErrOrder, ErrUnexpected, ErrPath, ErrManifest,
		ErrDigest, ErrSignatureMissing, ErrSignature, ErrTooLarge, ErrTruncated, ErrUnsupportedKey, ErrUnknownCompression} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// byteReader gives a decompressor an io.ByteReader so that it reads no
// further than the end of its stream; what remains can then be checked.
func byteReader(r io.Reader) *bufio.Reader { return bufio.NewReaderSize(r, 64<<10) }
