package controller

// The read-only web dashboard: server-rendered pages over the same views
// the management API builds (statusOf, rolloutViews, rolloutDeviceList,
// deviceConfigStates, the store's alerts and events), behind the
// management token.
//
//	GET  /                    fleet overview
//	GET  /ui/rollouts         rollouts, phase by phase
//	GET  /ui/rollouts/:name   one rollout and its admitted devices
//	GET  /ui/devices          declared devices (?from=N pages on)
//	GET  /ui/alerts           alerts (?state=open|closed|error)
//	GET  /ui/history          the event log with the commits behind it
//	GET  /ui/login            the login form; POST logs in
//	POST /ui/logout           logs out
//	GET  /ui/static/…         stylesheet, script, icon (no data)
//
// A page asked for with the header X-Gitfleet-Fragment: 1 answers only its
// live part: the script refreshes it every refreshInterval.

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"maps"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gitfleet/gitfleet/controller/deviceapi"
	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gitfleet/gitfleet/controller/web"
	"github.com/labstack/echo/v5"
	"golang.org/x/time/rate"
)

const (
	// sessionCookie holds a dashboard session. The __Host- prefix makes
	// browsers refuse it unless it is Secure, for Path=/ and without a
	// Domain, so no other host can set it.
	sessionCookie = "__Host-gitfleet-session"
	// sessionLifetime bounds a session: the cookie expires, and a value
	// older than this is refused even if a browser kept it.
	sessionLifetime = 12 * time.Hour
	// sessionSecret names the store's shared secret that keys session
	// MACs, the same on every replica.
	sessionSecret  = "dashboard-session-key"
	fragmentHeader = "X-Gitfleet-Fragment"
	// refreshInterval is how often the script refreshes a page's live part.
	refreshInterval = 2 * time.Second
	maxLoginBody    = 4 << 10
	// Login attempts per source: a burst, then one every loginEvery.
	loginBurst   = 5
	loginEvery   = 2 * time.Second
	maxLimiters  = 10_000
	maxCommits   = 512 // commit descriptions cached
	devicesPage  = 200 // devices per page
	maxCounted   = 5_000
	alertsPage   = 200
	historyPage  = 200
	overviewList = 10
)

// contentSecurityPolicy lets pages load only the controller's own
// stylesheet and script: no inline script or style, no frames, forms
// posting only here.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

type dashboard struct {
	c      *Controller
	pages  map[string]*template.Template
	static http.Handler

	keyMu sync.Mutex
	key   []byte // the session MAC key, read from the store once

	limMu  sync.Mutex
	limits map[string]*rate.Limiter

	comMu   sync.Mutex
	commits map[string]commitView
}

// registerDashboard mounts the read-only web dashboard.
func (c *Controller) registerDashboard(e *echo.Echo) {
	d := newDashboard(c)
	e.GET("/", d.page("overview", d.overview))
	e.GET("/ui", func(ctx *echo.Context) error { return ctx.Redirect(http.StatusSeeOther, "/") })
	e.GET("/ui/rollouts", d.page("rollouts", d.rollouts))
	e.GET("/ui/rollouts/:name", d.page("rollout", d.rollout))
	e.GET("/ui/devices", d.page("devices", d.devices))
	e.GET("/ui/alerts", d.page("alerts", d.alerts))
	e.GET("/ui/history", d.page("history", d.history))
	e.GET("/ui/sessions", d.page("sessions", d.sessions))
	e.GET("/ui/login", d.loginForm)
	e.POST("/ui/login", d.login)
	e.POST("/ui/logout", d.logout)
	e.GET("/ui/static/*", d.staticFile)
}

func newDashboard(c *Controller) *dashboard {
	funcs := template.FuncMap{
		"ago":   func(t time.Time) string { return since(t, time.Now()) },
		"agop":  func(t *time.Time) string { return sincePtr(t, time.Now()) },
		"stamp": stamp,
		"short": shortSHA,
	}
	base := template.Must(template.New("layout.html").Funcs(funcs).ParseFS(web.FS, "templates/layout.html", "templates/partials.html"))
	pages := map[string]*template.Template{}
	for _, name := range []string{"overview", "rollouts", "rollout", "devices", "alerts", "history", "sessions", "login", "message"} {
		pages[name] = template.Must(template.Must(base.Clone()).ParseFS(web.FS, "templates/"+name+".html"))
	}
	static, err := fs.Sub(web.FS, "static")
	if err != nil {
		panic(err) // embedded: cannot fail
	}
	return &dashboard{c: c, pages: pages, static: http.StripPrefix("/ui/static/", http.FileServerFS(static)),
		limits: map[string]*rate.Limiter{}, commits: map[string]commitView{}}
}

// pageData is what every page's template gets.
type pageData struct {
	Title   string
	Nav     string // the navigation entry to mark current
	Now     time.Time
	Session bool // logged in with a cookie: offer to log out
	// Blocked is the refused commit at the branch head, shown on every
	// page: the controller keeps serving the last good commit.
	Blocked  *refusalView
	Interval int // refresh interval in milliseconds; 0: none
	Data     any
}

// pageError is a page that cannot be shown, with its status.
type pageError struct {
	code int
	msg  string
}

func (e *pageError) Error() string { return e.msg }

func securityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", contentSecurityPolicy)
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
}

// page serves one page: it checks that the dashboard is enabled and the
// caller authenticated, builds the page's data with build, and renders the
// whole page or, for the script, its live part.
func (d *dashboard) page(name string, build func(*echo.Context, *pageData) error) echo.HandlerFunc {
	return func(ctx *echo.Context) error {
		h := ctx.Response().Header()
		securityHeaders(h)
		h.Set("Cache-Control", "no-store")
		h.Set("Vary", fragmentHeader+", Cookie, Authorization")
		if d.c.opts.ManagementToken == "" {
			return d.render(ctx, http.StatusNotFound, "message", &pageData{Title: "Dashboard disabled",
				Data: "The dashboard is disabled: start the controller with --management-token (or GITFLEET_MANAGEMENT_TOKEN) to enable it and the management API."})
		}
		fragment := ctx.Request().Header.Get(fragmentHeader) == "1"
		session := d.sessionOK(ctx)
		if !session && !d.c.tokenOK(ctx) {
			if fragment {
				return ctx.NoContent(http.StatusUnauthorized)
			}
			return d.render(ctx, http.StatusUnauthorized, "login", &pageData{Title: "Log in",
				Data: loginData{Next: safeNext(ctx.Request().URL.RequestURI())}})
		}
		rctx := ctx.Request().Context()
		p := &pageData{Nav: name, Now: time.Now(), Session: session, Interval: int(refreshInterval / time.Millisecond)}
		p.Blocked = d.blocked(rctx)
		if err := build(ctx, p); err != nil {
			var pe *pageError
			var he *echo.HTTPError
			switch {
			case errors.As(err, &pe):
				p.Title, p.Data = "Error", pe.msg
				return d.renderPage(ctx, pe.code, "message", p, fragment)
			case errors.As(err, &he):
				p.Title, p.Data = "Error", he.Message
				return d.renderPage(ctx, he.Code, "message", p, fragment)
			default:
				p.Title, p.Data = "Store unavailable", "The store does not answer: "+err.Error()+". The page is shown again once it does."
				return d.renderPage(ctx, http.StatusServiceUnavailable, "message", p, fragment)
			}
		}
		return d.renderPage(ctx, http.StatusOK, name, p, fragment)
	}
}

func (d *dashboard) renderPage(ctx *echo.Context, code int, name string, p *pageData, fragment bool) error {
	if !fragment {
		return d.render(ctx, code, name, p)
	}
	var buf bytes.Buffer
	if err := d.pages[name].ExecuteTemplate(&buf, "live", p); err != nil {
		return fmt.Errorf("render %s: %w", name, err)
	}
	return ctx.HTMLBlob(code, buf.Bytes())
}

func (d *dashboard) render(ctx *echo.Context, code int, name string, p *pageData) error {
	securityHeaders(ctx.Response().Header())
	var buf bytes.Buffer
	if err := d.pages[name].ExecuteTemplate(&buf, "layout", p); err != nil {
		return fmt.Errorf("render %s: %w", name, err)
	}
	return ctx.HTMLBlob(code, buf.Bytes())
}

func (d *dashboard) staticFile(ctx *echo.Context) error {
	h := ctx.Response().Header()
	securityHeaders(h)
	h.Set("Cache-Control", "public, max-age=300")
	d.static.ServeHTTP(ctx.Response(), ctx.Request())
	return nil
}

// --- sessions and login ---

type loginData struct {
	Next    string
	Problem string
}

// sessionKey returns the key of session MACs: a random secret the store
// shares between replicas (a session works on each of them), read once.
func (d *dashboard) sessionKey(ctx context.Context) ([]byte, error) {
	d.keyMu.Lock()
	defer d.keyMu.Unlock()
	if d.key != nil {
		return d.key, nil
	}
	key, err := d.c.opts.Store.SharedSecret(ctx, sessionSecret, func() ([]byte, error) {
		b := make([]byte, 32)
		_, err := rand.Read(b)
		return b, err
	})
	if err != nil {
		return nil, err
	}
	d.key = key
	return key, nil
}

// sessionMAC authenticates a session expiring at exp (Unix seconds) for
// the current management token. The cookie holds exp and this MAC, never
// the token: whoever reads the cookie can use the dashboard until exp (or
// until the token changes) and cannot call the management API nor recover
// the token.
func sessionMAC(key []byte, token string, exp int64) []byte {
	tok := sha256.Sum256([]byte(token))
	m := hmac.New(sha256.New, key)
	fmt.Fprintf(m, "gitfleet dashboard session v1\n%d\n", exp)
	m.Write(tok[:])
	return m.Sum(nil)
}

func (d *dashboard) newSession(ctx context.Context, now time.Time) (string, error) {
	key, err := d.sessionKey(ctx)
	if err != nil {
		return "", err
	}
	exp := now.Add(sessionLifetime).Unix()
	return strconv.FormatInt(exp, 10) + "." + base64.RawURLEncoding.EncodeToString(sessionMAC(key, d.c.opts.ManagementToken, exp)), nil
}

// sessionOK reports whether the request carries a valid, unexpired
// session cookie.
func (d *dashboard) sessionOK(ctx *echo.Context) bool {
	ck, err := ctx.Cookie(sessionCookie)
	if err != nil || d.c.opts.ManagementToken == "" || len(ck.Value) > 128 {
		return false
	}
	expS, macS, ok := strings.Cut(ck.Value, ".")
	if !ok {
		return false
	}
	exp, err := strconv.ParseInt(expS, 10, 64)
	now := time.Now()
	if err != nil || now.Unix() >= exp || time.Unix(exp, 0).After(now.Add(sessionLifetime+time.Minute)) {
		return false
	}
	mac, err := base64.RawURLEncoding.DecodeString(macS)
	if err != nil {
		return false
	}
	key, err := d.sessionKey(ctx.Request().Context())
	if err != nil {
		return false
	}
	return hmac.Equal(mac, sessionMAC(key, d.c.opts.ManagementToken, exp))
}

// sameOrigin refuses a form posted from another site. Browsers say where
// a request comes from in Sec-Fetch-Site; it must be this origin. Without
// it (older browsers, other clients), Origin, when sent, must be this
// host. (Under Referrer-Policy no-referrer, browsers send Origin: null
// with a form's POST, so Origin alone cannot tell.)
func sameOrigin(r *http.Request) bool {
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" {
		return site == "same-origin" || site == "none"
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true // not a browser: the cookie is SameSite=Strict anyway
	}
	u, err := url.Parse(origin)
	return err == nil && u.Scheme == "https" && u.Host == r.Host
}

// safeNext is where to go after logging in: a path of this dashboard
// ("/" or under /ui/), never another site ("//host", "/\host",
// "https://…") nor the login page itself.
func safeNext(s string) string {
	if s == "" || len(s) > 512 || s[0] != '/' || strings.HasPrefix(s, "//") || strings.ContainsAny(s, "\\\x00\r\n\t") {
		return "/"
	}
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil || u.Opaque != "" || path.Clean(u.Path) != u.Path {
		return "/"
	}
	if u.Path != "/" && (!strings.HasPrefix(u.Path, "/ui/") || strings.HasPrefix(u.Path, "/ui/login") ||
		strings.HasPrefix(u.Path, "/ui/logout") || strings.HasPrefix(u.Path, "/ui/static/")) {
		return "/"
	}
	return u.RequestURI()
}

func (d *dashboard) loginForm(ctx *echo.Context) error {
	h := ctx.Response().Header()
	h.Set("Cache-Control", "no-store")
	if d.c.opts.ManagementToken == "" {
		return d.render(ctx, http.StatusNotFound, "message", &pageData{Title: "Dashboard disabled",
			Data: "The dashboard is disabled: start the controller with --management-token (or GITFLEET_MANAGEMENT_TOKEN) to enable it and the management API."})
	}
	next := safeNext(ctx.QueryParam("next"))
	if d.sessionOK(ctx) {
		return ctx.Redirect(http.StatusSeeOther, next)
	}
	return d.render(ctx, http.StatusOK, "login", &pageData{Title: "Log in", Data: loginData{Next: next}})
}

// loginLimiter returns the limiter of failed logins from the request's
// source: a burst of loginBurst, then one every loginEvery.
func (d *dashboard) loginLimiter(r *http.Request) *rate.Limiter {
	key := d.c.opts.Devices.Clients.Key(r)
	d.limMu.Lock()
	defer d.limMu.Unlock()
	l, ok := d.limits[key]
	if !ok {
		if len(d.limits) >= maxLimiters {
			clear(d.limits) // bounded: a flood of sources starts everyone afresh
		}
		l = rate.NewLimiter(rate.Every(loginEvery), loginBurst)
		d.limits[key] = l
	}
	return l
}

func (d *dashboard) login(ctx *echo.Context) error {
	h := ctx.Response().Header()
	h.Set("Cache-Control", "no-store")
	if d.c.opts.ManagementToken == "" {
		return d.render(ctx, http.StatusNotFound, "message", &pageData{Title: "Dashboard disabled",
			Data: "The dashboard is disabled: start the controller with --management-token (or GITFLEET_MANAGEMENT_TOKEN) to enable it and the management API."})
	}
	r := ctx.Request()
	if !sameOrigin(r) {
		return d.render(ctx, http.StatusForbidden, "message", &pageData{Title: "Refused",
			Data: "This login form was posted from another site. Open the dashboard's own login page and log in there."})
	}
	r.Body = http.MaxBytesReader(ctx.Response(), r.Body, maxLoginBody)
	if err := r.ParseForm(); err != nil {
		return d.render(ctx, http.StatusBadRequest, "login", &pageData{Title: "Log in",
			Data: loginData{Next: "/", Problem: "The form could not be read (at most 4 KiB, application/x-www-form-urlencoded). Enter the management token and try again."}})
	}
	next := safeNext(r.PostForm.Get("next"))
	// Failed attempts spend the source's allowance; while it is spent,
	// every attempt is turned away, the right token too.
	lim := d.loginLimiter(r)
	if lim.Tokens() < 1 {
		h.Set("Retry-After", strconv.Itoa(int(loginEvery/time.Second)))
		return d.render(ctx, http.StatusTooManyRequests, "login", &pageData{Title: "Log in",
			Data: loginData{Next: next, Problem: "Too many login attempts from your address: wait a few seconds, then try again."}})
	}
	token := r.PostForm.Get("token")
	if subtle.ConstantTimeCompare([]byte(token), []byte(d.c.opts.ManagementToken)) != 1 {
		lim.Allow()
		return d.render(ctx, http.StatusUnauthorized, "login", &pageData{Title: "Log in",
			Data: loginData{Next: next, Problem: "That is not the management token. Enter the value the controller was started with (--management-token or GITFLEET_MANAGEMENT_TOKEN)."}})
	}
	val, err := d.newSession(r.Context(), time.Now())
	if err != nil {
		return d.render(ctx, http.StatusServiceUnavailable, "login", &pageData{Title: "Log in",
			Data: loginData{Next: next, Problem: "The store does not answer, so no session can be started: " + err.Error() + ". Try again shortly."}})
	}
	ctx.SetCookie(&http.Cookie{Name: sessionCookie, Value: val, Path: "/", MaxAge: int(sessionLifetime / time.Second),
		HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode})
	return ctx.Redirect(http.StatusSeeOther, next)
}

func (d *dashboard) logout(ctx *echo.Context) error {
	ctx.Response().Header().Set("Cache-Control", "no-store")
	if !sameOrigin(ctx.Request()) {
		return d.render(ctx, http.StatusForbidden, "message", &pageData{Title: "Refused",
			Data: "This logout form was posted from another site; nothing was changed."})
	}
	ctx.SetCookie(&http.Cookie{Name: sessionCookie, Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode})
	return ctx.Redirect(http.StatusSeeOther, "/ui/login")
}

// --- views ---

// commitView describes one commit: what the store recorded, completed
// from the local clone when the store has only the SHA.
type commitView struct {
	SHA       string
	Author    string
	Message   string
	Committed time.Time
}

// commit describes sha, from the local clone (cached); only the SHA when
// the clone does not have it.
func (d *dashboard) commit(ctx context.Context, sha string) commitView {
	if sha == "" {
		return commitView{}
	}
	d.comMu.Lock()
	v, ok := d.commits[sha]
	d.comMu.Unlock()
	if ok {
		return v
	}
	v = commitView{SHA: sha}
	rev, err := d.c.opts.Source.Revision(ctx, sha)
	if err != nil {
		return v // not cached: the clone may have it later
	}
	v.Author, v.Message, v.Committed = rev.Author.String(), firstLineOf(rev.Message), rev.Time
	d.comMu.Lock()
	if len(d.commits) >= maxCommits {
		clear(d.commits)
	}
	d.commits[sha] = v
	d.comMu.Unlock()
	return v
}

func recordView(r *store.CommitRecord) *commitView {
	if r == nil {
		return nil
	}
	return &commitView{SHA: r.SHA, Author: r.Author, Message: r.Message, Committed: r.Committed}
}

func firstLineOf(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}

// refusalView is a refused commit and why.
type refusalView struct {
	Commit  commitView
	Time    time.Time
	Errors  []string
	Current bool // it is the branch head: the controller serves an older commit
}

// refusal returns the last refused commit, or nil.
func (d *dashboard) refusal(ctx context.Context) *refusalView {
	ref, err := d.c.opts.Store.LastRefused(ctx)
	if err != nil {
		return nil
	}
	v := &refusalView{Commit: d.commit(ctx, ref.SHA), Time: ref.Time, Errors: ref.Errors}
	if v.Commit.Author == "" {
		v.Commit.Author = ref.Author
	}
	head := d.c.opts.Source.Status().SHA
	snap := d.c.rec.Live()
	v.Current = head == ref.SHA && (snap == nil || snap.Commit.SHA != ref.SHA)
	return v
}

// blocked is the refused commit at the branch head, or nil.
func (d *dashboard) blocked(ctx context.Context) *refusalView {
	if v := d.refusal(ctx); v != nil && v.Current {
		return v
	}
	return nil
}

// segment is one coloured part of a progress bar, on a 0…1000 scale.
type segment struct {
	Class string
	X, W  int
	Count int64
}

// progressBar draws admitted devices against a phase's limit: succeeded,
// failed, timed out and in progress, the rest of the limit empty.
type progressBar struct {
	Limit, Admitted, Succeeded, Failed, TimedOut, InProgress int64
	Segments                                                 []segment
	Label                                                    string
}

func newBar(limit, admitted, succeeded, failed, timedOut int64) progressBar {
	b := progressBar{Limit: limit, Admitted: admitted, Succeeded: succeeded, Failed: failed, TimedOut: timedOut,
		InProgress: max(0, admitted-succeeded-failed-timedOut)}
	total := max(limit, admitted, 1)
	x := 0
	for _, s := range []segment{{Class: "ok", Count: succeeded}, {Class: "failed", Count: failed},
		{Class: "timedout", Count: timedOut}, {Class: "progress", Count: b.InProgress}} {
		if s.Count <= 0 {
			continue
		}
		s.X, s.W = x, int(s.Count*1000/total)
		if x+s.W > 1000 {
			s.W = 1000 - x
		}
		x += s.W
		b.Segments = append(b.Segments, s)
	}
	of := "of " + strconv.FormatInt(limit, 10)
	if limit == 0 {
		of = "(no limit known)"
	}
	b.Label = fmt.Sprintf("%d admitted %s: %d succeeded, %d failed, %d timed out, %d in progress",
		admitted, of, succeeded, failed, timedOut, b.InProgress)
	return b
}

// phaseRow is one phase on the rollouts pages.
type phaseRow struct {
	Index     int
	Name      string
	Bar       progressBar
	Completed *time.Time
	Waits     []string
}

// rolloutCard is one rollout on the rollouts pages and the overview.
type rolloutCard struct {
	RolloutView
	State  string // running, completed, aborted, stopped, artifact refused
	Total  progressBar
	Rows   []phaseRow
	Start  commitView
	Change commitView
}

func (d *dashboard) rolloutCard(ctx context.Context, v RolloutView, now time.Time) rolloutCard {
	card := rolloutCard{RolloutView: v, Start: d.commit(ctx, v.StartCommit), Change: d.commit(ctx, v.Commit)}
	var limit, admitted, ok, failed, timedOut int64
	completed := len(v.Phases) > 0
	for i, p := range v.Phases {
		row := phaseRow{Index: i + 1, Name: p.Name, Bar: newBar(p.Limit, p.Admitted, p.Succeeded, p.Failed, p.TimedOut), Completed: p.Completed}
		if row.Name == "" {
			row.Name = "#" + strconv.Itoa(i+1)
		}
		for _, w := range p.Waiting {
			row.Waits = append(row.Waits, w.Words(now))
		}
		completed = completed && p.Completed != nil
		limit += max(p.Limit, p.Admitted)
		admitted += p.Admitted
		ok += p.Succeeded
		failed += p.Failed
		timedOut += p.TimedOut
		card.Rows = append(card.Rows, row)
	}
	card.Total = newBar(limit, admitted, ok, failed, timedOut)
	switch {
	case v.Stopped:
		card.State = "stopped"
	case v.Aborted != "":
		card.State = "aborted"
	case completed:
		card.State = "completed"
	case v.ArtifactRefused != "":
		card.State = "artifact refused"
	default:
		card.State = "running"
	}
	return card
}

func pluralS(n int64) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// since says how long ago (or in how long) t is, in whole units.
func since(t, now time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := now.Sub(t)
	suffix := " ago"
	if d < 0 {
		d, suffix = -d, ""
	}
	var s string
	switch {
	case d < time.Second:
		return "just now"
	case d < time.Minute:
		s = strconv.Itoa(int(d/time.Second)) + "s"
	case d < time.Hour:
		s = strconv.Itoa(int(d/time.Minute)) + "m"
	case d < 48*time.Hour:
		s = strconv.Itoa(int(d/time.Hour)) + "h"
	default:
		s = strconv.Itoa(int(d/(24*time.Hour))) + "d"
	}
	if suffix == "" {
		return "in " + s
	}
	return s + suffix
}

func sincePtr(t *time.Time, now time.Time) string {
	if t == nil {
		return "never"
	}
	return since(*t, now)
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}

func stampPtr(t *time.Time) string {
	if t == nil {
		return "(unknown)"
	}
	return stamp(*t)
}

// --- pages ---

type overviewData struct {
	Status   Status
	Serving  *commitView
	Live     *commitView // the store's live commit, when another than Serving
	Refused  *refusalView
	Devices  deviceCounts
	Alerts   []store.Alert
	Open     string // how many alerts are open ("1000+" past a page)
	Rollouts []rolloutCard
	Config   *configCounts
}

type deviceCounts struct {
	Declared, Accepted, Pending, NeverSeen, KeyOnly, WithAlerts int
	Undeclared                                                  string // devices that authenticated undeclared
	Counted                                                     int    // devices read (at most maxCounted)
}

type configCounts struct{ InSync, Pending, Drifted, Failed int }

func (d *dashboard) overview(ctx *echo.Context, p *pageData) error {
	rctx := ctx.Request().Context()
	p.Title = "Overview"
	st := d.c.statusOf(rctx)
	o := overviewData{Status: st, Serving: recordView(st.Serving), Refused: d.refusal(rctx)}
	if st.Live != nil && (st.Serving == nil || st.Live.SHA != st.Serving.SHA) {
		o.Live = recordView(st.Live)
	}
	open, err := d.c.opts.Store.ListAlerts(rctx, store.AlertFilter{State: store.AlertOpen, Limit: store.MaxPage})
	if err != nil {
		return err
	}
	o.Open = countText(len(open), store.MaxPage)
	o.Alerts = open[:min(len(open), overviewList)]
	alerting := map[string]bool{}
	for _, a := range open {
		alerting[a.Device] = true
	}
	views, err := d.c.rolloutViews(rctx, p.Now)
	if err != nil {
		return err
	}
	for _, v := range views {
		if !v.Stopped {
			o.Rollouts = append(o.Rollouts, d.rolloutCard(rctx, v, p.Now))
		}
	}
	pending, err := d.c.opts.Store.PendingDevices(rctx, store.MaxPage)
	if err != nil {
		return err
	}
	o.Devices.Undeclared = countText(len(pending), store.MaxPage)
	if snap := d.c.rec.Live(); snap != nil && snap.Fleet != nil {
		devs := snap.Fleet.Devices
		o.Devices.Declared = len(devs)
		for i := range devs[:min(len(devs), maxCounted)] {
			dev := &devs[i]
			o.Devices.Counted++
			if alerting[dev.Name] {
				o.Devices.WithAlerts++
			}
			rec, found, err := d.deviceRecord(rctx, dev.Spec.Identity)
			switch {
			case err != nil:
				return err
			case len(dev.Spec.Identity) == 0:
				o.Devices.KeyOnly++
			case !found:
				o.Devices.NeverSeen++
			case rec.Status == store.DeviceAccepted:
				o.Devices.Accepted++
			default:
				o.Devices.Pending++
			}
		}
		if snap.Config.Len() > 0 {
			states, err := d.c.deviceConfigStates(rctx, snap)
			if err != nil {
				return err
			}
			cc := &configCounts{}
			for _, s := range states {
				switch s.State {
				case ConfigInSync:
					cc.InSync++
				case ConfigPending:
					cc.Pending++
				case ConfigDrifted:
					cc.Drifted++
				case ConfigFailed:
					cc.Failed++
				}
			}
			o.Config = cc
		}
	}
	p.Data = o
	return nil
}

func countText(n, page int) string {
	if n >= page {
		return strconv.Itoa(n) + "+"
	}
	return strconv.Itoa(n)
}

// deviceRecord reads the store's record of the device a manifest declares
// by identity; found is false when it never authenticated (or is declared
// by its key alone).
func (d *dashboard) deviceRecord(ctx context.Context, identity map[string]string) (store.Device, bool, error) {
	if len(identity) == 0 {
		return store.Device{}, false, nil
	}
	rec, err := d.c.opts.Store.Device(ctx, deviceapi.DeviceID(deviceapi.Attributes(identity)))
	if errors.Is(err, store.ErrNotFound) {
		return store.Device{}, false, nil
	}
	return rec, err == nil, err
}

type rolloutsData struct{ Rollouts []rolloutCard }

func (d *dashboard) rollouts(ctx *echo.Context, p *pageData) error {
	rctx := ctx.Request().Context()
	p.Title = "Rollouts"
	views, err := d.c.rolloutViews(rctx, p.Now)
	if err != nil {
		return err
	}
	var data rolloutsData
	for _, v := range views {
		data.Rollouts = append(data.Rollouts, d.rolloutCard(rctx, v, p.Now))
	}
	// Running first, then by name; stopped last.
	slices.SortStableFunc(data.Rollouts, func(a, b rolloutCard) int {
		if a.Stopped != b.Stopped {
			if a.Stopped {
				return 1
			}
			return -1
		}
		return strings.Compare(a.Name, b.Name)
	})
	p.Data = data
	return nil
}

type rolloutData struct {
	Card    rolloutCard
	Devices []RolloutDevice
	Total   int
	From    int
	Next    int // the next page's from; 0 when none
	Prev    int // the previous page's from; -1 when none
}

func (d *dashboard) rollout(ctx *echo.Context, p *pageData) error {
	rctx := ctx.Request().Context()
	name := ctx.Param("name")
	from, err := fromParam(ctx)
	if err != nil {
		return err
	}
	p.Title = "Rollout " + name
	p.Nav = "rollouts"
	views, err := d.c.rolloutViews(rctx, p.Now)
	if err != nil {
		return err
	}
	i := slices.IndexFunc(views, func(v RolloutView) bool { return v.Name == name })
	if i < 0 {
		return &pageError{http.StatusNotFound, "There is no rollout " + strconv.Quote(name) + ". The rollouts page lists those the controller knows."}
	}
	data := rolloutData{Card: d.rolloutCard(rctx, views[i], p.Now), From: from, Prev: -1}
	if !views[i].Stopped && views[i].Generation > 0 {
		_, devs, total, err := d.c.rolloutDeviceList(rctx, name, from, devicesPage)
		if err != nil {
			return err
		}
		data.Devices, data.Total = devs, total
		if from+len(devs) < total {
			data.Next = from + len(devs)
		}
		if from > 0 {
			data.Prev = max(0, from-devicesPage)
		}
	}
	p.Data = data
	return nil
}

func fromParam(ctx *echo.Context) (int, error) {
	s := ctx.QueryParam("from")
	if s == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, &pageError{http.StatusBadRequest, "from=" + strconv.Quote(s) + " is not a row number ≥ 0; remove it to start at the first row."}
	}
	return n, nil
}

type keyValue struct{ Key, Value string }

type deviceRow struct {
	Name, ID, DeviceType, Source string
	Status                       string // accepted, pending, never seen, key only
	FirstSeen, LastSeen          time.Time
	Artifact                     string
	Inventory                    []keyValue
	Alerts                       []store.Alert
	Config                       *DeviceConfigState
}

type devicesData struct {
	Commit     string
	Rows       []deviceRow
	Total      int
	From, Next int
	Prev       int
	Pending    []store.Device
	Configured bool
}

const maxInventoryShown = 64

func (d *dashboard) devices(ctx *echo.Context, p *pageData) error {
	rctx := ctx.Request().Context()
	p.Title = "Devices"
	from, err := fromParam(ctx)
	if err != nil {
		return err
	}
	data := devicesData{From: from, Prev: -1}
	pending, err := d.c.opts.Store.PendingDevices(rctx, 50)
	if err != nil {
		return err
	}
	data.Pending = pending
	snap := d.c.rec.Live()
	if snap == nil || snap.Fleet == nil {
		p.Data = data
		return nil
	}
	data.Commit = snap.Commit.SHA
	devs := snap.Fleet.Devices
	data.Total = len(devs)
	open, err := d.c.opts.Store.ListAlerts(rctx, store.AlertFilter{State: store.AlertOpen, Limit: store.MaxPage})
	if err != nil {
		return err
	}
	alerts := map[string][]store.Alert{}
	for _, a := range open {
		alerts[a.Device] = append(alerts[a.Device], a)
	}
	configs := map[string]*DeviceConfigState{}
	if snap.Config.Len() > 0 {
		data.Configured = true
		states, err := d.c.deviceConfigStates(rctx, snap)
		if err != nil {
			return err
		}
		for _, s := range states {
			configs[s.Device] = &s.DeviceConfigState
		}
	}
	end := min(len(devs), from+devicesPage)
	for i := min(from, len(devs)); i < end; i++ {
		dev := &devs[i]
		row := deviceRow{Name: dev.Name, DeviceType: dev.Spec.DeviceType, Source: dev.Source.File + ":" + strconv.Itoa(dev.Source.Line),
			Alerts: alerts[dev.Name], Config: configs[dev.Name]}
		rec, found, err := d.deviceRecord(rctx, dev.Spec.Identity)
		if err != nil {
			return err
		}
		switch {
		case len(dev.Spec.Identity) == 0:
			row.Status = "key only"
		case !found:
			row.Status = "never seen"
			row.ID = deviceapi.DeviceID(deviceapi.Attributes(dev.Spec.Identity))
		default:
			row.Status, row.ID, row.FirstSeen, row.LastSeen = string(rec.Status), rec.ID, rec.FirstSeen, rec.LastSeen
			inv := deviceapi.InventoryAttributes(rec.Inventory)
			row.Artifact = inv["artifact_name"]
			for _, k := range slices.Sorted(maps.Keys(inv))[:min(len(inv), maxInventoryShown)] {
				row.Inventory = append(row.Inventory, keyValue{k, inv[k]})
			}
		}
		data.Rows = append(data.Rows, row)
	}
	if end < len(devs) {
		data.Next = end
	}
	if from > 0 {
		data.Prev = max(0, from-devicesPage)
	}
	p.Data = data
	return nil
}

type alertsData struct {
	State  string
	Alerts []store.Alert
	More   bool
}

func (d *dashboard) alerts(ctx *echo.Context, p *pageData) error {
	p.Title = "Alerts"
	state := ctx.QueryParam("state")
	switch state {
	case "", store.AlertOpen, store.AlertClosed, store.AlertError:
	default:
		return &pageError{http.StatusBadRequest, "state=" + strconv.Quote(state) + " is not one of open, closed, error; remove it to list every alert."}
	}
	as, err := d.c.opts.Store.ListAlerts(ctx.Request().Context(), store.AlertFilter{State: state, Limit: alertsPage})
	if err != nil {
		return err
	}
	p.Data = alertsData{State: state, Alerts: as, More: len(as) == alertsPage}
	return nil
}

type eventRow struct {
	store.Event
	Lines  []string // the message, line by line
	Commit commitView
}

type historyData struct {
	Events  []eventRow
	Refused *refusalView
}

func (d *dashboard) history(ctx *echo.Context, p *pageData) error {
	rctx := ctx.Request().Context()
	p.Title = "History"
	evs, err := d.c.opts.Store.RecentEvents(rctx, historyPage)
	if err != nil {
		return err
	}
	data := historyData{Refused: d.refusal(rctx)}
	slices.Reverse(evs) // newest first
	for _, e := range evs {
		row := eventRow{Event: e, Lines: strings.Split(strings.TrimRight(e.Message, "\n"), "\n"), Commit: d.commit(rctx, e.Commit)}
		if row.Commit.Author == "" {
			row.Commit.Author = e.Author
		}
		data.Events = append(data.Events, row)
	}
	p.Data = data
	return nil
}

// sessionsPage bounds the sessions the dashboard lists.
const sessionsPage = 200

type sessionRow struct {
	SessionView
	Open  bool
	Input string // the recorded input, quoted (control characters escaped)
}

type sessionsData struct {
	Open             bool
	Operator, Device string
	Sessions         []sessionRow
	More             bool
}

// sessions lists the remote sessions, newest first (?open=true,
// ?operator=, ?device=).
func (d *dashboard) sessions(ctx *echo.Context, p *pageData) error {
	p.Title = "Sessions"
	f, err := d.c.sessionFilter(ctx)
	if err != nil {
		return err
	}
	data := sessionsData{Open: f.OpenOnly, Operator: f.Operator, Device: f.Device}
	list, err := d.c.sessionsOf(ctx.Request().Context(), f, sessionsPage)
	if err != nil {
		return err
	}
	now := time.Now()
	for _, s := range list {
		row := sessionRow{SessionView: s, Open: s.Open(now)}
		if s.RecordInput {
			row.Input = strconv.Quote(s.Input)
		}
		data.Sessions = append(data.Sessions, row)
	}
	data.More = len(list) == sessionsPage
	p.Data = data
	return nil
}
