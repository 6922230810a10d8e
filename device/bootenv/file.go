package bootenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"sync"

	"github.com/gitfleet/gitfleet/device/atomicfile"
)

// File is a plain environment file, for tests and the simulated device: one
// "name=value" line per variable, sorted by name; lines that are empty or
// start with '#' are ignored. In values a backslash and a newline are escaped
// with a backslash, as in a GRUB block. The file holds at most 1 MiB.
//
// Atomicity: Set replaces the file through a synced temporary file, a rename
// and a synced directory, so after a power cut it holds the old variables or
// the new ones. Set creates the file when it does not exist; Get of a missing
// file fails with fs.ErrNotExist.
type File struct {
	path string
	mu   sync.Mutex
}

// NewFile returns the environment file at path.
func NewFile(path string) *File { return &File{path: path} }

// Path is the file's path.
func (f *File) Path() string { return f.path }

// Get implements Env.
func (f *File) Get(ctx context.Context, names ...string) (map[string]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	vars, _, err := f.read()
	if err != nil {
		return nil, err
	}
	return pick(vars, names), nil
}

// Set implements Env. Names must not start with '#'.
func (f *File) Set(ctx context.Context, vars map[string]string) error {
	if err := checkVars(vars); err != nil {
		return err
	}
	for name := range vars {
		if strings.HasPrefix(name, "#") {
			return fmt.Errorf("%w: %q starts with '#'", ErrInvalidName, name)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	cur, perm, err := f.read()
	if errors.Is(err, fs.ErrNotExist) {
		cur, perm, err = map[string]string{}, 0o644, nil
	}
	if err != nil {
		return err
	}
	next, _ := apply(cur, vars)
	data := encodeFile(next)
	if len(data) > maxFileSize {
		return fmt.Errorf("%w: %s would be %d bytes", ErrTooLarge, f.path, len(data))
	}
	if err := atomicfile.WriteFile(f.path, data, perm); err != nil {
		return fmt.Errorf("write %s: %w", f.path, err)
	}
	return nil
}

func (f *File) read() (map[string]string, fs.FileMode, error) {
	data, perm, err := readBounded(f.path)
	if err != nil {
		return nil, 0, err
	}
	vars, err := parseFile(data)
	if err != nil {
		return nil, 0, fmt.Errorf("%s: %w", f.path, err)
	}
	return vars, perm, nil
}

func parseFile(data []byte) (map[string]string, error) {
	vars := make(map[string]string)
	line := 1
	for p := 0; p < len(data); {
		if data[p] == '\n' {
			p, line = p+1, line+1
			continue
		}
		if data[p] == '#' {
			nl := bytes.IndexByte(data[p:], '\n')
			if nl < 0 {
				break
			}
			p, line = p+nl+1, line+1
			continue
		}
		eq := bytes.IndexByte(data[p:], '=')
		nl := bytes.IndexByte(data[p:], '\n')
		if eq < 0 || (nl >= 0 && nl < eq) || eq == 0 {
			return nil, fmt.Errorf("%w: line %d is not name=value", ErrCorrupt, line)
		}
		name := string(data[p : p+eq])
		var v []byte
		q := p + eq + 1
		for ; q < len(data) && data[q] != '\n'; q++ {
			if data[q] == '\\' {
				q++
				if q == len(data) {
					return nil, fmt.Errorf("%w: line %d ends in a lone backslash", ErrCorrupt, line)
				}
				if data[q] == '\n' {
					line++
				}
			}
			v = append(v, data[q])
		}
		vars[name] = string(v)
		p, line = q+1, line+1
	}
	return vars, nil
}

func encodeFile(vars map[string]string) []byte {
	var b bytes.Buffer
	for _, name := range sortedNames(vars) {
		b.WriteString(name)
		b.WriteByte('=')
		b.Write(grubEscape(vars[name]))
		b.WriteByte('\n')
	}
	return b.Bytes()
}
