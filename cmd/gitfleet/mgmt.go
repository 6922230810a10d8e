package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"

	"github.com/gitfleet/gitfleet/controller/devcert"
)

// mgmtClient calls the controller's management API. Its connection
// settings come, each on its own, from the flags, else the GITFLEET_*
// environment variables, else the CLI configuration file.
type mgmtClient struct {
	server, token, caCert string // flag values
	configFile            string // --cli-config

	resolved *connection // set by resolve
}

// connection is one resolved set of connection settings, with where each
// came from (for error messages).
type connection struct {
	server, token, caCert         string
	serverFrom, tokenFrom, caFrom string
}

// maxMgmtResponse bounds what the CLI reads from the management API.
const maxMgmtResponse = 16 << 20

// flags adds the management API connection flags (--server, --token,
// --ca-cert, --cli-config) to f.
func (m *mgmtClient) flags(f *pflag.FlagSet) {
	f.StringVar(&m.server, "server", "", "controller URL, e.g. https://gitfleet.example.com:8443 (env GITFLEET_SERVER, config server)")
	f.StringVar(&m.token, "token", "", "management API token, the controller's --management-token (env GITFLEET_TOKEN, config token or tokenFile)")
	f.StringVar(&m.caCert, "ca-cert", "", "PEM file of the CA (or self-signed certificate) to trust for --server (env GITFLEET_CA_CERT, config caCert)")
	f.StringVar(&m.configFile, "cli-config", "", "CLI configuration file (env GITFLEET_CONFIG; default $XDG_CONFIG_HOME/gitfleet/cli.yaml)")
}

// cliConfig is the CLI configuration file.
type cliConfig struct {
	Server    string
	Token     string
	TokenFile string
	CACert    string
	path      string
}

// defaultConfigPath is $XDG_CONFIG_HOME/gitfleet/cli.yaml, else
// ~/.config/gitfleet/cli.yaml; "" when neither is known.
func defaultConfigPath() string {
	if d := os.Getenv("XDG_CONFIG_HOME"); d != "" {
		return filepath.Join(d, "gitfleet", "cli.yaml")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".config", "gitfleet", "cli.yaml")
	}
	return ""
}

// maxConfigBytes bounds the CLI configuration file.
const maxConfigBytes = 64 << 10

// loadCLIConfig reads the configuration file: the one named by --cli-config
// or GITFLEET_CONFIG (which must exist), else the default one if it exists.
func loadCLIConfig(flagPath string) (*cliConfig, error) {
	path, explicit := flagPath, flagPath != ""
	if !explicit {
		path = os.Getenv("GITFLEET_CONFIG")
		explicit = path != ""
	}
	if !explicit {
		path = defaultConfigPath()
	}
	if path == "" {
		return &cliConfig{}, nil
	}
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) && !explicit {
		return &cliConfig{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("CLI configuration: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxConfigBytes+1))
	if err != nil {
		return nil, fmt.Errorf("CLI configuration: %w", err)
	}
	if len(data) > maxConfigBytes {
		return nil, fmt.Errorf("%s: larger than %d KiB: is it the CLI configuration (server, token, caCert)?", path, maxConfigBytes>>10)
	}
	return parseCLIConfig(path, data)
}

// parseCLIConfig decodes a CLI configuration: a YAML mapping of server,
// token or tokenFile, and caCert. Unknown keys, repeated keys and
// non-string values are errors naming path:line. Relative tokenFile and
// caCert paths are relative to the file's directory.
func parseCLIConfig(path string, data []byte) (*cliConfig, error) {
	c := &cliConfig{path: path}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("%s: %v", path, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return c, nil // empty file
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("%s:%d: want a mapping of server, token (or tokenFile) and caCert", path, root.Line)
	}
	fields := map[string]*string{"server": &c.Server, "token": &c.Token, "tokenFile": &c.TokenFile, "caCert": &c.CACert}
	seen := map[string]bool{}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		dst, ok := fields[k.Value]
		switch {
		case !ok:
			return nil, fmt.Errorf("%s:%d: unknown key %q: the keys are server, token, tokenFile and caCert", path, k.Line, k.Value)
		case seen[k.Value]:
			return nil, fmt.Errorf("%s:%d: %s is set twice", path, k.Line, k.Value)
		case v.Kind != yaml.ScalarNode || v.Tag != "!!str" && v.Tag != "!!null":
			return nil, fmt.Errorf("%s:%d: %s must be a string", path, v.Line, k.Value)
		}
		seen[k.Value] = true
		*dst = v.Value
	}
	if c.Token != "" && c.TokenFile != "" {
		return nil, fmt.Errorf("%s: set token or tokenFile, not both", path)
	}
	dir := filepath.Dir(path)
	for _, p := range []*string{&c.TokenFile, &c.CACert} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	return c, nil
}

// resolve settles the connection settings: flag, else environment
// variable, else configuration file.
func (m *mgmtClient) resolve() (*connection, error) {
	if m.resolved != nil {
		return m.resolved, nil
	}
	cfg, err := loadCLIConfig(m.configFile)
	if err != nil {
		return nil, err
	}
	c := &connection{}
	pick := func(dst, from *string, flagVal, flagName, env, cfgVal, cfgKey string) {
		switch {
		case flagVal != "":
			*dst, *from = flagVal, flagName
		case os.Getenv(env) != "":
			*dst, *from = os.Getenv(env), env
		case cfgVal != "":
			*dst, *from = cfgVal, cfg.path+" ("+cfgKey+")"
		}
	}
	pick(&c.server, &c.serverFrom, m.server, "--server", "GITFLEET_SERVER", cfg.Server, "server")
	pick(&c.token, &c.tokenFrom, m.token, "--token", "GITFLEET_TOKEN", cfg.Token, "token")
	pick(&c.caCert, &c.caFrom, m.caCert, "--ca-cert", "GITFLEET_CA_CERT", cfg.CACert, "caCert")
	if c.token == "" && cfg.TokenFile != "" {
		b, err := os.ReadFile(cfg.TokenFile)
		if err != nil {
			return nil, fmt.Errorf("%s: tokenFile: %w", cfg.path, err)
		}
		c.token, c.tokenFrom = strings.TrimSpace(string(b)), cfg.TokenFile+" ("+cfg.path+" tokenFile)"
		if c.token == "" {
			return nil, fmt.Errorf("%s: tokenFile %s is empty", cfg.path, cfg.TokenFile)
		}
	}
	if _, err := parseServer(c); err != nil {
		return nil, err
	}
	m.resolved = c
	return c, nil
}

// parseServer checks the server URL.
func parseServer(c *connection) (*url.URL, error) {
	if c.server == "" {
		return nil, errors.New("no controller given: pass --server https://HOST:PORT (or set GITFLEET_SERVER, or server in the CLI configuration file; see gitfleet help login)")
	}
	u, err := url.Parse(c.server)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil {
		return nil, fmt.Errorf("%s %q: want https://HOST[:PORT] (the controller serves HTTPS only)", c.serverFrom, shownURL(c.server))
	}
	return u, nil
}

func trimSpace(b []byte) []byte { return bytes.TrimSpace(b) }

// shownURL drops user information and the query from a URL for messages.
func shownURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	u.User, u.RawQuery = nil, ""
	return u.String()
}

// tlsConfig is the client TLS configuration: the system roots, or the
// --ca-cert file's certificates only.
func (c *connection) tlsConfig() (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.caCert == "" {
		return cfg, nil
	}
	pemBytes, err := os.ReadFile(c.caCert)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", c.caFrom, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemBytes) {
		return nil, fmt.Errorf("%s %s: no PEM certificate in it", c.caFrom, c.caCert)
	}
	cfg.RootCAs = pool
	return cfg, nil
}

func (m *mgmtClient) get(ctx context.Context, path string, out any) error {
	return m.do(ctx, http.MethodGet, path, 0, out)
}

// post sends a POST without a body, with a client timeout of at least
// timeout (the server may take that long to answer).
func (m *mgmtClient) post(ctx context.Context, path string, timeout time.Duration, out any) error {
	return m.do(ctx, http.MethodPost, path, timeout, out)
}

func (m *mgmtClient) do(ctx context.Context, method, path string, timeout time.Duration, out any) error {
	return m.request(ctx, method, path, timeout, nil, true, out)
}

// postJSON posts v as JSON to an operator route (no management token) and
// decodes the JSON answer into out.
func (m *mgmtClient) postJSON(ctx context.Context, path string, v, out any) error {
	return m.request(ctx, http.MethodPost, path, 0, v, false, out)
}

// request sends method to path, with in as a JSON body when not nil and
// the management token when management, waiting at least timeout for the
// answer, and decodes the JSON answer into out. An error answer is said
// with the server's message and, on the management API, how to fix the
// usual causes.
func (m *mgmtClient) request(ctx context.Context, method, path string, timeout time.Duration, in any, management bool, out any) error {
	c, err := m.resolve()
	if err != nil {
		return err
	}
	tlsCfg, err := c.tlsConfig()
	if err != nil {
		return err
	}
	client := &http.Client{Timeout: 30*time.Second + timeout, Transport: &http.Transport{TLSClientConfig: tlsCfg, Proxy: http.ProxyFromEnvironment}}
	defer client.CloseIdleConnections()
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.server, "/")+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if management && c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := client.Do(req)
	if err != nil {
		return c.explain(ctx, err)
	}
	defer resp.Body.Close()
	what := ""
	if management {
		what = "management API: "
	}
	answer, err := io.ReadAll(io.LimitReader(resp.Body, maxMgmtResponse))
	if err != nil {
		return fmt.Errorf("%s%w", what, err)
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error string `json:"error"`
		}
		_ = json.Unmarshal(answer, &e)
		if e.Error == "" {
			e.Error = http.StatusText(resp.StatusCode)
		}
		switch {
		case !management:
		case resp.StatusCode == http.StatusUnauthorized && c.token == "":
			e.Error += ": no token given; pass --token (or set GITFLEET_TOKEN, or token/tokenFile in the CLI configuration file): the controller's --management-token"
		case resp.StatusCode == http.StatusUnauthorized:
			e.Error += ": check --token (the token came from " + c.tokenFrom + "): it must be the controller's --management-token"
		case resp.StatusCode == http.StatusNotFound && strings.Contains(e.Error, "management API is disabled"):
			e.Error = "the management API is disabled on " + shownURL(c.server) + ": start gitfleet serve with --management-token or --management-token-file (management_token_file in its configuration file)"
		}
		return fmt.Errorf("%s%s: %d %s", what, req.URL.Path, resp.StatusCode, e.Error)
	}
	if err := json.Unmarshal(answer, out); err != nil {
		return fmt.Errorf("%s%s: %w", what, req.URL.Path, err)
	}
	return nil
}

// explain turns a failed request into an error that says how to fix it.
func (c *connection) explain(ctx context.Context, err error) error {
	host := hostOf(c.server)
	var unknown x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var verr *tls.CertificateVerificationError
	switch {
	case errors.As(err, &unknown):
		fp := "(could not read it)"
		if errors.As(err, &verr) && len(verr.UnverifiedCertificates) > 0 {
			fp = devcert.Fingerprint(verr.UnverifiedCertificates[0].Raw)
		} else if leaf := peerCertificate(ctx, host); leaf != nil {
			fp = devcert.Fingerprint(leaf.Raw)
		}
		trust := "the system's CAs"
		if c.caCert != "" {
			trust = c.caCert + " (" + c.caFrom + ")"
		}
		return fmt.Errorf("the certificate of %s is not signed by a CA this CLI trusts (%s).\n"+
			"  The server presented a certificate with SHA-256 fingerprint\n    %s\n"+
			"  Compare it with the fingerprint gitfleet serve printed at startup (sha256_fingerprint), then pass that certificate\n"+
			"  (or the CA that signed it) with --ca-cert FILE, GITFLEET_CA_CERT=FILE, or caCert: FILE in the CLI configuration file",
			host, trust, fp)
	case errors.As(err, &hostErr):
		names := certNames(hostErr.Certificate)
		return fmt.Errorf("the certificate of %s is not valid for %q: it names %s.\n"+
			"  Use one of those names in --server (or GITFLEET_SERVER / server in the CLI configuration file), or give the server a certificate for %q",
			host, hostErr.Host, names, hostErr.Host)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("the controller is not reachable at %s (connection refused): is gitfleet serve running, and is that its --listen address? (the server came from %s)", host, c.serverFrom)
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return fmt.Errorf("cannot resolve %q (the host of %s, from %s): %v", dnsErr.Name, shownURL(c.server), c.serverFrom, dnsErr.Err)
	}
	var rerr tls.RecordHeaderError
	if errors.As(err, &rerr) {
		return fmt.Errorf("%s did not answer TLS: the controller serves HTTPS only; is %s the controller's address?", host, shownURL(c.server))
	}
	var uerr *url.Error
	if errors.As(err, &uerr) {
		err = uerr.Err // the URL is said already
	}
	return fmt.Errorf("management API at %s: %w", host, err)
}

// peerCertificate dials host to read the certificate it presents. The
// connection skips verification only to read the chain: it sends nothing
// (no token) and is closed at once.
func peerCertificate(ctx context.Context, host string) *x509.Certificate {
	d := &tls.Dialer{Config: &tls.Config{InsecureSkipVerify: true}, NetDialer: &net.Dialer{Timeout: 10 * time.Second}}
	conn, err := d.DialContext(ctx, "tcp", host)
	if err != nil {
		return nil
	}
	defer conn.Close()
	certs := conn.(*tls.Conn).ConnectionState().PeerCertificates
	if len(certs) == 0 {
		return nil
	}
	return certs[0]
}

// hostOf is the host:port of a server URL (port 443 when it names none).
func hostOf(server string) string {
	u, err := url.Parse(server)
	if err != nil {
		return server
	}
	if u.Port() == "" {
		return net.JoinHostPort(u.Hostname(), "443")
	}
	return u.Host
}

// certNames lists the names a certificate is valid for.
func certNames(c *x509.Certificate) string {
	if c == nil {
		return "(unknown names)"
	}
	var names []string
	names = append(names, c.DNSNames...)
	for _, ip := range c.IPAddresses {
		names = append(names, ip.String())
	}
	if len(names) == 0 {
		return "no DNS or IP names (only the common name " + fmt.Sprintf("%q", c.Subject.CommonName) + ", which clients ignore)"
	}
	return strings.Join(names, ", ")
}

// listing fetches a management API listing (its items under key) and
// prints it as JSON, or as a table under header with one row per item
// (none on stderr when there is none). It returns how many items it got.
func listing[T any](cmd *cobra.Command, mc *mgmtClient, path, key string, asJSON bool, none, header string, row func(T) string) (int, error) {
	var resp map[string]json.RawMessage
	if err := mc.get(cmd.Context(), path, &resp); err != nil {
		return 0, failed(err)
	}
	var items []T
	if raw, ok := resp[key]; ok {
		if err := json.Unmarshal(raw, &items); err != nil {
			return 0, failed(fmt.Errorf("management API: %s: %q: %w", path, key, err))
		}
	}
	if asJSON {
		if items == nil {
			items = []T{}
		}
		return len(items), printJSON(cmd, items)
	}
	if len(items) == 0 {
		fmt.Fprintln(cmd.ErrOrStderr(), none)
		return 0, nil
	}
	tw := newTable(cmd)
	fmt.Fprintln(tw, header)
	for _, it := range items {
		fmt.Fprintln(tw, row(it))
	}
	return len(items), tw.Flush()
}

// printJSON prints v indented, as the management API's answers are shown.
func printJSON(cmd *cobra.Command, v any) error {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return err
	}
	_, err := cmd.OutOrStdout().Write(b.Bytes())
	return err
}

// newTable returns the aligned table writer of the listing commands.
func newTable(cmd *cobra.Command) *tabwriter.Writer { return newTabWriter(cmd.OutOrStdout()) }

func newTabWriter(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 4, 2, ' ', 0) }
