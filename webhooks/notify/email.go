package notify

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/cenkalti/backoff/v4"
	mail "github.com/wneessen/go-mail"
)

// EmailOptions configure an [Email] sink. Zero fields take the defaults noted.
type EmailOptions struct {
	// Host and Port of the SMTP submission server. Host is required;
	// Port defaults to 587.
	Host string
	Port int
	// Username and Password authenticate (AUTH PLAIN, only ever inside
	// TLS). Empty Username: no authentication.
	Username string
	Password Secret
	// From is the sender address. Required.
	From string
	// To are the recipients. At least one.
	To []string
	// Filter selects the events sent. Default: all.
	Filter Filter
	// Window is how long events are gathered into one mail after the
	// first arrives: a burst within it makes one digest. Default 1m.
	Window time.Duration
	// Listed is how many events a digest shows in full. Default 20.
	Listed int
	// QueueSize bounds the events waiting (and so one digest); when full
	// the oldest is dropped and the digest says how many. Default 10000.
	QueueSize int
	// AllowPlaintext sends without STARTTLS when the server does not offer
	// it, but only when there is no Username: credentials are never sent
	// outside TLS, so with a Username STARTTLS stays required. Default:
	// STARTTLS is required and a server without it gets no mail.
	AllowPlaintext bool
	// TLSConfig verifies the server (RootCAs for a private CA). Default:
	// the system roots, ServerName = Host, TLS 1.2 or later.
	TLSConfig *tls.Config
	// Timeout bounds one SMTP session. Default 30s.
	Timeout time.Duration
	// MaxAttempts caps the sends of one digest (with backoff between
	// them, from 5s up to 2m). Default 4.
	MaxAttempts int
	Logger      *slog.Logger
	Now         func() time.Time
	Sleep       Sleeper
}

// Email is a [Sink] that mails a digest of the events of each window.
type Email struct {
	worker
	opts   EmailOptions
	client *mail.Client
	scrub  scrubber
}

var _ Sink = (*Email)(nil)

// NewEmail checks opts and starts the sink's worker.
func NewEmail(opts EmailOptions) (*Email, error) {
	switch {
	case opts.Host == "":
		return nil, fmt.Errorf("email: %w: Host is required", ErrOptions)
	case opts.From == "":
		return nil, fmt.Errorf("email: %w: From is required", ErrOptions)
	case len(opts.To) == 0:
		return nil, fmt.Errorf("email: %w: at least one recipient (To) is required", ErrOptions)
	}
	if err := opts.Filter.Validate(); err != nil {
		return nil, fmt.Errorf("email: %w", err)
	}
	if opts.Port == 0 {
		opts.Port = 587
	}
	if opts.Window <= 0 {
		opts.Window = time.Minute
	}
	if opts.Listed <= 0 {
		opts.Listed = 20
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 30 * time.Second
	}
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = 4
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if opts.TLSConfig != nil {
		tc = opts.TLSConfig.Clone()
	}
	if tc.ServerName == "" {
		tc.ServerName = opts.Host
	}
	policy := mail.TLSMandatory
	if opts.AllowPlaintext && opts.Username == "" {
		policy = mail.TLSOpportunistic
	}
	mo := []mail.Option{
		mail.WithPort(opts.Port),
		mail.WithTLSPolicy(policy),
		mail.WithTLSConfig(tc),
		mail.WithTimeout(opts.Timeout),
	}
	if opts.Username != "" {
		// PLAIN refuses to authenticate outside TLS.
		mo = append(mo, mail.WithSMTPAuth(mail.SMTPAuthPlain),
			mail.WithUsername(opts.Username), mail.WithPassword(string(opts.Password)))
	}
	c, err := mail.NewClient(opts.Host, mo...)
	if err != nil {
		return nil, fmt.Errorf("email: %w: %w", ErrOptions, newScrubber(string(opts.Password)).err(err))
	}
	m := &Email{opts: opts, client: c, scrub: newScrubber(string(opts.Password))}
	m.worker = baseWorker("email", opts.Filter, opts.QueueSize, 10000, opts.Window, 0, opts.Logger, opts.Now, opts.Sleep)
	m.deliver = m.send
	m.start()
	return m, nil
}

// message builds the digest mail for a batch.
func (m *Email) message(batch []Event, dropped uint64) (*mail.Msg, error) {
	d := digest{events: batch, dropped: dropped, listed: m.opts.Listed}
	msg := mail.NewMsg()
	if err := msg.From(m.opts.From); err != nil {
		return nil, fmt.Errorf("from address: %w", err)
	}
	if err := msg.To(m.opts.To...); err != nil {
		return nil, fmt.Errorf("recipient address: %w", err)
	}
	msg.Subject("[Gitfleet] " + d.title())
	msg.SetDateWithValue(m.now())
	// One digest, one Message-ID: a retried send is the same message.
	h := sha256.New()
	for _, e := range batch {
		h.Write([]byte(e.ID + "\n"))
	}
	msg.SetMessageIDWithValue(hex.EncodeToString(h.Sum(nil)[:16]) + "@gitfleet")
	msg.SetGenHeader("X-Gitfleet-Events", strconv.Itoa(len(batch)))
	msg.SetBodyString(mail.TypeTextPlain, d.text())
	return msg, nil
}

func (m *Email) send(ctx context.Context, batch []Event, dropped uint64) error {
	msg, err := m.message(batch, dropped)
	if err != nil {
		return err
	}
	b := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(5*time.Second),
		backoff.WithMaxInterval(2*time.Minute),
		backoff.WithMaxElapsedTime(0),
	)
	where := net.JoinHostPort(m.opts.Host, strconv.Itoa(m.opts.Port))
	for attempt := 1; ; attempt++ {
		err := m.client.DialAndSendWithContext(ctx, msg)
		if err == nil {
			return nil
		}
		// A 5xx reply is permanent; dial, TLS and 4xx failures may pass.
		var se *mail.SendError
		permanent := errors.As(err, &se) && !se.IsTemp()
		err = m.scrub.err(err)
		if permanent || attempt >= m.opts.MaxAttempts {
			return fmt.Errorf("mail to %s: %w", where, err)
		}
		if serr := m.sleep(ctx, b.NextBackOff()); serr != nil {
			return fmt.Errorf("mail to %s: %w (after: %w)", where, serr, err)
		}
	}
}
