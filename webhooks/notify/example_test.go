package notify_test

import (
	"context"
	"fmt"
	"time"

	"github.com/gitfleet/gitfleet/webhooks/notify"
)

// A receiver checks a delivery by recomputing the signature over the raw
// body with the timestamp and delivery headers.
func ExampleSign() {
	body := []byte(`{"id":"evt-1","event":"alert.raised","time":"2026-01-02T03:04:05Z"}`)
	fmt.Println(notify.Sign([]byte("s3cret"), "1767323045", "evt-1", body))
	// Output: sha256=ca967e3b489cfa62b68ae7734a5661d27cb9118590466d3eefdfa122e2a92cae
}

func ExampleNewWebhook() {
	w, err := notify.NewWebhook(notify.WebhookOptions{
		URL:    "https://hooks.example.com/gitfleet", // a Secret: may carry a token
		Secret: "s3cret",                             // from the Notification's secret.env or secret.file
		Filter: notify.Filter{Events: []notify.Kind{notify.AlertRaised, notify.RolloutAborted}},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	w.Notify(notify.Event{Kind: notify.AlertRaised, Device: "dev-042", Check: "ssh-root",
		Details: map[string]string{"severity": "critical"}}) // never blocks
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = w.Close(ctx)
}
