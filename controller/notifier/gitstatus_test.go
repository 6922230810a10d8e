package notifier

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/controller/store"
)

// githubHost is a local HTTPS server with GitHub's commit status endpoint;
// it answers 401 to any token but its own and keeps what it accepted.
type githubHost struct {
	srv   *httptest.Server
	token string
	mu    sync.Mutex
	got   []ghStatus
	other []string // requests to other paths
}

type ghStatus struct {
	Path  string
	State string `json:"state"`
	Desc  string `json:"description"`
	Ctx   string `json:"context"`
	URL   string `json:"target_url"`
}

func startGitHub(t *testing.T, token string) *githubHost {
	h := &githubHost{token: token}
	h.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, _ := io.ReadAll(r.Body)
		h.mu.Lock()
		defer h.mu.Unlock()
		if r.Method != http.MethodPost || !strings.HasPrefix(r.URL.Path, "/repos/acme/fleet/statuses/") ||
			r.Header.Get("Accept") != "application/vnd.github+json" {
			h.other = append(h.other, r.Method+" "+r.URL.Path)
			w.WriteHeader(http.StatusNotFound)
			return
		}
		if r.Header.Get("Authorization") != "Bearer "+h.token {
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = io.WriteString(w, `{"message":"Bad credentials"}`)
			return
		}
		var s ghStatus
		if err := json.Unmarshal(raw, &s); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		s.Path = r.URL.Path
		h.got = append(h.got, s)
		w.WriteHeader(http.StatusCreated)
	}))
	t.Cleanup(func() {
		h.srv.Close()
		if len(h.other) > 0 {
			t.Errorf("GitHub host: unexpected requests %v", h.other)
		}
	})
	return h
}

func (h *githubHost) wait(t *testing.T, n int) []ghStatus {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		h.mu.Lock()
		got := append([]ghStatus(nil), h.got...)
		h.mu.Unlock()
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("the GitHub host has %d statuses, want %d: %+v", len(got), n, got)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A gitStatus Notification sets statuses on the commit that started the
// rollout, even for the events of a later live commit, with the
// generation's counts from the store; two replicas appending the same
// events set each status once.
func TestGitStatusFollowsTheRolloutCommit(t *testing.T) {
	const (
		shaA = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" // starts the rollout
		shaB = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb" // a later, unrelated commit
	)
	gh := startGitHub(t, "ghp-test-token")
	ctx := context.Background()
	st := openStore(t)
	now := time.Now()
	if _, err := st.SetLive(ctx, store.CommitRecord{SHA: shaA, Committed: now, Loaded: now}, ""); err != nil {
		t.Fatal(err)
	}
	recs := []store.RolloutRecord{{Name: "canary", Artifact: "app@1", Settings: []byte(`{"phases":[{"percent":100}]}`)}}
	if _, err := st.PutRollouts(ctx, shaA, recs); err != nil {
		t.Fatal(err)
	}
	g := store.GenerationRef{Rollout: "canary", Generation: 1}
	for _, d := range []string{"d1", "d2", "d3"} {
		if _, ok, err := st.Admit(ctx, g, 0, 10, d); err != nil || !ok {
			t.Fatalf("admit %s: %v %v", d, ok, err)
		}
	}
	for d, state := range map[string]string{"d1": store.StateSuccess, "d2": store.StateSuccess} {
		if _, _, err := st.Report(ctx, g, d, state, 0); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.SetLive(ctx, store.CommitRecord{SHA: shaB, Committed: now, Loaded: now}, shaA); err != nil {
		t.Fatal(err)
	}
	if _, err := st.PutRollouts(ctx, shaB, recs); err != nil {
		t.Fatal(err)
	}

	fleet := loadFleet(t, notification("git", "gitStatus: {provider: github, url: '"+gh.srv.URL+"', repository: acme/fleet, token: {env: GH_TOKEN}}",
		"events: [rollout.started, rollout.phase_completed, rollout.completed, rollout.aborted]"))
	replica := func() (store.EventLog, *Notifier) {
		n, err := New(Options{Secrets: Secrets{LookupEnv: env("GH_TOKEN", "ghp-test-token")}, Client: gh.srv.Client(),
			PublicURL: "https://gitfleet.example.com/"})
		if err != nil {
			t.Fatal(err)
		}
		if err := n.Configure(fleet); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { closeNotifier(t, n) })
		return EventLog(st, n), n
	}
	log1, _ := replica()
	log2, n2 := replica()
	events := []store.Event{
		{Commit: shaA, Kind: "rollout.started", Subject: "canary/g1", Message: "rollout canary started"},
		{Commit: shaB, Kind: "rollout.phase_completed", Subject: "canary/g1/phase0", Message: "rollout canary generation 1: phase 0 completed"},
		{Commit: shaB, Kind: "rollout.completed", Subject: "canary/g1", Message: "rollout canary generation 1 completed"},
	}
	for _, l := range []store.EventLog{log1, log2} {
		for _, e := range events {
			if _, _, err := l.AppendEvent(ctx, e); err != nil {
				t.Fatal(err)
			}
		}
	}
	// The second replica's appends were duplicates (the store said so,
	// synchronously): nothing of theirs is queued. A last event through
	// the second replica, once the first's statuses are in (two replicas'
	// sinks do not order their statuses between them).
	gh.wait(t, 3)
	if _, _, err := log2.AppendEvent(ctx, store.Event{Commit: shaB, Kind: "rollout.aborted", Subject: "canary/g1",
		Message: "rollout canary generation 1 aborted: 1 of 3 devices failed"}); err != nil {
		t.Fatal(err)
	}
	got := gh.wait(t, 4)
	want := []ghStatus{
		{"/repos/acme/fleet/statuses/" + shaA, "pending", "rollout started (generation 1); 3 admitted, 2 succeeded, 0 failed", "gitfleet/rollout/canary", "https://gitfleet.example.com/api/management/v1/rollouts#canary"},
		{"/repos/acme/fleet/statuses/" + shaA, "pending", "phase 0 completed; 3 admitted, 2 succeeded, 0 failed", "gitfleet/rollout/canary", "https://gitfleet.example.com/api/management/v1/rollouts#canary"},
		{"/repos/acme/fleet/statuses/" + shaA, "success", "rollout completed (generation 1); 3 admitted, 2 succeeded, 0 failed", "gitfleet/rollout/canary", "https://gitfleet.example.com/api/management/v1/rollouts#canary"},
		{"/repos/acme/fleet/statuses/" + shaA, "failure", "aborted (3 admitted, 2 succeeded, 0 failed): rollout canary generation 1 aborted: 1 of 3 devices failed", "gitfleet/rollout/canary", "https://gitfleet.example.com/api/management/v1/rollouts#canary"},
	}
	if len(got) != len(want) {
		t.Fatalf("statuses %+v, want %d", got, len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("status %d:\n got %+v\nwant %+v", i, got[i], want[i])
		}
	}
	if p := n2.Problems(); p != nil {
		t.Errorf("Problems() = %v", p)
	}
}

// A token the host refuses is a problem of the notifier, sent once.
func TestGitStatusRefusedTokenIsAProblem(t *testing.T) {
	gh := startGitHub(t, "the-right-token")
	n, err := New(Options{Secrets: Secrets{LookupEnv: env("GH_TOKEN", "a-wrong-token")}, Client: gh.srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeNotifier(t, n) })
	if err := n.Configure(loadFleet(t, notification("git", "gitStatus: {provider: github, url: '"+gh.srv.URL+"', repository: acme/fleet, token: {env: GH_TOKEN}}"))); err != nil {
		t.Fatal(err)
	}
	log := EventLog(openStore(t), n)
	if _, _, err := log.AppendEvent(context.Background(), store.Event{Commit: strings.Repeat("c", 40), Kind: "rollout.started", Subject: "canary/g1"}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(n.Problems()) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no problem reported; stats %+v", n.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
	p := n.Problems()
	var msg string
	for _, e := range p {
		msg += e.Error()
	}
	if len(p) != 1 || !strings.Contains(msg, "notification git") || !strings.Contains(msg, "HTTP 401") || strings.Contains(msg, "a-wrong-token") {
		t.Errorf("Problems() = %v", p)
	}
	if st := n.Stats(); st.Total.Failed != 1 || st.Sinks[0].Sink != "gitStatus" {
		t.Errorf("stats %+v", st)
	}
}
