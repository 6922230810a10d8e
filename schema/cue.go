package schema

import (
	"embed"
	"fmt"
	"io/fs"
	"sync"

	"cuelang.org/go/cue"
	"cuelang.org/go/cue/ast"
	"cuelang.org/go/cue/build"
	"cuelang.org/go/cue/cuecontext"
	"cuelang.org/go/cue/format"
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
	return compileSchemaEdited(ctx, nil)
}

// compileSchemaEdited builds the embedded definitions, parsed with opts
// (parser.ParseComments keeps the documentation comments) and passed
// through edit when it is not nil.
func compileSchemaEdited(ctx *cue.Context, edit func([]*ast.File), opts ...parser.Option) (cue.Value, error) {
	names, err := fs.Glob(cueFiles, "*.cue")
	if err != nil {
		return cue.Value{}, err
	}
	inst := build.NewContext().NewInstance(schemaPrefix, nil)
	var files []*ast.File
	for _, name := range names {
		src, err := cueFiles.ReadFile(name)
		if err != nil {
			return cue.Value{}, err
		}
		f, err := parser.ParseFile(schemaPrefix+name, src, opts...)
		if err != nil {
			return cue.Value{}, fmt.Errorf("schema: parse %s: %w", name, err)
		}
		files = append(files, f)
	}
	if edit != nil {
		edit(files)
		// Identifiers were resolved when parsed: print the edited files
		// and parse them again, so that moved nodes resolve afresh.
		for i, f := range files {
			src, err := format.Node(f)
			if err != nil {
				return cue.Value{}, fmt.Errorf("schema: edit %s: %w", names[i], err)
			}
			if files[i], err = parser.ParseFile(schemaPrefix+names[i], src, opts...); err != nil {
				return cue.Value{}, fmt.Errorf("schema: edit %s: %w", names[i], err)
			}
		}
	}
	for i, f := range files {
		if err := inst.AddSyntax(f); err != nil {
			return cue.Value{}, fmt.Errorf("schema: add %s: %w", names[i], err)
		}
	}
	v := ctx.BuildInstance(inst)
	if err := v.Err(); err != nil {
		return cue.Value{}, fmt.Errorf("schema: build: %w", err)
	}
	return v, nil
}

// A cueEnv is a CUE context with the schema compiled in it, and what the
// loader caches about the schema. A cue.Context is not safe for
// concurrent use, so each goroutine that validates files takes one from
// a pool and puts it back when done.
type cueEnv struct {
	ctx     *cue.Context
	schema  cue.Value
	defs    map[Kind]cue.Value       // definitions by kind
	fields  map[string]cue.Value     // schema values by path, see checkUnknown
	structs map[string]*structSchema // struct schemas by path
	docs    int                      // documents evaluated in ctx
}

// envs holds the contexts not in use. Compiling the schema takes a few
// milliseconds, as long as loading a small fleet.
var envs sync.Pool

// maxEnvDocs bounds the documents one context evaluates before it is
// dropped: a context keeps every field name it has seen.
const maxEnvDocs = 100_000

func getEnv() (*cueEnv, error) {
	if e, ok := envs.Get().(*cueEnv); ok {
		return e, nil
	}
	ctx := cuecontext.New()
	s, err := compileSchema(ctx)
	if err != nil {
		return nil, err
	}
	return &cueEnv{
		ctx:     ctx,
		schema:  s,
		defs:    make(map[Kind]cue.Value),
		fields:  make(map[string]cue.Value),
		structs: make(map[string]*structSchema),
	}, nil
}

func putEnv(e *cueEnv) {
	if e.docs < maxEnvDocs {
		envs.Put(e)
	}
}
