package notify

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"time"
)

// SlackOptions configure a [Slack] sink. Zero fields take the defaults noted.
type SlackOptions struct {
	// URL is the incoming-webhook URL. Required; https only unless
	// AllowHTTP. Its path is the credential, so it is treated as a secret.
	URL Secret
	// Filter selects the events sent. Default: all.
	Filter Filter
	// Window is how long events are gathered into one message after the
	// first arrives. Default 30s.
	Window time.Duration
	// Listed is how many events a batched message lists. Default 20.
	Listed int
	// QueueSize bounds the events waiting (and so one message); when full
	// the oldest is dropped and counted. Default 10000.
	QueueSize int
	Retry     RetryOptions
	AllowHTTP bool
	Client    *http.Client
	Logger    *slog.Logger
	Now       func() time.Time
	Sleep     Sleeper
}

// Slack is a [Sink] that posts {"text": …} to a Slack-compatible incoming
// webhook (Slack, Mattermost, Rocket.Chat, …), one message per window.
type Slack struct {
	worker
	post   *poster
	listed int
}

var _ Sink = (*Slack)(nil)

// NewSlack checks opts and starts the sink's worker.
func NewSlack(opts SlackOptions) (*Slack, error) {
	u, err := parseHTTPURL(string(opts.URL), opts.AllowHTTP)
	if err != nil {
		return nil, fmt.Errorf("slack: %w", err)
	}
	if err := opts.Filter.Validate(); err != nil {
		return nil, fmt.Errorf("slack: %w", err)
	}
	if opts.Window <= 0 {
		opts.Window = 30 * time.Second
	}
	if opts.Listed <= 0 {
		opts.Listed = 20
	}
	s := &Slack{listed: opts.Listed}
	s.worker = baseWorker("slack", opts.Filter, opts.QueueSize, 10000, opts.Window, 0, opts.Logger, opts.Now, opts.Sleep)
	s.post = newPoster(u, opts.Client, opts.Retry, s.sleep, s.now)
	s.deliver = s.send
	s.start()
	return s, nil
}

func (s *Slack) send(ctx context.Context, batch []Event, dropped uint64) error {
	body, err := json.Marshal(struct {
		Text string `json:"text"`
	}{digest{events: batch, dropped: dropped, listed: s.listed}.slack()})
	if err != nil {
		return err
	}
	return s.post.post(ctx, body, func(http.Header) {})
}
