package schema

import (
	"encoding/json"
	"errors"
	"path"
	"slices"
	"strconv"
)

// A Target says which devices a Rollout, MonitorCheck or DeviceConfig
// applies to. All selects the whole fleet; otherwise a device is targeted
// when it is one of Devices, a member of one of Groups, or matched by
// Selector.
type Target struct {
	All      bool      `json:"all,omitempty"`
	Groups   []string  `json:"groups,omitempty"`   // DeviceGroup names
	Devices  []string  `json:"devices,omitempty"`  // Device names
	Selector *Selector `json:"selector,omitempty"` // not allowed in DeviceConfig
}

// IsZero reports whether t names no device at all.
func (t *Target) IsZero() bool {
	return !t.All && len(t.Groups) == 0 && len(t.Devices) == 0 && t.Selector == nil
}

// A Selector matches devices by the attributes they report: their identity
// data (what they authenticate with, such as a MAC address) and their
// inventory (device_type, artifact_name, hostname, ...). A device matches
// when every listed attribute matches.
type Selector struct {
	Identity  map[string]Match `json:"identity,omitempty"`
	Inventory map[string]Match `json:"inventory,omitempty"`
}

// Matches reports whether a device with the given identity and inventory
// attributes matches s. A missing attribute matches nothing.
func (s *Selector) Matches(identity, inventory map[string]string) bool {
	return matchAll(s.Identity, identity) && matchAll(s.Inventory, inventory)
}

func matchAll(want map[string]Match, have map[string]string) bool {
	for name, m := range want {
		v, ok := have[name]
		if !ok || !m.Matches(v) {
			return false
		}
	}
	return true
}

// A Match is a condition on one attribute value. In a manifest it is
// written as a scalar for equality (`device_type: raspberrypi4`), as
// {in: [a, b]} for set membership, or as {glob: "sim-*"} for a shell
// pattern in the syntax of path.Match. Exactly one of the fields is set.
type Match struct {
	Equal *string  // the scalar, formatted as a string
	In    []string // set membership
	Glob  string   // path.Match pattern
}

// Matches reports whether v satisfies m.
func (m Match) Matches(v string) bool {
	switch {
	case m.Equal != nil:
		return v == *m.Equal
	case m.In != nil:
		return slices.Contains(m.In, v)
	case m.Glob != "":
		ok, err := path.Match(m.Glob, v)
		return err == nil && ok
	}
	return false
}

// values returns the finite set of values m accepts, or ok == false when
// the set is not finite (a glob).
func (m Match) values() (vals []string, ok bool) {
	switch {
	case m.Equal != nil:
		return []string{*m.Equal}, true
	case m.In != nil:
		return m.In, true
	}
	return nil, false
}

type matchJSON struct {
	In   []json.RawMessage `json:"in,omitempty"`
	Glob string            `json:"glob,omitempty"`
}

// UnmarshalJSON implements json.Unmarshaler.
func (m *Match) UnmarshalJSON(b []byte) error {
	*m = Match{}
	if len(b) > 0 && b[0] == '{' {
		var x matchJSON
		if err := json.Unmarshal(b, &x); err != nil {
			return err
		}
		if x.In == nil && x.Glob == "" {
			return errors.New("match needs in or glob")
		}
		if x.In != nil {
			m.In = make([]string, 0, len(x.In))
			for _, raw := range x.In {
				s, err := scalarString(raw)
				if err != nil {
					return err
				}
				m.In = append(m.In, s)
			}
		}
		m.Glob = x.Glob
		return nil
	}
	s, err := scalarString(b)
	if err != nil {
		return err
	}
	m.Equal = &s
	return nil
}

// MarshalJSON implements json.Marshaler.
func (m Match) MarshalJSON() ([]byte, error) {
	if m.Equal != nil {
		return json.Marshal(*m.Equal)
	}
	return json.Marshal(struct {
		In   []string `json:"in,omitempty"`
		Glob string   `json:"glob,omitempty"`
	}{m.In, m.Glob})
}

// scalarString formats a JSON string, number or boolean as a string, the
// way devices report attribute values.
func scalarString(b json.RawMessage) (string, error) {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return "", err
	}
	switch v := v.(type) {
	case string:
		return v, nil
	case bool:
		return strconv.FormatBool(v), nil
	case float64:
		return string(b), nil
	}
	return "", errors.New("want a string, number or boolean")
}
