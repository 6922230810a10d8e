package notifier

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gitfleet/gitfleet/controller/store/embedded"
	"github.com/gitfleet/gitfleet/schema"
	"github.com/gitfleet/gitfleet/webhooks/notify"
	"github.com/gitfleet/gitfleet/webhooks/notify/notifytest"
)

// hookServer is a local HTTPS endpoint that keeps what it is sent and
// answers each request with the next status of its script (then 200),
// or, when handler is set, with handler's answer.
type hookServer struct {
	srv     *httptest.Server
	mu      sync.Mutex
	script  []int
	got     []request
	handler http.Handler
	changed chan struct{}
}

type request struct {
	header http.Header
	body   []byte
	status int
}

func startHook(t *testing.T, script ...int) *hookServer {
	h := &hookServer{script: script, changed: make(chan struct{})}
	h.srv = httptest.NewTLSServer(http.HandlerFunc(h.serve))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *hookServer) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	h.mu.Lock()
	status := http.StatusOK
	if len(h.script) > 0 {
		status, h.script = h.script[0], h.script[1:]
	}
	handler := h.handler
	h.mu.Unlock()
	if status == http.StatusOK && handler != nil {
		rec := httptest.NewRecorder()
		r.Body = io.NopCloser(bytes.NewReader(body))
		handler.ServeHTTP(rec, r)
		status = rec.Code
	}
	w.WriteHeader(status)
	h.mu.Lock()
	h.got = append(h.got, request{header: r.Header.Clone(), body: body, status: status})
	close(h.changed)
	h.changed = make(chan struct{})
	h.mu.Unlock()
}

// requests returns what the server received.
func (h *hookServer) requests() []request {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]request(nil), h.got...)
}

// wait waits until the server has received at least n requests.
func (h *hookServer) wait(t *testing.T, n int) []request {
	t.Helper()
	deadline := time.NewTimer(20 * time.Second)
	defer deadline.Stop()
	for {
		h.mu.Lock()
		got, ch := len(h.got), h.changed
		h.mu.Unlock()
		if got >= n {
			return h.requests()
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("%s got %d requests, want %d", h.srv.URL, got, n)
		}
	}
}

// payloads decodes the webhook bodies received.
func (h *hookServer) payloads(t *testing.T) []notify.Payload {
	t.Helper()
	var out []notify.Payload
	for _, r := range h.requests() {
		var p notify.Payload
		if err := json.Unmarshal(r.body, &p); err != nil {
			t.Fatalf("webhook body %q: %v", r.body, err)
		}
		out = append(out, p)
	}
	return out
}

// slackTexts decodes the Slack messages received.
func (h *hookServer) slackTexts(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, r := range h.requests() {
		var m struct{ Text string }
		if err := json.Unmarshal(r.body, &m); err != nil {
			t.Fatalf("slack body %q: %v", r.body, err)
		}
		out = append(out, m.Text)
	}
	return out
}

// clientFor returns an HTTP client that trusts the servers' certificates.
func clientFor(servers ...*hookServer) *http.Client {
	pool := x509.NewCertPool()
	for _, s := range servers {
		pool.AddCert(s.srv.Certificate())
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return &http.Client{Transport: tr}
}

// gate is a Sleeper: a wait of one of the batch windows blocks until the
// test opens the gate; any other wait (a retry backoff) passes at once, so
// that retries need no wall-clock time.
type gate struct {
	windows map[time.Duration]bool
	open    chan struct{}
	once    sync.Once
}

func newGate(windows ...time.Duration) *gate {
	g := &gate{windows: map[time.Duration]bool{}, open: make(chan struct{})}
	for _, w := range windows {
		g.windows[w] = true
	}
	return g
}

func (g *gate) Sleep(ctx context.Context, d time.Duration) error {
	if !g.windows[d] {
		return ctx.Err()
	}
	select {
	case <-g.open:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Open lets every window, now and later, pass.
func (g *gate) Open() { g.once.Do(func() { close(g.open) }) }

// The batch windows of the tests, distinct so the gate can tell them from
// retry backoffs.
const (
	mailWindow  = 41 * time.Second
	slackWindow = 43 * time.Second
)

// logBuffer is a slog logger the test can read.
type logBuffer = notifytest.LogBuffer

// fleetYAML is a small valid fleet: an artifact, a rollout "canary", a
// check "ssh-root", and the notifications given.
const fleetYAML = `apiVersion: gitfleet.io/v1
kind: Artifact
metadata: {name: app-2}
spec: {source: artifacts/app-2.mender, deviceTypes: [sim]}
---
apiVersion: gitfleet.io/v1
kind: Rollout
metadata: {name: canary}
spec:
  artifact: app-2
  target: {all: true}
  phases: [{name: all, percent: 100}]
---
apiVersion: gitfleet.io/v1
kind: Rollout
metadata: {name: stable}
spec:
  artifact: app-2
  priority: 1
  target: {all: true}
  phases: [{name: all, percent: 100}]
---
apiVersion: gitfleet.io/v1
kind: MonitorCheck
metadata: {name: ssh-root}
spec: {rootLogin: {}, severity: critical}
---
apiVersion: gitfleet.io/v1
kind: MonitorCheck
metadata: {name: disk}
spec: {fileChange: {paths: [/etc/fstab]}}
`

// loadFleet loads fleetYAML plus the notification manifests given (YAML
// documents), failing the test on any error.
func loadFleet(t *testing.T, notifications ...string) *schema.Fleet {
	t.Helper()
	fsys := fstest.MapFS{"fleet.yaml": {Data: []byte(fleetYAML), Mode: 0o644}}
	for i, n := range notifications {
		fsys[fmt.Sprintf("notifications/%d.yaml", i)] = &fstest.MapFile{Data: []byte(n), Mode: 0o644}
	}
	f, err := schema.Load(fsys)
	if err != nil {
		t.Fatalf("load fleet:\n%v", err)
	}
	return f
}

// notification is a Notification manifest named name with the spec given
// as YAML flow mappings (one per line).
func notification(name string, spec ...string) string {
	return "apiVersion: gitfleet.io/v1\nkind: Notification\nmetadata: {name: " + name + "}\nspec:\n  " +
		strings.Join(spec, "\n  ") + "\n"
}

// writeSecret writes a secret file and returns its path.
func writeSecret(t *testing.T, name, value string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(value), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// env is a fake environment for Secrets.LookupEnv.
func env(kv ...string) func(string) (string, bool) {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

// openStore opens an embedded store in a temporary directory.
func openStore(t *testing.T) store.Store {
	t.Helper()
	st, err := embedded.Open(filepath.Join(t.TempDir(), "state.db"), embedded.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// closeNotifier closes n with a deadline, failing the test if it is missed.
func closeNotifier(t *testing.T, n *Notifier) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n.Close(ctx); err != nil {
		t.Fatalf("close: %v", err)
	}
}

// smtpServer starts a local SMTP server with STARTTLS and credentials.
func smtpServer(t *testing.T) *notifytest.SMTPServer {
	return notifytest.StartSMTP(t, notifytest.SMTPOptions{Username: "fleet", Password: "smtp-PASSWORD-7c1", TLS: true})
}

// smtpSettings are the notifier's settings for srv.
func smtpSettings(srv *notifytest.SMTPServer) SMTP {
	return SMTP{Addr: srv.Addr(), From: "gitfleet@fleet.example", Username: "fleet", Password: "smtp-PASSWORD-7c1",
		DigestWindow: mailWindow, TLSConfig: &tls.Config{RootCAs: srv.RootCAs()}}
}

// writeFile replaces a file's content.
func writeFile(path, content string) error { return os.WriteFile(path, []byte(content), 0o600) }
