package notify

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/gitfleet/gitfleet/webhooks/receive"
)

// Gitfleet's own generic inbound receiver (webhooks/receive) verifies what
// the webhook sink signs: a delivery with the right secret passes its
// signature and timestamp checks (202: not a push, ignored), one with a
// wrong secret is refused (401) and not retried.
func TestSignatureVerifiedByGitfleetReceiver(t *testing.T) {
	clk := newFakeClock()
	h, err := receive.New(receive.Options{
		Secret: "shared-s3cret", Ref: "main", Now: clk.Now,
		Trigger: func(context.Context, receive.Push) {},
		Logger:  slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var codes []int
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := httptest.NewRecorder()
		h.For(receive.Generic).ServeHTTP(rec, r)
		mu.Lock()
		codes = append(codes, rec.Code)
		mu.Unlock()
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		w.Write(rec.Body.Bytes())
	}))
	t.Cleanup(srv.Close)

	for _, tc := range []struct {
		name   string
		secret Secret
		want   int
	}{
		{"right secret → verified (202, not a push)", "shared-s3cret", http.StatusAccepted},
		{"wrong secret → 401, not retried", "guessed", http.StatusUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mu.Lock()
			codes = nil
			mu.Unlock()
			w, err := NewWebhook(WebhookOptions{URL: Secret(srv.URL + "/hooks/generic"), Secret: tc.secret,
				Client: srv.Client(), Now: clk.Now, Sleep: clk.Sleep})
			if err != nil {
				t.Fatal(err)
			}
			w.Notify(alert("dev-1"))
			closeSink(t, w)
			mu.Lock()
			defer mu.Unlock()
			if len(codes) != 1 || codes[0] != tc.want {
				t.Errorf("receiver answered %v, want [%d]", codes, tc.want)
			}
		})
	}
}
