package gitsource

import (
	"io/fs"
	"sync"
)

// lockedFS serializes every access to a go-git backed fs.FS, whose object
// storage is not safe for concurrent use, so a loader may read a Revision's
// files from several goroutines.
type lockedFS struct {
	mu   sync.Mutex
	fsys fs.FS
}

func (l *lockedFS) Open(name string) (fs.File, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	f, err := l.fsys.Open(name)
	if err != nil {
		return nil, err
	}
	if d, ok := f.(fs.ReadDirFile); ok {
		return &lockedDir{lockedFile{mu: &l.mu, f: f}, d}, nil
	}
	return &lockedFile{mu: &l.mu, f: f}, nil
}

type lockedFile struct {
	mu *sync.Mutex
	f  fs.File
}

func (f *lockedFile) Read(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.f.Read(p)
}

func (f *lockedFile) Stat() (fs.FileInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.f.Stat()
}

func (f *lockedFile) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.f.Close()
}

type lockedDir struct {
	lockedFile
	d fs.ReadDirFile
}

func (d *lockedDir) ReadDir(n int) ([]fs.DirEntry, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	entries, err := d.d.ReadDir(n)
	for i, e := range entries {
		entries[i] = &lockedEntry{DirEntry: e, mu: d.mu}
	}
	return entries, err
}

// lockedEntry guards Info, which may read the object storage.
type lockedEntry struct {
	fs.DirEntry
	mu *sync.Mutex
}

// ContentHash passes on the wrapped entry's content hash, or "" when it
// has none.
func (e *lockedEntry) ContentHash() string {
	if h, ok := e.DirEntry.(interface{ ContentHash() string }); ok {
		return h.ContentHash()
	}
	return ""
}

func (e *lockedEntry) Info() (fs.FileInfo, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.DirEntry.Info()
}
