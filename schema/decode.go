package schema

import (
	"strconv"

	"cuelang.org/go/cue"
	"cuelang.org/go/cue/ast"
)

// decode turns a document that passed the schema into its Go value, checks
// the rules the schema leaves to Go, and adds it to the fleet.
func (l *loader) decode(kind Kind, src Source, node ast.Node, u cue.Value) {
	var md struct {
		Name   string `json:"name"`
		Labels Values `json:"labels"`
	}
	if err := u.LookupPath(cue.ParsePath("metadata")).Decode(&md); err != nil {
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
	spec := u.LookupPath(cue.ParsePath("spec"))
	f := l.fleet
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
	}
}

func (l *loader) decodeSpec(m *Meta, spec cue.Value, x any) bool {
	if err := spec.Decode(x); err != nil {
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
	single := len(s.Identity) > 0 || s.PublicKeySHA256 != "" || s.DeviceType != ""
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
