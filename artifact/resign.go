package artifact

import (
	"archive/tar"
	"fmt"
	"io"
)

// Sign copies the artifact read from r to w with a new manifest.sig made by
// signer, replacing any signature it had. The artifact must already be
// intact: call Verify on it first; Sign checks only what it copies (the
// order of the entries and the manifest's own format).
func Sign(r io.Reader, w io.Writer, signer *Signer) error {
	tr := tar.NewReader(r)
	tw := tar.NewWriter(w)
	var manifest []byte
	for i := 0; ; i++ {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("sign: %w", readErr("artifact", err))
		}
		switch {
		case i == 0 && h.Name != "version":
			return fmt.Errorf("sign: %w: first entry is %q, want \"version\"", ErrOrder, clip(h.Name))
		case i == 1 && h.Name != "manifest":
			return fmt.Errorf("sign: %w: %q after version, want \"manifest\"", ErrOrder, clip(h.Name))
		case h.Name == "manifest.sig":
			continue // replaced below
		}
		if h.Name == "manifest" {
			if h.Size > DefaultLimits.Manifest {
				return fmt.Errorf("sign: %w: manifest is %d bytes", ErrTooLarge, h.Size)
			}
			if manifest, err = io.ReadAll(tr); err != nil {
				return fmt.Errorf("sign: %w", readErr("manifest", err))
			}
			if _, err := parseManifest("manifest", manifest); err != nil {
				return fmt.Errorf("sign: %w", err)
			}
			sig, err := signer.Sign(manifest)
			if err != nil {
				return err
			}
			if err := copyEntry(tw, h, manifest, nil); err != nil {
				return err
			}
			sh := *h
			sh.Name, sh.Size = "manifest.sig", int64(len(sig))
			if err := copyEntry(tw, &sh, sig, nil); err != nil {
				return err
			}
			continue
		}
		if err := copyEntry(tw, h, nil, tr); err != nil {
			return err
		}
	}
	if manifest == nil {
		return fmt.Errorf("sign: %w: no manifest", ErrFormat)
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("sign: %w", err)
	}
	return nil
}

func copyEntry(tw *tar.Writer, h *tar.Header, data []byte, r io.Reader) error {
	nh := &tar.Header{Typeflag: tar.TypeReg, Name: h.Name, Size: h.Size, Mode: h.Mode, ModTime: h.ModTime,
		Uname: h.Uname, Gname: h.Gname, Uid: h.Uid, Gid: h.Gid}
	if err := tw.WriteHeader(nh); err != nil {
		return fmt.Errorf("sign: %w", err)
	}
	var err error
	if data != nil {
		_, err = tw.Write(data)
	} else {
		_, err = io.Copy(tw, r)
	}
	if err != nil {
		return fmt.Errorf("sign: copy %s: %w", h.Name, err)
	}
	return nil
}
