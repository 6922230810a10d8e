package gitsource

import (
	"errors"
	"fmt"
	"strings"
)

var (
	// ErrUnreachable matches every [*UnreachableError]: the remote could not
	// be read. Transient: keep serving the last good revision and retry.
	ErrUnreachable = errors.New("gitsource: remote unreachable")

	// ErrAuth matches an [*UnreachableError] caused by credentials the remote
	// refused, or by a host key that is not trusted.
	ErrAuth = errors.New("gitsource: authentication failed")

	// ErrRefused matches every [*RefusedError]: the remote answered but its
	// head must not be served. Stalled: wait for a new commit.
	ErrRefused = errors.New("gitsource: commit refused")
)

// UnreachableError says why the remote could not be read. Its message names
// the remote without credentials or query string.
type UnreachableError struct {
	Remote string // the remote URL, without credentials
	Ref    string // the ref that was fetched
	Reason string // a short summary: "authentication failed", "timed out after 30s", …
	Err    error  // the cause, for errors.Is / errors.As
	msg    string // the cause's message, with secrets removed
}

func (e *UnreachableError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "gitsource: fetch %s from %s: %s", e.Ref, e.Remote, e.Reason)
	if e.msg != "" && e.msg != e.Reason {
		b.WriteString(": ")
		b.WriteString(e.msg)
	}
	return b.String()
}

func (e *UnreachableError) Unwrap() error { return e.Err }

// Is reports whether target is [ErrUnreachable], or [ErrAuth] for an
// authentication failure.
func (e *UnreachableError) Is(target error) bool {
	return target == ErrUnreachable || (target == ErrAuth && (e.Reason == reasonAuth || e.Reason == reasonHostKey))
}

// RefusedError says why a head was refused. The offending commit is the head
// itself, or a commit in its history (see the package documentation).
type RefusedError struct {
	Head   string // the SHA of the refused head
	Commit string // the SHA of the first offending commit found
	Author string // that commit's author, "Name <email>"
	Reason string // why that commit failed: "not signed", "signed by key …, which is not trusted", …
	More   int    // how many other commits in the same range also failed
}

func (e *RefusedError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "gitsource: commit %s refused: ", short(e.Head))
	by := ""
	if e.Author != "" {
		by = " (author " + e.Author + ")"
	}
	if e.Commit == e.Head || e.Commit == "" {
		fmt.Fprintf(&b, "%s%s", e.Reason, by)
	} else {
		fmt.Fprintf(&b, "its history contains commit %s%s, which is %s", short(e.Commit), by, e.Reason)
	}
	if e.More > 0 {
		fmt.Fprintf(&b, "; %d more new commit(s) fail too", e.More)
	}
	return b.String()
}

// Is reports whether target is [ErrRefused].
func (e *RefusedError) Is(target error) bool { return target == ErrRefused }

func short(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}
