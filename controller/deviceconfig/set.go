package deviceconfig

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/gitfleet/gitfleet/device/devconfig"
	"github.com/gitfleet/gitfleet/schema"
)

// A Set is the DeviceConfig manifests of one commit, compiled: their
// secrets resolved, indexed by what they target. It is immutable apart
// from its cache of merged configurations, and safe for concurrent use.
//
// A Set holds secret values, and gives them out through For only. It
// prints (every fmt verb), logs (slog) and encodes (encoding/json) as a
// summary of its manifests.
type Set struct {
	configs  []*config        // ordered by level, then name
	byName   map[string]int   // index in configs
	fleet    []int            // configs of the whole fleet
	byGroup  map[string][]int // group-level configs by the groups they name
	byDevice map[string][]int // device-level configs by the devices they name
	groups   map[string]*group
	// memberOf lists, by device, the groups (that some config names) of
	// which it is a static member; selGroups are those with a selector.
	memberOf  map[string][]string
	selGroups []*group
	devices   func() []string // every Device manifest name, sorted; listed on first use
	secret    map[string]bool
	inventory bool
	cache     *cache
}

// config is one DeviceConfig manifest, compiled.
type config struct {
	info    Info
	values  map[string]string
	secrets map[string]plaintext
}

// Format writes the name of c: never its values.
func (c config) Format(f fmt.State, _ rune) { io.WriteString(f, "config "+c.info.Name) }

// group is a DeviceGroup some DeviceConfig names.
type group struct {
	name     string
	members  map[string]bool
	selector *schema.Selector
}

// Info describes one DeviceConfig manifest, without its values.
type Info struct {
	Name  string
	Level schema.Specificity
	// The target as the manifest writes it: the whole fleet (All),
	// Groups, or Devices.
	All     bool
	Groups  []string
	Devices []string
	// Selectors is set when a group of Groups has a selector: which
	// devices it covers depends on their identity and inventory (see
	// Set.Covers), not only on the repository (Set.DevicesOf).
	Selectors bool
	Values    []string // the keys of its values, sorted
	Secrets   []string // the keys of its secrets, sorted
	Source    schema.Source
}

// Compile resolves the secrets of fleet's DeviceConfig manifests and
// indexes them. fleet must have passed validation (schema.Load). When a
// secret cannot be resolved, Compile returns a nil Set and schema.Errors
// listing every such secret, at its manifest's position when the fleet
// still has its syntax (before Fleet.Compact).
func Compile(fleet *schema.Fleet, opts Options) (*Set, error) {
	if fleet == nil {
		fleet = &schema.Fleet{}
	}
	s := &Set{
		byName:   make(map[string]int, len(fleet.Configs)),
		byGroup:  make(map[string][]int),
		byDevice: make(map[string][]int),
		groups:   make(map[string]*group),
		memberOf: make(map[string][]string),
		secret:   make(map[string]bool),
		cache:    &cache{m: make(map[string]*merged)},
	}
	order := make([]*schema.DeviceConfig, 0, len(fleet.Configs))
	for i := range fleet.Configs {
		order = append(order, &fleet.Configs[i])
	}
	slices.SortStableFunc(order, func(a, b *schema.DeviceConfig) int {
		return cmp.Or(cmp.Compare(a.Specificity(), b.Specificity()), cmp.Compare(a.Name, b.Name))
	})

	res := newResolver(opts)
	defer res.close()
	var errs schema.Errors
	declared := make(map[string]*schema.DeviceGroup, len(fleet.Groups))
	for i := range fleet.Groups {
		if _, dup := declared[fleet.Groups[i].Name]; !dup {
			declared[fleet.Groups[i].Name] = &fleet.Groups[i]
		}
	}
	for _, dc := range order {
		if _, dup := s.byName[dc.Name]; dup {
			continue // validate refuses duplicate names
		}
		c := &config{
			info: Info{
				Name: dc.Name, Level: dc.Specificity(), Source: dc.Source,
				All:     dc.Spec.Target.All,
				Groups:  slices.Clone(dc.Spec.Target.Groups),
				Devices: slices.Clone(dc.Spec.Target.Devices),
				Values:  slices.Sorted(maps.Keys(dc.Spec.Values)),
				Secrets: slices.Sorted(maps.Keys(dc.Spec.Secrets)),
			},
			values:  maps.Clone(dc.Spec.Values),
			secrets: make(map[string]plaintext, len(dc.Spec.Secrets)),
		}
		for _, k := range c.info.Secrets {
			s.secret[k] = true
			v, err := res.resolve(dc.Spec.Secrets[k])
			if err != nil {
				path := schema.SecretPath(k)
				pos := dc.Pos(path)
				errs = append(errs, &schema.Error{File: pos.File, Line: pos.Line, Col: pos.Col, Path: path,
					Msg: fmt.Sprintf("DeviceConfig %q, secret %q: %v", dc.Name, k, err)})
				continue
			}
			c.secrets[k] = v
		}
		i := len(s.configs)
		s.configs = append(s.configs, c)
		s.byName[dc.Name] = i
		switch c.info.Level {
		case schema.SpecificityFleet:
			s.fleet = append(s.fleet, i)
		case schema.SpecificityGroup:
			for _, g := range c.info.Groups {
				s.byGroup[g] = append(s.byGroup[g], i)
				gr := s.group(declared[g], g)
				if gr.selector != nil {
					c.info.Selectors = true
				}
			}
		case schema.SpecificityDevice:
			for _, d := range c.info.Devices {
				s.byDevice[d] = append(s.byDevice[d], i)
			}
		}
	}
	if len(errs) > 0 {
		slices.SortStableFunc(errs, func(a, b *schema.Error) int {
			return cmp.Or(cmp.Compare(a.File, b.File), cmp.Compare(a.Line, b.Line), cmp.Compare(a.Col, b.Col), cmp.Compare(a.Path, b.Path))
		})
		return nil, errs
	}
	for _, name := range slices.Sorted(maps.Keys(s.groups)) {
		g := s.groups[name]
		for _, d := range slices.Sorted(maps.Keys(g.members)) {
			s.memberOf[d] = append(s.memberOf[d], name)
		}
		if g.selector != nil {
			s.selGroups = append(s.selGroups, g)
			if len(g.selector.Inventory) > 0 {
				s.inventory = true
			}
		}
	}
	// Listed when first asked for, not on every commit: a fleet may
	// have a million devices.
	s.devices = sync.OnceValue(func() []string {
		names := make([]string, 0, len(fleet.Devices))
		for i := range fleet.Devices {
			names = append(names, fleet.Devices[i].Name)
		}
		slices.Sort(names)
		return slices.Compact(names)
	})
	return s, nil
}

// group returns the indexed group name, declared as g (nil: unknown,
// which validate refuses; it then has no members).
func (s *Set) group(g *schema.DeviceGroup, name string) *group {
	if gr, ok := s.groups[name]; ok {
		return gr
	}
	gr := &group{name: name, members: make(map[string]bool)}
	if g != nil {
		for _, m := range g.Spec.Members {
			gr.members[m] = true
		}
		gr.selector = g.Spec.Selector
	}
	s.groups[name] = gr
	return gr
}

// For returns the configuration of the device called name (its Device
// manifest name) with the given identity and inventory attributes, and
// its digest (devconfig.Digest). The values include secrets: give them to
// that device only, over its authenticated channel. The map is the
// caller's own.
//
// Inventory matters only when NeedsInventory reports true; identity only
// when a group with a selector is targeted.
func (s *Set) For(name string, identity, inventory map[string]string) (values map[string]string, digest string) {
	if s == nil {
		return map[string]string{}, devconfig.Digest(nil)
	}
	var buf [32]int
	idx := s.matching(buf[:0], name, identity, inventory)
	m := s.merged(idx)
	return maps.Clone(m.values), m.digest
}

// matching appends to idx the configs that apply to the device, sorted
// (by level, then name) and without repeats.
func (s *Set) matching(idx []int, name string, identity, inventory map[string]string) []int {
	idx = append(idx, s.fleet...)
	for _, g := range s.memberOf[name] {
		idx = append(idx, s.byGroup[g]...)
	}
	for _, g := range s.selGroups {
		if g.selector.Matches(identity, inventory) {
			idx = append(idx, s.byGroup[g.name]...)
		}
	}
	idx = append(idx, s.byDevice[name]...)
	slices.Sort(idx)
	return slices.Compact(idx)
}

// maxCached bounds the merged configurations a Set keeps: past it the
// cache starts over. Devices sharing their manifests share an entry, so
// only a fleet of this many distinct configurations gets there.
const maxCached = 1 << 16

// cache holds merged configurations by the set of configs merged.
type cache struct {
	mu     sync.RWMutex
	m      map[string]*merged
	merges atomic.Int64 // merges done, for tests
}

// merged is one merged configuration. It prints as its digest.
type merged struct {
	values map[string]string
	digest string
}

func (m merged) Format(f fmt.State, _ rune) { io.WriteString(f, m.digest) }

// merged returns the configuration that merges the configs idx, in order.
func (s *Set) merged(idx []int) *merged {
	var kb [128]byte
	key := kb[:0]
	for _, i := range idx {
		key = strconv.AppendInt(key, int64(i), 36)
		key = append(key, ',')
	}
	c := s.cache
	c.mu.RLock()
	m := c.m[string(key)]
	c.mu.RUnlock()
	if m != nil {
		return m
	}
	values := make(map[string]string)
	for _, i := range idx {
		cfg := s.configs[i]
		maps.Copy(values, cfg.values)
		for k, v := range cfg.secrets {
			values[k] = string(v)
		}
	}
	m = &merged{values: values, digest: devconfig.Digest(values)}
	c.merges.Add(1)
	c.mu.Lock()
	if len(c.m) >= maxCached {
		c.m = make(map[string]*merged)
	}
	c.m[string(key)] = m
	c.mu.Unlock()
	return m
}

// NeedsInventory reports whether a targeted group selects devices by
// inventory attributes: only then does For need the device's inventory.
func (s *Set) NeedsInventory() bool { return s != nil && s.inventory }

// Secret reports whether key is a secret in some DeviceConfig of the
// commit. Such a key is redacted wherever shown, even for a device that
// receives it as a plain value from another manifest.
func (s *Set) Secret(key string) bool { return s != nil && s.secret[key] }

// Redact returns a copy of values in which the value of every key that
// is a secret (see Secret) is Redacted: what may be logged, stored or
// shown of a configuration, such as the one a device reports.
func (s *Set) Redact(values map[string]string) map[string]string {
	out := make(map[string]string, len(values))
	for k, v := range values {
		if s.Secret(k) {
			v = Redacted
		}
		out[k] = v
	}
	return out
}

// Len is the number of DeviceConfig manifests.
func (s *Set) Len() int {
	if s == nil {
		return 0
	}
	return len(s.configs)
}

// Configs describes every DeviceConfig manifest, by level, then name.
func (s *Set) Configs() []Info {
	if s == nil {
		return nil
	}
	out := make([]Info, len(s.configs))
	for i, c := range s.configs {
		out[i] = c.info.clone()
	}
	return out
}

// Config describes the DeviceConfig called name.
func (s *Set) Config(name string) (Info, bool) {
	if s == nil {
		return Info{}, false
	}
	i, ok := s.byName[name]
	if !ok {
		return Info{}, false
	}
	return s.configs[i].info.clone(), true
}

func (i Info) clone() Info {
	i.Groups = slices.Clone(i.Groups)
	i.Devices = slices.Clone(i.Devices)
	i.Values = slices.Clone(i.Values)
	i.Secrets = slices.Clone(i.Secrets)
	return i
}

// Covers reports whether the DeviceConfig called cfg applies to the
// device called name with the given identity and inventory (whether or
// not more specific manifests override its keys).
func (s *Set) Covers(cfg, name string, identity, inventory map[string]string) bool {
	if s == nil {
		return false
	}
	i, ok := s.byName[cfg]
	if !ok {
		return false
	}
	c := s.configs[i]
	switch c.info.Level {
	case schema.SpecificityFleet:
		return true
	case schema.SpecificityDevice:
		return slices.Contains(c.info.Devices, name)
	}
	for _, gname := range c.info.Groups {
		g := s.groups[gname]
		if g.members[name] || g.selector != nil && g.selector.Matches(identity, inventory) {
			return true
		}
	}
	return false
}

// DevicesOf returns, sorted, the devices the DeviceConfig called cfg
// applies to as far as the repository tells: for the whole fleet every
// Device manifest, for groups their static members, otherwise the
// devices it names. A config with Info.Selectors applies to more devices,
// which Covers tells one by one.
func (s *Set) DevicesOf(cfg string) []string {
	if s == nil {
		return nil
	}
	i, ok := s.byName[cfg]
	if !ok {
		return nil
	}
	c := s.configs[i]
	switch c.info.Level {
	case schema.SpecificityFleet:
		return slices.Clone(s.devices())
	case schema.SpecificityDevice:
		return slices.Compact(slices.Sorted(slices.Values(c.info.Devices)))
	}
	seen := make(map[string]bool)
	for _, g := range c.info.Groups {
		maps.Copy(seen, s.groups[g].members)
	}
	return slices.Sorted(maps.Keys(seen))
}

// The methods below take a Set value, not a pointer, so that a Set
// printed by value (fmt dereferences the top-level pointer of a bad verb,
// such as %d, and would show the fields) summarizes too.

// summary describes s without a value.
func (s Set) summary() string {
	return fmt.Sprintf("deviceconfig.Set{%d configs, %d secret keys}", len(s.configs), len(s.secret))
}

// String describes s without any value.
func (s Set) String() string { return s.summary() }

// GoString describes s without any value.
func (s Set) GoString() string { return s.summary() }

// Format writes the summary of s, whatever the verb: no fmt verb shows a
// value.
func (s Set) Format(f fmt.State, _ rune) { io.WriteString(f, s.summary()) }

// LogValue logs the names of the manifests and of the secret keys.
func (s Set) LogValue() slog.Value {
	names := make([]string, len(s.configs))
	for i, c := range s.configs {
		names[i] = c.info.Name
	}
	return slog.GroupValue(
		slog.Any("configs", names),
		slog.Any("secret_keys", slices.Sorted(maps.Keys(s.secret))),
	)
}

// MarshalJSON encodes the descriptions of the manifests (Configs).
func (s Set) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Configs []Info `json:"configs"`
	}{s.Configs()})
}
