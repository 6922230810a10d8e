package schema

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"hash/maphash"
	"maps"
	"math/bits"
	"slices"
	"strconv"
	"strings"
	"time"
)

// index maps the names of each kind to their manifests.
type index struct {
	artifacts map[string]*Artifact
	rollouts  map[string]*Rollout
	groups    map[string]*DeviceGroup
	devices   map[string]*Device
	checks    map[string]*MonitorCheck
	configs   map[string]*DeviceConfig
	keys      map[string]*SigningKey
	notifs    map[string]*Notification
	operators map[string]*Operator
}

// crossCheck runs the checks that need the whole fleet.
func (l *loader) crossCheck() {
	f := l.fleet
	l.names = make(map[Kind][]string)
	ix := &index{
		artifacts: indexNames(l, f.Artifacts),
		rollouts:  indexNames(l, f.Rollouts),
		groups:    indexNames(l, f.Groups),
		devices:   l.deviceIndex(),
		checks:    indexNames(l, f.Checks),
		configs:   indexNames(l, f.Configs),
		keys:      indexNames(l, f.Keys),
		notifs:    indexNames(l, f.Notifications),
		operators: indexNames(l, f.Operators),
	}
	for i := range f.Artifacts {
		a := &f.Artifacts[i]
		refs(l, &a.Meta, "spec.signedBy", KindSigningKey, a.Spec.SignedBy, ix.keys)
	}
	for i := range f.Rollouts {
		r := &f.Rollouts[i]
		ref(l, &r.Meta, "spec.artifact", KindArtifact, r.Spec.Artifact, ix.artifacts)
		l.checkTargetRefs(&r.Meta, "spec.target", &r.Spec.Target, ix)
		for j, p := range r.Spec.Phases {
			refs(l, &r.Meta, fmt.Sprintf("spec.phases[%d].abort.alerts", j), KindMonitorCheck, p.Abort.Alerts, ix.checks)
		}
	}
	for i := range f.Groups {
		g := &f.Groups[i]
		refs(l, &g.Meta, "spec.members", KindDevice, g.Spec.Members, ix.devices)
	}
	for i := range f.Checks {
		c := &f.Checks[i]
		l.checkTargetRefs(&c.Meta, "spec.target", &c.Spec.Target, ix)
	}
	for i := range f.Configs {
		c := &f.Configs[i]
		l.checkTargetRefs(&c.Meta, "spec.target", &c.Spec.Target, ix)
	}
	for i := range f.Notifications {
		n := &f.Notifications[i]
		refs(l, &n.Meta, "spec.rollouts", KindRollout, n.Spec.Rollouts, ix.rollouts)
		refs(l, &n.Meta, "spec.checks", KindMonitorCheck, n.Spec.Checks, ix.checks)
	}
	l.checkRolloutOverlaps(ix)
	l.checkConfigConflicts(ix)
	l.checkDeviceCAs(time.Now())
	l.checkOperatorRefs(ix)
}

// deviceIndex maps device names to devices, reporting duplicates. When the
// devices are shared with an earlier valid load, so is their index.
func (l *loader) deviceIndex() map[string]*Device {
	if d := l.shared; d != nil && d.index != nil {
		return d.index
	}
	n := l.errs.count()
	ix := indexNames(l, l.fleet.Devices)
	l.checkIdentities(l.fleet.Devices)
	if d := l.shared; d != nil && l.errs.count() == n {
		d.index = ix
	}
	return ix
}

// checkIdentities reports a device whose identity another device has
// already: a device's ID is derived from its identity, so the controller
// records the two as one device, and the later manifest would either
// never be admitted (trust on first use: the first declared wins) or
// clash with the key the other bound. Each identity's keyed hash and its
// device's position are packed in one word, the words sorted, and only
// devices whose hashes agree compared: a million devices cost 8 bytes
// each for the length of the check, where a map of hashes took three
// times as long, most of it waiting for memory.
func (l *loader) checkIdentities(devs []Device) {
	seed := maphash.MakeSeed()
	idxBits := bits.Len(uint(len(devs)))
	mask := uint64(1)<<idxBits - 1
	words := make([]uint64, 0, len(devs))
	var buf []byte
	for i := range devs {
		id := devs[i].Spec.Identity
		if len(id) == 0 {
			continue
		}
		// The sum of each attribute's hash: the same in any order, so
		// the map is read once, unsorted.
		var h uint64
		for k, v := range id {
			buf = append(append(binary.AppendUvarint(buf[:0], uint64(len(k))), k...), v...)
			h += maphash.Bytes(seed, buf)
		}
		words = append(words, h&^mask|uint64(i))
	}
	slices.Sort(words) // equal hashes in declaration order
	for a := 0; a < len(words); {
		b := a + 1
		for b < len(words) && words[b]&^mask == words[a]&^mask {
			b++
		}
		for k := a + 1; k < b; k++ { // rarely any: devices with equal hashes
			d := &devs[words[k]&mask]
			for _, w := range words[a:k] {
				first := &devs[w&mask]
				if !maps.Equal(first.Spec.Identity, d.Spec.Identity) {
					continue
				}
				if first.Name != d.Name { // a duplicate name is reported already
					l.errs.at(&d.Meta, "spec.identity", "device %q: identity %s is already device %q's (%s); a device's ID is derived from its identity, "+
						"so both would be one device: give each device its own identity, or declare the device once",
						d.Name, identityString(d.Spec.Identity), first.Name, first.Source)
				}
				break
			}
		}
		a = b
	}
}

// identityString writes an identity as name=value pairs, in the names'
// order.
func identityString(id map[string]string) string {
	var b strings.Builder
	for i, k := range slices.Sorted(maps.Keys(id)) {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%q", k, id[k])
	}
	return b.String()
}

// indexNames maps names to manifests, reporting duplicates.
func indexNames[T any, P interface {
	*T
	Manifest
}](l *loader, s []T) map[string]*T {
	ix := make(map[string]*T, len(s))
	for i := range s {
		m := P(&s[i]).Metadata()
		if first, ok := ix[m.Name]; ok {
			l.errs.at(m, "metadata.name", "duplicate %s name %q; first declared at %s", m.Kind, m.Name, P(first).Metadata().Source)
			continue
		}
		ix[m.Name] = &s[i]
	}
	return ix
}

// ref reports a reference at path to a name that is not declared.
func ref[T any](l *loader, m *Meta, path string, kind Kind, name string, names map[string]*T) {
	if _, ok := names[name]; ok || name == "" {
		return
	}
	if l.errs.full() {
		l.errs.dropped++
		return
	}
	sorted, ok := l.names[kind]
	if !ok {
		sorted = slices.Sorted(maps.Keys(names))
		l.names[kind] = sorted
	}
	sug := ""
	if l.suggested+len(sorted) <= suggestBudget {
		l.suggested += len(sorted)
		sug = didYouMean(name, sorted)
	}
	l.errs.at(m, path, "unknown %s %q%s", kind, name, sug)
}

// suggestBudget bounds the names compared to unknown references for a
// "did you mean" in one Load: a broken fleet of many thousands of
// manifests may hold a thousand unknown references, each of which would
// otherwise be compared with every name of its kind.
const suggestBudget = 1_000_000

func refs[T any](l *loader, m *Meta, path string, kind Kind, list []string, names map[string]*T) {
	for i, name := range list {
		ref(l, m, fmt.Sprintf("%s[%d]", path, i), kind, name, names)
	}
}

func (l *loader) checkTargetRefs(m *Meta, at string, t *Target, ix *index) {
	refs(l, m, at+".groups", KindDeviceGroup, t.Groups, ix.groups)
	refs(l, m, at+".devices", KindDevice, t.Devices, ix.devices)
}

// overlapsStopped reports that the overlap checks ran out of
// MaxOverlapPairs, at the manifest m being checked then.
func (l *loader) overlapsStopped(m *Meta, what string) {
	l.errs.at(m, "spec.target", "more than %d pairs of %s may reach the same devices; checking stopped: "+
		"narrow their targets, or give them different priorities (rollouts) or specificities (configs)", MaxOverlapPairs, what)
}

// checkRolloutOverlaps reports rollouts of equal priority that may target
// the same device: the controller could not tell which one a device gets.
func (l *loader) checkRolloutOverlaps(ix *index) {
	rs := l.fleet.Rollouts
	byPriority := make(map[int][]int)
	for i := range rs {
		if ix.rollouts[rs[i].Name] != &rs[i] {
			continue // a duplicate, reported already
		}
		byPriority[rs[i].Spec.Priority] = append(byPriority[rs[i].Spec.Priority], i)
	}
	for _, prio := range slices.Sorted(maps.Keys(byPriority)) {
		group := byPriority[prio]
		if len(group) < 2 {
			continue
		}
		reaches := make([]*reach, len(group))
		for k, i := range group {
			r := l.reachOf(&rs[i].Spec.Target, ix)
			if a := ix.artifacts[rs[i].Spec.Artifact]; a != nil {
				r.deviceTypes = a.Spec.DeviceTypes
			}
			reaches[k] = &r
		}
		complete := overlaps(reaches, ix, &l.overlapBudget, func(a, b int, why string) {
			first, r := &rs[group[a]], &rs[group[b]]
			at := "spec.priority"
			if r.Pos(at) == r.Source {
				at = "spec.target"
			}
			l.errs.at(&r.Meta, at, "rollouts %q and %q (%s) may target the same devices (%s) and both have priority %d; give one a higher spec.priority",
				r.Name, first.Name, first.Source, why, prio)
		})
		if !complete {
			l.overlapsStopped(&rs[group[len(group)-1]].Meta, "rollouts")
			return
		}
	}
}

// checkConfigConflicts reports DeviceConfigs of equal specificity that set
// a key to different values, or to different secrets, or to a value in
// one and a secret in the other, for devices they may both target.
func (l *loader) checkConfigConflicts(ix *index) {
	cs := l.fleet.Configs
	type setting struct {
		config int
		value  string
		secret *ConfigSecret // nil: a value
	}
	same := func(a, b setting) bool {
		if (a.secret == nil) != (b.secret == nil) {
			return false
		}
		if a.secret != nil {
			return a.secret.Equal(*b.secret)
		}
		return a.value == b.value
	}
	describe := func(s setting) string {
		if s.secret == nil {
			return strconv.Quote(s.value)
		}
		return s.secret.Describe()
	}
	type bucket struct {
		spec Specificity
		key  string
	}
	byKey := make(map[bucket][]setting)
	for i := range cs {
		if ix.configs[cs[i].Name] != &cs[i] {
			continue
		}
		spec := cs[i].Specificity()
		for k, v := range cs[i].Spec.Values {
			byKey[bucket{spec, k}] = append(byKey[bucket{spec, k}], setting{config: i, value: v})
		}
		for k, v := range cs[i].Spec.Secrets {
			byKey[bucket{spec, k}] = append(byKey[bucket{spec, k}], setting{config: i, secret: &v})
		}
	}
	reaches := make(map[int]*reach)
	reachOf := func(i int) *reach {
		if r, ok := reaches[i]; ok {
			return r
		}
		r := l.reachOf(&cs[i].Spec.Target, ix)
		reaches[i] = &r
		return &r
	}
	buckets := slices.SortedFunc(maps.Keys(byKey), func(a, b bucket) int {
		return cmp.Or(cmp.Compare(a.spec, b.spec), cmp.Compare(a.key, b.key))
	})
	for _, bk := range buckets {
		settings := byKey[bk]
		// Settings of one key come in manifest order, values before
		// secrets of each manifest (a key in both is reported by
		// checkConfig); order them by manifest, for stable messages.
		slices.SortStableFunc(settings, func(a, b setting) int { return cmp.Compare(a.config, b.config) })
		if !slices.ContainsFunc(settings, func(s setting) bool { return !same(s, settings[0]) }) {
			continue // one value: no conflict
		}
		rs := make([]*reach, len(settings))
		for k, s := range settings {
			rs[k] = reachOf(s.config)
		}
		complete := overlaps(rs, ix, &l.overlapBudget, func(a, b int, why string) {
			sa, sb := settings[a], settings[b]
			if same(sa, sb) || sa.config == sb.config {
				return
			}
			first, c := &cs[sa.config], &cs[sb.config]
			at := ValuePath(bk.key)
			if sb.secret != nil {
				at = SecretPath(bk.key)
			}
			was := describe(sa)
			if sa.secret != nil && sb.secret != nil && sa.secret.Age != "" && sb.secret.Age != "" {
				was = "a different age secret" // the ciphertexts differ; neither is worth printing
			}
			l.errs.at(&c.Meta, at, "%q is %s here but %s in DeviceConfig %q (%s), which may apply to the same devices (%s) with the same specificity",
				bk.key, describe(sb), was, first.Name, first.Source, why)
		})
		if !complete {
			l.overlapsStopped(&cs[settings[len(settings)-1].config].Meta, "DeviceConfigs")
			return
		}
	}
}
