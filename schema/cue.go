package schema

import (
	"embed"
	"fmt"
	"io/fs"

	"cuelang.org/go/cue"
	"cuelang.org/go/cue/build"
	"cuelang.org/go/cue/cuecontext"
	"cuelang.org/go/cue/parser"
)

// cueFiles holds the CUE definitions of the manifest kinds.
//
//go:embed *.cue
var cueFiles embed.FS

// schemaPrefix starts the file names of the embedded definitions in
// positions, so that they are never mistaken for files of a fleet
// repository (fs.FS paths cannot start with "/").
const schemaPrefix = "/gitfleet.io/schema/"

// compileSchema builds the embedded definitions in ctx.
func compileSchema(ctx *cue.Context) (cue.Value, error) {
	names, err := fs.Glob(cueFiles, "*.cue")
	if err != nil {
		return cue.Value{}, err
	}
	inst := build.NewContext().NewInstance(schemaPrefix, nil)
	for _, name := range names {
		src, err := cueFiles.ReadFile(name)
		if err != nil {
			return cue.Value{}, err
		}
		f, err := parser.ParseFile(schemaPrefix+name, src)
		if err != nil {
			return cue.Value{}, fmt.Errorf("schema: parse %s: %w", name, err)
		}
		if err := inst.AddSyntax(f); err != nil {
			return cue.Value{}, fmt.Errorf("schema: add %s: %w", name, err)
		}
	}
	v := ctx.BuildInstance(inst)
	if err := v.Err(); err != nil {
		return cue.Value{}, fmt.Errorf("schema: build: %w", err)
	}
	return v, nil
}

// newContext returns a fresh CUE context; one per Load, since a
// cue.Context is not safe for concurrent use.
func newContext() *cue.Context { return cuecontext.New() }
