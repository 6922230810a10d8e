package controller_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/controller"
	"github.com/gitfleet/gitfleet/controller/deviceapi"
	"github.com/gitfleet/gitfleet/controller/store"
)

// dashboardPages are every page of the dashboard that shows fleet data.
var dashboardPages = []string{"/", "/ui/rollouts", "/ui/rollouts/hello-2", "/ui/devices", "/ui/alerts", "/ui/history"}

// dashGet sends a GET with the given headers (no redirects followed) and
// returns the response and its body.
func (tc *testController) dashDo(t *testing.T, method, path string, form url.Values, header map[string]string) (*http.Response, string) {
	t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, tc.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	cl := tc.client()
	cl.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := cl.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	return resp, string(b)
}

func (tc *testController) bearer() map[string]string {
	return map[string]string{"Authorization": "Bearer " + tc.Token}
}

// login posts the token to the login form and returns the session cookie.
func (tc *testController) login(t *testing.T, next string) *http.Cookie {
	t.Helper()
	resp, body := tc.dashDo(t, http.MethodPost, "/ui/login", url.Values{"token": {tc.Token}, "next": {next}},
		map[string]string{"Origin": tc.URL})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("login: %s\n%s", resp.Status, body)
	}
	for _, c := range resp.Cookies() {
		if c.Name == "__Host-gitfleet-session" {
			return c
		}
	}
	t.Fatalf("login: no session cookie in %v", resp.Header["Set-Cookie"])
	return nil
}

// inlineCode finds what a Content-Security-Policy without 'unsafe-inline'
// would block: inline scripts, style attributes and elements, event
// handler attributes.
var inlineCode = regexp.MustCompile(`(?i)<script(?:\s[^>]*)?>\s*[^<\s]|<style|<[a-z][^>]*\s(?:style|on[a-z]+)=`)

func checkSecurityHeaders(t *testing.T, what string, h http.Header) {
	t.Helper()
	csp := h.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'none'", "script-src 'self'", "frame-ancestors 'none'", "form-action 'self'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("%s: Content-Security-Policy %q lacks %q", what, csp, want)
		}
	}
	if strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "unsafe-eval") {
		t.Errorf("%s: Content-Security-Policy %q allows inline code", what, csp)
	}
	if got := h.Get("X-Frame-Options"); got != "DENY" {
		t.Errorf("%s: X-Frame-Options %q, want DENY", what, got)
	}
	if got := h.Get("Referrer-Policy"); got != "no-referrer" {
		t.Errorf("%s: Referrer-Policy %q, want no-referrer", what, got)
	}
	if got := h.Get("X-Content-Type-Options"); got != "nosniff" {
		t.Errorf("%s: X-Content-Type-Options %q, want nosniff", what, got)
	}
}

// Without a management token the dashboard is off, like the API: 404 and
// a page that says how to turn it on.
func TestDashboardDisabled(t *testing.T) {
	tc := startController(t, func(o *controller.Options, _ *controller.ServerOptions) { o.ManagementToken = "" })
	for _, p := range append([]string{"/ui/login"}, dashboardPages...) {
		resp, body := tc.dashDo(t, http.MethodGet, p, nil, nil)
		if resp.StatusCode != http.StatusNotFound || !strings.Contains(body, "--management-token") {
			t.Errorf("GET %s: %s, want 404 naming --management-token:\n%.400s", p, resp.Status, body)
		}
		if sha := tc.Live().Commit.SHA; strings.Contains(body, sha[:12]) {
			t.Errorf("GET %s with the dashboard disabled shows the served commit", p)
		}
	}
	resp, _ := tc.dashDo(t, http.MethodPost, "/ui/login", url.Values{"token": {""}}, map[string]string{"Origin": tc.URL})
	if resp.StatusCode != http.StatusNotFound || len(resp.Cookies()) != 0 {
		t.Errorf("POST /ui/login with the dashboard disabled: %s, cookies %v; want 404 and none", resp.Status, resp.Cookies())
	}
}

// The login flow: the form, a wrong token, the right one (a session
// cookie that is not the token), pages with the cookie or a bearer
// token, a tampered cookie, logout.
func TestDashboardLogin(t *testing.T) {
	tc := startController(t, nil)
	sha := tc.Live().Commit.SHA

	for _, p := range dashboardPages {
		resp, body := tc.dashDo(t, http.MethodGet, p, nil, nil)
		if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, `name="token"`) {
			t.Errorf("GET %s without a session: %s, want 401 and the login form", p, resp.Status)
		}
		if strings.Contains(body, sha[:12]) || strings.Contains(body, "hello-2") && p != "/ui/rollouts/hello-2" {
			t.Errorf("GET %s without a session shows fleet data:\n%s", p, body)
		}
		checkSecurityHeaders(t, "GET "+p+" (login)", resp.Header)
		// The script's fragment request gets a bare 401.
		resp, body = tc.dashDo(t, http.MethodGet, p, nil, map[string]string{"X-Gitfleet-Fragment": "1"})
		if resp.StatusCode != http.StatusUnauthorized || body != "" {
			t.Errorf("fragment GET %s without a session: %s %q, want an empty 401", p, resp.Status, body)
		}
	}

	// A wrong token: 401, the form again, no cookie, the token not echoed.
	resp, body := tc.dashDo(t, http.MethodPost, "/ui/login", url.Values{"token": {"guess-<b>1</b>"}, "next": {"/ui/devices"}},
		map[string]string{"Origin": tc.URL})
	if resp.StatusCode != http.StatusUnauthorized || len(resp.Cookies()) != 0 || !strings.Contains(body, "not the management token") {
		t.Errorf("wrong token: %s, cookies %v:\n%s", resp.Status, resp.Cookies(), body)
	}
	if strings.Contains(body, "guess-") {
		t.Errorf("the login page echoes the token tried")
	}

	// The right token: 303 to next, a hardened cookie that does not hold the token.
	// (A browser under Referrer-Policy no-referrer posts the form with Origin: null.)
	resp, body = tc.dashDo(t, http.MethodPost, "/ui/login", url.Values{"token": {tc.Token}, "next": {"/ui/devices?from=0"}},
		map[string]string{"Origin": "null", "Sec-Fetch-Site": "same-origin"})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/devices?from=0" {
		t.Fatalf("login: %s to %q, want 303 to /ui/devices?from=0\n%s", resp.Status, resp.Header.Get("Location"), body)
	}
	var cookie *http.Cookie
	for _, c := range resp.Cookies() {
		cookie = c
	}
	if cookie == nil || cookie.Name != "__Host-gitfleet-session" || !cookie.HttpOnly || !cookie.Secure ||
		cookie.SameSite != http.SameSiteStrictMode || cookie.Path != "/" || cookie.Domain != "" || cookie.MaxAge <= 0 {
		t.Fatalf("session cookie %+v: want __Host-gitfleet-session, HttpOnly, Secure, SameSite=Strict, Path=/, no Domain, a Max-Age", cookie)
	}
	if strings.Contains(cookie.Value, tc.Token) {
		t.Errorf("the session cookie holds the management token: %q", cookie.Value)
	}
	withCookie := map[string]string{"Cookie": cookie.Name + "=" + cookie.Value}
	for _, p := range dashboardPages {
		for _, h := range []map[string]string{withCookie, tc.bearer()} {
			resp, body := tc.dashDo(t, http.MethodGet, p, nil, h)
			if resp.StatusCode != http.StatusOK {
				t.Errorf("GET %s: %s\n%.600s", p, resp.Status, body)
				continue
			}
			checkSecurityHeaders(t, "GET "+p, resp.Header)
			if m := inlineCode.FindString(body); m != "" {
				t.Errorf("GET %s: inline code %q the policy would block", p, m)
			}
			if resp.Header.Get("Cache-Control") != "no-store" {
				t.Errorf("GET %s: Cache-Control %q, want no-store", p, resp.Header.Get("Cache-Control"))
			}
		}
	}
	// The session cookie is no management API credential.
	if resp, _ := tc.dashDo(t, http.MethodGet, "/api/management/v1/status", nil, withCookie); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("management API with the dashboard cookie: %s, want 401", resp.Status)
	}
	// The overview shows the served commit; the fragment only the live part.
	_, body = tc.dashDo(t, http.MethodGet, "/", nil, withCookie)
	if !strings.Contains(body, sha[:12]) || !strings.Contains(body, "Gitfleet Test") {
		t.Errorf("overview does not show the served commit %.12s and its author:\n%s", sha, body)
	}
	withFragment := map[string]string{"Cookie": withCookie["Cookie"], "X-Gitfleet-Fragment": "1"}
	if _, frag := tc.dashDo(t, http.MethodGet, "/", nil, withFragment); strings.Contains(frag, "<html") || !strings.Contains(frag, sha[:12]) {
		t.Errorf("overview fragment: want the live part with %.12s and no document around it:\n%.500s", sha, frag)
	}

	// Tampered cookies: another expiry, another MAC, garbage.
	exp, mac, _ := strings.Cut(cookie.Value, ".")
	for _, v := range []string{"9" + exp + "." + mac, exp + "." + strings.Repeat("A", len(mac)), exp, "", "x.y", tc.Token} {
		resp, body := tc.dashDo(t, http.MethodGet, "/", nil, map[string]string{"Cookie": cookie.Name + "=" + v})
		if resp.StatusCode != http.StatusUnauthorized || strings.Contains(body, sha[:12]) {
			t.Errorf("cookie %q: %s, want 401 and no data", v, resp.Status)
		}
	}

	// Logout clears the cookie.
	resp, _ = tc.dashDo(t, http.MethodPost, "/ui/logout", url.Values{}, map[string]string{"Origin": tc.URL, "Cookie": withCookie["Cookie"]})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/login" {
		t.Errorf("logout: %s to %q", resp.Status, resp.Header.Get("Location"))
	}
	cleared := false
	for _, c := range resp.Cookies() {
		cleared = cleared || c.Name == cookie.Name && c.MaxAge < 0 && c.Value == ""
	}
	if !cleared {
		t.Errorf("logout does not clear the cookie: %v", resp.Header["Set-Cookie"])
	}

	// Static files carry the headers too and hold no data.
	for _, p := range []string{"/ui/static/dashboard.css", "/ui/static/dashboard.js"} {
		resp, body := tc.dashDo(t, http.MethodGet, p, nil, nil)
		if resp.StatusCode != http.StatusOK || body == "" {
			t.Errorf("GET %s: %s", p, resp.Status)
		}
		checkSecurityHeaders(t, "GET "+p, resp.Header)
	}
}

// After logging in, the form goes only to a page of the dashboard: never
// to another site, whatever next says.
func TestDashboardLoginRedirect(t *testing.T) {
	tc := startController(t, nil)
	for _, tt := range []struct{ next, want string }{
		{"/ui/alerts?state=open", "/ui/alerts?state=open"},
		{"/ui/rollouts/hello-2", "/ui/rollouts/hello-2"},
		{"/", "/"},
		{"", "/"},
		{"//evil.example/", "/"},
		{"/\\evil.example/", "/"},
		{"https://evil.example/ui/", "/"},
		{"javascript:alert(1)", "/"},
		{"/ui/login?next=//evil.example", "/"},
		{"/api/management/v1/status", "/"},
		{"/ui/x\r\nSet-Cookie: a=b", "/"},
		{"ui/devices", "/"},
		{"/ui/../api/management/v1/status", "/"},
		{"/ui/./devices", "/"},
	} {
		resp, _ := tc.dashDo(t, http.MethodPost, "/ui/login", url.Values{"token": {tc.Token}, "next": {tt.next}}, map[string]string{"Origin": tc.URL})
		if got := resp.Header.Get("Location"); resp.StatusCode != http.StatusSeeOther || got != tt.want {
			t.Errorf("next=%q: %s to %q, want 303 to %q", tt.next, resp.Status, got, tt.want)
		}
	}
	// The login page's hidden next is the page asked for, made safe.
	_, body := tc.dashDo(t, http.MethodGet, "/ui/login?next=//evil.example", nil, nil)
	if !strings.Contains(body, `name="next" value="/"`) {
		t.Errorf("login page with next=//evil.example does not fall back to /:\n%s", body)
	}
}

// A login form posted from another site is refused (no cookie), and so is
// a logout; login attempts from one source are rate-limited.
func TestAttackDashboardLoginCSRFAndGuessing(t *testing.T) {
	tc := startController(t, nil)
	for _, h := range []map[string]string{
		{"Origin": "https://evil.example"},
		{"Origin": "http://" + tc.Addr}, // not https
		{"Origin": "null"},
		{"Sec-Fetch-Site": "cross-site"},
		{"Sec-Fetch-Site": "same-site"},
		{"Sec-Fetch-Site": "cross-site", "Origin": tc.URL},
	} {
		resp, _ := tc.dashDo(t, http.MethodPost, "/ui/login", url.Values{"token": {tc.Token}}, h)
		if resp.StatusCode != http.StatusForbidden || len(resp.Cookies()) != 0 {
			t.Errorf("login posted with %v: %s, cookies %v; want 403 and none", h, resp.Status, resp.Cookies())
		}
		resp, _ = tc.dashDo(t, http.MethodPost, "/ui/logout", url.Values{}, h)
		if resp.StatusCode != http.StatusForbidden || len(resp.Cookies()) != 0 {
			t.Errorf("logout posted with %v: %s, want 403", h, resp.Status)
		}
	}
	// A body over the bound is refused without a session.
	resp, _ := tc.dashDo(t, http.MethodPost, "/ui/login", url.Values{"token": {strings.Repeat("x", 8<<10)}}, nil)
	if resp.StatusCode != http.StatusBadRequest || len(resp.Cookies()) != 0 {
		t.Errorf("8 KiB login body: %s, want 400", resp.Status)
	}

	// Guessing: attempts are limited per source; once limited, even the
	// right token is turned away until the limit refills.
	limited := false
	for i := 0; i < 50 && !limited; i++ {
		resp, _ := tc.dashDo(t, http.MethodPost, "/ui/login", url.Values{"token": {"guess"}}, nil)
		switch resp.StatusCode {
		case http.StatusTooManyRequests:
			limited = true
			if resp.Header.Get("Retry-After") == "" {
				t.Errorf("429 without Retry-After")
			}
		case http.StatusUnauthorized:
		default:
			t.Fatalf("guess %d: %s", i, resp.Status)
		}
	}
	if !limited {
		t.Fatal("50 wrong tokens in a row from one source were never rate-limited")
	}
	resp, _ = tc.dashDo(t, http.MethodPost, "/ui/login", url.Values{"token": {tc.Token}}, nil)
	if resp.StatusCode != http.StatusTooManyRequests || len(resp.Cookies()) != 0 {
		t.Errorf("the right token while limited: %s, cookies %v; want 429 and none", resp.Status, resp.Cookies())
	}
}

// Device-supplied inventory, alert evidence and commit messages are
// attacker-controlled: every page renders them as text.
func TestAttackDashboardEscapes(t *testing.T) {
	var st store.Store
	tc := startController(t, func(o *controller.Options, _ *controller.ServerOptions) { st = o.Store })
	const (
		payload = `<script>alert("x")</script><img src=x onerror=alert(1)>`
		escaped = `&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;`
	)
	sha := tc.Repo.Commit(map[string]string{"devices/evil.yaml": `apiVersion: gitfleet.io/v1
kind: Device
metadata: {name: evil-1}
spec:
  identity: {mac: "02:00:00:00:ee:01"}
  trustOnFirstUse: true
`}, "declare evil-1 "+payload)
	tc.Trigger()
	await(t, tc, "the evil commit live", func() bool { return tc.Live().Commit.SHA == sha })

	ctx := context.Background()
	identity := deviceapi.Attributes{"mac": "02:00:00:00:ee:01"}
	id := deviceapi.DeviceID(identity)
	if _, err := st.SeeDevice(ctx, store.Device{ID: id, Identity: identity.Canonical(), KeyFingerprint: strings.Repeat("2", 64),
		Status: store.DeviceAccepted, LastSeen: time.Now()}); err != nil {
		t.Fatal(err)
	}
	inv, _ := json.Marshal(map[string]string{"artifact_name": payload, "hostname": payload, payload: "key"})
	if err := st.SetInventory(ctx, id, inv); err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.RecordAlerts(ctx, "evil-1", []store.AlertEvent{{Seq: 1, Check: "evil-check", Key: payload, Kind: store.AlertRaised,
		Severity: "critical", Evidence: payload, Time: time.Now()}}); err != nil {
		t.Fatal(err)
	}

	cookie := tc.login(t, "/")
	withCookie := map[string]string{"Cookie": cookie.Name + "=" + cookie.Value}
	for _, tt := range []struct{ path, shows string }{
		{"/", "alert evidence"},
		{"/ui/devices", "inventory, artifact and alert"},
		{"/ui/alerts", "alert key and evidence"},
		{"/ui/history", "commit message"},
	} {
		for _, h := range []map[string]string{withCookie, {"Cookie": withCookie["Cookie"], "X-Gitfleet-Fragment": "1"}} {
			resp, body := tc.dashDo(t, http.MethodGet, tt.path, nil, h)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("GET %s: %s\n%s", tt.path, resp.Status, body)
			}
			if strings.Contains(body, "<script>alert") || strings.Contains(body, "<img src=x") {
				t.Errorf("GET %s renders the %s unescaped:\n%s", tt.path, tt.shows, body)
			}
			if !strings.Contains(body, escaped) {
				t.Errorf("GET %s does not show the %s as text (%s):\n%s", tt.path, tt.shows, escaped, body)
			}
			if m := inlineCode.FindString(body); m != "" {
				t.Errorf("GET %s: inline code %q", tt.path, m)
			}
		}
	}
	// Nothing of it without a session.
	for _, p := range dashboardPages {
		resp, body := tc.dashDo(t, http.MethodGet, p, nil, nil)
		if resp.StatusCode != http.StatusUnauthorized || strings.Contains(body, "evil") || strings.Contains(body, "alert(") {
			t.Errorf("GET %s without a session: %s, shows device data:\n%s", p, resp.Status, body)
		}
	}
}

// The pages show what the management API shows: the rollout's phases
// and what they wait for, devices with inventory, alerts, configuration
// drift, the events with their commits; bad query parameters are 400
// pages that say what to do.
func TestDashboardPages(t *testing.T) {
	var st store.Store
	tc := startController(t, func(o *controller.Options, _ *controller.ServerOptions) { st = o.Store })
	ctx := context.Background()
	identity := deviceapi.Attributes{"mac": "02:00:00:00:00:02"}
	id := deviceapi.DeviceID(identity)
	if _, err := st.SeeDevice(ctx, store.Device{ID: id, Identity: identity.Canonical(), KeyFingerprint: strings.Repeat("1", 64),
		Status: store.DeviceAccepted, LastSeen: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := st.SetInventory(ctx, id, json.RawMessage(`{"artifact_name":"hello-1","device_type":"gitfleet-sim","kernel":"6.1.0-test"}`)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.RecordAlerts(ctx, "sim-002", []store.AlertEvent{{Seq: 1, Check: "hello-errors", Kind: store.AlertRaised,
		Severity: "error", Evidence: "ERROR hello failed to greet", Time: time.Now()}}); err != nil {
		t.Fatal(err)
	}
	var views struct{ Rollouts []controller.RolloutView }
	if code := tc.getJSON(t, "/api/management/v1/rollouts", &views); code != 200 || len(views.Rollouts) == 0 {
		t.Fatalf("management API rollouts: %d %+v", code, views)
	}
	get := func(path string) string {
		t.Helper()
		resp, body := tc.dashDo(t, http.MethodGet, path, nil, tc.bearer())
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %s\n%s", path, resp.Status, body)
		}
		return body
	}

	rollouts := get("/ui/rollouts")
	for _, r := range views.Rollouts {
		if !strings.Contains(rollouts, `data-rollout="`+r.Name+`"`) {
			t.Errorf("rollouts page lacks %s", r.Name)
		}
		for _, p := range r.Phases {
			if p.Name != "" && !strings.Contains(rollouts, `data-phase="`+p.Name+`"`) {
				t.Errorf("rollouts page lacks phase %s of %s", p.Name, r.Name)
			}
			for _, w := range p.Waiting {
				if w.Reason == "not-polled" && !strings.Contains(rollouts, "not taken yet") {
					t.Errorf("rollouts page does not say phase %s waits for devices to poll", p.Name)
				}
			}
		}
	}
	if !strings.Contains(rollouts, `<svg class="bar"`) {
		t.Errorf("rollouts page has no progress bar")
	}
	if body := get("/ui/rollouts/hello-2"); !strings.Contains(body, "Admitted devices") || !strings.Contains(body, "No device admitted yet") {
		t.Errorf("rollout page:\n%s", body)
	}
	devices := get("/ui/devices")
	for _, want := range []string{`data-device="sim-002"`, "hello-1", "6.1.0-test", "ERROR hello failed to greet", "accepted", "never seen"} {
		if !strings.Contains(devices, want) {
			t.Errorf("devices page lacks %q", want)
		}
	}
	if body := get("/ui/alerts?state=open"); !strings.Contains(body, "ERROR hello failed to greet") {
		t.Errorf("open alerts page lacks the alert")
	}
	if body := get("/ui/alerts?state=closed"); strings.Contains(body, "ERROR hello failed to greet") {
		t.Errorf("closed alerts page shows an open alert")
	}
	overview := get("/")
	for _, want := range []string{`n-open">1<`, `class="n-accepted">1<`, "hello-2"} {
		if !strings.Contains(overview, want) {
			t.Errorf("overview lacks %q", want)
		}
	}
	history := get("/ui/history")
	if !strings.Contains(history, "commit.live") || !strings.Contains(history, shortOf(tc.Live().Commit.SHA)) {
		t.Errorf("history lacks the commit going live:\n%s", history)
	}

	for _, tt := range []struct{ path, says string }{
		{"/ui/alerts?state=bogus", "not one of open, closed, error"},
		{"/ui/devices?from=-1", "is not a row number"},
		{"/ui/rollouts/no-such", "no rollout"},
	} {
		resp, body := tc.dashDo(t, http.MethodGet, tt.path, nil, tc.bearer())
		if resp.StatusCode/100 != 4 || !strings.Contains(strings.ToLower(body), strings.ToLower(tt.says)) {
			t.Errorf("GET %s: %s, want a 4xx page saying %q:\n%.400s", tt.path, resp.Status, tt.says, body)
		}
	}
}

// A refused commit is shown on every page while it is the branch head;
// the overview names its file:line errors and the commit still served.
func TestDashboardRefusedCommit(t *testing.T) {
	tc := startController(t, nil)
	good := tc.Live().Commit.SHA
	bad := tc.Repo.Commit(map[string]string{"rollouts/broken.yaml": "apiVersion: gitfleet.io/v1\nkind: Rollout\nmetadata: {name: broken}\nspec:\n  artifact: 12\n"}, "break the fleet")
	tc.Trigger()
	var refused struct {
		Refused *store.Refusal `json:"refused"`
	}
	await(t, tc, "the broken commit refused", func() bool {
		tc.getJSON(t, "/api/management/v1/refused", &refused)
		return refused.Refused != nil && refused.Refused.SHA == bad
	})
	if tc.Live().Commit.SHA != good {
		t.Fatalf("serving %.12s, want the last good commit %.12s", tc.Live().Commit.SHA, good)
	}
	for _, p := range dashboardPages {
		resp, body := tc.dashDo(t, http.MethodGet, p, nil, tc.bearer())
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %s", p, resp.Status)
		}
		if !strings.Contains(body, "Commit refused") || !strings.Contains(body, shortOf(bad)) || !strings.Contains(body, "rollouts/broken.yaml:") {
			t.Errorf("GET %s does not show the refused commit %.12s with its file:line error:\n%s", p, bad, body)
		}
	}
	_, overview := tc.dashDo(t, http.MethodGet, "/", nil, tc.bearer())
	serving := overview[strings.Index(overview, `id="serving"`):]
	if !strings.Contains(serving[:min(len(serving), 2000)], shortOf(good)) {
		t.Errorf("overview does not show %.12s as served", good)
	}
	if !strings.Contains(overview, "break the fleet") {
		t.Errorf("overview does not show the refused commit's message")
	}
}

func shortOf(sha string) string { return sha[:12] }
