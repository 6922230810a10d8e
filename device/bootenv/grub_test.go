package bootenv

import (
	"bytes"
	"context"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// block builds a GRUB block of size bytes from its lines.
func block(size int, lines ...string) []byte {
	b := []byte(grubSignature + grubWarning + strings.Join(lines, ""))
	for len(b) < size {
		b = append(b, '#')
	}
	return b
}

func TestGRUBLayout(t *testing.T) {
	tests := []struct {
		name  string
		start []byte // nil: no file yet
		set   map[string]string
		want  []byte
		err   error
	}{
		{
			name: "create",
			set:  map[string]string{"b": "2", "a": "1"},
			want: block(1024, "a=1\n", "b=2\n"),
		},
		{
			name:  "replace keeps the line's place",
			start: block(1024, "a=1\n", "b=2\n"),
			set:   map[string]string{"a": "longer value"},
			want:  block(1024, "a=longer value\n", "b=2\n"),
		},
		{
			name:  "shrink",
			start: block(1024, "a=longer value\n", "b=2\n"),
			set:   map[string]string{"a": "x"},
			want:  block(1024, "a=x\n", "b=2\n"),
		},
		{
			name:  "delete",
			start: block(1024, "a=1\n", "b=2\n", "c=3\n"),
			set:   map[string]string{"b": ""},
			want:  block(1024, "a=1\n", "c=3\n"),
		},
		{
			name: "escapes",
			set:  map[string]string{"v": "back\\slash\nnew line"},
			want: block(1024, "v=back\\\\slash\\\nnew line\n"),
		},
		{
			name:  "name that prefixes another",
			start: block(1024, "ab=1\n", "a=2\n"),
			set:   map[string]string{"a": "3"},
			want:  block(1024, "ab=1\n", "a=3\n"),
		},
		{
			name:  "other size kept",
			start: block(2048, "a=1\n"),
			set:   map[string]string{"z": strings.Repeat("z", 1500)},
			want:  block(2048, "a=1\n", "z="+strings.Repeat("z", 1500)+"\n"),
		},
		{
			name:  "duplicates collapse to one",
			start: block(1024, "a=1\n", "b=2\n", "a=3\n"),
			set:   map[string]string{"a": "4"},
			want:  block(1024, "b=2\n", "a=4\n"),
		},
		{
			name:  "full",
			start: block(1024, "a=1\n"),
			set:   map[string]string{"big": strings.Repeat("x", 1000)},
			err:   ErrTooLarge,
		},
		{
			name:  "grow past the end",
			start: block(1024, "a=1\n", "b="+strings.Repeat("y", 900)+"\n"),
			set:   map[string]string{"a": strings.Repeat("x", 100)},
			err:   ErrTooLarge,
		},
		{
			name:  "broken block",
			start: []byte(grubSignature + "a=1\nno end"),
			set:   map[string]string{"a": "2"},
			err:   ErrCorrupt,
		},
		{
			name:  "not a block",
			start: []byte("hello\n"),
			set:   map[string]string{"a": "2"},
			err:   ErrCorrupt,
		},
		{
			name: "hash name",
			set:  map[string]string{"#a": "2"},
			err:  ErrInvalidName,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "grubenv")
			if tc.start != nil {
				if err := os.WriteFile(path, tc.start, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			err := NewGRUB(path).Set(context.Background(), tc.set)
			if !errors.Is(err, tc.err) {
				t.Fatalf("err = %v, want %v", err, tc.err)
			}
			got, _ := os.ReadFile(path)
			if tc.err != nil {
				if !bytes.Equal(got, tc.start) {
					t.Errorf("refused Set changed the file")
				}
				return
			}
			if !bytes.Equal(got, tc.want) {
				t.Errorf("block:\n%q\nwant:\n%q", got, tc.want)
			}
		})
	}
}

func TestGRUBRead(t *testing.T) {
	tests := []struct {
		name string
		blk  []byte
		want map[string]string
	}{
		{"empty", block(1024), map[string]string{}},
		{"values", block(1024, "a=1\n", "e=\n", "v=x\\\\y\\\nz\n"), map[string]string{"a": "1", "e": "", "v": "x\\y\nz"}},
		{"comments between", block(1024, "a=1\n", "# note\n", "b=2\n"), map[string]string{"a": "1", "b": "2"}},
		{"later wins", block(1024, "a=1\n", "a=2\n"), map[string]string{"a": "2"}},
		{"stops at a broken line, as GRUB does", []byte(grubSignature + "a=1\nb=2"), map[string]string{"a": "1"}},
		{"no equals", []byte(grubSignature + "a=1\njunk\n###"), map[string]string{"a": "1"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "grubenv")
			os.WriteFile(path, tc.blk, 0o600)
			if got := mustGet(t, NewGRUB(path)); !maps.Equal(got, tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestGRUBKeepsMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "grubenv")
	os.WriteFile(path, block(1024), 0o600)
	mustSet(t, NewGRUB(path), map[string]string{"a": "1"})
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("mode = %v, %v; want 0600", fi.Mode(), err)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("temp files left behind: %v", entries)
	}
}

func TestFileFormat(t *testing.T) {
	tests := []struct {
		name string
		data string
		want map[string]string
		err  bool
	}{
		{"empty", "", map[string]string{}, false},
		{"lines", "# comment\n\na=1\nb=x=y\n", map[string]string{"a": "1", "b": "x=y"}, false},
		{"no final newline", "a=1", map[string]string{"a": "1"}, false},
		{"escapes", "a=x\\\\y\\\nz\n", map[string]string{"a": "x\\y\nz"}, false},
		{"no equals", "a=1\njunk\n", nil, true},
		{"empty name", "=1\n", nil, true},
		{"lone backslash", "a=x\\", nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseFile([]byte(tc.data))
			if (err != nil) != tc.err {
				t.Fatalf("err = %v, want error %v", err, tc.err)
			}
			if err == nil && !maps.Equal(got, tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
			if err == nil {
				back, err := parseFile(encodeFile(got))
				if err != nil || !maps.Equal(back, got) {
					t.Errorf("round trip: %q, %v", back, err)
				}
			}
		})
	}
}
