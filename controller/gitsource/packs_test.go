package gitsource

import (
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-git/go-git/v5"
)

// gitRun runs the git command line in dir.
func gitRun(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", append([]string{"-c", "user.name=t", "-c", "user.email=t@example.com"}, args...)...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// packedRepo makes a bare repository whose objects are all in one pack:
// blobs stored whole and, after two similar commits and `git gc`, blobs
// stored as deltas; it returns the bare repository's directory.
func packedRepo(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("no git command line")
	}
	work := t.TempDir()
	gitRun(t, work, "init", "-q", "-b", "main")
	rng := rand.New(rand.NewPCG(3, 4))
	var big bytes.Buffer
	for i := range 20000 {
		fmt.Fprintf(&big, "dev-%06d %016x mac=02:00:%08x\n", i, rng.Uint64(), i)
	}
	files := map[string][]byte{
		"small.yaml":         []byte("apiVersion: gitfleet.io/v1\n"),
		"empty.yaml":         nil,
		"devices/a.devices":  big.Bytes(),
		"devices/b.devices":  bytes.ToUpper(big.Bytes()),
		"deep/er/file.yaml":  bytes.Repeat([]byte("x: y\n"), 1000),
		"binary.bin":         {0, 1, 2, 0xff, 0xfe},
		"devices/c.devices":  append(bytes.Clone(big.Bytes()[:50000]), "tail\n"...),
		"devices/c2.devices": append(bytes.Clone(big.Bytes()[:50000]), "other tail\n"...),
	}
	for name, data := range files {
		p := filepath.Join(work, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	gitRun(t, work, "add", "-A")
	gitRun(t, work, "commit", "-q", "-m", "one")
	// A second version of a large file: git gc stores one of the two as
	// a delta of the other.
	if err := os.WriteFile(filepath.Join(work, "devices/a.devices"), append(bytes.Clone(big.Bytes()), "dev-x 0 mac=x\n"...), 0o644); err != nil {
		t.Fatal(err)
	}
	gitRun(t, work, "commit", "-q", "-am", "two")
	bare := filepath.Join(t.TempDir(), "bare")
	gitRun(t, work, "clone", "-q", "--bare", work, bare)
	gitRun(t, bare, "gc", "-q", "--aggressive")
	return bare
}

// readAll reads every file of fsys.
func readAll(t *testing.T, fsys fs.FS) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		f, err := fsys.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			return err
		}
		b, err := io.ReadAll(f)
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		if fi.Size() != int64(len(b)) {
			return fmt.Errorf("%s: Stat says %d bytes, read %d", p, fi.Size(), len(b))
		}
		out[p] = b
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Blobs read from the pack are the bytes go-git reads, for every commit,
// whole or delta; and most are read from the pack.
func TestPackReaderMatchesGoGit(t *testing.T) {
	bare := packedRepo(t)
	repo, err := git.PlainOpen(bare)
	if err != nil {
		t.Fatal(err)
	}
	packs := newPackReader(filepath.Join(bare, "objects", "pack"))
	fast := 0
	for _, rev := range []string{"main", "main~1"} {
		fsys, _, err := CommitFS(repo, rev)
		if err != nil {
			t.Fatal(err)
		}
		want := readAll(t, fsys)
		fsys.(*treeFS).packs = packs
		got := readAll(t, fsys)
		if len(got) != len(want) || len(want) != 8 {
			t.Fatalf("%s: %d files through the packs, %d through go-git, want 8", rev, len(got), len(want))
		}
		for p, b := range want {
			if !bytes.Equal(got[p], b) {
				t.Errorf("%s: %s differs when read from the pack", rev, p)
			}
		}
		tree := fsys.(*treeFS)
		for p := range want {
			dir, err := tree.subtree(filepath.Dir(p))
			if err != nil {
				t.Fatal(err)
			}
			e, err := dir.FindEntry(filepath.Base(p))
			if err != nil {
				t.Fatal(err)
			}
			if rc, _, ok := packs.open(e.Hash); ok {
				rc.Close()
				fast++
			}
		}
	}
	if fast < 8 {
		t.Errorf("only %d of 16 blob reads came from the pack (want the whole ones, at least 8)", fast)
	}
	t.Logf("%d of 16 blob reads from the pack, the rest (deltas) through go-git", fast)
}

// A blob whose bytes in the pack are damaged is a read error, never other
// content.
func TestPackReaderRefusesCorruptBlob(t *testing.T) {
	bare := packedRepo(t)
	repo, err := git.PlainOpen(bare)
	if err != nil {
		t.Fatal(err)
	}
	fsys, _, err := CommitFS(repo, "main")
	if err != nil {
		t.Fatal(err)
	}
	tree := fsys.(*treeFS)
	dir, err := tree.subtree("devices")
	if err != nil {
		t.Fatal(err)
	}
	packs := newPackReader(filepath.Join(bare, "objects", "pack"))
	packs.once.Do(packs.load)
	// The whole blob among the device lists, and its place in the pack.
	var off int64
	var pack string
	for _, name := range []string{"a.devices", "b.devices", "c.devices", "c2.devices"} {
		e, err := dir.FindEntry(name)
		if err != nil {
			t.Fatal(err)
		}
		if rc, _, ok := packs.open(e.Hash); ok {
			rc.Close()
			off, _ = packs.packs[0].find(e.Hash)
			pack = packs.packs[0].pack
			tree.packs = newPackReader(filepath.Join(bare, "objects", "pack"))
			data, err := os.ReadFile(pack)
			if err != nil {
				t.Fatal(err)
			}
			// Damage a byte well inside the compressed stream: zlib's
			// own checks or the object hash must catch it.
			data[off+200] ^= 0x55
			if err := os.Chmod(pack, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(pack, data, 0o644); err != nil {
				t.Fatal(err)
			}
			f, err := tree.Open("devices/" + name)
			if err != nil {
				t.Fatal(err)
			}
			_, err = io.ReadAll(f)
			f.Close()
			if err == nil {
				t.Fatalf("%s read without error from a damaged pack", name)
			}
			t.Logf("damaged %s: %v", name, err)
			return
		}
	}
	t.Fatal("no device list stored whole in the pack")
}
