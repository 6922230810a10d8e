package receive

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestHosts runs the same cases against every host's realistic push.
func TestHosts(t *testing.T) {
	for _, hs := range hosts {
		t.Run(hs.name(), func(t *testing.T) {
			push := readTestdata(t, hs.fixture)
			otherRef := bytes.ReplaceAll(push, []byte(hs.otherRef[0]), []byte(hs.otherRef[1]))
			if bytes.Equal(otherRef, push) {
				t.Fatalf("otherRef %q not found in %s", hs.otherRef[0], hs.fixture)
			}
			otherRepo := bytes.ReplaceAll(push, []byte("fleet"), []byte("firmware"))

			type tc struct {
				name    string
				req     func() *http.Request
				code    int
				outcome Outcome
				trigger bool
			}
			cases := []tc{
				{name: "valid", code: 202, outcome: Triggered, trigger: true,
					req: func() *http.Request { return hs.request(push, hs.pushEvent, "d-valid", true) }},
				{name: "forged", code: 401, outcome: Unauthorized,
					req: func() *http.Request {
						r := hs.request(push, hs.pushEvent, "d-forged", false)
						hs.sign(r.Header, "not the secret", push)
						return r
					}},
				{name: "tampered", code: 401, outcome: Unauthorized,
					req: func() *http.Request {
						r := hs.request(push, hs.pushEvent, "d-tampered", true)
						evil := bytes.Replace(push, []byte(hs.want.After), []byte(strings.Repeat("e", 40)), 1)
						return withBody(r, evil)
					}},
				{name: "unsigned", code: 401, outcome: Unauthorized,
					req: func() *http.Request { return hs.request(push, hs.pushEvent, "d-unsigned", false) }},
				{name: "empty signature", code: 401, outcome: Unauthorized,
					req: func() *http.Request {
						r := hs.request(push, hs.pushEvent, "d-empty", true)
						r.Header.Set(hs.sigHeader, "")
						for _, k := range hs.fallbacks {
							r.Header.Set(k, "")
						}
						return r
					}},
				// For Forgejo this also shows that a bad X-Forgejo-Signature
				// is not rescued by a good X-Gitea-Signature.
				{name: "garbled signature", code: 401, outcome: Unauthorized,
					req: func() *http.Request {
						r := hs.request(push, hs.pushEvent, "d-garbled", true)
						r.Header.Set(hs.sigHeader, "sha256=zz"+r.Header.Get(hs.sigHeader))
						return r
					}},
				{name: "oversized", code: 413, outcome: TooLarge,
					req: func() *http.Request {
						big := append(bytes.TrimSpace(push[:len(push)-2]), []byte(`, "padding": "`+strings.Repeat("x", DefaultMaxBody)+`"}`)...)
						return hs.request(big, hs.pushEvent, "d-big", true)
					}},
				{name: "oversized without Content-Length", code: 413, outcome: TooLarge,
					req: func() *http.Request {
						big := append(bytes.TrimSpace(push[:len(push)-2]), []byte(`, "padding": "`+strings.Repeat("x", DefaultMaxBody)+`"}`)...)
						r := hs.request(big, hs.pushEvent, "d-big2", true)
						r.ContentLength = -1
						return r
					}},
				{name: "malformed JSON", code: 400, outcome: Malformed,
					req: func() *http.Request { return hs.request(push[:len(push)/2], hs.pushEvent, "d-half", true) }},
				{name: "not an object", code: 400, outcome: Malformed,
					req: func() *http.Request { return hs.request([]byte(`["refs/heads/main"]`), hs.pushEvent, "d-array", true) }},
				{name: "other branch", code: 202, outcome: Ignored,
					req: func() *http.Request { return hs.request(otherRef, hs.pushEvent, "d-dev", true) }},
				{name: "other repository", code: 202, outcome: Ignored,
					req: func() *http.Request { return hs.request(otherRepo, hs.pushEvent, "d-repo", true) }},
				{name: "other event", code: 202, outcome: Ignored,
					req: func() *http.Request { return hs.request([]byte(`{"action":"opened"}`), hs.otherEvent, "d-other", true) }},
				{name: "GET", code: 405, outcome: MethodNotAllowed,
					req: func() *http.Request {
						r := hs.request(nil, hs.pushEvent, "d-get", true)
						r.Method = http.MethodGet
						return r
					}},
				{name: "form-encoded", code: 415, outcome: UnsupportedMedia,
					req: func() *http.Request {
						r := hs.request(push, hs.pushEvent, "d-form", true)
						r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
						return r
					}},
			}
			override := func(name string, code int, o Outcome, trigger bool) {
				for i := range cases {
					if cases[i].name == name {
						cases[i].code, cases[i].outcome, cases[i].trigger = code, o, trigger
						return
					}
				}
				t.Fatalf("no case %q", name)
			}
			if hs.tokenOnly {
				// GitLab's token says who sent the request, not what it
				// says: a changed body goes unnoticed. Harmless here, since
				// the payload is only a hint, and why TLS matters.
				override("tampered", 202, Triggered, true)
			}
			if hs.provider == Generic {
				// The generic sender's Content-Type is not looked at: curl -d
				// sends a form type for a JSON body.
				override("form-encoded", 202, Triggered, true)
			}
			if hs.pingEvent != "" {
				ping := []byte(hs.pingBody)
				if strings.HasSuffix(hs.pingBody, ".json") {
					ping = readTestdata(t, hs.pingBody)
				}
				cases = append(cases,
					tc{name: "ping", code: 200, outcome: Ping,
						req: func() *http.Request { return hs.request(ping, hs.pingEvent, "d-ping", true) }},
					tc{name: "forged ping", code: 401, outcome: Unauthorized,
						req: func() *http.Request {
							r := hs.request(ping, hs.pingEvent, "d-ping2", false)
							hs.sign(r.Header, "guess", ping)
							return r
						}},
				)
			}
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					e := newEnv(t, nil)
					rec, resp := e.do(t, nil, c.req())
					if rec.Code != c.code || resp.Status != c.outcome {
						t.Fatalf("got %d %q (%s), want %d %q", rec.Code, resp.Status, resp.Reason, c.code, c.outcome)
					}
					if got := e.tr.count() == 1; got != c.trigger {
						t.Fatalf("triggered = %v, want %v", got, c.trigger)
					}
					if c.code >= 400 && resp.Reason == "" {
						t.Error("an error response has no reason")
					}
				})
			}

			t.Run("push fields", func(t *testing.T) {
				e := newEnv(t, nil)
				e.do(t, nil, hs.request(push, hs.pushEvent, "5a1d2c3b-0000-4e7c-9b1d-6f8a0c2e4b6d", true))
				want := hs.want
				want.DeliveryID = "5a1d2c3b-0000-4e7c-9b1d-6f8a0c2e4b6d"
				if got := e.tr.last(); got != want {
					t.Errorf("Push = %+v\nwant   %+v", got, want)
				}
			})

			t.Run("replayed", func(t *testing.T) {
				e := newEnv(t, nil)
				for i, want := range []Outcome{Triggered, Duplicate, Duplicate} {
					rec, resp := e.do(t, nil, hs.request(push, hs.pushEvent, "d-replay", true))
					if resp.Status != want {
						t.Fatalf("delivery %d: %d %q (%s), want %q", i+1, rec.Code, resp.Status, resp.Reason, want)
					}
				}
				if rec, resp := e.do(t, nil, hs.request(push, hs.pushEvent, "d-replay-2", true)); resp.Status != Triggered {
					t.Fatalf("a new delivery ID: %d %q", rec.Code, resp.Status)
				}
				if n := e.tr.count(); n != 2 {
					t.Fatalf("triggered %d times, want 2", n)
				}
			})

			t.Run("own secret", func(t *testing.T) {
				// A provider's own secret wins over the shared one.
				e := newEnv(t, func(o *Options) { o.Secrets = map[Provider]Secret{hs.provider: "own"} })
				if _, resp := e.do(t, nil, hs.request(push, hs.pushEvent, "d1", true)); resp.Status != Unauthorized {
					t.Fatalf("signed with the shared secret: %q", resp.Status)
				}
				r := hs.request(push, hs.pushEvent, "d2", false)
				hs.sign(r.Header, "own", push)
				if _, resp := e.do(t, nil, r); resp.Status != Triggered {
					t.Fatalf("signed with the provider's secret: %q (%s)", resp.Status, resp.Reason)
				}
			})

			t.Run("pinned path", func(t *testing.T) {
				e := newEnv(t, nil)
				if _, resp := e.do(t, e.h.For(hs.provider), hs.request(push, hs.pushEvent, "d1", true)); resp.Status != Triggered {
					t.Fatalf("own path: %q (%s)", resp.Status, resp.Reason)
				}
			})
		})
	}
}

// withBody replaces a request's body, keeping its headers.
func withBody(r *http.Request, body []byte) *http.Request {
	r2 := httptest.NewRequest(r.Method, r.URL.String(), bytes.NewReader(body))
	r2.Header = r.Header.Clone()
	return r2
}

func TestGitLabTagPush(t *testing.T) {
	gl := hosts[1]
	body := readTestdata(t, "gitlab-tag-push.json")

	e := newEnv(t, func(o *Options) { o.Ref = "refs/tags/production" })
	if _, resp := e.do(t, nil, gl.request(body, "Tag Push Hook", "t1", true)); resp.Status != Triggered {
		t.Fatalf("tag push to the tracked tag: %q (%s)", resp.Status, resp.Reason)
	}
	if got := e.tr.last(); got.Ref != "refs/tags/production" || got.After != "5e8b1d4a7c0f3e6b9d2a5c8f1e4b7d0a3c6f9e2b" {
		t.Errorf("Push = %+v", got)
	}

	// Tracking a branch, the tag is ignored.
	e = newEnv(t, nil)
	if rec, resp := e.do(t, nil, gl.request(body, "Tag Push Hook", "t2", true)); resp.Status != Ignored || rec.Code != 202 {
		t.Fatalf("tag push while tracking main: %d %q", rec.Code, resp.Status)
	}

	// A body that contradicts its event header is malformed.
	if _, resp := e.do(t, nil, gl.request(body, "Push Hook", "t3", true)); resp.Status != Malformed {
		t.Fatalf("tag_push body under Push Hook: %q", resp.Status)
	}

	// System hooks carry pushes too.
	push := readTestdata(t, "gitlab-push.json")
	if _, resp := e.do(t, nil, gl.request(push, "System Hook", "t4", true)); resp.Status != Triggered {
		t.Fatalf("System Hook push: %q (%s)", resp.Status, resp.Reason)
	}
	if _, resp := e.do(t, nil, gl.request([]byte(`{"event_name":"project_create"}`), "System Hook", "t5", true)); resp.Status != Ignored {
		t.Fatalf("System Hook project_create: %q", resp.Status)
	}
}

func TestDeletedBranch(t *testing.T) {
	gh := hosts[0]
	body := bytes.Replace(readTestdata(t, "github-push.json"), []byte(`"after": "9f4e2d7c1b8a6e3f0d5c2b9a7e4f1d8c6b3a0e52"`), []byte(`"after": "0000000000000000000000000000000000000000"`), 1)
	body = bytes.Replace(body, []byte(`"deleted": false`), []byte(`"deleted": true`), 1)
	e := newEnv(t, nil)
	if _, resp := e.do(t, nil, gh.request(body, "push", "del", true)); resp.Status != Triggered {
		t.Fatalf("deleting the tracked branch: %q", resp.Status)
	}
	if p := e.tr.last(); !p.Deleted {
		t.Errorf("Push.Deleted = false for %+v", p)
	}
}

func TestBitbucketServerSeveralRefs(t *testing.T) {
	bb := hosts[4]
	body := []byte(`{"eventKey":"repo:refs_changed","repository":{"slug":"fleet","project":{"key":"ACME"}},
	  "changes":[{"ref":{"id":"refs/heads/dev"},"toHash":"1111111111111111111111111111111111111111","type":"UPDATE"},
	             {"ref":{"id":"refs/heads/main"},"toHash":"2222222222222222222222222222222222222222","type":"UPDATE"}]}`)
	e := newEnv(t, nil)
	if _, resp := e.do(t, nil, bb.request(body, "repo:refs_changed", "m1", true)); resp.Status != Triggered {
		t.Fatalf("%q (%s)", resp.Status, resp.Reason)
	}
	if p := e.tr.last(); p.Ref != "refs/heads/main" || p.After != strings.Repeat("2", 40) {
		t.Errorf("Push = %+v", p)
	}
}

func TestDetection(t *testing.T) {
	e := newEnv(t, nil)
	// No provider's headers at all.
	r := httptest.NewRequest(http.MethodPost, "/hooks", strings.NewReader(`{"ref":"refs/heads/main"}`))
	if rec, resp := e.do(t, nil, r); rec.Code != 400 || resp.Status != UnknownSender {
		t.Fatalf("no headers: %d %q", rec.Code, resp.Status)
	}

	// A Gitea push also carries X-GitHub-Event and X-Hub-Signature-256; it
	// is detected as Gitea, and a pinned GitHub path verifies it as GitHub.
	gt := hosts[2]
	body := readTestdata(t, gt.fixture)
	e.do(t, nil, gt.request(body, "push", "g1", true))
	if p := e.tr.last(); p.Provider != Gitea {
		t.Fatalf("detected %q, want gitea", p.Provider)
	}
	e.do(t, e.h.For(GitHub), gt.request(body, "push", "g2", true))
	if p := e.tr.last(); p.Provider != GitHub || p.DeliveryID != "g2" {
		t.Fatalf("pinned to GitHub: got %+v", p)
	}

	// A GitHub push on the GitLab path is checked as a GitLab one: it has
	// no token.
	gh := hosts[0]
	if _, resp := e.do(t, e.h.For(GitLab), gh.request(readTestdata(t, gh.fixture), "push", "g3", true)); resp.Status != Unauthorized {
		t.Fatalf("GitHub push on the GitLab path: %q", resp.Status)
	}
}

func TestRoutes(t *testing.T) {
	e := newEnv(t, nil)
	mux := http.NewServeMux()
	var patterns []string
	for _, rt := range e.h.Routes("/hooks/") {
		mux.Handle(rt.Pattern, rt.Handler)
		patterns = append(patterns, rt.Pattern)
	}
	if want := "/hooks /hooks/forgejo /hooks/gitea /hooks/gitlab /hooks/bitbucket /hooks/github /hooks/generic"; strings.Join(patterns, " ") != want {
		t.Fatalf("patterns %v, want %s", patterns, want)
	}
	for _, hs := range hosts {
		for _, path := range []string{"/hooks", "/hooks/" + string(hs.provider)} {
			r := hs.request(readTestdata(t, hs.fixture), hs.pushEvent, path+hs.fixture, true)
			r.URL.Path = path
			if rec, resp := e.do(t, mux, r); resp.Status != Triggered {
				t.Errorf("%s on %s: %d %q (%s)", hs.name(), path, rec.Code, resp.Status, resp.Reason)
			}
		}
	}
	if e.h.Routes("")[0].Pattern != "/" {
		t.Error(`Routes("") does not mount the detecting handler at "/"`)
	}
}

func TestMethodNotAllowed(t *testing.T) {
	e := newEnv(t, nil)
	for _, m := range []string{http.MethodGet, http.MethodPut, http.MethodHead, http.MethodOptions} {
		rec := httptest.NewRecorder()
		e.h.ServeHTTP(rec, httptest.NewRequest(m, "/hooks", nil))
		if rec.Code != 405 || rec.Header().Get("Allow") != "POST" {
			t.Errorf("%s: %d Allow=%q", m, rec.Code, rec.Header().Get("Allow"))
		}
	}
}

func TestSecretsConfiguration(t *testing.T) {
	tr := &triggers{}
	if _, err := New(Options{Ref: "main", Trigger: tr.trigger}); !errors.Is(err, ErrNoSecret) {
		t.Errorf("no secret: %v, want ErrNoSecret", err)
	}
	if _, err := New(Options{Ref: "main", Secret: "s"}); !errors.Is(err, ErrNoTrigger) {
		t.Errorf("no trigger: %v", err)
	}
	if _, err := New(Options{Secret: "s", Trigger: tr.trigger}); !errors.Is(err, ErrNoRef) {
		t.Errorf("no ref: %v", err)
	}
	if _, err := New(Options{Ref: "refs/heads/a b", Secret: "s", Trigger: tr.trigger}); err == nil {
		t.Error("a ref with a space was accepted")
	}
	if _, err := New(Options{Ref: "main", Secrets: map[Provider]Secret{"gogs": "s"}, Trigger: tr.trigger}); err == nil {
		t.Error("a secret for an unknown provider was accepted")
	}
	if _, err := New(Options{Ref: "main", Secrets: map[Provider]Secret{GitHub: ""}, Trigger: tr.trigger}); !errors.Is(err, ErrNoSecret) {
		t.Errorf("only an empty secret: %v, want ErrNoSecret", err)
	}
	if _, err := New(Options{Ref: "main", Secret: "s", Trigger: tr.trigger, PerSource: Limit{Rate: 1}}); err == nil {
		t.Error("a limit with no burst was accepted")
	}

	gh, gl := hosts[0], hosts[1]
	ghPush, glPush := readTestdata(t, gh.fixture), readTestdata(t, gl.fixture)

	// Only GitHub has a secret: GitLab is disabled.
	e := newEnv(t, func(o *Options) { o.Secret = ""; o.Secrets = map[Provider]Secret{GitHub: testSecret} })
	if rec, resp := e.do(t, nil, gl.request(glPush, gl.pushEvent, "x1", true)); rec.Code != 403 || resp.Status != Disabled {
		t.Errorf("GitLab without a secret: %d %q", rec.Code, resp.Status)
	}
	if _, resp := e.do(t, nil, gh.request(ghPush, gh.pushEvent, "x2", true)); resp.Status != Triggered {
		t.Errorf("GitHub with its secret: %q", resp.Status)
	}

	// AllowUnsigned lets unsigned requests through for providers without a
	// secret, but never for one that has a secret.
	e = newEnv(t, func(o *Options) {
		o.Secret = ""
		o.Secrets = map[Provider]Secret{GitHub: testSecret}
		o.AllowUnsigned = true
	})
	if _, resp := e.do(t, nil, gl.request(glPush, gl.pushEvent, "x3", false)); resp.Status != Triggered {
		t.Errorf("unsigned GitLab with AllowUnsigned: %q", resp.Status)
	}
	if _, resp := e.do(t, nil, gh.request(ghPush, gh.pushEvent, "x4", false)); resp.Status != Unauthorized {
		t.Errorf("unsigned GitHub with a GitHub secret and AllowUnsigned: %q", resp.Status)
	}
}

func TestSecretRedacted(t *testing.T) {
	s := Secret("hunter2")
	for _, got := range []string{fmt.Sprint(s), fmt.Sprintf("%v %s %q %#v %+v", s, s, s, s, s), fmt.Sprint(Options{Secret: s, Secrets: map[Provider]Secret{GitHub: s}})} {
		if strings.Contains(got, "hunter2") {
			t.Errorf("secret printed: %s", got)
		}
	}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("x", "secret", s)
	if strings.Contains(buf.String(), "hunter2") {
		t.Errorf("secret logged: %s", buf.String())
	}
}

func TestLogging(t *testing.T) {
	var buf bytes.Buffer
	e := newEnv(t, func(o *Options) {
		o.Logger = slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	for _, hs := range hosts {
		push := readTestdata(t, hs.fixture)
		e.do(t, nil, hs.request(push, hs.pushEvent, "log-"+hs.name(), true))
		r := hs.request(push, hs.pushEvent, "log-forged-"+hs.name(), false)
		hs.sign(r.Header, "wrong", push)
		e.do(t, nil, r)
	}
	out := buf.String()
	for _, leak := range []string{testSecret, "modem watchdog", "Lyon site", "mhoffmann@acme.example"} {
		if strings.Contains(out, leak) {
			t.Errorf("log contains %q:\n%s", leak, out)
		}
	}
	for _, key := range []string{`"provider":"github"`, `"delivery":"log-github"`, `"ref":"refs/heads/main"`, `"reason":"signature does not match"`, `"outcome":"triggered"`, `"level":"WARN"`} {
		if !strings.Contains(out, key) {
			t.Errorf("log lacks %s:\n%s", key, out)
		}
	}
}

func TestObserve(t *testing.T) {
	type key struct {
		p Provider
		o Outcome
	}
	counts := map[key]int{}
	e := newEnv(t, func(o *Options) { o.Observe = func(p Provider, o Outcome) { counts[key{p, o}]++ } })
	gh := hosts[0]
	push := readTestdata(t, gh.fixture)
	e.do(t, nil, gh.request(push, "push", "o1", true))
	e.do(t, nil, gh.request(push, "push", "o1", true))
	e.do(t, nil, gh.request(push, "push", "o2", false))
	e.do(t, nil, httptest.NewRequest(http.MethodPost, "/", nil))
	want := map[key]int{{GitHub, Triggered}: 1, {GitHub, Duplicate}: 1, {GitHub, Unauthorized}: 1, {"", UnknownSender}: 1}
	if fmt.Sprint(counts) != fmt.Sprint(want) {
		t.Errorf("observed %v, want %v", counts, want)
	}
}

func TestMalformedDelivery(t *testing.T) {
	e := newEnv(t, nil)
	gh := hosts[0]
	for _, id := range []string{strings.Repeat("a", 129), "has space", "tab\there", "naïve"} {
		_, resp := e.do(t, nil, gh.request(readTestdata(t, gh.fixture), "push", id, true))
		if resp.Status != Malformed {
			t.Errorf("delivery %q: %q", id, resp.Status)
		}
	}
	if e.tr.count() != 0 {
		t.Error("a malformed delivery triggered")
	}
}

func TestNoDeliveryID(t *testing.T) {
	// Without a delivery ID nothing can be deduplicated; a host's signed
	// push still triggers (the generic sender must send one: see
	// TestAttackReplay).
	e := newEnv(t, nil)
	gen := hosts[0]
	body := readTestdata(t, gen.fixture)
	for range 2 {
		if _, resp := e.do(t, nil, gen.request(body, "push", "", true)); resp.Status != Triggered {
			t.Fatalf("%q", resp.Status)
		}
	}
}

type failingDeduper struct{}

func (failingDeduper) FirstDelivery(context.Context, string, time.Duration) (bool, error) {
	return false, errors.New("store unreachable")
}

func TestDeduperDownFailsOpen(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.Deduper = failingDeduper{} })
	gh := hosts[0]
	if _, resp := e.do(t, nil, gh.request(readTestdata(t, gh.fixture), "push", "f1", true)); resp.Status != Triggered {
		t.Fatalf("%q", resp.Status)
	}
}

func TestDedupeNamespacedByProvider(t *testing.T) {
	// The same ID from two providers is two deliveries.
	e := newEnv(t, nil)
	for _, hs := range []host{hosts[0], hosts[2]} {
		if _, resp := e.do(t, nil, hs.request(readTestdata(t, hs.fixture), hs.pushEvent, "same-id", true)); resp.Status != Triggered {
			t.Fatalf("%s: %q", hs.name(), resp.Status)
		}
	}
}

func TestDedupeTTLThroughHandler(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.DedupeTTL = time.Hour })
	gh := hosts[0]
	push := readTestdata(t, gh.fixture)
	steps := []struct {
		advance time.Duration
		want    Outcome
	}{{0, Triggered}, {59 * time.Minute, Duplicate}, {time.Minute, Triggered}, {time.Second, Duplicate}}
	for i, s := range steps {
		e.clock.Advance(s.advance)
		if _, resp := e.do(t, nil, gh.request(push, "push", "ttl", true)); resp.Status != s.want {
			t.Fatalf("step %d: %q, want %q", i, resp.Status, s.want)
		}
	}
}

func TestMaxBody(t *testing.T) {
	gen := hosts[len(hosts)-1]
	body := readTestdata(t, gen.fixture)
	e := newEnv(t, func(o *Options) { o.MaxBody = int64(len(body)) })
	if _, resp := e.do(t, nil, gen.request(body, "push", "b1", true)); resp.Status != Triggered {
		t.Fatalf("exactly MaxBody: %q", resp.Status)
	}
	big := append(body, ' ')
	if rec, resp := e.do(t, nil, gen.request(big, "push", "b2", true)); rec.Code != 413 || resp.Status != TooLarge {
		t.Fatalf("MaxBody+1: %d %q", rec.Code, resp.Status)
	}
}

// countingReader counts how much of a body the handler reads.
type countingReader struct{ n, limit int64 }

func (c *countingReader) Read(p []byte) (int, error) {
	if c.n >= c.limit {
		return 0, fmt.Errorf("read past %d bytes", c.limit)
	}
	n := min(int64(len(p)), c.limit-c.n)
	for i := range p[:n] {
		p[i] = ' '
	}
	c.n += n
	return int(n), nil
}

func TestReadsAtMostMaxBodyPlusOne(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.MaxBody = 1000 })
	body := &countingReader{limit: 1 << 30}
	r := httptest.NewRequest(http.MethodPost, "/hooks/generic", body)
	r.ContentLength = -1
	r.Header.Set("X-Gitfleet-Signature", "sha256=00")
	if rec, _ := e.do(t, e.h.For(Generic), r); rec.Code != 413 {
		t.Fatalf("status %d", rec.Code)
	}
	if body.n != 1001 {
		t.Fatalf("read %d bytes, want 1001", body.n)
	}
}
