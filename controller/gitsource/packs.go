package gitsource

import (
	"bufio"
	"bytes"
	"compress/zlib"
	"crypto/sha1"
	"encoding/binary"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/go-git/go-git/v5/plumbing"
)

// Blobs straight from the pack. go-git reads a blob of a pack through its
// packfile scanner: byte by byte through a buffered reader, hashing every
// byte with a collision-detecting SHA-1 and inflating the whole object
// into memory before the first Read. For the ten 10 MB device lists of a
// fleet of a million devices that was 1.3 of the 2.9 CPU seconds a
// controller took to come back (a restart, the clone already on disk).
//
// packReader finds a blob in the clone's pack indexes (version 2 .idx
// files) and, when the pack stores it whole (not as a delta), streams it
// through compress/zlib from the pack file, checking as it goes that it
// inflates to the size its header gives and, at the end, that its Git
// object hash is the one the tree names: a reader never gets other bytes
// than go-git would have given (a mismatch is a read error, not silently
// other content). Blobs stored as deltas, loose objects and anything
// unexpected are left to go-git.

// packReader reads blobs of the packs in one objects/pack directory. Its
// indexes are read once, at first use; a pack that later disappears (a
// repack) fails the open, which then falls back to go-git.
type packReader struct {
	dir string

	once  sync.Once
	packs []*packIndex
}

func newPackReader(dir string) *packReader { return &packReader{dir: dir} }

// packIndexes keeps the parsed indexes of a clone's packs between
// revisions: each revision's reader lists the pack directory and parses
// only the indexes of packs it has not seen (a fetch adds one), so that a
// commit that changes one small file does not read every index again.
type packIndexes struct {
	mu  sync.Mutex
	idx map[string]*packIndex // by .idx path
}

// reader returns a packReader over the packs now in dir.
func (c *packIndexes) reader(dir string) *packReader {
	paths, _ := filepath.Glob(filepath.Join(dir, "pack-*.idx"))
	c.mu.Lock()
	defer c.mu.Unlock()
	seen := make(map[string]*packIndex, len(paths))
	r := &packReader{dir: dir}
	for _, p := range paths {
		ix, ok := c.idx[p]
		if !ok {
			var err error
			if ix, err = readPackIndex(p); err != nil {
				continue
			}
		}
		seen[p] = ix
		r.packs = append(r.packs, ix)
	}
	c.idx = seen // packs gone (a repack) are forgotten
	r.once.Do(func() {})
	return r
}

// packIndex is one pack's .idx (version 2): the sorted object hashes and
// their offsets in the .pack.
type packIndex struct {
	pack    string // path of the .pack
	fanout  [256]uint32
	hashes  []byte // 20 bytes per object, sorted
	offsets []byte // 4 bytes per object, big-endian; MSB set: index into large
	large   []byte // 8 bytes per large offset
}

func (r *packReader) load() {
	idxs, _ := filepath.Glob(filepath.Join(r.dir, "pack-*.idx"))
	for _, p := range idxs {
		if ix, err := readPackIndex(p); err == nil {
			r.packs = append(r.packs, ix)
		}
	}
}

var idxMagic = []byte{0xff, 't', 'O', 'c', 0, 0, 0, 2}

// readPackIndex parses a version 2 pack index.
func readPackIndex(p string) (*packIndex, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	const head = 8 + 256*4
	if len(b) < head+40 || !bytes.Equal(b[:8], idxMagic) {
		return nil, fmt.Errorf("%s: not a version 2 pack index", p)
	}
	ix := &packIndex{pack: strings.TrimSuffix(p, ".idx") + ".pack"}
	for i := range ix.fanout {
		ix.fanout[i] = binary.BigEndian.Uint32(b[8+4*i:])
		if i > 0 && ix.fanout[i] < ix.fanout[i-1] {
			return nil, fmt.Errorf("%s: fan-out table not sorted", p)
		}
	}
	n := int(ix.fanout[255])
	rest := b[head:]
	if len(rest) < n*(20+4+4)+40 {
		return nil, fmt.Errorf("%s: truncated", p)
	}
	ix.hashes = rest[:n*20]
	ix.offsets = rest[n*24 : n*28] // after the hashes and the CRCs
	ix.large = rest[n*28 : len(rest)-40]
	return ix, nil
}

// find returns the offset of h in the pack, or false.
func (ix *packIndex) find(h plumbing.Hash) (int64, bool) {
	lo := uint32(0)
	if h[0] > 0 {
		lo = ix.fanout[h[0]-1]
	}
	hi := ix.fanout[h[0]]
	for lo < hi {
		mid := lo + (hi-lo)/2
		switch c := bytes.Compare(ix.hashes[mid*20:mid*20+20], h[:]); {
		case c == 0:
			off := binary.BigEndian.Uint32(ix.offsets[mid*4:])
			if off&0x80000000 == 0 {
				return int64(off), true
			}
			k := int(off & 0x7fffffff)
			if 8*k+8 > len(ix.large) {
				return 0, false
			}
			o := binary.BigEndian.Uint64(ix.large[8*k:])
			return int64(o), o <= 1<<62
		case c < 0:
			lo = mid + 1
		default:
			hi = mid
		}
	}
	return 0, false
}

// Pack object types (gitformat-pack).
const packBlob = 3

// maxPackedBlob bounds the blobs read this way; larger ones are go-git's.
const maxPackedBlob = 1 << 30

// open returns a reader of blob h and its size when a pack holds it
// whole; ok is false when go-git should read it instead.
func (r *packReader) open(h plumbing.Hash) (rc io.ReadCloser, size int64, ok bool) {
	if r == nil {
		return nil, 0, false
	}
	r.once.Do(r.load)
	for _, ix := range r.packs {
		off, found := ix.find(h)
		if !found {
			continue
		}
		f, err := os.Open(ix.pack)
		if err != nil {
			return nil, 0, false
		}
		var hdr [16]byte
		n, _ := f.ReadAt(hdr[:], off)
		typ, size, hlen := packHeader(hdr[:n])
		if hlen == 0 || typ != packBlob || size > maxPackedBlob {
			f.Close()
			return nil, 0, false
		}
		// Compressed, the blob takes at most about its size: a small
		// file gets a small buffer.
		br := bufio.NewReaderSize(io.NewSectionReader(f, off+int64(hlen), 1<<62), int(min(max(size, 4<<10), 256<<10)))
		zr, err := zlib.NewReader(br)
		if err != nil {
			f.Close()
			return nil, 0, false
		}
		sum := sha1.New()
		sum.Write([]byte("blob " + strconv.FormatInt(size, 10) + "\x00"))
		return &packedBlob{f: f, z: zr, sum: sum, want: h, left: size}, size, true
	}
	return nil, 0, false
}

// packHeader decodes an object header of a pack: type, size and the
// header's length (0 when malformed).
func packHeader(b []byte) (typ int, size int64, n int) {
	if len(b) == 0 {
		return 0, 0, 0
	}
	c := b[0]
	typ, size = int(c>>4&7), int64(c&15)
	shift := uint(4)
	n = 1
	for c&0x80 != 0 {
		if n >= len(b) || shift > 56 {
			return 0, 0, 0
		}
		c = b[n]
		size |= int64(c&0x7f) << shift
		shift += 7
		n++
	}
	return typ, size, n
}

// packedBlob streams one blob from its pack.
type packedBlob struct {
	f    *os.File
	z    io.ReadCloser
	sum  hash.Hash
	want plumbing.Hash
	left int64 // bytes still to come
	err  error
}

func (b *packedBlob) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if b.left == 0 {
		// The end: the stream must end here too, and the bytes hash to
		// the object the tree names.
		var one [1]byte
		if n, _ := b.z.Read(one[:]); n != 0 {
			b.err = b.corrupt("longer than its header says")
		} else if got := plumbing.Hash(b.sum.Sum(nil)); got != b.want {
			b.err = b.corrupt("its content hashes to " + got.String())
		} else {
			b.err = io.EOF
		}
		return 0, b.err
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.z.Read(p)
	b.sum.Write(p[:n])
	b.left -= int64(n)
	switch {
	case err == io.EOF && b.left > 0:
		b.err = b.corrupt("shorter than its header says")
		return n, b.err
	case err != nil && err != io.EOF:
		b.err = b.corrupt(err.Error())
		return n, b.err
	}
	return n, nil
}

func (b *packedBlob) corrupt(why string) error {
	return fmt.Errorf("gitsource: blob %s in %s is corrupt: %s", b.want, filepath.Base(b.f.Name()), why)
}

func (b *packedBlob) Close() error {
	b.z.Close()
	return b.f.Close()
}
