package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"regexp"
	"strings"
)

// Secrets never reach a log line or an error message of `gitfleet serve`.
// Three layers see to it:
//
//   - the settings are logged through serveConfig.LogValue, which shows
//     secret settings as <redacted> and URLs without their user
//     information;
//   - every log line passes through redactHandler, which replaces each
//     secret value of the configuration (tokens, webhook secret, the
//     passwords and user names in --repo and --redis URLs, what the *_file
//     settings hold) and the user information of any URL with
//     <redacted>, in the message and in every attribute, errors included;
//   - the error serve returns passes through the same redactor, so a
//     library that quotes a URL with credentials in an error (go-git and
//     go-redis both can) cannot leak it on the way out either.

const redactedText = "<redacted>"

// userinfo matches the user information of a URL: "scheme://user[:pass]@".
var userinfo = regexp.MustCompile(`([A-Za-z][A-Za-z0-9+.-]*://)[^/?#@\s"']+@`)

// redactor replaces known secret values and URL user information.
type redactor struct {
	secrets *strings.Replacer // nil: none known
}

// minSecret is the shortest value redacted by value: shorter "secrets"
// would redact ordinary words all over the log.
const minSecret = 4

func newRedactor(secrets []string) *redactor {
	var pairs []string
	seen := map[string]bool{}
	for _, s := range secrets {
		s = strings.TrimSpace(s)
		if len(s) < minSecret || seen[s] {
			continue
		}
		seen[s] = true
		pairs = append(pairs, s, redactedText)
		// URL-escaped forms appear in URLs and query strings.
		if e := url.QueryEscape(s); e != s {
			pairs = append(pairs, e, redactedText)
		}
		if e := url.PathEscape(s); e != s {
			pairs = append(pairs, e, redactedText)
		}
	}
	r := &redactor{}
	if len(pairs) > 0 {
		r.secrets = strings.NewReplacer(pairs...)
	}
	return r
}

// String returns s without secrets.
func (r *redactor) String(s string) string {
	if r.secrets != nil {
		s = r.secrets.Replace(s)
	}
	return userinfo.ReplaceAllString(s, "${1}"+redactedText+"@")
}

// Error returns err with a redacted message; errors.Is and errors.As still
// see the original chain. Nil stays nil.
func (r *redactor) Error(err error) error {
	if err == nil {
		return nil
	}
	if msg := r.String(err.Error()); msg != err.Error() {
		return &redactedError{msg: msg, err: err}
	}
	return err
}

type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

// value returns v with every string in it redacted.
func (r *redactor) value(v slog.Value) slog.Value {
	v = v.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return slog.StringValue(r.String(v.String()))
	case slog.KindGroup:
		attrs := v.Group()
		out := make([]slog.Attr, len(attrs))
		for i, a := range attrs {
			out[i] = slog.Attr{Key: a.Key, Value: r.value(a.Value)}
		}
		return slog.GroupValue(out...)
	case slog.KindAny:
		switch x := v.Any().(type) {
		case error:
			return slog.StringValue(r.String(x.Error()))
		case fmt.Stringer:
			return slog.StringValue(r.String(x.String()))
		case []string:
			out := make([]string, len(x))
			for i, s := range x {
				out[i] = r.String(s)
			}
			return slog.AnyValue(out)
		default:
			return slog.StringValue(r.String(fmt.Sprint(x)))
		}
	}
	return v
}

// redactHandler redacts every record before its handler sees it.
type redactHandler struct {
	h slog.Handler
	r *redactor
}

func (h redactHandler) Enabled(ctx context.Context, l slog.Level) bool { return h.h.Enabled(ctx, l) }

func (h redactHandler) Handle(ctx context.Context, rec slog.Record) error {
	out := slog.NewRecord(rec.Time, rec.Level, h.r.String(rec.Message), rec.PC)
	rec.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(slog.Attr{Key: a.Key, Value: h.r.value(a.Value)})
		return true
	})
	return h.h.Handle(ctx, out)
}

func (h redactHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	out := make([]slog.Attr, len(attrs))
	for i, a := range attrs {
		out[i] = slog.Attr{Key: a.Key, Value: h.r.value(a.Value)}
	}
	return redactHandler{h: h.h.WithAttrs(out), r: h.r}
}

func (h redactHandler) WithGroup(name string) slog.Handler {
	return redactHandler{h: h.h.WithGroup(name), r: h.r}
}

// secretValues lists the secret values of the settings: tokens and
// secrets (from flags, the environment, the config file or *_file files),
// and the user names and passwords written into the --repo and --redis
// URLs (a token is often given as the user name).
func (c serveConfig) secretValues() []string {
	out := []string{c.RepoToken, c.WebhookSecret, c.ManagementToken, c.smtpPassword}
	for _, raw := range append([]string{c.Repo}, strings.Split(c.Redis, ",")...) {
		out = append(out, urlCredentials(strings.TrimSpace(raw))...)
	}
	return out
}

// urlCredentials returns the user name and password in a URL, if any.
func urlCredentials(raw string) []string {
	if m := userinfo.FindString(raw); m != "" {
		info := m[strings.Index(m, "://")+3 : len(m)-1]
		user, pass, _ := strings.Cut(info, ":")
		out := []string{info, user, pass}
		for _, s := range []string{user, pass} {
			if u, err := url.PathUnescape(s); err == nil {
				out = append(out, u)
			}
		}
		return out
	}
	return nil
}
