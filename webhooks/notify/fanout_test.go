package notify

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/schema"
)

func TestFilterOfManifest(t *testing.T) {
	f := FilterOf(schema.NotificationSpec{Events: []string{"alert.raised"}, Checks: []string{"ssh-root"}, Rollouts: []string{"canary"}})
	if !slices.Equal(f.Events, []Kind{AlertRaised}) || !slices.Equal(f.Checks, []string{"ssh-root"}) || !slices.Equal(f.Rollouts, []string{"canary"}) {
		t.Errorf("filter = %+v", f)
	}
}

// Every sink of a fanout gets the same event ID, so a receiver of two
// destinations can tell they are one event.
func TestFanoutSameIDEverywhere(t *testing.T) {
	a, b := newReceiver(t, "k3y-a"), newReceiver(t, "k3y-b")
	clk := newFakeClock()
	f := Fanout{newTestWebhook(t, a, clk, nil), newTestWebhook(t, b, clk, nil)}
	f.Notify(alert("dev-1"))
	closeSink(t, f)
	da, db := a.deliveries(), b.deliveries()
	if len(da) != 1 || len(db) != 1 {
		t.Fatalf("deliveries %d, %d", len(da), len(db))
	}
	if ia, ib := da[0].header.Get(HeaderDelivery), db[0].header.Get(HeaderDelivery); ia == "" || ia != ib {
		t.Errorf("delivery IDs %q and %q", ia, ib)
	}
	if st := f.Stats(); st.Delivered != 2 {
		t.Errorf("stats = %+v", st)
	}
}

// Close returns at its context's deadline even when a receiver hangs; the
// events not delivered are counted as failed.
func TestCloseGivesUpAtDeadline(t *testing.T) {
	hang := make(chan struct{})
	r := newReceiver(t, "k3y-k3y", func(w http.ResponseWriter) { <-hang })
	t.Cleanup(func() { close(hang) }) // before the server's Close (cleanups run last first)
	clk := newFakeClock()
	w := newTestWebhook(t, r, clk, func(o *WebhookOptions) { o.Retry.AttemptTimeout = time.Hour })
	for range 3 {
		w.Notify(alert("dev-1"))
	}
	eventually(t, "the first request", func() bool { return len(r.deliveries()) == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- w.Close(ctx) }()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Close = %v, want the context's deadline", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Close did not return after its deadline")
	}
	if st := w.Stats(); st.Failed != 3 || st.Queued != 0 {
		t.Errorf("stats = %+v, want 3 failed", st)
	}
	w.Notify(alert("dev-2")) // after Close: ignored, no panic
}
