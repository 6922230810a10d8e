package receive

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestOverTLS posts deliveries the way a host does, over a real TLS
// connection to a real server, through the mount paths.
func TestOverTLS(t *testing.T) {
	e := newEnv(t, func(o *Options) {
		// Real rate limits, keyed on the loopback address.
		o.PerSource = Limit{Rate: 1, Burst: 3}
		o.Global = Limit{}
	})
	mux := http.NewServeMux()
	for _, rt := range e.h.Routes("/hooks") {
		mux.Handle(rt.Pattern, rt.Handler)
	}
	srv := httptest.NewTLSServer(mux)
	defer srv.Close()
	client := srv.Client()

	post := func(path string, hs host, body []byte, delivery string, sign bool) (int, Outcome) {
		t.Helper()
		req := hs.request(body, hs.pushEvent, delivery, sign)
		out, err := http.NewRequest(http.MethodPost, srv.URL+path, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		out.Header = req.Header
		resp, err := client.Do(out)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.TLS == nil {
			t.Fatal("not over TLS")
		}
		var r response
		if err := json.NewDecoder(io.LimitReader(resp.Body, 4096)).Decode(&r); err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, r.Status
	}

	gh := hosts[0]
	push := readTestdata(t, gh.fixture)
	if code, st := post("/hooks", gh, push, "tls-1", true); code != 202 || st != Triggered {
		t.Fatalf("signed push: %d %q", code, st)
	}
	want := gh.want
	want.DeliveryID = "tls-1"
	if got := e.tr.last(); got != want {
		t.Fatalf("Push = %+v, want %+v", got, want)
	}
	if code, st := post("/hooks/github", gh, push, "tls-2", false); code != 401 || st != Unauthorized {
		t.Fatalf("unsigned push: %d %q", code, st)
	}
	if code, st := post("/hooks/github", gh, push, "tls-1", true); code != 200 || st != Duplicate {
		t.Fatalf("redelivery: %d %q", code, st)
	}
	// The sender's budget (3) is spent only by the refused request: a
	// fourth, signed, still triggers.
	if code, st := post("/hooks/github", gh, push, "tls-3", true); code != 202 || st != Triggered {
		t.Fatalf("fourth request, signed: %d %q", code, st)
	}
	if n := e.tr.count(); n != 2 {
		t.Fatalf("triggered %d times, want 2", n)
	}
}
