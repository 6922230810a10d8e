package policies

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/tools/txtar"
)

var update = flag.Bool("update", false, "rewrite the want section of testdata/*.txtar")

// TestGolden runs every testdata/*.txtar case: the archive's files are a
// fleet repository, and its "want" file is what Validate reports, errors
// first, one per line.
func TestGolden(t *testing.T) {
	paths, err := filepath.Glob("testdata/*.txtar")
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range paths {
		t.Run(strings.TrimSuffix(filepath.Base(path), ".txtar"), func(t *testing.T) {
			ar, err := txtar.ParseFile(path)
			if err != nil {
				t.Fatal(err)
			}
			fsys := fstest.MapFS{}
			wantAt := -1
			for i, f := range ar.Files {
				if f.Name == "want" {
					wantAt = i
					continue
				}
				fsys[f.Name] = &fstest.MapFile{Data: f.Data}
			}
			_, report, err := Validate(fsys)
			if err != nil {
				t.Fatal(err)
			}
			var got bytes.Buffer
			for _, e := range report.Errors {
				got.WriteString("error: " + e.Error() + "\n")
			}
			for _, v := range report.Violations {
				got.WriteString(v.String() + "\n")
			}
			if *update {
				if wantAt < 0 {
					ar.Files = append(ar.Files, txtar.File{Name: "want"})
					wantAt = len(ar.Files) - 1
				}
				ar.Files[wantAt].Data = got.Bytes()
				if err := os.WriteFile(path, txtar.Format(ar), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			if wantAt < 0 {
				t.Fatal("no want file; run with -update")
			}
			if diff := cmp.Diff(string(ar.Files[wantAt].Data), got.String()); diff != "" {
				t.Errorf("report (-want +got):\n%s", diff)
			}
		})
	}
}
