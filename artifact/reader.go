package artifact

import (
	"archive/tar"
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"hash"
	"io"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ReaderOptions configure a Reader. The zero value reads any well-formed
// artifact, signed or not, without checking a signature.
type ReaderOptions struct {
	// Verifiers are the trusted public keys. When there are any, the artifact
	// must carry a signature that one of them verifies.
	Verifiers []*Verifier
	// RequireCovered refuses, with ErrAugmented, an artifact any part of
	// which the signed manifest does not cover (see [Header.Covered]). It is
	// implied by Verifiers; set it alone when the signature is checked
	// elsewhere (detached signatures). Default false: augmented artifacts
	// read as mender-artifact reads them.
	RequireCovered bool
	// Limits bound what the reader holds in memory; zero fields take
	// DefaultLimits.
	Limits Limits
}

// Reader reads an artifact as a stream. NewReader reads and checks
// everything up to the payloads; Next then steps through the payload files.
// The input is read once, front to back.
type Reader struct {
	lim   Limits
	src   *strictSource
	outer *tar.Reader

	manifest          Manifest // signed
	augment           Manifest // unsigned, from manifest-augment
	sig               []byte
	signedBy          *Verifier
	header            *Header
	headerCompression Compression
	seen              map[string]bool
	requireCovered    bool     // refuse augmented parts (Header.Covered)
	augmented         []string // parts the signed manifest does not cover

	pending  *tar.Header // outer entry read ahead of Next
	lastData int         // index of the last data/NNNN entry opened
	cur      *dataEntry
	file     *File
	done     bool
	err      error // sticky
}

// dataEntry is the data/NNNN archive being read.
type dataEntry struct {
	index int
	name  string
	size  int64
	entry io.Reader // the outer entry
	br    *bufio.Reader
	dec   io.ReadCloser
	src   *strictSource
	inner *tar.Reader
}

// NewReader reads r up to the first payload: version, manifest, signature
// and header, checking each against the next. It fails with a wrapped
// artifact error (ErrSignature, ErrDigest, …) on anything it does not trust.
func NewReader(r io.Reader, opts ReaderOptions) (*Reader, error) {
	src := &strictSource{r: r, name: "the artifact"}
	ar := &Reader{
		lim:      opts.Limits.withDefaults(),
		src:      src,
		outer:    tar.NewReader(src),
		seen:     map[string]bool{},
		lastData: -1,
	}
	ar.requireCovered = opts.RequireCovered || len(opts.Verifiers) > 0
	if err := ar.readHead(opts.Verifiers); err != nil {
		return nil, err
	}
	return ar, nil
}

// Header returns the artifact's verified header.
func (ar *Reader) Header() *Header { return ar.header }

// Manifest returns the signed manifest.
func (ar *Reader) Manifest() Manifest { return ar.manifest }

// Signed reports whether the artifact carries a signature.
func (ar *Reader) Signed() bool { return len(ar.sig) > 0 }

// SignedBy returns the trusted key that verified the signature, or nil when
// no keys were given.
func (ar *Reader) SignedBy() *Verifier { return ar.signedBy }

// HeaderCompression returns the compression of the header archive.
func (ar *Reader) HeaderCompression() Compression { return ar.headerCompression }

// nextOuter returns the next entry of the outer archive, checking that it is
// a regular file with a safe name.
func (ar *Reader) nextOuter() (*tar.Header, error) {
	if h := ar.pending; h != nil {
		ar.pending = nil
		return h, nil
	}
	h, err := ar.outer.Next()
	if err == io.EOF {
		return nil, io.EOF
	}
	if err != nil {
		return nil, readErr("the artifact", err)
	}
	if err := ar.src.checkHeaderBlock(h.Name); err != nil {
		return nil, err
	}
	if err := checkName(h.Name); err != nil {
		return nil, err
	}
	if h.Typeflag != tar.TypeReg {
		return nil, fmt.Errorf("%w: %s is not a regular file (tar type %q)", ErrUnexpected, clip(h.Name), h.Typeflag)
	}
	if h.Size < 0 {
		return nil, fmt.Errorf("%w: %s has negative size", ErrFormat, clip(h.Name))
	}
	return h, nil
}

// readSmall reads a whole outer entry of at most limit bytes.
func (ar *Reader) readSmall(h *tar.Header, limit int64) ([]byte, error) {
	if h.Size > limit {
		return nil, fmt.Errorf("%w: %s is %d bytes, limit %d", ErrTooLarge, h.Name, h.Size, limit)
	}
	data := make([]byte, h.Size)
	if _, err := io.ReadFull(ar.outer, data); err != nil {
		return nil, readErr(h.Name, err)
	}
	ar.src.expectPadding(h.Size)
	return data, nil
}

func (ar *Reader) readHead(verifiers []*Verifier) error {
	// version
	h, err := ar.nextOuter()
	if err == io.EOF {
		return fmt.Errorf("%w: empty archive", ErrTruncated)
	}
	if err != nil {
		return err
	}
	if h.Name != "version" {
		return fmt.Errorf("%w: first entry is %q, want \"version\" (is this a Mender artifact?)", ErrOrder, clip(h.Name))
	}
	version, err := ar.readSmall(h, 4<<10)
	if err != nil {
		return err
	}
	var vi versionInfo
	if err := decodeJSON("version", version, &vi); err != nil {
		return err
	}
	if vi.Format != "mender" {
		return fmt.Errorf("%w: format %q, want \"mender\"", ErrVersion, clip(vi.Format))
	}
	if vi.Version != FormatVersion {
		return fmt.Errorf("%w: artifact format version %d; Gitfleet reads version %d (mender-artifact 3.x writes it)", ErrVersion, vi.Version, FormatVersion)
	}

	// manifest
	if h, err = ar.nextOuter(); err != nil {
		return endErr(err, "manifest")
	}
	if h.Name != "manifest" {
		return fmt.Errorf("%w: %q after version, want \"manifest\"", ErrOrder, clip(h.Name))
	}
	mtext, err := ar.readSmall(h, ar.lim.Manifest)
	if err != nil {
		return err
	}
	if ar.manifest, err = parseManifest("manifest", mtext); err != nil {
		return err
	}

	// manifest.sig, manifest-augment (both optional), then the header.
	for {
		if h, err = ar.nextOuter(); err != nil {
			return endErr(err, "header")
		}
		switch {
		case h.Name == "manifest.sig" && ar.sig == nil && ar.augment == nil:
			if ar.sig, err = ar.readSmall(h, ar.lim.Signature); err != nil {
				return err
			}
			if len(ar.sig) == 0 {
				return fmt.Errorf("%w: manifest.sig is empty", ErrSignature)
			}
			continue
		case h.Name == "manifest-augment" && ar.augment == nil:
			text, err := ar.readSmall(h, ar.lim.Manifest)
			if err != nil {
				return err
			}
			if ar.augment, err = parseManifest("manifest-augment", text); err != nil {
				return err
			}
			ar.augmented = append([]string{"manifest-augment"}, sortedKeys(ar.augment)...)
			// Refuse before anything of the augment is believed, read or
			// decompressed.
			if ar.requireCovered {
				return coveredErr(ar.augmented)
			}
			for name := range ar.augment {
				if _, dup := ar.manifest[name]; dup {
					return fmt.Errorf("%w: %s is listed in both manifest and manifest-augment", ErrManifest, name)
				}
				if !strings.HasPrefix(name, "header-augment.tar") && !strings.HasPrefix(name, "data/") {
					return fmt.Errorf("%w: manifest-augment may list only header-augment and data files, not %s", ErrManifest, clip(name))
				}
			}
			continue
		}
		break
	}

	// The signature covers the manifest, which covers the rest: check it
	// before believing anything the manifest says.
	if err := ar.checkSignature(mtext, verifiers); err != nil {
		return err
	}
	if err := ar.checkDigest("version", version, ar.manifest); err != nil {
		return err
	}

	comp, ok := compressionFor(h.Name, "header.tar")
	if !ok {
		if strings.HasPrefix(h.Name, "data/") {
			return fmt.Errorf("%w: %s before the header", ErrOrder, clip(h.Name))
		}
		return fmt.Errorf("%w: %q where header.tar[.gz|.xz|.zst] belongs", ErrUnexpected, clip(h.Name))
	}
	ar.headerCompression = comp
	want, listed := ar.manifest[h.Name]
	if !listed {
		return fmt.Errorf("%w: manifest does not list %s", ErrManifest, h.Name)
	}
	hdr, err := ar.readHeaderArchive(h, comp, want, false)
	if err != nil {
		return err
	}
	ar.header = hdr
	hdr.Augmented = ar.augmented

	// Optional header-augment, covered by manifest-augment only.
	h, err = ar.nextOuter()
	switch {
	case err == io.EOF:
		return ar.finishManifest()
	case err != nil:
		return err
	}
	if acomp, ok := compressionFor(h.Name, "header-augment.tar"); ok {
		want, listed := ar.augment[h.Name]
		if !listed {
			return fmt.Errorf("%w: %s is not listed in manifest-augment", ErrManifest, h.Name)
		}
		aug, err := ar.readHeaderArchive(h, acomp, want, true)
		if err != nil {
			return err
		}
		ar.header.Augment = aug.Augment
	} else {
		ar.pending = h
	}
	return ar.finishManifest()
}

// finishManifest distributes the manifest's data entries to their payloads.
func (ar *Reader) finishManifest() error {
	for _, m := range []Manifest{ar.manifest, ar.augment} {
		for _, name := range sortedKeys(m) {
			switch {
			case name == "version" || strings.HasPrefix(name, "header.tar") || strings.HasPrefix(name, "header-augment.tar"):
				continue
			case strings.HasPrefix(name, "data/"):
				idx, file, ok := splitDataName(name)
				if !ok {
					return fmt.Errorf("%w: manifest entry %q is not data/NNNN/<file>", ErrManifest, clip(name))
				}
				if idx >= len(ar.header.Payloads) {
					return fmt.Errorf("%w: manifest lists %s, but the header has %d payload(s)", ErrManifest, name, len(ar.header.Payloads))
				}
				p := &ar.header.Payloads[idx]
				p.Files = append(p.Files, FileInfo{Name: file, Digest: m[name]})
			default:
				return fmt.Errorf("%w: manifest lists %q, which is no part of an artifact", ErrManifest, clip(name))
			}
		}
	}
	return nil
}

var dataNameRE = regexp.MustCompile(`^data/([0-9]{4})/([^/]+)$`)

func splitDataName(name string) (int, string, bool) {
	m := dataNameRE.FindStringSubmatch(name)
	if m == nil {
		return 0, "", false
	}
	n, _ := strconv.Atoi(m[1])
	return n, m[2], true
}

func endErr(err error, want string) error {
	if err == io.EOF {
		return fmt.Errorf("%w: archive ends before %s", ErrTruncated, want)
	}
	return err
}

func (ar *Reader) checkSignature(manifest []byte, verifiers []*Verifier) error {
	if len(verifiers) == 0 {
		return nil
	}
	if ar.sig == nil {
		return fmt.Errorf("%w: the artifact is not signed, and a signature by a trusted key is required", ErrSignatureMissing)
	}
	var last error
	for _, v := range verifiers {
		if last = v.Verify(manifest, ar.sig); last == nil {
			ar.signedBy = v
			return nil
		}
	}
	if len(verifiers) == 1 {
		return last
	}
	return fmt.Errorf("%w with any of the %d trusted keys", ErrSignature, len(verifiers))
}

func (ar *Reader) checkDigest(name string, data []byte, m Manifest) error {
	want, ok := m[name]
	if !ok {
		return fmt.Errorf("%w: manifest does not list %s", ErrManifest, name)
	}
	ar.seen[name] = true
	if got := sha256.Sum256(data); got != want {
		return fmt.Errorf("%w: %s: sha256 %x, manifest says %s", ErrDigest, name, got, want)
	}
	return nil
}

// readHeaderArchive reads header.tar* (or header-augment.tar*). The stored
// bytes are bounded (Limits.Header), so they are read whole and their digest
// checked before anything is decompressed or parsed: a tampered header never
// reaches a decompressor.
func (ar *Reader) readHeaderArchive(h *tar.Header, comp Compression, want Digest, augment bool) (*Header, error) {
	raw, err := ar.readSmall(h, ar.lim.Header)
	if err != nil {
		return nil, err
	}
	ar.seen[h.Name] = true
	if got := Digest(sha256.Sum256(raw)); got != want {
		return nil, fmt.Errorf("%w: %s: sha256 %s, manifest says %s", ErrDigest, h.Name, got, want)
	}
	br := byteReader(bytes.NewReader(raw))
	dec, err := decompress(comp, br)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", h.Name, err)
	}
	defer dec.Close()
	// Bound the decompressed size too: a small compressed header must not
	// unpack into gigabytes.
	lr := &io.LimitedReader{R: dec, N: ar.lim.Header + 1}
	isrc := &strictSource{r: lr, name: h.Name + " (unpacked)"}
	var hdr *Header
	if augment {
		hdr, err = ar.parseAugment(tar.NewReader(isrc), isrc, h.Name)
	} else {
		hdr, err = ar.parseHeader(tar.NewReader(isrc), isrc, h.Name)
	}
	if err == nil {
		err = drainZeros(isrc, ar.lim.Trailer, h.Name)
	}
	if lr.N <= 0 {
		return nil, fmt.Errorf("%w: %s unpacks to more than %d bytes", ErrTooLarge, h.Name, ar.lim.Header)
	}
	if err != nil {
		return nil, err
	}
	// Nothing may follow the compressed stream inside the entry.
	if n, _ := io.Copy(io.Discard, br); n > 0 && comp != None {
		return nil, fmt.Errorf("%w: %d bytes after the end of the compressed stream in %s", ErrFormat, n, h.Name)
	}
	return hdr, nil
}

var (
	headersRE = regexp.MustCompile(`^headers/([0-9]{4})/(type-info|meta-data)$`)
	scriptRE  = regexp.MustCompile(`^scripts/([A-Za-z]+_(?:Enter|Leave|Error)(?:_[0-9]{2})?(?:_[A-Za-z0-9_.-]*)?)$`)
)

// headerEntries iterates the regular files of a header archive, reading each
// whole (bounded) and checking the padding after it. Directory entries are
// skipped.
func (ar *Reader) headerEntries(tr *tar.Reader, src *strictSource, archive string, fn func(name string, data []byte) error) error {
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return readErr(archive, err)
		}
		if err := src.checkHeaderBlock(h.Name); err != nil {
			return fmt.Errorf("%s: %w", archive, err)
		}
		if err := checkName(h.Name); err != nil {
			return fmt.Errorf("%s: %w", archive, err)
		}
		if h.Typeflag == tar.TypeDir {
			continue
		}
		if h.Typeflag != tar.TypeReg {
			return fmt.Errorf("%w: %s: %s is not a regular file", ErrUnexpected, archive, clip(h.Name))
		}
		if h.Size > ar.lim.HeaderEntry {
			return fmt.Errorf("%w: %s: %s is %d bytes, limit %d", ErrTooLarge, archive, clip(h.Name), h.Size, ar.lim.HeaderEntry)
		}
		data := make([]byte, h.Size)
		if _, err := io.ReadFull(tr, data); err != nil {
			return readErr(archive+": "+h.Name, err)
		}
		src.expectPadding(h.Size)
		if err := fn(h.Name, data); err != nil {
			return err
		}
	}
}

func (ar *Reader) parseHeader(tr *tar.Reader, src *strictSource, archive string) (*Header, error) {
	hdr := &Header{}
	first := true
	lastIdx, sawTypeInfo, sawHeaders := -1, false, false
	err := ar.headerEntries(tr, src, archive, func(name string, data []byte) error {
		if first {
			first = false
			if name != "header-info" {
				return fmt.Errorf("%w: %s: first entry is %q, want header-info", ErrOrder, archive, clip(name))
			}
			if err := decodeJSON(archive+": header-info", data, &hdr.Info); err != nil {
				return err
			}
			if err := validateHeaderInfo(&hdr.Info, ar.lim); err != nil {
				return err
			}
			hdr.Payloads = make([]Payload, len(hdr.Info.Payloads))
			for i, p := range hdr.Info.Payloads {
				hdr.Payloads[i] = Payload{Index: i, Type: p.Type}
			}
			return nil
		}
		if m := scriptRE.FindStringSubmatch(name); m != nil {
			if sawHeaders {
				return fmt.Errorf("%w: %s: script %s after headers/", ErrOrder, archive, m[1])
			}
			hdr.Scripts = append(hdr.Scripts, Script{Name: m[1], Data: data})
			return nil
		}
		m := headersRE.FindStringSubmatch(name)
		if m == nil {
			return fmt.Errorf("%w: %s: %q", ErrUnexpected, archive, clip(name))
		}
		sawHeaders = true
		idx, _ := strconv.Atoi(m[1])
		if idx >= len(hdr.Payloads) {
			return fmt.Errorf("%w: %s: %s, but header-info lists %d payload(s)", ErrUnexpected, archive, name, len(hdr.Payloads))
		}
		p := &hdr.Payloads[idx]
		switch m[2] {
		case "type-info":
			if idx <= lastIdx {
				return fmt.Errorf("%w: %s: %s after headers/%04d", ErrOrder, archive, name, lastIdx)
			}
			lastIdx, sawTypeInfo = idx, true
			if err := decodeJSON(archive+": "+name, data, &p.TypeInfo); err != nil {
				return err
			}
			if err := checkTypeInfoProvides(archive+": "+name, p.TypeInfo.Provides); err != nil {
				return err
			}
			// mender-artifact 3.9 writes an empty type for rootfs-image.
			if p.TypeInfo.Type != "" && p.TypeInfo.Type != p.Type {
				return fmt.Errorf("%w: %s: %s says type %q, header-info says %q", ErrFormat, archive, name, clip(p.TypeInfo.Type), p.Type)
			}
			p.TypeInfo.Type = p.Type
		case "meta-data":
			if idx != lastIdx || !sawTypeInfo {
				return fmt.Errorf("%w: %s: %s before its type-info", ErrOrder, archive, name)
			}
			if len(bytes.TrimSpace(data)) == 0 {
				return nil
			}
			if err := decodeJSON(archive+": "+name, data, &p.MetaData); err != nil {
				return err
			}
			if p.MetaData == nil {
				return fmt.Errorf("%w: %s: %s must be a JSON object", ErrFormat, archive, name)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if first {
		return nil, fmt.Errorf("%w: %s has no header-info", ErrFormat, archive)
	}
	if lastIdx != len(hdr.Payloads)-1 {
		return nil, fmt.Errorf("%w: %s: payload %d has no type-info", ErrFormat, archive, lastIdx+1)
	}
	return hdr, nil
}

// parseAugment reads header-augment: only payload types and type-info
// artifact_depends, as the format allows there.
func (ar *Reader) parseAugment(tr *tar.Reader, src *strictSource, archive string) (*Header, error) {
	aug := &Augment{Depends: map[int]map[string]any{}}
	err := ar.headerEntries(tr, src, archive, func(name string, data []byte) error {
		if name == "header-info" {
			var hi struct {
				Payloads []PayloadType `json:"payloads"`
			}
			if err := decodeJSON(archive+": header-info", data, &hi); err != nil {
				return err
			}
			aug.Payloads = hi.Payloads
			return nil
		}
		m := headersRE.FindStringSubmatch(name)
		if m == nil || m[2] != "type-info" {
			return fmt.Errorf("%w: %s: %q (only header-info and type-info are allowed there)", ErrUnexpected, archive, clip(name))
		}
		idx, _ := strconv.Atoi(m[1])
		if idx >= len(ar.header.Payloads) {
			return fmt.Errorf("%w: %s: %s beyond the %d payload(s)", ErrUnexpected, archive, name, len(ar.header.Payloads))
		}
		var ti TypeInfo
		if err := decodeJSON(archive+": "+name, data, &ti); err != nil {
			return err
		}
		if len(ti.Provides) > 0 || len(ti.ClearsProvides) > 0 {
			return fmt.Errorf("%w: %s: %s may only carry artifact_depends", ErrUnexpected, archive, name)
		}
		aug.Depends[idx] = ti.Depends
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &Header{Augment: aug}, nil
}

// File is one payload file, read as a stream. Its digest is checked against
// the manifest as it is read: the Read that reaches the end returns ErrDigest
// instead of io.EOF on a mismatch, so a consumer never sees a clean end of a
// tampered file.
type File struct {
	Payload int       // payload index
	Name    string    // base name
	Size    int64     // bytes
	Mode    int64     // permission bits from the archive
	ModTime time.Time // from the archive
	Digest  Digest    // what the manifest lists

	r    io.Reader
	sum  hash.Hash
	read int64
	err  error
}

func (f *File) Read(p []byte) (int, error) {
	if f.err != nil {
		return 0, f.err
	}
	n, err := f.r.Read(p)
	f.sum.Write(p[:n])
	f.read += int64(n)
	switch {
	case err == io.EOF:
		var got Digest
		f.sum.Sum(got[:0])
		if f.read != f.Size {
			f.err = fmt.Errorf("%w: data/%04d/%s ends after %d of %d bytes", ErrTruncated, f.Payload, f.Name, f.read, f.Size)
		} else if got != f.Digest {
			f.err = fmt.Errorf("%w: data/%04d/%s: sha256 %s, manifest says %s", ErrDigest, f.Payload, f.Name, got, f.Digest)
		} else {
			f.err = io.EOF
		}
		return n, f.err
	case err != nil:
		f.err = readErr(fmt.Sprintf("data/%04d/%s", f.Payload, f.Name), err)
		return n, f.err
	}
	return n, nil
}

// copyBufSize is the chunk WriteTo moves: large enough that per-call costs
// of the tar and decompression layers vanish next to hashing.
const copyBufSize = 256 << 10

var copyBufs = sync.Pool{New: func() any { b := make([]byte, copyBufSize); return &b }}

// WriteTo copies the rest of the file to w in large chunks, checking its
// digest like Read; io.Copy uses it. On a digest mismatch w has received
// the file's bytes but WriteTo returns ErrDigest: write to a temporary place
// and commit only on success.
func (f *File) WriteTo(w io.Writer) (int64, error) {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	var total int64
	for {
		n, err := f.Read(buf)
		if n > 0 {
			m, werr := w.Write(buf[:n])
			total += int64(m)
			if werr != nil {
				return total, werr
			}
			if m != n {
				return total, io.ErrShortWrite
			}
		}
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// finish reads what is left of the file, so its digest is checked.
func (f *File) finish() error {
	if f.err == nil {
		_, _ = io.Copy(io.Discard, f)
	}
	if f.err == io.EOF {
		return nil
	}
	return f.err
}

// Next returns the next payload file. It returns io.EOF after the last one,
// once it has checked that every file the manifest lists was present and
// intact. A file not read to its end is read (and checked) by Next.
func (ar *Reader) Next() (*File, error) {
	if ar.err != nil {
		return nil, ar.err
	}
	f, err := ar.next()
	if err != nil {
		ar.err = err
		ar.file = nil
		return nil, err
	}
	return f, nil
}

func (ar *Reader) next() (*File, error) {
	if ar.done {
		return nil, io.EOF
	}
	if ar.file != nil {
		if err := ar.file.finish(); err != nil {
			return nil, err
		}
		ar.cur.src.expectPadding(ar.file.Size)
		ar.file = nil
	}
	for {
		if ar.cur == nil {
			if err := ar.openData(); err == io.EOF {
				ar.done = true
				return nil, io.EOF
			} else if err != nil {
				return nil, err
			}
		}
		d := ar.cur
		h, err := d.inner.Next()
		if err == io.EOF {
			if err := ar.closeData(); err != nil {
				return nil, err
			}
			continue
		}
		if err != nil {
			return nil, readErr(d.name, err)
		}
		if err := d.src.checkHeaderBlock(h.Name); err != nil {
			return nil, fmt.Errorf("%s: %w", d.name, err)
		}
		return ar.openFile(d, h)
	}
}

func (ar *Reader) openFile(d *dataEntry, h *tar.Header) (*File, error) {
	if err := checkName(h.Name); err != nil {
		return nil, fmt.Errorf("%s: %w", d.name, err)
	}
	if h.Typeflag != tar.TypeReg {
		return nil, fmt.Errorf("%w: %s: %s is not a regular file", ErrUnexpected, d.name, clip(h.Name))
	}
	if strings.Contains(h.Name, "/") {
		return nil, fmt.Errorf("%w: %s: %q is in a subdirectory; payload files are flat", ErrPath, d.name, clip(h.Name))
	}
	mname := fmt.Sprintf("data/%04d/%s", d.index, h.Name)
	want, ok := ar.manifest[mname]
	if !ok {
		if want, ok = ar.augment[mname]; !ok {
			return nil, fmt.Errorf("%w: %s is not listed in the manifest", ErrManifest, clip(mname))
		}
	}
	if ar.seen[mname] {
		return nil, fmt.Errorf("%w: %s appears twice", ErrFormat, clip(mname))
	}
	ar.seen[mname] = true
	ar.file = &File{
		Payload: d.index, Name: h.Name, Size: h.Size, Mode: h.Mode, ModTime: h.ModTime,
		Digest: want, r: d.inner, sum: sha256.New(),
	}
	return ar.file, nil
}

// openData opens the next data/NNNN.tar* entry; io.EOF at the archive's end.
func (ar *Reader) openData() error {
	h, err := ar.nextOuter()
	if err == io.EOF {
		return ar.finishArchive()
	}
	if err != nil {
		return err
	}
	idx, comp, ok := parseDataEntry(h.Name)
	if !ok {
		if h.Name == "version" || strings.HasPrefix(h.Name, "manifest") || strings.HasPrefix(h.Name, "header") {
			return fmt.Errorf("%w: %s after the data", ErrOrder, clip(h.Name))
		}
		return fmt.Errorf("%w: %q where data/NNNN.tar[.gz|.xz|.zst] belongs", ErrUnexpected, clip(h.Name))
	}
	if idx >= len(ar.header.Payloads) {
		return fmt.Errorf("%w: %s, but the header has %d payload(s)", ErrUnexpected, h.Name, len(ar.header.Payloads))
	}
	if idx <= ar.lastData {
		return fmt.Errorf("%w: %s after data/%04d", ErrOrder, h.Name, ar.lastData)
	}
	ar.lastData = idx
	entry := io.LimitReader(ar.outer, h.Size)
	d := &dataEntry{index: idx, name: h.Name, size: h.Size, entry: entry}
	var under io.Reader = entry
	if comp != None {
		d.br = byteReader(entry)
		under = d.br
	}
	if d.dec, err = decompress(comp, under); err != nil {
		return fmt.Errorf("%s: %w", h.Name, err)
	}
	d.src = &strictSource{r: d.dec, name: h.Name + " (unpacked)"}
	d.inner = tar.NewReader(d.src)
	ar.cur = d
	return nil
}

// closeData checks the end of the current data archive.
func (ar *Reader) closeData() error {
	d := ar.cur
	ar.cur = nil
	defer d.dec.Close()
	if err := drainZeros(d.src, ar.lim.Trailer, d.name); err != nil {
		return err
	}
	var rest io.Reader = d.entry
	if d.br != nil {
		rest = d.br
	}
	n, err := io.Copy(io.Discard, rest)
	if err != nil {
		return readErr(d.name, err)
	}
	if n > 0 {
		return fmt.Errorf("%w: %d bytes after the end of the compressed stream in %s", ErrFormat, n, d.name)
	}
	ar.src.expectPadding(d.size)
	for _, f := range ar.header.Payloads[d.index].Files {
		if name := fmt.Sprintf("data/%04d/%s", d.index, f.Name); !ar.seen[name] {
			return fmt.Errorf("%w: manifest lists %s, which %s does not contain", ErrManifest, name, d.name)
		}
	}
	return nil
}

// finishArchive checks the end of the outer archive: only zero padding may
// follow, and every manifest entry must have been seen.
func (ar *Reader) finishArchive() error {
	if err := drainZeros(ar.src, ar.lim.Trailer, "artifact"); err != nil {
		return err
	}
	for _, m := range []Manifest{ar.manifest, ar.augment} {
		for _, name := range sortedKeys(m) {
			if !ar.seen[name] {
				return fmt.Errorf("%w: manifest lists %s, which is not in the artifact", ErrManifest, name)
			}
		}
	}
	return io.EOF
}

var dataEntryRE = regexp.MustCompile(`^data/([0-9]{4})\.tar(\.gz|\.xz|\.zst)?$`)

func parseDataEntry(name string) (int, Compression, bool) {
	m := dataEntryRE.FindStringSubmatch(name)
	if m == nil {
		return 0, "", false
	}
	idx, _ := strconv.Atoi(m[1])
	comp, _ := compressionFor("x"+m[2], "x")
	return idx, comp, true
}

// Verify reads a whole artifact, checking every digest and, when verifiers
// are given, the signature. It returns the header of an intact artifact.
func Verify(r io.Reader, opts ReaderOptions) (*Header, error) {
	ar, err := NewReader(r, opts)
	if err != nil {
		return nil, err
	}
	for {
		f, err := ar.Next()
		if err == io.EOF {
			return ar.Header(), nil
		}
		if err != nil {
			return nil, err
		}
		if _, err := io.Copy(io.Discard, f); err != nil {
			return nil, err
		}
	}
}

// MarshalJSON renders a Header for `gitfleet artifact read --json`.
func (h *Header) MarshalJSON() ([]byte, error) {
	type file struct {
		Name   string `json:"name"`
		SHA256 string `json:"sha256"`
	}
	type payload struct {
		Type           string            `json:"type"`
		Provides       map[string]string `json:"provides,omitempty"`
		Depends        map[string]any    `json:"depends,omitempty"`
		ClearsProvides []string          `json:"clears_provides,omitempty"`
		MetaData       map[string]any    `json:"meta_data,omitempty"`
		Files          []file            `json:"files"`
	}
	out := struct {
		Name        string    `json:"artifact_name"`
		Group       string    `json:"artifact_group,omitempty"`
		DeviceTypes []string  `json:"device_types"`
		DependsOn   []string  `json:"depends_artifact_name,omitempty"`
		DependsGrp  []string  `json:"depends_artifact_group,omitempty"`
		Scripts     []string  `json:"scripts,omitempty"`
		Payloads    []payload `json:"payloads"`
	}{Name: h.Info.Provides.Name, Group: h.Info.Provides.Group, DeviceTypes: h.Info.Depends.DeviceTypes,
		DependsOn: h.Info.Depends.Names, DependsGrp: h.Info.Depends.Groups}
	for _, s := range h.Scripts {
		out.Scripts = append(out.Scripts, s.Name)
	}
	for _, p := range h.Payloads {
		pl := payload{Type: p.Type, Provides: p.TypeInfo.Provides, Depends: p.TypeInfo.Depends,
			ClearsProvides: p.TypeInfo.ClearsProvides, MetaData: p.MetaData, Files: []file{}}
		for _, f := range p.Files {
			pl.Files = append(pl.Files, file{f.Name, f.Digest.String()})
		}
		out.Payloads = append(out.Payloads, pl)
	}
	return json.Marshal(out)
}
