package rollout

import (
	"math"

	"github.com/gitfleet/gitfleet/schema"
)

// Devices admitted by a DeviceCA (certificate admission) are not declared
// in the fleet: the Snapshot does not know how many there are, nor which.
// So, in a fleet that declares a DeviceCA, a rollout whose target has a
// selector (its own, or a group's) or is the whole fleet also targets
// these devices, and its target is open (see the package doc): a device's
// place in a percent phase is its key's position, a count phase takes
// devices in the order they ask, and the candidates among declared devices
// no longer bound a percent phase's quota. Targets of named devices or
// static group members only stay closed, exactly as in a fleet without
// DeviceCAs.

// openCertSize is the target size a percent phase's quota is computed from
// in a target open to certificate-admitted devices: no bound.
const openCertSize = math.MaxInt32

// openToCerts opens pl's target to certificate-admitted devices when the
// fleet declares a DeviceCA and the target can select them.
func (pl *plan) openToCerts(fleet *schema.Fleet) {
	if len(fleet.DeviceCAs) == 0 || !pl.ro.Spec.Target.All && len(pl.selectors) == 0 {
		return
	}
	pl.open, pl.exact = true, false
}

// routeUndeclared is route for a device no Device manifest declares (one
// a DeviceCA admitted): the first rollout, in priority order, whose open
// target takes it.
func (p *Plan) routeUndeclared(d *Device) *plan {
	if !p.certs {
		return nil
	}
	for _, pl := range p.rollouts {
		if !pl.open {
			continue
		}
		if pl.ro.Spec.Target.All {
			return pl
		}
		for _, s := range pl.selectors {
			if s.Matches(d.Identity, d.Inventory) {
				return pl
			}
		}
	}
	return nil
}

// undeclaredNeedsInventory is NeedsInventory for a device no Device
// manifest declares: whether routeUndeclared may ask a selector over
// inventory attributes before it reaches a rollout that takes every
// device. (A fleet of a million certificate-admitted devices would
// otherwise read each device's inventory from the store at every poll.)
func (p *Plan) undeclaredNeedsInventory() bool {
	if !p.certs {
		return false
	}
	for _, pl := range p.rollouts {
		if !pl.open {
			continue
		}
		if pl.ro.Spec.Target.All {
			return false
		}
		for _, s := range pl.selectors {
			if len(s.Inventory) > 0 {
				return true
			}
		}
	}
	return false
}
