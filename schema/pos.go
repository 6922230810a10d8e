package schema

import (
	"strconv"
	"strings"

	"cuelang.org/go/cue/ast"
	"cuelang.org/go/cue/token"
)

// sourceOf converts a CUE position.
func sourceOf(p token.Pos) Source {
	if !p.IsValid() {
		return Source{}
	}
	return Source{File: p.Filename(), Line: p.Line(), Col: p.Column()}
}

// lookupPos returns the position of the value at path in the document
// syntax doc, or of its nearest ancestor found, or fallback.
func lookupPos(doc ast.Node, path string, fallback Source) Source {
	best := fallback
	if s := sourceOf(doc.Pos()); s.Line > 0 {
		best = s
	}
	n := doc
	for _, seg := range splitPath(path) {
		n = child(n, seg)
		if n == nil {
			break
		}
		if s := sourceOf(n.Pos()); s.Line > 0 {
			best = s
		}
	}
	return best
}

// child returns the value of field seg of a struct, or element seg of a
// list, or nil.
func child(n ast.Node, seg string) ast.Node {
	var decls []ast.Decl
	switch x := n.(type) {
	case *ast.File:
		decls = x.Decls
	case *ast.StructLit:
		decls = x.Elts
	case *ast.ListLit:
		i, err := strconv.Atoi(seg)
		if err != nil || i < 0 || i >= len(x.Elts) {
			return nil
		}
		return x.Elts[i]
	case *ast.ParenExpr:
		return child(x.X, seg)
	default:
		return nil
	}
	for _, d := range decls {
		switch d := d.(type) {
		case *ast.Field:
			if name, _, err := ast.LabelName(d.Label); err == nil && name == seg {
				return d.Value
			}
		case *ast.EmbedDecl:
			if c := child(d.Expr, seg); c != nil {
				return c
			}
		}
	}
	return nil
}

// splitPath splits a path as formatted by formatPath: identifiers
// separated by dots, list indexes as [n], other labels as ["label"].
func splitPath(path string) []string {
	var segs []string
	for path != "" {
		switch path[0] {
		case '.':
			path = path[1:]
		case '[':
			end := strings.IndexByte(path, ']')
			if end < 0 {
				return segs
			}
			if path[1] == '"' {
				// Find the closing quote; labels may contain ']'.
				s, err := strconv.QuotedPrefix(path[1:])
				if err != nil {
					return segs
				}
				u, _ := strconv.Unquote(s)
				segs = append(segs, u)
				path = strings.TrimPrefix(path[1+len(s):], "]")
				continue
			}
			segs = append(segs, path[1:end])
			path = path[end+1:]
		default:
			end := strings.IndexAny(path, ".[")
			if end < 0 {
				end = len(path)
			}
			segs = append(segs, path[:end])
			path = path[end:]
		}
	}
	return segs
}

// formatPath joins path segments: "spec", "phases", "1", "percent"
// becomes spec.phases[1].percent.
func formatPath(segs []string) string {
	var b strings.Builder
	for _, s := range segs {
		switch {
		case isIndex(s):
			b.WriteString("[" + s + "]")
		case isIdent(s):
			if b.Len() > 0 {
				b.WriteByte('.')
			}
			b.WriteString(s)
		default:
			b.WriteString("[" + strconv.Quote(s) + "]")
		}
	}
	return b.String()
}

func isIndex(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

func isIdent(s string) bool {
	if s == "" {
		return false
	}
	for i, r := range s {
		switch {
		case r == '_' || r == '$' || r == '-' && i > 0:
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z':
		case r >= '0' && r <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}
