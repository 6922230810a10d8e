package artifacts

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// DownloadPath is the path prefix of presigned download URLs; the digest
// follows it. Mount [Cache.Handler] there.
const DownloadPath = "/api/devices/v1/download/"

// maxDeviceID bounds the device parameter of a download URL.
const maxDeviceID = 1024

// PresignURL returns a URL under base (scheme and host the devices reach
// the controller at, like "https://gitfleet.example.com"; a trailing slash
// is ignored) that lets deviceID download e for ttl (DefaultURLTTL when
// ttl <= 0), and the time it expires. Expiry is in whole seconds, rounded
// up.
func (c *Cache) PresignURL(base string, e *Entry, deviceID string, ttl time.Duration) (uri string, expire time.Time) {
	if ttl <= 0 {
		ttl = DefaultURLTTL
	}
	exp := c.opts.Now().Add(ttl + time.Second - 1).Truncate(time.Second)
	expStr := strconv.FormatInt(exp.Unix(), 10)
	q := url.Values{
		"expire": {expStr},
		"device": {deviceID},
		"sig":    {hex.EncodeToString(downloadMAC(c.opts.DownloadKeys[0], e.Digest, expStr, deviceID))},
	}
	return strings.TrimRight(base, "/") + DownloadPath + e.Digest + "?" + q.Encode(), exp
}

// downloadMAC is HMAC-SHA256(key, digest|expire|device). digest is hex and
// expire decimal, so the device ID, last, needs no escaping.
func downloadMAC(key []byte, digest, expire, device string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(digest + "|" + expire + "|" + device))
	return m.Sum(nil)
}

// Handler returns the handler of presigned downloads. It answers GET and
// HEAD of DownloadPath<digest>?expire=&device=&sig= (it looks at the
// path's last element, so it works mounted with or without the prefix
// stripped): 404 for a malformed or unknown digest, 401 without a
// signature, 403 for a signature that does not verify or an expired URL,
// and otherwise the cached file with Content-Length, ETag, Accept-Ranges
// and Range support (206). It needs no Authorization header. Only digests
// of artifacts currently offered are served: an artifact whose manifest
// was deleted or whose checks now fail stops downloading at once, even
// through URLs issued before.
//
// Ranges: one range per request is served (bytes=N-, bytes=N-M, bytes=-N:
// what the Mender client and the agent send to resume). A request for
// several ranges gets the whole artifact (200), as if it had sent no
// Range: a multipart answer of many small or overlapping ranges would
// cost more than the artifact itself. If-Range with the ETag works as
// usual.
func (c *Cache) Handler() http.Handler { return c.DownloadHandler(nil) }

// DownloadHandler is Handler that also asks admitted, after the URL's
// signature and expiry check out, whether the device the URL was issued
// to is still accepted: 403 if not, so a URL stops working as soon as its
// device is removed from the fleet. A nil admitted admits every device.
func (c *Cache) DownloadHandler(admitted func(device string) bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { c.serveDownload(w, r, admitted) })
}

func (c *Cache) serveDownload(w http.ResponseWriter, r *http.Request, admitted func(string) bool) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	p := r.URL.Path
	digest := p[strings.LastIndexByte(p, '/')+1:]
	if !isDigest(digest) || (strings.Contains(p, DownloadPath) && !strings.HasSuffix(p, DownloadPath+digest)) {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	q := r.URL.Query()
	expStr, device, sigHex := q.Get("expire"), q.Get("device"), q.Get("sig")
	if expStr == "" || sigHex == "" || len(q["device"]) != 1 || len(q["expire"]) != 1 || len(q["sig"]) != 1 {
		http.Error(w, "download URL is not signed", http.StatusUnauthorized)
		return
	}
	sig, err := hex.DecodeString(sigHex)
	if err != nil || len(sig) != sha256.Size || len(device) > maxDeviceID || len(expStr) > 20 {
		http.Error(w, "download URL signature is malformed", http.StatusForbidden)
		return
	}
	if !c.checkMAC(sig, digest, expStr, device) {
		http.Error(w, "download URL signature does not verify", http.StatusForbidden)
		return
	}
	exp, err := strconv.ParseInt(expStr, 10, 64)
	if err != nil {
		http.Error(w, "download URL expiry is malformed", http.StatusForbidden)
		return
	}
	if c.opts.Now().Unix() >= exp {
		http.Error(w, "download URL expired", http.StatusForbidden)
		return
	}
	if admitted != nil && !admitted(device) {
		http.Error(w, "the device this URL was issued to is no longer accepted", http.StatusForbidden)
		return
	}
	f, err := c.openOffered(digest)
	if err != nil {
		http.Error(w, "no such artifact", http.StatusNotFound)
		return
	}
	defer f.Close()
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("ETag", `"`+digest+`"`)
	h.Set("Cache-Control", "private, no-transform")
	h.Set("X-Content-Type-Options", "nosniff")
	if singleRange(r.Header.Values("Range")) == "" {
		r.Header.Del("Range")
	}
	// The zero modtime leaves Last-Modified out; the ETag drives If-Range
	// and If-None-Match.
	http.ServeContent(w, r, "", time.Time{}, f)
}

// checkMAC reports, in constant time per key, whether sig is the MAC of
// the URL under any download key.
func (c *Cache) checkMAC(sig []byte, digest, expire, device string) bool {
	ok := false
	for _, k := range c.opts.DownloadKeys {
		if hmac.Equal(sig, downloadMAC(k, digest, expire, device)) {
			ok = true
		}
	}
	return ok
}

// isDigest reports whether s is a lowercase hex sha256: the only file
// names the handler ever opens.
func isDigest(s string) bool {
	if len(s) != 2*sha256.Size {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !('0' <= s[i] && s[i] <= '9' || 'a' <= s[i] && s[i] <= 'f') {
			return false
		}
	}
	return true
}

// singleRange returns the Range header if it asks for exactly one range,
// else "" (no Range, several Range headers, or several ranges in one).
func singleRange(vs []string) string {
	if len(vs) != 1 || strings.Contains(vs[0], ",") || len(vs[0]) > 64 {
		return ""
	}
	return vs[0]
}
