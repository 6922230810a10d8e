package status

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"
)

// fakeHost is a local HTTPS server with the commit status endpoints of
// GitHub (under /github), GitLab (/gitlab) and Gitea (/gitea) as their
// documentation describes them. It checks every request (method, path,
// authentication and content headers, the JSON fields and their values)
// and records the accepted statuses; a request that breaks a rule is
// answered 400/401/404 and listed in bad.
type fakeHost struct {
	srv   *httptest.Server
	token string

	mu       sync.Mutex
	inject   []int                  // next answers to give instead of serving (then serve)
	posted   []posted               // every accepted status, in order
	gitlab   map[string]string      // GitLab's current state per sha+name
	bad      []string               // requests that broke a rule
	requests int                    // all requests received
	headers  map[string]http.Header // last request's headers per provider
}

type posted struct {
	Provider    Provider
	Repo, SHA   string
	State       string
	Context     string
	Description string
	TargetURL   string
}

func startHost(t *testing.T, token string) *fakeHost {
	h := &fakeHost{token: token, gitlab: map[string]string{}, headers: map[string]http.Header{}}
	h.srv = httptest.NewTLSServer(http.HandlerFunc(h.serve))
	t.Cleanup(func() {
		h.srv.Close()
		h.mu.Lock()
		defer h.mu.Unlock()
		for _, b := range h.bad {
			t.Errorf("fake host: bad request: %s", b)
		}
	})
	return h
}

func (h *fakeHost) url(p Provider) string { return h.srv.URL + "/" + string(p) }

// fail makes the next requests answer codes, in order.
func (h *fakeHost) fail(codes ...int) {
	h.mu.Lock()
	h.inject = append(h.inject, codes...)
	h.mu.Unlock()
}

func (h *fakeHost) statuses() []posted {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.posted)
}

func (h *fakeHost) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.requests
}

var (
	githubPath = regexp.MustCompile(`^/github/repos/([^/]+)/([^/]+)/statuses/([0-9a-f]{40})$`)
	gitlabPath = regexp.MustCompile(`^/gitlab/api/v4/projects/([^/]+)/statuses/([0-9a-f]{40})$`)
	giteaPath  = regexp.MustCompile(`^/gitea/api/v1/repos/([^/]+)/([^/]+)/statuses/([0-9a-f]{40})$`)
)

func jsonError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"message": msg})
}

func (h *fakeHost) serve(w http.ResponseWriter, r *http.Request) {
	raw, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	h.mu.Lock()
	defer h.mu.Unlock()
	h.requests++
	if len(h.inject) > 0 {
		code := h.inject[0]
		h.inject = h.inject[1:]
		if code == http.StatusTooManyRequests || code == http.StatusServiceUnavailable {
			w.Header().Set("Retry-After", "1")
		}
		jsonError(w, code, fmt.Sprintf("injected %d", code))
		return
	}
	bad := func(code int, format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		h.bad = append(h.bad, r.Method+" "+r.URL.EscapedPath()+": "+msg)
		jsonError(w, code, msg)
	}
	if r.Method != http.MethodPost {
		bad(http.StatusMethodNotAllowed, "method %s, want POST", r.Method)
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		bad(http.StatusUnsupportedMediaType, "Content-Type %q", ct)
		return
	}
	path := r.URL.EscapedPath()
	var p posted
	var states []string
	var auth, wantAuth string
	switch {
	case githubPath.MatchString(path):
		m := githubPath.FindStringSubmatch(path)
		p = posted{Provider: GitHub, Repo: m[1] + "/" + m[2], SHA: m[3]}
		states = []string{"error", "failure", "pending", "success"}
		auth, wantAuth = r.Header.Get("Authorization"), "Bearer "+h.token
		if a := r.Header.Get("Accept"); a != "application/vnd.github+json" {
			bad(http.StatusBadRequest, "Accept %q", a)
			return
		}
	case gitlabPath.MatchString(path):
		m := gitlabPath.FindStringSubmatch(path)
		// The project is its ID or its path with "/" encoded as %2F.
		if !regexp.MustCompile(`^([0-9]+|[A-Za-z0-9_.-]+(%2F[A-Za-z0-9_.-]+)+)$`).MatchString(m[1]) {
			bad(http.StatusNotFound, "project %q: want an ID or a URL-encoded path", m[1])
			return
		}
		p = posted{Provider: GitLab, Repo: strings.ReplaceAll(m[1], "%2F", "/"), SHA: m[2]}
		states = []string{"pending", "running", "success", "failed", "canceled"}
		auth, wantAuth = r.Header.Get("PRIVATE-TOKEN"), h.token
		if r.Header.Get("Authorization") != "" {
			bad(http.StatusBadRequest, "an Authorization header besides PRIVATE-TOKEN")
			return
		}
	case giteaPath.MatchString(path):
		m := giteaPath.FindStringSubmatch(path)
		p = posted{Provider: Gitea, Repo: m[1] + "/" + m[2], SHA: m[3]}
		states = []string{"pending", "success", "error", "failure", "warning"}
		auth, wantAuth = r.Header.Get("Authorization"), "token "+h.token
	default:
		bad(http.StatusNotFound, "no such endpoint")
		return
	}
	h.headers[string(p.Provider)] = r.Header.Clone()
	if auth != wantAuth {
		jsonError(w, http.StatusUnauthorized, "Bad credentials")
		return
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var b struct {
		State       string  `json:"state"`
		Context     *string `json:"context"`
		Name        *string `json:"name"`
		Description string  `json:"description"`
		TargetURL   string  `json:"target_url"`
	}
	if err := dec.Decode(&b); err != nil {
		bad(http.StatusBadRequest, "body %s: %v", raw, err)
		return
	}
	if !slices.Contains(states, b.State) {
		bad(http.StatusBadRequest, "state %q: %s wants one of %v", b.State, p.Provider, states)
		return
	}
	switch {
	case p.Provider == GitLab && (b.Name == nil || b.Context != nil):
		bad(http.StatusBadRequest, "GitLab: the context goes in name")
		return
	case p.Provider != GitLab && (b.Context == nil || b.Name != nil):
		bad(http.StatusBadRequest, "%s: the context goes in context", p.Provider)
		return
	}
	if b.Name != nil {
		p.Context = *b.Name
	} else {
		p.Context = *b.Context
	}
	if n := utf8.RuneCountInString(b.Description); n > MaxDescription {
		bad(http.StatusUnprocessableEntity, "description of %d characters", n)
		return
	}
	if b.TargetURL != "" && !strings.HasPrefix(b.TargetURL, "https://") {
		bad(http.StatusUnprocessableEntity, "target_url %q", b.TargetURL)
		return
	}
	if p.Provider == GitLab {
		// GitLab's state machine refuses to enter the state a status is in.
		key := p.SHA + "\x00" + p.Context
		if cur := h.gitlab[key]; cur == b.State {
			verb := map[string]string{"pending": "enqueue", "running": "run", "success": "succeed", "failed": "drop", "canceled": "cancel"}[b.State]
			jsonError(w, http.StatusBadRequest, fmt.Sprintf("Cannot transition status via :%s from :%s (Reason(s): Status cannot transition via \"%s\")", verb, cur, verb))
			return
		}
		h.gitlab[key] = b.State
	}
	p.State, p.Description, p.TargetURL = b.State, b.Description, b.TargetURL
	h.posted = append(h.posted, p)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	_ = json.NewEncoder(w).Encode(map[string]any{"state": b.State, "context": p.Context, "id": len(h.posted)})
}
