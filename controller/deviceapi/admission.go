package deviceapi

import (
	"maps"
	"strings"
	"sync/atomic"

	"github.com/gitfleet/gitfleet/controller/reconcile"
	"github.com/gitfleet/gitfleet/schema"
)

// Admission rule. A Device manifest admits a device when
//
//   - its identity, when listed, equals the device's id_data: the same
//     attribute names with the same values, each a JSON string in id_data
//     (a list, number or boolean never equals a string), and
//   - its publicKeySHA256, when set, is the fingerprint of the key that
//     signed the auth request; without it (trustOnFirstUse) the key must be
//     the one the store bound to the device on its first accepted request.
//
// Equality rather than "these attributes match" keeps one manifest to one
// device: the rollout engine knows a device by the name of the manifest
// that admits it. A manifest with only a key admits whatever identity
// holds that key: the key is the device (devices should not share keys).
// `gitfleet devices accept` prints both identity and key. When several
// manifests admit a device, the first in file and line order wins.

// admission indexes a Snapshot's Device manifests so that a lookup costs
// two map reads, whatever the fleet's size.
type admission struct {
	byKey      map[string][]*schema.Device // by fingerprint, manifests with a key
	byIdentity map[string][]*schema.Device // by canonical identity, trust-on-first-use manifests
}

func newAdmission(f *schema.Fleet) *admission {
	a := &admission{byKey: map[string][]*schema.Device{}, byIdentity: map[string][]*schema.Device{}}
	if f == nil {
		return a
	}
	for i := range f.Devices {
		d := &f.Devices[i]
		switch {
		case d.Spec.PublicKeySHA256 != "":
			fp := strings.ToLower(d.Spec.PublicKeySHA256)
			a.byKey[fp] = append(a.byKey[fp], d)
		case len(d.Spec.Identity) > 0 && d.Spec.TrustOnFirstUse:
			k := string(Attributes(d.Spec.Identity).Canonical())
			a.byIdentity[k] = append(a.byIdentity[k], d)
		}
	}
	return a
}

// admit returns the manifest that admits a device with this identity
// (its string attributes; typed when id_data has other values, which no
// manifest identity equals) and key fingerprint, or nil. A
// trust-on-first-use manifest it returns (no PublicKeySHA256) admits the
// device only if the store binds fp to it.
func (a *admission) admit(identity Attributes, typed bool, fp string) *schema.Device {
	var best *schema.Device
	for _, d := range a.byKey[strings.ToLower(fp)] {
		if len(d.Spec.Identity) == 0 || !typed && maps.Equal(d.Spec.Identity, identity) {
			best = first(best, d)
		}
	}
	if !typed {
		for _, d := range a.byIdentity[string(identity.Canonical())] {
			best = first(best, d)
		}
	}
	return best
}

// first returns whichever of a and b the loader listed first (file, then
// line); a may be nil.
func first(a, b *schema.Device) *schema.Device {
	switch {
	case a == nil:
		return b
	case b.Source.File != a.Source.File:
		if b.Source.File < a.Source.File {
			return b
		}
		return a
	case b.Source.Line < a.Source.Line:
		return b
	}
	return a
}

// admissions caches the index of the live Snapshot; it is rebuilt once per
// Snapshot, by whichever request first sees the new one, unless the new
// Snapshot has the very same devices as the old (a commit that changed no
// device declaration): then the index carries over.
type admissions struct {
	cur atomic.Pointer[admissionEntry]
}

type admissionEntry struct {
	snap *reconcile.Snapshot
	idx  *admission
}

func (c *admissions) get(snap *reconcile.Snapshot) *admission {
	if e := c.cur.Load(); e != nil && e.snap == snap {
		return e.idx
	}
	var f *schema.Fleet
	if snap != nil {
		f = snap.Fleet
	}
	if e := c.cur.Load(); e != nil && e.snap != nil && e.snap.Fleet.SameDevices(f) {
		c.cur.Store(&admissionEntry{snap: snap, idx: e.idx})
		return e.idx
	}
	e := &admissionEntry{snap: snap, idx: newAdmission(f)}
	c.cur.Store(e)
	return e.idx
}
