// Package artifacttest builds artifacts for the tests of other packages,
// including hostile ones that package artifact's writer refuses to make.
// It is imported by tests only.
package artifacttest

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"sort"

	"github.com/gitfleet/gitfleet/artifact"
)

// AugmentedOptions describe an artifact with augmented content.
type AugmentedOptions struct {
	// Name is the artifact_name. Default "augmented-1".
	Name string
	// DeviceType is the one compatible device type. Default "sim".
	DeviceType string
	// Type is the payload type (an update module). Default "script".
	Type string
	// Signed are the payload files the signed manifest lists.
	Signed map[string][]byte
	// Augmented are payload files listed only in manifest-augment, which
	// no signature covers.
	Augmented map[string][]byte
	// Signer signs the manifest; nil leaves the artifact unsigned.
	Signer *artifact.Signer
}

// Augmented builds, by hand, the attack on an artifact signature that
// relies on manifest-augment: an artifact whose signed manifest covers
// version, the header and the Signed files, and whose unsigned
// manifest-augment lists the Augmented files, which its one payload
// carries too. Archives are uncompressed.
func Augmented(o AugmentedOptions) ([]byte, error) {
	if o.Name == "" {
		o.Name = "augmented-1"
	}
	if o.DeviceType == "" {
		o.DeviceType = "sim"
	}
	if o.Type == "" {
		o.Type = "script"
	}
	version := []byte(`{"format":"mender","version":3}`)
	info, err := json.Marshal(map[string]any{
		"payloads":          []map[string]string{{"type": o.Type}},
		"artifact_provides": map[string]string{"artifact_name": o.Name},
		"artifact_depends":  map[string][]string{"device_type": {o.DeviceType}},
	})
	if err != nil {
		return nil, err
	}
	typeInfo, err := json.Marshal(map[string]any{
		"type":              o.Type,
		"artifact_provides": map[string]string{"rootfs-image." + o.Type + ".version": o.Name},
	})
	if err != nil {
		return nil, err
	}
	header, err := tarOf([]entry{{"header-info", info}, {"headers/0000/type-info", typeInfo}})
	if err != nil {
		return nil, err
	}
	signed, augmented := sorted(o.Signed), sorted(o.Augmented)
	data, err := tarOf(append(append([]entry{}, signed...), augmented...))
	if err != nil {
		return nil, err
	}
	manifest := manifestOf(append([]entry{{"version", version}, {"header.tar", header}}, prefixed(signed)...))
	outer := []entry{{"version", version}, {"manifest", manifest}}
	if o.Signer != nil {
		sig, err := o.Signer.Sign(manifest)
		if err != nil {
			return nil, err
		}
		outer = append(outer, entry{"manifest.sig", sig})
	}
	if len(augmented) > 0 {
		outer = append(outer, entry{"manifest-augment", manifestOf(prefixed(augmented))})
	}
	outer = append(outer, entry{"header.tar", header}, entry{"data/0000.tar", data})
	return tarOf(outer)
}

type entry struct {
	name string
	data []byte
}

func sorted(files map[string][]byte) []entry {
	out := make([]entry, 0, len(files))
	for name, data := range files {
		out = append(out, entry{name, data})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

func prefixed(files []entry) []entry {
	out := make([]entry, len(files))
	for i, f := range files {
		out[i] = entry{"data/0000/" + f.name, f.data}
	}
	return out
}

func manifestOf(entries []entry) []byte {
	var b bytes.Buffer
	for _, e := range entries {
		fmt.Fprintf(&b, "%x  %s\n", sha256.Sum256(e.data), e.name)
	}
	return b.Bytes()
}

func tarOf(entries []entry) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Typeflag: tar.TypeReg, Name: e.name, Size: int64(len(e.data)), Mode: 0o755}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
