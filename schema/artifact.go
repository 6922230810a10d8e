package schema

// An Artifact is an update image the fleet may install.
type Artifact struct {
	Meta
	Spec ArtifactSpec
}

// ArtifactSpec is the spec of an [Artifact].
type ArtifactSpec struct {
	// Source is where the controller gets the artifact: a slash-separated
	// path relative to the artifact store ("artifacts/hello-2.mender") or
	// an https URL.
	Source string `json:"source"`

	// SHA256 is the hex digest of the artifact file. It is required for
	// https sources; for store paths it may be left out, and the digest
	// recorded by the store is used.
	SHA256 string `json:"sha256,omitempty"`

	// ArtifactName is the artifact_name inside the artifact (what devices
	// report once it is installed). Empty means metadata.name.
	ArtifactName string `json:"artifactName,omitempty"`

	// Version orders artifacts of the same software for downgrade
	// protection; empty means unknown.
	Version string `json:"version,omitempty"`

	// DeviceTypes lists the device types the artifact is compatible with.
	DeviceTypes []string `json:"deviceTypes"`

	// Provides and Depends are the artifact's type-info provides and
	// depends (for example "rootfs-image.version": "2").
	Provides map[string]string `json:"provides,omitempty"`
	Depends  map[string]string `json:"depends,omitempty"`

	// SignedBy names the SigningKeys whose signatures are checked, and
	// MinSignatures how many of them must have signed (default 1 when
	// SignedBy is not empty).
	SignedBy      []string `json:"signedBy,omitempty"`
	MinSignatures int      `json:"minSignatures,omitempty"`
}

// MarshalJSON encodes a in the shape of its manifest.
func (a Artifact) MarshalJSON() ([]byte, error) { return marshal(&a.Meta, &a.Spec) }

// ArtifactName returns the artifact_name devices report for a.
func (a *Artifact) ArtifactName() string {
	if a.Spec.ArtifactName != "" {
		return a.Spec.ArtifactName
	}
	return a.Name
}
