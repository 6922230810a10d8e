package artifact

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"sort"
	"strings"
)

// Digest is a SHA-256 digest.
type Digest [32]byte

func (d Digest) String() string { return hex.EncodeToString(d[:]) }

// Manifest maps entry names (version, header.tar.gz, data/0000/rootfs.ext4)
// to their SHA-256 digests. Its text form is sha256sum's: lowercase hex, two
// spaces, the name, a newline; lines sorted by name.
type Manifest map[string]Digest

// MarshalText returns the manifest in sha256sum format, sorted by name.
func (m Manifest) MarshalText() ([]byte, error) {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	var b bytes.Buffer
	for _, n := range names {
		d := m[n]
		fmt.Fprintf(&b, "%s  %s\n", hex.EncodeToString(d[:]), n)
	}
	return b.Bytes(), nil
}

// parseManifest parses sha256sum-format text strictly: every line is 64
// lowercase hex digits, two spaces and a safe relative name; no duplicates.
func parseManifest(entry string, data []byte) (Manifest, error) {
	m := Manifest{}
	text := string(data)
	if text == "" {
		return nil, fmt.Errorf("%w: %s is empty", ErrFormat, entry)
	}
	if !strings.HasSuffix(text, "\n") {
		// mender-artifact always ends the last line; a missing newline
		// means the entry was cut or edited.
		return nil, fmt.Errorf("%w: %s: last line has no newline", ErrFormat, entry)
	}
	for i, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		hexsum, name, ok := strings.Cut(line, "  ")
		if !ok || len(hexsum) != 64 || strings.ToLower(hexsum) != hexsum {
			return nil, fmt.Errorf("%w: %s line %d: want \"<sha256>  <name>\", got %q", ErrFormat, entry, i+1, clip(line))
		}
		var d Digest
		if _, err := hex.Decode(d[:], []byte(hexsum)); err != nil {
			return nil, fmt.Errorf("%w: %s line %d: bad digest: %v", ErrFormat, entry, i+1, err)
		}
		if err := checkName(name); err != nil {
			return nil, fmt.Errorf("%s line %d: %w", entry, i+1, err)
		}
		if _, dup := m[name]; dup {
			return nil, fmt.Errorf("%w: %s line %d: %s listed twice", ErrFormat, entry, i+1, name)
		}
		m[name] = d
	}
	return m, nil
}

// checkName refuses names that could escape a directory when extracted or
// that are not plain relative paths.
func checkName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: empty name", ErrPath)
	case strings.HasPrefix(name, "/"):
		return fmt.Errorf("%w: absolute path %q", ErrPath, clip(name))
	case strings.ContainsAny(name, "\\\x00\r\n"):
		return fmt.Errorf("%w: %q contains a backslash, NUL or newline", ErrPath, clip(name))
	}
	for _, part := range strings.Split(name, "/") {
		if part == "" || part == "." || part == ".." {
			return fmt.Errorf("%w: %q is not a clean relative path", ErrPath, clip(name))
		}
	}
	return nil
}

// clip shortens untrusted text for error messages.
func clip(s string) string {
	const max = 80
	if len(s) > max {
		return s[:max] + "…"
	}
	return s
}
