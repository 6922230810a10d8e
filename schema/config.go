package schema

import (
	"encoding/json"
	"fmt"
)

// A DeviceConfig is key/value configuration for the devices of its target.
// When several DeviceConfigs set a key for one device, the most specific
// target wins: devices over groups over the whole fleet. Two DeviceConfigs
// of equal specificity that may apply to one device must not set a key to
// different values.
type DeviceConfig struct {
	Meta
	Spec DeviceConfigSpec
}

// DeviceConfigSpec is the spec of a [DeviceConfig]. Its Target sets exactly
// one of All, Groups and Devices (no Selector).
type DeviceConfigSpec struct {
	Target Target `json:"target"`
	Values Values `json:"values"`
}

// MarshalJSON encodes c in the shape of its manifest.
func (c DeviceConfig) MarshalJSON() ([]byte, error) { return marshal(&c.Meta, &c.Spec) }

// Specificity orders the scopes of a DeviceConfig target.
type Specificity int

// The specificities, least specific first.
const (
	SpecificityFleet Specificity = iota
	SpecificityGroup
	SpecificityDevice
)

// Specificity returns how specific the target of c is.
func (c *DeviceConfig) Specificity() Specificity {
	switch {
	case len(c.Spec.Target.Devices) > 0:
		return SpecificityDevice
	case len(c.Spec.Target.Groups) > 0:
		return SpecificityGroup
	}
	return SpecificityFleet
}

// Values are configuration values. Devices receive strings; a manifest may
// write numbers and booleans, which are formatted as strings.
type Values map[string]string

// UnmarshalJSON implements json.Unmarshaler.
func (v *Values) UnmarshalJSON(b []byte) error {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	*v = make(Values, len(raw))
	for k, r := range raw {
		s, err := scalarString(r)
		if err != nil {
			return fmt.Errorf("%s: %w", k, err)
		}
		(*v)[k] = s
	}
	return nil
}
