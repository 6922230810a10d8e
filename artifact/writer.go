package artifact

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// Spec describes an artifact to write.
type Spec struct {
	Name          string   // artifact_name; required
	DeviceTypes   []string // compatible device types; at least one
	Group         string   // artifact_group the artifact provides
	DependsNames  []string // artifact names one of which must be installed
	DependsGroups []string // artifact groups one of which must be installed
	Payloads      []PayloadSpec
	Scripts       []Script // state scripts, e.g. ArtifactInstall_Enter_00

	// Compression of the header and data archives; "" means gzip.
	Compression Compression
	// Signer signs the manifest; nil writes an unsigned artifact.
	Signer *Signer
	// ModTime stamps every archive entry; the zero value means the Unix
	// epoch, so the same inputs give the same bytes (bar the signature).
	ModTime time.Time
	// TempDir holds the compressed payload archives while the artifact is
	// assembled; "" means os.TempDir().
	TempDir string
	// Progress, when set, is called as payload bytes are processed with the
	// bytes done so far and the total (every file is read twice: once to
	// digest it for the manifest, once to archive it).
	Progress func(done, total int64)
}

// PayloadSpec is one payload.
type PayloadSpec struct {
	Type           string // "rootfs-image" or an update module name
	Files          []FileSpec
	MetaData       map[string]any
	Provides       map[string]string
	Depends        map[string]any // values: string or []string
	ClearsProvides []string
}

// FileSpec is one payload file.
type FileSpec struct {
	// Name inside the artifact; defaults to the base name of Path.
	Name string
	// Path of the file on disk.
	Path string
	// Open, when set, is used instead of Path. It must give the same bytes
	// every time it is called.
	Open func() (io.ReadCloser, error)
	// Mode is the permission bits recorded; 0 means the file's own (Path) or
	// 0644.
	Mode int64
}

func (f FileSpec) name() string {
	if f.Name != "" {
		return f.Name
	}
	return filepath.Base(f.Path)
}

func (f FileSpec) open() (io.ReadCloser, error) {
	if f.Open != nil {
		return f.Open()
	}
	return os.Open(f.Path)
}

// Software says how the payload records the software version it installs,
// as mender-artifact's --software-filesystem/--software-name/
// --software-version flags do.
type Software struct {
	Filesystem string // default "rootfs-image"
	Name       string // default: none for rootfs-image, the module type for modules
	Version    string // default: the artifact name
	// NoDefault disables the version provides (--no-default-software-version).
	NoDefault bool
	// NoDefaultClears disables the default clears_artifact_provides.
	NoDefaultClears bool
}

// RootfsImage returns a rootfs-image payload with mender-artifact's default
// provides (rootfs-image.version; the image checksum is added when written)
// and clears_artifact_provides.
func RootfsImage(file FileSpec, artifactName string, sw Software) PayloadSpec {
	p := PayloadSpec{Type: "rootfs-image", Files: []FileSpec{file}, Provides: map[string]string{}}
	fs := sw.Filesystem
	if fs == "" {
		fs = "rootfs-image"
	}
	if !sw.NoDefault {
		key := fs + ".version"
		if sw.Name != "" {
			key = fs + "." + sw.Name + ".version"
		}
		p.Provides[key] = firstNonEmpty(sw.Version, artifactName)
	}
	if !sw.NoDefaultClears {
		p.ClearsProvides = []string{"artifact_group", "rootfs_image_checksum", fs + ".*"}
	}
	return p
}

// ModuleImage returns an update-module payload with mender-artifact's default
// provides (rootfs-image.TYPE.version) and clears_artifact_provides.
func ModuleImage(moduleType string, files []FileSpec, artifactName string, sw Software) PayloadSpec {
	p := PayloadSpec{Type: moduleType, Files: files, Provides: map[string]string{}}
	fs := firstNonEmpty(sw.Filesystem, "rootfs-image")
	name := firstNonEmpty(sw.Name, moduleType)
	if !sw.NoDefault {
		p.Provides[fs+"."+name+".version"] = firstNonEmpty(sw.Version, artifactName)
	}
	if !sw.NoDefaultClears {
		p.ClearsProvides = []string{fs + "." + name + ".*"}
	}
	return p
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

var (
	typeRE       = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
	scriptNameRE = regexp.MustCompile(`^(ArtifactInstall|ArtifactReboot|ArtifactCommit|ArtifactRollback|ArtifactRollbackReboot|ArtifactFailure|Download)_(Enter|Leave|Error)_[0-9]{2}(_[A-Za-z0-9_.-]+)?$`)
)

func (s *Spec) validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if s.Name == "" {
		bad("artifact name is required (-n/--artifact-name)")
	}
	if len(s.DeviceTypes) == 0 {
		bad("at least one device type is required (-t/--device-type)")
	}
	if len(s.Payloads) == 0 {
		bad("at least one payload is required")
	}
	for i, p := range s.Payloads {
		if !typeRE.MatchString(p.Type) {
			bad("payload %d: type %q is not a valid update type (-T/--type)", i, p.Type)
		}
		if p.Type == "rootfs-image" && len(p.Files) != 1 {
			bad("payload %d: a rootfs-image carries exactly one file, not %d", i, len(p.Files))
		}
		if err := checkTypeInfoProvides(fmt.Sprintf("payload %d", i), p.Provides); err != nil {
			errs = append(errs, err)
		}
		names := map[string]bool{}
		for _, f := range p.Files {
			n := f.name()
			if err := checkName(n); err != nil || strings.Contains(n, "/") {
				bad("payload %d: file name %q must be a plain file name", i, n)
			}
			if names[n] {
				bad("payload %d: two files named %q", i, n)
			}
			names[n] = true
			if f.Path == "" && f.Open == nil {
				bad("payload %d: file %q has no path", i, n)
			}
		}
	}
	for _, sc := range s.Scripts {
		if !scriptNameRE.MatchString(sc.Name) {
			bad("state script %q: name must be <State>_<Enter|Leave|Error>_<NN>[_comment], State one of ArtifactInstall, ArtifactReboot, ArtifactCommit, ArtifactRollback, ArtifactRollbackReboot, ArtifactFailure, Download", sc.Name)
		}
	}
	if _, err := ParseCompression(string(s.Compression)); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// fileDigest is what the first pass learns about a payload file.
type fileDigest struct {
	digest Digest
	size   int64
	mode   int64
}

// progress accounts bytes for Spec.Progress.
type progress struct {
	fn          func(done, total int64)
	done, total int64
}

func (p *progress) Write(b []byte) (int, error) {
	p.done += int64(len(b))
	if p.fn != nil {
		p.fn(p.done, p.total)
	}
	return len(b), nil
}

// Write writes the artifact spec describes to w. Payload files are read
// twice (digest, then archive) and compressed payloads are staged in
// TempDir; nothing is held whole in memory.
func Write(ctx context.Context, w io.Writer, spec Spec) error {
	if err := spec.validate(); err != nil {
		return fmt.Errorf("write artifact: %w", err)
	}
	comp, _ := ParseCompression(string(spec.Compression))
	mtime := spec.ModTime
	if mtime.IsZero() {
		mtime = time.Unix(0, 0)
	}

	// Pass 1: digest every payload file.
	prog := &progress{fn: spec.Progress}
	for _, p := range spec.Payloads {
		for _, f := range p.Files {
			if f.Path != "" && f.Open == nil {
				st, err := os.Stat(f.Path)
				if err != nil {
					return fmt.Errorf("write artifact: %w", err)
				}
				if !st.Mode().IsRegular() {
					return fmt.Errorf("write artifact: %s is not a regular file", f.Path)
				}
				prog.total += 2 * st.Size()
			}
		}
	}
	digests := make([][]fileDigest, len(spec.Payloads))
	manifest := Manifest{}
	for i, p := range spec.Payloads {
		for _, f := range p.Files {
			if err := ctx.Err(); err != nil {
				return err
			}
			fd, err := digestFile(f, prog)
			if err != nil {
				return fmt.Errorf("write artifact: %w", err)
			}
			digests[i] = append(digests[i], fd)
			manifest[fmt.Sprintf("data/%04d/%s", i, f.name())] = fd.digest
		}
	}

	header, err := buildHeader(&spec, comp, mtime, digests)
	if err != nil {
		return fmt.Errorf("write artifact: %w", err)
	}
	version := []byte(fmt.Sprintf(`{"format":"mender","version":%d}`, FormatVersion))
	headerName := "header.tar" + comp.Suffix()
	manifest["version"] = sha256.Sum256(version)
	manifest[headerName] = sha256.Sum256(header)

	// Pass 2: archive and compress each payload into a temporary file; the
	// outer tar needs each entry's size before its content.
	staged := make([]*os.File, len(spec.Payloads))
	defer func() {
		for _, f := range staged {
			if f != nil {
				f.Close()
				os.Remove(f.Name())
			}
		}
	}()
	for i, p := range spec.Payloads {
		if len(p.Files) == 0 {
			continue
		}
		tmp, err := os.CreateTemp(spec.TempDir, "gitfleet-artifact-*")
		if err != nil {
			return fmt.Errorf("write artifact: %w", err)
		}
		staged[i] = tmp
		if err := writeData(ctx, tmp, p, digests[i], comp, mtime, prog); err != nil {
			return fmt.Errorf("write artifact: payload %d: %w", i, err)
		}
	}

	mtext, _ := manifest.MarshalText()
	var sig []byte
	if spec.Signer != nil {
		if sig, err = spec.Signer.Sign(mtext); err != nil {
			return fmt.Errorf("write artifact: %w", err)
		}
	}

	tw := tar.NewWriter(w)
	entry := func(name string, data []byte) error {
		if err := tw.WriteHeader(fileHeader(name, int64(len(data)), 0o644, mtime)); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	if err := entry("version", version); err != nil {
		return fmt.Errorf("write artifact: %w", err)
	}
	if err := entry("manifest", mtext); err != nil {
		return fmt.Errorf("write artifact: %w", err)
	}
	if sig != nil {
		if err := entry("manifest.sig", sig); err != nil {
			return fmt.Errorf("write artifact: %w", err)
		}
	}
	if err := entry(headerName, header); err != nil {
		return fmt.Errorf("write artifact: %w", err)
	}
	for i, tmp := range staged {
		if tmp == nil {
			continue
		}
		size, err := tmp.Seek(0, io.SeekEnd)
		if err == nil {
			_, err = tmp.Seek(0, io.SeekStart)
		}
		if err != nil {
			return fmt.Errorf("write artifact: %w", err)
		}
		name := fmt.Sprintf("data/%04d.tar%s", i, comp.Suffix())
		if err := tw.WriteHeader(fileHeader(name, size, 0o644, mtime)); err != nil {
			return fmt.Errorf("write artifact: %w", err)
		}
		if _, err := io.Copy(tw, &ctxReader{ctx, tmp}); err != nil {
			return fmt.Errorf("write artifact: %w", err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("write artifact: %w", err)
	}
	return nil
}

func fileHeader(name string, size, mode int64, mtime time.Time) *tar.Header {
	return &tar.Header{
		Typeflag: tar.TypeReg, Name: name, Size: size, Mode: mode, ModTime: mtime,
		Uname: "root", Gname: "root",
	}
}

func digestFile(f FileSpec, prog *progress) (fileDigest, error) {
	rc, err := f.open()
	if err != nil {
		return fileDigest{}, err
	}
	defer rc.Close()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(h, prog), rc)
	if err != nil {
		return fileDigest{}, fmt.Errorf("read %s: %w", f.name(), err)
	}
	fd := fileDigest{size: n, mode: f.Mode}
	h.Sum(fd.digest[:0])
	if fd.mode == 0 {
		fd.mode = 0o644
		if file, ok := rc.(*os.File); ok {
			if st, err := file.Stat(); err == nil {
				fd.mode = int64(st.Mode().Perm())
			}
		}
	}
	return fd, nil
}

func writeData(ctx context.Context, out io.Writer, p PayloadSpec, digests []fileDigest, comp Compression, mtime time.Time, prog *progress) error {
	zw, err := compress(comp, out)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(zw)
	for j, f := range p.Files {
		fd := digests[j]
		if err := tw.WriteHeader(fileHeader(f.name(), fd.size, fd.mode, mtime)); err != nil {
			return err
		}
		rc, err := f.open()
		if err != nil {
			return err
		}
		h := sha256.New()
		n, err := io.Copy(io.MultiWriter(tw, h, prog), &ctxReader{ctx, io.LimitReader(rc, fd.size)})
		extra, _ := rc.Read(make([]byte, 1))
		rc.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", f.name(), err)
		}
		var got Digest
		h.Sum(got[:0])
		if n != fd.size || extra > 0 || got != fd.digest {
			return fmt.Errorf("%s changed while the artifact was being written", f.name())
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return zw.Close()
}

func buildHeader(spec *Spec, comp Compression, mtime time.Time, digests [][]fileDigest) ([]byte, error) {
	info := HeaderInfo{
		Provides: ArtifactProvides{Name: spec.Name, Group: spec.Group},
		Depends:  ArtifactDepends{DeviceTypes: spec.DeviceTypes, Names: spec.DependsNames, Groups: spec.DependsGroups},
	}
	for _, p := range spec.Payloads {
		info.Payloads = append(info.Payloads, PayloadType{Type: p.Type})
	}
	var buf bytes.Buffer
	zw, err := compress(comp, &buf)
	if err != nil {
		return nil, err
	}
	tw := tar.NewWriter(zw)
	add := func(name string, data []byte) error {
		if err := tw.WriteHeader(fileHeader(name, int64(len(data)), 0o644, mtime)); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	hi, _ := json.Marshal(info)
	if err := add("header-info", hi); err != nil {
		return nil, err
	}
	for _, s := range spec.Scripts {
		if err := tw.WriteHeader(fileHeader("scripts/"+s.Name, int64(len(s.Data)), 0o755, mtime)); err != nil {
			return nil, err
		}
		if _, err := tw.Write(s.Data); err != nil {
			return nil, err
		}
	}
	for i, p := range spec.Payloads {
		ti := TypeInfo{Type: p.Type, Provides: map[string]string{}, Depends: p.Depends, ClearsProvides: p.ClearsProvides}
		for k, v := range p.Provides {
			ti.Provides[k] = v
		}
		if p.Type == "rootfs-image" && len(digests[i]) == 1 {
			if _, set := ti.Provides["rootfs-image.checksum"]; !set {
				ti.Provides["rootfs-image.checksum"] = digests[i][0].digest.String()
			}
		}
		if len(ti.Provides) == 0 {
			ti.Provides = nil
		}
		tib, err := json.Marshal(ti)
		if err != nil {
			return nil, fmt.Errorf("payload %d type-info: %w", i, err)
		}
		if err := add(fmt.Sprintf("headers/%04d/type-info", i), tib); err != nil {
			return nil, err
		}
		var md []byte
		if p.MetaData != nil {
			if md, err = json.Marshal(p.MetaData); err != nil {
				return nil, fmt.Errorf("payload %d meta-data: %w", i, err)
			}
		}
		// mender-artifact writes an empty meta-data for rootfs-image.
		if md != nil || p.Type == "rootfs-image" {
			if err := add(fmt.Sprintf("headers/%04d/meta-data", i), md); err != nil {
				return nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
