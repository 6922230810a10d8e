package schema

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// An Error is one problem in a fleet repository.
type Error struct {
	File string // slash-separated, relative to the root given to Load
	Line int    // 1-based; 0 when unknown
	Col  int    // 1-based; 0 when unknown
	Path string // the field in the document, such as "spec.phases[1].percent"; may be empty
	Msg  string
}

// Error formats e as "file:line:col: path: message", leaving out what is
// unknown.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(Source{e.File, e.Line, e.Col}.String())
	if b.Len() > 0 {
		b.WriteString(": ")
	}
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errors is every problem Load found, sorted by file and position.
type Errors []*Error

// Error returns the errors one per line.
func (es Errors) Error() string {
	var b strings.Builder
	for i, e := range es {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

func (es Errors) sort() {
	slices.SortStableFunc(es, func(a, b *Error) int {
		return cmp.Or(
			cmp.Compare(a.File, b.File),
			cmp.Compare(a.Line, b.Line),
			cmp.Compare(a.Col, b.Col),
			cmp.Compare(a.Path, b.Path),
			cmp.Compare(a.Msg, b.Msg),
		)
	})
}

// MaxErrors bounds the errors Load returns; past it, one last error says
// how many were left out.
const MaxErrors = 1000

// errorList collects errors while loading.
type errorList struct {
	errs    Errors
	dropped int
}

func (l *errorList) add(src Source, path, format string, args ...any) {
	if len(l.errs) >= MaxErrors {
		l.dropped++
		return
	}
	l.errs = append(l.errs, &Error{
		File: src.File, Line: src.Line, Col: src.Col,
		Path: path, Msg: fmt.Sprintf(format, args...),
	})
}

// merge adds the errors of m to l.
func (l *errorList) merge(m *errorList) {
	for _, e := range m.errs {
		if len(l.errs) >= MaxErrors {
			l.dropped++
			continue
		}
		l.errs = append(l.errs, e)
	}
	l.dropped += m.dropped
}

// full reports whether l holds as many errors as it shows.
func (l *errorList) full() bool { return len(l.errs) >= MaxErrors }

// count returns how many errors were reported, shown or not.
func (l *errorList) count() int { return len(l.errs) + l.dropped }

// result returns the errors, sorted, or nil.
func (l *errorList) result() Errors {
	if len(l.errs) == 0 {
		return nil
	}
	l.errs.sort()
	if l.dropped > 0 {
		l.errs = append(l.errs, &Error{Msg: fmt.Sprintf("%d more errors not shown", l.dropped)})
	}
	return l.errs
}

// at reports an error at the field path of the manifest m.
func (l *errorList) at(m *Meta, path, format string, args ...any) {
	l.add(m.Pos(path), path, format, args...)
}
