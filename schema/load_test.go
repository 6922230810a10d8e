package schema

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/tools/txtar"
)

var update = flag.Bool("update", false, "rewrite the want section of testdata/*.txtar")

// TestGolden loads each testdata/*.txtar archive as a fleet (every file but
// "want") and compares the result with its "want" file: the errors, one
// per line, or, when the fleet is valid, every manifest with its position
// and its JSON.
func TestGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/*.txtar")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no testdata/*.txtar")
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".txtar"), func(t *testing.T) {
			ar, err := txtar.ParseFile(file)
			if err != nil {
				t.Fatal(err)
			}
			fsys, want := archiveFS(ar)
			got := result(Load(fsys))
			if *update {
				setWant(ar, got)
				if err := os.WriteFile(file, txtar.Format(ar), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("Load mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// archiveFS returns the fleet of an archive and its want file.
func archiveFS(ar *txtar.Archive) (fstest.MapFS, string) {
	fsys := fstest.MapFS{}
	var want string
	for _, f := range ar.Files {
		if f.Name == "want" {
			want = string(f.Data)
			continue
		}
		fsys[f.Name] = &fstest.MapFile{Data: f.Data, Mode: 0o644}
	}
	return fsys, want
}

func setWant(ar *txtar.Archive, want string) {
	for i := range ar.Files {
		if ar.Files[i].Name == "want" {
			ar.Files[i].Data = []byte(want)
			return
		}
	}
	ar.Files = append(ar.Files, txtar.File{Name: "want", Data: []byte(want)})
}

// result formats what Load returned.
func result(f *Fleet, err error) string {
	var b strings.Builder
	if err != nil {
		es, ok := err.(Errors)
		if !ok {
			return "unexpected error type: " + err.Error() + "\n"
		}
		for _, e := range es {
			b.WriteString(e.Error())
			b.WriteByte('\n')
		}
		return b.String()
	}
	for m := range f.All() {
		meta := m.Metadata()
		js, err := json.Marshal(m)
		if err != nil {
			js = []byte(err.Error())
		}
		fmt.Fprintf(&b, "%s %s %s\n\t%s\n", meta.Source, meta.Kind, meta.Name, js)
	}
	return b.String()
}

func TestCompactKeepsValuesDropsSyntax(t *testing.T) {
	fleet, err := Load(os.DirFS("../examples/quickstart"))
	if err != nil {
		t.Fatal(err)
	}
	ro := &fleet.Rollouts[0]
	deep := ro.Pos("spec.phases[1].percent")
	if deep == ro.Source {
		t.Fatalf("Pos before Compact points at the document, not the field: %v", deep)
	}
	n := fleet.Len()
	fleet.Compact()
	if fleet.Len() != n || ro.Spec.Phases[1].Percent == 0 {
		t.Fatal("Compact changed the fleet's values")
	}
	if got := ro.Pos("spec.phases[1].percent"); got != ro.Source {
		t.Fatalf("Pos after Compact = %v, want the document's own position %v", got, ro.Source)
	}
	for m := range fleet.All() {
		if m.Metadata().doc != nil {
			t.Fatalf("%s %s still holds its syntax tree", m.Metadata().Kind, m.Metadata().Name)
		}
	}
}

// A file that is not text is refused at the line and column (in bytes) of
// its first NUL byte or invalid UTF-8.
func TestCheckTextPosition(t *testing.T) {
	for _, tc := range []struct {
		data      string
		line, col int
		b         byte
	}{
		{"a: b\nc: d\n", 0, 0, 0},
		{"név: é\nx: \xff\n", 2, 4, 0xff},
		{"\x00", 1, 1, 0},
		{"ok\nok\nab\xc3", 3, 3, 0xc3},      // a truncated two-byte sequence
		{"a\x00\n\xff", 1, 2, 0},            // the NUL comes first
		{"\xe9t\xc3\xa9\n\x00", 1, 1, 0xe9}, // Latin-1 before the NUL
	} {
		err := checkText([]byte(tc.data))
		if tc.line == 0 {
			if err != nil {
				t.Errorf("%q: %v", tc.data, err)
			}
			continue
		}
		be, ok := err.(*binaryError)
		if !ok || be.line != tc.line || be.col != tc.col || be.b != tc.b {
			t.Errorf("%q: got %#v, want line %d col %d byte %#x", tc.data, err, tc.line, tc.col, tc.b)
		}
	}
}
