package agent

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

// setDeployment makes the fake server offer name from uri as it is (deploy
// would turn a local path into an https URL).
func (e *testEnv) setDeployment(name, uri string) {
	e.server.mu.Lock()
	e.server.next = &Deployment{ID: "dep-" + name, ArtifactName: name, URI: uri}
	e.server.mu.Unlock()
}

// TestAttackServerSentSources: a deployment whose source the agent must
// not read fails before anything is read; the failure and its reason
// reach the server. (device/sim runs the same attacks on the binary.)
func TestAttackServerSentSources(t *testing.T) {
	signer, _ := signers(t)
	plain := func(t *testing.T, path string) string {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.ServeFile(w, r, path) }))
		t.Cleanup(srv.Close)
		return srv.URL + "/a.mender"
	}
	for _, tc := range []struct {
		name string
		uri  func(t *testing.T, e *testEnv, path string) string
	}{
		{"local path to a valid signed artifact → refused", func(t *testing.T, e *testEnv, path string) string { return path }},
		{"file:// URL → refused", func(t *testing.T, e *testEnv, path string) string { return "file://" + path }},
		{"plain http without AllowHTTPDownloads → refused", func(t *testing.T, e *testEnv, path string) string { return plain(t, path) }},
		{"https URL with user:password → refused", func(t *testing.T, e *testEnv, path string) string {
			return strings.Replace(e.fileURL(path), "https://", "https://user:pw@", 1)
		}},
		{"https URL that redirects to plain http → refused", func(t *testing.T, e *testEnv, path string) string {
			target := plain(t, path)
			e.fileURL(path) // the agent trusts the file server's certificate
			redirect := httptest.NewUnstartedServer(http.RedirectHandler(target, http.StatusFound))
			redirect.TLS = e.files.TLS
			redirect.StartTLS()
			t.Cleanup(redirect.Close)
			e.opts = func(o *Options) { o.Download.HTTP = redirect.Client() }
			return redirect.URL + "/a.mender"
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t, "release-1")
			path := buildArtifact(t, e.dir, "release-2", []byte("new image"), signer)
			e.setDeployment("release-2", tc.uri(t, e, path))
			a, ctx := e.agent()
			_, err := a.CheckUpdate(ctx)
			if !errors.Is(err, ErrFailed) {
				t.Fatalf("CheckUpdate: %v, want ErrFailed", err)
			}
			if got := e.server.final(); !slices.Equal(got, []string{StatusFailure}) {
				t.Fatalf("final statuses %v", got)
			}
			if len(e.dev.calls) != 0 {
				t.Fatalf("installer calls %v", e.dev.calls)
			}
			if log := fmt.Sprint(e.server.logs); !strings.Contains(log, "refused") {
				t.Errorf("deployment log %s does not say why", log)
			}
			if strings.Contains(fmt.Sprint(e.server.logs, err), "pw@") {
				t.Errorf("credentials in the log or error")
			}
		})
	}
}

// TestAllowHTTPDownloads: with AllowHTTPDownloads a plain http source is
// read.
func TestAllowHTTPDownloads(t *testing.T) {
	signer, _ := signers(t)
	e := newTestEnv(t, "release-1")
	path := buildArtifact(t, e.dir, "release-2", []byte("new image"), signer)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f, _ := os.Open(path)
		defer f.Close()
		http.ServeContent(w, r, "", time.Time{}, f)
	}))
	defer srv.Close()
	e.cfg.AllowHTTPDownloads = true
	e.setDeployment("release-2", srv.URL+"/a.mender")
	e.runToEnd()
	if got := e.server.final(); !slices.Equal(got, []string{StatusSuccess}) {
		t.Fatalf("final statuses %v", got)
	}
}
