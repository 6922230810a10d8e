package bootenv

import (
	"fmt"
	"io"
	"io/fs"
	"os"
)

// maxFileSize bounds what the GRUB and File backends read.
const maxFileSize = 1 << 20

// readBounded reads a whole file of at most maxFileSize bytes.
func readBounded(path string) ([]byte, fs.FileMode, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, 0, err
	}
	b, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, 0, err
	}
	if len(b) > maxFileSize {
		return nil, 0, fmt.Errorf("%w: %s is larger than %d bytes", ErrCorrupt, path, maxFileSize)
	}
	return b, fi.Mode().Perm(), nil
}
