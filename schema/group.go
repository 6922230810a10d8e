package schema

// A DeviceGroup is a named set of devices: its static members plus every
// device its selector matches. Labels such as "production" or "critical"
// on the group are what policies look at.
type DeviceGroup struct {
	Meta
	Spec DeviceGroupSpec
}

// DeviceGroupSpec is the spec of a [DeviceGroup]. At least one of Members
// and Selector is set.
type DeviceGroupSpec struct {
	Members  []string  `json:"members,omitempty"` // Device names
	Selector *Selector `json:"selector,omitempty"`
	// RemoteSessions bounds the remote sessions open at once to one
	// member device; nil: the default (DefaultDeviceSessions), 0: none.
	RemoteSessions *int `json:"remoteSessions,omitempty"`
}

// MarshalJSON encodes g in the shape of its manifest.
func (g DeviceGroup) MarshalJSON() ([]byte, error) { return marshal(&g.Meta, &g.Spec) }
