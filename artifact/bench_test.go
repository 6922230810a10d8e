package artifact

import (
	"bufio"
	"context"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkReadVerify reads and verifies (signature and every digest) a
// large artifact from a file, for each compression, and reports beside it
// the machine's SHA-256 speed measured in the same run:
//
//	go test ./artifact -run '^$' -bench ReadVerify -benchtime 3x
//
// Metrics: MB/s (payload bytes), sha256-MB/s (hashing the same number of
// bytes in memory, timed right before each read so both see the same load),
// ratio (read+verify speed ÷ SHA-256 speed), peak-heap-MiB (live heap
// sampled during the read), and rss-hwm-MiB (the whole benchmark process's
// peak resident memory, artifact creation included). GITFLEET_BENCH_SIZE sets the payload size (default 1 GiB,
// suffixes K, M, G).
func BenchmarkReadVerify(b *testing.B) {
	size := benchSize(b)
	dir := b.TempDir()
	signer := testKey(b, ECDSAP256)
	shaBuf := make([]byte, 1<<20)
	fillBench(rand.New(rand.NewPCG(1, 2)), shaBuf)
	for _, c := range []Compression{None, Gzip} {
		path := filepath.Join(dir, "bench-"+string(c)+".mender")
		writeBenchArtifact(b, path, c, size, signer)
		b.Run(string(c), func(b *testing.B) {
			b.SetBytes(size)
			peak := int64(0)
			var readTime, shaTime time.Duration
			for i := 0; i < b.N; i++ {
				// The ceiling, measured right before each read so that
				// both see the same machine load.
				b.StopTimer()
				shaTime += timeSHA256(shaBuf, size)
				f, err := os.Open(path)
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				start := time.Now()
				stop := samplePeakHeap(&peak)
				_, err = Verify(f, ReaderOptions{Verifiers: []*Verifier{signer.Verifier()}})
				stop()
				readTime += time.Since(start)
				f.Close()
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(size)*float64(b.N)/shaTime.Seconds()/1e6, "sha256-MB/s")
			b.ReportMetric(shaTime.Seconds()/readTime.Seconds(), "ratio")
			b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
			b.ReportMetric(float64(rssHWM())/(1<<20), "rss-hwm-MiB")
		})
	}
}

// timeSHA256 hashes size bytes (buf, repeated) and returns how long it took.
func timeSHA256(buf []byte, size int64) time.Duration {
	h := sha256.New()
	start := time.Now()
	for done := int64(0); done < size; done += int64(len(buf)) {
		h.Write(buf[:min(int64(len(buf)), size-done)])
	}
	h.Sum(nil)
	return time.Since(start)
}

func benchSize(b *testing.B) int64 {
	s := os.Getenv("GITFLEET_BENCH_SIZE")
	if s == "" {
		return 1 << 30
	}
	mult := int64(1)
	switch s[len(s)-1] {
	case 'K', 'k':
		mult, s = 1<<10, s[:len(s)-1]
	case 'M', 'm':
		mult, s = 1<<20, s[:len(s)-1]
	case 'G', 'g':
		mult, s = 1<<30, s[:len(s)-1]
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		b.Fatalf("GITFLEET_BENCH_SIZE=%q: want a size like 1G or 256M", os.Getenv("GITFLEET_BENCH_SIZE"))
	}
	return n * mult
}

// benchData is size bytes of rootfs-like content: alternating 32 KiB runs of
// random bytes and of text, so gzip has something to do.
type benchData struct {
	rng  *rand.Rand
	left int64
	buf  []byte
	off  int
}

func newBenchData(size int64) *benchData {
	d := &benchData{rng: rand.New(rand.NewPCG(7, 7)), left: size, buf: make([]byte, 64<<10)}
	d.off = len(d.buf)
	return d
}

func fillBench(rng *rand.Rand, p []byte) {
	half := len(p) / 2
	for i := 0; i+8 <= half; i += 8 {
		v := rng.Uint64()
		for k := 0; k < 8; k++ {
			p[i+k] = byte(v >> (8 * k))
		}
	}
	text := "usr/lib/libexample.so.1 root root 0755 "
	for i := half; i < len(p); i++ {
		p[i] = text[i%len(text)]
	}
}

func (d *benchData) Read(p []byte) (int, error) {
	if d.left == 0 {
		return 0, io.EOF
	}
	if d.off == len(d.buf) {
		fillBench(d.rng, d.buf)
		d.off = 0
	}
	n := copy(p, d.buf[d.off:])
	n = int(min(int64(n), d.left))
	d.off += n
	d.left -= int64(n)
	return n, nil
}

func writeBenchArtifact(b *testing.B, path string, c Compression, size int64, s *Signer) {
	b.Helper()
	out, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer out.Close()
	w := bufio.NewWriterSize(out, 1<<20)
	file := FileSpec{Name: "rootfs.ext4", Open: func() (io.ReadCloser, error) { return io.NopCloser(newBenchData(size)), nil }}
	spec := Spec{Name: "bench", DeviceTypes: []string{"bench"}, Compression: c, Signer: s, TempDir: filepath.Dir(path),
		Payloads: []PayloadSpec{RootfsImage(file, "bench", Software{})}}
	if err := Write(context.Background(), w, spec); err != nil {
		b.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
}

// samplePeakHeap records the largest live heap seen until stop is called.
func samplePeakHeap(peak *int64) (stop func()) {
	runtime.GC()
	var done atomic.Bool
	finished := make(chan struct{})
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	go func() {
		defer close(finished)
		for !done.Load() {
			metrics.Read(sample)
			if v := int64(sample[0].Value.Uint64()); v > *peak {
				*peak = v
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	return func() { done.Store(true); <-finished }
}

// rssHWM returns the process's peak resident set size (VmHWM), or 0.
func rssHWM() int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}
