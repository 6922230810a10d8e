package controller_test

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/controller"
	"github.com/gitfleet/gitfleet/controller/devcert"
	"github.com/gitfleet/gitfleet/controller/gitsource"
	"github.com/gitfleet/gitfleet/controller/gitsource/gittest"
	"github.com/gitfleet/gitfleet/controller/store/embedded"
)

// deadline bounds every wait in these tests.
const deadline = 30 * time.Second

// testController is a real Controller following a real Git repository
// (seeded from examples/quickstart) with the embedded store, served over
// real TLS on a loopback port.
type testController struct {
	*controller.Controller
	Repo  *gittest.Repo
	URL   string // https://127.0.0.1:port
	Addr  string
	Token string
	logs  *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  []byte
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b = append(s.b, p...)
	return len(p), nil
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return string(s.b)
}

// startController starts a controller; tune may change the options and
// the server (timeouts) before it starts.
func startController(t *testing.T, tune func(*controller.Options, *controller.ServerOptions)) *testController {
	t.Helper()
	gittest.RequireGit(t)
	_, file, _, _ := runtime.Caller(0)
	repo := gittest.NewRepo(t)
	repo.CopyDir(filepath.Join(filepath.Dir(file), "..", "examples", "quickstart"), "seed")
	logs := &syncBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	src, err := gitsource.New(gitsource.Options{URL: repo.URL(), Ref: "main", Dir: filepath.Join(t.TempDir(), "clone"), Logger: log, PollInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	st, err := embedded.Open(filepath.Join(t.TempDir(), "state.db"), embedded.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	opts := controller.Options{Source: src, Store: st, Branch: "main", Logger: log, ManagementToken: "mgmt-token-for-tests"}
	sopts := controller.ServerOptions{}
	if tune != nil {
		tune(&opts, &sopts)
	}
	c, err := controller.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg := testTLS(t)
	if sopts.TLS != nil && sopts.TLS.NextProtos != nil {
		tlsCfg.NextProtos = sopts.TLS.NextProtos // a test asking for HTTP/2
	}
	sopts.TLS = tlsCfg
	srv := c.Server(sopts)
	go srv.Serve(c.Listener(slowLink{ln}, sopts))
	t.Cleanup(func() { srv.Close() })
	tc := &testController{Controller: c, Repo: repo, Addr: ln.Addr().String(), URL: "https://" + ln.Addr().String(), Token: opts.ManagementToken, logs: logs}
	stop := time.Now().Add(deadline)
	for c.Live() == nil {
		if time.Now().After(stop) {
			t.Fatalf("no commit served within %s:\n%s", deadline, logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return tc
}

// client trusts any certificate: these tests are about the server's
// answers, not its identity.
func (tc *testController) client() *http.Client {
	return &http.Client{Timeout: deadline, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
}

// testTLS is a server TLS configuration with a fresh development
// certificate, as `gitfleet serve` makes without --tls-cert.
func testTLS(t *testing.T) *tls.Config {
	t.Helper()
	c, err := devcert.Ensure(t.TempDir(), nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{c.TLS}, NextProtos: []string{"http/1.1"}}
}

// slowLink gives accepted connections the small send buffer the kernel
// keeps for a slow link (on loopback it grows to megabytes, and a writer
// then waits for half of it to drain).
type slowLink struct{ net.Listener }

func (l slowLink) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetWriteBuffer(64 << 10)
	}
	return c, err
}
