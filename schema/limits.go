package schema

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"cuelang.org/go/cue/ast"
	"cuelang.org/go/cue/token"
	yamlv3 "go.yaml.in/yaml/v3"
)

// Limits on what one manifest file may make the loader do, beyond its
// size. A fleet repository is untrusted input to the controller: every
// file must load in time and memory proportional to its size.
const (
	// MaxAliasNodes bounds the nodes YAML aliases (*name) and merge keys
	// (<<: *name) add to a file when expanded: each copies the anchored
	// value, so a few lines could otherwise stand for billions of nodes.
	MaxAliasNodes = 10_000

	// MaxFields bounds the keys of one mapping (a struct in a .cue
	// file). The CUE evaluator adds a struct's fields one by one to a
	// list it searches, so a mapping costs the square of its keys: one
	// of 110,000 keys (a 1 MB file) took 7 s, and a tree of 256 such
	// files half an hour. No manifest needs more keys in one mapping
	// (lists, such as a Device manifest's devices, are not affected).
	MaxFields = 1000

	// MaxOverlapPairs bounds the pairs of targets (of rollouts of one
	// priority, of configs setting one key) compared for overlaps in one
	// load. Targets an index cannot tell apart are compared pair by
	// pair: 8,000 rollouts selecting the same devices (1.4 MB) took 80 s.
	// A fleet whose rollouts do not overlap compares next to none.
	MaxOverlapPairs = 2_000_000
)

// checkFields reports, with its position, the first struct of the
// syntax trees xs with more than MaxFields fields.
func checkFields(xs ...ast.Node) (token.Pos, bool) {
	var at token.Pos
	for _, x := range xs {
		ast.Walk(x, func(n ast.Node) bool {
			if !at.IsValid() {
				var elts []ast.Decl
				switch n := n.(type) {
				case *ast.StructLit:
					elts = n.Elts
				case *ast.File:
					elts = n.Decls
				}
				fields := 0
				for _, d := range elts {
					if _, ok := d.(*ast.Field); ok {
						fields++
					}
				}
				if fields > MaxFields {
					at = n.Pos()
					if !at.IsValid() {
						at = elts[MaxFields].Pos()
					}
				}
			}
			return !at.IsValid()
		}, nil)
		if at.IsValid() {
			return at, false
		}
	}
	return token.NoPos, true
}

// checkAliases reports, as an error naming the line, a YAML file whose
// aliases and merge keys expand to more than MaxAliasNodes extra nodes.
// Only files that define an anchor (&name) can have aliases; others are
// not parsed twice.
func checkAliases(file string, data []byte) error {
	if !bytes.Contains(data, []byte("&")) {
		return nil
	}
	dec := yamlv3.NewDecoder(bytes.NewReader(data))
	var extra int
	for {
		var n yamlv3.Node
		if err := dec.Decode(&n); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return nil // a syntax error: the CUE decoder reports it
		}
		c := aliasCounter{sizes: make(map[*yamlv3.Node]int), busy: make(map[*yamlv3.Node]bool)}
		c.size(&n)
		extra += c.extra
		if extra > MaxAliasNodes {
			return fmt.Errorf("%s:%d: aliases and merge keys expand to more than %d nodes", file, c.line, MaxAliasNodes)
		}
	}
}

// An aliasCounter counts the nodes of a YAML document with its aliases
// expanded.
type aliasCounter struct {
	sizes map[*yamlv3.Node]int  // expanded size of anchored nodes
	busy  map[*yamlv3.Node]bool // anchored nodes being sized: a cycle
	extra int                   // nodes added by aliases
	line  int                   // of the alias that passed the limit
}

// size returns the number of nodes under n with aliases expanded,
// saturating past the limit.
func (c *aliasCounter) size(n *yamlv3.Node) int {
	if n == nil {
		return 0
	}
	if n.Kind == yamlv3.AliasNode {
		s := c.anchored(n.Alias)
		if c.extra <= MaxAliasNodes {
			c.extra += s
			if c.extra > MaxAliasNodes {
				c.line = n.Line
			}
		}
		return s
	}
	total := 1
	for _, ch := range n.Content {
		total = min(total+c.size(ch), MaxAliasNodes+1)
	}
	return total
}

// anchored returns the expanded size of an anchored node, once.
func (c *aliasCounter) anchored(n *yamlv3.Node) int {
	if s, ok := c.sizes[n]; ok {
		return s
	}
	if n == nil || c.busy[n] {
		return 0 // a cycle: the CUE decoder reports it
	}
	c.busy[n] = true
	// Count the anchored value without adding its own aliases to extra:
	// they add nodes each time the value is copied, which the caller
	// counts through the size returned.
	saved, savedLine := c.extra, c.line
	s := c.size(n)
	c.extra, c.line = saved, savedLine
	c.sizes[n] = s
	delete(c.busy, n)
	return s
}

// checkData reports the first construct of a .cue manifest file that is
// not data. A manifest file in CUE holds what a YAML one can: structs of
// regular fields, lists, and string, number, boolean and null literals.
// References, comprehensions, disjunctions, operators, interpolations,
// definitions and the like are refused: with them, a few lines can make
// the evaluator run for hours (a nested comprehension over ten elements
// six deep makes a million), and the controller reads every commit.
func checkData(f *ast.File) (token.Pos, string, bool) {
	for _, d := range f.Decls {
		switch d := d.(type) {
		case *ast.Package, *ast.CommentGroup, *ast.Attribute:
		case *ast.Field:
			if pos, what, ok := checkField(d); !ok {
				return pos, what, false
			}
		case *ast.EmbedDecl:
			if pos, what, ok := checkDataExpr(d.Expr); !ok {
				return pos, what, false
			}
		default:
			return d.Pos(), construct(d), false
		}
	}
	return token.NoPos, "", true
}

func checkField(f *ast.Field) (token.Pos, string, bool) {
	switch l := f.Label.(type) {
	case *ast.Ident:
		if len(l.Name) > 0 && (l.Name[0] == '#' || l.Name[0] == '_') {
			return l.Pos(), "definitions and hidden fields (" + l.Name + ")", false
		}
	case *ast.BasicLit:
		if l.Kind != token.STRING {
			return l.Pos(), "a label that is not a name or a string", false
		}
	default:
		return f.Label.Pos(), "computed labels and pattern constraints", false
	}
	if f.Constraint != token.ILLEGAL {
		return f.Pos(), "optional and required markers (" + f.Constraint.String() + ")", false
	}
	return checkDataExpr(f.Value)
}

func checkDataExpr(x ast.Expr) (token.Pos, string, bool) {
	switch x := x.(type) {
	case *ast.BasicLit:
		return token.NoPos, "", true
	case *ast.UnaryExpr:
		if lit, ok := x.X.(*ast.BasicLit); ok && (x.Op == token.SUB || x.Op == token.ADD) &&
			(lit.Kind == token.INT || lit.Kind == token.FLOAT) {
			return token.NoPos, "", true
		}
	case *ast.ParenExpr:
		return checkDataExpr(x.X)
	case *ast.StructLit:
		for _, d := range x.Elts {
			switch d := d.(type) {
			case *ast.CommentGroup, *ast.Attribute:
			case *ast.Field:
				if pos, what, ok := checkField(d); !ok {
					return pos, what, false
				}
			default:
				return d.Pos(), construct(d), false
			}
		}
		return token.NoPos, "", true
	case *ast.ListLit:
		for _, e := range x.Elts {
			if pos, what, ok := checkDataExpr(e); !ok {
				return pos, what, false
			}
		}
		return token.NoPos, "", true
	}
	return x.Pos(), construct(x), false
}

// construct names a CUE construct for an error message.
func construct(n ast.Node) string {
	switch n := n.(type) {
	case *ast.Ident:
		return "references (" + n.Name + ")"
	case *ast.Comprehension:
		return "comprehensions"
	case *ast.LetClause:
		return "let clauses"
	case *ast.Ellipsis:
		return "open lists and structs (...)"
	case *ast.BinaryExpr:
		if n.Op == token.OR {
			return "disjunctions (|)"
		}
		return "operators (" + n.Op.String() + ")"
	case *ast.UnaryExpr:
		return "operators (" + n.Op.String() + ")"
	case *ast.Interpolation:
		return "string interpolations"
	case *ast.CallExpr:
		return "function calls"
	case *ast.SelectorExpr, *ast.IndexExpr, *ast.SliceExpr:
		return "references"
	case *ast.EmbedDecl:
		return "embeddings"
	}
	return fmt.Sprintf("%T", n)
}
