package receive

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"
)

// Handler receives webhooks. It is safe for concurrent use. Its ServeHTTP
// detects the provider from the headers; [Handler.For] returns a handler
// pinned to one provider.
type Handler struct {
	opts    Options
	limiter *limiter
	repos   repoMatcher
}

// New returns a Handler for opts, or an error when opts is unusable: no
// Trigger, no Ref, an invalid Ref, or no secret at all without
// AllowUnsigned.
func New(opts Options) (*Handler, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Handler{
		opts:    o,
		limiter: newLimiter(o.PerSource, o.Global, o.MaxSources),
		repos:   newRepoMatcher(o.Repositories),
	}, nil
}

// Route is one mount point: a path and what to serve there.
type Route struct {
	Pattern  string   // e.g. "/hooks" or "/hooks/github"
	Provider Provider // "" for the detecting route
	Handler  http.Handler
}

// Routes lists the paths to mount under prefix ("/hooks"): prefix itself,
// detecting the provider from the headers, and prefix/<provider> for each
// provider. Mount them for every method; the handler answers 405 itself.
func (h *Handler) Routes(prefix string) []Route {
	prefix = strings.TrimRight(prefix, "/")
	routes := []Route{{Pattern: prefix, Handler: h}}
	if prefix == "" {
		routes[0].Pattern = "/"
	}
	for _, p := range detectOrder {
		routes = append(routes, Route{Pattern: prefix + "/" + string(p), Provider: p, Handler: h.For(p)})
	}
	return routes
}

// For returns a handler that treats every request as p's, without looking
// at other providers' headers. It panics if p is not a known provider.
func (h *Handler) For(p Provider) http.Handler {
	pr, ok := providers[p]
	if !ok {
		panic("receive: unknown provider " + strconv.Quote(string(p)))
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h.serve(w, r, pr) })
}

// ServeHTTP detects the provider from the request's headers.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.serve(w, r, nil) }

// result is what became of a request: the response and the log line.
type result struct {
	code       int
	outcome    Outcome
	reason     string
	provider   Provider
	delivery   string
	ref        string
	retryAfter int
	level      slog.Level
}

func (h *Handler) serve(w http.ResponseWriter, r *http.Request, pinned *provider) {
	res := h.handle(r, pinned)
	h.opts.Observe(res.provider, res.outcome)
	attrs := []slog.Attr{
		slog.String("provider", string(res.provider)),
		slog.String("outcome", string(res.outcome)),
		slog.Int("status", res.code),
	}
	if res.delivery != "" {
		attrs = append(attrs, slog.String("delivery", limitString(res.delivery, 128)))
	}
	if res.ref != "" {
		attrs = append(attrs, slog.String("ref", limitString(res.ref, 256)))
	}
	if res.reason != "" {
		attrs = append(attrs, slog.String("reason", res.reason))
	}
	attrs = append(attrs, slog.String("source", limitString(h.opts.ClientIP(r), 64)))
	h.opts.Logger.LogAttrs(r.Context(), res.level, "webhook", attrs...)

	if res.code == http.StatusMethodNotAllowed {
		w.Header().Set("Allow", http.MethodPost)
	}
	if res.retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(res.retryAfter))
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(res.code)
	body, _ := json.Marshal(struct {
		Status Outcome `json:"status"`
		Reason string  `json:"reason,omitempty"`
	}{res.outcome, res.reason})
	w.Write(append(body, '\n'))
}

// handle runs the checks in order, cheapest and least trusting first, and
// stops at the first that decides the outcome: the headers, the body's
// size, the signature (an HMAC over at most MaxBody bytes), and only then
// the global rate limit, the JSON and the store. Nothing from the body is
// looked at before its signature has been checked.
//
// Rate limits follow verification: a request refused before its signature
// checked out (forged, malformed, too large) spends its sender's budget,
// and once that is spent such requests get 429; a verified delivery spends
// only the global budget. So forgeries, even from the address the real Git
// host uses (a proxy in front of the controller, a shared NAT), never lock
// the real deliveries out.
func (h *Handler) handle(r *http.Request, pinned *provider) result {
	res := result{level: slog.LevelInfo}
	done := func(code int, o Outcome, reason string) result {
		res.code, res.outcome, res.reason = code, o, reason
		return res
	}

	// refuse answers a request that did not prove its sender, charging
	// the sender's budget; a sender that spent it gets 429.
	refuse := func(code int, o Outcome, reason string) result {
		if ok, wait := h.limiter.allowSource(sourceKey(h.opts.ClientIP(r)), h.opts.Now()); !ok {
			res.level = slog.LevelDebug
			res.retryAfter = retryAfter(wait)
			return done(http.StatusTooManyRequests, RateLimited, "too many refused requests from this address")
		}
		return done(code, o, reason)
	}

	if r.Method != http.MethodPost {
		return refuse(http.StatusMethodNotAllowed, MethodNotAllowed, "use POST")
	}

	p := pinned
	if p == nil {
		if p = detect(r.Header); p == nil {
			return refuse(http.StatusBadRequest, UnknownSender, "no GitHub, GitLab, Gitea, Forgejo, Bitbucket or X-Gitfleet headers")
		}
	}
	res.provider = p.name
	res.delivery = p.deliveryID(r.Header)
	if res.delivery != "" && !validDelivery(res.delivery) {
		res.delivery = ""
		return refuse(http.StatusBadRequest, Malformed, "malformed delivery ID")
	}

	secret, signed := h.secret(p.name)
	if !signed && !h.opts.AllowUnsigned {
		return refuse(http.StatusForbidden, Disabled, "no secret is configured for "+string(p.name)+" webhooks")
	}

	if p.name != Generic && isForm(r.Header.Get("Content-Type")) {
		return refuse(http.StatusUnsupportedMediaType, UnsupportedMedia, "form-encoded payloads are not supported; configure the webhook to send application/json")
	}

	if r.ContentLength > h.opts.MaxBody {
		return refuse(http.StatusRequestEntityTooLarge, TooLarge, "body larger than "+strconv.FormatInt(h.opts.MaxBody, 10)+" bytes")
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, h.opts.MaxBody+1))
	if err != nil {
		return refuse(http.StatusBadRequest, Malformed, "reading body failed")
	}
	if int64(len(body)) > h.opts.MaxBody {
		return refuse(http.StatusRequestEntityTooLarge, TooLarge, "body larger than "+strconv.FormatInt(h.opts.MaxBody, 10)+" bytes")
	}

	if signed {
		clock := skewClock{now: h.opts.Now(), maxSkew: h.opts.MaxSkew}
		if err := p.verify(r.Header, body, []byte(secret), clock); err != nil {
			res.level = slog.LevelWarn
			return refuse(http.StatusUnauthorized, Unauthorized, err.Error())
		}
	}
	// The global budget counts verified deliveries only, so forged ones
	// cannot lock the real Git host out; everything after this (JSON,
	// the store) is done for verified deliveries only.
	if ok, wait := h.limiter.allowGlobal(h.opts.Now()); !ok {
		res.level = slog.LevelWarn
		res.retryAfter = retryAfter(wait)
		return done(http.StatusTooManyRequests, RateLimited, "too many requests")
	}

	name := p.event(r.Header)
	ev, err := p.decode(name, body)
	if err != nil {
		if !errors.Is(err, errMalformed) {
			err = errMalformed
		}
		return done(http.StatusBadRequest, Malformed, err.Error())
	}
	switch ev.Kind {
	case kindPing:
		return done(http.StatusOK, Ping, "")
	case kindOther:
		return done(http.StatusAccepted, Ignored, "event "+strconv.Quote(limitString(ev.Name, 64))+" is not a push")
	}

	if !(p.name == Generic && ev.Repo.FullName == "") && !h.repos.match(ev.Repo) {
		if len(ev.Updates) == 1 {
			res.ref = ev.Updates[0].Ref
		}
		return done(http.StatusAccepted, Ignored, "repository "+strconv.Quote(limitString(ev.Repo.FullName, 128))+" is not tracked")
	}

	var up *refUpdate
	for i := range ev.Updates {
		if ev.Updates[i].Ref == h.opts.Ref {
			up = &ev.Updates[i]
			break
		}
	}
	if up == nil {
		if len(ev.Updates) == 1 {
			res.ref = ev.Updates[0].Ref
		}
		return done(http.StatusAccepted, Ignored, "ref is not "+h.opts.Ref)
	}
	res.ref = up.Ref

	if res.delivery != "" {
		first, err := h.opts.Deduper.FirstDelivery(r.Context(), string(p.name)+":"+res.delivery, h.opts.DedupeTTL)
		switch {
		case err != nil:
			// Fail open: a second fetch of the same commit is harmless,
			// a missed one delays the update until the next poll.
			h.opts.Logger.LogAttrs(r.Context(), slog.LevelWarn, "webhook dedupe unavailable; triggering anyway",
				slog.String("provider", string(p.name)), slog.String("delivery", res.delivery), slog.Any("err", err))
		case !first:
			return done(http.StatusOK, Duplicate, "delivery already received")
		}
	}

	h.opts.Trigger(r.Context(), Push{
		Provider:   p.name,
		DeliveryID: res.delivery,
		Repository: ev.Repo.FullName,
		Ref:        up.Ref,
		After:      up.After,
		Pusher:     ev.Pusher,
		Deleted:    up.Deleted,
	})
	return done(http.StatusAccepted, Triggered, "")
}

// secret returns p's secret and whether it has one.
func (h *Handler) secret(p Provider) (Secret, bool) {
	if s, ok := h.opts.Secrets[p]; ok {
		return s, true
	}
	return h.opts.Secret, h.opts.Secret != ""
}

// isForm reports whether a Content-Type is a form encoding.
func isForm(ct string) bool {
	if ct == "" {
		return false
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return false
	}
	return mt == "application/x-www-form-urlencoded" || mt == "multipart/form-data"
}

// validDelivery accepts printable ASCII without spaces, up to 128 bytes:
// every host's IDs are UUIDs or similar.
func validDelivery(id string) bool {
	if len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		if id[i] <= ' ' || id[i] > '~' {
			return false
		}
	}
	return true
}
