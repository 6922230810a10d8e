package schema

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strings"
	"unicode/utf8"

	"cuelang.org/go/cue"
)

// Limits on what Load reads. A file over a limit is reported, not read.
const (
	MaxFileSize  = 1 << 20   // bytes per manifest file
	MaxDocuments = 1000      // documents per file
	MaxFiles     = 100_000   // manifest files per tree
	MaxTotalSize = 256 << 20 // bytes of manifest files per tree
)

// Load reads and validates every manifest under the root of fsys (see the
// package documentation for which files it reads). On success err is nil.
// Otherwise err is an [Errors] holding every problem found, and the
// returned Fleet holds the manifests that were valid on their own, so that
// callers can still report on them. The returned Fleet is never nil.
func Load(fsys fs.FS) (*Fleet, error) {
	l, err := newLoader(fsys)
	if err != nil {
		return &Fleet{}, err
	}
	l.walk()
	l.crossCheck()
	if errs := l.errs.result(); errs != nil {
		return l.fleet, errs
	}
	return l.fleet, nil
}

// A loader holds the state of one Load.
type loader struct {
	fsys      fs.FS
	ctx       *cue.Context
	schema    cue.Value
	fields    map[string]cue.Value // schema values by path, see checkUnknown
	required_ map[string][]string  // required fields by schema path
	errs      errorList
	fleet     *Fleet

	files int   // manifest files read
	total int64 // bytes read
}

func newLoader(fsys fs.FS) (*loader, error) {
	ctx := newContext()
	s, err := compileSchema(ctx)
	if err != nil {
		return nil, err
	}
	return &loader{
		fsys:      fsys,
		ctx:       ctx,
		schema:    s,
		fields:    make(map[string]cue.Value),
		required_: make(map[string][]string),
		fleet:     &Fleet{},
	}, nil
}

// isManifestFile reports whether name has a manifest file extension.
func isManifestFile(name string) bool {
	switch path.Ext(name) {
	case ".yaml", ".yml", ".cue":
		return true
	}
	return false
}

// walk loads every manifest file of the tree in lexical order.
func (l *loader) walk() {
	err := fs.WalkDir(l.fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			l.errs.add(Source{File: p}, "", "%v", unwrapPath(err))
			if d != nil && d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if p == "." {
			return nil
		}
		name := d.Name()
		if strings.HasPrefix(name, ".") {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			if p == "policies" || name == "cue.mod" {
				return fs.SkipDir
			}
			return nil
		}
		if !isManifestFile(name) {
			return nil
		}
		if d.Type()&fs.ModeSymlink != 0 {
			l.errs.add(Source{File: p}, "", "manifest is a symbolic link; links are not followed")
			return nil
		}
		if !d.Type().IsRegular() {
			l.errs.add(Source{File: p}, "", "manifest is not a regular file")
			return nil
		}
		if l.files++; l.files > MaxFiles {
			l.errs.add(Source{File: p}, "", "more than %d manifest files; stopped reading", MaxFiles)
			return fs.SkipAll
		}
		data, err := l.read(p)
		if err != nil {
			l.errs.add(Source{File: p}, "", "%v", err)
			if l.total > MaxTotalSize {
				return fs.SkipAll
			}
			return nil
		}
		if path.Ext(name) == ".cue" {
			l.loadCUE(p, data)
		} else {
			l.loadYAML(p, data)
		}
		return nil
	})
	if err != nil {
		l.errs.add(Source{}, "", "walk: %v", err)
	}
}

var errBinary = errors.New("not a text file (binary or not UTF-8)")

// read returns the contents of the manifest file p, enforcing the size
// limits.
func (l *loader) read(p string) ([]byte, error) {
	f, err := l.fsys.Open(p)
	if err != nil {
		return nil, unwrapPath(err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > MaxFileSize {
		return nil, fmt.Errorf("file is %d bytes; the limit is %d", fi.Size(), MaxFileSize)
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read: %w", unwrapPath(err))
	}
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("file is larger than the limit of %d bytes", MaxFileSize)
	}
	l.total += int64(len(data))
	if l.total > MaxTotalSize {
		return nil, fmt.Errorf("manifests total more than %d bytes; stopped reading", MaxTotalSize)
	}
	if bytes.IndexByte(data, 0) >= 0 || !utf8.Valid(data) {
		return nil, errBinary
	}
	return data, nil
}

// unwrapPath drops the *fs.PathError wrapper, whose path the caller
// reports already.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
