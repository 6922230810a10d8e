// Package configartifact generates the configuration artifacts a stock
// Mender client installs with the Mender Configure update module, from the
// configuration the fleet repository declares for a device.
//
// # The format, as Mender's server makes it
//
// Mender's deployments service generates a configuration artifact on
// demand, when the device downloads it (app.GenerateConfigurationImage in
// mendersoftware/deployments), and this package writes the same thing:
//
//   - a Mender Artifact v3 with one module-image payload of type
//     "mender-configure" and no payload files;
//   - the configuration, a flat JSON object of strings, as the payload's
//     meta-data: the client hands it to the module as header/meta-data,
//     and the module (mender-configure-module, src/mender-configure) copies
//     that file to /var/lib/mender-configure/device-config.json before it
//     runs the apply-device-config.d scripts;
//   - artifact_provides.artifact_name = the artifact name; the payload
//     provides data-partition.mender-configure.version = the artifact name
//     and clears data-partition.mender-configure.*; the only dependency is
//     the device type of the device it is made for;
//   - no compression of the header.
//
// Two things differ, on purpose. The name: Mender names the artifact
// "configuration-<deployment UUID>"; here it is [Name] of the
// configuration's digest, so that the same configuration has the same name
// for every device and on every controller replica, and a device's
// provides say which configuration it installed without asking the store.
// The signature: Mender's server leaves configuration artifacts unsigned,
// so a device that verifies signatures (ArtifactVerifyKey) refuses them;
// [Build] signs them when given a key, so such devices accept them.
//
// Generating is cheap (a few kilobytes and one signature), but many
// devices share one configuration: a [Cache] keeps the artifacts of
// recent (digest, device type) pairs.
package configartifact

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/gitfleet/gitfleet/artifact"
	"github.com/gitfleet/gitfleet/device/devconfig"
)

// Type is the update module type of configuration artifacts.
const Type = "mender-configure"

// ProvidesKey is the provide a configuration artifact sets to its name,
// and ClearsProvides what installing one clears first (as Mender's server
// writes them).
const (
	ProvidesKey    = "data-partition.mender-configure.version"
	ClearsProvides = "data-partition.mender-configure.*"
)

// NamePrefix starts the name of every configuration artifact.
const NamePrefix = "configuration-"

// nameHexLen is how many hex digits of the digest a name carries: 64 bits,
// plenty to tell one device's configurations apart.
const nameHexLen = 16

// Errors.
var (
	// ErrDigest reports a digest that is not "sha256:" and 64 hex digits.
	ErrDigest = errors.New("configartifact: malformed configuration digest")
	// ErrDeviceType reports a missing or malformed device type.
	ErrDeviceType = errors.New("configartifact: bad device type")
)

// Name returns the artifact name of the configuration whose digest
// (devconfig.Digest) is digest: "configuration-" and the first 16 hex
// digits of the SHA-256.
func Name(digest string) (string, error) {
	hex, err := hexOf(digest)
	if err != nil {
		return "", err
	}
	return NamePrefix + hex[:nameHexLen], nil
}

// Installed reports whether a device whose provides (what it sends to
// deployments/next: artifact_name, device_type and the installed
// payloads' provides) are provides runs the configuration of digest:
// its mender-configure provide, or else its artifact name (a client that
// sends only those two), is Name(digest).
func Installed(provides map[string]string, digest string) bool {
	name, err := Name(digest)
	if err != nil {
		return false
	}
	if v, ok := provides[ProvidesKey]; ok {
		return v == name
	}
	return provides["artifact_name"] == name
}

func hexOf(digest string) (string, error) {
	hex, ok := strings.CutPrefix(digest, "sha256:")
	if !ok || len(hex) != 64 {
		return "", fmt.Errorf("%w %q: want sha256: and 64 hex digits", ErrDigest, digest)
	}
	for i := 0; i < len(hex); i++ {
		if c := hex[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return "", fmt.Errorf("%w %q: want sha256: and 64 lowercase hex digits", ErrDigest, digest)
		}
	}
	return hex, nil
}

// Build returns the configuration artifact of values for devices of
// deviceTypes (at least one), signed by signer, or unsigned when signer is
// nil. Its name is Name(devconfig.Digest(values)). The same arguments give
// the same bytes, bar the signature of a randomized signing algorithm
// (ECDSA).
func Build(values map[string]string, deviceTypes []string, signer *artifact.Signer) ([]byte, error) {
	if len(deviceTypes) == 0 {
		return nil, fmt.Errorf("%w: at least one device type is needed", ErrDeviceType)
	}
	for _, t := range deviceTypes {
		if t == "" || len(t) > 256 || strings.ContainsAny(t, "\x00\n") {
			return nil, fmt.Errorf("%w %q", ErrDeviceType, t)
		}
	}
	if len(values) > devconfig.MaxKeys {
		return nil, fmt.Errorf("configartifact: %d configuration keys (at most %d)", len(values), devconfig.MaxKeys)
	}
	name, _ := Name(devconfig.Digest(values))
	meta := make(map[string]any, len(values))
	for k, v := range values {
		meta[k] = v
	}
	spec := artifact.Spec{
		Name:        name,
		DeviceTypes: deviceTypes,
		Payloads: []artifact.PayloadSpec{{
			Type:           Type,
			MetaData:       meta,
			Provides:       map[string]string{ProvidesKey: name},
			ClearsProvides: []string{ClearsProvides},
		}},
		Compression: artifact.None,
		Signer:      signer,
	}
	var buf bytes.Buffer
	if err := artifact.Write(context.Background(), &buf, spec); err != nil {
		return nil, fmt.Errorf("configartifact: %w", err)
	}
	return buf.Bytes(), nil
}
