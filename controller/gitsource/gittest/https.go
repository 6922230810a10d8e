package gittest

import (
	"crypto/subtle"
	"encoding/pem"
	"io"
	"log"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
)

// HTTPSOptions configure [StartHTTPS].
type HTTPSOptions struct {
	// Username and Password, when either is set, are required as HTTP basic
	// auth on every request (a token is a password here).
	Username, Password string
}

// HTTPSServer serves one repository over smart HTTPS with the real
// git http-backend.
type HTTPSServer struct {
	URL   string // https://127.0.0.1:port/name: the repository
	CAPEM []byte // the certificate to trust (CABundle)

	srv      *httptest.Server
	down     atomic.Bool
	requests atomic.Int64
	denied   atomic.Int64
}

// StartHTTPS serves repoDir read-only until the test ends.
func StartHTTPS(t testing.TB, repoDir string, opts HTTPSOptions) *HTTPSServer {
	t.Helper()
	execPath := RequireGit(t)
	backend := filepath.Join(execPath, "git-http-backend")
	if _, err := os.Stat(backend); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("git-http-backend: %v", err)
		}
		t.Skipf("git-http-backend: %v", err)
	}
	s := &HTTPSServer{}
	cgiHandler := &cgi.Handler{
		Path: backend,
		Root: "/",
		Env: []string{
			"GIT_PROJECT_ROOT=" + filepath.Dir(repoDir),
			"GIT_HTTP_EXPORT_ALL=1",
			"GIT_CONFIG_NOSYSTEM=1",
		},
	}
	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.requests.Add(1)
		if s.down.Load() {
			// Drop the connection without an answer, as a dead host or a
			// failing proxy would.
			if hj, ok := w.(http.Hijacker); ok {
				if conn, _, err := hj.Hijack(); err == nil {
					conn.Close()
					return
				}
			}
			http.Error(w, "down", http.StatusBadGateway)
			return
		}
		if opts.Username != "" || opts.Password != "" {
			user, pass, ok := r.BasicAuth()
			if !ok || subtle.ConstantTimeCompare([]byte(user), []byte(opts.Username)) != 1 ||
				subtle.ConstantTimeCompare([]byte(pass), []byte(opts.Password)) != 1 {
				s.denied.Add(1)
				w.Header().Set("WWW-Authenticate", `Basic realm="gittest"`)
				http.Error(w, "authentication required", http.StatusUnauthorized)
				return
			}
		}
		cgiHandler.ServeHTTP(w, r)
	}))
	// Clients that refuse the certificate are what some tests want.
	s.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	s.srv.StartTLS()
	t.Cleanup(s.srv.Close)
	s.URL = s.srv.URL + "/" + filepath.Base(repoDir)
	s.CAPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.srv.Certificate().Raw})
	return s
}

// ServeHTTPS serves repoDir over HTTPS, requiring basic auth user:pass when
// either is set, and returns the repository URL and the CA to trust.
func ServeHTTPS(t testing.TB, repoDir, user, pass string) (url string, caPEM []byte) {
	t.Helper()
	s := StartHTTPS(t, repoDir, HTTPSOptions{Username: user, Password: pass})
	return s.URL, s.CAPEM
}

// SetDown makes the server drop every connection (down) or serve again.
func (s *HTTPSServer) SetDown(down bool) { s.down.Store(down) }

// Requests counts the HTTP requests received so far.
func (s *HTTPSServer) Requests() int64 { return s.requests.Load() }

// Denied counts the requests refused for bad or missing credentials.
func (s *HTTPSServer) Denied() int64 { return s.denied.Load() }

// Close stops the server: later connections are refused.
func (s *HTTPSServer) Close() { s.srv.Close() }
