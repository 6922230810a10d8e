package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/gitfleet/gitfleet/controller/devcert"
)

// server is a running HTTPS server under test.
type server struct {
	addr     string
	repo     string // the fleet repository's work tree
	proc     *exec.Cmd
	certFile string
	keyFile  string
	pool     *x509.CertPool
	ready    time.Duration // from start until it served the fleet
	readyCPU time.Duration // its CPU time until then
	readyHWM int64         // its peak RSS then
	debug    string        // its --debug-listen address (pprof), or ""

	// What started it, for a restart.
	bin, dataDir, repoURL, storeDir, redisAddr string
	fleet                                      *fleet
}

// startServe starts `gitfleet serve` with the fleet repository and Redis,
// using a development certificate made beforehand (so the ceiling server
// can use the same one), and waits until /readyz says it serves a commit.
//
// With debug (a loopback address), gitfleet serve also serves Go's pprof
// profiles there (--debug-listen).
func startServe(ctx context.Context, p *procs, bin, dataDir, repo, storeDir, redisAddr string, f *fleet, timeout time.Duration, debug string) (*server, error) {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, err
	}
	cert, err := devcert.Ensure(dataDir, nil, time.Now())
	if err != nil {
		return nil, err
	}
	s := &server{certFile: filepath.Join(dataDir, devcert.CertFile), keyFile: filepath.Join(dataDir, devcert.KeyFile),
		repo: strings.TrimPrefix(repo, "file://"), debug: debug,
		bin: bin, dataDir: dataDir, repoURL: repo, storeDir: storeDir, redisAddr: redisAddr, fleet: f}
	pem, err := os.ReadFile(s.certFile)
	if err != nil {
		return nil, err
	}
	s.pool = x509.NewCertPool()
	s.pool.AppendCertsFromPEM(pem)
	_ = cert
	logFile, err := os.Create(filepath.Join(dataDir, "serve.log"))
	if err != nil {
		return nil, err
	}
	var urls []string // one node, or a cluster's
	for _, a := range strings.Split(redisAddr, ",") {
		urls = append(urls, "redis://"+a)
	}
	cmd := exec.Command(bin, "serve", "--repo", repo, "--branch", "main", "--redis", strings.Join(urls, ","),
		"--data-dir", dataDir, "--listen", "127.0.0.1:0", "--artifact-store", storeDir,
		"--poll-interval", "1h", "--log-level", "info")
	if debug != "" {
		cmd.Args = append(cmd.Args, "--debug-listen", debug)
	}
	cmd.Env = append(os.Environ(), "GITFLEET_MANAGEMENT_TOKEN=loadgen-token")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stdout = logFile
	start := time.Now()
	if err := p.start(cmd); err != nil {
		return nil, err
	}
	s.proc = cmd
	found := make(chan string, 1)
	go scanFor(stderr, logFile, `"msg":"serving HTTPS","addr":"`, found)
	select {
	case s.addr = <-found:
	case <-p.exited(cmd):
		return nil, fmt.Errorf("gitfleet serve exited at start; see %s", logFile.Name())
	case <-time.After(time.Minute):
		return nil, fmt.Errorf("gitfleet serve does not listen after a minute; see %s", logFile.Name())
	}
	fmt.Printf("gitfleet serve (pid %d) listening on %s; waiting until it serves %d devices\n", cmd.Process.Pid, s.addr, f.n)
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: s.pool}}}
	deadline := time.Now().Add(timeout)
	for {
		resp, err := c.Get("https://" + s.addr + "/readyz")
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case <-p.exited(cmd):
			return nil, fmt.Errorf("gitfleet serve exited; see %s", logFile.Name())
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("gitfleet serve not ready within %s; see %s", timeout, logFile.Name())
		}
	}
	s.ready = time.Since(start)
	s.readyCPU = cpuOf(cmd.Process.Pid)
	rss, hwm := rssOf(cmd.Process.Pid)
	s.readyHWM = hwm
	fmt.Printf("gitfleet serve ready after %s (RSS %d MiB)\n", s.ready.Round(time.Millisecond), rss>>20)
	return s, nil
}

// serverTLS is the TLS configuration of both servers: gitfleet serve's
// (TLS 1.2+, h2 and http/1.1) with the same certificate.
func serverTLS(certFile, keyFile string) (*tls.Config, error) {
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1"}, Certificates: []tls.Certificate{pair}}, nil
}

// startCeiling runs this program again as the ceiling server; with
// clientCA, it asks for client certificates and verifies them against it.
func startCeiling(ctx context.Context, p *procs, certFile, keyFile, clientCA string) (*server, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, "ceiling-server", "-cert", certFile, "-key", keyFile, "-client-ca", clientCA)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := p.start(cmd); err != nil {
		return nil, err
	}
	found := make(chan string, 1)
	go scanFor(out, io.Discard, "listening ", found)
	select {
	case addr := <-found:
		return &server{addr: addr, proc: cmd}, nil
	case <-p.exited(cmd):
		return nil, fmt.Errorf("ceiling server exited at start")
	case <-time.After(30 * time.Second):
		return nil, fmt.Errorf("ceiling server does not listen")
	}
}

// ceilingServer serves 204 to every request, over TLS as gitfleet serve
// does (same certificate, protocols and server timeouts), until SIGTERM.
func ceilingServer(args []string) error {
	fs := flag.NewFlagSet("ceiling-server", flag.ContinueOnError)
	certFile := fs.String("cert", "", "certificate")
	keyFile := fs.String("key", "", "key")
	clientCA := fs.String("client-ca", "", "CA certificates (PEM) of client certificates: ask for one and verify it when given (mutual TLS)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := serverTLS(*certFile, *keyFile)
	if err != nil {
		return err
	}
	if *clientCA != "" {
		pem, err := os.ReadFile(*clientCA)
		if err != nil {
			return err
		}
		cfg.ClientCAs = x509.NewCertPool()
		if !cfg.ClientCAs.AppendCertsFromPEM(pem) {
			return fmt.Errorf("%s: no PEM certificate", *clientCA)
		}
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, io.LimitReader(r.Body, 64<<10))
			w.WriteHeader(http.StatusNoContent)
		}),
		TLSConfig:         cfg,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	fmt.Printf("listening %s\n", ln.Addr())
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	go func() {
		<-ctx.Done()
		shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(shut)
	}()
	if err := srv.Serve(tls.NewListener(ln, cfg)); err != http.ErrServerClosed {
		return err
	}
	return nil
}
