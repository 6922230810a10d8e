package receive

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// eventKind is what a delivery is about, as far as the receiver cares.
type eventKind int

const (
	kindOther eventKind = iota // any event but a push: ignored
	kindPing                   // a host's test delivery
	kindPush
)

// refUpdate is one ref a push changed.
type refUpdate struct {
	Ref     string
	After   string
	Deleted bool
}

// event is a decoded delivery.
type event struct {
	Kind    eventKind
	Name    string // the event header's value, for "ignored" reasons
	Repo    repoInfo
	Pusher  string
	Updates []refUpdate // for kindPush: at least one, each with a valid ref
}

// provider describes one kind of sender: how to recognise it, where its
// delivery ID and event name are, how to verify it and how to decode it.
type provider struct {
	name        Provider
	eventHeader string
	detect      []string // any of these headers present means this provider
	delivery    []string // headers holding the delivery ID, first non-empty wins
	verify      verifier
	decode      func(eventName string, body []byte) (event, error)
}

func (p *provider) event(h http.Header) string { return h.Get(p.eventHeader) }

func (p *provider) deliveryID(h http.Header) string {
	for _, k := range p.delivery {
		if v := h.Get(k); v != "" {
			return v
		}
	}
	return ""
}

var providers = map[Provider]*provider{
	Forgejo: {
		name:        Forgejo,
		eventHeader: "X-Forgejo-Event",
		detect:      []string{"X-Forgejo-Event"},
		delivery:    []string{"X-Forgejo-Delivery", "X-Gitea-Delivery"},
		verify:      verifyForgejo,
		decode:      decodeGitea,
	},
	Gitea: {
		name:        Gitea,
		eventHeader: "X-Gitea-Event",
		detect:      []string{"X-Gitea-Event"},
		delivery:    []string{"X-Gitea-Delivery"},
		verify:      hmacHeader("X-Gitea-Signature", false),
		decode:      decodeGitea,
	},
	GitLab: {
		name:        GitLab,
		eventHeader: "X-Gitlab-Event",
		detect:      []string{"X-Gitlab-Event", "X-Gitlab-Token"},
		delivery:    []string{"Idempotency-Key", "Webhook-Id", "X-Gitlab-Event-UUID"},
		verify:      verifyGitLab,
		decode:      decodeGitLab,
	},
	Bitbucket: {
		name:        Bitbucket,
		eventHeader: "X-Event-Key",
		detect:      []string{"X-Event-Key"},
		delivery:    []string{"X-Request-Id", "X-Request-UUID"},
		verify:      hmacHeader("X-Hub-Signature", true),
		decode:      decodeBitbucket,
	},
	GitHub: {
		name:        GitHub,
		eventHeader: "X-GitHub-Event",
		detect:      []string{"X-GitHub-Event"},
		delivery:    []string{"X-GitHub-Delivery"},
		verify:      hmacHeader("X-Hub-Signature-256", true),
		decode:      decodeGitHub,
	},
	Generic: {
		name:        Generic,
		eventHeader: "X-Gitfleet-Event",
		detect:      []string{"X-Gitfleet-Signature", "X-Gitfleet-Event", "X-Gitfleet-Delivery", "X-Gitfleet-Timestamp"},
		delivery:    []string{"X-Gitfleet-Delivery"},
		verify:      verifyGeneric,
		decode:      decodeGeneric,
	},
}

// detect picks the provider from the headers, in detectOrder.
func detect(h http.Header) *provider {
	for _, name := range detectOrder {
		p := providers[name]
		for _, k := range p.detect {
			if h.Get(k) != "" {
				return p
			}
		}
	}
	return nil
}

// verifyGeneric requires a signed timestamp and delivery ID: the
// timestamp bounds a replay to Options.MaxSkew, and within it the delivery
// ID is a duplicate (see the package documentation).
func verifyGeneric(h http.Header, body, secret []byte, clock skewClock) error {
	v := h.Get("X-Gitfleet-Signature")
	if v == "" {
		return errUnsigned
	}
	ts, id := h.Get("X-Gitfleet-Timestamp"), h.Get("X-Gitfleet-Delivery")
	switch {
	case ts == "":
		return errNeedTimestamp
	case id == "":
		return errNeedDelivery
	}
	if err := checkHexMAC(v, true, secret, genericMessage(ts, id, body)...); err != nil {
		return err
	}
	// After the MAC, so that only a signed timestamp can be called stale.
	return checkTimestamp(ts, clock.now, clock.maxSkew, true)
}

// errMalformed wraps every decoding failure; its message is the reason sent
// back, so it stays short and never quotes the body.
var errMalformed = errors.New("malformed payload")

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errMalformed, fmt.Sprintf(format, args...))
}

// unmarshal decodes a JSON object into v. It refuses anything but a single
// object, and reports JSON errors without quoting input.
func unmarshal(body []byte, v any) error {
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return malformed("empty body")
	}
	if body[0] != '{' {
		return malformed("body is not a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(v); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) && typeErr.Field != "" {
			return malformed("field %s has the wrong type", typeErr.Field)
		}
		return malformed("invalid JSON")
	}
	if dec.More() {
		return malformed("trailing data after the JSON object")
	}
	return nil
}

// isZeroSHA reports whether s is Git's "no commit" (40 or 64 zeros).
func isZeroSHA(s string) bool {
	return (len(s) == 40 || len(s) == 64) && strings.Trim(s, "0") == ""
}

// validSHA accepts the empty string (some hosts omit it) and 40 or 64 hex
// digits.
func validSHA(s string) bool {
	if s == "" {
		return true
	}
	if len(s) != 40 && len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

// update builds a refUpdate after checking its ref and SHA.
func update(ref, after string, deleted bool) (refUpdate, error) {
	if ref == "" {
		return refUpdate{}, malformed("no ref")
	}
	if !validRef(ref) {
		return refUpdate{}, malformed("ref is not a full ref name")
	}
	if !validSHA(after) {
		return refUpdate{}, malformed("after is not a commit SHA")
	}
	return refUpdate{Ref: ref, After: after, Deleted: deleted || isZeroSHA(after)}, nil
}

// GitHub: https://docs.github.com/webhooks/webhook-events-and-payloads#push

type githubPush struct {
	Ref        string `json:"ref"`
	After      string `json:"after"`
	Deleted    bool   `json:"deleted"`
	Repository struct {
		FullName string `json:"full_name"`
		HTMLURL  string `json:"html_url"`
		CloneURL string `json:"clone_url"`
		SSHURL   string `json:"ssh_url"`
		GitURL   string `json:"git_url"`
	} `json:"repository"`
	Pusher struct {
		Name string `json:"name"`
	} `json:"pusher"`
}

func decodeGitHub(name string, body []byte) (event, error) {
	ev := event{Name: name}
	switch name {
	case "ping":
		ev.Kind = kindPing
		return ev, unmarshal(body, &struct{}{})
	case "push":
	default:
		return ev, nil
	}
	var p githubPush
	if err := unmarshal(body, &p); err != nil {
		return ev, err
	}
	u, err := update(p.Ref, p.After, p.Deleted)
	if err != nil {
		return ev, err
	}
	r := p.Repository
	ev.Kind = kindPush
	ev.Repo = repoInfo{FullName: r.FullName, URLs: []string{r.HTMLURL, r.CloneURL, r.SSHURL, r.GitURL}}
	ev.Pusher = p.Pusher.Name
	ev.Updates = []refUpdate{u}
	return ev, nil
}

// GitLab: https://docs.gitlab.com/user/project/integrations/webhook_events/#push-events

type gitlabProject struct {
	PathWithNamespace string `json:"path_with_namespace"`
	WebURL            string `json:"web_url"`
	GitHTTPURL        string `json:"git_http_url"`
	GitSSHURL         string `json:"git_ssh_url"`
}

type gitlabPush struct {
	ObjectKind   string        `json:"object_kind"`
	EventName    string        `json:"event_name"`
	Ref          string        `json:"ref"`
	After        string        `json:"after"`
	UserUsername string        `json:"user_username"`
	UserName     string        `json:"user_name"`
	Project      gitlabProject `json:"project"`
	Repository   struct {
		Homepage   string `json:"homepage"`
		GitHTTPURL string `json:"git_http_url"`
		GitSSHURL  string `json:"git_ssh_url"`
	} `json:"repository"`
}

func decodeGitLab(name string, body []byte) (event, error) {
	ev := event{Name: name}
	switch name {
	case "Push Hook", "Tag Push Hook", "System Hook":
	default:
		return ev, nil
	}
	var p gitlabPush
	if err := unmarshal(body, &p); err != nil {
		return ev, err
	}
	kind := p.ObjectKind
	if kind == "" {
		kind = p.EventName
	}
	switch {
	case name == "Push Hook" && kind == "push", name == "Tag Push Hook" && kind == "tag_push":
	case name == "System Hook" && (kind == "push" || kind == "tag_push"):
	case name == "System Hook":
		ev.Name = name + " " + kind
		return ev, nil
	default:
		return ev, malformed("object_kind %q does not match event %q", limitString(kind, 32), name)
	}
	u, err := update(p.Ref, p.After, false)
	if err != nil {
		return ev, err
	}
	ev.Kind = kindPush
	ev.Repo = repoInfo{
		FullName: p.Project.PathWithNamespace,
		URLs: []string{p.Project.WebURL, p.Project.GitHTTPURL, p.Project.GitSSHURL,
			p.Repository.Homepage, p.Repository.GitHTTPURL, p.Repository.GitSSHURL},
	}
	ev.Pusher = p.UserUsername
	if ev.Pusher == "" {
		ev.Pusher = p.UserName
	}
	ev.Updates = []refUpdate{u}
	return ev, nil
}

// Gitea and Forgejo send the same payload: https://docs.gitea.com/usage/webhooks

type giteaPush struct {
	Ref        string `json:"ref"`
	After      string `json:"after"`
	Repository struct {
		FullName string `json:"full_name"`
		HTMLURL  string `json:"html_url"`
		CloneURL string `json:"clone_url"`
		SSHURL   string `json:"ssh_url"`
	} `json:"repository"`
	Pusher struct {
		Login    string `json:"login"`
		Username string `json:"username"`
	} `json:"pusher"`
}

func decodeGitea(name string, body []byte) (event, error) {
	ev := event{Name: name}
	if name != "push" {
		return ev, nil
	}
	var p giteaPush
	if err := unmarshal(body, &p); err != nil {
		return ev, err
	}
	u, err := update(p.Ref, p.After, false)
	if err != nil {
		return ev, err
	}
	r := p.Repository
	ev.Kind = kindPush
	ev.Repo = repoInfo{FullName: r.FullName, URLs: []string{r.HTMLURL, r.CloneURL, r.SSHURL}}
	ev.Pusher = p.Pusher.Login
	if ev.Pusher == "" {
		ev.Pusher = p.Pusher.Username
	}
	ev.Updates = []refUpdate{u}
	return ev, nil
}

// Bitbucket Server / Data Center (repo:refs_changed):
// https://confluence.atlassian.com/bitbucketserver/event-payload-938025882.html

type bitbucketServerPush struct {
	Actor struct {
		Name string `json:"name"`
		Slug string `json:"slug"`
	} `json:"actor"`
	Repository struct {
		Slug    string `json:"slug"`
		Project struct {
			Key string `json:"key"`
		} `json:"project"`
		Links struct {
			Clone []struct {
				Href string `json:"href"`
			} `json:"clone"`
		} `json:"links"`
	} `json:"repository"`
	Changes []struct {
		Ref struct {
			ID string `json:"id"`
		} `json:"ref"`
		RefID  string `json:"refId"`
		ToHash string `json:"toHash"`
		Type   string `json:"type"`
	} `json:"changes"`
}

// Bitbucket Cloud (repo:push):
// https://support.atlassian.com/bitbucket-cloud/docs/event-payloads/

type bitbucketCloudRef struct {
	Type   string `json:"type"` // branch, tag, annotated_tag
	Name   string `json:"name"`
	Target struct {
		Hash string `json:"hash"`
	} `json:"target"`
}

type bitbucketCloudPush struct {
	Actor struct {
		Nickname    string `json:"nickname"`
		DisplayName string `json:"display_name"`
	} `json:"actor"`
	Repository struct {
		FullName string `json:"full_name"`
		Links    struct {
			HTML struct {
				Href string `json:"href"`
			} `json:"html"`
		} `json:"links"`
	} `json:"repository"`
	Push struct {
		Changes []struct {
			New *bitbucketCloudRef `json:"new"`
			Old *bitbucketCloudRef `json:"old"`
		} `json:"changes"`
	} `json:"push"`
}

// maxChanges bounds how many ref changes one push may list.
const maxChanges = 1000

func decodeBitbucket(name string, body []byte) (event, error) {
	ev := event{Name: name}
	switch name {
	case "diagnostics:ping":
		ev.Kind = kindPing
		return ev, nil
	case "repo:refs_changed":
		return decodeBitbucketServer(ev, body)
	case "repo:push":
		return decodeBitbucketCloud(ev, body)
	}
	return ev, nil
}

func decodeBitbucketServer(ev event, body []byte) (event, error) {
	var p bitbucketServerPush
	if err := unmarshal(body, &p); err != nil {
		return ev, err
	}
	if len(p.Changes) == 0 {
		return ev, malformed("no changes")
	}
	if len(p.Changes) > maxChanges {
		return ev, malformed("too many changes")
	}
	for _, c := range p.Changes {
		ref := c.Ref.ID
		if ref == "" {
			ref = c.RefID
		}
		u, err := update(ref, c.ToHash, c.Type == "DELETE")
		if err != nil {
			return ev, err
		}
		ev.Updates = append(ev.Updates, u)
	}
	r := p.Repository
	ev.Kind = kindPush
	ev.Repo.FullName = r.Project.Key + "/" + r.Slug
	if r.Project.Key == "" || r.Slug == "" {
		ev.Repo.FullName = ""
	}
	for _, l := range r.Links.Clone {
		ev.Repo.URLs = append(ev.Repo.URLs, l.Href)
	}
	ev.Pusher = p.Actor.Slug
	if ev.Pusher == "" {
		ev.Pusher = p.Actor.Name
	}
	return ev, nil
}

func decodeBitbucketCloud(ev event, body []byte) (event, error) {
	var p bitbucketCloudPush
	if err := unmarshal(body, &p); err != nil {
		return ev, err
	}
	if len(p.Push.Changes) == 0 {
		return ev, malformed("no changes")
	}
	if len(p.Push.Changes) > maxChanges {
		return ev, malformed("too many changes")
	}
	for _, c := range p.Push.Changes {
		r, deleted := c.New, false
		if r == nil {
			r, deleted = c.Old, true
		}
		if r == nil {
			return ev, malformed("change with neither new nor old")
		}
		var prefix string
		switch r.Type {
		case "branch", "named_branch":
			prefix = "refs/heads/"
		case "tag", "annotated_tag":
			prefix = "refs/tags/"
		default:
			return ev, malformed("unknown ref type %q", limitString(r.Type, 32))
		}
		if r.Name == "" {
			return ev, malformed("no ref name")
		}
		after := r.Target.Hash
		if deleted {
			after = ""
		}
		u, err := update(prefix+r.Name, after, deleted)
		if err != nil {
			return ev, err
		}
		ev.Updates = append(ev.Updates, u)
	}
	ev.Kind = kindPush
	ev.Repo = repoInfo{FullName: p.Repository.FullName, URLs: []string{p.Repository.Links.HTML.Href}}
	ev.Pusher = p.Actor.Nickname
	if ev.Pusher == "" {
		ev.Pusher = p.Actor.DisplayName
	}
	return ev, nil
}

// Generic: see the package documentation.

type genericPush struct {
	Ref        string `json:"ref"`
	After      string `json:"after"`
	Repository string `json:"repository"`
	Pusher     string `json:"pusher"`
}

func decodeGeneric(name string, body []byte) (event, error) {
	ev := event{Name: name}
	switch name {
	case "ping":
		ev.Kind = kindPing
		return ev, nil
	case "", "push":
		ev.Name = "push"
	default:
		return ev, nil
	}
	var p genericPush
	if err := unmarshal(body, &p); err != nil {
		return ev, err
	}
	u, err := update(p.Ref, p.After, false)
	if err != nil {
		return ev, err
	}
	ev.Kind = kindPush
	ev.Repo = repoInfo{FullName: p.Repository}
	ev.Pusher = p.Pusher
	ev.Updates = []refUpdate{u}
	return ev, nil
}

// limitString cuts s to at most n bytes (on a rune boundary) for logs and
// reasons.
func limitString(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

func utf8RuneStart(b byte) bool { return b&0xC0 != 0x80 }
