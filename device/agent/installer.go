package agent

import (
	"context"
	"errors"

	"github.com/gitfleet/gitfleet/artifact"
	"github.com/gitfleet/gitfleet/device/install"
)

// NewInstaller makes the installer for one payload of a verified artifact.
// device/install provides the real ones (install.Installers.New: A/B root
// filesystem, update modules). Every method of an install.Installer must be
// idempotent: after a crash the agent makes a new one for the same payload
// and enters the interrupted state again.
type NewInstaller func(p install.Payload) (install.Installer, error)

// parseReboot reads back the combined NeedsArtifactReboot answer kept in
// the state record.
func parseReboot(s string) (install.Reboot, bool) {
	for _, r := range []install.Reboot{install.RebootNo, install.RebootYes, install.RebootAutomatic} {
		if s == r.String() {
			return r, true
		}
	}
	return install.RebootNo, false
}

// Scripts runs state scripts. device/install's Runner is the real one;
// nil runs none.
type Scripts interface {
	// Store keeps the state scripts an artifact carries, before any of
	// them runs (Download).
	Store(ctx context.Context, scripts []artifact.Script) error
	// Run runs the scripts of state (Download, ArtifactInstall, …) and
	// action (Enter, Leave, Error).
	Run(ctx context.Context, state StateName, action string) error
}

// Rebooter reboots the device. Reboot returns nil once the reboot is under
// way; the agent then stops and expects to be started again in the new
// boot. An error means the device will not reboot.
type Rebooter interface {
	Reboot(ctx context.Context) error
}

// ErrRebooting is returned by the agent's entry points when they stopped
// because the device is rebooting; the state record says where to go on.
var ErrRebooting = errors.New("agent: rebooting")
