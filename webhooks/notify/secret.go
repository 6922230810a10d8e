package notify

import (
	"errors"
	"log/slog"
	"strings"
)

// Secret is a value that must never appear in a log line or an error: a
// webhook signing secret, an SMTP password, a URL whose path is the
// credential (Slack incoming webhooks). Printing it with fmt or slog shows
// "[redacted]".
type Secret string

const redacted = "[redacted]"

func (Secret) String() string                 { return redacted }
func (Secret) GoString() string               { return redacted }
func (Secret) LogValue() slog.Value           { return slog.StringValue(redacted) }
func (s Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// Sentinel errors.
var (
	ErrUnknownKind = errors.New("notify: unknown event kind")
	ErrBadID       = errors.New("notify: malformed event ID")
	ErrOptions     = errors.New("notify: invalid options")
)

// scrubber removes secrets from text that may reach a log or an error: a
// library's error may quote what it was given (a URL, a dial string).
type scrubber []string

func newScrubber(secrets ...string) scrubber {
	var s scrubber
	for _, v := range secrets {
		if len(v) >= 4 { // shorter values would blank ordinary words
			s = append(s, v)
		}
	}
	return s
}

func (s scrubber) text(v string) string {
	for _, sec := range s {
		v = strings.ReplaceAll(v, sec, redacted)
	}
	return v
}

// err returns err with every secret removed from its message. The chain
// is not kept when something was removed, so that no caller can unwrap the
// original text.
func (s scrubber) err(err error) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	clean := s.text(msg)
	if clean == msg {
		return err
	}
	return errors.New(clean)
}
