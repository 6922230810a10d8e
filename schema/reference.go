package schema

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"regexp"
	"slices"
	"strings"

	"cuelang.org/go/cue"
	"cuelang.org/go/cue/ast"
	"cuelang.org/go/cue/cuecontext"
	"cuelang.org/go/cue/format"
	"cuelang.org/go/cue/parser"
	"cuelang.org/go/encoding/jsonschema"
)

// A RefField is one field of a manifest kind, as the reference shows it.
type RefField struct {
	// Path is dotted, with [] for list elements and <key> for map keys:
	// spec.phases[].abort.maxFailures.
	Path     string
	Type     string // the CUE constraint, or "object" for a struct
	Required bool
	Doc      string
}

// A RefKind is one manifest kind: its description and every field.
type RefKind struct {
	Kind   Kind
	Doc    string
	Fields []RefField
}

// A RefType is a named type of the schema (#Name, #Duration, …) that
// fields refer to.
type RefType struct {
	Name string // without the #
	Def  string // its CUE definition
	Doc  string
}

// A Ref is the whole manifest reference, generated from the CUE schema.
type Ref struct {
	Kinds []RefKind
	Types []RefType
}

// refTypes are the named types the reference explains once.
var refTypes = []string{"Name", "Duration", "SHA256", "Scalar", "Target", "Selector", "Match", "Clock", "Weekday", "Severity", "SecretRef", "Email", "Event"}

// Reference describes every manifest kind from the CUE schema: its fields,
// their constraints, whether they are required, and their documentation
// comments.
func Reference() (*Ref, error) {
	s, err := compileSchemaEdited(cuecontext.New(), forReference, parser.ParseComments)
	if err != nil {
		return nil, err
	}
	ref := &Ref{}
	for _, k := range Kinds() {
		def := s.LookupPath(cue.ParsePath("#" + string(k)))
		if !def.Exists() {
			return nil, fmt.Errorf("schema: no #%s definition", k)
		}
		rk := RefKind{Kind: k, Doc: docOf(def)}
		walkFields(def, "", &rk.Fields)
		ref.Kinds = append(ref.Kinds, rk)
	}
	for _, name := range refTypes {
		v := s.LookupPath(cue.ParsePath("#" + name))
		if !v.Exists() {
			return nil, fmt.Errorf("schema: no #%s definition", name)
		}
		def := typeOf(v)
		if v.IncompleteKind() == cue.StructKind {
			def = "object"
		}
		ref.Types = append(ref.Types, RefType{Name: name, Def: def, Doc: docOf(v)})
	}
	return ref, nil
}

// forReference edits the schema for describing it rather than validating
// with it: the rules out, embedded definitions inlined.
func forReference(files []*ast.File) {
	withoutRules(files)
	inlineEmbeddings(files)
}

// withoutRules drops the let clauses, comprehensions and aliases (the
// exactly-one rules) from the schema's structs: they describe no field,
// and on the schema alone (no document) they are errors that would hide
// the fields around them.
func withoutRules(files []*ast.File) {
	for _, f := range files {
		ast.Walk(f, func(n ast.Node) bool {
			if fl, ok := n.(*ast.Field); ok {
				if a, ok := fl.Value.(*ast.Alias); ok {
					fl.Value = a.Expr // the alias the rules used
				}
			}
			if s, ok := n.(*ast.StructLit); ok {
				s.Elts = slices.DeleteFunc(s.Elts, func(d ast.Decl) bool {
					switch d.(type) {
					case *ast.LetClause, *ast.Comprehension:
						return true
					}
					return false
				})
			}
			return true
		}, nil)
	}
}

// inlineEmbeddings replaces each embedded definition (#Envelope in
// #Rollout, #DeviceFields in #Device) by its fields, so that a JSON
// Schema closes the whole struct at once rather than each embedded part
// on its own (which would refuse the other part's fields).
func inlineEmbeddings(files []*ast.File) {
	defs := map[string]*ast.StructLit{}
	for _, f := range files {
		for _, d := range f.Decls {
			if fl, ok := d.(*ast.Field); ok {
				if id, ok := fl.Label.(*ast.Ident); ok && strings.HasPrefix(id.Name, "#") {
					if sl, ok := fl.Value.(*ast.StructLit); ok {
						defs[id.Name] = sl
					}
				}
			}
		}
	}
	for _, f := range files {
		ast.Walk(f, func(n ast.Node) bool {
			s, ok := n.(*ast.StructLit)
			if !ok {
				return true
			}
			var elts []ast.Decl
			for _, d := range s.Elts {
				if e, ok := d.(*ast.EmbedDecl); ok {
					if id, ok := e.Expr.(*ast.Ident); ok && defs[id.Name] != nil {
						elts = append(elts, defs[id.Name].Elts...)
						continue
					}
				}
				elts = append(elts, d)
			}
			s.Elts = elts
			return true
		}, nil)
	}
}

func walkFields(v cue.Value, prefix string, out *[]RefField) {
	it, err := v.Fields(cue.Optional(true))
	if err != nil {
		return
	}
	for it.Next() {
		sel := it.Selector()
		name := sel.Unquoted()
		if sel.IsDefinition() || strings.HasPrefix(name, "_") {
			continue
		}
		fv := it.Value()
		path := name
		if prefix != "" {
			path = prefix + "." + name
		}
		f := RefField{Path: path, Required: sel.ConstraintType() == cue.RequiredConstraint, Doc: docOf(fv), Type: typeOf(fv)}
		if f.Doc == "" && path == "spec" {
			f.Doc = "What the manifest declares: the fields below."
		}
		*out = append(*out, f)
		descend(fv, path, out)
	}
}

// descend adds the fields inside v: of a struct, of a list's elements, of
// a map's values.
func descend(v cue.Value, path string, out *[]RefField) {
	switch v.IncompleteKind() {
	case cue.StructKind:
		if pv := v.LookupPath(cue.MakePath(cue.AnyString)); pv.Exists() {
			if pv.IncompleteKind() == cue.StructKind && !isMatch(pv) {
				walkFields(pv, path+".<key>", out)
			}
			return
		}
		walkFields(v, path, out)
	case cue.ListKind:
		if ev := v.LookupPath(cue.MakePath(cue.AnyIndex)); ev.Exists() && ev.IncompleteKind() == cue.StructKind {
			walkFields(ev, path+"[]", out)
		}
	}
}

// isMatch reports whether v is a #Match (explained once with the types).
func isMatch(v cue.Value) bool { return strings.Contains(typeOf(v), "#Match") }

// typeOf is the constraint of v as written in the schema, without
// comments; "object" for a struct written out in place.
func typeOf(v cue.Value) string {
	n := v.Source()
	switch f := n.(type) {
	case nil:
		return v.IncompleteKind().String()
	case *ast.Field:
		n = f.Value
	}
	b, err := format.Node(n)
	if err != nil {
		return v.IncompleteKind().String()
	}
	var lines []string
	for _, l := range strings.Split(string(b), "\n") {
		if t := strings.TrimSpace(l); t != "" && !strings.HasPrefix(t, "//") {
			lines = append(lines, t)
		}
	}
	t := strings.Join(lines, " ")
	switch {
	case strings.HasPrefix(t, "{[string]:") && strings.Count(t, "{") == 1:
		return "map of " + strings.TrimSpace(strings.TrimSuffix(strings.TrimPrefix(t, "{[string]:"), "}"))
	case strings.HasPrefix(t, "[...{") || strings.HasPrefix(t, "[{"):
		return "list of objects"
	case strings.HasPrefix(t, "S={") || strings.HasPrefix(t, "{"):
		return "object"
	}
	return t
}

// defRef matches a reference to a definition in prose ("#Rollout").
var defRef = regexp.MustCompile(`#([A-Z][A-Za-z0-9]*)`)

// docOf is v's documentation comment, with definitions named as in
// manifests (Rollout, not #Rollout) where they start the text.
func docOf(v cue.Value) string {
	var parts []string
	for _, cg := range v.Doc() {
		if t := strings.TrimSpace(cg.Text()); t != "" {
			parts = append(parts, t)
		}
	}
	doc := strings.Join(parts, "\n\n")
	if m := defRef.FindStringSubmatchIndex(doc); m != nil && m[0] == 0 {
		doc = doc[1:]
	}
	return doc
}

// Markdown renders the reference of one kind, with examples: every
// document of that kind found in the example repositories (name → tree),
// each under a heading naming its file.
func (rk RefKind) Markdown(examples map[string]fs.FS) (string, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "# %s\n\n", rk.Kind)
	b.WriteString("<!-- Generated from the CUE schema by `gitfleet schema reference`; do not edit. -->\n\n")
	if rk.Doc != "" {
		b.WriteString(paragraphs(rk.Doc) + "\n\n")
	}
	b.WriteString("## Fields\n\n")
	b.WriteString("Fields marked **required** must be set. Named types (`#Name`, `#Duration`, …) are explained in the [reference index](README.md#types). Every manifest is closed: a field not listed here is an error.\n\n")
	b.WriteString("| Field | Type | Description |\n| --- | --- | --- |\n")
	for _, f := range rk.Fields {
		req := ""
		if f.Required {
			req = " **required**"
		}
		fmt.Fprintf(&b, "| `%s`%s | %s | %s |\n", f.Path, req, cellCode(f.Type), cellText(f.Doc))
	}
	names := slices.Sorted(mapsKeys(examples))
	n := 0
	for _, name := range names {
		docs, err := examplesOf(examples[name], rk.Kind)
		if err != nil {
			return "", fmt.Errorf("examples %s: %w", name, err)
		}
		for _, d := range docs {
			if n == 0 {
				b.WriteString("\n## Examples\n")
			}
			n++
			fmt.Fprintf(&b, "\n`%s/%s`:\n\n```yaml\n%s\n```\n", name, d.file, strings.TrimRight(d.text, "\n"))
		}
	}
	return b.String(), nil
}

// Index renders the reference's index page: the kinds and the named types.
func (r *Ref) Index() string {
	var b strings.Builder
	b.WriteString("# Fleet manifest reference\n\n")
	b.WriteString("<!-- Generated from the CUE schema by `gitfleet schema reference`; do not edit. -->\n\n")
	b.WriteString("A fleet repository is a tree of YAML (or CUE) documents, each a manifest of one of these kinds. `gitfleet validate` checks them against this schema and the rules that need the whole fleet (references, overlaps, policies), with file:line errors. For completion and checking in an editor, point it at [`gitfleet.schema.json`](gitfleet.schema.json) (`gitfleet schema json` prints it); for example with the YAML language server, put `# yaml-language-server: $schema=…/gitfleet.schema.json` at the top of a file.\n\n")
	b.WriteString("| Kind | What it declares |\n| --- | --- |\n")
	for _, k := range r.Kinds {
		fmt.Fprintf(&b, "| [%s](%s) | %s |\n", k.Kind, strings.ToLower(string(k.Kind))+".md", cellText(firstSentence(k.Doc)))
	}
	b.WriteString("\n## Types\n\nNamed types the fields refer to.\n\n| Type | Definition | Description |\n| --- | --- | --- |\n")
	for _, t := range r.Types {
		fmt.Fprintf(&b, "| `#%s` | %s | %s |\n", t.Name, cellCode(t.Def), cellText(t.Doc))
	}
	return b.String()
}

// JSONSchema is a JSON Schema (draft 2020-12) of every manifest kind, for
// editors: a document is one of the kinds, chosen by its kind field.
// Rules the loader checks in Go (exactly one of several fields, references
// between manifests) are not in it; `gitfleet validate` checks them.
func JSONSchema() ([]byte, error) {
	ctx := cuecontext.New()
	s, err := compileSchemaEdited(ctx, forReference, parser.ParseComments)
	if err != nil {
		return nil, err
	}
	var alts []string
	for _, k := range Kinds() {
		alts = append(alts, "#"+string(k))
	}
	top := ctx.CompileString("#Manifest: "+strings.Join(alts, " | "), cue.Scope(s), cue.InferBuiltins(true))
	if err := top.Err(); err != nil {
		return nil, fmt.Errorf("schema: %w", err)
	}
	expr, err := jsonschema.Generate(top.LookupPath(cue.ParsePath("#Manifest")), &jsonschema.GenerateConfig{})
	if err != nil {
		return nil, fmt.Errorf("schema: JSON Schema: %w", err)
	}
	v := ctx.BuildExpr(expr)
	if err := v.Err(); err != nil {
		return nil, fmt.Errorf("schema: JSON Schema: %w", err)
	}
	raw, err := v.MarshalJSON()
	if err != nil {
		return nil, fmt.Errorf("schema: JSON Schema: %w", err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, err
	}
	m["$id"] = "https://gitfleet.io/schema/v1/gitfleet.schema.json"
	m["title"] = "Gitfleet fleet manifest"
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(m); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

type example struct{ file, text string }

// examplesOf returns the documents of kind in the YAML files of fsys.
func examplesOf(fsys fs.FS, kind Kind) ([]example, error) {
	var out []example
	err := fs.WalkDir(fsys, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path != "." && (strings.HasPrefix(d.Name(), ".") || d.Name() == "policies") {
				return fs.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".yaml") && !strings.HasSuffix(path, ".yml") {
			return nil
		}
		b, err := fs.ReadFile(fsys, path)
		if err != nil {
			return err
		}
		for _, doc := range splitYAMLDocs(string(b)) {
			if regexp.MustCompile(`(?m)^kind:\s*` + string(kind) + `\s*$`).MatchString(doc) {
				out = append(out, example{file: path, text: doc})
			}
		}
		return nil
	})
	return out, err
}

func splitYAMLDocs(s string) []string {
	var docs []string
	for _, d := range regexp.MustCompile(`(?m)^---\s*$`).Split(s, -1) {
		if strings.TrimSpace(d) != "" {
			docs = append(docs, strings.Trim(d, "\n"))
		}
	}
	return docs
}

func mapsKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// paragraphs joins a comment's wrapped lines into paragraphs.
func paragraphs(s string) string {
	var out []string
	for _, p := range strings.Split(s, "\n\n") {
		out = append(out, strings.Join(strings.Fields(p), " "))
	}
	return strings.Join(out, "\n\n")
}

func cellText(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(paragraphs(s), "\n\n", "<br><br>"), "|", `\|`)
}

func cellCode(s string) string {
	if s == "object" {
		return "object"
	}
	s = strings.Join(strings.Fields(s), " ")
	return "`" + strings.ReplaceAll(s, "|", `\|`) + "`"
}

func firstSentence(s string) string {
	s = paragraphs(s)
	if i := strings.Index(s, ". "); i >= 0 {
		return s[:i+1]
	}
	return s
}

// Files renders the whole reference: README.md (the index), one page per
// kind (rollout.md, …) with the examples found in examples (name → tree),
// and gitfleet.schema.json.
func (r *Ref) Files(examples map[string]fs.FS) (map[string][]byte, error) {
	out := map[string][]byte{"README.md": []byte(r.Index())}
	for _, k := range r.Kinds {
		md, err := k.Markdown(examples)
		if err != nil {
			return nil, err
		}
		out[strings.ToLower(string(k.Kind))+".md"] = []byte(md)
	}
	js, err := JSONSchema()
	if err != nil {
		return nil, err
	}
	out["gitfleet.schema.json"] = js
	return out, nil
}
