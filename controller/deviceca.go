package controller

import (
	"strings"

	"github.com/gitfleet/gitfleet/controller/reconcile"
)

// certDevice reports whether name is the name of a device a DeviceCA of
// snap may admit: "<DeviceCA name>-<…>". Such devices have no Device
// manifest; the device API admitted the device by its certificate (and
// checks it again, revocation included, at each call) before it was given
// anything carrying its name.
func certDevice(snap *reconcile.Snapshot, name string) bool {
	if snap == nil || snap.Fleet == nil {
		return false
	}
	for i := range snap.Fleet.DeviceCAs {
		if rest, ok := strings.CutPrefix(name, snap.Fleet.DeviceCAs[i].Name+"-"); ok && rest != "" {
			return true
		}
	}
	return false
}
