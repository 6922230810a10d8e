package artifact

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
)

// FormatVersion is the only artifact format version Gitfleet reads and writes.
const FormatVersion = 3

// Errors a Reader returns. They are wrapped with the entry and detail; test
// with errors.Is.
var (
	ErrFormat             = errors.New("artifact: malformed artifact")
	ErrVersion            = errors.New("artifact: unsupported format or version")
	ErrOrder              = errors.New("artifact: entry out of order")
	ErrUnexpected         = errors.New("artifact: unexpected entry")
	ErrPath               = errors.New("artifact: unsafe path")
	ErrManifest           = errors.New("artifact: manifest mismatch")
	ErrDigest             = errors.New("artifact: digest mismatch")
	ErrSignatureMissing   = errors.New("artifact: signature missing")
	ErrSignature          = errors.New("artifact: signature does not verify")
	ErrTooLarge           = errors.New("artifact: entry exceeds limit")
	ErrTruncated          = errors.New("artifact: truncated")
	ErrUnsupportedKey     = errors.New("artifact: unsupported key")
	ErrUnknownCompression = errors.New("artifact: unknown compression")
	// ErrAugmented: the artifact carries augmented content (manifest-augment,
	// header-augment, payload files listed only in manifest-augment), which
	// no signature covers, and a signature is required. See [Header.Covered].
	ErrAugmented = errors.New("artifact: augmented content is not covered by the signature")
)

// Limits bound everything a Reader holds in memory. The zero value of a field
// means its default.
type Limits struct {
	// Manifest is the largest manifest (and manifest-augment) accepted.
	// Default 1 MiB: about 10,000 payload files.
	Manifest int64
	// Signature is the largest manifest.sig accepted. Default 16 KiB.
	Signature int64
	// HeaderEntry is the largest single file inside the header archive
	// (header-info, a type-info, a meta-data, a state script). Default 1 MiB.
	HeaderEntry int64
	// Header is the largest header archive, compressed as stored and also
	// once decompressed. Default 16 MiB.
	Header int64
	// Payloads is the largest number of payloads. Default 64.
	Payloads int
	// Trailer is how many bytes of zero padding may follow the end of the
	// outer archive (tar tools pad to a record size). Default 64 KiB.
	Trailer int64
}

// DefaultLimits are the limits a zero Limits stands for.
var DefaultLimits = Limits{
	Manifest:    1 << 20,
	Signature:   16 << 10,
	HeaderEntry: 1 << 20,
	Header:      16 << 20,
	Payloads:    64,
	Trailer:     64 << 10,
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits
	if l.Manifest > 0 {
		d.Manifest = l.Manifest
	}
	if l.Signature > 0 {
		d.Signature = l.Signature
	}
	if l.HeaderEntry > 0 {
		d.HeaderEntry = l.HeaderEntry
	}
	if l.Header > 0 {
		d.Header = l.Header
	}
	if l.Payloads > 0 {
		d.Payloads = l.Payloads
	}
	if l.Trailer > 0 {
		d.Trailer = l.Trailer
	}
	return d
}

// versionInfo is the content of the version entry.
type versionInfo struct {
	Format  string `json:"format"`
	Version int    `json:"version"`
}

// HeaderInfo is header-info: the payload types and the artifact-wide
// provides and depends.
type HeaderInfo struct {
	Payloads []PayloadType    `json:"payloads"`
	Provides ArtifactProvides `json:"artifact_provides"`
	Depends  ArtifactDepends  `json:"artifact_depends"`
}

// PayloadType names the update type of one payload: "rootfs-image" or the
// name of an update module.
type PayloadType struct {
	Type string `json:"type"`
}

// ArtifactProvides is what installing the artifact makes the device provide.
type ArtifactProvides struct {
	Name  string `json:"artifact_name"`
	Group string `json:"artifact_group,omitempty"`
}

// ArtifactDepends is what a device must provide for the artifact to install:
// one of DeviceTypes, and if set, one of Names and one of Groups.
type ArtifactDepends struct {
	Names       []string `json:"artifact_name,omitempty"`
	DeviceTypes []string `json:"device_type"`
	Groups      []string `json:"artifact_group,omitempty"`
}

// TypeInfo is headers/NNNN/type-info: a payload's own provides and depends.
// Depends values are strings or lists of strings, as in mender-artifact.
type TypeInfo struct {
	Type           string            `json:"type"`
	Provides       map[string]string `json:"artifact_provides,omitempty"`
	Depends        map[string]any    `json:"artifact_depends,omitempty"`
	ClearsProvides []string          `json:"clears_artifact_provides,omitempty"`
}

// Script is a state script carried in the header (scripts/NAME).
type Script struct {
	Name string
	Data []byte
}

// Payload is what the header says about one payload.
type Payload struct {
	Index    int
	Type     string
	TypeInfo TypeInfo
	// MetaData is the payload's meta-data JSON object, nil when absent or empty.
	MetaData map[string]any
	// Files lists the payload's files in manifest order.
	Files []FileInfo
}

// FileInfo is a payload file as the manifest lists it.
type FileInfo struct {
	Name   string // base name inside data/NNNN
	Digest Digest
}

// Header is everything an artifact says before its payloads.
type Header struct {
	Info     HeaderInfo
	Payloads []Payload
	Scripts  []Script
	// Augment holds what header-augment said, if present. It is covered by
	// manifest-augment only, never by the signature.
	Augment *Augment
	// Augmented names the parts of the artifact that the signed manifest
	// does not cover: "manifest-augment" itself, then every entry it lists
	// (header-augment.tar*, data/NNNN/<file>). Empty for an artifact whose
	// every byte the manifest covers.
	Augmented []string
}

// Covered is the rule for an artifact whose signature is required: every
// byte that can reach an installer, a state script or an update module must
// be covered by the signed manifest. It returns nil when h has no augmented
// parts, or ErrAugmented naming them.
//
// Mender meant augmented artifacts (manifest-augment, header-augment) for
// delta updates, whose payload is rewritten after signing; Gitfleet does
// not support delta updates with signatures, so no augmented part is
// trusted when a key is required. A Reader given Verifiers (or
// RequireCovered) applies this rule itself; callers that check signatures
// on their own (detached signatures) call Covered.
func (h *Header) Covered() error { return coveredErr(h.Augmented) }

func coveredErr(augmented []string) error {
	if len(augmented) == 0 {
		return nil
	}
	parts := make([]string, 0, len(augmented))
	for _, p := range augmented {
		parts = append(parts, clip(p))
		if len(parts) == 8 && len(augmented) > 8 {
			parts = append(parts, fmt.Sprintf("and %d more", len(augmented)-8))
			break
		}
	}
	return fmt.Errorf("%w: the artifact carries %s; augmented artifacts are only for delta updates, which Gitfleet does not support with signatures: rebuild the artifact without augment options (mender-artifact write --augment-*), so the signed manifest lists every file", ErrAugmented, strings.Join(parts, ", "))
}

// Augment is the unsigned augmented header (delta updates). Only payload
// types and type-info artifact_depends are accepted there.
type Augment struct {
	Payloads []PayloadType
	Depends  map[int]map[string]any
}

// Name returns the artifact name.
func (h *Header) Name() string { return h.Info.Provides.Name }

// DeviceTypes returns the compatible device types.
func (h *Header) DeviceTypes() []string { return h.Info.Depends.DeviceTypes }

// Provides returns what a device provides after installing the artifact,
// before clears_artifact_provides of the previous artifact are applied:
// every payload's type-info provides, then artifact_name and artifact_group
// from header-info (a Reader refuses type-info that provides those two).
func (h *Header) Provides() map[string]string {
	p := map[string]string{}
	for _, pl := range h.Payloads {
		for k, v := range pl.TypeInfo.Provides {
			p[k] = v
		}
	}
	p["artifact_name"] = h.Info.Provides.Name
	delete(p, "artifact_group")
	if h.Info.Provides.Group != "" {
		p["artifact_group"] = h.Info.Provides.Group
	}
	return p
}

// reservedProvides are the provides only header-info may set.
var reservedProvides = []string{"artifact_name", "artifact_group"}

func checkTypeInfoProvides(where string, provides map[string]string) error {
	for _, k := range reservedProvides {
		if _, ok := provides[k]; ok {
			return fmt.Errorf("%w: %s provides %s, which only header-info may set (use -n/--artifact-name or -g/--provides-group)", ErrFormat, where, k)
		}
	}
	return nil
}

// Depends returns every payload's type-info depends merged, values as lists.
func (h *Header) Depends() map[string][]string {
	d := map[string][]string{}
	for _, pl := range h.Payloads {
		for k, v := range pl.TypeInfo.Depends {
			d[k] = append(d[k], dependValues(v)...)
		}
	}
	return d
}

func dependValues(v any) []string {
	switch v := v.(type) {
	case string:
		return []string{v}
	case []string:
		return v
	case []any:
		out := make([]string, 0, len(v))
		for _, e := range v {
			out = append(out, fmt.Sprint(e))
		}
		return out
	default:
		return []string{fmt.Sprint(v)}
	}
}

// validateHeaderInfo checks the parts of header-info the rest depends on.
func validateHeaderInfo(hi *HeaderInfo, lim Limits) error {
	if len(hi.Payloads) == 0 {
		return fmt.Errorf("%w: header-info lists no payloads", ErrFormat)
	}
	if len(hi.Payloads) > lim.Payloads {
		return fmt.Errorf("%w: header-info lists %d payloads, limit %d", ErrTooLarge, len(hi.Payloads), lim.Payloads)
	}
	if hi.Provides.Name == "" {
		return fmt.Errorf("%w: header-info has no artifact_provides.artifact_name", ErrFormat)
	}
	if len(hi.Depends.DeviceTypes) == 0 {
		return fmt.Errorf("%w: header-info has no artifact_depends.device_type", ErrFormat)
	}
	for i, p := range hi.Payloads {
		if p.Type == "" {
			return fmt.Errorf("%w: header-info payload %d has no type", ErrFormat, i)
		}
	}
	return nil
}

// decodeJSON decodes strict JSON into v: one value, nothing after it.
func decodeJSON(name string, data []byte, v any) error {
	dec := json.NewDecoder(strings.NewReader(string(data)))
	// Numbers stay as written (json.Number): meta-data is passed on to
	// update modules, and float64 would round large integers.
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrFormat, name, err)
	}
	if dec.More() {
		return fmt.Errorf("%w: %s: data after the JSON value", ErrFormat, name)
	}
	return nil
}

func sortedKeys[M ~map[string]V, V any](m M) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
