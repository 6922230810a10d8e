package schema

// A Device admits one device to the fleet: a device that authenticates
// with this identity and/or a public key with this fingerprint is
// accepted. Devices that are not declared stay pending.
//
// A manifest may declare several devices under spec.devices, each with its
// own name; [Load] returns one Device per declared device, carrying the
// manifest's labels and the position of its entry.
type Device struct {
	Meta
	Spec DeviceSpec
}

// DeviceSpec is the spec of a [Device]. At least one of Identity and
// PublicKeySHA256 is set.
type DeviceSpec struct {
	// Identity is the device's identity data (for example its MAC
	// address), all of which must match.
	Identity map[string]string `json:"identity,omitempty"`

	// PublicKeySHA256 is the hex sha256 of the device's public key in DER
	// (SubjectPublicKeyInfo) form.
	PublicKeySHA256 string `json:"publicKeySHA256,omitempty"`

	// DeviceType, when set, is the device type the device must report.
	DeviceType string `json:"deviceType,omitempty"`
}

// MarshalJSON encodes d in the shape of a single-device manifest.
func (d Device) MarshalJSON() ([]byte, error) { return marshal(&d.Meta, &d.Spec) }
