package schema

import (
	"encoding/json"
	"strconv"

	"cuelang.org/go/cue"
	"cuelang.org/go/cue/ast"
)

// A fields decodes the top-level fields of a document (metadata, spec)
// into Go values.
type fields interface {
	decode(name string, x any) error
}

// cueFields decodes the fields of a value that passed the schema.
type cueFields struct{ u cue.Value }

func (f cueFields) decode(name string, x any) error {
	p := pathSpec
	if name == "metadata" {
		p = pathMetadata
	}
	return f.u.LookupPath(p).Decode(x)
}

// jsonFields holds the JSON of the fields of a YAML document, which
// encoding/json decodes several times faster than CUE. A field that is
// absent decodes as its zero value.
type jsonFields map[string][]byte

func (f jsonFields) decode(name string, x any) error {
	js, ok := f[name]
	if !ok {
		return nil
	}
	return json.Unmarshal(js, x)
}

// jsonOf returns the JSON of the metadata and spec of the YAML document
// node without the fields at the paths in skip, or false when the
// document holds something JSON cannot say (see appendJSON).
func jsonOf(node ast.Node, skip map[string]bool) (jsonFields, bool) {
	f := make(jsonFields, 2)
	for _, name := range []string{"metadata", "spec"} {
		n := child(node, name)
		if n == nil || skip[name] {
			continue
		}
		js, ok := appendJSON(nil, n, name, skip)
		if !ok {
			return nil, false
		}
		f[name] = js
	}
	return f, true
}

// decode turns a document into its Go value, checks the rules the schema
// leaves to Go, and, if add is set and the rules pass, adds it to the
// fleet.
func (l *loader) decode(kind Kind, src Source, node ast.Node, doc fields, add bool) {
	var md struct {
		Name   string `json:"name"`
		Labels Values `json:"labels"`
	}
	if err := doc.decode("metadata", &md); err != nil {
		l.errs.add(src, "metadata", "%v", err)
		return
	}
	m := Meta{
		APIVersion: APIVersion,
		Kind:       kind,
		Name:       md.Name,
		Labels:     map[string]string(md.Labels),
		Source:     src,
		doc:        node,
	}
	f := l.fleet
	if !add {
		f = &Fleet{}
	}
	spec := doc
	switch kind {
	case KindArtifact:
		x := Artifact{Meta: m}
		if l.decodeSpec(&m, spec, &x.Spec) && l.checkArtifact(&x) {
			f.Artifacts = append(f.Artifacts, x)
		}
	case KindRollout:
		x := Rollout{Meta: m}
		if l.decodeSpec(&m, spec, &x.Spec) && l.checkRollout(&x) {
			f.Rollouts = append(f.Rollouts, x)
		}
	case KindDeviceGroup:
		x := DeviceGroup{Meta: m}
		if l.decodeSpec(&m, spec, &x.Spec) && l.checkGroup(&x) {
			f.Groups = append(f.Groups, x)
		}
	case KindDevice:
		var s deviceManifestSpec
		if l.decodeSpec(&m, spec, &s) {
			f.Devices = append(f.Devices, l.devices(m, &s)...)
		}
	case KindMonitorCheck:
		x := MonitorCheck{Meta: m}
		if l.decodeSpec(&m, spec, &x.Spec) && l.checkMonitor(&x) {
			f.Checks = append(f.Checks, x)
		}
	case KindDeviceConfig:
		x := DeviceConfig{Meta: m}
		if l.decodeSpec(&m, spec, &x.Spec) && l.checkConfig(&x) {
			f.Configs = append(f.Configs, x)
		}
	case KindSigningKey:
		x := SigningKey{Meta: m}
		if l.decodeSpec(&m, spec, &x.Spec) && l.checkKey(&x) {
			f.Keys = append(f.Keys, x)
		}
	case KindNotification:
		x := Notification{Meta: m}
		if l.decodeSpec(&m, spec, &x.Spec) && l.checkNotification(&x) {
			f.Notifications = append(f.Notifications, x)
		}
	case KindDeviceCA: // checked across the fleet: checkDeviceCAs
		x := DeviceCA{Meta: m}
		if l.decodeSpec(&m, spec, &x.Spec) {
			f.DeviceCAs = append(f.DeviceCAs, x)
		}
	case KindOperator: // references checked across the fleet: checkOperatorRefs
		x := Operator{Meta: m}
		if l.decodeSpec(&m, spec, &x.Spec) && l.checkOperator(&x) {
			f.Operators = append(f.Operators, x)
		}
	}
}

func (l *loader) decodeSpec(m *Meta, doc fields, x any) bool {
	if err := doc.decode("spec", x); err != nil {
		l.errs.at(m, "spec", "%v", err)
		return false
	}
	return true
}

// deviceManifestSpec is the spec of a Device manifest, which declares one
// device or, under devices, several.
type deviceManifestSpec struct {
	DeviceSpec
	Devices []struct {
		Name string `json:"name"`
		DeviceSpec
	} `json:"devices"`
}

// devices returns the devices a Device manifest declares.
func (l *loader) devices(m Meta, s *deviceManifestSpec) []Device {
	single := len(s.Identity) > 0 || s.PublicKeySHA256 != "" || s.DeviceType != "" || s.TrustOnFirstUse
	if s.Devices == nil {
		d := Device{Meta: m, Spec: s.DeviceSpec}
		if !l.checkDevice(&d) {
			return nil
		}
		return []Device{d}
	}
	if single {
		l.errs.at(&m, "spec.devices", "declare one device (identity, publicKeySHA256) or a list of devices, not both")
		return nil
	}
	var out []Device
	for i, e := range s.Devices {
		d := Device{Meta: m, Spec: e.DeviceSpec}
		d.Name = e.Name
		d.entry = "spec.devices[" + strconv.Itoa(i) + "]"
		d.Source = d.Pos("metadata.name")
		if l.checkDevice(&d) {
			out = append(out, d)
		}
	}
	return out
}
