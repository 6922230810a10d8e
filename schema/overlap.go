package schema

import (
	"fmt"
	"maps"
	"slices"
)

// A reach is what the repository alone says about the devices a target
// reaches: the whole fleet, named devices (directly or as static group
// members), devices matched by selectors, narrowed to device types when
// the target belongs to a rollout whose artifact lists them.
type reach struct {
	all         bool
	devices     map[string]bool
	names       []string // the keys of devices, sorted
	selectors   []*Selector
	deviceTypes []string // nil: any
}

func (l *loader) reachOf(t *Target, ix *index) reach {
	r := reach{all: t.All, devices: make(map[string]bool)}
	for _, d := range t.Devices {
		r.devices[d] = true
	}
	for _, name := range t.Groups {
		g := ix.groups[name]
		if g == nil {
			continue // reported as an unknown group
		}
		for _, d := range g.Spec.Members {
			r.devices[d] = true
		}
		if g.Spec.Selector != nil {
			r.selectors = append(r.selectors, g.Spec.Selector)
		}
	}
	if t.Selector != nil {
		r.selectors = append(r.selectors, t.Selector)
	}
	r.names = slices.Sorted(maps.Keys(r.devices))
	return r
}

func (r *reach) empty() bool {
	return !r.all && len(r.devices) == 0 && len(r.selectors) == 0
}

// mayOverlap reports whether a device could be reached by both a and b,
// and if so why. It answers false only when the repository proves the two
// disjoint.
func mayOverlap(a, b *reach, ix *index) (string, bool) {
	if a.empty() || b.empty() {
		return "", false
	}
	if a.deviceTypes != nil && b.deviceTypes != nil &&
		!slices.ContainsFunc(a.deviceTypes, func(t string) bool { return slices.Contains(b.deviceTypes, t) }) {
		return "", false
	}
	switch {
	case a.all && b.all:
		return "both target the whole fleet", true
	case a.all || b.all:
		return "one targets the whole fleet", true
	}
	small, large := a, b
	if len(small.names) > len(large.names) {
		small, large = large, small
	}
	for _, d := range small.names {
		if large.devices[d] && admits(a, ix.devices[d]) && admits(b, ix.devices[d]) {
			return fmt.Sprintf("both include device %q", d), true
		}
	}
	for _, x := range [][2]*reach{{a, b}, {b, a}} {
		sels, other := x[0], x[1]
		if len(sels.selectors) == 0 {
			continue
		}
		for _, d := range other.names {
			dev := ix.devices[d]
			if !admits(sels, dev) || !admits(other, dev) {
				continue
			}
			for _, s := range sels.selectors {
				if mayMatch(s, dev) {
					return fmt.Sprintf("a selector may match device %q", d), true
				}
			}
		}
	}
	for _, sa := range a.selectors {
		for _, sb := range b.selectors {
			if !disjoint(constraints(sa, a.deviceTypes), constraints(sb, b.deviceTypes)) {
				return "their selectors may match the same devices", true
			}
		}
	}
	return "", false
}

// admits reports whether the device types of r allow d. An undeclared
// device, or one without a declared type, may be of any type.
func admits(r *reach, d *Device) bool {
	if r.deviceTypes == nil || d == nil || d.Spec.DeviceType == "" {
		return true
	}
	return slices.Contains(r.deviceTypes, d.Spec.DeviceType)
}

// mayMatch reports whether the device d could match s, judging from what
// its manifest declares. Attributes it does not declare may match.
func mayMatch(s *Selector, d *Device) bool {
	if d == nil {
		return true
	}
	for name, m := range s.Identity {
		if v, ok := d.Spec.Identity[name]; ok && !m.Matches(v) {
			return false
		}
	}
	if m, ok := s.Inventory["device_type"]; ok && d.Spec.DeviceType != "" && !m.Matches(d.Spec.DeviceType) {
		return false
	}
	return true
}

// A constraint is one attribute condition of a selector.
type constraint struct {
	scope, name string
	match       Match
}

// constraints lists the conditions of s, plus device types when known.
func constraints(s *Selector, deviceTypes []string) []constraint {
	var cs []constraint
	for name, m := range s.Identity {
		cs = append(cs, constraint{"identity", name, m})
	}
	for name, m := range s.Inventory {
		cs = append(cs, constraint{"inventory", name, m})
	}
	if deviceTypes != nil {
		cs = append(cs, constraint{"inventory", "device_type", Match{In: deviceTypes}})
	}
	return cs
}

// disjoint reports whether no device can meet both a and b: some
// attribute is required to take values from disjoint sets.
func disjoint(a, b []constraint) bool {
	for _, x := range a {
		for _, y := range b {
			if x.scope == y.scope && x.name == y.name && disjointMatch(x.match, y.match) {
				return true
			}
		}
	}
	return false
}

func disjointMatch(a, b Match) bool {
	va, finiteA := a.values()
	vb, finiteB := b.values()
	switch {
	case finiteA && finiteB:
		return !slices.ContainsFunc(va, func(v string) bool { return slices.Contains(vb, v) })
	case finiteA:
		return !slices.ContainsFunc(va, b.Matches)
	case finiteB:
		return !slices.ContainsFunc(vb, a.Matches)
	}
	return false // two globs: assume they may overlap
}
