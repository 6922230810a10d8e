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
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/gitfleet/gitfleet/artifact"
	"github.com/gitfleet/gitfleet/device/atomicfile"
)

// ModuleOptions configure update modules. The defaults are the Mender
// client's, so a device can switch agents and keep its modules.
type ModuleOptions struct {
	// Dir holds the modules, one executable per payload type.
	// Default /usr/share/mender/modules/v3.
	Dir string
	// WorkDir is where the work trees go: WorkDir/payloads/NNNN/tree.
	// Default /var/lib/mender/modules/v3.
	WorkDir string
	// Timeout bounds each invocation of a module (Mender's
	// ModuleTimeoutSeconds). Default 4 hours. When it expires the module's
	// process group gets SIGTERM, and SIGKILL after OSExec.KillGrace.
	Timeout time.Duration
	// ArtifactName and ArtifactGroup describe the artifact installed now,
	// DeviceType the device; they go into the tree as
	// current_artifact_name, current_artifact_group, current_device_type.
	ArtifactName, ArtifactGroup, DeviceType string
	// Exec runs the modules. Default OSExec{}.
	Exec Exec
	// Logger defaults to slog.Default(). Module output is logged line by
	// line (stdout at info, stderr at warn), at most 64 KiB per stream and
	// invocation.
	Logger *slog.Logger
}

func (o ModuleOptions) withDefaults() ModuleOptions {
	if o.Dir == "" {
		o.Dir = "/usr/share/mender/modules/v3"
	}
	if o.WorkDir == "" {
		o.WorkDir = "/var/lib/mender/modules/v3"
	}
	if o.Timeout <= 0 {
		o.Timeout = 4 * time.Hour
	}
	if o.Exec == nil {
		o.Exec = OSExec{}
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// Types returns the payload types with an executable module in Dir, sorted.
func (o ModuleOptions) Types() []string {
	o = o.withDefaults()
	ents, err := os.ReadDir(o.Dir)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range ents {
		if fi, err := os.Stat(filepath.Join(o.Dir, e.Name())); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	return out
}

// Module runs an update module (protocol v3) for one payload.
//
// The work tree, WorkDir/payloads/NNNN/tree (NNNN = payload index):
//
//	version                 "3"
//	current_artifact_name   ModuleOptions.ArtifactName
//	current_artifact_group  ModuleOptions.ArtifactGroup
//	current_device_type     ModuleOptions.DeviceType
//	header/artifact_name    the new artifact's name
//	header/artifact_group   its group
//	header/payload_type     the payload type (the module's name)
//	header/header-info      header-info, type-info and meta-data (JSON;
//	header/type-info        meta-data is {} when the artifact has none)
//	header/meta-data
//	tmp/                    the module's scratch space
//	stream-next, streams/   FIFOs, during Download (see below)
//	files/                  the payload files, when the module did not stream
//
// Each state runs "<Dir>/<type> <State> <tree>" in the tree. The queries
// NeedsArtifactReboot (No, Yes, Automatic; empty = No) and SupportsRollback
// (No, Yes; empty = No) read the module's stdout; anything else is
// ErrProtocol. A non-zero exit fails the state (ErrModuleFailed).
//
// Download: the tree is rebuilt empty, the module starts, and the agent
// offers each payload file by writing "streams/<name>\n" to the stream-next
// FIFO, then the file's bytes to the FIFO streams/<name>; after the last
// file it opens stream-next and closes it without writing (the module reads
// an empty line: no more streams). A module that exits with status 0 before
// opening stream-next does not stream: the agent then stores the files in
// files/ itself, fsynced. A module that streams and exits before the end of
// the files is ErrProtocol. Only the Download of a module that streams sees
// a tampered file's bytes before the digest fails; the protocol forbids
// modules to install anything during Download.
type Module struct {
	opts ModuleOptions
	p    Payload
	prog string // the module executable
	tree string
	log  *slog.Logger
}

// NewModule returns the installer for payload p, run by the module named
// after its type. ErrNoModule when there is no such executable.
func NewModule(opts ModuleOptions, p Payload) (*Module, error) {
	pl, err := p.payload()
	if err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	if pl.Type == "" || strings.ContainsAny(pl.Type, "/\x00") || pl.Type == "." || pl.Type == ".." {
		return nil, fmt.Errorf("%w: %q", ErrNoModule, pl.Type)
	}
	prog := filepath.Join(opts.Dir, pl.Type)
	fi, err := os.Stat(prog)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrNoModule, pl.Type, err)
	}
	if !fi.Mode().IsRegular() || fi.Mode()&0o111 == 0 {
		return nil, fmt.Errorf("%w: %s is not an executable file", ErrNoModule, prog)
	}
	if p.Index > 9999 {
		return nil, fmt.Errorf("%w: payload index %d", ErrPayload, p.Index)
	}
	return &Module{
		opts: opts,
		p:    p,
		prog: prog,
		tree: filepath.Join(opts.WorkDir, "payloads", fmt.Sprintf("%04d", p.Index), "tree"),
		log:  opts.Logger.With("artifact", p.Header.Name(), "payload", p.Index, "module", pl.Type),
	}, nil
}

// Tree returns the module's work tree.
func (m *Module) Tree() string { return m.tree }

// buildTree makes the tree with its header files; Download starts from an
// empty one.
func (m *Module) buildTree(fresh bool) error {
	if fresh {
		if err := os.RemoveAll(m.tree); err != nil {
			return err
		}
	}
	pl, _ := m.p.payload()
	h := m.p.Header
	headerInfo, err := json.MarshalIndent(h.Info, "", "  ")
	if err != nil {
		return err
	}
	ti := pl.TypeInfo
	if ti.Type == "" {
		ti.Type = pl.Type
	}
	typeInfo, err := json.MarshalIndent(ti, "", "  ")
	if err != nil {
		return err
	}
	meta := []byte("{}")
	if pl.MetaData != nil {
		if meta, err = json.MarshalIndent(pl.MetaData, "", "  "); err != nil {
			return err
		}
	}
	for _, d := range []string{"header", "tmp"} {
		if err := os.MkdirAll(filepath.Join(m.tree, d), 0o700); err != nil {
			return err
		}
	}
	for _, f := range []struct{ name, content string }{
		{"version", "3"},
		{"current_artifact_name", m.opts.ArtifactName},
		{"current_artifact_group", m.opts.ArtifactGroup},
		{"current_device_type", m.opts.DeviceType},
		{"header/artifact_name", h.Info.Provides.Name},
		{"header/artifact_group", h.Info.Provides.Group},
		{"header/payload_type", pl.Type},
		{"header/header-info", string(headerInfo)},
		{"header/type-info", string(typeInfo)},
		{"header/meta-data", string(meta)},
	} {
		if err := os.WriteFile(filepath.Join(m.tree, f.name), []byte(f.content), 0o600); err != nil {
			return err
		}
	}
	return nil
}

// ensureTree rebuilds the header part of a tree that is gone (a crash after
// Cleanup started, a wiped data partition), so that later states can run.
func (m *Module) ensureTree() error {
	if _, err := os.Stat(filepath.Join(m.tree, "header", "payload_type")); err == nil {
		return nil
	}
	return m.buildTree(false)
}

// call runs the module for a state. With capture, stdout is returned (at
// most 4 KiB) instead of logged.
func (m *Module) call(ctx context.Context, state string, capture bool) (string, error) {
	if err := m.ensureTree(); err != nil {
		return "", fmt.Errorf("%s: work tree: %w", state, err)
	}
	ctx, cancel := context.WithTimeout(ctx, m.opts.Timeout)
	defer cancel()
	stdout := &logWriter{log: m.log, msg: "module stdout", level: slog.LevelInfo}
	stderr := &logWriter{log: m.log, msg: "module stderr", level: slog.LevelWarn}
	var out limitedBuffer
	out.limit = 4 << 10
	c := m.command(state, stdout, stderr)
	if capture {
		c.Stdout = &out
	}
	err := run(ctx, m.opts.Exec, c)
	stdout.Flush()
	stderr.Flush()
	if err != nil {
		return "", m.failed(ctx, state, err)
	}
	return out.buf.String(), nil
}

func (m *Module) command(state string, stdout, stderr io.Writer) Command {
	return Command{
		Path:   m.prog,
		Args:   []string{state, m.tree},
		Dir:    m.tree,
		Stdout: stdout,
		Stderr: stderr,
	}
}

func (m *Module) failed(ctx context.Context, state string, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%w: %s %s: %w (%w)", ErrModuleFailed, filepath.Base(m.prog), state, err, ctx.Err())
	}
	return fmt.Errorf("%w: %s %s: %w", ErrModuleFailed, filepath.Base(m.prog), state, err)
}

// ArtifactInstall implements Installer.
func (m *Module) ArtifactInstall(ctx context.Context) error {
	_, err := m.call(ctx, "ArtifactInstall", false)
	return err
}

// NeedsArtifactReboot implements Installer.
func (m *Module) NeedsArtifactReboot(ctx context.Context) (Reboot, error) {
	out, err := m.call(ctx, "NeedsArtifactReboot", true)
	if err != nil {
		return RebootNo, err
	}
	switch s := strings.TrimSpace(out); s {
	case "", "No":
		return RebootNo, nil
	case "Yes":
		return RebootYes, nil
	case "Automatic":
		return RebootAutomatic, nil
	default:
		return RebootNo, fmt.Errorf("%w: NeedsArtifactReboot answered %q", ErrProtocol, clip(s))
	}
}

// ArtifactReboot implements Installer.
func (m *Module) ArtifactReboot(ctx context.Context) error {
	_, err := m.call(ctx, "ArtifactReboot", false)
	return err
}

// ArtifactVerifyReboot implements Installer.
func (m *Module) ArtifactVerifyReboot(ctx context.Context) error {
	_, err := m.call(ctx, "ArtifactVerifyReboot", false)
	return err
}

// ArtifactCommit implements Installer.
func (m *Module) ArtifactCommit(ctx context.Context) error {
	_, err := m.call(ctx, "ArtifactCommit", false)
	return err
}

// SupportsRollback implements Installer.
func (m *Module) SupportsRollback(ctx context.Context) (bool, error) {
	out, err := m.call(ctx, "SupportsRollback", true)
	if err != nil {
		return false, err
	}
	switch s := strings.TrimSpace(out); s {
	case "", "No":
		return false, nil
	case "Yes":
		return true, nil
	default:
		return false, fmt.Errorf("%w: SupportsRollback answered %q", ErrProtocol, clip(s))
	}
}

// ArtifactRollback implements Installer.
func (m *Module) ArtifactRollback(ctx context.Context) error {
	_, err := m.call(ctx, "ArtifactRollback", false)
	return err
}

// ArtifactRollbackReboot implements Installer.
func (m *Module) ArtifactRollbackReboot(ctx context.Context) error {
	_, err := m.call(ctx, "ArtifactRollbackReboot", false)
	return err
}

// ArtifactVerifyRollbackReboot implements Installer.
func (m *Module) ArtifactVerifyRollbackReboot(ctx context.Context) error {
	_, err := m.call(ctx, "ArtifactVerifyRollbackReboot", false)
	return err
}

// ArtifactFailure implements Installer.
func (m *Module) ArtifactFailure(ctx context.Context) error {
	_, err := m.call(ctx, "ArtifactFailure", false)
	return err
}

// Cleanup implements Installer: the module's Cleanup, then the tree is
// removed. When the tree is gone already, Cleanup ran before and is not
// repeated (as in the Mender client).
func (m *Module) Cleanup(ctx context.Context) error {
	if _, err := os.Stat(m.tree); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	_, modErr := m.call(ctx, "Cleanup", false)
	payloadDir := filepath.Dir(m.tree)
	if err := os.RemoveAll(payloadDir); err != nil {
		return errors.Join(modErr, fmt.Errorf("remove %s: %w", payloadDir, err))
	}
	_ = atomicfile.SyncDir(filepath.Dir(payloadDir))
	return modErr
}

// Download implements Installer; see the type's documentation.
func (m *Module) Download(ctx context.Context, files Files) (err error) {
	if err := m.buildTree(true); err != nil {
		return fmt.Errorf("download: work tree: %w", err)
	}
	if err := os.Mkdir(filepath.Join(m.tree, "streams"), 0o700); err != nil {
		return fmt.Errorf("download: work tree: %w", err)
	}
	next := filepath.Join(m.tree, "stream-next")
	if err := syscall.Mkfifo(next, 0o600); err != nil {
		return fmt.Errorf("download: mkfifo: %w", err)
	}
	syscall.Sync() // resume from a complete tree after a power cut

	ctx, cancel := context.WithTimeout(ctx, m.opts.Timeout)
	defer cancel()
	stdout := &logWriter{log: m.log, msg: "module stdout", level: slog.LevelInfo}
	stderr := &logWriter{log: m.log, msg: "module stderr", level: slog.LevelWarn}
	proc, err := m.opts.Exec.Start(ctx, m.command("Download", stdout, stderr))
	if err != nil {
		return m.failed(ctx, "Download", err)
	}
	exited := make(chan struct{})
	var exitErr error
	go func() {
		exitErr = proc.Wait()
		stdout.Flush()
		stderr.Flush()
		close(exited)
	}()
	defer func() {
		if err != nil {
			cancel() // stop the module
		}
		<-exited
	}()

	d := &moduleDownload{m: m, ctx: ctx, exited: exited, exitErr: &exitErr, next: next}
	for {
		f, ferr := files.Next()
		if ferr == io.EOF {
			break
		}
		if ferr != nil {
			return ferr
		}
		if err := d.file(f); err != nil {
			return err
		}
	}
	if d.mode != storeFiles {
		// An empty stream-next ends the streams; a module that exits
		// without reading it did not stream.
		fifo, err := d.openFIFO(next)
		if err != nil && !errors.Is(err, errExited) {
			return err
		}
		if fifo != nil {
			fifo.Close()
		}
	}
	select {
	case <-exited:
	case <-ctx.Done():
		<-exited
	}
	if exitErr != nil {
		return m.failed(ctx, "Download", exitErr)
	}
	if d.mode == storeFiles {
		return atomicfile.SyncDir(filepath.Join(m.tree, "files"))
	}
	return nil
}

type downloadMode int

const (
	undecided downloadMode = iota
	moduleStreams
	storeFiles
)

var errExited = errors.New("module exited")

type moduleDownload struct {
	m       *Module
	ctx     context.Context
	exited  chan struct{}
	exitErr *error // valid once exited is closed
	next    string
	mode    downloadMode
}

func (d *moduleDownload) file(f *artifact.File) error {
	if d.mode != storeFiles {
		stream := filepath.Join(d.m.tree, "streams", f.Name)
		if err := syscall.Mkfifo(stream, 0o600); err != nil {
			return fmt.Errorf("download: mkfifo: %w", err)
		}
		fifo, err := d.openFIFO(d.next)
		switch {
		case errors.Is(err, errExited) && *d.exitErr != nil:
			return d.m.failed(d.ctx, "Download", *d.exitErr)
		case errors.Is(err, errExited) && d.mode == undecided:
			if err := d.storeMode(); err != nil {
				return err
			}
		case errors.Is(err, errExited):
			return fmt.Errorf("%w: the module exited in the middle of the download, before %s", ErrProtocol, f.Name)
		case err != nil:
			return err
		default:
			d.mode = moduleStreams
			_, werr := io.WriteString(fifo, "streams/"+f.Name+"\n")
			fifo.Close()
			if werr != nil {
				return fmt.Errorf("download: write stream-next: %w", werr)
			}
			return d.stream(stream, f)
		}
	}
	return d.store(f)
}

// stream writes f into the FIFO streams/<name> once the module opens it.
func (d *moduleDownload) stream(path string, f *artifact.File) error {
	fifo, err := d.openFIFO(path)
	if errors.Is(err, errExited) && *d.exitErr != nil {
		return d.m.failed(d.ctx, "Download", *d.exitErr)
	}
	if errors.Is(err, errExited) {
		return fmt.Errorf("%w: the module exited without reading %s", ErrProtocol, f.Name)
	}
	if err != nil {
		return err
	}
	defer fifo.Close()
	stop := context.AfterFunc(d.ctx, func() { _ = fifo.SetWriteDeadline(time.Now()) })
	defer stop()
	if _, err := io.Copy(fifo, f); err != nil {
		if errors.Is(err, syscall.EPIPE) {
			// The module closed the stream early; say why when it exits.
			t := time.NewTimer(5 * time.Second)
			defer t.Stop()
			select {
			case <-d.exited:
				if *d.exitErr != nil {
					return d.m.failed(d.ctx, "Download", *d.exitErr)
				}
				return fmt.Errorf("%w: the module stopped reading %s after part of it and exited", ErrProtocol, f.Name)
			case <-t.C:
			}
		}
		return fmt.Errorf("download: stream %s: %w", f.Name, err)
	}
	return fifo.Close()
}

// storeMode switches to storing the files in files/ (the module did not
// stream).
func (d *moduleDownload) storeMode() error {
	d.mode = storeFiles
	if err := os.RemoveAll(filepath.Join(d.m.tree, "streams")); err != nil {
		return err
	}
	if err := os.Remove(d.next); err != nil {
		return err
	}
	return os.Mkdir(filepath.Join(d.m.tree, "files"), 0o700)
}

func (d *moduleDownload) store(f *artifact.File) error {
	path := filepath.Join(d.m.tree, "files", f.Name)
	out, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("download: %w", err)
	}
	defer out.Close()
	if _, err := io.Copy(out, ctxReader{d.ctx, f}); err != nil {
		return fmt.Errorf("download: %s: %w", f.Name, err)
	}
	if err := out.Sync(); err != nil {
		return fmt.Errorf("download: %s: %w", f.Name, err)
	}
	return out.Close()
}

// openFIFO opens a FIFO for writing as soon as the module opens it for
// reading. errExited when the module exits first.
func (d *moduleDownload) openFIFO(path string) (*os.File, error) {
	wait := time.Millisecond
	for {
		fd, err := syscall.Open(path, syscall.O_WRONLY|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
		if err == nil {
			// os.NewFile sees the non-blocking FIFO and uses the poller,
			// so writes block the goroutine, not a thread.
			return os.NewFile(uintptr(fd), path), nil
		}
		if err != syscall.ENXIO && err != syscall.EINTR {
			return nil, fmt.Errorf("download: open %s: %w", filepath.Base(path), err)
		}
		t := time.NewTimer(wait)
		select {
		case <-d.exited:
			t.Stop()
			return nil, errExited
		case <-d.ctx.Done():
			t.Stop()
			return nil, d.ctx.Err()
		case <-t.C:
		}
		wait = min(2*wait, 20*time.Millisecond)
	}
}

// ctxReader stops a copy when ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// clip shortens untrusted text for an error message.
func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}
