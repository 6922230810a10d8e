package artifacts

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/artifact"
	"github.com/gitfleet/gitfleet/artifact/artifacttest"
	"github.com/gitfleet/gitfleet/schema"
)

// augmented is the attack of issue 10: a script artifact signed by signer
// (nil: unsigned) whose payload carries evil.sh, listed only in the
// unsigned manifest-augment.
func augmented(t *testing.T, signer *testKey) []byte {
	t.Helper()
	o := artifacttest.AugmentedOptions{
		Name: "app-1", DeviceType: "board-a",
		Signed:    map[string][]byte{"run.sh": []byte("#!/bin/sh\necho signed\n")},
		Augmented: map[string][]byte{"evil.sh": []byte("#!/bin/sh\necho unsigned\n")},
	}
	if signer != nil {
		o.Signer = signer.signer
	}
	data, err := artifacttest.Augmented(o)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestAttackAugmentedFiles: the controller never offers an artifact whose
// required signature leaves part of it uncovered.
func TestAttackAugmentedFiles(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, e *env) schema.Artifact
	}{
		{"signed script artifact + data file listed only in manifest-augment, signedBy release → not offered (ErrUnsigned, ErrAugmented)",
			func(t *testing.T, e *env) schema.Artifact {
				e.put("a.mender", augmented(t, key(t, "release")))
				return manifest("app-1", "a.mender", signedBy("release"))
			}},
		{"same artifact with a detached signature (.sigs) → not offered",
			func(t *testing.T, e *env) schema.Artifact {
				data := augmented(t, nil)
				e.put("a.mender", data)
				sig, err := SignDetached(bytes.NewReader(data), key(t, "release").signer)
				if err != nil {
					t.Fatal(err)
				}
				e.put("a.mender.sigs", sig)
				return manifest("app-1", "a.mender", signedBy("release"))
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			a := tc.setup(t, e)
			ent, err := e.cache.Ensure(context.Background(), a, fleetKeys(t, "release"))
			if err == nil {
				t.Fatalf("offered: %+v", ent)
			}
			if !errors.Is(err, ErrUnsigned) || !errors.Is(err, artifact.ErrAugmented) || !strings.Contains(err.Error(), "data/0000/evil.sh") {
				t.Fatalf("error %v, want ErrUnsigned wrapping artifact.ErrAugmented naming data/0000/evil.sh", err)
			}
			if got, _ := e.cache.Lookup(a.Name); got != nil {
				t.Fatalf("Lookup offers it: %+v", got)
			}
		})
	}
}

// TestAugmentedWithoutSignedBy: with no signature required, an augmented
// artifact is offered as before (the devices decide with their own keys).
func TestAugmentedWithoutSignedBy(t *testing.T) {
	e := newEnv(t)
	e.put("a.mender", augmented(t, key(t, "release")))
	if _, err := e.cache.Ensure(context.Background(), manifest("app-1", "a.mender"), nil); err != nil {
		t.Fatal(err)
	}
}

// TestAttackRanges: a download answers at most the artifact's size, however
// the Range header is built.
func TestAttackRanges(t *testing.T) {
	e, ent, data := presignEnv(t)
	h := e.cache.Handler()
	u, _ := e.cache.PresignURL("https://h", ent, "dev-1", time.Hour)
	n := len(data)
	many := func(f func(i int) string, count int) string {
		parts := make([]string, count)
		for i := range parts {
			parts[i] = f(i)
		}
		return "bytes=" + strings.Join(parts, ",")
	}
	etag := `"` + ent.Digest + `"`
	cases := []struct {
		name  string
		hdr   http.Header
		code  int
		bytes int
	}{
		{"2,000 one-byte ranges → the whole artifact once (200)",
			http.Header{"Range": {many(func(i int) string { return strconv.Itoa(i) + "-" + strconv.Itoa(i) }, 2000)}}, 200, n},
		{"2,000 overlapping whole ranges → the whole artifact once (200)",
			http.Header{"Range": {many(func(int) string { return "0-" }, 2000)}}, 200, n},
		{"two ranges → the whole artifact once (200)",
			http.Header{"Range": {"bytes=0-9,20-29"}}, 200, n},
		{"several Range headers → the whole artifact once (200)",
			http.Header{"Range": {"bytes=0-9", "bytes=20-29"}}, 200, n},
		{"one range from N (Mender's resume) → 206 from N",
			http.Header{"Range": {"bytes=100-"}}, 206, n - 100},
		{"one suffix range → 206",
			http.Header{"Range": {"bytes=-10"}}, 206, 10},
		{"a range beyond any size → 416, no body",
			http.Header{"Range": {"bytes=99999999999999999-"}}, 416, -1},
		{"a range with numbers beyond int64 → 416, no body",
			http.Header{"Range": {"bytes=0-99999999999999999999999999"}}, 416, -1},
		{"If-Range with a stale ETag → the whole artifact (200)",
			http.Header{"Range": {"bytes=100-"}, "If-Range": {`"stale"`}}, 200, n},
		{"If-Range with the ETag → 206",
			http.Header{"Range": {"bytes=100-"}, "If-Range": {etag}}, 206, n - 100},
		{"If-Range with the ETag and many ranges → the whole artifact once (200)",
			http.Header{"Range": {many(func(i int) string { return strconv.Itoa(i) + "-" + strconv.Itoa(i) }, 100)}, "If-Range": {etag}}, 200, n},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := serve(h, "GET", u, c.hdr)
			if w.Code != c.code {
				t.Fatalf("status %d, want %d", w.Code, c.code)
			}
			if strings.HasPrefix(w.Header().Get("Content-Type"), "multipart/") {
				t.Fatalf("multipart answer")
			}
			if c.bytes >= 0 && w.Body.Len() != c.bytes {
				t.Fatalf("%d bytes, want %d", w.Body.Len(), c.bytes)
			}
			if w.Body.Len() > n {
				t.Fatalf("%d bytes for a %d-byte artifact", w.Body.Len(), n)
			}
		})
	}
}

// TestAttackPresign: a download URL is good only as issued, until it
// expires, and while its device is in the fleet.
func TestAttackPresign(t *testing.T) {
	e, ent, _ := presignEnv(t)
	accepted := map[string]bool{"dev-1": true, "dev-2": true}
	h := e.cache.DownloadHandler(func(device string) bool { return accepted[device] })
	good, _ := e.cache.PresignURL("https://h", ent, "dev-1", time.Minute)
	other, _ := e.cache.PresignURL("https://h", ent, "dev-2", time.Minute)
	gu, _ := url.Parse(good)
	withQuery := func(f func(q url.Values)) string {
		u := *gu
		q := u.Query()
		f(q)
		u.RawQuery = q.Encode()
		return u.String()
	}
	cases := []struct {
		name   string
		target func() string
		code   int
	}{
		{"the URL as issued → 200", func() string { return good }, 200},
		{"no signature → 401", func() string { return withQuery(func(q url.Values) { q.Del("sig") }) }, 401},
		{"signature of another device's URL → 403", func() string {
			ou, _ := url.Parse(other)
			return withQuery(func(q url.Values) { q.Set("sig", ou.Query().Get("sig")) })
		}, 403},
		{"device name changed → 403", func() string { return withQuery(func(q url.Values) { q.Set("device", "dev-2") }) }, 403},
		{"expiry pushed back → 403", func() string {
			return withQuery(func(q url.Values) { q.Set("expire", strconv.FormatInt(e.clock.Now().Add(time.Hour).Unix(), 10)) })
		}, 403},
		{"path traversal → 404", func() string { return "https://h" + DownloadPath + "../../../../etc/passwd?" + gu.RawQuery }, 404},
		{"device removed from the fleet → 403", func() string { delete(accepted, "dev-1"); return good }, 403},
		{"expired → 403", func() string { accepted["dev-1"] = true; e.clock.Add(time.Minute); return good }, 403},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := serve(h, "GET", c.target(), nil)
			if w.Code != c.code {
				t.Fatalf("status %d, want %d: %s", w.Code, c.code, w.Body)
			}
		})
	}
}
