package plan

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/gitfleet/gitfleet/schema"
)

// Targets are the devices a change reaches, as far as the repository
// alone can tell.
type Targets struct {
	// Description says what the target is in words: "group prod, devices
	// d1 and d2", "the whole fleet", "selector device_type=rpi4".
	Description string `json:"description"`

	// Devices are the names of the declared devices (Device manifests)
	// known to be targeted, sorted.
	Devices []string `json:"devices"`

	// Exact is true when Devices is every targeted device. It is false
	// when a selector tests inventory attributes that only the devices
	// know, or when the target is the whole fleet (devices that are not
	// declared yet are pending and will be targeted once accepted).
	Exact bool `json:"exact"`
}

// Count says how many devices are targeted: "3 devices", "at least 3
// devices" when Targets is not exact, or that only the devices can tell.
func (t *Targets) Count() string {
	if len(t.Devices) == 0 && !t.Exact {
		return "devices known once they report"
	}
	n := fmt.Sprintf("%d device%s", len(t.Devices), plural(len(t.Devices)))
	if !t.Exact {
		n = "at least " + n
	}
	return n
}

// resolver finds the declared devices a target reaches in one fleet.
type resolver struct {
	fleet   *schema.Fleet
	devices map[string]*schema.Device
	groups  map[string]*schema.DeviceGroup
}

func newResolver(f *schema.Fleet) *resolver {
	r := &resolver{fleet: f, devices: make(map[string]*schema.Device), groups: make(map[string]*schema.DeviceGroup)}
	for i := range f.Devices {
		r.devices[f.Devices[i].Name] = &f.Devices[i]
	}
	for i := range f.Groups {
		r.groups[f.Groups[i].Name] = &f.Groups[i]
	}
	return r
}

// target resolves t.
func (r *resolver) target(t *schema.Target) *Targets {
	found := make(map[string]bool)
	exact := true
	var words []string
	if t.All {
		words = append(words, "the whole fleet")
		for name := range r.devices {
			found[name] = true
		}
		exact = false
	}
	if len(t.Groups) > 0 {
		words = append(words, listed("group", t.Groups))
		for _, g := range t.Groups {
			if !r.group(g, found) {
				exact = false
			}
		}
	}
	if len(t.Devices) > 0 {
		words = append(words, listed("device", t.Devices))
		for _, d := range t.Devices {
			found[d] = true
		}
	}
	if t.Selector != nil {
		words = append(words, "selector "+describeSelector(t.Selector))
		if !r.selector(t.Selector, found) {
			exact = false
		}
	}
	if len(words) == 0 {
		words = append(words, "no device")
	}
	return &Targets{
		Description: strings.Join(words, ", "),
		Devices:     slices.Sorted(maps.Keys(found)),
		Exact:       exact,
	}
}

// group adds the devices of group name to found and reports whether that
// is all of them.
func (r *resolver) group(name string, found map[string]bool) (exact bool) {
	g := r.groups[name]
	if g == nil {
		return false
	}
	for _, m := range g.Spec.Members {
		found[m] = true
	}
	if g.Spec.Selector == nil {
		return true
	}
	return r.selector(g.Spec.Selector, found)
}

// selector adds the declared devices s matches to found and reports
// whether s can be decided for every device from the repository.
func (r *resolver) selector(s *schema.Selector, found map[string]bool) (exact bool) {
	exact = true
	for name, d := range r.devices {
		match, certain := matchOffline(s, d)
		if match {
			found[name] = true
		}
		if !certain {
			exact = false
		}
	}
	return exact
}

// matchOffline decides whether the declared device d matches s. Identity
// attributes are known from the manifest; of the inventory only
// device_type is, when the manifest declares it. certain is false when the
// answer depends on what the device reports.
func matchOffline(s *schema.Selector, d *schema.Device) (match, certain bool) {
	for attr, m := range s.Identity {
		v, ok := d.Spec.Identity[attr]
		if !ok || !m.Matches(v) {
			return false, ok
		}
	}
	for attr, m := range s.Inventory {
		if attr != "device_type" || d.Spec.DeviceType == "" {
			return false, false
		}
		if !m.Matches(d.Spec.DeviceType) {
			return false, true
		}
	}
	return true, true
}

// describeSelector writes s the way it reads in a manifest, attributes
// sorted: "identity mac=aa:bb, inventory device_type in (rpi3, rpi4)".
func describeSelector(s *schema.Selector) string {
	var parts []string
	for _, side := range []struct {
		name  string
		attrs map[string]schema.Match
	}{{"identity", s.Identity}, {"inventory", s.Inventory}} {
		for _, attr := range slices.Sorted(maps.Keys(side.attrs)) {
			parts = append(parts, side.name+" "+attr+describeMatch(side.attrs[attr]))
		}
	}
	return strings.Join(parts, ", ")
}

func describeMatch(m schema.Match) string {
	switch {
	case m.Equal != nil:
		return "=" + *m.Equal
	case m.In != nil:
		return " in (" + strings.Join(m.In, ", ") + ")"
	}
	return " like " + m.Glob
}

// listed writes "group prod" or "groups eu, us".
func listed(noun string, names []string) string {
	if len(names) == 1 {
		return noun + " " + names[0]
	}
	return noun + "s " + strings.Join(names, ", ")
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
