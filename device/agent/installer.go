package agent

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/gitfleet/gitfleet/artifact"
)

// Installer installs one payload of an artifact; each method is a state of
// Mender's update module protocol (v3). device/install provides the real
// ones (A/B root filesystem, update modules); cmd/gitfleet-agent adapts
// them. Every method must be idempotent: after a crash the agent makes a
// new Installer for the same payload and enters the interrupted state again.
type Installer interface {
	Download(ctx context.Context, files Files) error
	ArtifactInstall(ctx context.Context) error
	NeedsArtifactReboot(ctx context.Context) (Reboot, error)
	ArtifactReboot(ctx context.Context) error
	ArtifactVerifyReboot(ctx context.Context) error
	ArtifactCommit(ctx context.Context) error
	SupportsRollback(ctx context.Context) (bool, error)
	ArtifactRollback(ctx context.Context) error
	ArtifactRollbackReboot(ctx context.Context) error
	ArtifactVerifyRollbackReboot(ctx context.Context) error
	ArtifactFailure(ctx context.Context) error
	Cleanup(ctx context.Context) error
}

// NewInstaller makes the Installer for one payload.
type NewInstaller func(p Payload) (Installer, error)

// Payload names one payload of a verified artifact header.
type Payload struct {
	Header *artifact.Header
	Index  int
}

// Files yields the files of one payload in artifact order; io.EOF after
// the last one.
type Files interface {
	Next() (*artifact.File, error)
}

// Reboot is the answer to NeedsArtifactReboot.
type Reboot int

// The answers, as in the module protocol.
const (
	RebootNo        Reboot = iota // no reboot
	RebootYes                     // the installer's ArtifactReboot reboots
	RebootAutomatic               // the agent reboots the device
)

func (r Reboot) String() string {
	switch r {
	case RebootYes:
		return "Yes"
	case RebootAutomatic:
		return "Automatic"
	}
	return "No"
}

func parseReboot(s string) (Reboot, bool) {
	switch s {
	case "No":
		return RebootNo, true
	case "Yes":
		return RebootYes, true
	case "Automatic":
		return RebootAutomatic, true
	}
	return RebootNo, false
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

// downloadAll hands each installer the files of its payload, in order, and
// returns nil only when the whole artifact was read to its end intact.
func downloadAll(ctx context.Context, ar *artifact.Reader, ins []Installer) error {
	d := &demux{ar: ar}
	for i, in := range ins {
		d.index = i
		if err := in.Download(ctx, d); err != nil {
			return fmt.Errorf("download payload %d: %w", i, err)
		}
		for {
			if _, err := d.Next(); err == io.EOF {
				break
			} else if err != nil {
				return fmt.Errorf("download payload %d: %w", i, err)
			}
		}
	}
	if f, err := ar.Next(); err == nil {
		return fmt.Errorf("download: data/%04d/%s after the last payload", f.Payload, f.Name)
	} else if err != io.EOF {
		return fmt.Errorf("download: %w", err)
	}
	return nil
}

type demux struct {
	ar    *artifact.Reader
	index int
	peek  *artifact.File
	err   error
}

func (d *demux) Next() (*artifact.File, error) {
	if d.err != nil {
		return nil, d.err
	}
	f := d.peek
	d.peek = nil
	if f == nil {
		var err error
		if f, err = d.ar.Next(); err == io.EOF {
			return nil, io.EOF
		} else if err != nil {
			d.err = err
			return nil, err
		}
	}
	switch {
	case f.Payload == d.index:
		return f, nil
	case f.Payload > d.index:
		d.peek = f
		return nil, io.EOF
	}
	d.err = fmt.Errorf("download: data/%04d/%s out of order", f.Payload, f.Name)
	return nil, d.err
}
