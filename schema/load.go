package schema

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"
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
//
// Load reads the tree from one goroutine, then validates its files on as
// many goroutines as GOMAXPROCS allows, each with its own CUE context. It
// reads fsys from one goroutine at a time.
func Load(fsys fs.FS) (*Fleet, error) { return LoadCached(fsys, nil) }

// LoadCached is Load with a cache of the files it validated before (nil:
// none): a file whose path and content are in c is not parsed nor
// validated again, so loading the next commit of a repository costs the
// files that changed (and the checks across files). When the result has
// errors and some files came from c, the tree is loaded again without c,
// so that every error has the position an uncached Load gives it.
func LoadCached(fsys fs.FS, c *Cache) (*Fleet, error) {
	l := &loader{fsys: fsys, fsMu: new(sync.Mutex), fleet: &Fleet{}, overlapBudget: MaxOverlapPairs}
	files := l.walk()
	hits, err := l.loadFiles(files, c)
	if err != nil {
		return &Fleet{}, err
	}
	l.crossCheck()
	if errs := l.errs.result(); errs != nil {
		if hits > 0 {
			return Load(fsys)
		}
		return l.fleet, errs
	}
	return l.fleet, nil
}

// A Cache holds the manifests of valid files by path and content digest,
// for LoadCached. It keeps the files of the last load that used it (so
// its size is one repository's, less the syntax trees: see
// [Fleet.Compact]); use one Cache per repository followed. Safe for
// concurrent use.
type Cache struct {
	mu sync.Mutex
	m  map[cacheKey]*Fleet
}

type cacheKey struct {
	path string
	sum  [sha256.Size]byte
}

// NewCache returns an empty Cache.
func NewCache() *Cache { return &Cache{m: map[cacheKey]*Fleet{}} }

// Len returns how many files c holds.
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}

// A loader holds the state of one Load: the errors and the fleet. The
// loader of each goroutine that validates files also holds a CUE context
// with the schema compiled in it, which is not safe for concurrent use.
type loader struct {
	fsys  fs.FS
	fsMu  *sync.Mutex // held while a worker reads fsys
	errs  errorList
	fleet *Fleet

	files int   // manifest files read
	total int64 // bytes read

	names     map[Kind][]string // sorted names by kind, for suggestions
	suggested int               // names compared for suggestions

	overlapBudget int // pairs the overlap checks may still compare

	*cueEnv // set in the loaders of the goroutines that validate files
}

// A file is a manifest file read by walk.
type file struct {
	path string
	data []byte
}

// loadFiles validates files in parallel and adds their manifests and
// errors to l, in the order of files. Files found in c (when not nil) are
// taken from it (hits counts them); c is left holding exactly the valid
// files of this load.
func (l *loader) loadFiles(files []file, c *Cache) (hits int, err error) {
	type result struct {
		fleet *Fleet
		errs  errorList
	}
	results := make([]result, len(files))
	var keys []cacheKey
	var todo []int // indexes of files to validate
	if c != nil {
		keys = make([]cacheKey, len(files))
		for i := range files {
			keys[i] = cacheKey{files[i].path, sha256.Sum256(files[i].data)}
		}
		c.mu.Lock()
		for i := range files {
			if f, ok := c.m[keys[i]]; ok {
				results[i].fleet = f
				files[i].data = nil
				hits++
				continue
			}
			todo = append(todo, i)
		}
		c.mu.Unlock()
	} else {
		todo = make([]int, len(files))
		for i := range todo {
			todo[i] = i
		}
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), len(todo)) {
		env, err := getEnv()
		if err != nil {
			return 0, err
		}
		w := &loader{fsys: l.fsys, fsMu: l.fsMu, cueEnv: env}
		wg.Go(func() {
			for {
				n := int(next.Add(1) - 1)
				if n >= len(todo) {
					putEnv(w.cueEnv)
					return
				}
				i := todo[n]
				w.fleet, w.errs = &Fleet{}, errorList{}
				w.loadFile(&files[i])
				results[i] = result{w.fleet, w.errs}
			}
		})
	}
	wg.Wait()
	for _, r := range results {
		l.fleet.append(r.fleet)
		l.errs.merge(&r.errs)
	}
	if c != nil {
		// Keep this load's valid files, without their syntax trees (the
		// fleet just built has its own copies of the manifests, with
		// them).
		m := make(map[cacheKey]*Fleet, len(files))
		for i, r := range results {
			if len(r.errs.errs) == 0 && r.errs.dropped == 0 {
				m[keys[i]] = r.fleet
			}
		}
		for _, i := range todo { // hits are compact already
			if r := results[i]; m[keys[i]] == r.fleet {
				r.fleet.Compact()
			}
		}
		c.mu.Lock()
		c.m = m
		c.mu.Unlock()
	}
	return hits, nil
}

// isManifestFile reports whether name has a manifest file extension.
func isManifestFile(name string) bool {
	switch path.Ext(name) {
	case ".yaml", ".yml", ".cue":
		return true
	}
	return false
}

// loadFile validates one file. A panic in the YAML or CUE libraries on a
// hostile file is reported as an error in that file, not allowed to stop
// the controller; the CUE context it happened in is dropped.
func (l *loader) loadFile(f *file) {
	defer func() {
		if r := recover(); r != nil {
			l.fleet = &Fleet{}
			l.errs.add(Source{File: f.path}, "", "%s: %v", errInternal, r)
			if env, err := getEnv(); err == nil {
				l.cueEnv = env
			}
		}
	}()
	if path.Ext(f.path) == ".cue" {
		l.loadCUE(f.path, f.data)
	} else {
		l.loadYAML(f.path, f.data)
	}
	f.data = nil
}

// errInternal starts the message of a panic recovered while loading.
const errInternal = "internal error (please report it)"

// walk reads every manifest file of the tree in lexical order.
func (l *loader) walk() []file {
	var files []file
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
		files = append(files, file{p, data})
		return nil
	})
	if err != nil {
		l.errs.add(Source{}, "", "walk: %v", err)
	}
	return files
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
