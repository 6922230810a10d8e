package schema

import (
	"errors"
	"io/fs"
)

// Limits on what Load reads. A file over a limit is reported, not read.
const (
	MaxFileSize  = 1 << 20   // bytes per manifest file
	MaxDocuments = 1000      // documents per file
	MaxFiles     = 100_000   // manifest files per tree
	MaxTotalSize = 256 << 20 // bytes of manifest files per tree
)

// Load reads and validates every manifest under the root of fsys (see the
// package documentation for which files it reads). On success err is nil.
// Otherwise err is an [Errors] holding every problem found, and the
// returned Fleet holds the manifests that were valid on their own, so that
// callers can still report on them.
func Load(fsys fs.FS) (*Fleet, error) {
	return nil, errors.New("schema: not implemented yet")
}
