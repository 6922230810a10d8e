package install

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/gitfleet/gitfleet/artifact"
)

const MiB = 1 << 20

func rootfsArtifact(t testing.TB, name string, image []byte, signer *artifact.Signer) []byte {
	return build(t, artifact.Spec{
		Name:     name,
		Signer:   signer,
		Payloads: []artifact.PayloadSpec{artifact.RootfsImage(memFile("rootfs.ext4", image), name, artifact.Software{})},
	})
}

// downloadRootfs runs Download of a rootfs artifact on a fresh installer.
func downloadRootfs(t *testing.T, opts RootfsOptions, data []byte) (*Rootfs, error) {
	t.Helper()
	ar := open(t, data)
	r, err := NewRootfs(opts, Payload{Header: ar.Header(), Index: 0})
	if err != nil {
		t.Fatal(err)
	}
	return r, DownloadAll(context.Background(), ar, []Installer{r})
}

// fresh makes a new installer for the same artifact, as the agent does
// after a restart.
func fresh(t *testing.T, opts RootfsOptions, data []byte) *Rootfs {
	t.Helper()
	ar := open(t, data)
	r, err := NewRootfs(opts, Payload{Header: ar.Header(), Index: 0})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestRootfsUpdateAndCommit(t *testing.T) {
	ctx := context.Background()
	dev := newDevice(t, 8*MiB)
	image := pattern(3*MiB+123, 1)
	data := rootfsArtifact(t, "release-2", image, nil)
	envBefore := dev.envBytes(t)

	r, err := downloadRootfs(t, dev.opts(), data)
	if err != nil {
		t.Fatalf("Download: %v", err)
	}
	if got := readFile(t, dev.partB)[:len(image)]; !bytes.Equal(got, image) {
		t.Fatal("partition B does not hold the image")
	}
	if !bytes.Equal(dev.envBytes(t), envBefore) {
		t.Fatal("Download changed the boot environment")
	}
	if a := readFile(t, dev.partA); !bytes.Equal(a, make([]byte, 8*MiB)) {
		t.Fatal("Download wrote to the active partition A")
	}

	// Every later state runs on a fresh installer, as after a restart,
	// and twice, as after a power cut right after it.
	steps := []struct {
		name string
		fn   func(*Rootfs) error
	}{
		{"ArtifactInstall", func(r *Rootfs) error { return r.ArtifactInstall(ctx) }},
		{"reboot", func(*Rootfs) error { dev.boot(t, 3); return nil }},
		{"ArtifactVerifyReboot", func(r *Rootfs) error { return r.ArtifactVerifyReboot(ctx) }},
		{"ArtifactCommit", func(r *Rootfs) error { return r.ArtifactCommit(ctx) }},
		{"Cleanup", func(r *Rootfs) error { return r.Cleanup(ctx) }},
	}
	_ = r
	for _, s := range steps {
		for i := range 2 {
			if err := s.fn(fresh(t, dev.opts(), data)); err != nil {
				t.Fatalf("%s (run %d): %v", s.name, i+1, err)
			}
		}
		if s.name == "ArtifactInstall" {
			if st := dev.state(t); st.Part != 3 || !st.UpgradeAvailable || st.BootCount != 0 {
				t.Fatalf("after ArtifactInstall: %+v", st)
			}
		}
	}
	if st := dev.state(t); st.Part != 3 || st.UpgradeAvailable || st.BootCount != 0 {
		t.Fatalf("after commit: %+v", st)
	}
	if _, err := os.Stat(filepath.Join(dev.stateDir, "rootfs.json")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("install record after Cleanup: %v", err)
	}

	// The next update goes to A.
	image2 := pattern(2*MiB, 2)
	data2 := rootfsArtifact(t, "release-3", image2, nil)
	if _, err := downloadRootfs(t, dev.opts(), data2); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, dev.partA)[:len(image2)]; !bytes.Equal(got, image2) {
		t.Fatal("the second update did not go to partition A")
	}
	if got := readFile(t, dev.partB)[:len(image)]; !bytes.Equal(got, image) {
		t.Fatal("the second update touched the running partition B")
	}
}

func TestRootfsTamperedImage(t *testing.T) {
	ctx := context.Background()
	signer, err := loadTestSigner()
	if err != nil {
		t.Fatal(err)
	}
	image := pattern(4*MiB, 3)
	data := rootfsArtifact(t, "release-2", image, signer)
	// Flip one byte in the middle of the image (payloads are uncompressed).
	probe := image[2*MiB : 2*MiB+64]
	at := bytes.Index(data, probe)
	if at < 0 || bytes.Index(data[at+1:], probe) >= 0 {
		t.Fatal("image bytes not found once in the artifact")
	}
	tampered := bytes.Clone(data)
	tampered[at+10] ^= 0x40

	for _, tc := range []struct {
		name string
		data []byte
		want error
	}{
		{"flipped byte", tampered, artifact.ErrDigest},
		{"truncated", data[:at+MiB], artifact.ErrTruncated},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dev := newDevice(t, 8*MiB)
			envBefore := dev.envBytes(t)
			ar, err := artifact.NewReader(bytes.NewReader(tc.data), artifact.ReaderOptions{Verifiers: []*artifact.Verifier{signer.Verifier()}})
			if err != nil {
				t.Fatal(err) // the signature covers the manifest, not the bytes we changed
			}
			r, err := NewRootfs(dev.opts(), Payload{Header: ar.Header(), Index: 0})
			if err != nil {
				t.Fatal(err)
			}
			err = DownloadAll(ctx, ar, []Installer{r})
			if !errors.Is(err, tc.want) {
				t.Fatalf("Download: %v, want %v", err, tc.want)
			}
			// The inactive partition holds a partial image, which is fine:
			// nothing boots it.
			if err := r.ArtifactInstall(ctx); !errors.Is(err, ErrNotDownloaded) {
				t.Fatalf("ArtifactInstall after a failed download: %v, want ErrNotDownloaded", err)
			}
			if err := fresh(t, dev.opts(), data).ArtifactInstall(ctx); !errors.Is(err, ErrNotDownloaded) {
				t.Fatalf("ArtifactInstall after a restart: %v, want ErrNotDownloaded", err)
			}
			for _, step := range []func(context.Context) error{r.ArtifactRollback, r.ArtifactFailure, r.Cleanup} {
				if err := step(ctx); err != nil {
					t.Fatal(err)
				}
			}
			if !bytes.Equal(dev.envBytes(t), envBefore) {
				t.Fatalf("boot environment changed:\n%s", dev.envBytes(t))
			}
		})
	}
}

func TestRootfsTooLarge(t *testing.T) {
	dev := newDevice(t, 2*MiB)
	old := pattern(2*MiB, 9)
	if err := os.WriteFile(dev.partB, old, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		size int64 // RootfsOptions.Size
	}{
		{"file size", 0},
		{"configured size", MiB},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := dev.opts()
			opts.Size = tc.size
			image := pattern(2*MiB+1, 4)
			if tc.size > 0 {
				image = image[:tc.size+1]
			}
			_, err := downloadRootfs(t, opts, rootfsArtifact(t, "big", image, nil))
			if !errors.Is(err, ErrTooLarge) {
				t.Fatalf("Download: %v, want ErrTooLarge", err)
			}
			if !bytes.Equal(readFile(t, dev.partB), old) {
				t.Fatal("a refused image was written")
			}
		})
	}
	// An image of exactly the partition's size fits.
	image := pattern(2*MiB, 5)
	if _, err := downloadRootfs(t, dev.opts(), rootfsArtifact(t, "exact", image, nil)); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readFile(t, dev.partB), image) {
		t.Fatal("image not written")
	}
}

func TestRootfsInterruptedDownloadRerun(t *testing.T) {
	ctx := context.Background()
	dev := newDevice(t, 4*MiB)
	image := pattern(3*MiB, 6)
	data := rootfsArtifact(t, "release-2", image, nil)

	// A download cut off halfway (the power cut, the agent killed).
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ar, err := artifact.NewReader(&cancelAfter{r: bytes.NewReader(data), left: 2 * MiB, cancel: cancel}, artifact.ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r, _ := NewRootfs(dev.opts(), Payload{Header: ar.Header(), Index: 0})
	if err := DownloadAll(cctx, ar, []Installer{r}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Download: %v, want context.Canceled", err)
	}
	if err := fresh(t, dev.opts(), data).ArtifactInstall(ctx); !errors.Is(err, ErrNotDownloaded) {
		t.Fatalf("ArtifactInstall after a cut-off download: %v", err)
	}
	// The agent enters Download again.
	if _, err := downloadRootfs(t, dev.opts(), data); err != nil {
		t.Fatal(err)
	}
	if err := fresh(t, dev.opts(), data).ArtifactInstall(ctx); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readFile(t, dev.partB)[:len(image)], image) {
		t.Fatal("image not written")
	}
}

// cancelAfter cancels a context once left bytes were read.
type cancelAfter struct {
	r      io.Reader
	left   int64
	cancel func()
}

func (c *cancelAfter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if c.left -= int64(n); c.left <= 0 {
		c.cancel()
	}
	return n, err
}

func loadTestSigner() (*artifact.Signer, error) {
	priv, _, err := artifact.GenerateKey(artifact.Ed25519)
	if err != nil {
		return nil, err
	}
	return artifact.LoadSigner(priv)
}

func TestRootfsRecordOfAnotherArtifact(t *testing.T) {
	ctx := context.Background()
	dev := newDevice(t, 4*MiB)
	a := rootfsArtifact(t, "release-a", pattern(MiB, 1), nil)
	b := rootfsArtifact(t, "release-b", pattern(MiB, 2), nil)
	if _, err := downloadRootfs(t, dev.opts(), a); err != nil {
		t.Fatal(err)
	}
	if err := fresh(t, dev.opts(), b).ArtifactInstall(ctx); !errors.Is(err, ErrNotDownloaded) {
		t.Fatalf("ArtifactInstall of b after downloading a: %v", err)
	}
	if st := dev.state(t); st.Part != 2 || st.UpgradeAvailable {
		t.Fatalf("boot state %+v", st)
	}
}

func TestRootfsBootStateRefusals(t *testing.T) {
	ctx := context.Background()
	data := rootfsArtifact(t, "release-2", pattern(MiB, 1), nil)
	for _, tc := range []struct {
		name  string
		setup func(*device)
	}{
		{"update on trial", func(d *device) { _ = d.env.Set(ctx, map[string]string{"upgrade_available": "1"}) }},
		{"running another partition", func(d *device) { d.boot(t, 3) }},
		{"unknown partition", func(d *device) {
			_ = d.env.Set(ctx, map[string]string{"mender_boot_part": "5", "mender_boot_part_hex": "5"})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dev := newDevice(t, 2*MiB)
			tc.setup(dev)
			old := readFile(t, dev.partB)
			_, err := downloadRootfs(t, dev.opts(), data)
			if !errors.Is(err, ErrBootState) {
				t.Fatalf("Download: %v, want ErrBootState", err)
			}
			if !bytes.Equal(readFile(t, dev.partB), old) || !bytes.Equal(readFile(t, dev.partA), old) {
				t.Fatal("a partition was written")
			}
		})
	}
}

func TestRootfsFallbackAndRollback(t *testing.T) {
	ctx := context.Background()
	dev := newDevice(t, 2*MiB)
	data := rootfsArtifact(t, "release-2", pattern(MiB, 1), nil)
	if _, err := downloadRootfs(t, dev.opts(), data); err != nil {
		t.Fatal(err)
	}
	if err := fresh(t, dev.opts(), data).ArtifactInstall(ctx); err != nil {
		t.Fatal(err)
	}
	// The new system never came up: the bootloader went back to A after
	// its boot limit (the simulator's boot step does what U-Boot does).
	if err := dev.env.Set(ctx, map[string]string{"mender_boot_part": "2", "mender_boot_part_hex": "2", "upgrade_available": "0", "bootcount": "3"}); err != nil {
		t.Fatal(err)
	}
	dev.boot(t, 2)
	r := fresh(t, dev.opts(), data)
	if err := r.ArtifactVerifyReboot(ctx); !errors.Is(err, ErrWrongPartition) {
		t.Fatalf("ArtifactVerifyReboot: %v, want ErrWrongPartition", err)
	}
	if err := r.ArtifactCommit(ctx); !errors.Is(err, ErrWrongPartition) {
		t.Fatalf("ArtifactCommit: %v, want ErrWrongPartition", err)
	}
	for range 2 {
		if err := fresh(t, dev.opts(), data).ArtifactRollback(ctx); err != nil {
			t.Fatal(err)
		}
		if err := fresh(t, dev.opts(), data).ArtifactVerifyRollbackReboot(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if st := dev.state(t); st.Part != 2 || st.UpgradeAvailable || st.BootCount != 0 {
		t.Fatalf("after rollback: %+v", st)
	}
}

func TestRootfsRollbackAfterReboot(t *testing.T) {
	ctx := context.Background()
	dev := newDevice(t, 2*MiB)
	data := rootfsArtifact(t, "release-2", pattern(MiB, 1), nil)
	if _, err := downloadRootfs(t, dev.opts(), data); err != nil {
		t.Fatal(err)
	}
	if err := fresh(t, dev.opts(), data).ArtifactInstall(ctx); err != nil {
		t.Fatal(err)
	}
	dev.boot(t, 3)
	// Running B on trial; the agent's own health check failed: roll back.
	if err := fresh(t, dev.opts(), data).ArtifactRollback(ctx); err != nil {
		t.Fatal(err)
	}
	if st := dev.state(t); st.Part != 2 || st.UpgradeAvailable {
		t.Fatalf("after rollback: %+v", st)
	}
	if err := fresh(t, dev.opts(), data).ArtifactVerifyRollbackReboot(ctx); !errors.Is(err, ErrWrongPartition) {
		t.Fatalf("verify before the rollback reboot: %v, want ErrWrongPartition", err)
	}
	dev.boot(t, 2)
	if err := fresh(t, dev.opts(), data).ArtifactVerifyRollbackReboot(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestRootfsHealthCheck(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		cmd  []string
		want error
	}{
		{"passes", []string{"/bin/sh", "-c", "echo checking; exit 0"}, nil},
		{"fails", []string{"/bin/sh", "-c", "echo broken >&2; exit 3"}, ErrHealthCheck},
		{"missing", []string{"/nonexistent/health-check"}, ErrHealthCheck},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dev := newDevice(t, 2*MiB)
			opts := dev.opts()
			opts.HealthCheck = tc.cmd
			data := rootfsArtifact(t, "release-2", pattern(MiB, 1), nil)
			if _, err := downloadRootfs(t, opts, data); err != nil {
				t.Fatal(err)
			}
			if err := fresh(t, opts, data).ArtifactInstall(ctx); err != nil {
				t.Fatal(err)
			}
			dev.boot(t, 3)
			err := fresh(t, opts, data).ArtifactVerifyReboot(ctx)
			if !errors.Is(err, tc.want) || (tc.want == nil && err != nil) {
				t.Fatalf("ArtifactVerifyReboot: %v, want %v", err, tc.want)
			}
		})
	}
}

func TestRootfsPayloadChecks(t *testing.T) {
	dev := newDevice(t, MiB)
	data := build(t, artifact.Spec{Name: "m", Payloads: []artifact.PayloadSpec{
		artifact.ModuleImage("single-file", []artifact.FileSpec{memFile("f", []byte("x"))}, "m", artifact.Software{}),
	}})
	ar := open(t, data)
	if _, err := NewRootfs(dev.opts(), Payload{Header: ar.Header(), Index: 0}); !errors.Is(err, ErrPayload) {
		t.Fatalf("module payload: %v", err)
	}
	if _, err := NewRootfs(dev.opts(), Payload{Header: ar.Header(), Index: 1}); !errors.Is(err, ErrPayload) {
		t.Fatalf("payload 1 of 1: %v", err)
	}
	opts := dev.opts()
	opts.A = Partition{Path: "part-a"}
	rdata := rootfsArtifact(t, "r", []byte("x"), nil)
	if _, err := NewRootfs(opts, Payload{Header: open(t, rdata).Header()}); !errors.Is(err, ErrBootState) {
		t.Fatalf("partition without a number: %v", err)
	}
}

func TestPartitionNumber(t *testing.T) {
	for _, tc := range []struct {
		p    Partition
		want int
	}{
		{Partition{Path: "/dev/mmcblk0p2"}, 2},
		{Partition{Path: "/dev/sda13"}, 13},
		{Partition{Path: "/dev/ubi0_1"}, 1},
		{Partition{Path: "a.img", Number: 3}, 3},
		{Partition{Path: "a.img"}, 0},
	} {
		got, err := tc.p.number()
		if got != tc.want || (tc.want == 0) != (err != nil) {
			t.Errorf("%+v: %d, %v; want %d", tc.p, got, err, tc.want)
		}
	}
}

func TestProcBooted(t *testing.T) {
	dir := t.TempDir()
	a := filepath.Join(dir, "mmcblk0p2")
	b := filepath.Join(dir, "mmcblk0p3")
	for _, p := range []string{a, b} {
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	disk := filepath.Join(dir, "disk")
	for _, l := range []struct{ dir, name, target string }{
		{"by-partuuid", "1234abcd-03", b},
		{"by-label", "rootfs-a", a},
	} {
		if err := os.MkdirAll(filepath.Join(disk, l.dir), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(l.target, filepath.Join(disk, l.dir, l.name)); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		cmdline string
		want    int // 0: error
	}{
		{"console=ttyS0 root=" + a + " rw", 2},
		{"root=PARTUUID=1234ABCD-03 rootwait", 3},
		{"root=LABEL=rootfs-a", 2},
		{"root=/dev/other", 0},
		{"quiet", 0},
	} {
		cmdline := filepath.Join(dir, "cmdline")
		if err := os.WriteFile(cmdline, []byte(tc.cmdline+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		pb := procBooted{root: dir, cmdline: cmdline, disk: disk, parts: []Partition{{Path: a}, {Path: b}}}
		got, err := pb.booted(context.Background())
		if got != tc.want || (tc.want == 0) != (err != nil) {
			t.Errorf("%q: %d, %v; want %d", tc.cmdline, got, err, tc.want)
		}
	}
}
