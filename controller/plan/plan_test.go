package plan

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/tools/txtar"

	"github.com/gitfleet/gitfleet/policies"
	"github.com/gitfleet/gitfleet/schema"
)

var update = flag.Bool("update", false, "rewrite the want.* files of testdata/*.txtar")

// TestGolden runs every testdata/*.txtar case. Files under base/ and
// head/ are the fleet repository at the two commits; want.text,
// want.markdown and want.json are the plan in each format.
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
			base, head := fstest.MapFS{}, fstest.MapFS{}
			for _, f := range ar.Files {
				if name, ok := strings.CutPrefix(f.Name, "base/"); ok {
					base[name] = &fstest.MapFile{Data: f.Data}
				}
				if name, ok := strings.CutPrefix(f.Name, "head/"); ok {
					head[name] = &fstest.MapFile{Data: f.Data}
				}
			}
			baseFleet, err := schema.Load(base)
			var errs schema.Errors
			if err != nil && !errors.As(err, &errs) {
				t.Fatal(err)
			}
			headFleet, report, err := policies.Validate(head)
			if err != nil {
				t.Fatal(err)
			}
			p := New(Input{
				Base:         Revision{Rev: "main", Commit: strings.Repeat("b", 40), Subject: "base commit"},
				Head:         Revision{Rev: "pr", Commit: strings.Repeat("d", 40), Subject: "head commit"},
				BaseFleet:    baseFleet,
				HeadFleet:    headFleet,
				BasePolicies: policies.Select(base),
				HeadPolicies: policies.Select(head),
				Validation:   report,
			})

			for _, format := range Formats() {
				var got bytes.Buffer
				if err := p.Write(&got, format); err != nil {
					t.Fatal(err)
				}
				name := "want." + format
				i := fileIndex(ar, name)
				if *update {
					if i < 0 {
						ar.Files = append(ar.Files, txtar.File{Name: name})
						i = len(ar.Files) - 1
					}
					ar.Files[i].Data = got.Bytes()
					continue
				}
				if i < 0 {
					t.Fatalf("no %s; run with -update", name)
				}
				if diff := cmp.Diff(string(ar.Files[i].Data), got.String()); diff != "" {
					t.Errorf("%s (-want +got):\n%s", format, diff)
				}
			}
			if *update {
				if err := os.WriteFile(path, txtar.Format(ar), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

func fileIndex(ar *txtar.Archive, name string) int {
	for i, f := range ar.Files {
		if f.Name == name {
			return i
		}
	}
	return -1
}

func TestMarkdownTruncated(t *testing.T) {
	base, head := benchFleets()
	p := New(Input{BaseFleet: base, HeadFleet: head})
	var b bytes.Buffer
	if err := p.WriteMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	if b.Len() > MaxMarkdown || !strings.HasSuffix(b.String(), truncated) {
		t.Errorf("markdown of %d bytes, ending %q", b.Len(), b.String()[max(0, b.Len()-100):])
	}
	var text bytes.Buffer
	if err := p.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	if text.Len() <= MaxMarkdown {
		t.Errorf("text of %d bytes: the fleets are too small to test truncation", text.Len())
	}
}
