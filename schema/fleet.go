package schema

import "iter"

// A Fleet is every manifest of a fleet repository, grouped by kind, each
// kind in file order (by path, then by position in the file).
type Fleet struct {
	Artifacts     []Artifact
	Rollouts      []Rollout
	Groups        []DeviceGroup
	Devices       []Device
	Checks        []MonitorCheck
	Configs       []DeviceConfig
	Keys          []SigningKey
	Notifications []Notification
	DeviceCAs     []DeviceCA
	Operators     []Operator

	// names indexes Devices by name: set by the loader, which builds
	// the index anyway to find duplicates, for Device to look up in O(1).
	names *deviceNames
}

// deviceNames is an index of a Fleet's Devices by name, valid while the
// Fleet's Devices are the list it was built for.
type deviceNames struct {
	m     map[string]*Device
	first *Device // &Devices[0] when built
	n     int     // len(Devices) when built
}

// All yields every manifest of f, kind by kind in the order of the Fleet's
// fields.
func (f *Fleet) All() iter.Seq[Manifest] {
	return func(yield func(Manifest) bool) {
		_ = each(f.Artifacts, yield) &&
			each(f.Rollouts, yield) &&
			each(f.Groups, yield) &&
			each(f.Devices, yield) &&
			each(f.Checks, yield) &&
			each(f.Configs, yield) &&
			each(f.Keys, yield) &&
			each(f.Notifications, yield) &&
			each(f.DeviceCAs, yield) &&
			each(f.Operators, yield)
	}
}

// Compact drops what a Fleet keeps only to answer [Meta.Pos]: the syntax
// tree of every document, which for a large fleet is most of its memory
// (about 1 GiB for a million devices). Afterwards Pos answers with each
// manifest's own position. Call it once a Fleet is validated and will live
// long, as the controller's served snapshot does.
//
// Compact writes only to manifests that still have a syntax tree, so a
// Fleet that shares its devices with another (see [LoadCached]) can be
// compacted while the other is read.
func (f *Fleet) Compact() {
	for m := range f.All() {
		if md := m.Metadata(); md.doc != nil {
			md.doc = nil
		}
	}
}

// SameDevices reports whether f and g hold the very same list of devices,
// not copies: [LoadCached] shares it between the fleets of two commits when
// no file that declares devices changed. An index of f's devices then
// serves g as it is.
func (f *Fleet) SameDevices(g *Fleet) bool {
	if f == nil || g == nil || len(f.Devices) != len(g.Devices) {
		return false
	}
	return len(f.Devices) == 0 || &f.Devices[0] == &g.Devices[0]
}

// each yields a pointer to every element of s, and reports whether to go
// on.
func each[T any, P interface {
	*T
	Manifest
}](s []T, yield func(Manifest) bool) bool {
	for i := range s {
		if !yield(P(&s[i])) {
			return false
		}
	}
	return true
}

// append adds the manifests of g to f.
func (f *Fleet) append(g *Fleet) {
	f.Artifacts = append(f.Artifacts, g.Artifacts...)
	f.Rollouts = append(f.Rollouts, g.Rollouts...)
	f.Groups = append(f.Groups, g.Groups...)
	f.Devices = append(f.Devices, g.Devices...)
	f.Checks = append(f.Checks, g.Checks...)
	f.Configs = append(f.Configs, g.Configs...)
	f.Keys = append(f.Keys, g.Keys...)
	f.Notifications = append(f.Notifications, g.Notifications...)
	f.DeviceCAs = append(f.DeviceCAs, g.DeviceCAs...)
	f.Operators = append(f.Operators, g.Operators...)
}

// Len returns the number of manifests in f.
func (f *Fleet) Len() int {
	return len(f.Artifacts) + len(f.Rollouts) + len(f.Groups) + len(f.Devices) +
		len(f.Checks) + len(f.Configs) + len(f.Keys) + len(f.Notifications) + len(f.DeviceCAs) +
		len(f.Operators)
}

// Artifact returns the Artifact called name, or nil.
func (f *Fleet) Artifact(name string) *Artifact { return find(f.Artifacts, name) }

// Rollout returns the Rollout called name, or nil.
func (f *Fleet) Rollout(name string) *Rollout { return find(f.Rollouts, name) }

// Group returns the DeviceGroup called name, or nil.
func (f *Fleet) Group(name string) *DeviceGroup { return find(f.Groups, name) }

// Device returns the Device called name, or nil. For a Fleet that Load
// returned it costs a map read (the loader's index of device names);
// for one built otherwise, or whose Devices were replaced since, a scan.
func (f *Fleet) Device(name string) *Device {
	if x := f.names; x != nil && x.n == len(f.Devices) && (x.n == 0 || x.first == &f.Devices[0]) {
		return x.m[name]
	}
	return find(f.Devices, name)
}

// Check returns the MonitorCheck called name, or nil.
func (f *Fleet) Check(name string) *MonitorCheck { return find(f.Checks, name) }

// Config returns the DeviceConfig called name, or nil.
func (f *Fleet) Config(name string) *DeviceConfig { return find(f.Configs, name) }

// Key returns the SigningKey called name, or nil.
func (f *Fleet) Key(name string) *SigningKey { return find(f.Keys, name) }

// Notification returns the Notification called name, or nil.
func (f *Fleet) Notification(name string) *Notification { return find(f.Notifications, name) }

// find returns the first element of s called name. A linear scan keeps a
// Fleet a plain value; callers that look up in a loop build their own map.
func find[T any, P interface {
	*T
	Manifest
}](s []T, name string) *T {
	for i := range s {
		if P(&s[i]).Metadata().Name == name {
			return &s[i]
		}
	}
	return nil
}
