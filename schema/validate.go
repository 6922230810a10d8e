package schema

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"cuelang.org/go/cue"
	"cuelang.org/go/cue/ast"
	cueerrors "cuelang.org/go/cue/errors"
)

// loadDoc validates one document and, when it is valid, adds its Go value
// to the fleet. node is the document's syntax, v its value.
func (l *loader) loadDoc(file string, node ast.Node, v cue.Value) {
	src := docSource(file, node)
	before := l.errs.count()

	kind, ok := l.checkKind(src, node, v)
	if !ok {
		return
	}
	if av := v.LookupPath(cue.ParsePath("apiVersion")); !av.Exists() {
		l.errs.add(src, "apiVersion", "missing apiVersion (want %s)", APIVersion)
	} else if s, err := av.String(); err != nil || s != APIVersion {
		l.errs.add(lookupPos(node, "apiVersion", src), "apiVersion", "unsupported apiVersion %v; want %s", av, APIVersion)
	}

	def := l.schema.LookupPath(cue.MakePath(cue.Def(string(kind))))
	l.checkUnknown(node, def, nil, string(kind))
	u := def.Unify(v)
	if err := u.Validate(cue.Concrete(true), cue.All()); err != nil {
		l.cueErrors(src, node, v, err)
	}
	if l.errs.count() > before {
		return
	}
	l.decode(kind, src, node, u)
}

// checkKind returns the kind of a document, or reports why it has none.
func (l *loader) checkKind(src Source, node ast.Node, v cue.Value) (Kind, bool) {
	kv := v.LookupPath(cue.ParsePath("kind"))
	if !kv.Exists() {
		l.errs.add(src, "kind", "missing kind (want one of %s)", kindList())
		return "", false
	}
	s, err := kv.String()
	pos := lookupPos(node, "kind", src)
	if err != nil {
		l.errs.add(pos, "kind", "kind must be a string, one of %s", kindList())
		return "", false
	}
	if !slices.Contains(Kinds(), Kind(s)) {
		names := make([]string, 0, len(Kinds()))
		for _, k := range Kinds() {
			names = append(names, string(k))
		}
		if sug := suggest(s, names); sug != "" {
			l.errs.add(pos, "kind", "unknown kind %q; did you mean %q?", s, sug)
		} else {
			l.errs.add(pos, "kind", "unknown kind %q; want one of %s", s, kindList())
		}
		return "", false
	}
	return Kind(s), true
}

func kindList() string {
	var names []string
	for _, k := range Kinds() {
		names = append(names, string(k))
	}
	return strings.Join(names, ", ")
}

// checkUnknown reports every field of the document syntax n that the
// schema s does not declare, with a suggestion when one is close, and
// every required field that n lacks. key identifies s in the loader's
// cache. (CUE reports these too, but drops them when a struct has other
// errors; reporting them here makes the list complete.)
func (l *loader) checkUnknown(n ast.Node, s cue.Value, path []string, key string) {
	var decls []ast.Decl
	switch x := n.(type) {
	case *ast.File:
		decls = x.Decls
	case *ast.StructLit:
		decls = x.Elts
	case *ast.ListLit:
		elem := l.schemaChild(key+"[]", s, cue.ListKind, cue.AnyIndex)
		if !elem.Exists() {
			return
		}
		for i, e := range x.Elts {
			l.checkUnknown(e, elem, append(path, strconv.Itoa(i)), key+"[]")
		}
		return
	default:
		return
	}
	st, ok := l.fields[key+"{}"]
	if !ok {
		st = alternative(s, cue.StructKind)
		l.fields[key+"{}"] = st
	}
	if !st.Exists() {
		return // not a struct in the schema: CUE reports the type error
	}
	present := make(map[string]bool)
	for _, d := range decls {
		if e, ok := d.(*ast.EmbedDecl); ok {
			l.checkUnknown(e.Expr, s, path, key)
			continue
		}
		f, ok := d.(*ast.Field)
		if !ok {
			continue
		}
		name, _, err := ast.LabelName(f.Label)
		if err != nil {
			continue
		}
		present[name] = true
		fpath := append(slices.Clip(path), name)
		if !st.Allows(cue.Str(name)) {
			msg := fmt.Sprintf("unknown field %q", name)
			if sug := suggest(name, fieldNames(st)); sug != "" {
				msg += fmt.Sprintf("; did you mean %q?", sug)
			}
			l.errs.add(sourceOf(f.Pos()), formatPath(fpath), "%s", msg)
			continue
		}
		ckey := key + "." + name
		c := l.schemaChild(ckey, st, cue.StructKind, cue.Str(name))
		if !c.Exists() {
			ckey = key + ".*"
			c = l.schemaChild(ckey, st, cue.StructKind, cue.AnyString)
		}
		if c.Exists() {
			l.checkUnknown(f.Value, c, fpath, ckey)
		}
	}
	if _, ok := n.(*ast.File); ok && len(decls) > 0 && !hasFields(decls) {
		return // a CUE file made of embeddings; nothing to require here
	}
	for _, name := range l.required(key, st) {
		if !present[name] {
			pos := lookupPos(n, "", Source{})
			l.errs.add(pos, formatPath(append(slices.Clip(path), name)), "missing required field")
		}
	}
}

func hasFields(decls []ast.Decl) bool {
	for _, d := range decls {
		if _, ok := d.(*ast.Field); ok {
			return true
		}
	}
	return false
}

// required lists the required fields of the struct schema s, caching by
// key.
func (l *loader) required(key string, s cue.Value) []string {
	if r, ok := l.required_[key]; ok {
		return r
	}
	var names []string
	it, err := s.Fields(cue.Optional(true))
	if err == nil {
		for it.Next() {
			if it.FieldType()&cue.RequiredConstraint != 0 {
				names = append(names, it.Selector().Unquoted())
			}
		}
	}
	l.required_[key] = names
	return names
}

// schemaChild returns the schema of sel in s (taking the alternative of
// kind k of a disjunction), caching by key.
func (l *loader) schemaChild(key string, s cue.Value, k cue.Kind, sel cue.Selector) cue.Value {
	if c, ok := l.fields[key]; ok {
		return c
	}
	c := alternative(s, k)
	if c.Exists() {
		// A field's schema is found under the selector of its own
		// constraint: regular, optional (name?) or required (name!).
		base := c
		c = base.LookupPath(cue.MakePath(sel))
		if !c.Exists() && sel.IsString() {
			c = base.LookupPath(cue.MakePath(sel.Optional()))
			if !c.Exists() {
				c = base.LookupPath(cue.MakePath(sel.Required()))
			}
		}
	}
	l.fields[key] = c
	return c
}

// alternative returns s, or the first alternative of the disjunction s, of
// kind k, or a value that does not exist.
func alternative(s cue.Value, k cue.Kind) cue.Value {
	if s.IncompleteKind()&k == 0 {
		return cue.Value{}
	}
	op, args := s.Expr()
	if op != cue.OrOp {
		return s
	}
	for _, a := range args {
		if c := alternative(a, k); c.Exists() {
			return c
		}
	}
	return cue.Value{}
}

// fieldNames lists the regular fields s declares.
func fieldNames(s cue.Value) []string {
	it, err := s.Fields(cue.Optional(true))
	if err != nil {
		return nil
	}
	var names []string
	for it.Next() {
		names = append(names, it.Selector().Unquoted())
	}
	return names
}

// cueErrors reports the CUE errors of err at the positions they have in
// the user's file. node and v, when known, are the document's syntax and
// value, used to find positions the error does not carry and to describe
// the offending value.
func (l *loader) cueErrors(src Source, node ast.Node, v cue.Value, err error) {
	type group struct {
		path  []string
		pos   Source
		msgs  []string
		disj  bool
		order int
	}
	var ce cueerrors.Error
	if !errors.As(err, &ce) {
		l.errs.add(plainErrorPos(src.File, err))
		return
	}
	var groups []*group
	byPath := make(map[string]*group)
	for _, e := range cueerrors.Errors(err) {
		segs := e.Path()
		if len(segs) > 0 && strings.HasPrefix(segs[0], "#") {
			segs = segs[1:]
		}
		p := formatPath(segs)
		if p == "apiVersion" || p == "kind" {
			continue // checked by loadDoc, with better messages
		}
		format, args := e.Msg()
		msg := fmt.Sprintf(format, args...)
		if format == "" {
			msg = e.Error() // not a CUE error, such as a YAML syntax error
		}
		if msg == "field not allowed" || msg == "field is required but not present" {
			continue // reported by checkUnknown
		}
		g := byPath[p]
		if g == nil {
			g = &group{path: segs, order: len(groups)}
			byPath[p] = g
			groups = append(groups, g)
		}
		if strings.HasSuffix(msg, "errors in empty disjunction:") {
			g.disj = true
			continue
		}
		if g.pos.Line == 0 {
			g.pos = userPos(src.File, e)
		}
		g.msgs = append(g.msgs, msg)
	}
	for _, g := range groups {
		p := formatPath(g.path)
		pos := g.pos
		if pos.Line == 0 {
			pos = src
			if node != nil {
				pos = lookupPos(node, p, src)
			}
		}
		var user cue.Value
		if v.Exists() {
			user = v.LookupPath(cue.MakePath(selectors(g.path)...))
		}
		switch {
		case len(g.msgs) == 0:
			l.errs.add(pos, p, "invalid value")
		case g.disj && len(g.msgs) > 1:
			l.errs.add(pos, p, "%s", describeDisjunction(user, g.msgs))
		default:
			for _, m := range g.msgs {
				l.errs.add(pos, p, "%s", friendly(m, user))
			}
		}
	}
}

// plainErrorPos splits an error of the YAML parser, "file:line: message",
// into a position and a message.
func plainErrorPos(file string, err error) (Source, string, string, any) {
	msg := err.Error()
	src := Source{File: file}
	if rest, ok := strings.CutPrefix(msg, file+":"); ok {
		num, m, _ := strings.Cut(rest, ": ")
		if n, err := strconv.Atoi(num); err == nil {
			src.Line, msg = n, m
		}
	}
	return src, "", "%s", msg
}

// userPos returns the first position of e in file.
func userPos(file string, e cueerrors.Error) Source {
	for _, p := range cueerrors.Positions(e) {
		if p.Filename() == file {
			return sourceOf(p)
		}
	}
	return Source{}
}

// selectors converts path segments to CUE selectors.
func selectors(segs []string) []cue.Selector {
	sels := make([]cue.Selector, 0, len(segs))
	for _, s := range segs {
		if i, err := strconv.Atoi(s); err == nil && isIndex(s) {
			sels = append(sels, cue.Index(i))
		} else {
			sels = append(sels, cue.Str(s))
		}
	}
	return sels
}
