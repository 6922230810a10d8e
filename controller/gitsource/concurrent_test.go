package gitsource_test

import (
	"fmt"
	"io/fs"
	"sync"
	"testing"

	"github.com/gitfleet/gitfleet/controller/gitsource"
	"github.com/gitfleet/gitfleet/controller/gitsource/gittest"
)

// A loader may read a revision from several goroutines while the Source
// fetches newer commits; run with -race.
func TestRevisionReadWhileFetching(t *testing.T) {
	repo := gittest.NewRepo(t)
	files := map[string]string{}
	for i := range 50 {
		files[fmt.Sprintf("rollouts/r%02d.yaml", i)] = fmt.Sprintf("name: r%02d\n", i)
	}
	repo.Commit(files, "fifty rollouts")
	src := newSource(t, gitsource.Options{URL: repo.URL()})
	first := fetch(t, src)

	var wg sync.WaitGroup
	read := func(rev gitsource.Revision) {
		defer wg.Done()
		for range 5 {
			n := 0
			err := fs.WalkDir(rev.FS, ".", func(p string, d fs.DirEntry, err error) error {
				if err != nil || d.IsDir() {
					return err
				}
				n++
				if _, err := d.Info(); err != nil {
					return err
				}
				_, err = fs.ReadFile(rev.FS, p)
				return err
			})
			if err != nil || n != 50 {
				t.Errorf("revision %.12s: read %d files: %v", rev.SHA, n, err)
				return
			}
		}
	}
	for range 4 {
		wg.Add(1)
		go read(first)
	}
	for i := range 5 {
		repo.Commit(map[string]string{fmt.Sprintf("rollouts/r%02d.yaml", i): "changed\n"}, fmt.Sprintf("change %d", i))
		rev := fetch(t, src)
		wg.Add(1)
		go read(rev)
	}
	wg.Wait()
	wantFile(t, first, "rollouts/r00.yaml", "name: r00\n")
}
