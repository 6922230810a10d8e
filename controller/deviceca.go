package controller

import (
	"strings"

	"github.com/gitfleet/gitfleet/controller/reconcile"
	"github.com/gitfleet/gitfleet/schema"
)

// certDevice returns the device called name that a DeviceCA of snap may
// admit — "<DeviceCA name>-<value of its name attribute>" — as a Device
// without a manifest of its own: its Source is the DeviceCA's, its device
// type the DeviceCA's, and its identity, when the DeviceCA reads a single
// attribute from certificates, that attribute with the value from the
// name (otherwise unknown: nil). Nil when no DeviceCA names it. The device
// API admitted such a device by its certificate (and checks it again,
// revocation included, at each call) before it was given anything
// carrying its name.
func certDevice(snap *reconcile.Snapshot, name string) *schema.Device {
	if snap == nil || snap.Fleet == nil {
		return nil
	}
	for i := range snap.Fleet.DeviceCAs {
		ca := &snap.Fleet.DeviceCAs[i]
		rest, ok := strings.CutPrefix(name, ca.Name+"-")
		if !ok || rest == "" {
			continue
		}
		d := &schema.Device{Meta: ca.Meta, Spec: schema.DeviceSpec{DeviceType: ca.Spec.DeviceType}}
		d.Kind, d.Name, d.Labels = schema.KindDevice, name, nil
		if len(ca.Spec.Identity) == 1 {
			for attr := range ca.Spec.Identity {
				d.Spec.Identity = map[string]string{attr: rest}
			}
		}
		return d
	}
	return nil
}
