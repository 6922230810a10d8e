package operators

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gitfleet/gitfleet/controller/deviceapi"
	"github.com/gitfleet/gitfleet/controller/deviceconnect"
	"github.com/gitfleet/gitfleet/controller/reconcile"
	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gitfleet/gitfleet/schema"
)

// fleetIndex indexes one Snapshot for operator lookups: operators by token
// hash, and declared devices by the ID the device API gives them (built on
// first use: it hashes every declared identity).
type fleetIndex struct {
	snap    *reconcile.Snapshot
	byToken map[string]*schema.Operator
	groups  map[string]*schema.DeviceGroup

	devOnce sync.Once
	byID    map[string]*schema.Device // by deviceapi.DeviceID of the declared identity
	byKey   map[string]*schema.Device // manifests that declare a key and no identity
}

func (a *Access) indexOf(snap *reconcile.Snapshot) *fleetIndex {
	if ix := a.index.Load(); ix != nil && ix.snap == snap {
		return ix
	}
	ix := &fleetIndex{snap: snap, byToken: map[string]*schema.Operator{}, groups: map[string]*schema.DeviceGroup{}}
	for i := range snap.Fleet.Operators {
		o := &snap.Fleet.Operators[i]
		if o.Spec.TokenSHA256 != "" {
			ix.byToken[o.Spec.TokenSHA256] = o
		}
	}
	for i := range snap.Fleet.Groups {
		g := &snap.Fleet.Groups[i]
		ix.groups[g.Name] = g
	}
	a.index.Store(ix)
	return ix
}

func (ix *fleetIndex) devices() {
	ix.devOnce.Do(func() {
		ix.byID, ix.byKey = map[string]*schema.Device{}, map[string]*schema.Device{}
		for i := range ix.snap.Fleet.Devices {
			d := &ix.snap.Fleet.Devices[i]
			switch {
			case len(d.Spec.Identity) > 0:
				id := deviceapi.DeviceID(deviceapi.Attributes(d.Spec.Identity))
				if _, dup := ix.byID[id]; !dup {
					ix.byID[id] = d
				}
			case d.Spec.PublicKeySHA256 != "":
				fp := strings.ToLower(d.Spec.PublicKeySHA256)
				if _, dup := ix.byKey[fp]; !dup {
					ix.byKey[fp] = d
				}
			}
		}
	})
}

// target is one device as a grant sees it.
type target struct {
	id, name  string
	identity  map[string]string
	inventory map[string]string // nil until read
	rec       *store.Device     // nil when the store does not know it
}

func forbidden(format string, args ...any) error {
	return fmt.Errorf("%w: %s", deviceconnect.ErrForbidden, fmt.Sprintf(format, args...))
}

// resolve finds the device a session names: a device ID (what mender-cli
// lists and sends) or a declared device name.
func (a *Access) resolve(ctx context.Context, snap *reconcile.Snapshot, ix *fleetIndex, device string) (*target, error) {
	if d := declared(snap, device); d != nil {
		t := &target{name: device, identity: d.Spec.Identity}
		if len(t.identity) > 0 {
			t.id = deviceapi.DeviceID(deviceapi.Attributes(t.identity))
			rec, err := a.opts.Store.Device(ctx, t.id)
			switch {
			case err == nil:
				t.rec = &rec
			case !errors.Is(err, store.ErrNotFound):
				return nil, err
			}
		}
		return t, nil
	}
	rec, err := a.opts.Store.Device(ctx, device)
	if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrInvalid) {
		return nil, forbidden("no device %q: give a device ID (mender-cli devices list) or a device name the live commit %s declares", device, short(snap.Commit.SHA))
	}
	if err != nil {
		return nil, err
	}
	t := &target{id: device, identity: identityOf(rec.Identity), rec: &rec}
	if rec.Status != store.DeviceAccepted {
		return nil, forbidden("device %s is %s, not accepted: the live commit %s does not declare it", device, rec.Status, short(snap.Commit.SHA))
	}
	ix.devices()
	d := ix.byID[device]
	if d == nil {
		d = ix.byKey[strings.ToLower(rec.KeyFingerprint)]
	}
	switch {
	case d != nil:
		t.name = d.Name
	default:
		t.name = caName(snap.Fleet, t.identity)
	}
	if t.name == "" {
		return nil, forbidden("device %s is not declared by the live commit %s", device, short(snap.Commit.SHA))
	}
	return t, nil
}

// declared returns the Device manifest called name, or the device a
// DeviceCA names so ("<CA>-<value>", with its identity when the CA reads
// one attribute), or nil.
func declared(snap *reconcile.Snapshot, name string) *schema.Device {
	if d := snap.Fleet.Device(name); d != nil {
		return d
	}
	for i := range snap.Fleet.DeviceCAs {
		ca := &snap.Fleet.DeviceCAs[i]
		rest, ok := strings.CutPrefix(name, ca.Name+"-")
		if !ok || rest == "" {
			continue
		}
		d := &schema.Device{Meta: ca.Meta}
		d.Name = name
		if attr := caAttribute(ca); attr != "" && len(ca.Spec.Identity) == 1 {
			d.Spec.Identity = map[string]string{attr: rest}
		}
		return d
	}
	return nil
}

// caAttribute is the identity attribute that names a DeviceCA's devices.
func caAttribute(ca *schema.DeviceCA) string {
	if ca.Spec.NameAttribute != "" {
		return ca.Spec.NameAttribute
	}
	if len(ca.Spec.Identity) == 1 {
		for k := range ca.Spec.Identity {
			return k
		}
	}
	return ""
}

// caName returns the name a DeviceCA gives a device of this identity
// (exactly the CA's attributes), or "".
func caName(f *schema.Fleet, identity map[string]string) string {
	for i := range f.DeviceCAs {
		ca := &f.DeviceCAs[i]
		if len(identity) != len(ca.Spec.Identity) {
			continue
		}
		all := true
		for k := range ca.Spec.Identity {
			if identity[k] == "" {
				all = false
			}
		}
		if attr := caAttribute(ca); all && attr != "" {
			return ca.Name + "-" + identity[attr]
		}
	}
	return ""
}

// identityOf reads the string attributes of a stored id_data.
func identityOf(raw json.RawMessage) map[string]string {
	var m map[string]json.RawMessage
	if json.Unmarshal(raw, &m) != nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		var s string
		if json.Unmarshal(v, &s) == nil {
			out[k] = s
		}
	}
	return out
}

// inventoryOf returns the device's last reported inventory.
func (t *target) inventoryOf() map[string]string {
	if t.inventory == nil {
		t.inventory = map[string]string{}
		if t.rec != nil {
			t.inventory = deviceapi.InventoryAttributes(t.rec.Inventory)
		}
	}
	return t.inventory
}

// inGroup reports whether the device is a member of g: a static member,
// or matched by its selector on the device's identity (as declared, or
// as it sent it) and last inventory.
func inGroup(g *schema.DeviceGroup, t *target) bool {
	if slices.Contains(g.Spec.Members, t.name) {
		return true
	}
	return g.Spec.Selector != nil && g.Spec.Selector.Matches(t.identity, t.inventoryOf())
}

// coverage is what an operator's access entries allow on one device.
type coverage struct {
	listed                                 bool
	fileTransfer, portForward, recordInput bool
}

func covers(o *schema.Operator, ix *fleetIndex, t *target) coverage {
	var c coverage
	for _, e := range o.Spec.Access {
		in := slices.Contains(e.Devices, t.name)
		for _, gn := range e.Groups {
			if in {
				break
			}
			if g := ix.groups[gn]; g != nil && inGroup(g, t) {
				in = true
			}
		}
		if in {
			c.listed = true
			c.fileTransfer = c.fileTransfer || e.FileTransfer
			c.portForward = c.portForward || e.PortForward
			c.recordInput = c.recordInput || e.RecordInput
		}
	}
	return c
}

// Grant returns what operator may do on device (its ID, or its declared
// name) under the live commit, or an error wrapping
// deviceconnect.ErrForbidden that says why.
func (a *Access) Grant(ctx context.Context, operator, device string) (deviceconnect.Grant, error) {
	snap := a.opts.Live()
	if snap == nil || snap.Fleet == nil {
		return deviceconnect.Grant{}, forbidden("the controller serves no commit yet")
	}
	now := a.opts.Now()
	o := snap.Fleet.Operator(operator)
	if o == nil {
		return deviceconnect.Grant{}, fmt.Errorf("%w: operator %q is not declared in the live commit %s", deviceconnect.ErrOperatorRemoved, operator, short(snap.Commit.SHA))
	}
	if o.Expired(now) {
		return deviceconnect.Grant{}, fmt.Errorf("%w: operator %s expired on %s (%s)", deviceconnect.ErrExpired, o.Name, o.ExpiresAt().UTC().Format(time.RFC3339), o.Source)
	}
	ix := a.indexOf(snap)
	t, err := a.resolve(ctx, snap, ix, device)
	if err != nil {
		return deviceconnect.Grant{}, err
	}
	c := covers(o, ix, t)
	if !c.listed {
		return deviceconnect.Grant{}, forbidden("device %s is not listed for operator %s in %s (commit %s): add it, or a group it belongs to, to spec.access", t.label(), o.Name, o.Source, short(snap.Commit.SHA))
	}
	deviceLimit := -1 // the smallest limit of the groups that set one
	for i := range snap.Fleet.Groups {
		g := &snap.Fleet.Groups[i]
		if g.Spec.RemoteSessions == nil || !inGroup(g, t) {
			continue
		}
		if n := *g.Spec.RemoteSessions; n == 0 {
			return deviceconnect.Grant{}, forbidden("device %s is in DeviceGroup %s (%s), which allows no remote sessions (remoteSessions: 0)", t.label(), g.Name, g.Source)
		} else if deviceLimit < 0 || n < deviceLimit {
			deviceLimit = n
		}
	}
	if deviceLimit < 0 {
		deviceLimit = schema.DefaultDeviceSessions
	}
	l := o.Spec.Limits.Effective()
	return deviceconnect.Grant{
		Operator: o.Name, Commit: snap.Commit.SHA, Device: t.id,
		Terminal: true, FileTransfer: c.fileTransfer, PortForward: c.portForward, RecordInput: c.recordInput,
		OperatorSessions: l.Sessions, DeviceSessions: deviceLimit,
		IdleTimeout: l.IdleTimeout.Duration, BytesPerSecond: int64(l.Bandwidth),
		Expires: o.ExpiresAt(),
	}, nil
}

// label names the device in messages: "name (ID)".
func (t *target) label() string {
	if t.id == "" || t.id == t.name {
		return t.name
	}
	return t.name + " (" + t.id + ")"
}

// NameOf returns the name the live commit gives the device with this ID
// (by its declared identity), or "" when it declares none.
func (a *Access) NameOf(id string) string {
	snap := a.opts.Live()
	if snap == nil || snap.Fleet == nil {
		return ""
	}
	ix := a.indexOf(snap)
	ix.devices()
	if d := ix.byID[id]; d != nil {
		return d.Name
	}
	if declared(snap, id) != nil {
		return id // a name already
	}
	return ""
}
