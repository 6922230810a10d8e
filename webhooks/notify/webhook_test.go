package notify

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/webhooks/receive"
)

// delivery is what the test receiver saw of one request.
type delivery struct {
	header http.Header
	body   []byte
	sigOK  bool
}

// receiver is an HTTPS webhook receiver that checks signatures and answers
// each request with the next status from its script (200 after the end).
type receiver struct {
	t      *testing.T
	secret []byte
	mu     sync.Mutex
	got    []delivery
	script []func(w http.ResponseWriter)
	srv    *httptest.Server
}

func newReceiver(t *testing.T, secret string, script ...func(w http.ResponseWriter)) *receiver {
	r := &receiver{t: t, secret: []byte(secret), script: script}
	r.srv = httptest.NewTLSServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(req.Body, 1<<20))
	ts, id := req.Header.Get(HeaderTimestamp), req.Header.Get(HeaderDelivery)
	sig := req.Header.Get(HeaderSignature)
	// The receiver verifies with Gitfleet's inbound generic scheme.
	ok := sig != "" && sig == receive.SignGeneric(receive.Secret(r.secret), ts, id, body)
	r.mu.Lock()
	r.got = append(r.got, delivery{header: req.Header.Clone(), body: body, sigOK: ok})
	var answer func(w http.ResponseWriter)
	if len(r.script) > 0 {
		answer, r.script = r.script[0], r.script[1:]
	}
	r.mu.Unlock()
	if !ok && len(r.secret) > 0 {
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	if answer != nil {
		answer(w)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (r *receiver) deliveries() []delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]delivery(nil), r.got...)
}

func status(code int, retryAfter string) func(w http.ResponseWriter) {
	return func(w http.ResponseWriter) {
		if retryAfter != "" {
			w.Header().Set("Retry-After", retryAfter)
		}
		w.WriteHeader(code)
	}
}

func newTestWebhook(t *testing.T, r *receiver, clk *fakeClock, mod func(*WebhookOptions)) *Webhook {
	t.Helper()
	opts := WebhookOptions{URL: Secret(r.srv.URL + "/hooks/gitfleet"), Secret: Secret(r.secret),
		Client: r.srv.Client(), Now: clk.Now, Sleep: clk.Sleep}
	if mod != nil {
		mod(&opts)
	}
	w, err := NewWebhook(opts)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// A refused delivery (503) is retried, with the same idempotency key and a
// valid signature over a fresh timestamp, after the Retry-After the
// receiver asked for.
func TestWebhookRetriesRefusedDeliveryWithSameKey(t *testing.T) {
	r := newReceiver(t, "s3cret-signing-key", status(http.StatusServiceUnavailable, "7"))
	clk := newFakeClock()
	w := newTestWebhook(t, r, clk, nil)
	e := alert("dev-042")
	e.ID = "evt-0001"
	w.Notify(e)
	closeSink(t, w)

	got := r.deliveries()
	if len(got) != 2 {
		t.Fatalf("receiver saw %d requests, want 2 (refused, then accepted)", len(got))
	}
	for i, d := range got {
		if !d.sigOK {
			t.Errorf("request %d: signature did not verify", i)
		}
		if id := d.header.Get(HeaderDelivery); id != "evt-0001" {
			t.Errorf("request %d: %s = %q, want the event ID", i, HeaderDelivery, id)
		}
		if k := d.header.Get(HeaderEvent); k != "alert.raised" {
			t.Errorf("request %d: %s = %q", i, HeaderEvent, k)
		}
	}
	if t0, t1 := got[0].header.Get(HeaderTimestamp), got[1].header.Get(HeaderTimestamp); t0 == t1 {
		t.Errorf("retry reused timestamp %s; each attempt signs a fresh one", t0)
	}
	if s := clk.Sleeps(); len(s) != 1 || s[0] != 7*time.Second {
		t.Errorf("waits between attempts = %v, want [7s] (the Retry-After)", s)
	}
	var p Payload
	if err := json.Unmarshal(got[1].body, &p); err != nil {
		t.Fatal(err)
	}
	if p.ID != "evt-0001" || p.Event != AlertRaised || p.Device != "dev-042" || p.Check != "ssh-root" ||
		p.Commit != e.Commit || p.Details["severity"] != "critical" || p.Time.IsZero() {
		t.Errorf("payload = %+v", p)
	}
	if st := w.Stats(); st.Delivered != 1 || st.Failed != 0 {
		t.Errorf("stats = %+v", st)
	}
}

func TestWebhookRetryAfterHTTPDate(t *testing.T) {
	clk := newFakeClock()
	at := clk.Now().Add(90 * time.Second).Format(http.TimeFormat)
	r := newReceiver(t, "k3y-k3y", status(http.StatusTooManyRequests, at))
	w := newTestWebhook(t, r, clk, nil)
	w.Notify(alert("dev-1"))
	closeSink(t, w)
	if s := clk.Sleeps(); len(s) != 1 || s[0] != 90*time.Second {
		t.Errorf("waits = %v, want [1m30s]", s)
	}
	if n := len(r.deliveries()); n != 2 {
		t.Errorf("requests = %d, want 2", n)
	}
}

// Without Retry-After the waits grow exponentially, with jitter, and the
// delivery stops at MaxAttempts.
func TestWebhookBackoffOnServerErrors(t *testing.T) {
	var script []func(http.ResponseWriter)
	for range 10 {
		script = append(script, status(http.StatusBadGateway, ""))
	}
	r := newReceiver(t, "k3y-k3y", script...)
	clk := newFakeClock()
	w := newTestWebhook(t, r, clk, func(o *WebhookOptions) {
		o.Retry = RetryOptions{InitialInterval: time.Second, MaxInterval: time.Minute, MaxAttempts: 5}
	})
	w.Notify(alert("dev-1"))
	closeSink(t, w)
	if n := len(r.deliveries()); n != 5 {
		t.Fatalf("requests = %d, want MaxAttempts = 5", n)
	}
	s := clk.Sleeps()
	if len(s) != 4 {
		t.Fatalf("waits = %v, want 4", s)
	}
	for i, d := range s {
		base := time.Second << i
		if d < base/2 || d > base*3/2 {
			t.Errorf("wait %d = %s, want %s ±50%%", i, d, base)
		}
	}
	if st := w.Stats(); st.Failed != 1 || st.Delivered != 0 {
		t.Errorf("stats = %+v", st)
	}
}

func TestWebhookDoesNotRetryClientErrors(t *testing.T) {
	for _, code := range []int{400, 401, 404, 410, 422} {
		t.Run(strconv.Itoa(code), func(t *testing.T) {
			r := newReceiver(t, "k3y-k3y", status(code, "1"))
			clk := newFakeClock()
			w := newTestWebhook(t, r, clk, nil)
			w.Notify(alert("dev-1"))
			closeSink(t, w)
			if n := len(r.deliveries()); n != 1 {
				t.Errorf("requests = %d, want 1 (no retry on %d)", n, code)
			}
			if st := w.Stats(); st.Failed != 1 {
				t.Errorf("stats = %+v", st)
			}
		})
	}
}

// A Retry-After that would end past the per-delivery deadline fails the
// delivery at once instead of holding the queue.
func TestWebhookDeadlineBoundsRetryAfter(t *testing.T) {
	r := newReceiver(t, "k3y-k3y", status(http.StatusServiceUnavailable, "3600"))
	clk := newFakeClock()
	logs := &logBuffer{}
	w := newTestWebhook(t, r, clk, func(o *WebhookOptions) {
		o.Retry = RetryOptions{Deadline: 5 * time.Minute}
		o.Logger = logs.Logger()
	})
	w.Notify(alert("dev-1"))
	closeSink(t, w)
	if n := len(r.deliveries()); n != 1 {
		t.Errorf("requests = %d, want 1", n)
	}
	if s := clk.Sleeps(); len(s) != 0 {
		t.Errorf("waited %v; a wait past the deadline must not start", s)
	}
	if !strings.Contains(logs.String(), "deadline") {
		t.Errorf("log does not say why: %s", logs.String())
	}
}

func TestWebhookRefusesPlainHTTPUnlessAllowed(t *testing.T) {
	for _, tc := range []struct {
		name, url string
		allow     bool
		ok        bool
	}{
		{"http refused", "http://hooks.example/x", false, false},
		{"http allowed for tests", "http://127.0.0.1:1/x", true, true},
		{"https", "https://hooks.example/x", false, true},
		{"other scheme", "ftp://hooks.example/x", true, false},
		{"no host", "https:///x", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, err := NewWebhook(WebhookOptions{URL: Secret(tc.url), AllowHTTP: tc.allow})
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v, want ok=%v", err, tc.ok)
			}
			if w != nil {
				closeSink(t, w)
			}
		})
	}
}

// A redirect is never followed: the signed body goes only to the
// configured URL.
func TestWebhookDoesNotFollowRedirects(t *testing.T) {
	elsewhere := newReceiver(t, "")
	r := newReceiver(t, "k3y-k3y", func(w http.ResponseWriter) {
		w.Header().Set("Location", elsewhere.srv.URL+"/steal")
		w.WriteHeader(http.StatusTemporaryRedirect)
	})
	clk := newFakeClock()
	w := newTestWebhook(t, r, clk, nil)
	w.Notify(alert("dev-1"))
	closeSink(t, w)
	if n := len(elsewhere.deliveries()); n != 0 {
		t.Errorf("redirect target got %d requests", n)
	}
	if st := w.Stats(); st.Failed != 1 {
		t.Errorf("stats = %+v", st)
	}
}

func TestWebhookFilter(t *testing.T) {
	r := newReceiver(t, "k3y-k3y")
	clk := newFakeClock()
	w := newTestWebhook(t, r, clk, func(o *WebhookOptions) {
		o.Filter = Filter{Events: []Kind{AlertRaised, RolloutAborted}, Rollouts: []string{"canary"}, Checks: []string{"ssh-root"}}
	})
	w.Notify(Event{Kind: RolloutAborted, Rollout: "canary"})   // yes
	w.Notify(Event{Kind: RolloutAborted, Rollout: "stable"})   // other rollout
	w.Notify(Event{Kind: RolloutCompleted, Rollout: "canary"}) // other kind
	w.Notify(Event{Kind: AlertRaised, Check: "ssh-root"})      // yes
	w.Notify(Event{Kind: AlertRaised, Check: "disk-full"})     // other check
	w.Notify(Event{Kind: "alert.fired", Check: "ssh-root"})    // not a schema kind
	closeSink(t, w)
	var kinds []string
	for _, d := range r.deliveries() {
		kinds = append(kinds, d.header.Get(HeaderEvent))
	}
	if got := strings.Join(kinds, ","); got != "rollout.aborted,alert.raised" {
		t.Errorf("delivered %s", got)
	}
	if _, err := NewWebhook(WebhookOptions{URL: "https://x.example/", Filter: Filter{Events: []Kind{"rollout.finished"}}}); err == nil {
		t.Error("a filter naming an unknown event kind was accepted")
	}
}

// With a full queue the oldest events are dropped and counted; the caller
// never blocks.
func TestWebhookQueueDropsOldest(t *testing.T) {
	release := make(chan struct{})
	inFlight := make(chan struct{}, 1)
	r := newReceiver(t, "k3y-k3y", func(w http.ResponseWriter) {
		inFlight <- struct{}{}
		<-release
		w.WriteHeader(http.StatusOK)
	})
	clk := newFakeClock()
	w := newTestWebhook(t, r, clk, func(o *WebhookOptions) { o.QueueSize = 3 })
	w.Notify(Event{ID: "e0", Kind: DevicePending, Device: "d0"})
	select {
	case <-inFlight:
	case <-time.After(10 * time.Second):
		t.Fatal("first delivery never arrived")
	}
	for i := 1; i <= 10; i++ {
		w.Notify(Event{ID: "e" + strconv.Itoa(i), Kind: DevicePending})
	}
	if st := w.Stats(); st.Queued != 3 || st.Dropped != 7 {
		t.Errorf("stats while blocked = %+v, want 3 queued, 7 dropped", st)
	}
	close(release)
	closeSink(t, w)
	var ids []string
	for _, d := range r.deliveries() {
		ids = append(ids, d.header.Get(HeaderDelivery))
	}
	if got := strings.Join(ids, ","); got != "e0,e8,e9,e10" {
		t.Errorf("delivered %s, want e0,e8,e9,e10 (the newest kept)", got)
	}
	if st := w.Stats(); st.Delivered != 4 || st.Dropped != 7 {
		t.Errorf("stats = %+v", st)
	}
}
