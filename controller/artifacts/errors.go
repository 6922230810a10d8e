package artifacts

import (
	"errors"
	"fmt"
)

// The checks an artifact can fail, in the order they run. An [*Error]
// wraps one of them; test with errors.Is.
var (
	// ErrNotFound: the fleet declares no artifact of that name.
	ErrNotFound = errors.New("artifacts: no such artifact")
	// ErrPending: the artifact is being fetched or checked for the first
	// time (or since its manifest changed).
	ErrPending = errors.New("artifacts: not checked yet")
	// ErrKey: spec.signedBy names a key the fleet lacks, or whose public
	// key does not load.
	ErrKey = errors.New("artifacts: signing key unusable")
	// ErrSource: the source could not be read: a missing file, no store
	// configured, an HTTP error, a dropped connection. Retried with
	// backoff.
	ErrSource = errors.New("artifacts: source unavailable")
	// ErrTooLarge: the source is larger than Options.MaxSize.
	ErrTooLarge = errors.New("artifacts: source too large")
	// ErrDigest: the bytes' sha256 is not the declared one.
	ErrDigest = errors.New("artifacts: sha256 mismatch")
	// ErrFormat: the file is not an intact Mender artifact; the error
	// also wraps the artifact package's error (artifact.ErrDigest, …).
	ErrFormat = errors.New("artifacts: not a valid artifact")
	// ErrHeader: the artifact's header disagrees with its manifest
	// (artifact_name, device types, provides, depends).
	ErrHeader = errors.New("artifacts: header does not match manifest")
	// ErrUnsigned: spec.signedBy requires a signature and the artifact
	// carries none, or carries augmented parts (manifest-augment) that no
	// signature covers (then it also wraps artifact.ErrAugmented).
	ErrUnsigned = errors.New("artifacts: artifact not signed")
	// ErrSignature: too few of the spec.signedBy keys signed the
	// artifact (a signature by an untrusted key counts for nothing).
	ErrSignature = errors.New("artifacts: signature check failed")
)

// An Error says why an artifact is not offered. Its message is fit for the
// management API and `gitfleet status`: it names the artifact and the
// failed check, and never contains a URL's query string.
type Error struct {
	// Name is the Artifact manifest's metadata.name.
	Name string
	// Kind is one of the Err* sentinels above.
	Kind error
	// Err is the detail (may be nil).
	Err error
	// Retry reports whether a later sync retries by itself (fetch
	// failures); otherwise only a change of the manifest, the keys or the
	// source file changes the outcome.
	Retry bool
}

func (e *Error) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("artifact %s: %v", e.Name, e.Kind)
	}
	return fmt.Sprintf("artifact %s: %v: %v", e.Name, e.Kind, e.Err)
}

// Unwrap returns the sentinel and the detail, so errors.Is matches either.
func (e *Error) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Kind}
	}
	return []error{e.Kind, e.Err}
}

// Reason returns the message without the artifact name, for status
// listings that show the name in their own column.
func (e *Error) Reason() string {
	if e.Err == nil {
		return e.Kind.Error()
	}
	return fmt.Sprintf("%v: %v", e.Kind, e.Err)
}

// fail builds an *Error for artifact name.
func fail(name string, kind error, format string, args ...any) *Error {
	var err error
	if format != "" {
		err = fmt.Errorf(format, args...)
	}
	return &Error{Name: name, Kind: kind, Err: err, Retry: kind == ErrSource || kind == ErrTooLarge}
}
