package rollout

import (
	"fmt"
	"slices"
	"strings"

	"github.com/gitfleet/gitfleet/schema"
)

func ptr[T any](v T) *T { return &v }

// declare returns n Device manifests named prefix-0000… of device type typ.
func declare(prefix string, n int, typ string) []schema.Device {
	out := make([]schema.Device, n)
	for i := range out {
		name := fmt.Sprintf("%s-%04d", prefix, i)
		out[i] = schema.Device{
			Meta: schema.Meta{Kind: schema.KindDevice, Name: name},
			Spec: schema.DeviceSpec{Identity: map[string]string{"mac": name}, DeviceType: typ},
		}
	}
	return out
}

func artifact(name, version string, types ...string) schema.Artifact {
	return schema.Artifact{
		Meta: schema.Meta{Kind: schema.KindArtifact, Name: name},
		Spec: schema.ArtifactSpec{Source: "artifacts/" + name + ".mender", Version: version, DeviceTypes: types},
	}
}

func rollout(name, art string, target schema.Target, phases ...schema.Phase) schema.Rollout {
	return schema.Rollout{
		Meta: schema.Meta{Kind: schema.KindRollout, Name: name},
		Spec: schema.RolloutSpec{Artifact: art, Target: target, Phases: phases},
	}
}

func count(name string, n int) schema.Phase     { return schema.Phase{Name: name, Count: n} }
func pct(name string, p float64) schema.Phase   { return schema.Phase{Name: name, Percent: p} }
func all() schema.Target                        { return schema.Target{All: true} }
func devicesTarget(ids ...string) schema.Target { return schema.Target{Devices: ids} }

// ranked returns ids sorted by their key in rollout: the order phases
// admit them in (closed targets).
func ranked(rollout string, ids []string) []string {
	out := slices.Clone(ids)
	slices.SortFunc(out, func(a, b string) int {
		ka, kb := keyT{Key(rollout, a), a}, keyT{Key(rollout, b), b}
		switch {
		case ka.less(kb):
			return -1
		case kb.less(ka):
			return 1
		}
		return 0
	})
	return out
}

func names(ds []schema.Device) []string {
	out := make([]string, len(ds))
	for i := range ds {
		out[i] = ds[i].Name
	}
	return out
}

// device is the Device for declared manifest d, running artifact run.
func device(d *schema.Device, run string) *Device {
	return &Device{
		ID:         d.Name,
		Identity:   d.Spec.Identity,
		Inventory:  map[string]string{"device_type": d.Spec.DeviceType, "hostname": strings.ToLower(d.Name)},
		DeviceType: d.Spec.DeviceType,
		Provides:   map[string]string{"artifact_name": run},
	}
}
