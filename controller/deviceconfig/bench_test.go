package deviceconfig

import (
	"fmt"
	"testing"

	"github.com/gitfleet/gitfleet/schema"
)

// BenchmarkFor is a device's poll for its configuration when its
// manifests' merge is cached: a fleet config, a group with a selector,
// and a group the device is a static member of, 20 keys in all.
func BenchmarkFor(b *testing.B) {
	values := func(prefix string, n int) schema.Values {
		v := schema.Values{}
		for i := range n {
			v[fmt.Sprintf("%s-%d", prefix, i)] = "value"
		}
		return v
	}
	f := &schema.Fleet{
		Groups: []schema.DeviceGroup{
			{Meta: schema.Meta{Name: "static"}, Spec: schema.DeviceGroupSpec{Members: []string{"dev-1"}}},
			{Meta: schema.Meta{Name: "cams"}, Spec: schema.DeviceGroupSpec{Selector: &schema.Selector{
				Inventory: map[string]schema.Match{"device_type": {In: []string{"camera"}}}}}},
		},
		Configs: []schema.DeviceConfig{
			{Meta: schema.Meta{Name: "fleet"}, Spec: schema.DeviceConfigSpec{Target: schema.Target{All: true}, Values: values("f", 10)}},
			{Meta: schema.Meta{Name: "static"}, Spec: schema.DeviceConfigSpec{Target: schema.Target{Groups: []string{"static"}}, Values: values("s", 5)}},
			{Meta: schema.Meta{Name: "cams"}, Spec: schema.DeviceConfigSpec{Target: schema.Target{Groups: []string{"cams"}}, Values: values("c", 5)}},
		},
	}
	s, err := Compile(f, Options{})
	if err != nil {
		b.Fatal(err)
	}
	inv := map[string]string{"device_type": "camera"}
	b.ReportAllocs()
	for b.Loop() {
		if v, _ := s.For("dev-1", nil, inv); len(v) != 20 {
			b.Fatalf("%d keys", len(v))
		}
	}
}
