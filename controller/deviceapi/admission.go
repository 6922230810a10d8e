package deviceapi

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"hash/maphash"
	"maps"
	"slices"
	"strings"
	"sync/atomic"
	"unsafe"

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
// two map reads, whatever the fleet's size. Each map holds the first
// manifest (in file and line order) with a key or identity; the rare
// others with the same key or identity are in more, under that first
// one. (A slice per key cost a million small objects more for a million
// devices, for the collector to trace at every cycle.)
//
// Keys are the fingerprints' 32 bytes, kept in the map itself, and each
// entry carries a hash of its manifest's identity: a poll's lookup then
// touches the map and the manifest, not a key string and an identity map
// elsewhere in a heap of a million devices (each a cache and TLB miss;
// they were most of a poll's admission cost).
type admission struct {
	byKey      map[[sha256.Size]byte]admEntry // by fingerprint, manifests with a key
	oddKeys    map[string]*schema.Device      // keys that are not 64 hex digits, lower-cased (none in a valid fleet)
	byIdentity map[string]*schema.Device      // by identityKey, trust-on-first-use manifests
	more       map[*schema.Device][]*schema.Device
}

// admEntry is a manifest with a key, and idHash of its identity (0: it
// lists none).
type admEntry struct {
	d  *schema.Device
	id uint64
}

// idSeed keys idHash; per process, so no identity is made to collide.
var idSeed = maphash.MakeSeed()

// idHash is the hash of an identityKey; never 0 for an identity with
// attributes.
func idHash(key []byte) uint64 {
	return maphash.Bytes(idSeed, key) | 1
}

func newAdmission(f *schema.Fleet) *admission {
	a := &admission{}
	if f == nil {
		a.byKey, a.byIdentity = map[[sha256.Size]byte]admEntry{}, map[string]*schema.Device{}
		return a
	}
	keyed, tofu := 0, 0
	for i := range f.Devices {
		switch s := &f.Devices[i].Spec; {
		case s.PublicKeySHA256 != "":
			keyed++
		case len(s.Identity) > 0 && s.TrustOnFirstUse:
			tofu++
		}
	}
	a.byKey, a.byIdentity = make(map[[sha256.Size]byte]admEntry, keyed), make(map[string]*schema.Device, tofu)
	addMore := func(first, d *schema.Device) {
		if a.more == nil {
			a.more = map[*schema.Device][]*schema.Device{}
		}
		a.more[first] = append(a.more[first], d)
	}
	add := func(m map[string]*schema.Device, k string, d *schema.Device) {
		if first, ok := m[k]; ok {
			addMore(first, d)
			return
		}
		m[k] = d
	}
	var buf [256]byte
	for i := range f.Devices {
		d := &f.Devices[i]
		switch {
		case d.Spec.PublicKeySHA256 != "":
			fp, ok := fingerprint(d.Spec.PublicKeySHA256)
			if !ok {
				if a.oddKeys == nil {
					a.oddKeys = map[string]*schema.Device{}
				}
				add(a.oddKeys, strings.ToLower(d.Spec.PublicKeySHA256), d)
				continue
			}
			if first, ok := a.byKey[fp]; ok {
				addMore(first.d, d)
				continue
			}
			e := admEntry{d: d}
			if len(d.Spec.Identity) > 0 {
				e.id = idHash(identityKey(buf[:0], d.Spec.Identity))
			}
			a.byKey[fp] = e
		case len(d.Spec.Identity) > 0 && d.Spec.TrustOnFirstUse:
			add(a.byIdentity, string(identityKey(buf[:0], d.Spec.Identity)), d)
		}
	}
	return a
}

// fingerprint decodes a key fingerprint (64 hex digits, either case).
func fingerprint(s string) (fp [sha256.Size]byte, ok bool) {
	if len(s) != 2*sha256.Size {
		return fp, false
	}
	_, err := hex.Decode(fp[:], unsafe.Slice(unsafe.StringData(s), len(s)))
	return fp, err == nil
}

// admit returns the manifest that admits a device with this identity
// (its string attributes; typed when id_data has other values, which no
// manifest identity equals) and key fingerprint, or nil. A
// trust-on-first-use manifest it returns (no PublicKeySHA256) admits the
// device only if the store binds fp to it.
func (a *admission) admit(identity Attributes, typed bool, fp string) *schema.Device {
	var buf [256]byte
	var key []byte
	if !typed {
		key = identityKey(buf[:0], identity)
	}
	return a.lookup(fp, func(id map[string]string) bool { return !typed && maps.Equal(id, identity) }, key)
}

// admitRaw is admit for an identity as a token carries it, read in place:
// {"name":"value",…} with names in increasing order and strings without
// escapes, as signToken writes it (string attributes only). An identity in
// any other form is admitted by nothing here.
func (a *admission) admitRaw(identity string, fp string) *schema.Device {
	var buf [256]byte
	key, ok := rawIdentityKey(buf[:0], identity)
	if !ok {
		return nil
	}
	return a.lookup(fp, func(id map[string]string) bool { return rawEqual(identity, id) }, key)
}

// lookup is the search of admit: the manifests with key fp whose identity
// is none or the device's, and the trust-on-first-use manifests with the
// device's identityKey (idKey; nil when no identity can equal), the first
// of them. The usual manifest (its key's only one) is compared by idHash;
// equal compares the rare others.
func (a *admission) lookup(fp string, equal func(map[string]string) bool, idKey []byte) *schema.Device {
	var best *schema.Device
	keyed := func(d *schema.Device) {
		if len(d.Spec.Identity) == 0 || idKey != nil && equal(d.Spec.Identity) {
			best = first(best, d)
		}
	}
	var d *schema.Device
	if k, ok := fingerprint(fp); ok {
		if e, ok := a.byKey[k]; ok {
			d = e.d
			if e.id == 0 || idKey != nil && e.id == idHash(idKey) {
				best = d
			}
		}
	} else if a.oddKeys != nil {
		if d = a.oddKeys[strings.ToLower(fp)]; d != nil {
			keyed(d)
		}
	}
	if d != nil && a.more != nil {
		for _, o := range a.more[d] {
			keyed(o)
		}
	}
	if idKey != nil && len(a.byIdentity) > 0 {
		if d := a.byIdentity[string(idKey)]; d != nil {
			best = first(best, d)
			for _, o := range a.more[d] {
				best = first(best, o)
			}
		}
	}
	return best
}

// eachRawAttr calls f with each name and value of an identity in the form
// admitRaw reads, in order; false when it is not in that form (names not
// strictly increasing, so none twice) or f returned false.
func eachRawAttr(raw string, f func(name, value string) bool) bool {
	p := claimParser{s: raw}
	if !p.lit("{") {
		return false
	}
	if p.lit("}") {
		return p.i == len(raw)
	}
	prev := ""
	for i := 0; ; i++ {
		var k, v string
		if !p.str(&k) || !p.lit(":") || !p.str(&v) || i > 0 && k <= prev || !f(k, v) {
			return false
		}
		prev = k
		if p.lit("}") {
			return p.i == len(raw)
		}
		if !p.lit(",") {
			return false
		}
	}
}

// rawEqual reports whether a raw identity (admitRaw) has exactly the
// attributes of id.
func rawEqual(raw string, id map[string]string) bool {
	n := 0
	ok := eachRawAttr(raw, func(k, v string) bool {
		n++
		w, found := id[k]
		return found && w == v
	})
	return ok && n == len(id)
}

// rawIdentityKey appends to b the identityKey of a raw identity
// (admitRaw), whose names are already in order.
func rawIdentityKey(b []byte, raw string) ([]byte, bool) {
	ok := eachRawAttr(raw, func(k, v string) bool {
		b = binary.AppendUvarint(b, uint64(len(k)))
		b = append(b, k...)
		b = binary.AppendUvarint(b, uint64(len(v)))
		b = append(b, v...)
		return true
	})
	return b, ok
}

// identityKey appends to b the key of an identity in the byIdentity
// index: its attributes sorted by name, each name and value preceded by
// its length (so no two identities share a key). Unlike Canonical it
// costs no JSON encoding, and with a large enough b no allocation: it runs
// on every call of a device.
func identityKey(b []byte, id map[string]string) []byte {
	var small [8]string
	names := small[:0]
	if len(id) > len(small) {
		names = make([]string, 0, len(id))
	}
	for k := range id {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		b = binary.AppendUvarint(b, uint64(len(k)))
		b = append(b, k...)
		v := id[k]
		b = binary.AppendUvarint(b, uint64(len(v)))
		b = append(b, v...)
	}
	return b
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
type admissions struct{ perSnapshot[admission] }

func (c *admissions) get(snap *reconcile.Snapshot) *admission {
	return c.perSnapshot.get(snap, newAdmission, (*schema.Fleet).SameDevices)
}

// perSnapshot holds an index built from the live Snapshot's fleet, built
// once per Snapshot by whichever request first sees it (or carried over
// from the previous Snapshot when keep says the fleet's part it depends
// on did not change).
type perSnapshot[T any] struct {
	cur atomic.Pointer[snapEntry[T]]
}

type snapEntry[T any] struct {
	snap *reconcile.Snapshot
	idx  *T
}

// get returns the index for snap, building it with build when the cached
// one is for another Snapshot and keep (when not nil) does not accept it.
func (c *perSnapshot[T]) get(snap *reconcile.Snapshot, build func(*schema.Fleet) *T, keep func(old, cur *schema.Fleet) bool) *T {
	e := c.cur.Load()
	if e != nil && e.snap == snap {
		return e.idx
	}
	var f *schema.Fleet
	if snap != nil {
		f = snap.Fleet
	}
	if keep != nil && e != nil && e.snap != nil && keep(e.snap.Fleet, f) {
		c.cur.Store(&snapEntry[T]{snap: snap, idx: e.idx})
		return e.idx
	}
	n := &snapEntry[T]{snap: snap, idx: build(f)}
	c.cur.Store(n)
	return n.idx
}
