package plan

import (
	"fmt"
	"testing"

	"github.com/gitfleet/gitfleet/schema"
)

// benchFleets returns a base fleet of 10,000 manifests (9,000 devices in
// 400 groups, 200 artifacts, 200 rollouts, 200 configs) and a head that
// accepts 500 more devices (so every group grows), promotes every rollout
// and changes every config.
func benchFleets() (base, head *schema.Fleet) {
	build := func(devices int, promote bool, level string) *schema.Fleet {
		f := new(schema.Fleet)
		meta := func(kind schema.Kind, name string) schema.Meta {
			return schema.Meta{APIVersion: schema.APIVersion, Kind: kind, Name: name, Source: schema.Source{File: "fleet.yaml", Line: 1}}
		}
		const groups = 400
		members := make([][]string, groups)
		for i := range devices {
			dev := fmt.Sprintf("dev-%d", i)
			f.Devices = append(f.Devices, schema.Device{Meta: meta(schema.KindDevice, dev),
				Spec: schema.DeviceSpec{Identity: map[string]string{"mac": dev}, DeviceType: "rpi4"}})
			members[i%groups] = append(members[i%groups], dev)
		}
		for i := range groups {
			f.Groups = append(f.Groups, schema.DeviceGroup{Meta: meta(schema.KindDeviceGroup, fmt.Sprintf("group-%d", i)),
				Spec: schema.DeviceGroupSpec{Members: members[i]}})
		}
		for i := range 200 {
			f.Artifacts = append(f.Artifacts, schema.Artifact{Meta: meta(schema.KindArtifact, fmt.Sprintf("app-%d", i)),
				Spec: schema.ArtifactSpec{Source: "a.mender", DeviceTypes: []string{"rpi4"}}})
			r := schema.Rollout{Meta: meta(schema.KindRollout, fmt.Sprintf("rollout-%d", i)),
				Spec: schema.RolloutSpec{Artifact: fmt.Sprintf("app-%d", i), Target: schema.Target{Groups: []string{fmt.Sprintf("group-%d", 2*i)}},
					Phases: []schema.Phase{{Name: "canary", Percent: 5}, {Name: "all", Percent: 100, RequiresApproval: true}}}}
			if promote {
				r.Spec.ApprovedPhases = []string{"all"}
			}
			f.Rollouts = append(f.Rollouts, r)
			f.Configs = append(f.Configs, schema.DeviceConfig{Meta: meta(schema.KindDeviceConfig, fmt.Sprintf("config-%d", i)),
				Spec: schema.DeviceConfigSpec{Target: schema.Target{Groups: []string{fmt.Sprintf("group-%d", i)}}, Values: schema.Values{"log_level": level}}})
		}
		return f
	}
	return build(9000, false, "info"), build(9500, true, "debug")
}

func BenchmarkNew(b *testing.B) {
	base, head := benchFleets()
	b.ReportAllocs()
	for b.Loop() {
		p := New(Input{BaseFleet: base, HeadFleet: head})
		if len(p.Changes) != 500+400+200+200 { // devices, groups, rollouts, configs
			b.Fatalf("%d changes", len(p.Changes))
		}
	}
}
