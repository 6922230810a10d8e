package artifacts

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// FuzzDownload feeds the download handler arbitrary paths, queries and
// Range headers: it never panics, never serves anything but the one URL it
// signed, and never answers more bytes than the artifact has.
func FuzzDownload(f *testing.F) {
	e, ent, data := presignEnv(f)
	good, _ := e.cache.PresignURL("https://h", ent, "dev-1", time.Hour)
	gu, _ := url.Parse(good)
	f.Add(gu.Path, gu.RawQuery, "")
	f.Add(gu.Path, gu.RawQuery, "bytes=100-")
	f.Add(gu.Path, gu.RawQuery, "bytes=0-0,1-1,2-2,3-3")
	f.Add(gu.Path, gu.RawQuery, "bytes=-5,0-,0-")
	f.Add(DownloadPath+"../"+ent.Digest, gu.RawQuery, "")
	f.Add(DownloadPath+ent.Digest, "expire=1&device=&sig=00", "bytes=1-2")
	h := e.cache.Handler()
	f.Fuzz(func(t *testing.T, path, query, rng string) {
		u := &url.URL{Path: path, RawQuery: query}
		r, err := http.NewRequest(http.MethodGet, "https://h"+u.RequestURI(), nil)
		if err != nil {
			return
		}
		if rng != "" {
			r.Header.Set("Range", rng)
		}
		w := &discardWriter{h: http.Header{}}
		h.ServeHTTP(w, r)
		if w.n > len(data) {
			t.Fatalf("answered %d bytes for a %d-byte artifact (Range %q)", w.n, len(data), rng)
		}
		if w.code == 0 || w.code == http.StatusOK || w.code == http.StatusPartialContent {
			// Served: it must be the signed URL's artifact, device, expiry
			// and signature (the handler looks at the path's last element
			// only, so that it works mounted with the prefix stripped; hex
			// is hex in either case: the signature's bytes are what count).
			q, gq := r.URL.Query(), gu.Query()
			p := r.URL.Path
			if p[strings.LastIndexByte(p, '/')+1:] != ent.Digest || !strings.EqualFold(q.Get("sig"), gq.Get("sig")) ||
				q.Get("device") != "dev-1" || q.Get("expire") != gq.Get("expire") {
				t.Fatalf("served %q", r.URL)
			}
		}
	})
}

type discardWriter struct {
	h    http.Header
	code int
	n    int
}

func (w *discardWriter) Header() http.Header { return w.h }
func (w *discardWriter) Write(p []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	w.n += len(p)
	return len(p), nil
}
func (w *discardWriter) WriteHeader(code int) { w.code = code }
