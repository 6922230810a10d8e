package schema

import (
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"

	"golang.org/x/tools/txtar"
)

func fstestFS(name, data string) fstest.MapFS {
	return fstest.MapFS{name: {Data: []byte(data), Mode: 0o644}}
}

// FuzzLoad feeds arbitrary manifest files to Load, which must not panic
// and must report errors with a position in the file.
func FuzzLoad(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.txtar")
	for _, file := range files {
		ar, err := txtar.ParseFile(file)
		if err != nil {
			f.Fatal(err)
		}
		for _, af := range ar.Files {
			if ext := filepath.Ext(af.Name); ext == ".yaml" || ext == ".yml" || ext == ".cue" {
				f.Add(ext == ".cue", af.Data)
			}
		}
	}
	for _, tc := range hostileInputs() {
		if len(tc.data) < 4096 {
			f.Add(filepath.Ext(tc.name) == ".cue", []byte(tc.data))
		}
	}
	f.Fuzz(func(t *testing.T, isCUE bool, data []byte) {
		name := "m.yaml"
		if isCUE {
			name = "m.cue"
		}
		_, err := Load(fstestFS(name, string(data)))
		if err == nil {
			return
		}
		es, ok := err.(Errors)
		if !ok {
			t.Fatalf("Load error is %T, want Errors: %v", err, err)
		}
		for _, e := range es {
			if e.File != name && e.File != "" {
				t.Errorf("error in file %q, want %q: %v", e.File, name, e)
			}
			if e.Msg == "" {
				t.Errorf("empty message: %#v", e)
			}
			if strings.HasPrefix(e.Msg, errInternal) {
				t.Errorf("panic: %v", e)
			}
		}
	})
}
