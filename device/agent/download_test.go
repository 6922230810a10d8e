package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// flakyServer serves body with Range support and drops the connection
// after cut bytes of each of the first drops responses.
type flakyServer struct {
	body   []byte
	cut    int
	drops  int
	noETag bool

	mu     sync.Mutex
	ranges []string
	codes  []int
}

func (s *flakyServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.ranges = append(s.ranges, r.Header.Get("Range"))
	drop := s.drops > 0
	if drop {
		s.drops--
	}
	s.mu.Unlock()
	if r.Header.Get("Authorization") != "" {
		http.Error(w, "no auth on downloads", http.StatusBadRequest)
		return
	}
	if !s.noETag {
		w.Header().Set("ETag", `"v1"`)
	}
	start := 0
	code := http.StatusOK
	if rg := r.Header.Get("Range"); rg != "" && (r.Header.Get("If-Range") == "" || r.Header.Get("If-Range") == `"v1"`) {
		fmt.Sscanf(rg, "bytes=%d-", &start)
		code = http.StatusPartialContent
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, len(s.body)-1, len(s.body)))
	}
	s.mu.Lock()
	s.codes = append(s.codes, code)
	s.mu.Unlock()
	rest := s.body[start:]
	w.Header().Set("Content-Length", fmt.Sprint(len(rest)))
	w.WriteHeader(code)
	if drop && s.cut < len(rest) {
		w.Write(rest[:s.cut])
		w.(http.Flusher).Flush()
		// Hijack and close: the client sees the body end early.
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close()
		}
		return
	}
	w.Write(rest)
}

func noSleep(ctx context.Context, d time.Duration) error { return ctx.Err() }

func TestDownloadResumesWithRange(t *testing.T) {
	body := bytes.Repeat([]byte("0123456789abcdef"), 64<<10) // 1 MiB
	fs := &flakyServer{body: body, cut: 300 << 10, drops: 3}
	srv := httptest.NewTLSServer(fs)
	defer srv.Close()

	r := Download(context.Background(), srv.URL+"/a.mender?sig=secret", DownloadOptions{HTTP: srv.Client(), Sleep: noSleep})
	got, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	if sha256.Sum256(got) != sha256.Sum256(body) {
		t.Fatalf("got %d bytes, want the %d served", len(got), len(body))
	}
	want := []string{"", "bytes=307200-", "bytes=614400-", "bytes=921600-"}
	if fmt.Sprint(fs.ranges) != fmt.Sprint(want) {
		t.Errorf("ranges = %q, want %q", fs.ranges, want)
	}
	if fmt.Sprint(fs.codes) != "[200 206 206 206]" {
		t.Errorf("codes = %v", fs.codes)
	}
	if res := r.(*resumable).resumes; res != 3 {
		t.Errorf("resumes = %d", res)
	}
}

func TestDownloadWithoutRangeSupportSkips(t *testing.T) {
	body := bytes.Repeat([]byte("xyz"), 100000)
	var n int
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n++
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
		if n == 1 {
			w.Write(body[:1000])
			conn, _, _ := http.NewResponseController(w).Hijack()
			conn.Close()
			return
		}
		w.Write(body) // ignores Range: 200 with everything
	}))
	defer srv.Close()
	got, err := io.ReadAll(Download(context.Background(), srv.URL, DownloadOptions{Sleep: noSleep}))
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("got %d bytes, %v", len(got), err)
	}
}

func TestDownloadGivesUp(t *testing.T) {
	for _, tc := range []struct {
		name    string
		handler http.HandlerFunc
		want    string
	}{
		{"expired link", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "expired", http.StatusForbidden) }, "HTTP 403"},
		{"server down", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "down", http.StatusServiceUnavailable) }, "attempts in a row"},
		{"no progress", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "100")
			w.WriteHeader(200)
			conn, _, _ := http.NewResponseController(w).Hijack()
			conn.Close()
		}, "attempts in a row"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(tc.handler)
			defer srv.Close()
			_, err := io.ReadAll(Download(context.Background(), srv.URL+"/x?X-Sig=secret", DownloadOptions{Sleep: noSleep, Retries: 3}))
			if !errors.Is(err, ErrDownload) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrDownload with %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "secret") {
				t.Errorf("error leaks the presigned query: %v", err)
			}
		})
	}
}

func TestDownloadChangedFileRefused(t *testing.T) {
	body := bytes.Repeat([]byte("a"), 10000)
	fs := &flakyServer{body: body, cut: 1000, drops: 1}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Range") != "" {
			// The file was replaced: If-Range does not match, the new
			// one is longer.
			w.Header().Set("ETag", `"v2"`)
			w.Header().Set("Content-Length", "20000")
			w.Write(bytes.Repeat([]byte("b"), 20000))
			return
		}
		fs.ServeHTTP(w, r)
	}))
	defer srv.Close()
	_, err := io.ReadAll(Download(context.Background(), srv.URL, DownloadOptions{Sleep: noSleep}))
	if !errors.Is(err, ErrDownload) || !strings.Contains(err.Error(), "changed") {
		t.Fatalf("err = %v", err)
	}
}

// TestDeploymentResumesDroppedDownload runs a whole deployment whose
// artifact download breaks twice.
func TestDeploymentResumesDroppedDownload(t *testing.T) {
	e := newTestEnv(t, "release-1")
	signer, _ := signers(t)
	image := bytes.Repeat([]byte("new image "), 50000)
	path := buildArtifact(t, e.dir, "release-2", image, signer)
	data, err := readFileBounded(path, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	fs := &flakyServer{body: data, cut: len(data) / 3, drops: 2}
	srv := httptest.NewTLSServer(fs)
	defer srv.Close()
	e.opts = func(o *Options) { o.Download = DownloadOptions{HTTP: srv.Client()} }
	e.deploy("release-2", srv.URL+"/release-2.mender")
	e.runToEnd()
	if got := e.server.final(); fmt.Sprint(got) != "[success]" {
		t.Fatalf("final = %v", got)
	}
	if !bytes.Equal(e.dev.image(), image) {
		t.Errorf("device runs %d bytes, want %d", len(e.dev.image()), len(image))
	}
	if len(fs.ranges) != 3 || fs.ranges[1] == "" {
		t.Errorf("requests %q", fs.ranges)
	}
}
