package receive

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// genericFrom builds a valid generic push from source address ip.
func genericFrom(ip, delivery string) *http.Request {
	body := `{"ref":"refs/heads/main"}`
	r := httptest.NewRequest(http.MethodPost, "/hooks", strings.NewReader(body))
	r.RemoteAddr = ip + ":40312"
	signGeneric(r.Header, delivery, []byte(body))
	return r
}

// forgedGenericFrom is genericFrom with a signature that does not verify.
func forgedGenericFrom(ip, delivery string) *http.Request {
	r := genericFrom(ip, delivery)
	r.Header.Set("X-Gitfleet-Signature", "sha256="+strings.Repeat("00", 32))
	return r
}

// The per-source budget is spent by requests refused before their sender
// is proven (forged, malformed); verified deliveries do not touch it.
func TestRateLimitPerSource(t *testing.T) {
	e := newEnv(t, func(o *Options) {
		o.PerSource = Limit{Rate: 0.5, Burst: 2} // one every 2s
		o.Global = Limit{Rate: -1}
	})
	n := 0
	send := func(ip string, forged bool) (int, string, Outcome) {
		n++
		r := genericFrom(ip, "d"+string(rune('a'+n)))
		if forged {
			r = forgedGenericFrom(ip, "d"+string(rune('a'+n)))
		}
		rec, resp := e.do(t, nil, r)
		return rec.Code, rec.Header().Get("Retry-After"), resp.Status
	}
	for i := range 2 {
		if code, _, _ := send("192.0.2.1", true); code != 401 {
			t.Fatalf("forged request %d within the burst: %d, want 401", i+1, code)
		}
	}
	code, retry, status := send("192.0.2.1", true)
	if code != 429 || status != RateLimited || retry != "2" {
		t.Fatalf("forged, over the burst: %d %q Retry-After=%q, want 429 rate_limited 2", code, status, retry)
	}
	if code, _, _ := send("192.0.2.1", false); code != 202 {
		t.Fatalf("a verified delivery from the spent source: %d, want 202", code)
	}
	if code, _, _ := send("192.0.2.2", true); code != 401 {
		t.Fatalf("a forgery from another source: %d, want 401", code)
	}
	e.clock.Advance(1 * time.Second)
	if code, retry, _ := send("192.0.2.1", true); code != 429 || retry != "1" {
		t.Fatalf("after 1s: %d Retry-After=%q", code, retry)
	}
	e.clock.Advance(1 * time.Second)
	if code, _, _ := send("192.0.2.1", true); code != 401 {
		t.Fatalf("after 2s: %d, want 401", code)
	}
	if code, _, _ := send("192.0.2.1", true); code != 429 {
		t.Fatalf("the refilled token is spent: %d", code)
	}
	if got := e.tr.count(); got != 1 {
		t.Fatalf("triggered %d, want 1", got)
	}
}

func TestRateLimitGlobal(t *testing.T) {
	e := newEnv(t, func(o *Options) {
		o.PerSource = Limit{Rate: -1}
		o.Global = Limit{Rate: 1, Burst: 3}
	})
	for i := range 3 {
		if rec, _ := e.do(t, nil, genericFrom("198.51.100."+string(rune('1'+i)), "g"+string(rune('a'+i)))); rec.Code != 202 {
			t.Fatalf("request %d: %d", i, rec.Code)
		}
	}
	rec, _ := e.do(t, nil, genericFrom("198.51.100.9", "gz"))
	if rec.Code != 429 || rec.Header().Get("Retry-After") != "1" {
		t.Fatalf("over the global burst: %d Retry-After=%q", rec.Code, rec.Header().Get("Retry-After"))
	}
	e.clock.Advance(time.Second)
	if rec, _ := e.do(t, nil, genericFrom("198.51.100.9", "gy")); rec.Code != 202 {
		t.Fatalf("after 1s: %d", rec.Code)
	}
}

func TestRateLimitClientIP(t *testing.T) {
	e := newEnv(t, func(o *Options) {
		o.PerSource = Limit{Rate: 1, Burst: 1}
		o.Global = Limit{Rate: -1}
		o.ClientIP = func(r *http.Request) string { return r.Header.Get("X-Real-IP") }
	})
	for i, ip := range []string{"192.0.2.10", "192.0.2.11"} {
		r := forgedGenericFrom("10.0.0.1", "c"+string(rune('a'+i)))
		r.Header.Set("X-Real-IP", ip)
		if rec, _ := e.do(t, nil, r); rec.Code != 401 {
			t.Fatalf("%s behind the proxy: %d, want 401 (its own budget)", ip, rec.Code)
		}
	}
}

func TestLimiter(t *testing.T) {
	now := newClock().Now()
	t.Run("IPv6 /64", func(t *testing.T) {
		l := newLimiter(Limit{Rate: 1, Burst: 1}, Limit{Rate: -1}, 10)
		if ok, _ := l.allowSource(sourceKey("2001:db8:1:2::1"), now); !ok {
			t.Fatal("first")
		}
		if ok, _ := l.allowSource(sourceKey("2001:db8:1:2:ffff::9"), now); ok {
			t.Fatal("same /64 got its own bucket")
		}
		if ok, _ := l.allowSource(sourceKey("2001:db8:1:3::1"), now); !ok {
			t.Fatal("another /64 was limited")
		}
		if ok, _ := l.allowSource(sourceKey("::ffff:192.0.2.1"), now); !ok {
			t.Fatal("mapped v4")
		}
		if ok, _ := l.allowSource(sourceKey("192.0.2.1"), now); ok {
			t.Fatal("mapped v4 and v4 differ")
		}
	})
	t.Run("MaxSources", func(t *testing.T) {
		l := newLimiter(Limit{Rate: 1, Burst: 2}, Limit{Rate: -1}, 2)
		l.allowSource("a", now)
		l.allowSource("b", now)
		if ok, _ := l.allowSource("c", now); ok {
			t.Fatal("a third source got in while two were active")
		}
		// Once a and b have refilled they are forgotten, making room.
		later := now.Add(2 * time.Second)
		if ok, _ := l.allowSource("c", later); !ok {
			t.Fatal("c after a and b refilled")
		}
		if len(l.sources) != 1 {
			t.Fatalf("%d sources remembered, want 1", len(l.sources))
		}
	})
	t.Run("global counts apart from sources", func(t *testing.T) {
		l := newLimiter(Limit{Rate: 1, Burst: 1}, Limit{Rate: 1, Burst: 1}, 10)
		if ok, _ := l.allowSource("a", now); !ok {
			t.Fatal("source a")
		}
		if ok, _ := l.allowSource("b", now); !ok {
			t.Fatal("source b was limited by a's request")
		}
		if ok, _ := l.allowGlobal(now); !ok {
			t.Fatal("the first verified delivery")
		}
		if ok, _ := l.allowGlobal(now); ok {
			t.Fatal("global burst exceeded")
		}
	})
	t.Run("no refill", func(t *testing.T) {
		l := newLimiter(Limit{Rate: 0, Burst: 1}, Limit{Rate: -1}, 10)
		if ok, _ := l.allowSource("a", now); !ok {
			t.Fatal("the burst")
		}
		if ok, wait := l.allowSource("a", now.Add(24*time.Hour)); ok || wait != time.Hour {
			t.Fatalf("after the burst, a day later: %v, wait %v; want refused, wait 1h", ok, wait)
		}
	})
	t.Run("Retry-After", func(t *testing.T) {
		for d, want := range map[time.Duration]int{0: 1, time.Millisecond: 1, time.Second: 1, 1001 * time.Millisecond: 2, time.Hour: 3600} {
			if got := retryAfter(d); got != want {
				t.Errorf("retryAfter(%v) = %d, want %d", d, got, want)
			}
		}
	})
}
