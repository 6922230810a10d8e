package artifact

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// ExpectedDigestsKey is the payload meta-data key that announces the
// digests of files the new software brings: an object from absolute path
// to "sha256:HEX". The Gitfleet agent hands them to its monitoring before
// it installs the payload, so a fileChange check of those files takes the
// new digests as its baseline instead of raising an alert.
const ExpectedDigestsKey = "gitfleet.expected-digests"

// ExpectedDigests computes the ExpectedDigestsKey value for files, absolute
// paths as the device sees them, read under root (the root filesystem tree
// the image is built from).
func ExpectedDigests(root string, files []string) (map[string]any, error) {
	out := map[string]any{}
	for _, f := range files {
		if !path.IsAbs(f) || path.Clean(f) != f {
			return nil, fmt.Errorf("%q is not a clean absolute path (write it as the device sees it, e.g. /etc/passwd)", f)
		}
		sum, err := fileSHA256(filepath.Join(root, filepath.FromSlash(strings.TrimPrefix(f, "/"))))
		if err != nil {
			return nil, fmt.Errorf("%s under %s: %w", f, root, err)
		}
		out[f] = "sha256:" + sum
	}
	return out, nil
}

func fileSHA256(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil {
		return "", err
	} else if !st.Mode().IsRegular() {
		return "", fmt.Errorf("not a regular file")
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
