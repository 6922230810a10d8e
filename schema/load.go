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
	"slices"
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
// files that changed (and the checks across files). When fsys's
// directory entries know their file's content hash (a [ContentHasher],
// as the entries of a Git commit's tree do), a cached file is not even
// read. The devices of the fleet are shared with the previous load when
// no file that declares devices changed: then neither the device list
// nor the index of device names is rebuilt. When the result has errors
// and some files came from c, the tree is loaded again without c, so that
// every error has the position an uncached Load gives it.
//
// The returned Fleet may share its Devices with the Fleet of an earlier
// LoadCached with the same c: treat both as read-only.
func LoadCached(fsys fs.FS, c *Cache) (*Fleet, error) {
	if c != nil {
		c.load.Lock()
		defer c.load.Unlock()
	}
	l := &loader{fsys: fsys, fsMu: new(sync.Mutex), fleet: &Fleet{}, overlapBudget: MaxOverlapPairs, cache: c}
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
	if c != nil {
		l.shared.rebase()
		c.mu.Lock()
		c.devices = l.shared
		c.mu.Unlock()
	}
	if d := l.shared; d != nil && d.index != nil && len(d.devices) == len(l.fleet.Devices) &&
		(len(d.devices) == 0 || &d.devices[0] == &l.fleet.Devices[0]) {
		l.fleet.names = &deviceNames{m: d.index, n: len(d.devices)}
		if len(d.devices) > 0 {
			l.fleet.names.first = &d.devices[0]
		}
	}
	return l.fleet, nil
}

// listRegions gives each device list of files[todo] its region of one
// array for its devices, sized by its device lines, in file order. When
// every list parses without error, the regions are adjacent and the
// fleet's devices are that array, with no copy (see contiguous).
func (l *loader) listRegions(files []file, todo []int) {
	total := 0
	counts := make(map[int]int)
	for _, i := range todo {
		if path.Ext(files[i].path) == DeviceListExt {
			n := countDeviceLines(files[i].data)
			counts[i] = n
			total += n
		}
	}
	if total == 0 {
		return
	}
	l.lists = make([]Device, total)
	off := 0
	for _, i := range todo {
		if n, ok := counts[i]; ok {
			files[i].devices = l.lists[off : off : off+n]
			off += n
		}
	}
}

// contiguous returns the devices of with, results in file order, when
// they are, in that order, exactly the adjacent regions that make up
// l.lists.
func (l *loader) contiguous(with []*Fleet) ([]Device, bool) {
	if len(with) == 0 || len(l.lists) == 0 {
		return nil, false
	}
	next := 0
	for _, g := range with {
		if len(g.Devices) > len(l.lists)-next || &g.Devices[0] != &l.lists[next] {
			return nil, false
		}
		next += len(g.Devices)
	}
	if next != len(l.lists) {
		return nil, false
	}
	return l.lists, true
}

// rebase points the devices of each file's result that has no syntax
// trees (device lists, cached files) into the merged list, so that the
// cache and the fleet hold one copy of them, not two. Files with syntax
// trees keep their own, compacted, copy: the merged list keeps the trees
// until the caller compacts it.
func (d *sharedDevices) rebase() {
	if d == nil || len(d.from) < 2 {
		return // nothing merged, or a file's list itself
	}
	off := 0
	for _, g := range d.from {
		n := len(g.Devices)
		if n > 0 && g.Devices[0].doc == nil && &g.Devices[0] != &d.devices[off] {
			g.Devices = d.devices[off : off+n : off+n]
		}
		off += n
	}
}

// A ContentHasher is a directory entry (an [fs.DirEntry]) that knows a
// digest of its file's content without reading it, such as the Git blob
// hash of a tree entry. Two files with the same ContentHash have the same
// content.
type ContentHasher interface {
	ContentHash() string
}

// A Cache holds the manifests of valid files by path and content digest,
// for LoadCached. It keeps the files of the last load that used it (so
// its size is one repository's, less the syntax trees: see
// [Fleet.Compact]); use one Cache per repository followed. Safe for
// concurrent use; loads that share a Cache run one at a time.
type Cache struct {
	load    sync.Mutex // held by each LoadCached: they run one at a time
	mu      sync.Mutex
	m       map[cacheKey]*cachedFile
	devices *sharedDevices // the devices of the last valid load
}

type cacheKey struct {
	path string
	sum  string // "sha256:" and the digest, or a ContentHasher's hash
}

// A cachedFile is the result of a valid file, compacted.
type cachedFile struct {
	fleet *Fleet
	size  int64 // bytes, for MaxTotalSize
}

// sharedDevices is the merged Devices of a load, the per-file results
// they were merged from, in order, and their index by name; a load whose
// files that declare devices are the same ones shares them.
type sharedDevices struct {
	from    []*Fleet
	devices []Device
	index   map[string]*Device
	// caNames are the DeviceCA names no device name falls under
	// (checkCANames), as last checked: nil before any check.
	caNames []string
}

// NewCache returns an empty Cache.
func NewCache() *Cache { return &Cache{m: map[cacheKey]*cachedFile{}} }

// Len returns how many files c holds.
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}

// lookup returns the cached file at k, or nil.
func (c *Cache) lookup(k cacheKey) *cachedFile {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[k]
}

// A loader holds the state of one Load: the errors and the fleet. The
// loader of each goroutine that validates files also holds a CUE context
// with the schema compiled in it, which is not safe for concurrent use.
type loader struct {
	fsys  fs.FS
	fsMu  *sync.Mutex // held while a worker reads fsys
	errs  errorList
	fleet *Fleet
	cache *Cache // nil: none

	files int   // manifest files read
	total int64 // bytes read

	// lists is the array the device lists of this load are parsed into
	// (see listRegions).
	lists []Device

	// shared are the fleet's devices, shared with an earlier load when
	// index is set (then its names need no new index).
	shared *sharedDevices

	names     map[Kind][]string // sorted names by kind, for suggestions
	suggested int               // names compared for suggestions

	overlapBudget int // pairs the overlap checks may still compare

	*cueEnv // set in the loaders of the goroutines that validate files
}

// A file is a manifest file read by walk.
type file struct {
	path string
	data []byte
	key  cacheKey    // set when loading with a cache
	hit  *cachedFile // set when found in the cache (data is then nil)
	// devices, for a device list to parse, is its region of the
	// array all device lists of the load are parsed into (length 0,
	// capacity its device lines).
	devices []Device
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
	var todo []int // indexes of files to validate
	if c != nil {
		for i := range files {
			f := &files[i]
			if f.hit == nil && f.key.sum == "" {
				sum := sha256.Sum256(f.data)
				f.key = cacheKey{f.path, "sha256:" + string(sum[:])}
				f.hit = c.lookup(f.key)
			}
			if f.hit != nil {
				results[i].fleet = f.hit.fleet
				f.data = nil
				hits++
				continue
			}
			todo = append(todo, i)
		}
	} else {
		todo = make([]int, len(files))
		for i := range todo {
			todo[i] = i
		}
	}
	l.listRegions(files, todo)
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
				w.fleet, w.errs = &Fleet{Devices: files[i].devices}, errorList{}
				size := len(files[i].data)
				w.loadFile(&files[i])
				results[i] = result{w.fleet, w.errs}
				if c != nil && w.errs.count() == 0 {
					files[i].hit = &cachedFile{fleet: w.fleet, size: int64(size)}
				}
			}
		})
	}
	wg.Wait()
	fleets := make([]*Fleet, len(results))
	for i, r := range results {
		fleets[i] = r.fleet
		l.errs.merge(&r.errs)
	}
	l.merge(fleets, c)
	if c != nil {
		// Keep this load's valid files, without their syntax trees (the
		// fleet just built has its own copies of the manifests, with
		// them).
		m := make(map[cacheKey]*cachedFile, len(files))
		for i, r := range results {
			if len(r.errs.errs) == 0 && r.errs.dropped == 0 && files[i].hit != nil {
				m[files[i].key] = files[i].hit
			}
		}
		for _, i := range todo { // hits are compact already
			if h := files[i].hit; h != nil {
				h.fleet.Compact()
			}
		}
		c.mu.Lock()
		c.m = m
		c.mu.Unlock()
	}
	return hits, nil
}

// merge sets l.fleet to the manifests of fleets, the results of the
// files in order. Its Devices are those of the last load with c when they
// came from the same results, else a new list (l.shared says which).
func (l *loader) merge(fleets []*Fleet, c *Cache) {
	var with []*Fleet // the results that declare devices
	for _, g := range fleets {
		if len(g.Devices) > 0 {
			with = append(with, g)
		}
	}
	f := l.fleet
	n := func(get func(*Fleet) int) int {
		s := 0
		for _, g := range fleets {
			s += get(g)
		}
		return s
	}
	f.Artifacts = make([]Artifact, 0, n(func(g *Fleet) int { return len(g.Artifacts) }))
	f.Rollouts = make([]Rollout, 0, n(func(g *Fleet) int { return len(g.Rollouts) }))
	f.Groups = make([]DeviceGroup, 0, n(func(g *Fleet) int { return len(g.Groups) }))
	f.Checks = make([]MonitorCheck, 0, n(func(g *Fleet) int { return len(g.Checks) }))
	f.Configs = make([]DeviceConfig, 0, n(func(g *Fleet) int { return len(g.Configs) }))
	f.Keys = make([]SigningKey, 0, n(func(g *Fleet) int { return len(g.Keys) }))
	f.Notifications = make([]Notification, 0, n(func(g *Fleet) int { return len(g.Notifications) }))
	for _, g := range fleets {
		devices := g.Devices
		g.Devices = nil
		f.append(g)
		g.Devices = devices
	}
	if c != nil {
		c.mu.Lock()
		prev := c.devices
		c.mu.Unlock()
		if prev != nil && slices.Equal(prev.from, with) {
			l.shared = prev
			f.Devices = prev.devices
			return
		}
	}
	if d, ok := l.contiguous(with); ok {
		// Parsed into adjacent regions of one array: nothing to copy.
		f.Devices = d
		l.shared = &sharedDevices{from: with, devices: f.Devices}
		return
	}
	switch len(with) {
	case 0:
	case 1:
		if with[0].Devices[0].doc == nil {
			// A device list or a cached file: nothing for Compact to
			// change, so the list can be shared with the file's result.
			f.Devices = with[0].Devices
			break
		}
		fallthrough
	default:
		f.Devices = make([]Device, 0, n(func(g *Fleet) int { return len(g.Devices) }))
		for _, g := range with {
			f.Devices = append(f.Devices, g.Devices...)
		}
	}
	l.shared = &sharedDevices{from: with, devices: f.Devices}
}

// isManifestFile reports whether name has a manifest file extension.
func isManifestFile(name string) bool {
	switch path.Ext(name) {
	case ".yaml", ".yml", ".cue", DeviceListExt:
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
	switch path.Ext(f.path) {
	case ".cue":
		l.loadCUE(f.path, f.data)
	case DeviceListExt:
		l.loadDeviceList(f.path, f.data)
	default:
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
		f := file{path: p}
		if h, ok := d.(ContentHasher); ok && l.cache != nil && h.ContentHash() != "" {
			// Known by its hash: a file in the cache is not read.
			f.key = cacheKey{p, h.ContentHash()}
			f.hit = l.cache.lookup(f.key)
			if f.hit != nil {
				if l.total += f.hit.size; l.total > MaxTotalSize {
					l.errs.add(Source{File: p}, "", "manifests total more than %d bytes; stopped reading", MaxTotalSize)
					return fs.SkipAll
				}
				files = append(files, f)
				return nil
			}
		}
		data, err := l.read(p)
		if err != nil {
			at := Source{File: p}
			if be, ok := err.(*binaryError); ok {
				at.Line, at.Col = be.line, be.col
			}
			l.errs.add(at, "", "%v", err)
			if l.total > MaxTotalSize {
				return fs.SkipAll
			}
			return nil
		}
		f.data = data
		files = append(files, f)
		return nil
	})
	if err != nil {
		l.errs.add(Source{}, "", "walk: %v", err)
	}
	return files
}

// binaryError is a manifest file that is not UTF-8 text, at the first
// byte that makes it so.
type binaryError struct {
	line, col int // 1-based; col counts bytes
	b         byte
}

func (e *binaryError) Error() string {
	if e.b == 0 {
		return "not a text file: a NUL byte (binary data?)"
	}
	return fmt.Sprintf("not UTF-8 text: byte 0x%02x; save the file as UTF-8", e.b)
}

// checkText returns a *binaryError for data with a NUL byte or invalid
// UTF-8, nil for text.
func checkText(data []byte) error {
	bad := bytes.IndexByte(data, 0)
	if bad < 0 && utf8.Valid(data) {
		return nil
	}
	for i := 0; i < len(data) && (bad < 0 || i < bad); {
		r, n := utf8.DecodeRune(data[i:])
		if r == utf8.RuneError && n == 1 {
			bad = i
			break
		}
		i += n
	}
	line := bytes.Count(data[:bad], []byte("\n")) + 1
	col := bad - (bytes.LastIndexByte(data[:bad], '\n') + 1) + 1
	return &binaryError{line: line, col: col, b: data[bad]}
}

// read returns the contents of the manifest file p, enforcing the size
// limits.
func (l *loader) read(p string) ([]byte, error) {
	f, err := l.fsys.Open(p)
	if err != nil {
		return nil, unwrapPath(err)
	}
	defer f.Close()
	limit := int64(MaxFileSize)
	if path.Ext(p) == DeviceListExt {
		limit = MaxDeviceListSize
	}
	var size int64
	if fi, err := f.Stat(); err == nil {
		if size = fi.Size(); size > limit {
			return nil, fmt.Errorf("file is %d bytes; the limit is %d", size, limit)
		}
	}
	// Read into a buffer of the size Stat said (and one byte more, to
	// see the end), growing it only when the file was larger.
	data := make([]byte, 0, min(size, limit)+1)
	for {
		n, err := f.Read(data[len(data):cap(data)])
		data = data[:len(data)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read: %w", unwrapPath(err))
		}
		if int64(len(data)) > limit {
			break
		}
		if len(data) == cap(data) {
			data = slices.Grow(data, len(data))
		}
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("file is larger than the limit of %d bytes", limit)
	}
	l.total += int64(len(data))
	if l.total > MaxTotalSize {
		return nil, fmt.Errorf("manifests total more than %d bytes; stopped reading", MaxTotalSize)
	}
	if err := checkText(data); err != nil {
		return nil, err
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
