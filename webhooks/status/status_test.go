package status

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gitfleet/gitfleet/webhooks/notify"
)

const (
	token = "tok-9f8e7d6c5b4a"
	sha1  = "0123456789abcdef0123456789abcdef01234567"
	sha2  = "89abcdef0123456789abcdef0123456789abcdef"
)

// sleeps records the waits of the retries instead of waiting.
type sleeps struct {
	mu sync.Mutex
	d  []time.Duration
}

func (s *sleeps) sleep(ctx context.Context, d time.Duration) error {
	s.mu.Lock()
	s.d = append(s.d, d)
	s.mu.Unlock()
	return ctx.Err()
}

func (s *sleeps) waits() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Duration(nil), s.d...)
}

func newClient(t *testing.T, h *fakeHost, p Provider, repo, tok string, sl *sleeps) *Client {
	t.Helper()
	c, err := New(Options{Provider: p, URL: h.url(p), Repository: repo, Token: notify.Secret(tok),
		Client: h.srv.Client(), Sleep: sl.sleep})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

var providers = []struct {
	p       Provider
	repo    string
	pending string
	failure string
}{
	{GitHub, "acme/fleet", "pending", "failure"},
	{GitLab, "acme/devices/fleet", "running", "failed"},
	{Gitea, "acme/fleet", "pending", "failure"},
}

func TestSetOnEachHost(t *testing.T) {
	h := startHost(t, token)
	for _, pv := range providers {
		t.Run(string(pv.p), func(t *testing.T) {
			c := newClient(t, h, pv.p, pv.repo, token, &sleeps{})
			long := strings.Repeat("é", 300)
			for _, st := range []Status{
				{SHA: sha1, State: Pending, Context: "gitfleet/rollout/canary", Description: "phase 0 completed", TargetURL: "https://gitfleet.example.com/x"},
				{SHA: sha1, State: Success, Context: "gitfleet/rollout/canary", Description: long},
				{SHA: sha2, State: Failure, Context: "gitfleet/rollout/canary", Description: "aborted"},
			} {
				if err := c.Set(context.Background(), st); err != nil {
					t.Fatal(err)
				}
			}
			var got []posted
			for _, s := range h.statuses() {
				if s.Provider == pv.p {
					got = append(got, s)
				}
			}
			if len(got) != 3 {
				t.Fatalf("the host recorded %d statuses, want 3: %+v", len(got), got)
			}
			want := []posted{
				{pv.p, pv.repo, sha1, pv.pending, "gitfleet/rollout/canary", "phase 0 completed", "https://gitfleet.example.com/x"},
				{pv.p, pv.repo, sha1, "success", "gitfleet/rollout/canary", strings.Repeat("é", MaxDescription-1) + "…", ""},
				{pv.p, pv.repo, sha2, pv.failure, "gitfleet/rollout/canary", "aborted", ""},
			}
			for i := range want {
				if got[i] != want[i] {
					t.Errorf("status %d:\n got %+v\nwant %+v", i, got[i], want[i])
				}
			}
			if n := utf8.RuneCountInString(got[1].Description); n != MaxDescription {
				t.Errorf("the long description has %d characters, want %d", n, MaxDescription)
			}
			h.mu.Lock()
			hdr := h.headers[string(pv.p)]
			h.mu.Unlock()
			if ua := hdr.Get("User-Agent"); ua != "Gitfleet-Status/1" {
				t.Errorf("User-Agent %q", ua)
			}
			if pv.p == GitHub && hdr.Get("X-GitHub-Api-Version") == "" {
				t.Error("no X-GitHub-Api-Version header")
			}
		})
	}
	// A GitLab project by numeric ID.
	c := newClient(t, h, GitLab, "4242", token, &sleeps{})
	if err := c.Set(context.Background(), Status{SHA: sha2, State: Success, Context: "gitfleet/rollout/x"}); err != nil {
		t.Fatal(err)
	}
	if got := h.statuses(); got[len(got)-1].Repo != "4242" {
		t.Errorf("GitLab project ID: recorded %+v", got[len(got)-1])
	}
}

// waitDelivered waits until the sink has delivered or failed n events.
func waitDelivered(t *testing.T, s notify.Sink, n uint64) notify.Stats {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := s.Stats()
		if st.Delivered+st.Failed >= n {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("sink stats %+v: want %d events handled", st, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func rolloutEvent(kind notify.Kind, rollout, commit string, details map[string]string) notify.Event {
	return notify.Event{Kind: kind, Rollout: rollout, Commit: commit, Details: details}
}

// A rollout that completes goes pending → success on the commit that
// started it, and one that aborts pending → failure, on every host.
func TestSinkSequences(t *testing.T) {
	h := startHost(t, token)
	for _, pv := range providers {
		t.Run(string(pv.p), func(t *testing.T) {
			var logs bytes.Buffer
			s, err := NewSink(SinkOptions{Client: newClient(t, h, pv.p, pv.repo, token, &sleeps{}),
				Link:   func(r string) string { return "https://gitfleet.example.com/api/management/v1/rollouts#" + r },
				Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			if err != nil {
				t.Fatal(err)
			}
			later := "fedcba9876543210fedcba9876543210fedcba98" // a later live commit
			events := []notify.Event{
				rolloutEvent(notify.RolloutStarted, "canary", sha1, map[string]string{"generation": "1"}),
				rolloutEvent(notify.RolloutPhaseOpened, "canary", sha1, map[string]string{"generation": "1", "phase": "0", DetailAdmitted: "1", DetailSucceeded: "0", DetailFailed: "0"}),
				rolloutEvent(notify.RolloutPhaseCompleted, "canary", later, map[string]string{"generation": "1", "phase": "0", DetailRolloutCommit: sha1, DetailAdmitted: "1", DetailSucceeded: "1", DetailFailed: "0"}),
				rolloutEvent(notify.RolloutCompleted, "canary", later, map[string]string{"generation": "1", DetailRolloutCommit: sha1, DetailAdmitted: "5", DetailSucceeded: "5", DetailFailed: "0"}),
				rolloutEvent(notify.CommitLive, "", sha2, nil), // no status
				rolloutEvent(notify.RolloutStarted, "eu", sha2, map[string]string{"generation": "3"}),
				rolloutEvent(notify.RolloutAborted, "eu", sha2, map[string]string{"generation": "3", "message": "rollout eu generation 3 aborted: 2 of 4 devices failed (50% > 25%)", DetailAdmitted: "4", DetailSucceeded: "2", DetailFailed: "2"}),
			}
			for _, e := range events {
				s.Notify(e)
			}
			st := waitDelivered(t, s, uint64(len(events)))
			if st.Failed != 0 {
				t.Fatalf("stats %+v; log:\n%s", st, logs.String())
			}
			var got []string
			for _, p := range h.statuses() {
				if p.Provider == pv.p {
					got = append(got, p.SHA[:4]+" "+p.Context+" "+p.State+" "+p.Description)
					if !strings.HasPrefix(p.TargetURL, "https://gitfleet.example.com/api/management/v1/rollouts#") {
						t.Errorf("target_url %q", p.TargetURL)
					}
				}
			}
			want := []string{
				"0123 gitfleet/rollout/canary " + pv.pending + " rollout started (generation 1)",
				"0123 gitfleet/rollout/canary " + pv.pending + " phase 0 opened; 1 admitted, 0 succeeded, 0 failed",
				"0123 gitfleet/rollout/canary " + pv.pending + " phase 0 completed; 1 admitted, 1 succeeded, 0 failed",
				"0123 gitfleet/rollout/canary success rollout completed (generation 1); 5 admitted, 5 succeeded, 0 failed",
				"89ab gitfleet/rollout/eu " + pv.pending + " rollout started (generation 3)",
				"89ab gitfleet/rollout/eu " + pv.failure + " aborted (4 admitted, 2 succeeded, 2 failed): rollout eu generation 3 aborted: 2 of 4 devices failed (50% > 25%)",
			}
			if pv.p == GitLab {
				// GitLab refuses running → running: the status keeps the
				// first description, and the refusal counts as done.
				want = []string{want[0], want[3], want[4], want[5]}
			}
			if strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Errorf("statuses:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
			if err := s.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
			if strings.Contains(logs.String(), token) {
				t.Error("the token is in the log")
			}
		})
	}
}

// A 5xx is retried, after the server's Retry-After, then the status goes
// through once.
func TestRetryAfterServerError(t *testing.T) {
	h := startHost(t, token)
	sl := &sleeps{}
	c := newClient(t, h, GitHub, "acme/fleet", token, sl)
	h.fail(http.StatusServiceUnavailable, http.StatusBadGateway)
	if err := c.Set(context.Background(), Status{SHA: sha1, State: Pending, Context: "gitfleet/rollout/a"}); err != nil {
		t.Fatal(err)
	}
	if n := h.count(); n != 3 {
		t.Errorf("%d requests, want 3 (two failures, one success)", n)
	}
	if got := h.statuses(); len(got) != 1 || got[0].State != "pending" {
		t.Errorf("recorded %+v, want one pending status", got)
	}
	w := sl.waits()
	if len(w) != 2 || w[0] != time.Second || w[1] <= 0 {
		t.Errorf("waits %v: want Retry-After's 1s, then a backoff", w)
	}
}

// A refused token (401) and a missing repository (404) are final: one
// request each, an *HTTPError with a hint, the sink's Problem, no token in
// any message.
func TestRefusalsAreNotRetried(t *testing.T) {
	h := startHost(t, token)
	for _, pv := range providers {
		t.Run(string(pv.p), func(t *testing.T) {
			sl := &sleeps{}
			before := h.count()
			bad := newClient(t, h, pv.p, pv.repo, "wrong-token-123", sl)
			err := bad.Set(context.Background(), Status{SHA: sha1, State: Pending, Context: "gitfleet/rollout/a"})
			var he *HTTPError
			if !errors.As(err, &he) || he.Code != http.StatusUnauthorized || !strings.Contains(err.Error(), "refused the token") {
				t.Fatalf("err = %v, want an HTTPError 401 with a hint", err)
			}
			if strings.Contains(err.Error(), "wrong-token-123") {
				t.Errorf("the token is in the error: %v", err)
			}
			if n := h.count() - before; n != 1 || len(sl.waits()) != 0 {
				t.Errorf("%d requests and waits %v for a 401, want one request and no wait", n, sl.waits())
			}

			var logs bytes.Buffer
			s, err := NewSink(SinkOptions{Client: newClient(t, h, pv.p, pv.repo, token, sl),
				Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close(context.Background())
			before = h.count()
			h.fail(http.StatusNotFound)
			s.Notify(rolloutEvent(notify.RolloutStarted, "a", sha1, nil))
			st := waitDelivered(t, s, 1)
			if st.Failed != 1 || h.count()-before != 1 {
				t.Errorf("stats %+v after %d requests: want 1 failed after 1 request", st, h.count()-before)
			}
			if p := s.Problem(); p == nil || !strings.Contains(p.Error(), "HTTP 404") || !strings.Contains(p.Error(), pv.repo) {
				t.Errorf("Problem() = %v, want the 404 naming %s", p, pv.repo)
			}
			if !strings.Contains(logs.String(), "HTTP 404") || strings.Contains(logs.String(), token) {
				t.Errorf("log: %s", logs.String())
			}
			// The next status that goes through clears the problem.
			s.Notify(rolloutEvent(notify.RolloutCompleted, "a", sha1, nil))
			waitDelivered(t, s, 2)
			if p := s.Problem(); p != nil {
				t.Errorf("Problem() = %v after a success", p)
			}
		})
	}
}

func TestFromEvent(t *testing.T) {
	huge := strings.Repeat("reason ", 100)
	cases := []struct {
		e     notify.Event
		ok    bool
		state State
		sha   string
	}{
		{rolloutEvent(notify.RolloutStopped, "a", sha1, nil), false, "", ""},
		{rolloutEvent(notify.AlertRaised, "", sha1, nil), false, "", ""},
		{rolloutEvent(notify.RolloutStarted, "a", "", nil), false, "", ""},
		{rolloutEvent(notify.RolloutStarted, "a", "abc123", nil), false, "", ""},
		{rolloutEvent(notify.RolloutSettings, "a", sha2, map[string]string{DetailRolloutCommit: sha1}), true, Pending, sha1},
		{rolloutEvent(notify.RolloutAwaitingApproval, "a", sha1, map[string]string{"phase": "2"}), true, Pending, sha1},
		{rolloutEvent(notify.RolloutPaused, "a", sha1, nil), true, Pending, sha1},
		{rolloutEvent(notify.RolloutArtifact, "a", sha1, nil), true, Pending, sha1},
		{rolloutEvent(notify.RolloutAborted, "a", sha1, map[string]string{"message": huge}), true, Failure, sha1},
		{rolloutEvent(notify.RolloutCompleted, "a", sha1, nil), true, Success, sha1},
	}
	for _, c := range cases {
		st, ok := FromEvent(c.e, nil)
		if ok != c.ok || st.State != c.state || st.SHA != c.sha {
			t.Errorf("%s %q: got %+v %v, want %s on %q", c.e.Kind, c.e.Commit, st, ok, c.state, c.sha)
			continue
		}
		if ok && (utf8.RuneCountInString(st.Description) > MaxDescription || st.Context != "gitfleet/rollout/a" || st.TargetURL != "") {
			t.Errorf("%s: %+v", c.e.Kind, st)
		}
	}
	st, _ := FromEvent(rolloutEvent(notify.RolloutPhaseCompleted, "a", sha1, map[string]string{"phase": "1",
		DetailAdmitted: "9", DetailSucceeded: "6", DetailFailed: "1", DetailTimedOut: "2"}), nil)
	if st.Description != "phase 1 completed; 9 admitted, 6 succeeded, 1 failed, 2 timed out" {
		t.Errorf("phase completed with timed-out devices: %q", st.Description)
	}
	st, _ = FromEvent(rolloutEvent(notify.RolloutAwaitingApproval, "a", sha1, map[string]string{"phase": "2"}), nil)
	if st.Description != "waiting for approval of phase 2" {
		t.Errorf("awaiting approval: %q", st.Description)
	}
}

func TestOptions(t *testing.T) {
	for _, o := range []Options{
		{Provider: "bitbucket", URL: "https://x", Repository: "a/b", Token: "t"},
		{Provider: GitHub, URL: "http://api.github.com", Repository: "a/b", Token: "t"},
		{Provider: GitHub, URL: "https://u:p@api.github.com", Repository: "a/b", Token: "t"},
		{Provider: GitHub, URL: "https://api.github.com", Repository: "a/b/c", Token: "t"},
		{Provider: Gitea, URL: "https://codeberg.org", Repository: "a/../b", Token: "t"},
		{Provider: GitLab, URL: "https://gitlab.com", Repository: "a b/c", Token: "t"},
		{Provider: GitLab, URL: "https://gitlab.com", Repository: "a/b", Token: ""},
	} {
		if _, err := New(o); !errors.Is(err, ErrOptions) {
			t.Errorf("New(%+v) = %v, want ErrOptions", o, err)
		}
	}
	c, err := New(Options{Provider: GitLab, URL: "https://gitlab.example.com/", Repository: "g/sub/p", Token: "t"})
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Endpoint(sha1); got != "https://gitlab.example.com/api/v4/projects/g%2Fsub%2Fp/statuses/"+sha1 {
		t.Errorf("GitLab endpoint %s", got)
	}
	if err := c.Set(context.Background(), Status{SHA: "HEAD", State: Pending, Context: "x"}); !errors.Is(err, ErrStatus) {
		t.Errorf("Set with a ref, not a SHA: %v", err)
	}
}
