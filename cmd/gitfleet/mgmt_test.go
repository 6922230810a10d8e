package main

import (
	"encoding/json"
	"encoding/pem"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gitfleet/gitfleet/controller"
	"github.com/gitfleet/gitfleet/controller/devcert"
)

func TestParseCLIConfig(t *testing.T) {
	for _, c := range []struct {
		name, doc, want string
	}{
		{"unknown key", "server: https://a:1\ntokn: x\n", "cli.yaml:2: unknown key \"tokn\""},
		{"twice", "server: https://a:1\nserver: https://b:1\n", "cli.yaml:2: server is set twice"},
		{"not a string", "server:\n  host: a\n", "cli.yaml:2: server must be a string"},
		{"number", "token: 12\n", "cli.yaml:1: token must be a string"},
		{"list", "- server\n", "cli.yaml:1: want a mapping"},
		{"both tokens", "token: a\ntokenFile: b\n", "set token or tokenFile, not both"},
		{"bad yaml", "server: [\n", "cli.yaml"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := parseCLIConfig("/etc/gitfleet/cli.yaml", []byte(c.doc)); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("%v, want %q", err, c.want)
			}
		})
	}
	cfg, err := parseCLIConfig("/etc/gitfleet/cli.yaml", []byte("# comment\nserver: https://a:1\ntokenFile: tok\ncaCert: /abs/ca.pem\n"))
	if err != nil || cfg.Server != "https://a:1" || cfg.TokenFile != "/etc/gitfleet/tok" || cfg.CACert != "/abs/ca.pem" {
		t.Fatalf("%+v %v", cfg, err)
	}
	if cfg, err := parseCLIConfig("x.yaml", nil); err != nil || cfg.Server != "" {
		t.Fatalf("empty: %+v %v", cfg, err)
	}
}

// Each setting comes from the flag, else the environment, else the file.
func TestConnectionPrecedence(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "tok"), []byte("from-file\n"), 0o600)
	cfgPath := filepath.Join(dir, "cli.yaml")
	os.WriteFile(cfgPath, []byte("server: https://file:1\ntokenFile: tok\ncaCert: ca.pem\n"), 0o600)

	resolve := func(m mgmtClient) *connection {
		t.Helper()
		c, err := m.resolve()
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	t.Setenv("GITFLEET_CONFIG", cfgPath)
	c := resolve(mgmtClient{})
	if c.server != "https://file:1" || c.token != "from-file" || c.caCert != filepath.Join(dir, "ca.pem") {
		t.Fatalf("from the file: %+v", c)
	}
	t.Setenv("GITFLEET_SERVER", "https://env:1")
	t.Setenv("GITFLEET_TOKEN", "from-env")
	c = resolve(mgmtClient{})
	if c.server != "https://env:1" || c.token != "from-env" || c.caCert != filepath.Join(dir, "ca.pem") || c.serverFrom != "GITFLEET_SERVER" {
		t.Fatalf("from the environment: %+v", c)
	}
	c = resolve(mgmtClient{server: "https://flag:1", caCert: "/flag.pem"})
	if c.server != "https://flag:1" || c.token != "from-env" || c.caCert != "/flag.pem" {
		t.Fatalf("from the flags: %+v", c)
	}
	// An explicit file that does not exist is an error; the default one
	// is optional (TestMain points XDG_CONFIG_HOME at an empty directory).
	if _, err := (&mgmtClient{configFile: filepath.Join(dir, "nope.yaml")}).resolve(); err == nil || !strings.Contains(err.Error(), "nope.yaml") {
		t.Fatalf("missing --cli-config: %v", err)
	}
	t.Setenv("GITFLEET_CONFIG", "")
	t.Setenv("GITFLEET_SERVER", "")
	if _, err := (&mgmtClient{}).resolve(); err == nil || !strings.Contains(err.Error(), "--server") {
		t.Fatalf("no server: %v", err)
	}
	if _, err := (&mgmtClient{server: "http://a:1"}).resolve(); err == nil || !strings.Contains(err.Error(), "https://") {
		t.Fatalf("http server: %v", err)
	}
}

// The CLI's errors say how to fix them.
func TestConnectionErrors(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Header.Get("Authorization") == "Bearer disabled":
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`{"error":"the management API is disabled: start the controller with --management-token"}`))
		case r.Header.Get("Authorization") != "Bearer s3cret":
			w.WriteHeader(http.StatusUnauthorized)
			w.Write([]byte(`{"error":"a valid bearer token is required"}`))
		default:
			json.NewEncoder(w).Encode(controller.Status{Replica: "r1"})
		}
	}))
	defer srv.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644)
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	closedAddr := closed.Addr().String()
	closed.Close()

	for _, c := range []struct {
		name string
		args []string
		want []string
	}{
		{"unknown authority", []string{"--server", srv.URL, "--token", "s3cret"},
			[]string{"--ca-cert", "GITFLEET_CA_CERT", "caCert", devcert.Fingerprint(srv.Certificate().Raw)}},
		{"hostname", []string{"--server", "https://localhost:" + port, "--token", "s3cret", "--ca-cert", ca},
			[]string{`not valid for "localhost"`, "example.com", "127.0.0.1"}},
		{"refused", []string{"--server", "https://" + closedAddr, "--token", "s3cret", "--ca-cert", ca},
			[]string{"not reachable at " + closedAddr, "connection refused"}},
		{"wrong token", []string{"--server", srv.URL, "--token", "nope", "--ca-cert", ca}, []string{"401", "check --token"}},
		{"no token", []string{"--server", srv.URL, "--ca-cert", ca}, []string{"401", "no token given; pass --token"}},
		{"disabled", []string{"--server", srv.URL, "--token", "disabled", "--ca-cert", ca}, []string{"404", "start gitfleet serve with --management-token"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := gitfleet(t, append([]string{"status"}, c.args...)...)
			if err == nil {
				t.Fatal("no error")
			}
			t.Logf("gitfleet status: %v", err)
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("the token is in the error: %v", err)
			}
		})
	}

	// login checks the connection, then writes a 0600 file that later
	// commands read through GITFLEET_CONFIG.
	dir := t.TempDir()
	tok := filepath.Join(dir, "token")
	os.WriteFile(tok, []byte("s3cret\n"), 0o600)
	cfg := filepath.Join(dir, "gitfleet", "cli.yaml")
	if _, _, err := gitfleet(t, "login", "--server", srv.URL, "--token-file", tok, "--cli-config", cfg); err == nil || !strings.Contains(err.Error(), "--ca-cert") {
		t.Fatalf("login without the CA: %v", err)
	}
	if _, err := os.Stat(cfg); err == nil {
		t.Fatal("a failed login wrote the configuration")
	}
	_, stderr, err := gitfleet(t, "login", "--server", srv.URL, "--token-file", tok, "--ca-cert", ca, "--cli-config", cfg)
	if err != nil || !strings.Contains(stderr, "wrote "+cfg) {
		t.Fatalf("login: %v %s", err, stderr)
	}
	if fi, err := os.Stat(cfg); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("config file mode: %v %v", fi.Mode(), err)
	}
	if b, _ := os.ReadFile(cfg); strings.Contains(string(b), "s3cret") {
		t.Fatalf("the token was copied into the configuration:\n%s", b)
	}
	if _, _, err := gitfleet(t, "login", "--server", srv.URL, "--token-file", tok, "--ca-cert", ca, "--cli-config", cfg); err == nil || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("login over an existing file: %v", err)
	}
	t.Setenv("GITFLEET_CONFIG", cfg)
	if out, _, err := gitfleet(t, "status"); err != nil || !strings.Contains(out, "r1") {
		t.Fatalf("status from the configuration: %v\n%s", err, out)
	}
}
