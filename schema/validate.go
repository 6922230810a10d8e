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
	"cuelang.org/go/cue/literal"
	"cuelang.org/go/cue/token"
	"github.com/gitfleet/gitfleet/schema/didyoumean"
)

// A doc is one document of a manifest file.
type doc struct {
	file string
	node ast.Node  // its syntax
	yaml ast.Expr  // its syntax, for a document of a YAML file; nil for CUE
	v    cue.Value // its value; for YAML, built only when needed (see value)
}

// value returns the user's value of d, building it from the syntax of a
// YAML document the first time. Valid YAML documents never need it: the
// loader reads their kind and apiVersion from the syntax and validates
// them in one evaluation with the schema (see loadDoc), so this second
// evaluation is spent only on documents with errors, to describe them.
func (l *loader) value(d *doc) cue.Value {
	if d.yaml != nil && !d.v.Exists() {
		d.v = l.ctx.BuildExpr(d.yaml)
	}
	return d.v
}

// Paths looked up in every document, parsed once.
var (
	pathAPIVersion = cue.MakePath(cue.Str("apiVersion"))
	pathKind       = cue.MakePath(cue.Str("kind"))
	pathMetadata   = cue.MakePath(cue.Str("metadata"))
	pathSpec       = cue.MakePath(cue.Str("spec"))
)

// loadDoc validates one document and, when it is valid, adds its Go value
// to the fleet. When only some of its fields are invalid, it still runs
// the Go rules on the others, so that one run reports every error.
func (l *loader) loadDoc(d *doc) {
	src := docSource(d.file, d.node)
	l.docs++
	before := len(l.errs.errs)
	dropped := l.errs.dropped

	kind, ok := l.checkKind(src, d)
	if !ok {
		return
	}
	if s, ok := literalString(d.yaml, "apiVersion"); !ok || s != APIVersion {
		if av := l.value(d).LookupPath(pathAPIVersion); !av.Exists() {
			l.errs.add(src, "apiVersion", "missing apiVersion (want %s)", APIVersion)
		} else if s, err := av.String(); err != nil || s != APIVersion {
			l.errs.add(lookupPos(d.node, "apiVersion", src), "apiVersion", "unsupported apiVersion %v; want %s", av, APIVersion)
		}
	}

	// Unknown and missing fields: CUE reports them only for structs
	// without other errors, and not at all when the document is unified
	// with its definition through a scope (see below), which leaves the
	// definition open.
	def := l.def(kind)
	l.checkUnknown(d.node, def, nil, string(kind))
	var u cue.Value
	if d.yaml != nil {
		// One evaluation of the document with its definition: #Kind & doc.
		x := &ast.BinaryExpr{X: ast.NewIdent("#" + string(kind)), Op: token.AND, Y: d.yaml}
		u = l.ctx.BuildExpr(x, cue.Scope(l.schema))
	} else {
		u = def.Unify(d.v)
	}
	if err := u.Validate(cue.Concrete(true), cue.All()); err != nil {
		l.cueErrors(src, d.node, l.value(d), err)
	}
	if len(l.errs.errs) == before && l.errs.dropped == dropped {
		if d.yaml != nil {
			if js, ok := jsonOf(d.node, nil); ok {
				l.decode(kind, src, d.node, js, true)
				return
			}
		}
		l.decode(kind, src, d.node, cueFields{u}, true)
		return
	}
	if d.yaml == nil || l.errs.dropped != dropped {
		return
	}
	// The document is invalid, but the Go rules can still speak about
	// the fields the schema did not object to: decode the document
	// without the fields in error and keep what the rules say about
	// other fields. The document is not added to the fleet.
	bad := make(map[string]bool)
	for _, e := range l.errs.errs[before:] {
		bad[e.Path] = true
	}
	if bad[""] || bad["spec"] {
		return
	}
	js, ok := jsonOf(d.node, bad)
	if !ok {
		return
	}
	saved := l.errs
	l.errs = errorList{}
	l.decode(kind, src, d.node, js, false)
	rules := l.errs.errs
	l.errs = saved
	for _, e := range rules {
		if !related(e.Path, bad) {
			l.errs.add(Source{e.File, e.Line, e.Col}, e.Path, "%s", e.Msg)
		}
	}
}

// related reports whether the field at path is, contains or is inside a
// field in bad.
func related(path string, bad map[string]bool) bool {
	if bad[path] {
		return true
	}
	for p := range bad {
		if within(path, p) || within(p, path) {
			return true
		}
	}
	return false
}

// within reports whether the field at path is inside the field at outer.
func within(path, outer string) bool {
	rest, ok := strings.CutPrefix(path, outer)
	return ok && (rest == "" || rest[0] == '.' || rest[0] == '[')
}

// literalString returns the string literal of the field name of a YAML
// document, if it has one.
func literalString(expr ast.Expr, name string) (string, bool) {
	if expr == nil {
		return "", false
	}
	lit, ok := child(expr, name).(*ast.BasicLit)
	if !ok || lit.Kind != token.STRING {
		return "", false
	}
	s, err := literal.Unquote(lit.Value)
	return s, err == nil
}

// def returns the definition of kind in the schema.
func (l *loader) def(kind Kind) cue.Value {
	v, ok := l.defs[kind]
	if !ok {
		v = l.schema.LookupPath(cue.MakePath(cue.Def(string(kind))))
		l.defs[kind] = v
	}
	return v
}

// checkKind returns the kind of a document, or reports why it has none.
func (l *loader) checkKind(src Source, d *doc) (Kind, bool) {
	if s, ok := literalString(d.yaml, "kind"); ok && isKind(s) {
		return Kind(s), true
	}
	kv := l.value(d).LookupPath(pathKind)
	if !kv.Exists() {
		l.errs.add(src, "kind", "missing kind (want one of %s)", kindList())
		return "", false
	}
	s, err := kv.String()
	pos := lookupPos(d.node, "kind", src)
	if err != nil {
		l.errs.add(pos, "kind", "kind must be a string, one of %s", kindList())
		return "", false
	}
	if !isKind(s) {
		names := make([]string, 0, len(Kinds()))
		for _, k := range Kinds() {
			names = append(names, string(k))
		}
		if sug := didyoumean.Closest(s, names); sug != "" {
			l.errs.add(pos, "kind", "unknown kind %q; did you mean %q?", s, sug)
		} else {
			l.errs.add(pos, "kind", "unknown kind %q; want one of %s", s, kindList())
		}
		return "", false
	}
	return Kind(s), true
}

func isKind(s string) bool {
	switch Kind(s) {
	case KindArtifact, KindRollout, KindDeviceGroup, KindDevice,
		KindMonitorCheck, KindDeviceConfig, KindSigningKey, KindNotification, KindDeviceCA, KindOperator:
		return true
	}
	return false
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
	si := l.structInfo(key, s)
	if si == nil {
		return // not a struct in the schema: CUE reports the type error
	}
	st := si.v
	present := make(map[string]bool, len(decls))
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
		declared := si.declared[name]
		if !declared && !si.any && !st.Allows(cue.Str(name)) {
			msg := fmt.Sprintf("unknown field %q", name)
			if sug := didyoumean.Closest(name, si.names); sug != "" {
				msg += fmt.Sprintf("; did you mean %q?", sug)
			}
			l.errs.add(sourceOf(f.Pos()), formatPath(fpath), "%s", msg)
			continue
		}
		// A declared field has its own schema; any other name allowed
		// takes the schema of the pattern constraint ([string]: T), cached
		// under one key so that user-chosen names do not grow the cache.
		var c cue.Value
		ckey := key + ".*"
		if declared {
			ckey = key + "." + name
			c = l.schemaChild(ckey, st, cue.StructKind, cue.Str(name))
		}
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
	for _, name := range si.required {
		if !present[name] {
			pos := lookupPos(n, "", Source{})
			l.errs.add(pos, formatPath(append(slices.Clip(path), name)), "missing required field")
		}
	}
}

// A structSchema is what checkUnknown needs to know of a struct in the
// schema. Asking CUE (Value.Allows, Value.Fields) costs a new evaluation
// context each time, more than validating a small document.
type structSchema struct {
	v        cue.Value
	names    []string        // declared fields
	declared map[string]bool // the names
	required []string        // required fields
	any      bool            // a pattern constraint allows any field name
}

// structInfo returns what checkUnknown needs of the struct schema s (or
// its alternative that is a struct), caching by key, or nil when s is
// not a struct.
func (l *loader) structInfo(key string, s cue.Value) *structSchema {
	if si, ok := l.structs[key]; ok {
		return si
	}
	var si *structSchema
	if st := alternative(s, cue.StructKind); st.Exists() {
		si = &structSchema{v: st, names: fieldNames(st), declared: make(map[string]bool)}
		for _, n := range si.names {
			si.declared[n] = true
		}
		si.required = requiredFields(st)
		// No field name starts with a NUL byte: allowing one means
		// allowing every name.
		si.any = st.Allows(cue.Str("\x00"))
	}
	l.structs[key] = si
	return si
}

func hasFields(decls []ast.Decl) bool {
	for _, d := range decls {
		if _, ok := d.(*ast.Field); ok {
			return true
		}
	}
	return false
}

// requiredFields lists the required fields of the struct schema s.
func requiredFields(s cue.Value) []string {
	var names []string
	it, err := s.Fields(cue.Optional(true))
	if err == nil {
		for it.Next() {
			if it.FieldType()&cue.RequiredConstraint != 0 {
				names = append(names, it.Selector().Unquoted())
			}
		}
	}
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
		exactly := len(segs) > 0 && segs[len(segs)-1] == "_exactlyOne"
		if exactly {
			// A rule of the struct holding it: reported there.
			segs = segs[:len(segs)-1]
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
		if exactly {
			if msg = exactlyOne(v, segs, msg); msg == "" {
				continue
			}
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
