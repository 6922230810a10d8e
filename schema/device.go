package schema

// A Device admits one device to the fleet. Its key is always bound: by
// PublicKeySHA256 (the fingerprint in Git), or, when TrustOnFirstUse is
// set, by the first key that authenticates with Identity (the controller
// records it and refuses every other key; `gitfleet devices accept` prints
// the publicKeySHA256 line to commit). A manifest with an identity and
// neither is refused. Identity values are compared exactly, as strings: a
// device whose id_data has a list or a number for an attribute never
// matches. A manifest with only PublicKeySHA256 admits the holder of that
// key whatever identity it sends (the key is the device). Devices that are
// not declared stay pending.
//
// A manifest may declare several devices under spec.devices, each with its
// own name; [Load] returns one Device per declared device, carrying the
// manifest's labels and the position of its entry.
type Device struct {
	Meta
	Spec DeviceSpec
}

// DeviceSpec is the spec of a [Device]: PublicKeySHA256, or Identity with
// TrustOnFirstUse, or Identity and PublicKeySHA256.
type DeviceSpec struct {
	// Identity is the device's identity data (for example its MAC
	// address), all of which must match.
	Identity map[string]string `json:"identity,omitempty"`

	// PublicKeySHA256 is the hex sha256 of the device's public key in DER
	// (SubjectPublicKeyInfo) form.
	PublicKeySHA256 string `json:"publicKeySHA256,omitempty"`

	// TrustOnFirstUse binds the first key that authenticates with
	// Identity; every other key is then refused and shown as a conflict.
	// Needs Identity, excludes PublicKeySHA256.
	TrustOnFirstUse bool `json:"trustOnFirstUse,omitempty"`

	// DeviceType, when set, is the device type the device must report.
	DeviceType string `json:"deviceType,omitempty"`
}

// MarshalJSON encodes d in the shape of a single-device manifest.
func (d Device) MarshalJSON() ([]byte, error) { return marshal(&d.Meta, &d.Spec) }
