package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/gitfleet/gitfleet/artifact"
	"github.com/gitfleet/gitfleet/artifact/keyfile"
)

// Bounds on the small files the CLI reads whole. Scripts and meta-data end up
// in the artifact header, whose entries the reader caps at 1 MiB.
const (
	maxKeyFile    = 64 << 10
	maxHeaderFile = 1 << 20
)

const extensionsNote = `Gitfleet extensions: zstd compression and ed25519 keys. mender-artifact 3.9
and stock Mender 3.x clients support neither; use gzip/none/xz (lzma) and
ecdsa/rsa keys for artifacts that stock Mender tools must read.`

func newArtifactCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "artifact",
		Short: "Write, read, sign and verify Mender artifacts (format v3)",
		Long: `Write, read, sign and verify Mender artifacts (format version 3), compatible
with mender-artifact and the Mender client.

` + extensionsNote,
	}
	write := &cobra.Command{
		Use:   "write",
		Short: "Write an artifact (rootfs-image or module-image)",
	}
	write.AddCommand(newWriteCmd("rootfs-image"), newWriteCmd("module-image"))
	cmd.AddCommand(write, newArtifactReadCmd(), newArtifactSignCmd(), newArtifactVerifyCmd())
	return cmd
}

// readKeyFile reads a PEM key file given with flag ("" for an argument),
// with a size bound.
func readKeyFile(flag, path string) ([]byte, error) {
	data, err := readFileLimit(path, maxKeyFile)
	if err != nil && flag == "" {
		return nil, fmt.Errorf("read key: %w", err)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", flag, err)
	}
	return data, nil
}

func loadSigner(flag, path string) (*artifact.Signer, error) {
	data, err := readKeyFile(flag, path)
	if err != nil {
		return nil, err
	}
	s, err := keyfile.Load(data, keyPassword())
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", flag, path, err)
	}
	return s, nil
}

// keyPassword returns what reads the password of an encrypted private key:
// the file GITFLEET_KEY_PASSWORD_FILE names, else GITFLEET_KEY_PASSWORD;
// nil when neither is set. (Never a flag: command lines are visible to
// every user of the machine.)
func keyPassword() func() ([]byte, error) {
	if f := os.Getenv("GITFLEET_KEY_PASSWORD_FILE"); f != "" {
		return func() ([]byte, error) {
			b, err := readFileLimit(f, 4096)
			if err != nil {
				return nil, fmt.Errorf("GITFLEET_KEY_PASSWORD_FILE: %w", err)
			}
			return bytes.TrimRight(b, "\r\n"), nil
		}
	}
	if pw, ok := os.LookupEnv("GITFLEET_KEY_PASSWORD"); ok {
		return func() ([]byte, error) { return []byte(pw), nil }
	}
	return nil
}

func loadVerifiers(flag string, paths []string) ([]*artifact.Verifier, error) {
	var vs []*artifact.Verifier
	for _, p := range paths {
		data, err := readKeyFile(flag, p)
		if err != nil {
			return nil, err
		}
		v, err := artifact.LoadVerifier(data)
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", flag, p, err)
		}
		vs = append(vs, v)
	}
	return vs, nil
}

// readFileLimit reads a whole file of at most limit bytes.
func readFileLimit(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, limit)
	}
	return data, nil
}

// writeFileAtomic writes path through fill: into a temporary file in the same
// directory, synced, then renamed into place (or, when overwrite is false,
// linked, which fails if path exists) and the directory synced. On any
// failure path is untouched and the temporary file removed.
func writeFileAtomic(path string, mode os.FileMode, overwrite bool, fill func(*os.File) error) error {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return fmt.Errorf("create temporary file next to %s: %w", path, err)
	}
	defer func() {
		tmp.Close()           // no-op error after the explicit Close
		os.Remove(tmp.Name()) // after a rename there is nothing to remove
	}()
	if err := tmp.Chmod(mode); err != nil {
		return err
	}
	if err := fill(tmp); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := install(tmp.Name(), path, overwrite); err != nil {
		return err
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync() // best effort: not every filesystem syncs directories
		d.Close()
	}
	return nil
}

// install moves the finished temporary file tmp to path. Without overwrite
// it hard-links, which fails atomically if path exists; on filesystems
// without hard links it checks and renames instead.
func install(tmp, path string, overwrite bool) error {
	if overwrite {
		return os.Rename(tmp, path)
	}
	err := os.Link(tmp, path)
	if err == nil || errors.Is(err, fs.ErrExist) {
		return err
	}
	if _, statErr := os.Lstat(path); statErr == nil {
		return fmt.Errorf("%s: %w", path, fs.ErrExist)
	}
	return os.Rename(tmp, path)
}

// failed marks err as an operational failure (exit 1) rather than a usage
// error (exit 2).
func failed(err error) error {
	if err == nil {
		return nil
	}
	return &exitError{code: 1, err: err}
}

// readResult is what reading a whole artifact learned.
type readResult struct {
	header      *artifact.Header
	compression artifact.Compression
	signed      bool
	signedBy    *artifact.Verifier
	// sizes of the payload files by fileKey. Only the sizes are kept: a
	// *artifact.File holds on to its payload's decompressor.
	sizes map[string]int64
}

func fileKey(payload int, name string) string { return fmt.Sprintf("%04d/%s", payload, name) }

// readArtifact reads the whole artifact at path, checking every digest and,
// with verifiers, the signature. Progress goes to stderr.
func readArtifact(path string, verifiers []*artifact.Verifier, stderr io.Writer, quiet bool, label string) (*readResult, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	prog := newProgress(stderr, quiet, label, st.Size())
	defer prog.Done()
	ar, err := artifact.NewReader(&countingReader{r: f, prog: prog}, artifact.ReaderOptions{Verifiers: verifiers})
	if err != nil {
		return nil, err
	}
	res := &readResult{
		header:      ar.Header(),
		compression: ar.HeaderCompression(),
		signed:      ar.Signed(),
		signedBy:    ar.SignedBy(),
		sizes:       map[string]int64{},
	}
	for {
		af, err := ar.Next()
		if err == io.EOF {
			return res, nil
		}
		if err != nil {
			return nil, err
		}
		if _, err := io.Copy(io.Discard, af); err != nil {
			return nil, err
		}
		res.sizes[fileKey(af.Payload, af.Name)] = af.Size
	}
}

func signatureText(r *readResult) string {
	switch {
	case r.signedBy != nil:
		return fmt.Sprintf("verified by %s key %s", r.signedBy.Algorithm(), r.signedBy.Fingerprint())
	case r.signed:
		return "present, not verified (give --key PUB to verify it)"
	}
	return "none"
}

func sortedStrings[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func listText(s []string) string {
	if len(s) == 0 {
		return "(none)"
	}
	return strings.Join(s, ", ")
}

// jsonText renders a value as compact JSON, for depends values and lists
// whose elements may contain commas.
func jsonText(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// printSummary writes the human summary of `artifact read`.
func printSummary(w io.Writer, r *readResult) error {
	h := r.header
	var b bytes.Buffer
	fmt.Fprintf(&b, "Mender artifact:\n")
	fmt.Fprintf(&b, "  Name: %s\n", h.Name())
	fmt.Fprintf(&b, "  Format: mender\n  Version: %d\n", artifact.FormatVersion)
	fmt.Fprintf(&b, "  Signature: %s\n", signatureText(r))
	if len(r.header.Augmented) > 0 {
		fmt.Fprintf(&b, "  Not covered by the signature: %s (refused wherever a key is required)\n", strings.Join(r.header.Augmented, ", "))
	}
	fmt.Fprintf(&b, "  Compression: %s\n", r.compression)
	fmt.Fprintf(&b, "  Compatible devices: %s\n", listText(h.DeviceTypes()))
	fmt.Fprintf(&b, "  Provides group: %s\n", listText(nonEmpty(h.Info.Provides.Group)))
	fmt.Fprintf(&b, "  Depends on one of artifact(s): %s\n", listText(h.Info.Depends.Names))
	fmt.Fprintf(&b, "  Depends on one of group(s): %s\n", listText(h.Info.Depends.Groups))
	fmt.Fprintf(&b, "  State scripts:")
	if len(h.Scripts) == 0 {
		fmt.Fprintf(&b, " (none)")
	}
	fmt.Fprintln(&b)
	for _, s := range h.Scripts {
		fmt.Fprintf(&b, "    %s\n", s.Name)
	}
	fmt.Fprintf(&b, "\nUpdates:\n")
	for _, p := range h.Payloads {
		fmt.Fprintf(&b, "  %d:\n    Type: %s\n", p.Index, p.Type)
		ti := p.TypeInfo
		fmt.Fprintf(&b, "    Provides:")
		if len(ti.Provides) == 0 {
			fmt.Fprintf(&b, " (none)")
		}
		fmt.Fprintln(&b)
		for _, k := range sortedStrings(ti.Provides) {
			fmt.Fprintf(&b, "      %s: %s\n", k, ti.Provides[k])
		}
		fmt.Fprintf(&b, "    Depends:")
		if len(ti.Depends) == 0 {
			fmt.Fprintf(&b, " (none)")
		}
		fmt.Fprintln(&b)
		for _, k := range sortedStrings(ti.Depends) {
			v := ti.Depends[k]
			if s, ok := v.(string); ok {
				fmt.Fprintf(&b, "      %s: %s\n", k, s)
			} else {
				fmt.Fprintf(&b, "      %s: %s\n", k, jsonText(v))
			}
		}
		fmt.Fprintf(&b, "    Clears provides: %s\n", listText(ti.ClearsProvides))
		fmt.Fprintf(&b, "    Meta-data:")
		if len(p.MetaData) == 0 {
			fmt.Fprintf(&b, " (none)\n")
		} else {
			md, err := json.MarshalIndent(p.MetaData, "      ", "  ")
			if err != nil {
				return fmt.Errorf("payload %d meta-data: %w", p.Index, err)
			}
			fmt.Fprintf(&b, "\n      %s\n", md)
		}
		fmt.Fprintf(&b, "    Files:")
		if len(p.Files) == 0 {
			fmt.Fprintf(&b, " (none)")
		}
		fmt.Fprintln(&b)
		for _, fi := range p.Files {
			fmt.Fprintf(&b, "      name:     %s\n", fi.Name)
			if size, ok := r.sizes[fileKey(p.Index, fi.Name)]; ok {
				fmt.Fprintf(&b, "      size:     %d\n", size)
			}
			fmt.Fprintf(&b, "      checksum: %s\n", fi.Digest)
		}
	}
	if a := h.Augment; a != nil {
		fmt.Fprintf(&b, "\nAugmented header (not covered by the signature):\n")
		for i, p := range a.Payloads {
			fmt.Fprintf(&b, "  %d: type %s, depends %s\n", i, p.Type, jsonText(a.Depends[i]))
		}
	}
	_, err := w.Write(b.Bytes())
	return err
}

func nonEmpty(s string) []string {
	if s == "" {
		return nil
	}
	return []string{s}
}

// summaryJSON is `artifact read --json`: the header as artifact.Header
// renders it, with the size of every file added, plus what the reader learned
// about the signature and compression.
func summaryJSON(r *readResult) ([]byte, error) {
	raw, err := json.Marshal(r.header)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var out map[string]any
	if err := dec.Decode(&out); err != nil {
		return nil, err
	}
	payloads, _ := out["payloads"].([]any)
	for i, p := range payloads {
		pm, _ := p.(map[string]any)
		files, _ := pm["files"].([]any)
		for _, f := range files {
			fm, _ := f.(map[string]any)
			name, _ := fm["name"].(string)
			if size, ok := r.sizes[fileKey(i, name)]; ok {
				fm["size"] = size
			}
		}
	}
	sig := map[string]any{"status": "none"}
	switch {
	case r.signedBy != nil:
		sig = map[string]any{"status": "verified", "algorithm": r.signedBy.Algorithm(), "key_fingerprint": r.signedBy.Fingerprint()}
	case r.signed:
		sig["status"] = "present"
	}
	if len(r.header.Augmented) > 0 {
		sig["not_covered"] = r.header.Augmented
	}
	out["signature"] = sig
	out["format"] = "mender"
	out["version"] = artifact.FormatVersion
	out["compression"] = r.compression
	return json.MarshalIndent(out, "", "  ")
}

func newArtifactReadCmd() *cobra.Command {
	var (
		keys   []string
		asJSON bool
		quiet  bool
	)
	cmd := &cobra.Command{
		Use:   "read FILE",
		Short: "Check an artifact end to end and summarise it",
		Long: `Read a whole artifact, check the digest of every part against the manifest
and, with --key, the signature; then print a summary like mender-artifact
read's (--json for a machine-readable one).

Exit status 1 means the artifact is damaged, tampered with, or not signed by
any of the given keys; nothing is printed to stdout then.`,
		Args: exactArgs(1, "FILE: the artifact to read"),
		RunE: func(cmd *cobra.Command, args []string) error {
			verifiers, err := loadVerifiers("-k/--key", keys)
			if err != nil {
				return err
			}
			res, err := readArtifact(args[0], verifiers, cmd.ErrOrStderr(), quiet, "reading")
			if err != nil {
				return failed(fmt.Errorf("read %s: %w", args[0], err))
			}
			if asJSON {
				out, err := summaryJSON(res)
				if err != nil {
					return failed(fmt.Errorf("read %s: %w", args[0], err))
				}
				_, err = fmt.Fprintf(cmd.OutOrStdout(), "%s\n", out)
				return err
			}
			return printSummary(cmd.OutOrStdout(), res)
		},
	}
	cmd.Flags().StringArrayVarP(&keys, "key", "k", nil, "public key `PEM` file that must have signed the artifact; repeat to trust several")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON instead of text")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "no progress line")
	return cmd
}

func newArtifactVerifyCmd() *cobra.Command {
	var (
		keys  []string
		quiet bool
	)
	cmd := &cobra.Command{
		Use:   "verify FILE --key PUB [--key PUB2 ...]",
		Short: "Check an artifact's signature and every digest",
		Long: `Read a whole artifact and check that one of the given public keys signed it
and that every part matches the signed manifest. Prints one line and exits 0
when it does; exits 1 with the reason when it does not.`,
		Args: exactArgs(1, "FILE: the artifact to verify"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(keys) == 0 {
				return errors.New("artifact verify: -k/--key is required: give the public key (PEM) the artifact should be signed with")
			}
			verifiers, err := loadVerifiers("-k/--key", keys)
			if err != nil {
				return err
			}
			res, err := readArtifact(args[0], verifiers, cmd.ErrOrStderr(), quiet, "verifying")
			if err != nil {
				return failed(fmt.Errorf("verify %s: %w", args[0], err))
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "verified: %s signed by %s key %s\n",
				res.header.Name(), res.signedBy.Algorithm(), res.signedBy.Fingerprint())
			return err
		},
	}
	cmd.Flags().StringArrayVarP(&keys, "key", "k", nil, "trusted public key `PEM` file; repeat to trust several")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "no progress line")
	return cmd
}

func newArtifactSignCmd() *cobra.Command {
	var (
		key, output string
		quiet       bool
	)
	cmd := &cobra.Command{
		Use:   "sign FILE --key PRIVATE [-o OUT]",
		Short: "Sign an artifact, replacing any signature it has",
		Long: `Check every digest of an artifact, then sign its manifest with the private
key, replacing any signature it had. The result replaces FILE, or goes to
OUT with -o; it is written to a temporary file first, so FILE is never left
half-written.

` + extensionsNote,
		Args: exactArgs(1, "FILE: the artifact to sign"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if key == "" {
				return errors.New("artifact sign: -k/--key is required: give the private key (PEM) to sign with")
			}
			signer, err := loadSigner("-k/--key", key)
			if err != nil {
				return err
			}
			in, out := args[0], args[0]
			if output != "" {
				out = output
			}
			if err := signFile(in, out, signer, cmd.ErrOrStderr(), quiet); err != nil {
				return failed(fmt.Errorf("sign %s: %w", in, err))
			}
			fp := signer.Verifier().Fingerprint()
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "signed: %s with %s key %s\n", out, signer.Algorithm(), fp)
			return err
		},
	}
	cmd.Flags().StringVarP(&key, "key", "k", "", "private key `PEM` file (PKCS#8, SEC1 or PKCS#1) to sign with")
	cmd.Flags().StringVarP(&output, "output-path", "o", "", "write the signed artifact to `OUT` instead of replacing FILE")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "no progress line")
	return cmd
}

// signFile verifies the artifact at in, signs it into a temporary file, checks
// the new signature and header, and renames the result to out.
func signFile(in, out string, signer *artifact.Signer, stderr io.Writer, quiet bool) error {
	if _, err := readArtifact(in, nil, stderr, quiet, "verifying"); err != nil {
		return err
	}
	src, err := os.Open(in)
	if err != nil {
		return err
	}
	defer src.Close()
	st, err := src.Stat()
	if err != nil {
		return err
	}
	return writeFileAtomic(out, st.Mode().Perm(), true, func(tmp *os.File) error {
		prog := newProgress(stderr, quiet, "signing", st.Size())
		err := artifact.Sign(&countingReader{r: src, prog: prog}, tmp, signer)
		prog.Done()
		if err != nil {
			return err
		}
		// Check what was written before it replaces anything: the
		// signature and the header (the payloads were copied unchanged).
		if _, err := tmp.Seek(0, io.SeekStart); err != nil {
			return err
		}
		if _, err := artifact.NewReader(tmp, artifact.ReaderOptions{Verifiers: []*artifact.Verifier{signer.Verifier()}}); err != nil {
			return fmt.Errorf("check signed artifact: %w", err)
		}
		return nil
	})
}

// exactArgs is cobra.ExactArgs with an error that says what is missing.
func exactArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return fmt.Errorf("%s: want %d argument (%s), got %d; see %s --help", cmd.CommandPath(), n, what, len(args), cmd.CommandPath())
		}
		return nil
	}
}

// writeOptions are the flags of `artifact write rootfs-image|module-image`,
// named as mender-artifact 3.9 names them.
type writeOptions struct {
	kind           string // rootfs-image or module-image
	name           string
	deviceTypes    []string
	moduleType     string
	files          []string
	output         string
	key            string
	provides       []string
	depends        []string
	clearsProvides []string
	metaData       string
	expectRoot     string
	expect         []string
	providesGroup  string
	dependsGroups  []string
	nameDepends    []string
	scripts        []string
	compression    string
	software       artifact.Software
	quiet          bool
}

func newWriteCmd(kind string) *cobra.Command {
	o := &writeOptions{kind: kind}
	module := kind == "module-image"
	cmd := &cobra.Command{
		Use:   kind + " -n NAME -t DEVICE_TYPE -f FILE [flags]",
		Short: "Write a " + kind + " artifact",
		Long: `Write a ` + kind + ` artifact. The flags are mender-artifact 3.9's, so
existing build scripts need only the command name changed. The artifact is
written to a temporary file next to the output and renamed into place only
when complete.

--depends given several times with the same KEY makes a list of values
(mender-artifact keeps only the last).

` + extensionsNote,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return fmt.Errorf("%s: unexpected argument %q: payload files are given with -f/--file", cmd.CommandPath(), args[0])
			}
			return o.run(cmd)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.name, "artifact-name", "n", "", "`NAME` of the artifact (required)")
	f.StringArrayVarP(&o.deviceTypes, "device-type", "t", nil, "compatible `DEVICE_TYPE` (required); repeat for several")
	if module {
		f.StringVarP(&o.moduleType, "type", "T", "", "payload `TYPE`: the name of the update module (required)")
		f.StringArrayVarP(&o.files, "file", "f", nil, "payload `FILE`; repeat for several")
	} else {
		f.StringArrayVarP(&o.files, "file", "f", nil, "the root filesystem image `FILE` (required, exactly one)")
	}
	f.StringVarP(&o.metaData, "meta-data", "m", "", "JSON `FILE` with the payload's meta-data (an object)")
	f.StringArrayVar(&o.expect, "expect", nil, "absolute `PATH` (as on the device) of a file the new software changes and fileChange checks watch: its sha256, read under --expect-root, goes into the meta-data so the agent takes it as the new baseline instead of alerting; repeatable")
	f.StringVar(&o.expectRoot, "expect-root", "", "`DIR` holding the root filesystem tree the image is built from, where --expect files are read")
	f.StringVarP(&o.output, "output-path", "o", "", "artifact `FILE` to write (default NAME.mender)")
	f.StringVarP(&o.key, "key", "k", "", "private key `PEM` file (PKCS#8, SEC1 or PKCS#1) to sign the artifact with")
	f.StringArrayVarP(&o.provides, "provides", "p", nil, "`KEY:VALUE` added to the payload's artifact_provides; repeatable")
	f.StringArrayVarP(&o.depends, "depends", "d", nil, "`KEY:VALUE` added to the payload's artifact_depends; repeatable, a repeated KEY makes a list")
	f.StringArrayVar(&o.clearsProvides, "clears-provides", nil, "`PATTERN` added to the payload's clears_artifact_provides; repeatable")
	f.StringVarP(&o.providesGroup, "provides-group", "g", "", "the artifact `GROUP` the artifact provides")
	f.StringArrayVarP(&o.dependsGroups, "depends-groups", "G", nil, "artifact `GROUP` the device must be in; repeatable")
	f.StringArrayVarP(&o.nameDepends, "artifact-name-depends", "N", nil, "artifact `NAME` the device must have installed; repeatable")
	f.StringArrayVarP(&o.scripts, "script", "s", nil, "state script `FILE`, named by its base name (e.g. ArtifactInstall_Enter_00); repeatable")
	f.StringVar(&o.compression, "compression", "gzip", "`COMPRESSION` of the header and payloads: none, gzip, zstd or xz (lzma)")
	f.StringVar(&o.software.Name, "software-name", "", "store the version under rootfs-image.`NAME`.version")
	f.StringVar(&o.software.Version, "software-version", "", "software `VERSION` to provide (default the artifact name)")
	f.StringVar(&o.software.Filesystem, "software-filesystem", "", "`NAME` to use instead of rootfs-image in the version key")
	f.BoolVar(&o.software.NoDefault, "no-default-software-version", false, "do not add the software version provides")
	f.BoolVar(&o.software.NoDefaultClears, "no-default-clears-provides", false, "do not add the default clears_artifact_provides")
	f.BoolVarP(&o.quiet, "quiet", "q", false, "no progress line and no notes")
	f.BoolVar(&o.quiet, "no-progress", false, "same as --quiet (mender-artifact's name)")
	f.SortFlags = false
	return cmd
}

func (o *writeOptions) run(cmd *cobra.Command) error {
	spec, payloadBytes, err := o.spec()
	if err != nil {
		return fmt.Errorf("%s:\n  %w", cmd.CommandPath(), indent(err))
	}
	out := o.output
	if out == "" {
		out = spec.Name + ".mender"
	}
	if note := extensionUse(spec); note != "" && !o.quiet {
		fmt.Fprintf(cmd.ErrOrStderr(), "note: %s: mender-artifact 3.9 and stock Mender 3.x clients cannot read this artifact\n", note)
	}
	prog := newProgress(cmd.ErrOrStderr(), o.quiet, "writing "+filepath.Base(out), payloadBytes)
	// Write reads every file twice; show progress in payload bytes.
	spec.Progress = func(done, _ int64) { prog.Update(done / 2) }
	err = writeFileAtomic(out, 0o644, true, func(tmp *os.File) error {
		return artifact.Write(cmd.Context(), tmp, spec)
	})
	prog.Done()
	if err != nil {
		return failed(fmt.Errorf("write %s: %w", out, err))
	}
	signed := "unsigned"
	if spec.Signer != nil {
		signed = fmt.Sprintf("signed with %s key %s", spec.Signer.Algorithm(), spec.Signer.Verifier().Fingerprint())
	}
	_, err = fmt.Fprintf(cmd.OutOrStdout(), "wrote %s (%s, %s)\n", out, spec.Compression, signed)
	return err
}

// extensionUse names the Gitfleet extensions spec uses, or returns "".
func extensionUse(spec artifact.Spec) string {
	var used []string
	if spec.Compression == artifact.Zstd {
		used = append(used, "zstd compression")
	}
	if spec.Signer != nil && spec.Signer.Algorithm() == artifact.Ed25519 {
		used = append(used, "ed25519 signature")
	}
	return strings.Join(used, " and ")
}

// indent puts every line after the first of a joined error under the first.
func indent(err error) error {
	return errors.New(strings.ReplaceAll(err.Error(), "\n", "\n  "))
}

// spec turns the flags into an artifact.Spec, reporting every problem at
// once. It also returns the total size of the payload files.
func (o *writeOptions) spec() (artifact.Spec, int64, error) {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }

	spec := artifact.Spec{
		Name:          o.name,
		DeviceTypes:   o.deviceTypes,
		Group:         o.providesGroup,
		DependsNames:  o.nameDepends,
		DependsGroups: o.dependsGroups,
	}
	if o.name == "" {
		bad("-n/--artifact-name is required: the name devices will report once installed")
	} else if o.output == "" && strings.ContainsAny(o.name, `/\`) {
		bad("-n/--artifact-name %q contains a path separator: give the output file with -o/--output-path", o.name)
	}
	if len(o.deviceTypes) == 0 {
		bad("-t/--device-type is required: give each compatible device type (e.g. -t raspberrypi4)")
	}
	for _, t := range o.deviceTypes {
		if strings.TrimSpace(t) == "" {
			bad("-t/--device-type: empty device type")
		}
	}

	var files []artifact.FileSpec
	var size int64
	for _, path := range o.files {
		st, err := os.Stat(path)
		switch {
		case err != nil:
			bad("-f/--file: %v", err)
		case !st.Mode().IsRegular():
			bad("-f/--file %s: not a regular file", path)
		default:
			size += st.Size()
			files = append(files, artifact.FileSpec{Path: path})
		}
	}
	module := o.kind == "module-image"
	switch {
	case !module && len(o.files) != 1:
		bad("-f/--file: a rootfs-image takes exactly one file, got %d (use module-image for several files)", len(o.files))
	case module && o.moduleType == "":
		bad("-T/--type is required: the name of the update module that installs the payload (e.g. -T single-file)")
	}

	provides := map[string]string{}
	for _, kv := range o.provides {
		k, v, err := parseKV("-p/--provides", kv)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		switch k {
		case "artifact_name":
			bad("-p/--provides %s: the artifact name is set with -n/--artifact-name", kv)
			continue
		case "artifact_group":
			bad("-p/--provides %s: the artifact group is set with -g/--provides-group", kv)
			continue
		}
		if old, dup := provides[k]; dup {
			bad("-p/--provides: %s given twice (%q and %q): give each key once", k, old, v)
		}
		provides[k] = v
	}
	var dependKeys []string
	dependVals := map[string][]string{}
	for _, kv := range o.depends {
		k, v, err := parseKV("-d/--depends", kv)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if _, seen := dependVals[k]; !seen {
			dependKeys = append(dependKeys, k)
		}
		dependVals[k] = append(dependVals[k], v)
	}
	var metaData map[string]any
	if o.metaData != "" {
		md, err := readMetaData(o.metaData)
		if err != nil {
			errs = append(errs, err)
		}
		metaData = md
	}
	switch {
	case len(o.expect) > 0 && o.expectRoot == "":
		bad("--expect needs --expect-root: the directory holding the root filesystem tree the files are read from")
	case len(o.expect) == 0 && o.expectRoot != "":
		bad("--expect-root without --expect: name the files the new software changes with --expect PATH")
	case len(o.expect) > 0:
		digests, err := artifact.ExpectedDigests(o.expectRoot, o.expect)
		if err != nil {
			bad("--expect: %v", err)
			break
		}
		if _, dup := metaData[artifact.ExpectedDigestsKey]; dup {
			bad("--expect and the -m/--meta-data file both set %q: use one of them", artifact.ExpectedDigestsKey)
		}
		if metaData == nil {
			metaData = map[string]any{}
		}
		metaData[artifact.ExpectedDigestsKey] = digests
	}
	scriptNames := map[string]bool{}
	for _, path := range o.scripts {
		data, err := readFileLimit(path, maxHeaderFile)
		if err != nil {
			bad("-s/--script: %v", err)
			continue
		}
		name := filepath.Base(path)
		if scriptNames[name] {
			bad("-s/--script: two scripts named %s", name)
		}
		scriptNames[name] = true
		spec.Scripts = append(spec.Scripts, artifact.Script{Name: name, Data: data})
	}

	comp, err := artifact.ParseCompression(o.compression)
	if err != nil {
		bad("--compression: %v", err)
	}
	spec.Compression = comp
	if o.key != "" {
		if spec.Signer, err = loadSigner("-k/--key", o.key); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return spec, 0, errors.Join(errs...)
	}

	var p artifact.PayloadSpec
	if module {
		p = artifact.ModuleImage(o.moduleType, files, o.name, o.software)
	} else {
		p = artifact.RootfsImage(files[0], o.name, o.software)
	}
	for k, v := range provides {
		p.Provides[k] = v
	}
	if len(dependKeys) > 0 {
		p.Depends = map[string]any{}
		for _, k := range dependKeys {
			if vs := dependVals[k]; len(vs) == 1 {
				p.Depends[k] = vs[0]
			} else {
				p.Depends[k] = vs
			}
		}
	}
	p.ClearsProvides = dedupe(append(append([]string(nil), o.clearsProvides...), p.ClearsProvides...))
	p.MetaData = metaData
	spec.Payloads = []artifact.PayloadSpec{p}
	return spec, size, nil
}

// parseKV splits a KEY:VALUE flag value at the first colon.
func parseKV(flag, s string) (string, string, error) {
	k, v, ok := strings.Cut(s, ":")
	if !ok || strings.TrimSpace(k) == "" {
		return "", "", fmt.Errorf("%s %q: want KEY:VALUE (e.g. %s rootfs-image.version:1.2)", flag, s, flag[:2])
	}
	return k, v, nil
}

// readMetaData reads a payload's meta-data: one JSON object. Numbers keep
// their text, so 12345678901234567890 is not rounded to a float.
func readMetaData(path string) (map[string]any, error) {
	data, err := readFileLimit(path, maxHeaderFile)
	if err != nil {
		return nil, fmt.Errorf("-m/--meta-data: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("-m/--meta-data %s: not valid JSON: %w", path, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("-m/--meta-data %s: more than one JSON value", path)
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("-m/--meta-data %s: must be a JSON object ({...}), not %s", path, jsonKind(v))
	}
	return m, nil
}

func jsonKind(v any) string {
	switch v.(type) {
	case []any:
		return "an array"
	case string:
		return "a string"
	case json.Number:
		return "a number"
	case bool:
		return "a boolean"
	case nil:
		return "null"
	}
	return fmt.Sprintf("%T", v)
}

func dedupe(s []string) []string {
	seen := map[string]bool{}
	out := s[:0]
	for _, v := range s {
		if !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}
