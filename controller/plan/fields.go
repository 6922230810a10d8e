package plan

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// A leaf is one scalar field of a manifest, or a list of scalars, which
// is compared as a set.
type leaf struct {
	text string   // the scalar, or the list joined with ", "
	list []string // the list's elements; nil for a scalar
}

// leaves flattens the JSON encoding of v into field path → leaf, paths
// written as in a manifest ("phases[0].abort.maxFailures").
func leaves(v any) map[string]leaf {
	out := make(map[string]leaf)
	b, err := json.Marshal(v)
	if err != nil {
		// Manifest types always encode; a failure here is a bug, and
		// showing it beats hiding the change.
		out[""] = leaf{text: "(cannot encode: " + err.Error() + ")"}
		return out
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var x any
	if err := dec.Decode(&x); err != nil {
		out[""] = leaf{text: "(cannot decode: " + err.Error() + ")"}
		return out
	}
	flatten("", x, out)
	return out
}

func flatten(path string, x any, out map[string]leaf) {
	switch x := x.(type) {
	case map[string]any:
		for k, v := range x {
			p := k
			if path != "" {
				p = path + "." + k
			}
			flatten(p, v, out)
		}
	case []any:
		var scalars []string
		for _, v := range x {
			s, ok := scalar(v)
			if !ok {
				scalars = nil
				break
			}
			scalars = append(scalars, s)
		}
		if scalars != nil || len(x) == 0 {
			out[path] = leaf{text: strings.Join(scalars, ", "), list: append([]string{}, scalars...)}
			return
		}
		for i, v := range x {
			flatten(fmt.Sprintf("%s[%d]", path, i), v, out)
		}
	default:
		s, _ := scalar(x)
		out[path] = leaf{text: s}
	}
}

func scalar(x any) (string, bool) {
	switch x := x.(type) {
	case string:
		return x, true
	case json.Number:
		return x.String(), true
	case bool:
		return fmt.Sprint(x), true
	case nil:
		return "null", true
	}
	return "", false
}

// fieldChanges describes, one line per field and sorted by path, how the
// fields of old became those of new. prefix is written before each path.
func fieldChanges(prefix string, old, new map[string]leaf) []string {
	paths := make(map[string]bool)
	for p := range old {
		paths[p] = true
	}
	for p := range new {
		paths[p] = true
	}
	var lines []string
	for _, p := range slices.Sorted(maps.Keys(paths)) {
		o, inOld := old[p]
		n, inNew := new[p]
		name := prefix + p
		switch {
		case inOld && inNew && o.list != nil && n.list != nil:
			if line := listChange(name, o.list, n.list); line != "" {
				lines = append(lines, line)
			}
		case inOld && inNew:
			if o.text != n.text {
				lines = append(lines, fmt.Sprintf("%s: %s → %s", name, short(o.text), short(n.text)))
			}
		case inNew:
			lines = append(lines, fmt.Sprintf("%s: set to %s", name, short(n.text)))
		case inOld:
			lines = append(lines, fmt.Sprintf("%s: removed (was %s)", name, short(o.text)))
		}
	}
	return lines
}

// fieldList describes the fields of a new manifest, one line per field
// sorted by path: "retries: 2".
func fieldList(fields map[string]leaf) []string {
	var lines []string
	for _, p := range slices.Sorted(maps.Keys(fields)) {
		lines = append(lines, fmt.Sprintf("%s: %s", p, short(fields[p].text)))
	}
	return lines
}

// listChange describes a list compared as a set: "members: + d3, - d1",
// or a change of order alone.
func listChange(name string, old, new []string) string {
	in := func(list []string) map[string]bool {
		m := make(map[string]bool, len(list))
		for _, s := range list {
			m[s] = true
		}
		return m
	}
	inOld, inNew := in(old), in(new)
	var add, del []string
	for _, s := range new {
		if !inOld[s] {
			add = append(add, s)
		}
	}
	for _, s := range old {
		if !inNew[s] {
			del = append(del, s)
		}
	}
	var parts []string
	if len(add) > 0 {
		parts = append(parts, "+ "+strings.Join(add, ", "))
	}
	if len(del) > 0 {
		parts = append(parts, "- "+strings.Join(del, ", "))
	}
	if len(parts) == 0 {
		if slices.Equal(old, new) {
			return ""
		}
		return fmt.Sprintf("%s: reordered [%s] → [%s]", name, strings.Join(old, ", "), strings.Join(new, ", "))
	}
	return name + ": " + strings.Join(parts, "; ")
}

// short keeps a value on one line: a long or multi-line value (a PEM key)
// is not worth printing whole.
func short(s string) string {
	switch {
	case s == "":
		return `""`
	case strings.Contains(s, "\n"):
		sum := sha256.Sum256([]byte(s))
		return fmt.Sprintf("(%d lines, sha256 %x)", strings.Count(strings.TrimSpace(s), "\n")+1, sum[:6])
	case len(s) > 48:
		return s[:16] + "…"
	}
	return s
}
