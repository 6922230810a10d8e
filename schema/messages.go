package schema

import (
	"fmt"
	"regexp"
	"strings"

	"cuelang.org/go/cue"
)

// patterns describes the regular expressions of the schema in words, keyed
// by a fragment that identifies each.
var patterns = []struct{ fragment, want string }{
	{"{0,126}", "a name of letters, digits, '.', '_' and '-' that starts and ends with a letter or digit, at most 128 characters"},
	{"(ns|us|", `a duration such as "90m", "12h", "2d" or "1w"`},
	{"{64}", "a sha256 of 64 lowercase hex digits"},
	{"2[0-3]", `a time of day as "HH:MM"`},
	{"^https://", "an https:// URL"},
	{"@", "an e-mail address"},
}

var (
	outOfBound  = regexp.MustCompile(`^invalid value (.*) \(out of bound =~"(.*)"\)$`)
	mismatched  = regexp.MustCompile(`^conflicting values (.*) and (.*) \(mismatched types (\w+) and (\w+)\)$`)
	conflict    = regexp.MustCompile(`^conflicting values (.*) and (.*)$`)
	bound       = regexp.MustCompile(`^invalid value (.*) \(out of bound (<=|<|>=|>|!=)(.*)\)$`)
	listLengths = regexp.MustCompile(`^incompatible list lengths \((\d+) and (\d+)\)$`)
)

// otherType returns whichever of the kinds a and b is not the kind of the
// user's value.
func otherType(a, b string, user cue.Value) string {
	k := user.IncompleteKind().String()
	if a == k || user.IncompleteKind()&cue.NumberKind != 0 && (a == "int" || a == "float" || a == "number") {
		return b
	}
	return a
}

// friendly rewrites a CUE error message about the user's value into words
// for someone editing YAML.
func friendly(msg string, user cue.Value) string {
	if m := outOfBound.FindStringSubmatch(msg); m != nil {
		return fmt.Sprintf("invalid value %s: want %s", m[1], describePattern(m[2]))
	}
	if m := mismatched.FindStringSubmatch(msg); m != nil && user.Exists() {
		return fmt.Sprintf("invalid value %v: want %s", user, kindWord(otherType(m[3], m[4], user)))
	}
	if m := listLengths.FindStringSubmatch(msg); m != nil {
		if m[2] == "1" {
			return "want a non-empty list"
		}
		return fmt.Sprintf("want a list of at least %s elements", m[2])
	}
	if m := bound.FindStringSubmatch(msg); m != nil {
		words := map[string]string{"<=": "at most", "<": "less than", ">=": "at least", ">": "more than", "!=": "not"}
		return fmt.Sprintf("invalid value %s: want %s %s", m[1], words[m[2]], m[3])
	}
	return msg
}

// describeDisjunction words the errors of a value that matched none of a
// disjunction's alternatives.
func describeDisjunction(user cue.Value, msgs []string) string {
	got := fmt.Sprint(user)
	var want []string
	add := func(s string) {
		for _, w := range want {
			if w == s {
				return
			}
		}
		want = append(want, s)
	}
	for _, m := range msgs {
		if s := outOfBound.FindStringSubmatch(m); s != nil {
			add(describePattern(s[2]))
			continue
		}
		if s := mismatched.FindStringSubmatch(m); s != nil {
			add(kindWord(otherType(s[3], s[4], user)))
			continue
		}
		if s := conflict.FindStringSubmatch(m); s != nil {
			if s[1] == got {
				add(s[2])
			} else {
				add(s[1])
			}
			continue
		}
		add(m)
	}
	if len(want) == 1 {
		return fmt.Sprintf("invalid value %s: want %s", got, want[0])
	}
	return fmt.Sprintf("invalid value %s: want one of %s", got, strings.Join(want, ", "))
}

func describePattern(re string) string {
	for _, p := range patterns {
		if strings.Contains(re, p.fragment) {
			return p.want
		}
	}
	return "a match of " + re
}

// kindWord names a CUE kind for a YAML author.
func kindWord(k string) string {
	switch k {
	case "int":
		return "an integer"
	case "float", "number":
		return "a number"
	case "string":
		return "a string"
	case "bool":
		return "true or false"
	case "struct":
		return "a mapping"
	case "list":
		return "a list"
	case "null":
		return "null"
	}
	return k
}

// oneOf lists, by kind and path, the fields of which the schema wants
// exactly one (a hidden _exactlyOne field with an error() when the count
// is wrong), and what one of them is called.
var oneOf = map[string]struct {
	what   string
	fields []string
}{
	"Notification spec": {"sink", []string{"webhook", "email", "slack", "gitStatus"}},
}

// exactlyOne words the error of an _exactlyOne rule of the schema for the
// struct at path of the document doc: which fields to set and which the
// document sets. The schema counts only the fields without errors of
// their own, so when the document does set exactly one (with an error
// reported inside it) there is nothing to add: it returns "". A rule
// without an entry in oneOf keeps the schema's message msg.
func exactlyOne(doc cue.Value, path []string, msg string) string {
	kind, _ := doc.LookupPath(pathKind).String()
	rule, ok := oneOf[kind+" "+formatPath(path)]
	if !ok {
		return msg
	}
	at := doc.LookupPath(cue.MakePath(selectors(path)...))
	var set []string
	for _, f := range rule.fields {
		if at.LookupPath(cue.MakePath(cue.Str(f))).Exists() {
			set = append(set, f)
		}
	}
	choices := strings.Join(rule.fields[:len(rule.fields)-1], ", ") + " or " + rule.fields[len(rule.fields)-1]
	if len(set) == 1 {
		return ""
	}
	if len(set) == 0 {
		return fmt.Sprintf("a %s needs one %s: set %s", kind, rule.what, choices)
	}
	return fmt.Sprintf("a %s has one %s (%s); this one sets %s", kind, rule.what, choices, andList(set))
}
