package receive

import (
	"bytes"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

// forgedFrom is a GitHub push from ip signed with the wrong secret.
func forgedFrom(ip string, i int) *http.Request {
	gh := hosts[0]
	body := []byte(`{"ref":"refs/heads/main","after":"` + strings.Repeat("a", 40) + `","repository":{"full_name":"acme/fleet"}}`)
	r := httptest.NewRequest(http.MethodPost, "/hooks", bytes.NewReader(body))
	r.RemoteAddr = net.JoinHostPort(ip, "40000")
	gh.headers(r.Header, "push", "forged-"+strconv.Itoa(i))
	gh.sign(r.Header, "not-the-secret", body)
	return r
}

// signedFrom is a genuine GitHub push from ip.
func signedFrom(t testing.TB, ip, delivery string) *http.Request {
	gh := hosts[0]
	r := gh.request(readTestdata(t, gh.fixture), "push", delivery, true)
	r.RemoteAddr = net.JoinHostPort(ip, "40000")
	return r
}

// TestAttackForgedWebhooks: with the default rate limits, forged deliveries
// are refused and never crowd out the Git host's signed ones.
func TestAttackForgedWebhooks(t *testing.T) {
	const host = "192.0.2.1" // the Git host
	cases := []struct {
		name   string
		forged func(i int) *http.Request
	}{
		{"300 forged deliveries from one address, then a signed one → triggered",
			func(i int) *http.Request { return forgedFrom("203.0.113.7", i) }},
		{"300 forged deliveries from 300 addresses, then a signed one → triggered",
			func(i int) *http.Request { return forgedFrom("198.51.100."+strconv.Itoa(i%250+1)+"", i) }},
		{"300 forged deliveries from one IPv6 /64, then a signed one → triggered",
			func(i int) *http.Request { return forgedFrom("2001:db8:7:7::"+strconv.FormatInt(int64(i+1), 16), i) }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, func(o *Options) { o.PerSource, o.Global = Limit{}, Limit{} }) // the defaults
			for i := range 300 {
				if rec, _ := e.do(t, nil, c.forged(i)); rec.Code != http.StatusUnauthorized && rec.Code != http.StatusTooManyRequests {
					t.Fatalf("forged delivery %d: %d", i, rec.Code)
				}
			}
			if rec, resp := e.do(t, nil, signedFrom(t, host, "genuine-1")); resp.Status != Triggered {
				t.Fatalf("signed delivery after the forgeries: %d %s (%s)", rec.Code, resp.Status, resp.Reason)
			}
			if n := e.tr.count(); n != 1 {
				t.Fatalf("%d triggers, want 1", n)
			}
		})
	}
	t.Run("forged delivery → 401, nothing triggered", func(t *testing.T) {
		e := newEnv(t, nil)
		if rec, _ := e.do(t, nil, forgedFrom("203.0.113.7", 0)); rec.Code != http.StatusUnauthorized || e.tr.count() != 0 {
			t.Fatalf("%d, %d triggers", rec.Code, e.tr.count())
		}
	})
	t.Run("forged flood from one address → 429 once its burst is spent; a signed delivery from that same address (a proxy, a shared NAT) → triggered", func(t *testing.T) {
		e := newEnv(t, func(o *Options) { o.PerSource, o.Global = Limit{Rate: 1, Burst: 20}, Limit{} })
		for i := range 20 {
			if rec, _ := e.do(t, nil, forgedFrom("203.0.113.7", i)); rec.Code != http.StatusUnauthorized {
				t.Fatalf("forged delivery %d within the burst: %d, want 401", i, rec.Code)
			}
		}
		if rec, _ := e.do(t, nil, forgedFrom("203.0.113.7", 20)); rec.Code != http.StatusTooManyRequests {
			t.Fatalf("forged delivery beyond the burst: %d, want 429", rec.Code)
		}
		if rec, resp := e.do(t, nil, signedFrom(t, "203.0.113.7", "same-address")); rec.Code != http.StatusAccepted || e.tr.count() != 1 {
			t.Fatalf("signed delivery from the forger's address: %d %s, %d triggers", rec.Code, resp.Status, e.tr.count())
		}
	})
	t.Run("verified deliveries over the global budget → 429", func(t *testing.T) {
		e := newEnv(t, func(o *Options) { o.PerSource, o.Global = Limit{Rate: -1}, Limit{Rate: 1, Burst: 2} })
		for i := range 2 {
			if rec, _ := e.do(t, nil, signedFrom(t, host, "g"+strconv.Itoa(i))); rec.Code != http.StatusAccepted {
				t.Fatalf("delivery %d: %d", i, rec.Code)
			}
		}
		if rec, _ := e.do(t, nil, signedFrom(t, host, "g3")); rec.Code != http.StatusTooManyRequests {
			t.Fatalf("third: %d", rec.Code)
		}
	})
}

// TestAttackReplay: a captured delivery never triggers twice.
func TestAttackReplay(t *testing.T) {
	body := []byte(`{"ref":"refs/heads/main"}`)
	generic := func(ts, delivery, sig string) *http.Request {
		r := httptest.NewRequest(http.MethodPost, "/hooks/generic", bytes.NewReader(body))
		if ts != "" {
			r.Header.Set("X-Gitfleet-Timestamp", ts)
		}
		if delivery != "" {
			r.Header.Set("X-Gitfleet-Delivery", delivery)
		}
		r.Header.Set("X-Gitfleet-Signature", sig)
		return r
	}
	unix := func(t time.Time) string { return strconv.FormatInt(t.Unix(), 10) }
	cases := []struct {
		name   string
		replay func(t *testing.T, e *env) (first, again *http.Request)
		want   Outcome // of the replay
	}{
		{"generic delivery replayed within the skew → duplicate, nothing triggered", func(t *testing.T, e *env) (*http.Request, *http.Request) {
			ts := unix(e.clock.Now())
			sig := SignGeneric(testSecret, ts, "d1", body)
			first := generic(ts, "d1", sig)
			e.clock.Advance(4 * time.Minute)
			return first, generic(ts, "d1", sig)
		}, Duplicate},
		{"generic delivery replayed after the skew → 401", func(t *testing.T, e *env) (*http.Request, *http.Request) {
			ts := unix(e.clock.Now())
			sig := SignGeneric(testSecret, ts, "d2", body)
			return generic(ts, "d2", sig), generic(ts, "d2", sig)
		}, Unauthorized},
		{"generic delivery replayed under a new delivery ID → 401", func(t *testing.T, e *env) (*http.Request, *http.Request) {
			ts := unix(e.clock.Now())
			sig := SignGeneric(testSecret, ts, "d3", body)
			return generic(ts, "d3", sig), generic(ts, "d3-again", sig)
		}, Unauthorized},
		{"generic delivery without a timestamp (body-only MAC) → 401", func(t *testing.T, e *env) (*http.Request, *http.Request) {
			return nil, generic("", "d4", "sha256="+hexMAC(testSecret, body))
		}, Unauthorized},
		{"generic delivery without a delivery ID → 401", func(t *testing.T, e *env) (*http.Request, *http.Request) {
			ts := unix(e.clock.Now())
			return nil, generic(ts, "", SignGeneric(testSecret, ts, "", body))
		}, Unauthorized},
		{"GitHub delivery replayed → duplicate, nothing triggered", func(t *testing.T, e *env) (*http.Request, *http.Request) {
			return signedFrom(t, "192.0.2.1", "gh-1"), signedFrom(t, "192.0.2.1", "gh-1")
		}, Duplicate},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, nil)
			first, again := c.replay(t, e)
			want := 0
			if first != nil {
				// The "after the skew" case sends the original now and
				// the replay later.
				if _, resp := e.do(t, nil, first); resp.Status != Triggered {
					t.Fatalf("original delivery: %s (%s)", resp.Status, resp.Reason)
				}
				want = 1
				if strings.Contains(c.name, "after the skew") {
					e.clock.Advance(DefaultMaxSkew + time.Second)
				}
			}
			if rec, resp := e.do(t, nil, again); resp.Status != c.want {
				t.Fatalf("replay: %d %s (%s), want %s", rec.Code, resp.Status, resp.Reason, c.want)
			}
			if n := e.tr.count(); n != want {
				t.Fatalf("%d triggers, want %d", n, want)
			}
		})
	}
	t.Run("remembering delivery IDs for less than twice the skew → refused configuration", func(t *testing.T) {
		_, err := New(Options{Secret: testSecret, Ref: "main", Trigger: (&triggers{}).trigger, MaxSkew: time.Hour, DedupeTTL: time.Hour})
		if err == nil {
			t.Fatal("New accepted DedupeTTL < 2×MaxSkew")
		}
	})
}
