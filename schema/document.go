package schema

import (
	"bytes"
	"io"
	"slices"
	"strconv"
	"strings"

	"cuelang.org/go/cue"
	"cuelang.org/go/cue/ast"
	"cuelang.org/go/cue/parser"
	"cuelang.org/go/encoding/yaml"
)

// loadYAML loads the documents of a YAML file, unless none of them looks
// like a manifest.
func (l *loader) loadYAML(file string, data []byte) {
	dec := yaml.NewDecoder(file, bytes.NewReader(data))
	var docs []ast.Expr
	for {
		expr, err := dec.Extract()
		if expr != nil {
			if len(docs) == MaxDocuments {
				l.errs.add(Source{File: file}, "", "more than %d documents in one file", MaxDocuments)
				return
			}
			docs = append(docs, expr)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			l.cueErrors(Source{File: file}, nil, cue.Value{}, err)
			break
		}
	}
	if !slices.ContainsFunc(docs, looksLikeManifest) {
		return
	}
	for _, expr := range docs {
		if isEmptyDoc(expr) {
			continue
		}
		l.loadDoc(file, expr, l.ctx.BuildExpr(expr))
	}
}

// loadCUE loads a .cue file, which evaluates to one manifest or a list of
// them.
func (l *loader) loadCUE(file string, data []byte) {
	f, err := parser.ParseFile(file, data)
	if err != nil {
		l.cueErrors(Source{File: file}, nil, cue.Value{}, err)
		return
	}
	for imp := range f.ImportSpecs() {
		l.errs.add(sourceOf(imp.Pos()), "", "imports are not supported in manifest files")
		return
	}
	v := l.ctx.BuildFile(f)
	if err := v.Err(); err != nil {
		l.cueErrors(Source{File: file}, f, v, err)
		return
	}
	switch v.IncompleteKind() {
	case cue.StructKind:
		l.loadDoc(file, f, v)
	case cue.ListKind:
		it, err := v.List()
		if err != nil {
			l.cueErrors(Source{File: file}, f, v, err)
			return
		}
		for i := 0; it.Next(); i++ {
			if i == MaxDocuments {
				l.errs.add(Source{File: file}, "", "more than %d documents in one file", MaxDocuments)
				return
			}
			node := child(f, strconv.Itoa(i))
			if node == nil {
				node = f
			}
			l.loadDoc(file, node, it.Value())
		}
	default:
		l.errs.add(Source{File: file, Line: 1, Col: 1}, "", "a .cue manifest file must evaluate to a manifest or a list of manifests")
	}
}

// looksLikeManifest reports whether a YAML document claims to be a
// Gitfleet manifest: its apiVersion starts with "gitfleet.io/" or its kind
// is a Gitfleet kind.
func looksLikeManifest(expr ast.Expr) bool {
	s, ok := expr.(*ast.StructLit)
	if !ok {
		return false
	}
	for _, d := range s.Elts {
		f, ok := d.(*ast.Field)
		if !ok {
			continue
		}
		name, _, _ := ast.LabelName(f.Label)
		lit, ok := f.Value.(*ast.BasicLit)
		if !ok {
			continue
		}
		val, err := strconv.Unquote(lit.Value)
		if err != nil {
			val = lit.Value
		}
		switch {
		case name == "apiVersion" && strings.HasPrefix(val, "gitfleet.io/"):
			return true
		case name == "kind" && slices.Contains(Kinds(), Kind(val)):
			return true
		}
	}
	return false
}

// isEmptyDoc reports whether a YAML document is empty or null.
func isEmptyDoc(expr ast.Expr) bool {
	switch x := expr.(type) {
	case *ast.BasicLit:
		return x.Value == "null"
	case *ast.Ident:
		return x.Name == "null"
	case *ast.StructLit:
		return len(x.Elts) == 0
	}
	return false
}

// docSource returns the position of the first key of a document.
func docSource(file string, node ast.Node) Source {
	var decls []ast.Decl
	switch x := node.(type) {
	case *ast.StructLit:
		decls = x.Elts
	case *ast.File:
		decls = x.Decls
	}
	for _, d := range decls {
		if _, ok := d.(*ast.Field); ok {
			if s := sourceOf(d.Pos()); s.Line > 0 {
				return s
			}
		}
	}
	if s := sourceOf(node.Pos()); s.Line > 0 {
		return s
	}
	return Source{File: file}
}
