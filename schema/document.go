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
	"cuelang.org/go/cue/token"
	"cuelang.org/go/encoding/yaml"
)

// loadYAML loads the documents of a YAML file, unless none of them looks
// like a manifest.
func (l *loader) loadYAML(file string, data []byte) {
	data = crToLF(data)
	if err := checkAliases(file, data); err != nil {
		l.errs.add(plainErrorPos(file, err))
		return
	}
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
	nodes := make([]ast.Node, len(docs))
	for i, x := range docs {
		nodes[i] = x
	}
	if !l.checkFields(file, nodes...) {
		return
	}
	docs = slices.DeleteFunc(docs, isEmptyDoc)
	if l.loadValid(file, docs) {
		return
	}
	for _, expr := range docs {
		l.loadDoc(&doc{file: file, node: expr, yaml: expr})
	}
}

// checkFields reports a mapping of xs, syntax trees of file, with more
// than MaxFields keys, and whether there was none.
func (l *loader) checkFields(file string, xs ...ast.Node) bool {
	pos, ok := checkFields(xs...)
	if !ok {
		src := sourceOf(pos)
		if src.File == "" {
			src.File = file
		}
		l.errs.add(src, "", "a mapping with more than %d keys; no manifest needs that many (use a list, or split the manifest)", MaxFields)
	}
	return ok
}

// crToLF returns data with every carriage return that does not start a
// CRLF replaced by a line feed. YAML counts a lone CR as a line break, the
// CUE decoder's position table does not (and panics on the mismatch);
// replacing byte for byte keeps every offset, line and column.
func crToLF(data []byte) []byte {
	if bytes.IndexByte(data, '\r') < 0 {
		return data
	}
	out := slices.Clone(data)
	for i, c := range out {
		if c == '\r' && (i+1 == len(out) || out[i+1] != '\n') {
			out[i] = '\n'
		}
	}
	return out
}

// loadValid loads the documents of a YAML file in one evaluation, if they
// are all valid, and reports whether they were. Evaluating a file's
// documents together takes less time and memory than one by one; when
// some document has an error, loadYAML evaluates them one by one to
// report it well.
func (l *loader) loadValid(file string, docs []ast.Expr) bool {
	kinds := make([]Kind, len(docs))
	list := &ast.ListLit{Elts: make([]ast.Expr, len(docs))}
	for i, expr := range docs {
		kind, ok := literalString(expr, "kind")
		if !ok || !isKind(kind) {
			return false
		}
		if v, ok := literalString(expr, "apiVersion"); !ok || v != APIVersion {
			return false
		}
		kinds[i] = Kind(kind)
		list.Elts[i] = &ast.BinaryExpr{X: ast.NewIdent("#" + kind), Op: token.AND, Y: expr}
	}
	// The definitions are reached through a scope, which leaves them
	// open: checkUnknown finds unknown fields.
	saved := l.errs
	l.errs = errorList{}
	for i, expr := range docs {
		l.checkUnknown(expr, l.def(kinds[i]), nil, string(kinds[i]))
	}
	unknown := l.errs.count()
	l.errs = saved
	if unknown > 0 {
		return false
	}
	u := l.ctx.BuildExpr(list, cue.Scope(l.schema))
	l.docs += len(docs)
	if u.Validate(cue.Concrete(true), cue.All()) != nil {
		return false
	}
	for i, expr := range docs {
		src := docSource(file, expr)
		if js, ok := jsonOf(expr, nil); ok {
			l.decode(kinds[i], src, expr, js, true)
		} else {
			l.decode(kinds[i], src, expr, cueFields{u.LookupPath(cue.MakePath(cue.Index(i)))}, true)
		}
	}
	return true
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
	if pos, what, ok := checkData(f); !ok {
		src := sourceOf(pos)
		if src.File == "" {
			src.File = file
		}
		l.errs.add(src, "", "%s: not supported in manifest files, which hold data only (structs, lists and literals)", what)
		return
	}
	if !l.checkFields(file, f) {
		return
	}
	v := l.ctx.BuildFile(f)
	if err := v.Err(); err != nil {
		l.cueErrors(Source{File: file}, f, v, err)
		return
	}
	switch v.IncompleteKind() {
	case cue.StructKind:
		l.loadDoc(&doc{file: file, node: f, v: v})
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
			l.loadDoc(&doc{file: file, node: node, v: it.Value()})
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
