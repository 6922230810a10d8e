package notify

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"
)

// Wire format of the signed JSON webhook; see the package documentation.
const (
	HeaderEvent     = "X-Gitfleet-Event"
	HeaderDelivery  = "X-Gitfleet-Delivery"
	HeaderTimestamp = "X-Gitfleet-Timestamp"
	HeaderSignature = "X-Gitfleet-Signature"
)

// WebhookOptions configure a [Webhook]. Zero fields take the defaults noted.
type WebhookOptions struct {
	// URL receives the POSTs. Required; https only unless AllowHTTP. A
	// Secret because URLs often carry a token (userinfo, path or query).
	URL Secret
	// Secret keys the HMAC-SHA256 signature. Empty sends no signature
	// header (a receiver cannot then tell a forgery apart).
	Secret Secret
	// Filter selects the events sent. Default: all.
	Filter Filter
	// QueueSize bounds the events waiting; when full the oldest is
	// dropped and counted in [Stats.Dropped]. Default 1024.
	QueueSize int
	// Retry shapes retries of one delivery; see [RetryOptions].
	Retry RetryOptions
	// AllowHTTP permits an http:// URL. For tests only.
	AllowHTTP bool
	// Client sends the requests (its redirect policy is replaced: redirects
	// are never followed). Default: a client requiring TLS 1.2 or later.
	Client *http.Client
	// Logger receives delivery failures. Default slog.Default().
	Logger *slog.Logger
	// Now and Sleep are the clock; defaults time.Now and a timer.
	Now   func() time.Time
	Sleep Sleeper
}

// Webhook is a [Sink] that POSTs each event as signed JSON, one event per
// request, retrying a failed delivery with the same delivery ID.
type Webhook struct {
	worker
	post   *poster
	secret []byte
}

var _ Sink = (*Webhook)(nil)

// NewWebhook checks opts and starts the sink's worker.
func NewWebhook(opts WebhookOptions) (*Webhook, error) {
	u, err := parseHTTPURL(string(opts.URL), opts.AllowHTTP)
	if err != nil {
		return nil, fmt.Errorf("webhook: %w", err)
	}
	if err := opts.Filter.Validate(); err != nil {
		return nil, fmt.Errorf("webhook: %w", err)
	}
	w := &Webhook{secret: []byte(opts.Secret)}
	w.worker = baseWorker("webhook", opts.Filter, opts.QueueSize, 1024, 0, 1, opts.Logger, opts.Now, opts.Sleep)
	w.post = newPoster(u, opts.Client, opts.Retry, w.sleep, w.now, string(opts.Secret))
	w.deliver = w.send
	w.start()
	return w, nil
}

// Payload is the JSON body of one webhook delivery.
type Payload struct {
	// ID equals the X-Gitfleet-Delivery header: the idempotency key.
	ID      string            `json:"id"`
	Event   Kind              `json:"event"`
	Time    time.Time         `json:"time"`
	Commit  string            `json:"commit,omitempty"`
	Rollout string            `json:"rollout,omitempty"`
	Device  string            `json:"device,omitempty"`
	Check   string            `json:"check,omitempty"`
	Details map[string]string `json:"details,omitempty"`
}

func (w *Webhook) send(ctx context.Context, batch []Event, _ uint64) error {
	e := batch[0]
	body, err := json.Marshal(Payload{ID: e.ID, Event: e.Kind, Time: e.Time.UTC(), Commit: e.Commit,
		Rollout: e.Rollout, Device: e.Device, Check: e.Check, Details: e.Details})
	if err != nil {
		return fmt.Errorf("encode event: %w", err)
	}
	return w.post.post(ctx, body, func(h http.Header) {
		ts := strconv.FormatInt(w.now().Unix(), 10)
		h.Set(HeaderEvent, string(e.Kind))
		h.Set(HeaderDelivery, e.ID)
		h.Set(HeaderTimestamp, ts)
		if len(w.secret) > 0 {
			h.Set(HeaderSignature, Sign(w.secret, ts, e.ID, body))
		}
	})
}

// Sign returns the X-Gitfleet-Signature value for a delivery: "sha256="
// and the lowercase hex HMAC-SHA256, keyed with secret, of
//
//	<timestamp> "\n" <delivery> "\n" <body>
//
// the same string Gitfleet's generic inbound webhook verifies.
func Sign(secret []byte, timestamp, delivery string, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(timestamp + "\n" + delivery + "\n"))
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// baseWorker fills the shared worker with defaults.
func baseWorker(name string, f Filter, queueSize, defQueue int, window time.Duration, maxBatch int,
	log *slog.Logger, now func() time.Time, sleep Sleeper) worker {
	if queueSize <= 0 {
		queueSize = defQueue
	}
	if log == nil {
		log = slog.Default()
	}
	if now == nil {
		now = time.Now
	}
	if sleep == nil {
		sleep = realSleep
	}
	if maxBatch <= 0 || maxBatch > queueSize {
		maxBatch = queueSize
	}
	return worker{name: name, filter: f, q: newQueue(queueSize), window: window,
		maxBatch: maxBatch, sleep: sleep, now: now, log: log}
}
