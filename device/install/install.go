package install

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/gitfleet/gitfleet/artifact"
)

// Installer installs one payload of one artifact. Each method is one state
// of the update module protocol; see the package documentation for the order
// the agent calls them in. Every method is idempotent and safe to call again
// on a new Installer for the same payload after a crash or power cut.
type Installer interface {
	// Download consumes the payload's files. It returns nil only when every
	// file was read to its end with a matching digest and stored durably.
	Download(ctx context.Context, files Files) error
	// ArtifactInstall makes the downloaded update the one that runs next.
	ArtifactInstall(ctx context.Context) error
	// NeedsArtifactReboot says whether and how the update needs a reboot.
	NeedsArtifactReboot(ctx context.Context) (Reboot, error)
	// ArtifactReboot reboots what the installer updated; called only when
	// NeedsArtifactReboot said RebootYes.
	ArtifactReboot(ctx context.Context) error
	// ArtifactVerifyReboot checks, after the reboot, that the update runs.
	ArtifactVerifyReboot(ctx context.Context) error
	// ArtifactCommit makes the update permanent.
	ArtifactCommit(ctx context.Context) error
	// SupportsRollback says whether ArtifactRollback can undo ArtifactInstall.
	SupportsRollback(ctx context.Context) (bool, error)
	// ArtifactRollback returns to the software that ran before.
	ArtifactRollback(ctx context.Context) error
	// ArtifactRollbackReboot reboots into the old software, when the update
	// needed a reboot (RebootYes; with RebootAutomatic the agent reboots).
	ArtifactRollbackReboot(ctx context.Context) error
	// ArtifactVerifyRollbackReboot checks that the old software runs again.
	ArtifactVerifyRollbackReboot(ctx context.Context) error
	// ArtifactFailure undoes what else a failed install left behind.
	ArtifactFailure(ctx context.Context) error
	// Cleanup removes temporary files; it runs last, whatever happened.
	Cleanup(ctx context.Context) error
}

// Compile-time checks.
var (
	_ Installer = (*Rootfs)(nil)
	_ Installer = (*Module)(nil)
)

// Reboot is the answer to NeedsArtifactReboot.
type Reboot int

const (
	// RebootNo: the update takes effect without a reboot.
	RebootNo Reboot = iota
	// RebootYes: the installer's ArtifactReboot does the reboot (for
	// example of a peripheral).
	RebootYes
	// RebootAutomatic: the agent reboots the host after asking every
	// installer; ArtifactReboot is not called.
	RebootAutomatic
)

// String returns the module protocol's word: "No", "Yes" or "Automatic".
func (r Reboot) String() string {
	switch r {
	case RebootNo:
		return "No"
	case RebootYes:
		return "Yes"
	case RebootAutomatic:
		return "Automatic"
	}
	return fmt.Sprintf("Reboot(%d)", int(r))
}

// CombineReboots merges the answers of several installers of one artifact
// as Mender does: Yes and Automatic together are an error (their order would
// be ambiguous); otherwise the strongest answer wins.
func CombineReboots(rs ...Reboot) (Reboot, error) {
	out := RebootNo
	for _, r := range rs {
		if (out == RebootYes && r == RebootAutomatic) || (out == RebootAutomatic && r == RebootYes) {
			return RebootNo, fmt.Errorf("%w: one payload needs ArtifactReboot (Yes), another an automatic reboot", ErrProtocol)
		}
		if r > out {
			out = r
		}
	}
	return out, nil
}

// Payload names the payload an Installer works on: one payload of an
// artifact whose header the artifact.Reader has verified.
type Payload struct {
	Header *artifact.Header
	Index  int
}

// Type returns the payload type: "rootfs-image" or an update module's name.
func (p Payload) Type() string {
	if p.Header == nil || p.Index < 0 || p.Index >= len(p.Header.Payloads) {
		return ""
	}
	return p.Header.Payloads[p.Index].Type
}

// payload returns the header's description of the payload.
func (p Payload) payload() (*artifact.Payload, error) {
	if p.Header == nil {
		return nil, fmt.Errorf("%w: no artifact header", ErrPayload)
	}
	if p.Index < 0 || p.Index >= len(p.Header.Payloads) {
		return nil, fmt.Errorf("%w: payload %d of %d", ErrPayload, p.Index, len(p.Header.Payloads))
	}
	return &p.Header.Payloads[p.Index], nil
}

// Files yields the files of one payload, in artifact order.
type Files interface {
	// Next returns the payload's next file, or io.EOF after its last one.
	// A file not read to its end is read (and its digest checked) by the
	// next call.
	Next() (*artifact.File, error)
}

// RootfsType is the payload type of A/B root filesystem images.
const RootfsType = "rootfs-image"

// Errors callers can test for with errors.Is.
var (
	// ErrPayload: the payload is not one this installer can install (wrong
	// type, wrong number of files, no such payload).
	ErrPayload = errors.New("install: unsupported payload")
	// ErrNoModule: no executable update module for the payload type.
	ErrNoModule = errors.New("install: no update module for payload type")
	// ErrTooLarge: the image does not fit in the partition.
	ErrTooLarge = errors.New("install: image larger than the partition")
	// ErrNotDownloaded: ArtifactInstall without a verified, complete download.
	ErrNotDownloaded = errors.New("install: no verified download")
	// ErrBootState: the boot environment or the running partition is not
	// what the state expects (an update pending, a partition that is
	// neither A nor B, running another partition than expected).
	ErrBootState = errors.New("install: unexpected boot state")
	// ErrWrongPartition: after a reboot, the running partition is not the
	// one the state expects (the bootloader fell back).
	ErrWrongPartition = errors.New("install: running the wrong partition")
	// ErrHealthCheck: the health check command failed.
	ErrHealthCheck = errors.New("install: health check failed")
	// ErrProtocol: an update module broke the protocol (an unknown answer,
	// exiting in the middle of a streamed download).
	ErrProtocol = errors.New("install: update module protocol error")
	// ErrModuleFailed: an update module exited with a non-zero status.
	ErrModuleFailed = errors.New("install: update module failed")
	// ErrScript: a state script failed (or asked for retries past the
	// retry timeout).
	ErrScript = errors.New("install: state script failed")
)

// Installers makes the Installer for each payload type: Rootfs for
// rootfs-image (when RootfsOptions are given), a Module for every other
// type with an executable in ModuleOptions.Dir.
type Installers struct {
	// Rootfs configures rootfs-image payloads; nil refuses them.
	Rootfs *RootfsOptions
	// Modules configures update modules.
	Modules ModuleOptions
}

// New returns the Installer for payload p.
func (s Installers) New(p Payload) (Installer, error) {
	if _, err := p.payload(); err != nil {
		return nil, err
	}
	if p.Type() == RootfsType {
		if s.Rootfs == nil {
			return nil, fmt.Errorf("%w: %s: no A/B partitions configured", ErrPayload, RootfsType)
		}
		return NewRootfs(*s.Rootfs, p)
	}
	return NewModule(s.Modules, p)
}

// Types returns the payload types this device can install, for the
// inventory's update_modules attribute: rootfs-image when configured, and
// the executable modules in ModuleOptions.Dir, sorted.
func (s Installers) Types() []string {
	var out []string
	if s.Rootfs != nil {
		out = append(out, RootfsType)
	}
	return append(out, s.Modules.Types()...)
}

// DownloadAll runs Download for every payload of an artifact, in order:
// ins[i] gets the files of payload i. It returns nil only after the reader
// reached io.EOF, that is once every file the manifest lists was read and
// found intact. On an error, call Cleanup on every installer.
func DownloadAll(ctx context.Context, ar *artifact.Reader, ins []Installer) error {
	if n := len(ar.Header().Payloads); n != len(ins) {
		return fmt.Errorf("%w: artifact has %d payloads, %d installers", ErrPayload, n, len(ins))
	}
	d := &demux{ar: ar}
	for i, in := range ins {
		d.index = i
		if err := in.Download(ctx, d); err != nil {
			return fmt.Errorf("download payload %d: %w", i, err)
		}
		// Whatever the installer left unread is read and checked here.
		for {
			if _, err := d.Next(); err == io.EOF {
				break
			} else if err != nil {
				return fmt.Errorf("download payload %d: %w", i, err)
			}
		}
	}
	if f, err := ar.Next(); err == nil {
		return fmt.Errorf("%w: data/%04d/%s after the last payload", ErrPayload, f.Payload, f.Name)
	} else if err != io.EOF {
		return fmt.Errorf("download: %w", err)
	}
	return nil
}

// demux hands out the files of one payload at a time from a Reader.
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
		f, err = d.ar.Next()
		if err == io.EOF {
			return nil, io.EOF
		}
		if err != nil {
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
	default:
		d.err = fmt.Errorf("%w: data/%04d/%s out of order", ErrPayload, f.Payload, f.Name)
		return nil, d.err
	}
}
