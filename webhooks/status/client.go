package status

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gitfleet/gitfleet/webhooks/notify"
)

// Provider is a Git host's API dialect.
type Provider string

// The providers.
const (
	GitHub Provider = "github" // GitHub and GitHub Enterprise Server
	GitLab Provider = "gitlab" // GitLab, API v4
	Gitea  Provider = "gitea"  // Gitea and Forgejo, API v1
)

// State is the state of a commit status, in Gitfleet's terms; each
// provider spells it its own way.
type State string

// The states Gitfleet sets.
const (
	Pending State = "pending" // the rollout runs (GitLab: "running")
	Success State = "success" // the rollout completed
	Failure State = "failure" // the rollout aborted (GitLab: "failed")
)

// MaxDescription is the longest description sent, in characters: GitHub's
// limit, the smallest of the three hosts'.
const MaxDescription = 140

// Status is one commit status to set.
type Status struct {
	// SHA is the full commit ID (hex, 40 or 64 characters).
	SHA string
	// State is Pending, Success or Failure.
	State State
	// Context names the status among the commit's others; a later status
	// of the same context replaces it ("gitfleet/rollout/canary").
	Context string
	// Description is a short human summary, cut to MaxDescription
	// characters.
	Description string
	// TargetURL, when set, is the link the host shows with the status.
	TargetURL string
}

// Options configure a [Client]. Zero fields take the defaults noted.
type Options struct {
	// Provider is GitHub, GitLab or Gitea. Required.
	Provider Provider
	// URL is the API address: https://api.github.com (or
	// https://HOST/api/v3 on GitHub Enterprise Server), or the GitLab,
	// Gitea or Forgejo instance (https://gitlab.com). Required; https
	// unless AllowHTTP.
	URL string
	// Repository is owner/name; on GitLab a project path (groups
	// included) or its numeric ID. Required.
	Repository string
	// Token authenticates the requests. Required.
	Token notify.Secret
	// Client sends the requests. Default: a client requiring TLS 1.2 or
	// later. Redirects are never followed.
	Client *http.Client
	// Retry shapes the retries of one status; see notify.RetryOptions.
	Retry notify.RetryOptions
	// AllowHTTP permits an http:// URL. For tests only.
	AllowHTTP bool
	// Now and Sleep are the retries' clock; defaults time.Now and a timer.
	Now   func() time.Time
	Sleep notify.Sleeper
}

// ErrOptions is wrapped by the errors of [New].
var ErrOptions = errors.New("status: invalid options")

// ErrStatus is wrapped by the errors of [Client.Set] about the status
// itself (a malformed SHA, an unknown state), before any request.
var ErrStatus = errors.New("status: invalid status")

// Client sets commit statuses on one repository. It is safe for
// concurrent use.
type Client struct {
	provider Provider
	base     string // URL without a trailing slash
	repo     string // as configured
	repoPath string // the path segment(s) of the repository, escaped
	token    notify.Secret
	http     *http.Client
	retry    notify.RetryOptions
	now      func() time.Time
	sleep    notify.Sleeper
}

var (
	repoSegment = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)
	shaPattern  = regexp.MustCompile(`^([0-9a-f]{40}|[0-9a-f]{64})$`)
)

// New checks opts and returns a Client.
func New(opts Options) (*Client, error) {
	switch opts.Provider {
	case GitHub, GitLab, Gitea:
	default:
		return nil, fmt.Errorf("%w: provider %q: want github, gitlab or gitea", ErrOptions, opts.Provider)
	}
	u, err := url.Parse(opts.URL)
	switch {
	case err != nil || u.Host == "":
		return nil, fmt.Errorf("%w: %s API URL %q: want https://host[/path]", ErrOptions, opts.Provider, opts.URL)
	case u.Scheme != "https" && !(u.Scheme == "http" && opts.AllowHTTP):
		return nil, fmt.Errorf("%w: %s API URL %s: statuses are sent over https only", ErrOptions, opts.Provider, u.Redacted())
	case u.User != nil || u.RawQuery != "" || u.Fragment != "":
		return nil, fmt.Errorf("%w: %s API URL: no credentials, query or fragment (the token goes in token)", ErrOptions, opts.Provider)
	}
	segs := strings.Split(opts.Repository, "/")
	for _, s := range segs {
		if !repoSegment.MatchString(s) || s == "." || s == ".." {
			return nil, fmt.Errorf("%w: repository %q: want owner/name (on GitLab, a project path or ID)", ErrOptions, opts.Repository)
		}
	}
	c := &Client{provider: opts.Provider, base: strings.TrimRight(u.String(), "/"), repo: opts.Repository,
		token: opts.Token, retry: opts.Retry, now: opts.Now, sleep: opts.Sleep}
	switch {
	case opts.Provider == GitLab:
		// One path segment: the numeric ID, or the path with its slashes
		// encoded, as GitLab's API documents.
		c.repoPath = url.PathEscape(opts.Repository)
	case len(segs) != 2:
		return nil, fmt.Errorf("%w: %s repository %q: want owner/name", ErrOptions, opts.Provider, opts.Repository)
	default:
		c.repoPath = segs[0] + "/" + segs[1]
	}
	if opts.Token == "" {
		return nil, fmt.Errorf("%w: %s %s: no API token", ErrOptions, opts.Provider, opts.Repository)
	}
	var hc http.Client
	if opts.Client != nil {
		hc = *opts.Client
	} else {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		hc.Transport = tr
	}
	// Never resend the token somewhere else.
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	c.http = &hc
	return c, nil
}

// Endpoint returns the URL a status of commit sha is posted to.
func (c *Client) Endpoint(sha string) string {
	switch c.provider {
	case GitHub:
		return c.base + "/repos/" + c.repoPath + "/statuses/" + sha
	case GitLab:
		return c.base + "/api/v4/projects/" + c.repoPath + "/statuses/" + sha
	default:
		return c.base + "/api/v1/repos/" + c.repoPath + "/statuses/" + sha
	}
}

// body is the JSON of a status request; GitLab names the context "name".
type body struct {
	State       string `json:"state"`
	Context     string `json:"context,omitempty"`
	Name        string `json:"name,omitempty"`
	Description string `json:"description,omitempty"`
	TargetURL   string `json:"target_url,omitempty"`
}

// wireState is st as the provider spells it.
func (c *Client) wireState(st State) string {
	if c.provider == GitLab {
		switch st {
		case Pending:
			return "running"
		case Failure:
			return "failed"
		}
	}
	return string(st)
}

// Set sets st on the repository's commit st.SHA, retrying what may pass
// later (see the package documentation). The error of a final refusal is
// an [*HTTPError].
func (c *Client) Set(ctx context.Context, st Status) error {
	switch {
	case !shaPattern.MatchString(st.SHA):
		return fmt.Errorf("%w: commit %q is not a full lowercase hex SHA", ErrStatus, st.SHA)
	case st.State != Pending && st.State != Success && st.State != Failure:
		return fmt.Errorf("%w: state %q: want pending, success or failure", ErrStatus, st.State)
	case st.Context == "":
		return fmt.Errorf("%w: no context", ErrStatus)
	}
	b := body{State: c.wireState(st.State), Description: Cut(st.Description, MaxDescription), TargetURL: st.TargetURL}
	if c.provider == GitLab {
		b.Name = st.Context
	} else {
		b.Context = st.Context
	}
	js, err := json.Marshal(b)
	if err != nil {
		return fmt.Errorf("status: encode: %w", err)
	}
	endpoint := c.Endpoint(st.SHA)
	err = notify.Retry(ctx, c.retry, c.sleep, c.now, func(ctx context.Context) error {
		return c.attempt(ctx, endpoint, js, b.State)
	})
	if err != nil {
		return fmt.Errorf("%s status %s of %s on %s %s: %w", st.Context, st.State, short(st.SHA), c.provider, c.repo, err)
	}
	return nil
}

// HTTPError is a final answer of the host: the request will not pass by
// being sent again.
type HTTPError struct {
	Code    int    // the HTTP status code
	Message string // the host's message, cut, when it gave one
	Hint    string // what to check
}

func (e *HTTPError) Error() string {
	s := "HTTP " + strconv.Itoa(e.Code)
	if e.Message != "" {
		s += " (" + e.Message + ")"
	}
	if e.Hint != "" {
		s += ": " + e.Hint
	}
	return s
}

// maxResponse is how much of a response body is read.
const maxResponse = 64 << 10

func (c *Client) attempt(ctx context.Context, endpoint string, js []byte, state string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(js))
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "Gitfleet-Status/1")
	switch c.provider {
	case GitHub:
		req.Header.Set("Accept", "application/vnd.github+json")
		req.Header.Set("X-GitHub-Api-Version", "2022-11-28")
		req.Header.Set("Authorization", "Bearer "+string(c.token))
	case GitLab:
		req.Header.Set("Accept", "application/json")
		req.Header.Set("PRIVATE-TOKEN", string(c.token))
	case Gitea:
		req.Header.Set("Accept", "application/json")
		req.Header.Set("Authorization", "token "+string(c.token))
	}
	resp, err := c.http.Do(req)
	if err != nil {
		// *url.Error quotes the URL (no secret in it), keep the cause.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return notify.Temporary(err, 0)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	code := resp.StatusCode
	msg := c.message(raw)
	switch {
	case code >= 200 && code < 300:
		return nil
	case code == http.StatusTooManyRequests || code == http.StatusRequestTimeout || code >= 500 ||
		(c.provider == GitHub && code == http.StatusForbidden &&
			(resp.Header.Get("Retry-After") != "" || resp.Header.Get("X-RateLimit-Remaining") == "0")):
		after := notify.RetryAfter(resp.Header.Get("Retry-After"), c.clock())
		if after == 0 && resp.Header.Get("X-RateLimit-Remaining") == "0" {
			if reset, err := strconv.ParseInt(resp.Header.Get("X-RateLimit-Reset"), 10, 64); err == nil {
				if d := time.Unix(reset, 0).Sub(c.clock()); d > 0 {
					after = d
				}
			}
		}
		return notify.Temporary(&HTTPError{Code: code, Message: msg}, after)
	case c.provider == GitLab && code == http.StatusBadRequest &&
		strings.Contains(msg, "Cannot transition status") && strings.Contains(msg, "from :"+state):
		return nil // the status already has this state
	}
	return &HTTPError{Code: code, Message: msg, Hint: c.hint(code)}
}

func (c *Client) clock() time.Time {
	if c.now != nil {
		return c.now()
	}
	return time.Now()
}

// message is the host's error message in a JSON body ({"message": …}),
// single-line and cut, without the token should it be echoed.
func (c *Client) message(raw []byte) string {
	var m struct {
		Message any `json:"message"`
	}
	if json.Unmarshal(raw, &m) != nil || m.Message == nil {
		return ""
	}
	var s string
	if v, ok := m.Message.(string); ok {
		s = v
	} else {
		b, _ := json.Marshal(m.Message)
		s = string(b)
	}
	if len(c.token) >= 4 {
		s = strings.ReplaceAll(s, string(c.token), "[redacted]")
	}
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	return Cut(s, 200)
}

// hint says what to check after a final refusal.
func (c *Client) hint(code int) string {
	switch code {
	case http.StatusUnauthorized:
		return fmt.Sprintf("%s refused the token: check that it is valid and not expired", c.provider)
	case http.StatusForbidden:
		var scope string
		switch c.provider {
		case GitHub:
			scope = `a classic token needs the repo:status scope, a fine-grained one "Commit statuses: write"`
		case GitLab:
			scope = "the token needs the api scope and at least the Developer role"
		case Gitea:
			scope = "the token needs the write:repository scope and write access"
		}
		return fmt.Sprintf("the token may not set statuses on %s (%s)", c.repo, scope)
	case http.StatusNotFound:
		return fmt.Sprintf("no repository %s or no such commit at %s (or the token cannot see it): check url and repository", c.repo, c.base)
	case http.StatusUnprocessableEntity, http.StatusBadRequest:
		return "the host refused the status; not retried"
	}
	if code >= 300 && code < 400 {
		return "redirects are not followed: set url to the API address itself"
	}
	return "not retried"
}

// Cut returns s cut to at most max characters, ending with "…" when cut.
func Cut(s string, max int) string {
	s = strings.ToValidUTF8(s, "?")
	if utf8.RuneCountInString(s) <= max {
		return s
	}
	r := []rune(s)
	return string(r[:max-1]) + "…"
}

func short(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}
