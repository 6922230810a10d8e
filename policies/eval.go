package policies

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"cuelang.org/go/cue"
	"cuelang.org/go/cue/ast"
	"cuelang.org/go/cue/cuecontext"
	cueerrors "cuelang.org/go/cue/errors"
	"cuelang.org/go/cue/parser"
	"cuelang.org/go/cue/token"

	"github.com/gitfleet/gitfleet/schema"
)

// collection returns the field of fleet that holds the manifests of kind.
func collection(kind schema.Kind) string {
	switch kind {
	case schema.KindArtifact:
		return "artifacts"
	case schema.KindRollout:
		return "rollouts"
	case schema.KindDeviceGroup:
		return "groups"
	case schema.KindDevice:
		return "devices"
	case schema.KindMonitorCheck:
		return "checks"
	case schema.KindDeviceConfig:
		return "configs"
	case schema.KindSigningKey:
		return "keys"
	case schema.KindNotification:
		return "notifications"
	case schema.KindDeviceCA:
		return "deviceCAs"
	case schema.KindOperator:
		return "operators"
	}
	return ""
}

// manifestRef names a manifest.
type manifestRef struct {
	kind schema.Kind
	name string
}

// A collections source gives the evaluator the manifests of one collection
// of the fleet ("rollouts"), each in its JSON encoding, by
// metadata.name. The in-process evaluator reads them from a schema.Fleet;
// the sandboxed evaluator from what its parent sent.
type collections func(c string) (map[string]json.RawMessage, error)

// An evaluator runs policy files against one fleet. Each kind's
// collection is turned into a CUE value once, when a file first refers to
// it, and shared by every file: a fleet is mostly devices, and few
// policies look at them.
type evaluator struct {
	ctx   *cue.Context
	docs  collections
	cache map[string]cue.Value // collection → its CUE value
}

func newEvaluator(docs collections) *evaluator {
	return &evaluator{
		ctx:   cuecontext.New(),
		docs:  docs,
		cache: make(map[string]cue.Value),
	}
}

// metas returns the metadata of the manifests of fleet by kind and name;
// for a name declared twice (the schema reports it) the first one.
func metas(fleet *schema.Fleet) map[manifestRef]*schema.Meta {
	m := make(map[manifestRef]*schema.Meta)
	if fleet == nil {
		return m
	}
	for mf := range fleet.All() {
		meta := mf.Metadata()
		ref := manifestRef{meta.Kind, meta.Name}
		if _, dup := m[ref]; !dup {
			m[ref] = meta
		}
	}
	return m
}

// fleetCollections returns the collections of fleet, JSON-encoded.
func fleetCollections(fleet *schema.Fleet, metas map[manifestRef]*schema.Meta) collections {
	return func(c string) (map[string]json.RawMessage, error) {
		docs := make(map[string]json.RawMessage)
		if fleet == nil {
			return docs, nil
		}
		for m := range fleet.All() {
			meta := m.Metadata()
			if collection(meta.Kind) != c || metas[manifestRef{meta.Kind, meta.Name}] != meta {
				continue
			}
			b, err := json.Marshal(m)
			if err != nil {
				return nil, fmt.Errorf("encode %s %s: %w", meta.Kind, meta.Name, err)
			}
			docs[meta.Name] = b
		}
		return docs, nil
	}
}

// document returns the manifest JSON-encoded in b in the shape policies
// see, with metadata.labels always present.
func document(name string, b json.RawMessage) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var doc map[string]any
	if err := dec.Decode(&doc); err != nil {
		return nil, err
	}
	if doc == nil {
		return nil, errors.New("not a JSON object")
	}
	numbers(doc)
	md, _ := doc["metadata"].(map[string]any)
	if md == nil {
		md = map[string]any{"name": name}
		doc["metadata"] = md
	}
	if md["labels"] == nil {
		md["labels"] = map[string]any{}
	}
	return doc, nil
}

// numbers replaces the json.Numbers in x by int64 or float64, so that CUE
// sees 10 as the integer it was written as.
func numbers(x any) {
	fix := func(v any) any {
		n, ok := v.(json.Number)
		if !ok {
			numbers(v)
			return v
		}
		if i, err := n.Int64(); err == nil {
			return i
		}
		f, _ := n.Float64()
		return f
	}
	switch x := x.(type) {
	case map[string]any:
		for k, v := range x {
			x[k] = fix(v)
		}
	case []any:
		for i, v := range x {
			x[i] = fix(v)
		}
	}
}

// value returns the CUE value of the collection c of the fleet.
func (ev *evaluator) value(c string) (cue.Value, error) {
	if v, ok := ev.cache[c]; ok {
		return v, nil
	}
	raw, err := ev.docs(c)
	if err != nil {
		return cue.Value{}, err
	}
	docs := make(map[string]any, len(raw))
	for name, b := range raw {
		doc, err := document(name, b)
		if err != nil {
			return cue.Value{}, fmt.Errorf("decode %s %s: %w", c, name, err)
		}
		docs[name] = doc
	}
	v := ev.ctx.Encode(docs)
	if err := v.Err(); err != nil {
		return cue.Value{}, fmt.Errorf("encode %s: %w", c, err)
	}
	ev.cache[c] = v
	return v, nil
}

// fill fills the field fleet of src with the collections the file
// refers to (all of them when it uses fleet other than as fleet.name).
func (ev *evaluator) fill(src cue.Value, file *ast.File) (cue.Value, error) {
	used, all := collectionsUsed(file)
	v := src.FillPath(cue.ParsePath("fleet"), ev.ctx.CompileString("{}"))
	for _, k := range schema.Kinds() {
		c := collection(k)
		if !all && !used[c] {
			continue
		}
		cv, err := ev.value(c)
		if err != nil {
			return cue.Value{}, err
		}
		v = v.FillPath(cue.MakePath(cue.Str("fleet"), cue.Str(c)), cv)
	}
	return v, nil
}

// collectionsUsed reports which fields of fleet a policy file selects
// (fleet.rollouts), and whether it uses fleet in any other way, which
// needs every collection.
func collectionsUsed(f *ast.File) (used map[string]bool, all bool) {
	used = make(map[string]bool)
	var visit func(ast.Node) bool
	visit = func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.Field:
			if id, ok := n.Label.(*ast.Ident); ok && id.Name == "fleet" {
				ast.Walk(n.Value, visit, nil) // the declaration is no use
				return false
			}
		case *ast.SelectorExpr:
			if id, ok := n.X.(*ast.Ident); ok && id.Name == "fleet" {
				if name, _, err := ast.LabelName(n.Sel); err == nil {
					used[name] = true
					return false
				}
			}
		case *ast.Ident:
			if n.Name == "fleet" {
				all = true
			}
		}
		return true
	}
	ast.Walk(f, visit, nil)
	return used, all
}

// run evaluates the policies of one file. seen records the names of the
// repository's policies already run, to report duplicates.
func (ev *evaluator) run(f policyFile, seen map[string]string) ([]Violation, schema.Errors) {
	file, err := parser.ParseFile(f.file, f.src)
	if err != nil {
		return nil, cueErrors(err, f.file)
	}
	src := ev.ctx.BuildFile(file)
	if err := src.Err(); err != nil {
		errs := cueErrors(err, f.file)
		for _, e := range errs {
			if strings.Contains(e.Msg, `reference "fleet" not found`) {
				e.Msg += " (declare fleet: _ and the evaluator fills it with the fleet)"
			}
		}
		return nil, errs
	}
	decls := src.LookupPath(cue.ParsePath("policy"))
	if !decls.Exists() {
		return nil, schema.Errors{{File: f.file, Msg: `declares no policy; want policy: "name": {violations: [...]}`}}
	}
	v, err := ev.fill(src, file)
	if err != nil {
		return nil, schema.Errors{{File: f.file, Msg: err.Error()}}
	}
	it, err := v.LookupPath(cue.ParsePath("policy")).Fields()
	if err != nil {
		return nil, cueErrors(err, f.file)
	}

	var (
		vs   []Violation
		errs schema.Errors
	)
	for it.Next() {
		name := it.Selector().Unquoted()
		decl := decls.LookupPath(cue.MakePath(it.Selector()))
		at := position(decl.Pos(), f.file)
		full := name
		if f.pack != "" {
			full = f.pack + "/" + name
		} else if prev, dup := seen[name]; dup {
			errs = append(errs, errAt(at, "policy %q is also declared in %s", name, prev))
			continue
		} else {
			seen[name] = f.file
		}
		if !decl.LookupPath(cue.ParsePath("violations")).Exists() {
			errs = append(errs, errAt(at, "policy %q has no violations list", name))
			continue
		}
		pvs, perrs := ev.violations(it.Value(), full, f, at)
		vs = append(vs, pvs...)
		errs = append(errs, perrs...)
	}
	return vs, errs
}

// violations reads the violations of one policy.
// Violations of a manifest are located at the policy (at); see locate.
func (ev *evaluator) violations(p cue.Value, name string, f policyFile, at schema.Source) ([]Violation, schema.Errors) {
	sev := Deny
	if sv := p.LookupPath(cue.ParsePath("severity")); sv.Exists() {
		s, err := sv.String()
		if err != nil || (s != string(Deny) && s != string(Warn)) {
			return nil, schema.Errors{errAt(position(sv.Pos(), f.file), "policy %q: severity: want \"deny\" or \"warn\"", name)}
		}
		sev = Severity(s)
	}
	if f.severity != "" {
		sev = f.severity
	}
	list, err := p.LookupPath(cue.ParsePath("violations")).List()
	if err != nil {
		return nil, cueErrors(err, f.file)
	}
	var (
		vs   []Violation
		errs schema.Errors
	)
	for list.Next() {
		item := list.Value()
		if err := item.Err(); err != nil {
			errs = append(errs, cueErrors(err, f.file)...)
			continue
		}
		msg, err := item.LookupPath(cue.ParsePath("message")).String()
		if err != nil {
			errs = append(errs, errAt(at, "policy %q: a violation needs a message (a string)", name))
			continue
		}
		v := Violation{Policy: name, Severity: sev, Message: msg}
		if pv := item.LookupPath(cue.ParsePath("path")); pv.Exists() {
			if v.Path, err = pv.String(); err != nil {
				errs = append(errs, errAt(at, "policy %q: a violation's path must be a string", name))
				continue
			}
		}
		src := at
		if mv := item.LookupPath(cue.ParsePath("manifest")); mv.Exists() {
			kind, kerr := mv.LookupPath(cue.ParsePath("kind")).String()
			mname, nerr := mv.LookupPath(cue.ParsePath("metadata.name")).String()
			if kerr != nil || nerr != nil {
				errs = append(errs, errAt(at, "policy %q: a violation's manifest needs a concrete kind and metadata.name", name))
				continue
			}
			v.Kind, v.Name = schema.Kind(kind), mname
		}
		v.File, v.Line, v.Col = src.File, src.Line, src.Col
		vs = append(vs, v)
	}
	return vs, errs
}

// locate moves each violation of a manifest found in metas to the
// manifest's position, or its field's when the violation has a path.
func locate(vs []Violation, metas map[manifestRef]*schema.Meta) {
	for i := range vs {
		v := &vs[i]
		if v.Kind == "" {
			continue
		}
		meta := metas[manifestRef{v.Kind, v.Name}]
		if meta == nil {
			continue
		}
		src := meta.Source
		if v.Path != "" {
			src = meta.Pos(v.Path)
		}
		v.File, v.Line, v.Col = src.File, src.Line, src.Col
	}
}

// position turns a CUE position into a Source, or the file alone when the
// position is not in it.
func position(p token.Pos, file string) schema.Source {
	if !p.IsValid() || p.Filename() != file {
		return schema.Source{File: file}
	}
	return schema.Source{File: file, Line: p.Line(), Col: p.Column()}
}

// errAt returns an error at s.
func errAt(s schema.Source, format string, args ...any) *schema.Error {
	return &schema.Error{File: s.File, Line: s.Line, Col: s.Col, Msg: fmt.Sprintf(format, args...)}
}

// cueErrors converts a CUE error into errors located in file, the policy
// file that caused it: a position elsewhere (in the fleet data, say) is
// replaced by the first one in file.
func cueErrors(err error, file string) schema.Errors {
	var errs schema.Errors
	for _, e := range cueerrors.Errors(err) {
		src := position(e.Position(), file)
		if src.Line == 0 {
			for _, p := range e.InputPositions() {
				if s := position(p, file); s.Line != 0 {
					src = s
					break
				}
			}
		}
		format, args := e.Msg()
		errs = append(errs, &schema.Error{
			File: src.File, Line: src.Line, Col: src.Col,
			Path: strings.Join(e.Path(), "."),
			Msg:  fmt.Sprintf(format, args...),
		})
	}
	return errs
}
