package gitsource_test

import (
	"context"
	"io/fs"
	"testing"

	"github.com/gitfleet/gitfleet/controller/gitsource"
	"github.com/gitfleet/gitfleet/controller/gitsource/gittest"
)

func TestHistory(t *testing.T) {
	repo := gittest.NewRepo(t)
	c1 := repo.Commit(map[string]string{"a.yaml": "one"}, "one")
	c2 := repo.Commit(map[string]string{"a.yaml": "two"}, "two")
	src, err := gitsource.New(gitsource.Options{URL: repo.URL(), Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	ctx := context.Background()
	if _, err := src.Fetch(ctx); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		a, b      string
		is, known bool
	}{
		{c1, c2, true, true},
		{c2, c1, false, true},
		{c2, c2, true, true},
		{c1, "0123456789012345678901234567890123456789", false, false},
	} {
		is, known, err := src.IsAncestor(tc.a, tc.b)
		if err != nil || is != tc.is || known != tc.known {
			t.Errorf("IsAncestor(%.7s, %.7s) = %v, %v, %v; want %v, %v", tc.a, tc.b, is, known, err, tc.is, tc.known)
		}
	}
	rev, err := src.Revision(ctx, c1)
	if err != nil {
		t.Fatal(err)
	}
	if data, err := fs.ReadFile(rev.FS, "a.yaml"); err != nil || string(data) != "one" || rev.SHA != c1 {
		t.Fatalf("Revision(c1): %q %v %s", data, err, rev.SHA)
	}
	if _, err := src.Revision(ctx, "0123456789012345678901234567890123456789"); err == nil {
		t.Fatal("Revision of an unknown commit succeeded")
	}
}
