package install

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/gitfleet/gitfleet/artifact"
	"github.com/gitfleet/gitfleet/device/atomicfile"
	"github.com/gitfleet/gitfleet/device/bootenv"
)

// Partition is one of the two root filesystem partitions.
type Partition struct {
	// Path is the block device ("/dev/mmcblk0p2") or, in tests and the
	// simulator, a plain file of the partition's size.
	Path string
	// Number is the partition's mender_boot_part value. Zero: the decimal
	// digits that end Path ("/dev/mmcblk0p2" → 2), as Mender derives it
	// from RootfsPartA/RootfsPartB.
	Number int
}

func (p Partition) number() (int, error) {
	if p.Number > 0 {
		return p.Number, nil
	}
	i := len(p.Path)
	for i > 0 && p.Path[i-1] >= '0' && p.Path[i-1] <= '9' {
		i--
	}
	n, err := strconv.Atoi(p.Path[i:])
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%w: no partition number for %q (set Partition.Number)", ErrBootState, p.Path)
	}
	return n, nil
}

// RootfsOptions configure A/B root filesystem installs.
type RootfsOptions struct {
	// A and B are the two partitions (Mender's RootfsPartA, RootfsPartB).
	A, B Partition
	// Env is the bootloader environment holding the Mender variables.
	Env bootenv.Env
	// Size is the size of each partition in bytes, the largest image
	// accepted. Zero: the size of the block device, or of the plain file.
	Size int64
	// StateDir holds the install record (rootfs.json) that carries what
	// Download verified to ArtifactInstall and later states across reboots
	// and power cuts, e.g. /var/lib/gitfleet. Required.
	StateDir string
	// Booted returns the number of the partition the running system booted
	// from. Nil: [ProcBooted] over A and B (the mounted root, then
	// /proc/cmdline). The simulator passes its own.
	Booted func(ctx context.Context) (int, error)
	// HealthCheck, when set, is a command (argv) that ArtifactVerifyReboot
	// runs once the new partition is confirmed running; a non-zero exit
	// fails the state, so the agent rolls back. Leave it empty when the
	// agent runs its own checks between ArtifactVerifyReboot and
	// ArtifactCommit.
	HealthCheck []string
	// HealthCheckTimeout bounds HealthCheck. Default 5 minutes.
	HealthCheckTimeout time.Duration
	// Exec runs HealthCheck. Default OSExec{}.
	Exec Exec
	// BufferSize is the size of each write to the partition. Default 1 MiB.
	BufferSize int
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Rootfs installs a rootfs-image payload into the inactive partition of an
// A/B pair and flips the boot switch. See the package documentation.
type Rootfs struct {
	opts   RootfsOptions
	p      Payload
	a, b   int // partition numbers
	log    *slog.Logger
	record string // path of the install record
}

// rootfsRecord is what Download hands to the later states, on disk.
type rootfsRecord struct {
	Artifact string `json:"artifact"`
	Payload  int    `json:"payload"`
	From     int    `json:"from"`     // partition running when the download started
	To       int    `json:"to"`       // partition written
	Size     int64  `json:"size"`     // image bytes
	SHA256   string `json:"sha256"`   // image digest from the signed manifest
	Verified bool   `json:"verified"` // image written, fsynced and its digest matched
}

// NewRootfs returns the installer for payload p, which must be a
// rootfs-image payload with exactly one file.
func NewRootfs(opts RootfsOptions, p Payload) (*Rootfs, error) {
	pl, err := p.payload()
	if err != nil {
		return nil, err
	}
	if pl.Type != RootfsType {
		return nil, fmt.Errorf("%w: payload %d is %q, not %s", ErrPayload, p.Index, pl.Type, RootfsType)
	}
	if len(pl.Files) != 1 {
		return nil, fmt.Errorf("%w: %s payload %d has %d files, want 1", ErrPayload, RootfsType, p.Index, len(pl.Files))
	}
	if opts.Env == nil {
		return nil, errors.New("install: RootfsOptions.Env is required")
	}
	if opts.StateDir == "" {
		return nil, errors.New("install: RootfsOptions.StateDir is required")
	}
	a, err := opts.A.number()
	if err != nil {
		return nil, err
	}
	b, err := opts.B.number()
	if err != nil {
		return nil, err
	}
	if a == b {
		return nil, fmt.Errorf("%w: partitions A and B are both number %d", ErrBootState, a)
	}
	if opts.Booted == nil {
		opts.Booted = ProcBooted(opts.A, opts.B)
	}
	if opts.Exec == nil {
		opts.Exec = OSExec{}
	}
	if opts.HealthCheckTimeout <= 0 {
		opts.HealthCheckTimeout = 5 * time.Minute
	}
	if opts.BufferSize <= 0 {
		opts.BufferSize = 1 << 20
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Rootfs{
		opts:   opts,
		p:      p,
		a:      a,
		b:      b,
		log:    opts.Logger.With("artifact", p.Header.Name(), "payload", p.Index),
		record: filepath.Join(opts.StateDir, "rootfs.json"),
	}, nil
}

// part returns the Partition numbered n.
func (r *Rootfs) part(n int) (Partition, bool) {
	switch n {
	case r.a:
		return r.opts.A, true
	case r.b:
		return r.opts.B, true
	}
	return Partition{}, false
}

func (r *Rootfs) other(n int) int {
	if n == r.a {
		return r.b
	}
	return r.a
}

// Inactive returns the partition an update would be written to now: the one
// the boot environment does not boot. It fails when an update is on trial
// (upgrade_available=1), when mender_boot_part names neither A nor B, and
// when the running partition is not the one the environment boots.
func (r *Rootfs) Inactive(ctx context.Context) (Partition, error) {
	_, to, err := r.inactive(ctx)
	if err != nil {
		return Partition{}, err
	}
	p, _ := r.part(to)
	return p, nil
}

func (r *Rootfs) inactive(ctx context.Context) (from, to int, err error) {
	st, err := bootenv.ReadState(ctx, r.opts.Env)
	if err != nil {
		return 0, 0, fmt.Errorf("read boot state: %w", err)
	}
	if _, ok := r.part(st.Part); !ok {
		return 0, 0, fmt.Errorf("%w: %s=%d is neither partition A (%d) nor B (%d)", ErrBootState, bootenv.VarBootPart, st.Part, r.a, r.b)
	}
	if st.UpgradeAvailable {
		return 0, 0, fmt.Errorf("%w: partition %d is on trial (%s=1): commit or roll back first", ErrBootState, st.Part, bootenv.VarUpgradeAvailable)
	}
	running, err := r.opts.Booted(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("running partition: %w", err)
	}
	if running != st.Part {
		return 0, 0, fmt.Errorf("%w: running partition %d but %s=%d", ErrBootState, running, bootenv.VarBootPart, st.Part)
	}
	return st.Part, r.other(st.Part), nil
}

// Download implements Installer: it streams the image into the inactive
// partition, fsyncs it, and records the install as verified only when the
// image ended with the digest the signed manifest lists.
func (r *Rootfs) Download(ctx context.Context, files Files) error {
	pl, _ := r.p.payload()
	from, to, err := r.inactive(ctx)
	if err != nil {
		return err
	}
	rec := rootfsRecord{
		Artifact: r.p.Header.Name(),
		Payload:  r.p.Index,
		From:     from,
		To:       to,
		SHA256:   pl.Files[0].Digest.String(),
	}
	// Forget any earlier download before touching the partition.
	if err := r.writeRecord(rec); err != nil {
		return err
	}
	f, err := files.Next()
	if err == io.EOF {
		return fmt.Errorf("%w: %s payload %d has no file", ErrPayload, RootfsType, r.p.Index)
	}
	if err != nil {
		return err
	}
	part, _ := r.part(to)
	n, err := r.writeImage(ctx, part, f)
	if err != nil {
		return err
	}
	if extra, err := files.Next(); err == nil {
		return fmt.Errorf("%w: %s payload %d has a second file %s", ErrPayload, RootfsType, r.p.Index, extra.Name)
	} else if err != io.EOF {
		return err
	}
	rec.Size = n
	rec.SHA256 = f.Digest.String()
	rec.Verified = true
	if err := r.writeRecord(rec); err != nil {
		return err
	}
	r.log.Info("rootfs image written", "partition", to, "path", part.Path, "bytes", n)
	return nil
}

// writeImage copies f into the partition and fsyncs it. It returns nil only
// when f ended with a matching digest.
func (r *Rootfs) writeImage(ctx context.Context, part Partition, f *artifact.File) (int64, error) {
	dst, err := os.OpenFile(part.Path, os.O_WRONLY, 0)
	if err != nil {
		return 0, fmt.Errorf("open partition: %w", err)
	}
	defer dst.Close()
	size := r.opts.Size
	if size <= 0 {
		if size, err = deviceSize(dst); err != nil {
			return 0, fmt.Errorf("partition %s: %w", part.Path, err)
		}
	}
	if f.Size > size {
		return 0, fmt.Errorf("%w: %s is %d bytes, partition %s %d", ErrTooLarge, f.Name, f.Size, part.Path, size)
	}
	n, err := copyPipelined(ctx, dst, f, r.opts.BufferSize, size)
	if err != nil {
		return n, fmt.Errorf("write %s to %s: %w", f.Name, part.Path, err)
	}
	if err := dst.Sync(); err != nil {
		return n, fmt.Errorf("fsync %s: %w", part.Path, err)
	}
	if err := dst.Close(); err != nil {
		return n, fmt.Errorf("close %s: %w", part.Path, err)
	}
	return n, nil
}

// deviceSize returns the size of a block device (its end) or a plain file.
func deviceSize(f *os.File) (int64, error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	if fi.Mode().IsRegular() {
		return fi.Size(), nil
	}
	end, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return 0, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return 0, err
	}
	return end, nil
}

// verified returns the install record of a complete, verified download of
// this payload.
func (r *Rootfs) verified() (rootfsRecord, error) {
	rec, err := r.readRecord()
	if err != nil {
		return rec, err
	}
	pl, _ := r.p.payload()
	switch {
	case !rec.Verified:
		return rec, fmt.Errorf("%w: the download of %s did not complete", ErrNotDownloaded, rec.Artifact)
	case rec.Artifact != r.p.Header.Name() || rec.Payload != r.p.Index || rec.SHA256 != pl.Files[0].Digest.String():
		return rec, fmt.Errorf("%w: the recorded download is of %s payload %d", ErrNotDownloaded, rec.Artifact, rec.Payload)
	}
	if _, ok := r.part(rec.To); !ok {
		return rec, fmt.Errorf("%w: recorded partition %d is neither A nor B", ErrBootState, rec.To)
	}
	return rec, nil
}

// ArtifactInstall implements Installer: the boot switch to the new
// partition (upgrade_available=1, bootcount=0), only after a verified
// download.
func (r *Rootfs) ArtifactInstall(ctx context.Context) error {
	rec, err := r.verified()
	if err != nil {
		return err
	}
	st, err := bootenv.ReadState(ctx, r.opts.Env)
	if err != nil {
		return fmt.Errorf("read boot state: %w", err)
	}
	if st.Part == rec.To && st.UpgradeAvailable {
		return nil // switched already
	}
	if err := bootenv.Switch(ctx, r.opts.Env, rec.To); err != nil {
		return fmt.Errorf("boot switch to %d: %w", rec.To, err)
	}
	r.log.Info("boot switch", "partition", rec.To)
	return nil
}

// NeedsArtifactReboot implements Installer: always RebootAutomatic.
func (r *Rootfs) NeedsArtifactReboot(context.Context) (Reboot, error) {
	return RebootAutomatic, nil
}

// ArtifactReboot implements Installer. It does nothing: the answer to
// NeedsArtifactReboot is Automatic, so the agent reboots the host.
func (r *Rootfs) ArtifactReboot(context.Context) error { return nil }

// ArtifactVerifyReboot implements Installer: the running partition must be
// the new one, still on trial, and the health check (if any) must pass.
func (r *Rootfs) ArtifactVerifyReboot(ctx context.Context) error {
	if _, err := r.onNewPartition(ctx); err != nil {
		return err
	}
	return r.healthCheck(ctx)
}

// onNewPartition checks that a verified image was installed, that the
// system runs its partition, and that the boot environment agrees; it
// returns the boot state.
func (r *Rootfs) onNewPartition(ctx context.Context) (bootenv.State, error) {
	rec, err := r.verified()
	if err != nil {
		return bootenv.State{}, err
	}
	running, err := r.opts.Booted(ctx)
	if err != nil {
		return bootenv.State{}, fmt.Errorf("running partition: %w", err)
	}
	if running != rec.To {
		return bootenv.State{}, fmt.Errorf("%w: running %d, expected the new partition %d", ErrWrongPartition, running, rec.To)
	}
	st, err := bootenv.ReadState(ctx, r.opts.Env)
	if err != nil {
		return bootenv.State{}, fmt.Errorf("read boot state: %w", err)
	}
	if st.Part != rec.To {
		return bootenv.State{}, fmt.Errorf("%w: running %d but %s=%d", ErrBootState, running, bootenv.VarBootPart, st.Part)
	}
	return st, nil
}

func (r *Rootfs) healthCheck(ctx context.Context) error {
	if len(r.opts.HealthCheck) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, r.opts.HealthCheckTimeout)
	defer cancel()
	out := &logWriter{log: r.log, msg: "health check output"}
	err := run(ctx, r.opts.Exec, Command{
		Path:   r.opts.HealthCheck[0],
		Args:   r.opts.HealthCheck[1:],
		Stdout: out,
		Stderr: out,
	})
	out.Flush()
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrHealthCheck, r.opts.HealthCheck[0], err)
	}
	return nil
}

// ArtifactCommit implements Installer: upgrade_available=0, bootcount=0,
// only while running the new partition.
func (r *Rootfs) ArtifactCommit(ctx context.Context) error {
	st, err := r.onNewPartition(ctx)
	if err != nil {
		return err
	}
	if !st.UpgradeAvailable && st.BootCount == 0 {
		return nil // committed already
	}
	if err := bootenv.Commit(ctx, r.opts.Env); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	r.log.Info("committed", "partition", st.Part)
	return nil
}

// SupportsRollback implements Installer: always true.
func (r *Rootfs) SupportsRollback(context.Context) (bool, error) { return true, nil }

// ArtifactRollback implements Installer: the boot environment points at the
// old partition again, with no trial. Without an install record (Download
// never started) there is nothing to undo.
func (r *Rootfs) ArtifactRollback(ctx context.Context) error {
	rec, err := r.readRecord()
	if errors.Is(err, ErrNotDownloaded) {
		return nil
	}
	if err != nil {
		return err
	}
	if _, ok := r.part(rec.From); !ok {
		return fmt.Errorf("%w: recorded partition %d is neither A nor B", ErrBootState, rec.From)
	}
	st, err := bootenv.ReadState(ctx, r.opts.Env)
	if err == nil && st.Part == rec.From && !st.UpgradeAvailable && st.BootCount == 0 {
		return nil // rolled back already (or never switched)
	}
	if err := bootenv.Rollback(ctx, r.opts.Env, rec.From); err != nil {
		return fmt.Errorf("roll back to %d: %w", rec.From, err)
	}
	r.log.Info("rolled back", "partition", rec.From)
	return nil
}

// ArtifactRollbackReboot implements Installer. It does nothing: the agent
// reboots the host (NeedsArtifactReboot is Automatic). When the device
// already runs the old partition (the bootloader fell back) the agent may
// skip that reboot; rebooting again is harmless.
func (r *Rootfs) ArtifactRollbackReboot(context.Context) error { return nil }

// ArtifactVerifyRollbackReboot implements Installer: the running partition
// must be the old one, and the environment must boot it with no trial.
func (r *Rootfs) ArtifactVerifyRollbackReboot(ctx context.Context) error {
	rec, err := r.readRecord()
	if errors.Is(err, ErrNotDownloaded) {
		return nil
	}
	if err != nil {
		return err
	}
	running, err := r.opts.Booted(ctx)
	if err != nil {
		return fmt.Errorf("running partition: %w", err)
	}
	if running != rec.From {
		return fmt.Errorf("%w: running %d, expected the old partition %d", ErrWrongPartition, running, rec.From)
	}
	st, err := bootenv.ReadState(ctx, r.opts.Env)
	if err != nil {
		return fmt.Errorf("read boot state: %w", err)
	}
	if st.Part != rec.From || st.UpgradeAvailable {
		return fmt.Errorf("%w: running %d but %s=%d %s=%t", ErrBootState, running, bootenv.VarBootPart, st.Part, bootenv.VarUpgradeAvailable, st.UpgradeAvailable)
	}
	return nil
}

// ArtifactFailure implements Installer. It does nothing: the inactive
// partition may hold a partial or rejected image, which nothing boots.
func (r *Rootfs) ArtifactFailure(context.Context) error { return nil }

// Cleanup implements Installer: it removes the install record.
func (r *Rootfs) Cleanup(context.Context) error {
	if err := os.Remove(r.record); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("cleanup: %w", err)
	}
	return atomicfile.SyncDir(filepath.Dir(r.record))
}

func (r *Rootfs) readRecord() (rootfsRecord, error) {
	var rec rootfsRecord
	b, err := readSmall(r.record, 64<<10)
	if errors.Is(err, fs.ErrNotExist) {
		return rec, fmt.Errorf("%w: no install record %s", ErrNotDownloaded, r.record)
	}
	if err != nil {
		return rec, err
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		return rec, fmt.Errorf("install record %s: %w", r.record, err)
	}
	return rec, nil
}

func (r *Rootfs) writeRecord(rec rootfsRecord) error {
	b, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(r.opts.StateDir, 0o700); err != nil {
		return err
	}
	return atomicfile.WriteFile(r.record, append(b, '\n'), 0o600)
}
