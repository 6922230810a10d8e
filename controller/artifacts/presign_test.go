package artifacts

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/schema"
)

// presignEnv caches one artifact and returns it with its bytes.
func presignEnv(t testing.TB, mod ...func(*Options)) (*env, *Entry, []byte) {
	t.Helper()
	e := newEnv(t, mod...)
	data := build{name: "app-1", payload: bytes.Repeat([]byte("abcdefghij"), 3000)}.bytes(t)
	e.put("a.mender", data)
	ent, err := e.cache.Ensure(context.Background(), manifest("app-1", "a.mender"), nil)
	if err != nil {
		t.Fatal(err)
	}
	return e, ent, data
}

func TestPresignURL(t *testing.T) {
	e, ent, _ := presignEnv(t)
	u, exp := e.cache.PresignURL("https://fleet.example.com:8443/", ent, "dev 1|x", 90*time.Second+time.Millisecond)
	if want := e.clock.Now().Add(91 * time.Second); !exp.Equal(want) {
		t.Errorf("expire %v, want %v", exp, want)
	}
	p, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	if p.Scheme != "https" || p.Host != "fleet.example.com:8443" || p.Path != DownloadPath+ent.Digest {
		t.Errorf("url %s", u)
	}
	q := p.Query()
	if q.Get("device") != "dev 1|x" || q.Get("expire") != strconv.FormatInt(exp.Unix(), 10) || len(q.Get("sig")) != 64 {
		t.Errorf("query %v", q)
	}
	if _, exp := e.cache.PresignURL("https://h", ent, "d", 0); !exp.Equal(e.clock.Now().Add(DefaultURLTTL)) {
		t.Errorf("default ttl: %v", exp)
	}
}

func TestDownload(t *testing.T) {
	e, ent, data := presignEnv(t)
	h := e.cache.Handler()
	u, _ := e.cache.PresignURL("https://h", ent, "dev-1", time.Hour)
	n := len(data)

	tests := []struct {
		name   string
		method string
		rng    string
		code   int
		body   []byte
		cr     string
	}{
		{"full", "GET", "", 200, data, ""},
		{"head", "HEAD", "", 200, nil, ""},
		{"range from", "GET", "bytes=1000-", 206, data[1000:], fmt.Sprintf("bytes 1000-%d/%d", n-1, n)},
		{"range from to", "GET", "bytes=10-19", 206, data[10:20], fmt.Sprintf("bytes 10-19/%d", n)},
		{"head range", "HEAD", "bytes=10-19", 206, nil, fmt.Sprintf("bytes 10-19/%d", n)},
		{"range past end", "GET", fmt.Sprintf("bytes=%d-", n), 416, nil, fmt.Sprintf("bytes */%d", n)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			hdr := http.Header{}
			if tc.rng != "" {
				hdr.Set("Range", tc.rng)
			}
			w := serve(h, tc.method, u, hdr)
			if w.Code != tc.code {
				t.Fatalf("status %d: %s", w.Code, w.Body)
			}
			if tc.code == 416 {
				return
			}
			if tc.body != nil && !bytes.Equal(w.Body.Bytes(), tc.body) {
				t.Errorf("body: %d bytes, want %d", w.Body.Len(), len(tc.body))
			}
			if tc.method == "HEAD" && w.Body.Len() != 0 {
				t.Errorf("HEAD body %d bytes", w.Body.Len())
			}
			want := len(data)
			if tc.cr != "" {
				want = len(tc.body)
				if tc.method == "HEAD" {
					want = 10
				}
			}
			g := w.Header()
			if g.Get("Content-Length") != strconv.Itoa(want) || g.Get("Accept-Ranges") != "bytes" ||
				g.Get("Content-Type") != "application/octet-stream" || g.Get("ETag") != `"`+ent.Digest+`"` ||
				g.Get("Content-Range") != tc.cr {
				t.Errorf("headers %v", g)
			}
		})
	}
	t.Run("if-range with the etag", func(t *testing.T) {
		w := serve(h, "GET", u, http.Header{"Range": {"bytes=5-"}, "If-Range": {`"` + ent.Digest + `"`}})
		if w.Code != 206 || w.Body.Len() != n-5 {
			t.Errorf("%d, %d bytes", w.Code, w.Body.Len())
		}
		w = serve(h, "GET", u, http.Header{"Range": {"bytes=5-"}, "If-Range": {`"other"`}})
		if w.Code != 200 || w.Body.Len() != n {
			t.Errorf("stale If-Range: %d, %d bytes", w.Code, w.Body.Len())
		}
	})
	t.Run("mounted with the prefix stripped", func(t *testing.T) {
		sh := http.StripPrefix(strings.TrimSuffix(DownloadPath, "/"), h)
		if w := serve(sh, "GET", u, nil); w.Code != 200 || w.Body.Len() != n {
			t.Errorf("%d", w.Code)
		}
	})
	t.Run("post", func(t *testing.T) {
		if w := serve(h, "POST", u, nil); w.Code != 405 || w.Header().Get("Allow") != "GET, HEAD" {
			t.Errorf("%d %v", w.Code, w.Header())
		}
	})
}

func TestDownloadRefused(t *testing.T) {
	e, ent, _ := presignEnv(t)
	h := e.cache.Handler()
	good, _ := e.cache.PresignURL("https://h", ent, "dev-1", time.Minute)
	gu, _ := url.Parse(good)
	q := gu.Query()
	edit := func(f func(p *string, q url.Values)) string {
		u := *gu
		qq := url.Values{}
		for k, v := range q {
			qq[k] = append([]string(nil), v...)
		}
		f(&u.Path, qq)
		u.RawQuery = qq.Encode()
		return u.String()
	}
	flip := func(s string) string {
		b := []byte(s)
		if b[0] == 'a' {
			b[0] = 'b'
		} else {
			b[0] = 'a'
		}
		return string(b)
	}
	other := strings.Repeat("ab", 32)
	// A URL correctly signed for a digest the cache does not have.
	unknown, _ := e.cache.PresignURL("https://h", &Entry{Digest: other}, "dev-1", time.Minute)

	tests := []struct {
		name   string
		target string
		code   int
		reason string
	}{
		{"no query", gu.Path, 401, "not signed"},
		{"no sig", edit(func(_ *string, q url.Values) { q.Del("sig") }), 401, "not signed"},
		{"two sigs", edit(func(_ *string, q url.Values) { q.Add("sig", q.Get("sig")) }), 401, "not signed"},
		{"sig not hex", edit(func(_ *string, q url.Values) { q.Set("sig", "zz") }), 403, "malformed"},
		{"tampered sig", edit(func(_ *string, q url.Values) { q.Set("sig", flip(q.Get("sig"))) }), 403, "does not verify"},
		{"tampered device", edit(func(_ *string, q url.Values) { q.Set("device", "dev-2") }), 403, "does not verify"},
		{"tampered expire", edit(func(_ *string, q url.Values) { q.Set("expire", q.Get("expire")+"0") }), 403, "does not verify"},
		{"tampered digest", edit(func(p *string, _ url.Values) { *p = DownloadPath + other }), 403, "does not verify"},
		{"unknown digest", unknown, 404, "no such artifact"},
		{"uppercase digest", edit(func(p *string, _ url.Values) { *p = DownloadPath + strings.ToUpper(ent.Digest) }), 404, ""},
		{"short digest", edit(func(p *string, _ url.Values) { *p = DownloadPath + ent.Digest[:63] }), 404, ""},
		{"traversal", edit(func(p *string, _ url.Values) { *p = DownloadPath + "../../sha256/" + ent.Digest }), 404, ""},
		{"traversal to tmp", edit(func(p *string, _ url.Values) { *p = DownloadPath + "..%2ftmp%2f" + ent.Digest }), 404, ""},
		{"etc passwd", edit(func(p *string, _ url.Values) { *p = DownloadPath + "../../../../etc/passwd" }), 404, ""},
		{"extra element", edit(func(p *string, _ url.Values) { *p = DownloadPath + ent.Digest + "/x" }), 404, ""},
		{"nested", edit(func(p *string, _ url.Values) { *p = DownloadPath + "x/" + ent.Digest }), 404, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := serve(h, "GET", tc.target, nil)
			if w.Code != tc.code || !strings.Contains(w.Body.String(), tc.reason) {
				t.Errorf("%s: %d %q, want %d %q", tc.target, w.Code, w.Body, tc.code, tc.reason)
			}
			if w.Code != 200 && w.Header().Get("Content-Type") == "application/octet-stream" {
				t.Error("refusal typed as the artifact")
			}
		})
	}
	t.Run("expired", func(t *testing.T) {
		e.clock.Add(time.Minute)
		w := serve(h, "GET", good, nil)
		if w.Code != 403 || !strings.Contains(w.Body.String(), "expired") {
			t.Errorf("%d %s", w.Code, w.Body)
		}
	})
}

// TestDownloadRevoked: once the artifact is no longer offered, URLs issued
// before stop working.
func TestDownloadRevoked(t *testing.T) {
	e, ent, _ := presignEnv(t)
	u, _ := e.cache.PresignURL("https://h", ent, "dev-1", time.Hour)
	if w := serve(e.cache.Handler(), "GET", u, nil); w.Code != 200 {
		t.Fatal(w.Code)
	}
	if err := e.cache.Sync(context.Background(), &schema.Fleet{}); err != nil {
		t.Fatal(err)
	}
	if w := serve(e.cache.Handler(), "GET", u, nil); w.Code != 404 {
		t.Errorf("after removal: %d", w.Code)
	}
}

func TestDownloadKeyRotation(t *testing.T) {
	oldKey, newKey := bytes.Repeat([]byte("o"), 32), bytes.Repeat([]byte("n"), 32)
	e, ent, _ := presignEnv(t, func(o *Options) { o.DownloadKeys = [][]byte{oldKey} })
	before, _ := e.cache.PresignURL("https://h", ent, "d", time.Hour)

	// The same directory, the new key first: old URLs still work, new URLs
	// use the new key, which a cache with only the old key refuses.
	opts := e.cache.opts
	opts.DownloadKeys = [][]byte{newKey, oldKey}
	rotated, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer rotated.Close()
	ent2, err := rotated.Ensure(context.Background(), manifest("app-1", "a.mender"), nil)
	if err != nil {
		t.Fatal(err)
	}
	after, _ := rotated.PresignURL("https://h", ent2, "d", time.Hour)
	if w := serve(rotated.Handler(), "GET", before, nil); w.Code != 200 {
		t.Errorf("old URL after rotation: %d", w.Code)
	}
	if w := serve(rotated.Handler(), "GET", after, nil); w.Code != 200 {
		t.Errorf("new URL: %d", w.Code)
	}
	if w := serve(e.cache.Handler(), "GET", after, nil); w.Code != 403 {
		t.Errorf("new URL on a replica without the new key: %d", w.Code)
	}
	for _, bad := range [][][]byte{nil, {[]byte("short")}} {
		opts.DownloadKeys = bad
		if _, err := New(opts); err == nil {
			t.Errorf("New accepted keys %q", bad)
		}
	}
}

// TestDownloadResumeHTTP downloads through a real net/http client over
// TLS, drops the body half-way, and resumes with Range.
func TestDownloadResumeHTTP(t *testing.T) {
	e, ent, data := presignEnv(t)
	mux := http.NewServeMux()
	mux.Handle("GET "+DownloadPath, e.cache.Handler())
	srv := httptest.NewTLSServer(mux)
	defer srv.Close()
	u, _ := e.cache.PresignURL(srv.URL, ent, "dev-1", time.Hour)
	client := srv.Client()

	resp, err := client.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.ContentLength != int64(len(data)) {
		t.Fatalf("%s, length %d", resp.Status, resp.ContentLength)
	}
	got := make([]byte, len(data)/3)
	if _, err := io.ReadFull(resp.Body, got); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close() // the connection drops mid-body

	req, _ := http.NewRequest("GET", u, nil)
	req.Header.Set("Range", fmt.Sprintf("bytes=%d-", len(got)))
	resp, err = client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	rest, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 206 || resp.Header.Get("Content-Range") != fmt.Sprintf("bytes %d-%d/%d", len(got), len(data)-1, len(data)) {
		t.Fatalf("%s %v", resp.Status, resp.Header)
	}
	if !bytes.Equal(append(got, rest...), data) {
		t.Error("resumed download differs")
	}
	if resp.Request.Header.Get("Authorization") != "" {
		t.Error("sent an Authorization header")
	}
}
