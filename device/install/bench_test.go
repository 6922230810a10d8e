package install

import (
	"context"
	"crypto/sha256"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/artifact"
)

// benchSize is the image size: 256 MiB, or GITFLEET_BENCH_SIZE (bytes, or
// with a MiB/GiB suffix).
func benchSize(b *testing.B) int64 {
	s := os.Getenv("GITFLEET_BENCH_SIZE")
	if s == "" {
		return 256 * MiB
	}
	mult := int64(1)
	for suffix, m := range map[string]int64{"GiB": 1 << 30, "MiB": 1 << 20, "G": 1 << 30, "M": 1 << 20} {
		if v, ok := strings.CutSuffix(s, suffix); ok {
			s, mult = v, m
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		b.Fatalf("GITFLEET_BENCH_SIZE=%q", os.Getenv("GITFLEET_BENCH_SIZE"))
	}
	return n * mult
}

// patternReader yields n pseudo-random bytes without holding them.
type patternReader struct {
	left int64
	x    uint64
}

func (p *patternReader) Read(b []byte) (int, error) {
	if p.left == 0 {
		return 0, io.EOF
	}
	if int64(len(b)) > p.left {
		b = b[:p.left]
	}
	i := 0
	for ; i+8 <= len(b); i += 8 {
		p.x ^= p.x << 13
		p.x ^= p.x >> 7
		p.x ^= p.x << 17
		v := p.x
		b[i], b[i+1], b[i+2], b[i+3], b[i+4], b[i+5], b[i+6], b[i+7] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24), byte(v>>32), byte(v>>40), byte(v>>48), byte(v>>56)
	}
	for ; i < len(b); i++ {
		b[i] = byte(p.x >> (8 * (i % 8)))
	}
	p.left -= int64(len(b))
	return len(b), nil
}

// BenchmarkRootfsDownload streams a rootfs-image artifact (uncompressed,
// signed) from a local file into a partition file through Rootfs.Download,
// and in the same run copies the same image bytes through sha256 into a
// file with fsync: the ceiling. It reports both rates and their ratio
// (goal ≥ 0.8).
func BenchmarkRootfsDownload(b *testing.B) {
	size := benchSize(b)
	dir := b.TempDir()
	image := filepath.Join(dir, "rootfs.ext4")
	f, err := os.Create(image)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := io.Copy(f, &patternReader{left: size, x: 88172645463325252}); err != nil {
		b.Fatal(err)
	}
	f.Close()
	signer, err := loadTestSigner()
	if err != nil {
		b.Fatal(err)
	}
	art := filepath.Join(dir, "rootfs.mender")
	out, err := os.Create(art)
	if err != nil {
		b.Fatal(err)
	}
	err = artifact.Write(context.Background(), out, artifact.Spec{
		Name: "bench", DeviceTypes: []string{"bench"}, Compression: artifact.None, Signer: signer, TempDir: dir,
		Payloads: []artifact.PayloadSpec{artifact.RootfsImage(artifact.FileSpec{Path: image}, "bench", artifact.Software{})},
	})
	out.Close()
	if err != nil {
		b.Fatal(err)
	}
	dev := newDevice(b, size)
	ceilingOut := filepath.Join(dir, "ceiling.img")

	download := func() {
		in, err := os.Open(art)
		if err != nil {
			b.Fatal(err)
		}
		defer in.Close()
		ar, err := artifact.NewReader(in, artifact.ReaderOptions{Verifiers: []*artifact.Verifier{signer.Verifier()}})
		if err != nil {
			b.Fatal(err)
		}
		r, err := NewRootfs(dev.opts(), Payload{Header: ar.Header()})
		if err != nil {
			b.Fatal(err)
		}
		if err := DownloadAll(context.Background(), ar, []Installer{r}); err != nil {
			b.Fatal(err)
		}
		if err := r.Cleanup(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
	ceiling := func() {
		in, err := os.Open(image)
		if err != nil {
			b.Fatal(err)
		}
		defer in.Close()
		out, err := os.OpenFile(ceilingOut, os.O_WRONLY|os.O_CREATE, 0o644)
		if err != nil {
			b.Fatal(err)
		}
		h := sha256.New()
		if _, err := io.CopyBuffer(out, io.TeeReader(in, h), make([]byte, MiB)); err != nil {
			b.Fatal(err)
		}
		if err := out.Sync(); err != nil {
			b.Fatal(err)
		}
		out.Close()
		h.Sum(nil)
	}
	// Warm the page cache of both inputs the same way.
	ceiling()
	download()

	var tDownload, tCeiling time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		// Alternate the order so that neither always runs on a warmer cache.
		if i%2 == 0 {
			tCeiling += timed(ceiling)
			tDownload += timed(download)
		} else {
			tDownload += timed(download)
			tCeiling += timed(ceiling)
		}
	}
	b.StopTimer()
	mbps := func(d time.Duration) float64 { return float64(size) * float64(b.N) / d.Seconds() / 1e6 }
	b.ReportMetric(mbps(tDownload), "download-MB/s")
	b.ReportMetric(mbps(tCeiling), "ceiling-MB/s")
	b.ReportMetric(tCeiling.Seconds()/tDownload.Seconds(), "ratio")
}

func timed(fn func()) time.Duration {
	start := time.Now()
	fn()
	return time.Since(start)
}
