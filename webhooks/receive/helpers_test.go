package receive

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

const testSecret = "It's a Secret to Everybody"

// clock is a settable clock for tests.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 5, 4, 12, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// triggers records the pushes a Handler triggered.
type triggers struct {
	mu     sync.Mutex
	pushes []Push
}

func (tr *triggers) trigger(_ context.Context, p Push) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.pushes = append(tr.pushes, p)
}

func (tr *triggers) count() int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return len(tr.pushes)
}

func (tr *triggers) last() Push {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if len(tr.pushes) == 0 {
		return Push{}
	}
	return tr.pushes[len(tr.pushes)-1]
}

type env struct {
	h     *Handler
	clock *clock
	tr    *triggers
}

// newEnv returns a Handler tracking refs/heads/main of acme/fleet (and the
// GitLab project acme/devices/fleet) with testSecret shared by every
// provider, no rate limits, and a settable clock. edit may change the
// options first.
func newEnv(t testing.TB, edit func(*Options)) *env {
	t.Helper()
	e := &env{clock: newClock(), tr: &triggers{}}
	o := Options{
		Secret:       testSecret,
		Ref:          "main",
		Repositories: []string{"acme/fleet", "https://gitlab.example.com/acme/devices/fleet.git"},
		Trigger:      e.tr.trigger,
		PerSource:    Limit{Rate: -1},
		Global:       Limit{Rate: -1},
		Now:          e.clock.Now,
	}
	if edit != nil {
		edit(&o)
	}
	h, err := New(o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	e.h = h
	return e
}

// do serves req and returns the recorder and the decoded JSON body.
func (e *env) do(t testing.TB, h http.Handler, req *http.Request) (*httptest.ResponseRecorder, response) {
	t.Helper()
	if h == nil {
		h = e.h
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var resp response
	if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
		t.Fatalf("response body %q is not JSON: %v", rec.Body.String(), err)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q", ct)
	}
	return rec, resp
}

type response struct {
	Status Outcome `json:"status"`
	Reason string  `json:"reason"`
}

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func hexMAC(secret string, msg ...[]byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	for _, b := range msg {
		m.Write(b)
	}
	return hex.EncodeToString(m.Sum(nil))
}

// host describes how one provider sends a push, for the table tests.
type host struct {
	provider   Provider
	fixture    string
	pushEvent  string
	otherEvent string // an event the receiver ignores
	pingEvent  string // "" if the host has no ping
	pingBody   string // fixture name or literal JSON
	// headers sets the event and delivery headers the way the host does.
	headers func(h http.Header, event, delivery string)
	// sign adds the host's signature (or token) for secret over body.
	sign func(h http.Header, secret string, body []byte)
	// sigHeader is the header sign sets, for the "unsigned" and
	// "malformed signature" cases; fallbacks are other headers the host
	// signs with that the receiver falls back to when sigHeader is absent.
	sigHeader string
	fallbacks []string
	// tokenOnly: the secret does not cover the body (GitLab), so a
	// tampered body cannot be detected.
	tokenOnly bool
	// otherRef rewrites the fixture to push another branch.
	otherRef [2]string
	// want is the Push the fixture should trigger (DeliveryID filled in
	// by the test).
	want Push
}

var hosts = []host{
	{
		provider:   GitHub,
		fixture:    "github-push.json",
		pushEvent:  "push",
		otherEvent: "issues",
		pingEvent:  "ping",
		pingBody:   "github-ping.json",
		headers: func(h http.Header, event, delivery string) {
			h.Set("User-Agent", "GitHub-Hookshot/8f3e2a1")
			h.Set("X-GitHub-Event", event)
			h.Set("X-GitHub-Delivery", delivery)
			h.Set("X-GitHub-Hook-ID", "498120377")
		},
		sign: func(h http.Header, secret string, body []byte) {
			h.Set("X-Hub-Signature", "sha1=0123456789abcdef0123456789abcdef01234567") // legacy, ignored
			h.Set("X-Hub-Signature-256", "sha256="+hexMAC(secret, body))
		},
		sigHeader: "X-Hub-Signature-256",
		otherRef:  [2]string{`"ref": "refs/heads/main"`, `"ref": "refs/heads/dev"`},
		want: Push{Provider: GitHub, Repository: "acme/fleet", Ref: "refs/heads/main",
			After: "9f4e2d7c1b8a6e3f0d5c2b9a7e4f1d8c6b3a0e52", Pusher: "mhoffmann"},
	},
	{
		provider:   GitLab,
		fixture:    "gitlab-push.json",
		pushEvent:  "Push Hook",
		otherEvent: "Merge Request Hook",
		headers: func(h http.Header, event, delivery string) {
			h.Set("User-Agent", "GitLab/18.0.1")
			h.Set("X-Gitlab-Event", event)
			h.Set("X-Gitlab-Event-UUID", "ev-"+delivery)
			h.Set("Idempotency-Key", delivery)
			h.Set("X-Gitlab-Webhook-UUID", "2b0ec1f6-3d5a-4e7c-9b1d-6f8a0c2e4b6d")
			h.Set("X-Gitlab-Instance", "https://gitlab.example.com")
		},
		sign: func(h http.Header, secret string, _ []byte) {
			h.Set("X-Gitlab-Token", secret)
		},
		sigHeader: "X-Gitlab-Token",
		tokenOnly: true,
		otherRef:  [2]string{`"ref": "refs/heads/main"`, `"ref": "refs/heads/dev"`},
		want: Push{Provider: GitLab, Repository: "acme/devices/fleet", Ref: "refs/heads/main",
			After: "a81c4e7f2b5d8a1c4e7f0b3d6a9c2e5f8b1d4a7c", Pusher: "jberg"},
	},
	{
		provider:   Gitea,
		fixture:    "gitea-push.json",
		pushEvent:  "push",
		otherEvent: "issues",
		headers: func(h http.Header, event, delivery string) {
			h.Set("User-Agent", "Go-http-client/1.1")
			for _, p := range []string{"X-Gitea", "X-Gogs", "X-GitHub"} {
				h.Set(p+"-Event", event)
				h.Set(p+"-Delivery", delivery)
			}
			h.Set("X-Gitea-Event-Type", event)
		},
		sign: func(h http.Header, secret string, body []byte) {
			mac := hexMAC(secret, body)
			h.Set("X-Gitea-Signature", mac)
			h.Set("X-Gogs-Signature", mac)
			h.Set("X-Hub-Signature-256", "sha256="+mac)
		},
		sigHeader: "X-Gitea-Signature",
		otherRef:  [2]string{`"ref": "refs/heads/main"`, `"ref": "refs/heads/dev"`},
		want: Push{Provider: Gitea, Repository: "acme/fleet", Ref: "refs/heads/main",
			After: "e1b4d7a0c3f6e9b2d5a8c1f4e7b0d3a6c9f2e5b8", Pusher: "aruiz"},
	},
	{
		provider:   Forgejo,
		fixture:    "forgejo-push.json",
		pushEvent:  "push",
		otherEvent: "release",
		headers: func(h http.Header, event, delivery string) {
			for _, p := range []string{"X-Forgejo", "X-Gitea", "X-Gogs", "X-GitHub"} {
				h.Set(p+"-Event", event)
				h.Set(p+"-Delivery", delivery)
			}
		},
		sign: func(h http.Header, secret string, body []byte) {
			mac := hexMAC(secret, body)
			h.Set("X-Forgejo-Signature", mac)
			h.Set("X-Gitea-Signature", mac)
			h.Set("X-Hub-Signature-256", "sha256="+mac)
		},
		sigHeader: "X-Forgejo-Signature",
		fallbacks: []string{"X-Gitea-Signature"},
		otherRef:  [2]string{`"ref": "refs/heads/main"`, `"ref": "refs/heads/dev"`},
		want: Push{Provider: Forgejo, Repository: "acme/fleet", Ref: "refs/heads/main",
			After: "e1b4d7a0c3f6e9b2d5a8c1f4e7b0d3a6c9f2e5b8", Pusher: "aruiz"},
	},
	{
		provider:   Bitbucket,
		fixture:    "bitbucket-server-refs-changed.json",
		pushEvent:  "repo:refs_changed",
		otherEvent: "pr:opened",
		pingEvent:  "diagnostics:ping",
		pingBody:   `{"test": true}`,
		headers: func(h http.Header, event, delivery string) {
			h.Set("User-Agent", "Bitbucket version: 9.4.3, Post webhook plugin version: 9.4.3")
			h.Set("X-Event-Key", event)
			h.Set("X-Request-Id", delivery)
		},
		sign: func(h http.Header, secret string, body []byte) {
			h.Set("X-Hub-Signature", "sha256="+hexMAC(secret, body))
		},
		sigHeader: "X-Hub-Signature",
		otherRef:  [2]string{`refs/heads/main`, `refs/heads/dev`},
		want: Push{Provider: Bitbucket, Repository: "ACME/fleet", Ref: "refs/heads/main",
			After: "b3e6a9d2f5c8b1e4a7d0f3c6b9e2a5d8f1c4b7e0", Pusher: "pkowalski"},
	},
	{
		provider:   Bitbucket,
		fixture:    "bitbucket-cloud-push.json",
		pushEvent:  "repo:push",
		otherEvent: "pullrequest:created",
		headers: func(h http.Header, event, delivery string) {
			h.Set("User-Agent", "Bitbucket-Webhooks/2.0")
			h.Set("X-Event-Key", event)
			h.Set("X-Request-UUID", delivery)
			h.Set("X-Hook-UUID", "{0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0}")
			h.Set("X-Attempt-Number", "1")
		},
		sign: func(h http.Header, secret string, body []byte) {
			h.Set("X-Hub-Signature", "sha256="+hexMAC(secret, body))
		},
		sigHeader: "X-Hub-Signature",
		otherRef:  [2]string{`"name": "main"`, `"name": "dev"`},
		want: Push{Provider: Bitbucket, Repository: "acme/fleet", Ref: "refs/heads/main",
			After: "d8f1c4b7e0a3d6f9c2e5b8a1d4f7c0e3b6a9d2f5", Pusher: "lvogt"},
	},
	{
		provider:   Generic,
		fixture:    "generic-push.json",
		pushEvent:  "push",
		otherEvent: "tag",
		pingEvent:  "ping",
		pingBody:   `{}`,
		headers: func(h http.Header, event, delivery string) {
			h.Set("X-Gitfleet-Event", event)
			h.Set("X-Gitfleet-Delivery", delivery)
		},
		sign: func(h http.Header, secret string, body []byte) {
			ts := strconv.FormatInt(newClock().Now().Unix(), 10)
			h.Set("X-Gitfleet-Timestamp", ts)
			h.Set("X-Gitfleet-Signature", SignGeneric(Secret(secret), ts, h.Get("X-Gitfleet-Delivery"), body))
		},
		sigHeader: "X-Gitfleet-Signature",
		otherRef:  [2]string{`"ref": "refs/heads/main"`, `"ref": "refs/heads/dev"`},
		want: Push{Provider: Generic, Repository: "acme/fleet", Ref: "refs/heads/main",
			After: "0c3f6a9d2e5b8c1f4a7d0e3b6c9f2a5d8e1b4c7f", Pusher: "ci"},
	},
}

func (h host) name() string {
	if h.provider == Bitbucket {
		return h.fixture[:len(h.fixture)-len(".json")]
	}
	return string(h.provider)
}

// request builds a POST as the host would send it.
func (h host) request(body []byte, event, delivery string, sign bool) *http.Request {
	req := httptest.NewRequest(http.MethodPost, "/hooks", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	h.headers(req.Header, event, delivery)
	if sign {
		h.sign(req.Header, testSecret, body)
	}
	return req
}

// signGeneric signs a generic request with delivery ID delivery at the
// test clock's start.
func signGeneric(h http.Header, delivery string, body []byte) {
	ts := strconv.FormatInt(newClock().Now().Unix(), 10)
	h.Set("X-Gitfleet-Timestamp", ts)
	h.Set("X-Gitfleet-Delivery", delivery)
	h.Set("X-Gitfleet-Signature", SignGeneric(testSecret, ts, delivery, body))
}
