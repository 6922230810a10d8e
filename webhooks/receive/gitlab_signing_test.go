package receive

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"strconv"
	"testing"
	"time"
)

// signingToken is a GitLab signing token: whsec_ and a base64 32-byte key.
var signingKeyBytes = []byte("0123456789abcdef0123456789abcdef")
var signingToken = Secret("whsec_" + base64.StdEncoding.EncodeToString(signingKeyBytes))

// standardSig is a webhook-signature entry as GitLab computes it.
func standardSig(key []byte, id, ts string, body []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(id + "." + ts + "."))
	m.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
}

func TestGitLabSigningToken(t *testing.T) {
	gl := hosts[1]
	push := readTestdata(t, gl.fixture)
	clk := newClock()
	now := strconv.FormatInt(clk.Now().Unix(), 10)
	stale := strconv.FormatInt(clk.Now().Add(-10*time.Minute).Unix(), 10)

	signed := func(id, ts, sig string, body []byte) *http.Request {
		r := gl.request(body, gl.pushEvent, id, false)
		r.Header.Set("Webhook-Id", id)
		r.Header.Set("Webhook-Timestamp", ts)
		r.Header.Set("Webhook-Signature", sig)
		return r
	}
	cases := []struct {
		name string
		req  *http.Request
		want Outcome
	}{
		{"signed", signed("k1", now, standardSig(signingKeyBytes, "k1", now, push), push), Triggered},
		{"several signatures, one good", signed("k2", now, "v1,AAAA "+standardSig(signingKeyBytes, "k2", now, push)+" v2,xyz", push), Triggered},
		{"token only", func() *http.Request {
			r := gl.request(push, gl.pushEvent, "k3", false)
			r.Header.Set("X-Gitlab-Token", string(signingToken))
			return r
		}(), Unauthorized},
		{"wrong key", signed("k4", now, standardSig([]byte("another key"), "k4", now, push), push), Unauthorized},
		{"tampered body", signed("k5", now, standardSig(signingKeyBytes, "k5", now, push),
			bytes.Replace(push, []byte("a81c4e7f"), []byte("eeeeeeee"), 1)), Unauthorized},
		{"id changed", signed("k6-replay", now, standardSig(signingKeyBytes, "k6", now, push), push), Unauthorized},
		{"stale", signed("k7", stale, standardSig(signingKeyBytes, "k7", stale, push), push), Unauthorized},
		{"no id", signed("", now, standardSig(signingKeyBytes, "", now, push), push), Unauthorized},
		{"no v1 entry", signed("k8", now, "v1a,"+standardSig(signingKeyBytes, "k8", now, push)[3:], push), Unauthorized},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, func(o *Options) { o.Secrets = map[Provider]Secret{GitLab: signingToken} })
			rec, resp := e.do(t, nil, c.req)
			if resp.Status != c.want {
				t.Fatalf("%d %q (%s), want %q", rec.Code, resp.Status, resp.Reason, c.want)
			}
			if got := e.tr.count() == 1; got != (c.want == Triggered) {
				t.Fatalf("triggered = %v", got)
			}
		})
	}

	t.Run("bad token in options", func(t *testing.T) {
		for _, s := range []Secret{"whsec_", "whsec_not base64!"} {
			if _, err := New(Options{Ref: "main", Trigger: (&triggers{}).trigger, Secrets: map[Provider]Secret{GitLab: s}}); err == nil {
				t.Errorf("%q accepted", string(s))
			}
			if _, err := New(Options{Ref: "main", Trigger: (&triggers{}).trigger, Secret: s}); err == nil {
				t.Errorf("shared %q accepted", string(s))
			}
		}
	})
}
