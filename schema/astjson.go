package schema

import (
	"encoding/json"
	"strconv"

	"cuelang.org/go/cue/ast"
	"cuelang.org/go/cue/literal"
	"cuelang.org/go/cue/token"
)

// appendJSON appends the JSON of the YAML document syntax n to b. It
// understands only what the YAML decoder produces (structs of fields,
// lists, and string, number, boolean and null literals) and reports
// false for anything else, such as a number JSON cannot spell (0x1f,
// 1_000, .inf); the caller then decodes through CUE instead.
//
// Fields at the paths in skip are left out, so that a document whose
// schema errors are in some fields can still be decoded to run the Go
// rules on the others. path is the path of n, as formatPath writes it.
func appendJSON(b []byte, n ast.Node, path string, skip map[string]bool) ([]byte, bool) {
	switch x := n.(type) {
	case *ast.StructLit:
		b = append(b, '{')
		first := true
		for _, d := range x.Elts {
			f, ok := d.(*ast.Field)
			if !ok {
				return b, false
			}
			name, _, err := ast.LabelName(f.Label)
			if err != nil {
				return b, false
			}
			fpath := joinPath(path, name)
			if skip[fpath] {
				continue
			}
			if !first {
				b = append(b, ',')
			}
			first = false
			b = strconv.AppendQuote(b, name)
			b = append(b, ':')
			if b, ok = appendJSON(b, f.Value, fpath, skip); !ok {
				return b, false
			}
		}
		return append(b, '}'), true
	case *ast.ListLit:
		b = append(b, '[')
		first := true
		for i, e := range x.Elts {
			epath := path + "[" + strconv.Itoa(i) + "]"
			if skip[epath] {
				continue
			}
			if !first {
				b = append(b, ',')
			}
			first = false
			var ok bool
			if b, ok = appendJSON(b, e, epath, skip); !ok {
				return b, false
			}
		}
		return append(b, ']'), true
	case *ast.UnaryExpr:
		lit, ok := x.X.(*ast.BasicLit)
		if x.Op != token.SUB || !ok || !isJSONNumber(lit.Value) {
			return b, false
		}
		return append(append(b, '-'), lit.Value...), true
	case *ast.BasicLit:
		switch x.Kind {
		case token.STRING:
			s, err := literal.Unquote(x.Value)
			if err != nil {
				return b, false
			}
			js, err := json.Marshal(s)
			if err != nil {
				return b, false
			}
			return append(b, js...), true
		case token.INT, token.FLOAT:
			if !isJSONNumber(x.Value) {
				return b, false
			}
			return append(b, x.Value...), true
		case token.TRUE, token.FALSE, token.NULL:
			return append(b, x.Value...), true
		}
	}
	return b, false
}

// joinPath appends the field name to path the way formatPath does.
func joinPath(path, name string) string {
	if isIdent(name) && !isIndex(name) {
		if path == "" {
			return name
		}
		return path + "." + name
	}
	return path + formatPath([]string{name})
}

// isJSONNumber reports whether s is an unsigned number in JSON syntax.
func isJSONNumber(s string) bool {
	i := 0
	digits := func() int {
		n := 0
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
			n++
		}
		return n
	}
	if i < len(s) && s[i] == '0' {
		i++
	} else if digits() == 0 {
		return false
	}
	if i < len(s) && s[i] == '.' {
		i++
		if digits() == 0 {
			return false
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		if digits() == 0 {
			return false
		}
	}
	return i == len(s)
}
