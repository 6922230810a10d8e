package gitsource

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// ErrNotFollowed is returned when opening a symbolic link or a submodule in a
// commit's tree: they are not followed.
var ErrNotFollowed = errors.New("gitsource: symbolic links and submodules are not followed")

// CommitFS resolves rev (a branch, tag, SHA, or an expression such as
// HEAD~1) in repo and returns that commit and a read-only file system over its
// tree.
func CommitFS(repo *git.Repository, rev string) (fs.FS, *object.Commit, error) {
	hash, err := repo.ResolveRevision(plumbing.Revision(rev))
	if err != nil {
		return nil, nil, fmt.Errorf("resolve %q: %w", rev, err)
	}
	commit, err := repo.CommitObject(*hash)
	if err != nil {
		return nil, nil, fmt.Errorf("read commit %s: %w", hash, err)
	}
	tree, err := commit.Tree()
	if err != nil {
		return nil, nil, fmt.Errorf("read tree of %s: %w", hash, err)
	}
	return &treeFS{root: tree, mtime: commit.Committer.When}, commit, nil
}

// treeFS is an fs.FS over a Git tree. Every file carries the commit time as
// its modification time. Decoded directories are cached by path, so opening
// every file of a large directory decodes that directory once. A mutex
// guards the cache; the go-git storage underneath is not safe for concurrent
// use (Source wraps revisions in a lock for that).
type treeFS struct {
	root  *object.Tree
	mtime time.Time
	// packs, when set, reads blobs stored whole in the clone's packs
	// without go-git (packs.go).
	packs *packReader

	mu   sync.Mutex
	dirs map[string]*object.Tree // "a/b" → its tree; "." is root
}

// subtree returns the tree at directory path p ("." for the root).
func (t *treeFS) subtree(p string) (*object.Tree, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.subtreeLocked(p)
}

func (t *treeFS) subtreeLocked(p string) (*object.Tree, error) {
	if p == "." {
		return t.root, nil
	}
	if tree, ok := t.dirs[p]; ok {
		return tree, nil
	}
	parent, err := t.subtreeLocked(path.Dir(p))
	if err != nil {
		return nil, err
	}
	entry, err := parent.FindEntry(path.Base(p))
	if err != nil {
		return nil, fs.ErrNotExist
	}
	if entry.Mode != filemode.Dir {
		return nil, fs.ErrNotExist
	}
	tree, err := parent.Tree(entry.Name)
	if err != nil {
		return nil, err
	}
	if t.dirs == nil {
		t.dirs = map[string]*object.Tree{}
	}
	t.dirs[p] = tree
	return tree, nil
}

func (t *treeFS) Open(name string) (fs.File, error) {
	if !fs.ValidPath(name) {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrInvalid}
	}
	if name == "." {
		return &dir{fsys: t, tree: t.root, info: t.info(".", filemode.Dir, 0)}, nil
	}
	parent, err := t.subtree(path.Dir(name))
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	}
	entry, err := parent.FindEntry(path.Base(name))
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	}
	switch entry.Mode {
	case filemode.Dir:
		sub, err := t.subtree(name)
		if err != nil {
			return nil, &fs.PathError{Op: "open", Path: name, Err: err}
		}
		return &dir{fsys: t, tree: sub, info: t.info(path.Base(name), entry.Mode, 0)}, nil
	case filemode.Regular, filemode.Deprecated, filemode.Executable:
		if rc, size, ok := t.packs.open(entry.Hash); ok {
			return &file{ReadCloser: rc, info: t.info(path.Base(name), entry.Mode, size)}, nil
		}
		f, err := parent.TreeEntryFile(entry)
		if err != nil {
			return nil, &fs.PathError{Op: "open", Path: name, Err: err}
		}
		rc, err := f.Reader()
		if err != nil {
			return nil, &fs.PathError{Op: "open", Path: name, Err: err}
		}
		return &file{ReadCloser: rc, info: t.info(path.Base(name), entry.Mode, f.Size)}, nil
	default:
		return nil, &fs.PathError{Op: "open", Path: name, Err: ErrNotFollowed}
	}
}

// info describes a tree entry. Only files report a size: knowing a
// directory's or a link's would need another object read.
func (t *treeFS) info(name string, mode filemode.FileMode, size int64) fileInfo {
	return fileInfo{name: name, mode: fsMode(mode), size: size, mtime: t.mtime}
}

func fsMode(m filemode.FileMode) fs.FileMode {
	switch m {
	case filemode.Dir:
		return fs.ModeDir | 0o555
	case filemode.Executable:
		return 0o555
	case filemode.Regular, filemode.Deprecated:
		return 0o444
	case filemode.Symlink:
		return fs.ModeSymlink | 0o777
	default:
		return fs.ModeIrregular
	}
}

type file struct {
	io.ReadCloser
	info fileInfo
}

func (f *file) Stat() (fs.FileInfo, error) { return f.info, nil }

type dir struct {
	fsys    *treeFS
	tree    *object.Tree
	info    fileInfo
	entries []fs.DirEntry // sorted by name; nil until the first ReadDir
	offset  int
}

func (d *dir) Stat() (fs.FileInfo, error) { return d.info, nil }
func (d *dir) Close() error               { return nil }

func (d *dir) Read([]byte) (int, error) {
	return 0, &fs.PathError{Op: "read", Path: d.info.name, Err: errors.New("is a directory")}
}

func (d *dir) ReadDir(n int) ([]fs.DirEntry, error) {
	if d.entries == nil {
		d.entries = make([]fs.DirEntry, 0, len(d.tree.Entries))
		for _, e := range d.tree.Entries {
			d.entries = append(d.entries, &dirEntry{fsys: d.fsys, tree: d.tree, entry: e})
		}
		// Git orders a directory "a" as if it were named "a/"; fs wants
		// plain name order.
		slices.SortFunc(d.entries, func(a, b fs.DirEntry) int { return strings.Compare(a.Name(), b.Name()) })
	}
	rest := d.entries[d.offset:]
	if n <= 0 {
		d.offset = len(d.entries)
		return rest, nil
	}
	if len(rest) == 0 {
		return nil, io.EOF
	}
	rest = rest[:min(n, len(rest))]
	d.offset += len(rest)
	return rest, nil
}

// dirEntry reads a file's size only when Info is called: listing a large
// directory then costs no object reads.
type dirEntry struct {
	fsys  *treeFS
	tree  *object.Tree
	entry object.TreeEntry
}

func (e *dirEntry) Name() string      { return e.entry.Name }
func (e *dirEntry) IsDir() bool       { return e.entry.Mode == filemode.Dir }
func (e *dirEntry) Type() fs.FileMode { return fsMode(e.entry.Mode).Type() }
func (e *dirEntry) String() string    { return fs.FormatDirEntry(e) }

// ContentHash returns the Git object hash of the entry (for
// schema.ContentHasher): a loader that cached the file need not read it.
func (e *dirEntry) ContentHash() string { return "git:" + e.entry.Hash.String() }

func (e *dirEntry) Info() (fs.FileInfo, error) {
	var size int64
	if e.entry.Mode.IsFile() {
		if s, err := e.tree.Size(e.entry.Name); err == nil {
			size = s
		}
	}
	return e.fsys.info(e.entry.Name, e.entry.Mode, size), nil
}

type fileInfo struct {
	name  string
	mode  fs.FileMode
	size  int64
	mtime time.Time
}

func (fi fileInfo) Name() string       { return fi.name }
func (fi fileInfo) Size() int64        { return fi.size }
func (fi fileInfo) Mode() fs.FileMode  { return fi.mode }
func (fi fileInfo) ModTime() time.Time { return fi.mtime }
func (fi fileInfo) IsDir() bool        { return fi.mode.IsDir() }
func (fi fileInfo) Sys() any           { return nil }
