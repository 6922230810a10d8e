package gitsource_test

import (
	"context"
	"fmt"
	"io/fs"
	"path/filepath"
	"testing"

	"github.com/gitfleet/gitfleet/controller/gitsource"
	"github.com/gitfleet/gitfleet/controller/gitsource/gittest"
)

// BenchmarkFetchNewCommit measures what a webhook costs the Source: fetch
// one new commit of a 1,000-manifest fleet repository over HTTPS and read
// every file of it.
func BenchmarkFetchNewCommit(b *testing.B) {
	repo := gittest.NewRepo(b)
	files := map[string]string{}
	for i := range 1000 {
		files[fmt.Sprintf("devices/d%04d.yaml", i)] = fmt.Sprintf("apiVersion: gitfleet.io/v1\nkind: Device\nmetadata:\n  name: d%04d\n", i)
	}
	repo.Commit(files, "1000 devices")
	srv := gittest.StartHTTPS(b, repo.Dir, gittest.HTTPSOptions{Username: "u", Password: "p"})
	src, err := gitsource.New(gitsource.Options{URL: srv.URL, Auth: gitsource.Auth{Username: "u", Password: "p"},
		CABundle: srv.CAPEM, Dir: filepath.Join(b.TempDir(), "clone")})
	if err != nil {
		b.Fatal(err)
	}
	defer src.Close()
	ctx := context.Background()
	if _, err := src.Fetch(ctx); err != nil {
		b.Fatal(err)
	}
	i := 0
	for b.Loop() {
		b.StopTimer()
		i++
		want := repo.Commit(map[string]string{fmt.Sprintf("devices/d%04d.yaml", i%1000): fmt.Sprintf("changed: %d\n", i)}, "change")
		b.StartTimer()
		rev, err := src.Fetch(ctx)
		if err != nil || rev.SHA != want {
			b.Fatalf("fetch: %s, %v; want %s", rev.SHA, err, want)
		}
		n := 0
		if err := fs.WalkDir(rev.FS, ".", func(p string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				n++
				_, err = fs.ReadFile(rev.FS, p)
			}
			return err
		}); err != nil || n != 1000 {
			b.Fatalf("read %d files: %v", n, err)
		}
	}
}
