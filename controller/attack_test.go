package controller_test

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/controller"
	"github.com/gitfleet/gitfleet/controller/artifacts"
	"github.com/gitfleet/gitfleet/controller/clientip"
	"github.com/gitfleet/gitfleet/controller/deviceapi"
	"github.com/gitfleet/gitfleet/controller/gitsource"
	"github.com/gitfleet/gitfleet/controller/store/embedded"
	"github.com/gitfleet/gitfleet/webhooks/receive"
	"github.com/labstack/echo/v5"
)

// shortBounds are the server bounds of the slow-client attacks: short, so
// the test is quick, but every assertion is that the server closed the
// connection, never how long it took.
var shortBounds = controller.ServerOptions{
	HeaderTimeout: 300 * time.Millisecond,
	BodyTimeout:   300 * time.Millisecond,
	WriteStall:    300 * time.Millisecond,
	IdleTimeout:   300 * time.Millisecond,
}

// dialTLS opens a TLS connection to the controller.
func dialTLS(t *testing.T, addr string) *tls.Conn {
	t.Helper()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: deadline}, "tcp", addr,
		&tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// serverClosed reads until the connection ends and reports whether the
// server ended it (EOF or reset) rather than the test's own deadline.
func serverClosed(conn net.Conn) (bool, string) {
	conn.SetReadDeadline(time.Now().Add(deadline))
	got, err := io.ReadAll(conn)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false, string(got)
	}
	return true, string(got)
}

// zeros is a large response body that costs nothing to serve.
type zeros struct{ off, size int64 }

func (z *zeros) Read(p []byte) (int, error) {
	if z.off >= z.size {
		return 0, io.EOF
	}
	n := min(int64(len(p)), z.size-z.off)
	clear(p[:n])
	z.off += n
	return int(n), nil
}

func (z *zeros) Seek(off int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
		z.off = off
	case io.SeekCurrent:
		z.off += off
	case io.SeekEnd:
		z.off = z.size + off
	}
	return z.off, nil
}

// bigDownload stands in for the artifact cache's download handler: a
// 256 MiB body, far more than the socket buffers hold.
const bigSize = 256 << 20

var bigDownload = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	http.ServeContent(w, r, "", time.Time{}, &zeros{size: bigSize})
})

func TestAttackSlowClients(t *testing.T) {
	tc := startController(t, func(o *controller.Options, s *controller.ServerOptions) {
		o.Webhooks = &receive.Options{Secret: "webhook-secret", Ref: "main"}
		o.Downloads = func(func(string) bool) http.Handler { return bigDownload }
		*s = shortBounds
	})
	stalledBody := func(path string) func(*testing.T, *tls.Conn) {
		return func(t *testing.T, c *tls.Conn) {
			io.WriteString(c, "POST "+path+" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"+
				"X-GitHub-Event: push\r\nContent-Length: 1000\r\n\r\n{")
		}
	}
	cases := []struct {
		name string
		send func(*testing.T, *tls.Conn)
	}{
		{"slow headers (slowloris) → connection closed", func(t *testing.T, c *tls.Conn) {
			io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
		}},
		{"no request at all after the handshake → connection closed", func(t *testing.T, c *tls.Conn) {}},
		{"stalled webhook body (Content-Length 1000, 1 byte sent) → connection closed", stalledBody("/hooks")},
		{"stalled auth_requests body → connection closed", stalledBody("/api/devices/v1/authentication/auth_requests")},
		{"idle keep-alive connection → closed after its request", func(t *testing.T, c *tls.Conn) {
			io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != http.StatusOK || resp.Close {
				t.Fatalf("healthz: %s close=%v", resp.Status, resp.Close)
			}
		}},
		{"download never read by the client → connection closed", func(t *testing.T, c *tls.Conn) {
			io.WriteString(c, "GET /api/devices/v1/download/x HTTP/1.1\r\nHost: x\r\n\r\n")
			// A stalled reader: read nothing while the server fills the
			// socket buffers and then waits on them.
			time.Sleep(10 * shortBounds.WriteStall)
		}},
	}
	for _, tc2 := range cases {
		t.Run(tc2.name, func(t *testing.T) {
			c := dialTLS(t, tc.Addr)
			tc2.send(t, c)
			closed, got := serverClosed(c)
			if !closed {
				t.Fatalf("the server kept the connection open; it sent %q", limit(got))
			}
			if int64(len(got)) >= bigSize {
				t.Fatalf("the whole download arrived (%d bytes)", len(got))
			}
		})
	}

	t.Run("headers over the size bound → 431", func(t *testing.T) {
		c := dialTLS(t, tc.Addr)
		io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: "+strings.Repeat("a", 2*controller.DefaultMaxHeaderBytes)+"\r\n\r\n")
		_, got := serverClosed(c)
		if !strings.HasPrefix(got, "HTTP/1.1 431") {
			t.Fatalf("got %q", limit(got))
		}
	})

	// The counterpart: a download that keeps moving is never cut, however
	// much longer it takes than every bound above.
	t.Run("slow but steady download → served whole", func(t *testing.T) {
		// A small receive buffer keeps TCP's window moving with each
		// read, as a slow link does.
		raw, err := net.DialTimeout("tcp", tc.Addr, deadline)
		if err != nil {
			t.Fatal(err)
		}
		raw.(*net.TCPConn).SetReadBuffer(64 << 10)
		c := tls.Client(raw, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
		defer c.Close()
		const size = 4 << 20
		io.WriteString(c, "GET /api/devices/v1/download/x HTTP/1.1\r\nHost: x\r\nRange: bytes=0-4194303\r\n\r\n")
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		var (
			n    int64
			rerr error
		)
		buf := make([]byte, 256<<10)
		stop := time.Now().Add(deadline)
		for time.Now().Before(stop) {
			m, err := resp.Body.Read(buf)
			n += int64(m)
			if err != nil {
				rerr = err
				break
			}
			time.Sleep(shortBounds.WriteStall / 60)
		}
		if n != size {
			t.Fatalf("got %d of %d bytes: %v\n%s", n, size, rerr, tc.logs)
		}
	})
}

// TestAttackConnectionFlood: one source cannot hold more than its share
// of connections.
func TestAttackConnectionFlood(t *testing.T) {
	tc := startController(t, func(o *controller.Options, s *controller.ServerOptions) {
		s.MaxConnsPerSource = 8
	})
	for _, c := range []struct {
		name string
		n    int
	}{{"9 connections from one address, 8 allowed → the 9th closed at once", 8}} {
		t.Run(c.name, func(t *testing.T) {
			for range c.n {
				dialTLS(t, tc.Addr) // held until the subtest ends
			}
			conn, err := tls.DialWithDialer(&net.Dialer{Timeout: deadline}, "tcp", tc.Addr, &tls.Config{InsecureSkipVerify: true})
			if err == nil {
				conn.Close()
				t.Fatal("the connection over the limit was served")
			}
		})
	}
}

// A trusted reverse proxy carries many clients' connections: the
// per-source limit does not apply to it.
func TestConnectionLimitSparesTrustedProxy(t *testing.T) {
	tc := startController(t, func(o *controller.Options, s *controller.ServerOptions) {
		s.MaxConnsPerSource = 4
		s.Clients.Trusted, _ = clientip.ParseTrusted([]string{"127.0.0.1"})
	})
	for range 8 {
		dialTLS(t, tc.Addr) // each must handshake; held until the test ends
	}
}

func limit(s string) string {
	if len(s) > 200 {
		return s[:200] + "…"
	}
	return s
}

// TestAttackUnknownRoutes: paths and methods the API does not have get a
// JSON 404 or 405, never a 500.
func TestAttackUnknownRoutes(t *testing.T) {
	tc := startController(t, nil)
	cases := []struct {
		name, method, path string
		want               int
		allow              string
	}{
		{"unknown path → 404", "GET", "/no/such/path", 404, ""},
		{"unknown device API path → 404", "POST", "/api/devices/v1/nothing", 404, ""},
		{"unknown management path → 404", "GET", "/api/management/v1/nothing", 404, ""},
		{"DELETE /healthz → 405 with Allow", "DELETE", "/healthz", 405, "GET"},
		{"GET auth_requests → 405 with Allow", "GET", "/api/devices/v1/authentication/auth_requests", 405, "POST"},
		{"POST /readyz → 405 with Allow", "POST", "/readyz", 405, "GET"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req, _ := http.NewRequest(c.method, tc.URL+c.path, nil)
			resp, err := tc.client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body struct{ Error string }
			if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || body.Error == "" {
				t.Errorf("body is not a JSON error: %v", err)
			}
			if resp.StatusCode != c.want {
				t.Fatalf("status %d, want %d (%q)", resp.StatusCode, c.want, body.Error)
			}
			if c.allow != "" && !strings.Contains(resp.Header.Get("Allow"), c.allow) {
				t.Fatalf("Allow %q, want it to name %s", resp.Header.Get("Allow"), c.allow)
			}
		})
	}
}

// TestAttackTLS: the server speaks TLS 1.2 or later only.
func TestAttackTLS(t *testing.T) {
	// Go's own server default is TLS 1.2 too; re-allow 1.0 there so that
	// only the controller's setting stands between the client and a
	// handshake.
	t.Setenv("GODEBUG", "tls10server=1")
	tc := startController(t, nil)
	for _, v := range []struct {
		name    string
		version uint16
	}{{"TLS 1.0 client → handshake refused", tls.VersionTLS10}, {"TLS 1.1 client → handshake refused", tls.VersionTLS11}} {
		t.Run(v.name, func(t *testing.T) {
			conn, err := tls.DialWithDialer(&net.Dialer{Timeout: deadline}, "tcp", tc.Addr,
				&tls.Config{InsecureSkipVerify: true, MinVersion: v.version, MaxVersion: v.version})
			if err == nil {
				conn.Close()
				t.Fatal("handshake succeeded")
			}
		})
	}
	t.Run("TLS 1.2 client → served", func(t *testing.T) {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: deadline}, "tcp", tc.Addr,
			&tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12})
		if err != nil {
			t.Fatal(err)
		}
		conn.Close()
	})
	t.Run("plain HTTP → 400 and closed, no API answer", func(t *testing.T) {
		conn, err := net.DialTimeout("tcp", tc.Addr, deadline)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		io.WriteString(conn, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
		closed, got := serverClosed(conn)
		if !closed || !strings.HasPrefix(got, "HTTP/1.0 400") || strings.Contains(got, `"ok"`) {
			t.Fatalf("closed=%v, got %q", closed, limit(got))
		}
	})
}

// TestAttackRevokedDevice: what a device removed from Git could still use
// stops working at once.
func TestAttackRevokedDevice(t *testing.T) {
	// The download handler the controller is given asks the controller's
	// check, as artifacts.Cache.DownloadHandler does after the URL's
	// signature and expiry.
	tc := startController(t, func(o *controller.Options, _ *controller.ServerOptions) {
		o.Downloads = func(admitted func(string) bool) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if !admitted(r.URL.Query().Get("device")) {
					http.Error(w, "not accepted", http.StatusForbidden)
					return
				}
				io.WriteString(w, "artifact")
			})
		}
	})
	get := func(device string) int {
		resp, err := tc.client().Get(tc.URL + "/api/devices/v1/download/x?device=" + device)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get("sim-002"); code != http.StatusOK {
		t.Fatalf("declared device: %d", code)
	}
	data, err := os.ReadFile(filepath.Join(tc.Repo.Dir, "devices.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var kept []string
	skip := false
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "    - name: ") {
			skip = line == "    - name: sim-002"
		}
		if !skip {
			kept = append(kept, line)
		}
	}
	sha := tc.Repo.Commit(map[string]string{"devices.yaml": strings.Join(kept, "\n")}, "remove sim-002")
	tc.Trigger()
	stop := time.Now().Add(deadline)
	for tc.Live().Commit.SHA != sha {
		if time.Now().After(stop) {
			t.Fatalf("commit %s not live:\n%s", sha, tc.logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, c := range []struct {
		name, device string
		want         int
	}{
		{"download URL of a device removed from Git → 403", "sim-002", http.StatusForbidden},
		{"download URL of a device never declared → 403", "intruder", http.StatusForbidden},
		{"download URL of a device still declared → served", "sim-001", http.StatusOK},
	} {
		t.Run(c.name, func(t *testing.T) {
			if code := get(c.device); code != c.want {
				t.Fatalf("%d, want %d", code, c.want)
			}
		})
	}
}

// TestAttackHostHeader: the controller offers deployments only with a
// configured public URL to build download URLs on (the device API never
// needs the Host a request names).
func TestAttackHostHeader(t *testing.T) {
	cache, err := artifacts.New(artifacts.Options{Dir: t.TempDir(), DownloadKeys: [][]byte{make([]byte, 32)}})
	if err != nil {
		t.Fatal(err)
	}
	defer cache.Close()
	st, err := embedded.Open(filepath.Join(t.TempDir(), "state.db"), embedded.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	src, err := gitsource.New(gitsource.Options{URL: "file://" + t.TempDir(), Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	for _, c := range []struct {
		name, public string
		ok           bool
	}{
		{"deployments offered without a public URL → New refuses", "", false},
		{"public URL over plain http → New refuses", "http://gitfleet.example", false},
		{"public URL with credentials → New refuses", "https://u:p@gitfleet.example", false},
		{"public URL with a path or query → New refuses", "https://gitfleet.example/dl?x=1", false},
		{"https://host:port → accepted", "https://gitfleet.example:8443", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := controller.New(controller.Options{Source: src, Store: st,
				Devices: deviceapi.Options{Artifacts: cache, PublicURL: c.public}})
			if (err == nil) != c.ok {
				t.Fatalf("New: %v", err)
			}
			if err != nil && strings.Contains(err.Error(), ":p@") {
				t.Fatalf("credentials echoed: %v", err)
			}
		})
	}
}

// TestAttackReadyz: /readyz tells anyone whether the controller is ready,
// and only the holder of the management token why not.
func TestAttackReadyz(t *testing.T) {
	var st interface{ Close() error }
	tc := startController(t, func(o *controller.Options, _ *controller.ServerOptions) {
		st = o.Store.(interface{ Close() error })
	})
	st.Close() // the store now fails every call, with its own error text
	get := func(token string) (int, string) {
		req, _ := http.NewRequest("GET", tc.URL+"/readyz", nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := tc.client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, c := range []struct {
		name, token string
		detail      bool
	}{
		{"store failing, no token → 503 with a generic problem only", "", false},
		{"store failing, wrong token → 503 with a generic problem only", "not-the-token", false},
		{"store failing, management token → 503 with the store's error", tc.Token, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, body := get(c.token)
			if code != http.StatusServiceUnavailable || !strings.Contains(body, `"ready":false`) {
				t.Fatalf("%d %s", code, body)
			}
			hasDetail := strings.Contains(body, "embedded")
			if hasDetail != c.detail || !strings.Contains(body, "store") {
				t.Fatalf("details shown = %v, want %v: %s", hasDetail, c.detail, body)
			}
		})
	}
}

// TestAttackSlowClientsHTTP2: over HTTP/2 a stalled body ends its stream
// just the same.
func TestAttackSlowClientsHTTP2(t *testing.T) {
	tc := startController(t, func(o *controller.Options, s *controller.ServerOptions) {
		o.Webhooks = &receive.Options{Secret: "webhook-secret", Ref: "main"}
		*s = shortBounds
		// Over HTTP/2 a write deadline ends a stream even before its first
		// write: make it long, so that only the body's deadline can act.
		s.WriteStall = 2 * deadline
		s.TLS = &tls.Config{NextProtos: []string{"h2", "http/1.1"}}
	})
	for _, path := range []string{"/hooks", "/api/devices/v1/authentication/auth_requests"} {
		t.Run("stalled body to "+path+" (Content-Length 1000, 1 byte sent) → stream ended", func(t *testing.T) {
			pr, pw := io.Pipe()
			defer pw.Close()
			go pw.Write([]byte("{"))
			req, _ := http.NewRequest("POST", tc.URL+path, pr)
			req.ContentLength = 1000
			req.Header.Set("X-GitHub-Event", "push")
			client := &http.Client{Timeout: deadline, Transport: &http.Transport{ForceAttemptHTTP2: true,
				TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
			resp, err := client.Do(req)
			if err == nil {
				_, err = io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.ProtoMajor != 2 {
					t.Fatalf("spoke %s, not HTTP/2", resp.Proto)
				}
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("the server kept the stream open: %v", err)
			}
		})
	}
}

// TestAttackInternalErrors: an internal error's text is logged, never
// answered.
func TestAttackInternalErrors(t *testing.T) {
	const detail = "dial tcp 10.0.0.5:6379: connection refused"
	var logs syncBuffer
	e := echo.NewWithConfig(echo.Config{Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	e.HTTPErrorHandler = deviceapi.JSONErrors
	e.GET("/plain", func(*echo.Context) error { return errors.New(detail) })
	e.GET("/wrapped", func(*echo.Context) error {
		return echo.NewHTTPError(http.StatusServiceUnavailable, "store unavailable").Wrap(errors.New(detail))
	})
	for _, c := range []struct {
		name, path string
		code       int
	}{
		{"a handler's plain error → 500, generic message, detail logged", "/plain", 500},
		{"an HTTP error wrapping a cause → its status and message, cause logged", "/wrapped", 503},
	} {
		t.Run(c.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			e.ServeHTTP(rec, httptest.NewRequest("GET", c.path, nil))
			if rec.Code != c.code || strings.Contains(rec.Body.String(), "10.0.0.5") || !strings.Contains(rec.Body.String(), `"error"`) {
				t.Fatalf("%d %s", rec.Code, rec.Body)
			}
			if !strings.Contains(logs.String(), "10.0.0.5") {
				t.Fatalf("the detail was not logged: %s", logs.String())
			}
		})
	}
}
