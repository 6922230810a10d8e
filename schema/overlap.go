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

// overlaps calls report(a, b, why) for every pair of reaches a < b of rs
// that may reach the same device (see mayOverlap), ordered by b, then a.
//
// Comparing every pair is quadratic: 10,000 configs setting one key, or
// thousands of rollouts of one priority, would take seconds. Instead,
// overlaps indexes the reaches by the devices they name and their
// selectors by the attribute values they require, and calls mayOverlap
// only on the pairs an index says may overlap: those that share a device,
// where a selector may match a device of the other, where the selectors
// of both require values of a common attribute that intersect, and where
// either targets the whole fleet. Pairs an index cannot rule out, such as
// two selectors on unrelated attributes, are compared.
//
// budget, when not nil, is how many candidate pairs may still be
// compared: overlaps takes the pairs of each b from it, and stops,
// returning false, when it runs out. Targets that genuinely overlap (a
// thousand rollouts of one priority selecting the same devices) cannot
// be ruled out by any index, and every pair of them would be compared.
func overlaps(rs []*reach, ix *index, budget *int, report func(a, b int, why string)) bool {
	o := newOverlapIndex(rs, ix)
	mark := make([]int, len(rs))
	for i := range mark {
		mark[i] = -1
	}
	var cands []int
	for b, rb := range rs {
		if rb.empty() {
			continue
		}
		cands = cands[:0]
		var named, sels int // marked candidates that name devices, that have selectors
		add := func(a int) {
			if a < b && mark[a] != b && !rs[a].empty() {
				mark[a] = b
				cands = append(cands, a)
				if len(rs[a].names) > 0 {
					named++
				}
				if len(rs[a].selectors) > 0 {
					sels++
				}
			}
		}
		allNamed := func() bool { return named == o.namedBefore[b] }
		allSels := func() bool { return sels == o.selsBefore[b] }

		if rb.all {
			for a := range b {
				add(a)
			}
		}
		for _, a := range o.alls {
			add(a)
		}
		// Devices both name.
		for _, d := range rb.names {
			if allNamed() {
				break
			}
			for _, a := range o.byDevice[d] {
				add(a)
			}
		}
		// Devices of others that a selector of b may match.
		for _, s := range rb.selectors {
			if allNamed() {
				break
			}
			o.mayMatchDevices(s, func(d string) bool {
				for _, a := range o.byDevice[d] {
					add(a)
				}
				return !allNamed()
			})
		}
		// Selectors of others that may match a device of b.
		if len(rb.names) > 0 {
			for _, a := range o.matchUnkeyed {
				add(a)
			}
		}
		for _, d := range rb.names {
			if allSels() {
				break
			}
			o.selectorsMayMatch(d, b, add)
		}
		// Selectors of others that may match what a selector of b does.
		if len(rb.selectors) > 0 {
			for _, a := range o.meetUnkeyed {
				add(a)
			}
		}
		for _, s := range rb.selectors {
			if allSels() {
				break
			}
			o.selectorsMayMeet(constraints(s, rb.deviceTypes), add)
		}

		if budget != nil {
			if *budget -= len(cands); *budget < 0 {
				return false
			}
		}
		slices.Sort(cands)
		for _, a := range cands {
			if why, ok := mayOverlap(rs[a], rb, ix); ok {
				report(a, b, why)
			}
		}
	}
	return true
}

// An attr is an attribute of a device, as a selector names it.
type attr struct{ scope, name string }

// deviceTypeAttr is the attribute a device's declared type answers.
var deviceTypeAttr = attr{"inventory", "device_type"}

// An overlapIndex indexes reaches for overlaps.
type overlapIndex struct {
	rs []*reach
	ix *index

	alls        []int            // reaches of the whole fleet
	byDevice    map[string][]int // named devices: the reaches naming them, ascending
	devices     []string         // the keys of byDevice
	namedBefore []int            // by b: how many reaches before b name devices
	selsBefore  []int            // by b: how many reaches before b have selectors

	// The named devices by the value of an identity attribute (or their
	// type, under deviceTypeAttr), how many declare it, and, built on
	// demand, those that do not (or are not declared at all).
	devBy      map[attr]map[string][]string
	devHave    map[attr]int
	devLacking map[attr][]string

	// Selectors indexed for matching devices: by the values one of their
	// identity or device type conditions accepts (keyed on that
	// attribute), or unkeyed when they have no such condition.
	matchBy      map[attr]map[string][]int
	matchKeyed   map[attr][]int
	matchUnkeyed []int
	keyedAdded   map[attr]int // b+1 when matchKeyed[attr] was added for b

	// Selectors (with their reach's device types) indexed for meeting
	// other selectors: by the values of one of their finite conditions,
	// or unkeyed.
	meetBy      map[attr]map[string][]int
	meetKeyed   map[attr][]int
	meetUnkeyed []int
}

func newOverlapIndex(rs []*reach, ix *index) *overlapIndex {
	o := &overlapIndex{
		rs: rs, ix: ix,
		byDevice:    make(map[string][]int),
		namedBefore: make([]int, len(rs)),
		selsBefore:  make([]int, len(rs)),
		devBy:       make(map[attr]map[string][]string),
		devHave:     make(map[attr]int),
		devLacking:  make(map[attr][]string),
		matchBy:     make(map[attr]map[string][]int),
		matchKeyed:  make(map[attr][]int),
		keyedAdded:  make(map[attr]int),
		meetBy:      make(map[attr]map[string][]int),
		meetKeyed:   make(map[attr][]int),
	}
	named, sels := 0, 0
	for i, r := range rs {
		o.namedBefore[i], o.selsBefore[i] = named, sels
		if r.empty() {
			continue
		}
		if r.all {
			o.alls = append(o.alls, i)
		}
		if len(r.names) > 0 {
			named++
		}
		if len(r.selectors) > 0 {
			sels++
		}
		for _, d := range r.names {
			if o.byDevice[d] == nil {
				o.devices = append(o.devices, d)
			}
			o.byDevice[d] = append(o.byDevice[d], i)
		}
	}
	for _, d := range o.devices {
		dev := ix.devices[d]
		if dev == nil {
			continue
		}
		for name, v := range dev.Spec.Identity {
			o.indexDevice(attr{"identity", name}, v, d)
		}
		if dev.Spec.DeviceType != "" {
			o.indexDevice(deviceTypeAttr, dev.Spec.DeviceType, d)
		}
	}

	// Count what the selectors require, to key each on its most
	// selective condition.
	counts := make(map[attr]map[string]int)
	for _, r := range rs {
		for _, s := range r.selectors {
			for _, c := range constraints(s, r.deviceTypes) {
				vals, ok := c.match.values()
				if !ok {
					continue
				}
				a := attr{c.scope, c.name}
				if counts[a] == nil {
					counts[a] = make(map[string]int)
				}
				for _, v := range vals {
					counts[a][v]++
				}
			}
		}
	}
	for i, r := range rs {
		if r.empty() {
			continue
		}
		for _, s := range r.selectors {
			if c, ok := o.deviceKey(s); ok {
				indexSelector(o.matchBy, o.matchKeyed, c, i)
			} else {
				o.matchUnkeyed = append(o.matchUnkeyed, i)
			}
			if c, ok := meetKey(constraints(s, r.deviceTypes), counts); ok {
				indexSelector(o.meetBy, o.meetKeyed, c, i)
			} else {
				o.meetUnkeyed = append(o.meetUnkeyed, i)
			}
		}
	}
	return o
}

func (o *overlapIndex) indexDevice(a attr, v, d string) {
	if o.devBy[a] == nil {
		o.devBy[a] = make(map[string][]string)
	}
	o.devBy[a][v] = append(o.devBy[a][v], d)
	o.devHave[a]++
}

func indexSelector(by map[attr]map[string][]int, keyed map[attr][]int, c constraint, i int) {
	a := attr{c.scope, c.name}
	if by[a] == nil {
		by[a] = make(map[string][]int)
	}
	vals, _ := c.match.values()
	for _, v := range vals {
		if l := by[a][v]; len(l) == 0 || l[len(l)-1] != i {
			by[a][v] = append(l, i)
		}
	}
	if l := keyed[a]; len(l) == 0 || l[len(l)-1] != i {
		keyed[a] = append(l, i)
	}
}

// deviceKey returns the condition of s on an identity attribute or on the
// device type with a finite set of values that the fewest named devices
// may meet, if s has one: mayMatch looks at nothing else.
func (o *overlapIndex) deviceKey(s *Selector) (constraint, bool) {
	var best constraint
	bestCost := -1
	for _, c := range constraints(s, nil) {
		a := attr{c.scope, c.name}
		if c.scope != "identity" && a != deviceTypeAttr {
			continue
		}
		vals, ok := c.match.values()
		if !ok {
			continue
		}
		cost := len(o.devices) - o.devHave[a]
		for _, v := range vals {
			cost += len(o.devBy[a][v])
		}
		if bestCost < 0 || cost < bestCost || cost == bestCost && less(c, best) {
			best, bestCost = c, cost
		}
	}
	return best, bestCost >= 0
}

// meetKey returns the finite condition of cs whose values the fewest
// selectors require.
func meetKey(cs []constraint, counts map[attr]map[string]int) (constraint, bool) {
	var best constraint
	bestCost := -1
	for _, c := range cs {
		vals, ok := c.match.values()
		if !ok {
			continue
		}
		cost := 0
		for _, v := range vals {
			cost += counts[attr{c.scope, c.name}][v]
		}
		if bestCost < 0 || cost < bestCost || cost == bestCost && less(c, best) {
			best, bestCost = c, cost
		}
	}
	return best, bestCost >= 0
}

// less orders constraints by attribute, so that choices between equally
// good ones do not depend on map order.
func less(a, b constraint) bool {
	return a.scope < b.scope || a.scope == b.scope && a.name < b.name
}

// mayMatchDevices calls f with every named device that s may match (see
// mayMatch), and a few it cannot, until f returns false.
func (o *overlapIndex) mayMatchDevices(s *Selector, f func(d string) bool) {
	c, ok := o.deviceKey(s)
	if !ok {
		for _, d := range o.devices {
			if !f(d) {
				return
			}
		}
		return
	}
	a := attr{c.scope, c.name}
	vals, _ := c.match.values()
	for _, v := range vals {
		for _, d := range o.devBy[a][v] {
			if !f(d) {
				return
			}
		}
	}
	for _, d := range o.lacking(a) {
		if !f(d) {
			return
		}
	}
}

// lacking returns the named devices that do not declare a.
func (o *overlapIndex) lacking(a attr) []string {
	if l, ok := o.devLacking[a]; ok {
		return l
	}
	var l []string
	for _, d := range o.devices {
		dev := o.ix.devices[d]
		switch {
		case dev == nil:
		case a == deviceTypeAttr:
			if dev.Spec.DeviceType != "" {
				continue
			}
		default:
			if _, ok := dev.Spec.Identity[a.name]; ok {
				continue
			}
		}
		l = append(l, d)
	}
	o.devLacking[a] = l
	return l
}

// selectorsMayMatch calls add with every reach whose selectors are keyed
// (see deviceKey) and may match the device d, and a few whose selectors
// cannot. b is the reach being compared, for which all the selectors
// keyed on an attribute are added at most once.
func (o *overlapIndex) selectorsMayMatch(d string, b int, add func(int)) {
	dev := o.ix.devices[d]
	for a, keyed := range o.matchKeyed {
		var v string
		ok := false
		if dev != nil {
			if a == deviceTypeAttr {
				v, ok = dev.Spec.DeviceType, dev.Spec.DeviceType != ""
			} else {
				v, ok = dev.Spec.Identity[a.name]
			}
		}
		if !ok {
			if o.keyedAdded[a] != b+1 {
				o.keyedAdded[a] = b + 1
				for _, i := range keyed {
					add(i)
				}
			}
			continue
		}
		for _, i := range o.matchBy[a][v] {
			add(i)
		}
	}
}

// selectorsMayMeet calls add with every reach with a keyed selector (see
// meetKey) that a device meeting the conditions cs may also meet, and a
// few that no device can.
func (o *overlapIndex) selectorsMayMeet(cs []constraint, add func(int)) {
	for a, keyed := range o.meetKeyed {
		var vals []string
		finite := false
		for _, c := range cs {
			if c.scope == a.scope && c.name == a.name {
				if vals, finite = c.match.values(); finite {
					break
				}
			}
		}
		if !finite {
			for _, i := range keyed {
				add(i)
			}
			continue
		}
		for _, v := range vals {
			for _, i := range o.meetBy[a][v] {
				add(i)
			}
		}
	}
}
