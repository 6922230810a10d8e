package receive

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestGenericTimestamp(t *testing.T) {
	body := []byte(`{"ref":"refs/heads/main","after":"0c3f6a9d2e5b8c1f4a7d0e3b6c9f2a5d8e1b4c7f"}`)
	e := newEnv(t, nil)
	now := e.clock.Now().Unix()
	ts := func(d time.Duration) string { return strconv.FormatInt(now+int64(d/time.Second), 10) }

	req := func(timestamp, delivery, sig string, body []byte) *http.Request {
		r := httptest.NewRequest(http.MethodPost, "/hooks/generic", strings.NewReader(string(body)))
		if timestamp != "" {
			r.Header.Set("X-Gitfleet-Timestamp", timestamp)
		}
		if delivery != "" {
			r.Header.Set("X-Gitfleet-Delivery", delivery)
		}
		r.Header.Set("X-Gitfleet-Signature", sig)
		return r
	}
	cases := []struct {
		name string
		req  *http.Request
		want Outcome
	}{
		{name: "fresh", want: Triggered,
			req: req(ts(0), "a1", SignGeneric(testSecret, ts(0), "a1", body), body)},
		{name: "within skew, past", want: Triggered,
			req: req(ts(-4*time.Minute), "a2", SignGeneric(testSecret, ts(-4*time.Minute), "a2", body), body)},
		{name: "within skew, future", want: Triggered,
			req: req(ts(4*time.Minute), "a3", SignGeneric(testSecret, ts(4*time.Minute), "a3", body), body)},
		{name: "stale", want: Unauthorized,
			req: req(ts(-6*time.Minute), "a4", SignGeneric(testSecret, ts(-6*time.Minute), "a4", body), body)},
		{name: "too far ahead", want: Unauthorized,
			req: req(ts(6*time.Minute), "a5", SignGeneric(testSecret, ts(6*time.Minute), "a5", body), body)},
		{name: "timestamp not covered by the MAC", want: Unauthorized,
			req: req(ts(0), "a6", SignGeneric(testSecret, "", "", body), body)},
		{name: "timestamp moved after signing", want: Unauthorized,
			req: req(ts(time.Second), "a7", SignGeneric(testSecret, ts(0), "a7", body), body)},
		{name: "delivery changed after signing", want: Unauthorized,
			req: req(ts(0), "a8-replay", SignGeneric(testSecret, ts(0), "a8", body), body)},
		{name: "timestamp not a number", want: Unauthorized,
			req: req("1e9", "a9", SignGeneric(testSecret, "1e9", "a9", body), body)},
		{name: "timestamp with sign", want: Unauthorized,
			req: req("+"+ts(0), "a10", SignGeneric(testSecret, "+"+ts(0), "a10", body), body)},
		{name: "huge timestamp", want: Unauthorized,
			req: req("99999999999999999999", "a11", SignGeneric(testSecret, "99999999999999999999", "a11", body), body)},
		{name: "no timestamp → refused", want: Unauthorized,
			req: req("", "a12", SignGeneric(testSecret, "", "a12", body), body)},
		{name: "body-only MAC of older senders → refused", want: Unauthorized,
			req: req("", "a13", "sha256="+hexMAC(testSecret, body), body)},
		{name: "no delivery → refused", want: Unauthorized,
			req: req(ts(0), "", SignGeneric(testSecret, ts(0), "", body), body)},
		{name: "uppercase hex", want: Triggered,
			req: req(ts(0), "a15", "sha256="+strings.ToUpper(strings.TrimPrefix(SignGeneric(testSecret, ts(0), "a15", body), "sha256=")), body)},
		{name: "no sha256= prefix", want: Unauthorized,
			req: req(ts(0), "a16", strings.TrimPrefix(SignGeneric(testSecret, ts(0), "a16", body), "sha256="), body)},
		{name: "sha1= prefix", want: Unauthorized,
			req: req(ts(0), "a17", "sha1="+strings.TrimPrefix(SignGeneric(testSecret, ts(0), "a17", body), "sha256="), body)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, nil)
			rec, resp := e.do(t, nil, c.req)
			if resp.Status != c.want {
				t.Fatalf("%d %q (%s), want %q", rec.Code, resp.Status, resp.Reason, c.want)
			}
			if got := e.tr.count() == 1; got != (c.want == Triggered) {
				t.Fatalf("triggered = %v", got)
			}
		})
	}
}

func TestGenericMACString(t *testing.T) {
	// The documented string: "<timestamp>\n<delivery>\n<body>".
	body := []byte(`{"ref":"refs/heads/main"}`)
	want := "sha256=" + hexMAC("k", []byte("1777896000\nid-1\n"+string(body)))
	if got := SignGeneric("k", "1777896000", "id-1", body); got != want {
		t.Errorf("SignGeneric = %s, want %s", got, want)
	}
}

func TestGenericPayloads(t *testing.T) {
	cases := []struct {
		body string
		want Outcome
	}{
		{`{"ref":"refs/heads/main"}`, Triggered},
		{`{"ref":"refs/heads/main","repository":"ACME/Fleet"}`, Triggered},
		{`{"ref":"refs/heads/main","repository":"acme/other"}`, Ignored},
		{`{"ref":"main"}`, Malformed},
		{`{"after":"0c3f6a9d2e5b8c1f4a7d0e3b6c9f2a5d8e1b4c7f"}`, Malformed},
		{`{"ref":"refs/heads/main","after":"HEAD"}`, Malformed},
		{`{"ref":"refs/heads/main","after":42}`, Malformed},
		{`{"ref":"refs/heads/main"} {"ref":"refs/heads/main"}`, Malformed},
		{`{"ref":"refs/heads/main\u0000"}`, Malformed},
		{``, Malformed},
		{`null`, Malformed},
	}
	for i, c := range cases {
		e := newEnv(t, nil)
		r := httptest.NewRequest(http.MethodPost, "/hooks/generic", strings.NewReader(c.body))
		signGeneric(r.Header, "p"+strconv.Itoa(i), []byte(c.body))
		if rec, resp := e.do(t, nil, r); resp.Status != c.want {
			t.Errorf("%s: %d %q (%s), want %q", c.body, rec.Code, resp.Status, resp.Reason, c.want)
		}
	}
}
