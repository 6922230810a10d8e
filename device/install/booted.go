package install

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
)

// ProcBooted returns the Booted function of a real device: which of a and b
// the running system's root filesystem is. It compares the device of the
// mounted root ("/") with each partition's device number, and when that
// does not decide (an overlay or dm-verity root, a file in tests), the
// root= argument of /proc/cmdline (a device path, or PARTUUID=, UUID=,
// LABEL=, PARTLABEL= resolved through /dev/disk/by-*) with each partition's
// path, both with symlinks resolved.
func ProcBooted(a, b Partition) func(ctx context.Context) (int, error) {
	pb := procBooted{root: "/", cmdline: "/proc/cmdline", disk: "/dev/disk", parts: []Partition{a, b}}
	return pb.booted
}

type procBooted struct {
	root, cmdline, disk string
	parts               []Partition
}

func (p procBooted) booted(context.Context) (int, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(p.root, &st); err == nil {
		for _, part := range p.parts {
			var ps syscall.Stat_t
			if syscall.Stat(part.Path, &ps) != nil || ps.Mode&syscall.S_IFMT != syscall.S_IFBLK {
				continue
			}
			if ps.Rdev == st.Dev {
				return part.number()
			}
		}
	}
	b, err := readSmall(p.cmdline, 64<<10)
	if err != nil {
		return 0, fmt.Errorf("%w: root device: %w", ErrBootState, err)
	}
	root := cmdlineRoot(string(b))
	if root == "" {
		return 0, fmt.Errorf("%w: the mounted root is neither partition and %s has no root=", ErrBootState, p.cmdline)
	}
	dev := p.resolve(root)
	for _, part := range p.parts {
		if path, err := filepath.EvalSymlinks(part.Path); err == nil && path == dev {
			return part.number()
		}
		if part.Path == root {
			return part.number()
		}
	}
	return 0, fmt.Errorf("%w: root=%s is neither %s nor %s", ErrBootState, root, p.parts[0].Path, p.parts[1].Path)
}

// resolve turns a root= value into a device path.
func (p procBooted) resolve(root string) string {
	for prefix, dir := range map[string]string{
		"PARTUUID=":  "by-partuuid",
		"UUID=":      "by-uuid",
		"LABEL=":     "by-label",
		"PARTLABEL=": "by-partlabel",
	} {
		if v, ok := strings.CutPrefix(root, prefix); ok {
			if prefix == "PARTUUID=" || prefix == "UUID=" {
				v = strings.ToLower(v)
			}
			root = filepath.Join(p.disk, dir, v)
			break
		}
	}
	if path, err := filepath.EvalSymlinks(root); err == nil {
		return path
	}
	return root
}

// cmdlineRoot returns the value of the last root= argument.
func cmdlineRoot(cmdline string) string {
	root := ""
	for _, f := range strings.Fields(cmdline) {
		if v, ok := strings.CutPrefix(f, "root="); ok {
			root = v
		}
	}
	return root
}

// FileBooted returns a Booted function that reads the running partition's
// number from a file (decimal, surrounding space ignored): what a simulated
// device's boot step writes.
func FileBooted(path string) func(ctx context.Context) (int, error) {
	return func(context.Context) (int, error) {
		b, err := readSmall(path, 64)
		if err != nil {
			return 0, fmt.Errorf("%w: %w", ErrBootState, err)
		}
		var n int
		if _, err := fmt.Sscanf(strings.TrimSpace(string(b)), "%d", &n); err != nil || n <= 0 {
			return 0, fmt.Errorf("%w: %s holds %q, not a partition number", ErrBootState, path, strings.TrimSpace(string(b)))
		}
		return n, nil
	}
}
