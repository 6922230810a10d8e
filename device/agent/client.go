package agent

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"
)

// Server is what the agent needs from the controller's device API. Client
// is the real one; tests fake it.
type Server interface {
	// Next asks for the next deployment; nil without error when there is
	// none.
	Next(ctx context.Context, provides map[string]string) (*Deployment, error)
	// Status reports a deployment status. ErrAborted means the server
	// aborted the deployment (409).
	Status(ctx context.Context, id, status, substate string) error
	// Log uploads the deployment log.
	Log(ctx context.Context, id string, msgs []LogMessage) error
	// Inventory replaces the device's inventory.
	Inventory(ctx context.Context, attrs []Attribute) error
}

// LogMessage is one line of a deployment log.
type LogMessage struct {
	Timestamp string `json:"timestamp"`
	Level     string `json:"level"`
	Message   string `json:"message"`
}

// Attribute is one inventory attribute. Value is a string or a list of
// strings.
type Attribute struct {
	Name  string `json:"name"`
	Value any    `json:"value"`
}

// Errors from the device API.
var (
	// ErrUnauthorized: the server does not (or no longer) accept the
	// device; authentication is retried at the next poll.
	ErrUnauthorized = errors.New("agent: device not authorized")
	// ErrAborted: the server aborted the deployment (409 on a status).
	ErrAborted = errors.New("agent: deployment aborted by the server")
	// ErrServer: the server could not be reached or failed (5xx, 429,
	// network); try again later.
	ErrServer = errors.New("agent: server unavailable")
	// ErrRejected: the server refused the request (4xx); retrying the same
	// request will not help.
	ErrRejected = errors.New("agent: request refused by the server")
)

// Response bounds.
const (
	maxTokenBytes    = 64 << 10
	maxNextBytes     = 64 << 10
	maxErrorBodyRead = 4 << 10
)

// ClientOptions configure a Client.
type ClientOptions struct {
	// ServerURL is the controller's base URL.
	ServerURL string
	// HTTP is the client for API calls; its transport is shared with
	// artifact downloads. Default: HTTPClient(nil).
	HTTP *http.Client
	// Key signs authentication requests; PublicKeyPEM is its public key.
	Key          crypto.Signer
	PublicKeyPEM []byte
	// Identity returns the device identity (attribute → value).
	Identity func(ctx context.Context) (map[string]string, error)
	// TenantToken is sent with authentication requests.
	TenantToken string
}

// Client speaks the Mender device API. It authenticates on first use and
// reuses its token until a call answers 401, then authenticates again once.
type Client struct {
	opts ClientOptions

	mu    sync.Mutex
	token string
}

var _ Server = (*Client)(nil)

// NewClient returns a client.
func NewClient(opts ClientOptions) *Client {
	if opts.HTTP == nil {
		opts.HTTP, _ = HTTPClient("")
	}
	opts.ServerURL = strings.TrimRight(opts.ServerURL, "/")
	return &Client{opts: opts}
}

// HTTPClient returns an HTTP client trusting the system roots plus the PEM
// certificates in caFile (when set).
func HTTPClient(caFile string) (*http.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.ResponseHeaderTimeout = time.Minute
	if caFile != "" {
		pem, err := readFileBounded(caFile, 1<<20)
		if err != nil {
			return nil, fmt.Errorf("server certificate: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("server certificate %s: no PEM certificate", caFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	// No overall Timeout: artifact downloads are long. Every API call
	// carries its own deadline.
	return &http.Client{Transport: tr}, nil
}

// Token returns the current token, authenticating when there is none.
func (c *Client) Token(ctx context.Context) (string, error) {
	c.mu.Lock()
	tok := c.token
	c.mu.Unlock()
	if tok != "" {
		return tok, nil
	}
	return c.authenticate(ctx)
}

// Invalidate drops token if it is still the current one, so that the next
// Token authenticates again: the server refused it (401).
func (c *Client) Invalidate(token string) {
	c.mu.Lock()
	if c.token == token {
		c.token = ""
	}
	c.mu.Unlock()
}

func (c *Client) authenticate(ctx context.Context) (string, error) {
	id, err := c.opts.Identity(ctx)
	if err != nil {
		return "", fmt.Errorf("identity: %w", err)
	}
	idJSON, err := json.Marshal(id)
	if err != nil {
		return "", err
	}
	body, err := json.Marshal(struct {
		IDData      string `json:"id_data"`
		PubKey      string `json:"pubkey"`
		TenantToken string `json:"tenant_token"`
	}{string(idJSON), string(c.opts.PublicKeyPEM), c.opts.TenantToken})
	if err != nil {
		return "", err
	}
	sig, err := signBody(c.opts.Key, body)
	if err != nil {
		return "", fmt.Errorf("sign auth request: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.opts.ServerURL+"/api/devices/v1/authentication/auth_requests", bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-MEN-Signature", base64.StdEncoding.EncodeToString(sig))
	resp, err := c.opts.HTTP.Do(req)
	if err != nil {
		return "", fmt.Errorf("%w: authenticate: %v", ErrServer, redactURL(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", statusError("authenticate", resp)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxTokenBytes+1))
	if err != nil {
		return "", fmt.Errorf("%w: authenticate: %v", ErrServer, err)
	}
	if len(b) > maxTokenBytes {
		return "", fmt.Errorf("%w: authenticate: token larger than %d bytes", ErrRejected, maxTokenBytes)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("%w: authenticate: empty token", ErrRejected)
	}
	c.mu.Lock()
	c.token = tok
	c.mu.Unlock()
	return tok, nil
}

// signBody signs SHA-256(body) with key: ASN.1 for ECDSA, PKCS#1 v1.5 for
// RSA; Ed25519 signs the body itself.
func signBody(key crypto.Signer, body []byte) ([]byte, error) {
	if _, ok := key.Public().(ed25519.PublicKey); ok {
		return key.Sign(rand.Reader, body, crypto.Hash(0))
	}
	sum := sha256.Sum256(body)
	return key.Sign(rand.Reader, sum[:], crypto.SHA256)
}

// call makes an authenticated API call, authenticating again once on 401.
// It returns the response with its body open for 2xx answers.
func (c *Client) call(ctx context.Context, method, path string, body any) (*http.Response, error) {
	return c.callWith(ctx, method, path, body, nil)
}

// callWith is call with extra request headers. With If-None-Match among
// them, a 304 answer is returned like a 2xx one.
func (c *Client) callWith(ctx context.Context, method, path string, body any, hdr http.Header) (*http.Response, error) {
	var data []byte
	if body != nil {
		var err error
		if data, err = json.Marshal(body); err != nil {
			return nil, err
		}
	}
	for attempt := 0; ; attempt++ {
		tok, err := c.Token(ctx)
		if err != nil {
			return nil, err
		}
		req, err := http.NewRequestWithContext(ctx, method, c.opts.ServerURL+path, bytes.NewReader(data))
		if err != nil {
			return nil, err
		}
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		for k, vs := range hdr {
			req.Header[k] = vs
		}
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := c.opts.HTTP.Do(req)
		if err != nil {
			return nil, fmt.Errorf("%w: %s %s: %v", ErrServer, method, path, redactURL(err))
		}
		if resp.StatusCode == http.StatusUnauthorized && attempt == 0 {
			drain(resp)
			c.Invalidate(tok)
			continue
		}
		if resp.StatusCode == http.StatusNotModified && req.Header.Get("If-None-Match") != "" {
			return resp, nil
		}
		if resp.StatusCode/100 != 2 {
			defer drain(resp)
			return nil, statusError(method+" "+path, resp)
		}
		return resp, nil
	}
}

// Next implements Server: POST v2 …/next, falling back to POST v1 and
// GET v1 when the server answers 404 or 405.
func (c *Client) Next(ctx context.Context, provides map[string]string) (*Deployment, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	const base = "/api/devices/v1/deployments/device/deployments/next"
	resp, err := c.call(ctx, http.MethodPost, "/api/devices/v2/deployments/device/deployments/next",
		map[string]any{"device_provides": provides})
	if isStatus(err, http.StatusNotFound, http.StatusMethodNotAllowed) {
		resp, err = c.call(ctx, http.MethodPost, base, provides)
	}
	if isStatus(err, http.StatusNotFound, http.StatusMethodNotAllowed) {
		q := url.Values{"artifact_name": {provides["artifact_name"]}, "device_type": {provides["device_type"]}}
		resp, err = c.call(ctx, http.MethodGet, base+"?"+q.Encode(), nil)
	}
	if err != nil {
		return nil, err
	}
	defer drain(resp)
	if resp.StatusCode == http.StatusNoContent {
		return nil, nil
	}
	var next struct {
		ID       string `json:"id"`
		Artifact struct {
			Name   string `json:"artifact_name"`
			Source struct {
				URI    string `json:"uri"`
				Expire string `json:"expire"`
			} `json:"source"`
			DeviceTypes []string `json:"device_types_compatible"`
		} `json:"artifact"`
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxNextBytes+1))
	if err != nil {
		return nil, fmt.Errorf("%w: deployments/next: %v", ErrServer, err)
	}
	if len(b) > maxNextBytes {
		return nil, fmt.Errorf("%w: deployments/next: answer larger than %d bytes", ErrRejected, maxNextBytes)
	}
	if err := json.Unmarshal(b, &next); err != nil {
		return nil, fmt.Errorf("%w: deployments/next: %v", ErrRejected, err)
	}
	if next.ID == "" || next.Artifact.Source.URI == "" {
		return nil, fmt.Errorf("%w: deployments/next: answer without id or source uri", ErrRejected)
	}
	return &Deployment{
		ID:           next.ID,
		ArtifactName: next.Artifact.Name,
		URI:          next.Artifact.Source.URI,
		Expire:       next.Artifact.Source.Expire,
	}, nil
}

// Status implements Server.
func (c *Client) Status(ctx context.Context, id, status, substate string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	body := map[string]string{"status": status}
	if substate != "" {
		if len(substate) > 200 {
			substate = substate[:200]
		}
		body["substate"] = substate
	}
	resp, err := c.call(ctx, http.MethodPut, "/api/devices/v1/deployments/device/deployments/"+url.PathEscape(id)+"/status", body)
	if isStatus(err, http.StatusConflict) {
		return fmt.Errorf("%w: %s", ErrAborted, id)
	}
	if err != nil {
		return err
	}
	drain(resp)
	return nil
}

// Log implements Server.
func (c *Client) Log(ctx context.Context, id string, msgs []LogMessage) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if msgs == nil {
		msgs = []LogMessage{}
	}
	resp, err := c.call(ctx, http.MethodPut, "/api/devices/v1/deployments/device/deployments/"+url.PathEscape(id)+"/log",
		map[string]any{"messages": msgs})
	if err != nil {
		return err
	}
	drain(resp)
	return nil
}

// Inventory implements Server (PUT: the inventory replaces the old one).
func (c *Client) Inventory(ctx context.Context, attrs []Attribute) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	resp, err := c.call(ctx, http.MethodPut, "/api/devices/v1/inventory/device/attributes", attrs)
	if err != nil {
		return err
	}
	drain(resp)
	return nil
}

// HTTPError is a non-2xx answer.
type HTTPError struct {
	Op     string
	Code   int
	Detail string
	kind   error
}

func (e *HTTPError) Error() string {
	s := fmt.Sprintf("%v: %s: HTTP %d", e.kind, e.Op, e.Code)
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	return s
}

func (e *HTTPError) Unwrap() error { return e.kind }

func statusError(op string, resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBodyRead))
	detail := strings.TrimSpace(string(b))
	var je struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(b, &je) == nil && je.Error != "" {
		detail = je.Error
	}
	if len(detail) > 200 {
		detail = detail[:200]
	}
	kind := ErrRejected
	switch {
	case resp.StatusCode == http.StatusUnauthorized:
		kind = ErrUnauthorized
	case resp.StatusCode >= 500, resp.StatusCode == http.StatusTooManyRequests, resp.StatusCode == http.StatusRequestTimeout:
		kind = ErrServer
	}
	// Strip the query (presigned credentials) from the operation.
	if i := strings.IndexByte(op, '?'); i >= 0 {
		op = op[:i]
	}
	return &HTTPError{Op: op, Code: resp.StatusCode, Detail: detail, kind: kind}
}

func isStatus(err error, codes ...int) bool {
	var he *HTTPError
	if !errors.As(err, &he) {
		return false
	}
	for _, c := range codes {
		if he.Code == c {
			return true
		}
	}
	return false
}

func drain(resp *http.Response) {
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
}

// redactURL strips the query of a *url.Error's URL (presigned URLs carry
// credentials in it).
func redactURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		u := ue.URL
		if i := strings.IndexByte(u, '?'); i >= 0 {
			u = u[:i]
		}
		return &url.Error{Op: ue.Op, URL: u, Err: ue.Err}
	}
	return err
}

// fileExists reports whether path exists.
func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
