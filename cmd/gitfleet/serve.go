package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/gitfleet/gitfleet/controller"
	"github.com/gitfleet/gitfleet/controller/artifacts"
	"github.com/gitfleet/gitfleet/controller/clientip"
	"github.com/gitfleet/gitfleet/controller/devcert"
	"github.com/gitfleet/gitfleet/controller/deviceapi"
	"github.com/gitfleet/gitfleet/controller/gitsource"
	"github.com/gitfleet/gitfleet/controller/notifier"
	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gitfleet/gitfleet/controller/store/embedded"
	"github.com/gitfleet/gitfleet/controller/store/redis"
	"github.com/gitfleet/gitfleet/webhooks/receive"
	"github.com/spf13/cobra"
	"golang.org/x/time/rate"
)

func newServeCmd() *cobra.Command {
	cfg := defaultServeConfig()
	cmd := &cobra.Command{
		Use:   "serve --repo URL [--branch main] [--redis URL | --data-dir DIR] [--tls-cert F --tls-key F] [--public-url URL] [--webhook-secret S]",
		Short: "Run the controller: follow the fleet repository and serve devices over HTTPS",
		Long: `Run the controller. It follows one branch of the fleet repository (fetching
every --poll-interval, and at once when a Git host webhook arrives on
/hooks), validates each new commit and makes it live, and serves over HTTPS
only: webhooks, the read-only management API (/api/management/v1, with
--management-token), /healthz, /readyz and /metrics.

Devices download artifacts from presigned URLs built on --public-url, the
https://host[:port] they reach the controller at (never on the Host a request
names). Without it, the --listen address is used when it names a host, or
the one --hostname of the development certificate; otherwise serve refuses
to start. Slow or stalled clients are cut off (headers 10s, request bodies
30s, a response write that makes no progress for 60s, idle connections 60s),
but a download that keeps moving may take as long as it needs.

Notification manifests send events (commits, rollouts, alerts) to signed
webhooks, Slack-compatible chats and, through the SMTP server --smtp-addr
(STARTTLS required; --smtp-from, --smtp-username, --smtp-password-file), by
e-mail; their secrets are read from the controller's environment or files.
A Notification that cannot be carried out is logged at each commit and
counted in gitfleet_notification_problems, and never holds a commit back.

DeviceConfig secrets are resolved when a commit is loaded: a file of
--config-secrets-dir, or an age ciphertext decrypted with the identity file
--config-age-identity (age-keygen -o FILE; refused when others may read it).
A commit with a secret the controller cannot resolve is refused, each such
secret named with the way to fix it (see docs/configuration.md).

State lives in Redis (--redis; several controllers may share one) or, by
default, in an embedded store in --data-dir (one controller). Without
--tls-cert/--tls-key a self-signed development certificate is made in
--data-dir and its fingerprint logged.

Every setting can also come from --config FILE (YAML) or a GITFLEET_…
environment variable (GITFLEET_REPO, GITFLEET_WEBHOOK_SECRET, …).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			resolved, err := loadServeConfig(cmd.Flags(), os.Environ)
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			if err := resolved.validate(); err != nil {
				return &exitError{code: 2, err: err}
			}
			return serve(cmd.Context(), resolved)
		},
	}
	cfg.bindFlags(cmd.Flags())
	return cmd
}

// newLogger returns the JSON logger of serve, at level, writing to w; r
// removes secrets from every line.
func newLogger(w io.Writer, level string, r *redactor) *slog.Logger {
	return newFormatLogger(w, "json", level, r)
}

// newFormatLogger returns serve's logger: one JSON object a line (format
// "json") or key=value text ("text"), at level, writing to w; r removes
// secrets from every line. Durations are written as Go durations ("1m30s"),
// not as nanosecond counts. The keys are documented in docs/operations.md.
func newFormatLogger(w io.Writer, format, level string, r *redactor) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(level))
	opts := &slog.HandlerOptions{Level: l, ReplaceAttr: durationsAsText}
	var h slog.Handler = slog.NewJSONHandler(w, opts)
	if format == "text" {
		h = slog.NewTextHandler(w, opts)
	}
	return slog.New(redactHandler{h: h, r: r})
}

// durationsAsText renders time.Duration values with String.
func durationsAsText(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		a.Value = slog.StringValue(a.Value.Duration().String())
	}
	return a
}

// serve runs the controller until ctx ends. Neither its log nor the error
// it returns carries a secret of cfg (see redact.go). Every line it writes
// is a log line in the chosen format: the standard library's log package
// and go-redis's own logger go through the same handler, and an error that
// stops the controller is logged ("controller stopped") rather than
// printed; the error returned then has an empty message, so the caller
// prints nothing more, and exits non-zero.
func serve(ctx context.Context, cfg serveConfig) error {
	r := newRedactor(cfg.secretValues())
	log := newFormatLogger(os.Stderr, cfg.LogFormat, cfg.LogLevel, r)
	// Libraries that log to the default logger (or the log package) go
	// through the redactor too.
	slog.SetDefault(log)
	redis.LogTo(log)
	err := r.Error(runServe(ctx, cfg, log))
	if err == nil {
		return nil
	}
	log.Error("controller stopped", "err", err)
	return &exitError{code: 1, err: loggedError{err}}
}

// loggedError is an error already in the log: its message is empty, so
// that main prints nothing more; errors.Is and errors.As see the original.
type loggedError struct{ err error }

func (loggedError) Error() string   { return "" }
func (e loggedError) Unwrap() error { return e.err }

func runServe(ctx context.Context, cfg serveConfig, log *slog.Logger) error {
	log.Info("starting gitfleet controller", "settings", cfg)
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.Listen, err)
	}
	defer ln.Close()
	public, err := publicURL(cfg, ln.Addr())
	if err != nil {
		return err
	}
	log.Info("download URLs are built on the public URL", "public_url", public)

	src, err := openSource(cfg, log)
	if err != nil {
		return err
	}
	defer src.Close()

	st, err := openStore(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer st.Close()

	host, _ := os.Hostname()
	opts := controller.Options{
		Source: src, Store: st, Branch: cfg.Branch, Logger: log,
		ManagementToken: cfg.ManagementToken,
		ReplicaID:       fmt.Sprintf("%s-%d", host, os.Getpid()),
	}
	if opts.PolicyBudget, err = cfg.policyBudget(); err != nil {
		return err
	}
	opts.DeviceConfig = cfg.deviceConfig()
	if rs := opts.DeviceConfig.Identities.Recipients(); len(rs) > 0 {
		log.Info("DeviceConfig age secrets are decrypted with --config-age-identity; encrypt them with age -a -r RECIPIENT", "age_recipients", rs)
	}
	trusted, err := clientip.ParseTrusted(cfg.TrustedProxies)
	if err != nil {
		return err
	}
	clients := clientip.Resolver{Trusted: trusted}
	if cfg.WebhookSecret != "" {
		opts.Webhooks = &receive.Options{Secret: receive.Secret(cfg.WebhookSecret), Ref: src.Ref(),
			PerSource: receive.Limit{Rate: cfg.WebhookRate, Burst: cfg.WebhookBurst}, ClientIP: clients.Key}
	} else {
		log.Warn("no --webhook-secret: webhooks are disabled; the repository is polled every " + cfg.PollInterval.String())
	}
	cache, err := openArtifacts(ctx, cfg, st, log)
	if err != nil {
		return err
	}
	defer cache.Close()
	opts.Devices = deviceapi.Options{Artifacts: cache, PublicURL: public, Clients: clients,
		UnknownRate: rate.Limit(cfg.DeviceAuthRate), UnknownBurst: cfg.DeviceAuthBurst}
	if opts.Devices.Configure, err = cfg.configure(log); err != nil {
		return err
	}
	opts.Downloads = cache.DownloadHandler
	opts.SyncArtifacts = cache.Sync
	opts.Notifications = notifier.Options{SMTP: cfg.smtp(), PublicURL: public}
	if cfg.SMTPAddr == "" {
		log.Info("no --smtp-addr: e-mail Notifications send nothing (each is reported when a commit goes live)")
	}
	ctrl, err := controller.New(opts)
	if err != nil {
		return err
	}

	tlsCfg, err := serverTLS(cfg, log)
	if err != nil {
		return err
	}
	sopts := controller.ServerOptions{TLS: tlsCfg, MaxConnsPerSource: cfg.MaxConnsPerSource, Clients: clients}
	srv := ctrl.Server(sopts)
	if cfg.DebugListen != "" {
		go servePprof(cfg.DebugListen, log)
	}
	errc := make(chan error, 2)
	go func() { errc <- srv.Serve(ctrl.Listener(ln, sopts)) }()
	log.Info("serving HTTPS", "addr", ln.Addr().String())

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { errc <- ctrl.Run(runCtx) }()

	select {
	case <-ctx.Done():
	case err := <-errc:
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			return err
		}
	}
	log.Info("shutting down")
	cancel()
	shutdown, done := context.WithTimeout(context.Background(), 10*time.Second)
	defer done()
	return srv.Shutdown(shutdown)
}

func openSource(cfg serveConfig, log *slog.Logger) (*gitsource.Source, error) {
	opts := gitsource.Options{
		URL: cfg.Repo, Ref: cfg.Branch, Dir: filepath.Join(cfg.DataDir, "repo"),
		PollInterval: cfg.PollInterval, Logger: log, KnownHostsFile: cfg.RepoKnownHosts,
		Auth: gitsource.Auth{Username: cfg.RepoUsername, Token: cfg.RepoToken},
	}
	for _, f := range []struct {
		path string
		dst  *[]byte
		what string
	}{{cfg.RepoSSHKey, &opts.Auth.SSHKey, "repo_ssh_key"}, {cfg.RepoCA, &opts.CABundle, "repo_ca"}} {
		if f.path == "" {
			continue
		}
		data, err := os.ReadFile(f.path)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f.what, err)
		}
		*f.dst = data
	}
	if cfg.CommitKeys != "" {
		data, err := os.ReadFile(cfg.CommitKeys)
		if err != nil {
			return nil, fmt.Errorf("commit_keys: %w", err)
		}
		opts.TrustedKeys = string(data)
	}
	src, err := gitsource.New(opts)
	if err != nil {
		return nil, err
	}
	return src, nil
}

func openStore(ctx context.Context, cfg serveConfig, log *slog.Logger) (store.Store, error) {
	bounds := store.Bounds{MaxPending: cfg.MaxPendingDevices, PendingTTL: cfg.PendingTTL}
	if cfg.Redis == "" {
		return embedded.Open(filepath.Join(cfg.DataDir, "state.db"), embedded.Options{Bounds: bounds})
	}
	opts := redis.Options{URL: cfg.Redis}
	if urls := strings.Split(cfg.Redis, ","); len(urls) > 1 {
		// Several URLs: the nodes of a Redis Cluster.
		opts = redis.Options{Cluster: true}
		for i, raw := range urls {
			u, err := url.Parse(strings.TrimSpace(raw))
			if err != nil || u.Host == "" {
				return nil, fmt.Errorf("--redis: %q is not a redis:// URL", redactURL(raw))
			}
			opts.Addrs = append(opts.Addrs, u.Host)
			if i == 0 && u.User != nil {
				opts.Username = u.User.Username()
				opts.Password, _ = u.User.Password()
			}
			if u.Scheme == "rediss" {
				opts.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
			}
		}
	}
	opts.Bounds = bounds
	st, err := redis.New(opts)
	if err != nil {
		return nil, err
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := st.Ping(pctx); err != nil {
		// Not fatal: the controller retries and /readyz says so.
		log.Warn("redis does not answer yet", "err", err)
		return st, nil
	}
	for _, a := range st.Advice(pctx) {
		log.Warn("redis setting to change", "advice", a)
	}
	return st, nil
}

func serverTLS(cfg serveConfig, log *slog.Logger) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1"}}
	if cfg.TLSCert != "" {
		pair, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("TLS certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{pair}
		return tc, nil
	}
	c, err := devcert.Ensure(cfg.DataDir, cfg.Hostnames, time.Now())
	if err != nil {
		return nil, err
	}
	log.Warn("DEVELOPMENT CERTIFICATE: no --tls-cert given, serving a self-signed certificate; devices must trust it explicitly (Mender ServerCertificate). Do not use in production.",
		"cert", c.CertPath, "sha256_fingerprint", c.Fingerprint, "created", c.Created)
	tc.Certificates = []tls.Certificate{c.TLS}
	return tc, nil
}

// openArtifacts makes the artifact cache in the data dir. The key that signs
// download URLs comes from the store, so every replica accepts the others'.
func openArtifacts(ctx context.Context, cfg serveConfig, st store.Store, log *slog.Logger) (*artifacts.Cache, error) {
	// The store may still be starting (Redis restarting with the
	// controller): retry for a while before giving up.
	var key []byte
	deadline := time.Now().Add(30 * time.Second)
	for {
		var err error
		key, err = st.SharedSecret(ctx, "artifacts.download.hmac", func() ([]byte, error) {
			b := make([]byte, 32)
			_, err := rand.Read(b)
			return b, err
		})
		if err == nil {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return nil, fmt.Errorf("download signing key from the store: %w", err)
		}
		log.Warn("store not answering yet; retrying", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
	if cfg.ArtifactStore == "" {
		log.Info("no --artifact-store: only Artifact manifests with an https source can be served")
	}
	return artifacts.New(artifacts.Options{
		Dir: filepath.Join(cfg.DataDir, "artifact-cache"), StoreDir: cfg.ArtifactStore,
		DownloadKeys: [][]byte{key}, Logger: log,
	})
}

// servePprof serves Go's profiles on a loopback address (validated), for
// diagnosing a controller under load.
func servePprof(addr string, log *slog.Logger) {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	log.Info("serving pprof profiles", "addr", addr)
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	if err := srv.ListenAndServe(); err != nil {
		log.Warn("pprof server stopped", "err", err)
	}
}

// publicURL is what devices reach the controller at, the base of download
// URLs: --public-url, or else https:// and the listening address when
// --listen names a host (the port it listens on, also when --listen asked
// for port 0), or the one --hostname of the development certificate with
// that port. It is never taken from a request's Host header, which the
// client chooses.
func publicURL(cfg serveConfig, addr net.Addr) (string, error) {
	if cfg.PublicURL != "" {
		return strings.TrimRight(cfg.PublicURL, "/"), controller.CheckPublicURL(cfg.PublicURL)
	}
	host, err := publicHost(cfg)
	if err != nil {
		return "", err
	}
	_, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return "", fmt.Errorf("listening address %s: %w", addr, err)
	}
	return "https://" + net.JoinHostPort(host, port), nil
}

// publicHost is the host of a derived public URL: --listen's host when it
// names one, else the single --hostname. It needs no listener, so the
// settings can be checked before anything starts.
func publicHost(cfg serveConfig) (string, error) {
	host, _, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return "", fmt.Errorf("--listen %q: %w", cfg.Listen, err)
	}
	if ip := net.ParseIP(host); host != "" && (ip == nil || !ip.IsUnspecified()) {
		return host, nil
	}
	if len(cfg.Hostnames) == 1 && cfg.TLSCert == "" {
		return cfg.Hostnames[0], nil
	}
	return "", fmt.Errorf("cannot tell the URL devices reach this controller at (--listen %q names no host): "+
		"set --public-url https://host[:port] (or GITFLEET_PUBLIC_URL, or public_url: in --config); "+
		"download URLs are built on it, never on the Host a request names", cfg.Listen)
}
