package install

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/gitfleet/gitfleet/artifact"
	"github.com/gitfleet/gitfleet/device/bootenv"
)

// quiet discards the installers' logs in tests.
var quiet = slog.New(slog.DiscardHandler)

// memFile is a payload file held in memory.
func memFile(name string, data []byte) artifact.FileSpec {
	return artifact.FileSpec{Name: name, Open: func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	}}
}

// build writes an artifact to memory.
func build(t testing.TB, spec artifact.Spec) []byte {
	t.Helper()
	if spec.DeviceTypes == nil {
		spec.DeviceTypes = []string{"test-board"}
	}
	if spec.Compression == "" {
		spec.Compression = artifact.None
	}
	var buf bytes.Buffer
	if err := artifact.Write(context.Background(), &buf, spec); err != nil {
		t.Fatalf("write artifact: %v", err)
	}
	return buf.Bytes()
}

// open reads an artifact's head.
func open(t testing.TB, data []byte) *artifact.Reader {
	t.Helper()
	ar, err := artifact.NewReader(bytes.NewReader(data), artifact.ReaderOptions{})
	if err != nil {
		t.Fatalf("read artifact: %v", err)
	}
	return ar
}

// pattern returns n bytes that differ from offset to offset.
func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	x := uint32(seed)*2654435761 + 1
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
}

// device is a simulated A/B device: two partition files, an environment
// file, and a marker of the partition that booted.
type device struct {
	dir        string
	partA      string
	partB      string
	env        *bootenv.File
	envPath    string
	bootedPath string
	stateDir   string
	size       int64
}

func newDevice(t testing.TB, size int64) *device {
	t.Helper()
	dir := t.TempDir()
	d := &device{
		dir:        dir,
		partA:      filepath.Join(dir, "part-a.img"),
		partB:      filepath.Join(dir, "part-b.img"),
		envPath:    filepath.Join(dir, "bootenv"),
		bootedPath: filepath.Join(dir, "booted"),
		stateDir:   filepath.Join(dir, "state"),
		size:       size,
	}
	for _, p := range []string{d.partA, d.partB} {
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Truncate(size); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	d.env = bootenv.NewFile(d.envPath)
	if err := bootenv.Rollback(context.Background(), d.env, 2); err != nil {
		t.Fatal(err)
	}
	d.boot(t, 2)
	return d
}

// boot records which partition the (simulated) system runs.
func (d *device) boot(t testing.TB, part int) {
	t.Helper()
	if err := os.WriteFile(d.bootedPath, []byte(strconv.Itoa(part)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

func (d *device) opts() RootfsOptions {
	return RootfsOptions{
		A:        Partition{Path: d.partA, Number: 2},
		B:        Partition{Path: d.partB, Number: 3},
		Env:      d.env,
		StateDir: d.stateDir,
		Booted:   FileBooted(d.bootedPath),
		Logger:   quiet,
	}
}

func (d *device) state(t testing.TB) bootenv.State {
	t.Helper()
	st, err := bootenv.ReadState(context.Background(), d.env)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func (d *device) envBytes(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile(d.envPath)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// newInstallers makes one installer per payload.
func newInstallers(t testing.TB, set Installers, ar *artifact.Reader) []Installer {
	t.Helper()
	var ins []Installer
	for i := range ar.Header().Payloads {
		in, err := set.New(Payload{Header: ar.Header(), Index: i})
		if err != nil {
			t.Fatalf("payload %d: %v", i, err)
		}
		ins = append(ins, in)
	}
	return ins
}
