package controller

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gitfleet/gitfleet/controller/clientip"
)

// Defaults for the zero values of [ServerOptions].
const (
	DefaultHeaderTimeout     = 10 * time.Second
	DefaultBodyTimeout       = 30 * time.Second
	DefaultWriteStall        = 60 * time.Second
	DefaultIdleTimeout       = 60 * time.Second
	DefaultMaxHeaderBytes    = 32 << 10
	DefaultMaxConnsPerSource = 1024
)

// ServerOptions bound what one client can hold of the server. Every
// timeout closes the connection it applies to; none of them depends on
// how large a download is.
//
//   - HeaderTimeout bounds the TLS handshake and the request line and
//     headers of every request (slow headers, "slowloris").
//   - BodyTimeout bounds reading a request body, from the end of the
//     headers to its last byte. Request bodies are small (a webhook, a
//     status report, an inventory, a log upload, each bounded in size), so
//     a sender that cannot finish in this time is stalling.
//   - WriteStall bounds each write of a response: a client that accepts
//     no byte for this long is cut off. There is no limit on a whole
//     response, so a GiB image downloads over a slow link as long as it
//     keeps moving (at 32 KiB per write, WriteStall 60s means at least
//     about 0.5 KiB/s; a write waits for room in the socket's send
//     buffer, which the kernel keeps small on a slow link), and an
//     interrupted download resumes with Range. Over HTTP/2, where the
//     deadline is the stream's, it also bounds the wait before the first
//     write, so no handler may think for longer than WriteStall.
//   - IdleTimeout closes a keep-alive connection with no request.
//   - MaxHeaderBytes bounds the request line and headers.
//   - MaxConnsPerSource bounds the connections open at once from one
//     source address (IPv6 grouped by /64); more are closed as soon as
//     they are accepted. Negative: no limit. Devices behind one NAT share
//     an address, and a device keeps its connection for up to
//     IdleTimeout after each poll: N devices polling every P hold about
//     N×IdleTimeout/P connections (the default 1024 fits about 30,000
//     devices polling every 30 minutes behind one address).
type ServerOptions struct {
	// TLS is the server's TLS configuration. MinVersion is raised to TLS
	// 1.2 if lower.
	TLS               *tls.Config
	HeaderTimeout     time.Duration // default DefaultHeaderTimeout (10s)
	BodyTimeout       time.Duration // default DefaultBodyTimeout (30s)
	WriteStall        time.Duration // default DefaultWriteStall (60s)
	IdleTimeout       time.Duration // default DefaultIdleTimeout (60s)
	MaxHeaderBytes    int           // default DefaultMaxHeaderBytes (32 KiB)
	MaxConnsPerSource int           // default DefaultMaxConnsPerSource (1024)
	// Clients knows the trusted proxies, whose connections are not
	// limited per source (they carry many clients'); see clientip.
	Clients clientip.Resolver
}

func (o ServerOptions) withDefaults() ServerOptions {
	if o.HeaderTimeout <= 0 {
		o.HeaderTimeout = DefaultHeaderTimeout
	}
	if o.BodyTimeout <= 0 {
		o.BodyTimeout = DefaultBodyTimeout
	}
	if o.WriteStall <= 0 {
		o.WriteStall = DefaultWriteStall
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = DefaultIdleTimeout
	}
	if o.MaxHeaderBytes <= 0 {
		o.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if o.MaxConnsPerSource == 0 {
		o.MaxConnsPerSource = DefaultMaxConnsPerSource
	}
	if o.TLS == nil {
		o.TLS = &tls.Config{}
	} else {
		o.TLS = o.TLS.Clone()
	}
	if o.TLS.MinVersion < tls.VersionTLS12 {
		o.TLS.MinVersion = tls.VersionTLS12
	}
	return o
}

// Server returns the HTTPS server of the controller's Handler with the
// bounds of opts. Serve it with [Controller.Listener]'s listener, which is
// TLS only:
//
//	srv := c.Server(opts)
//	srv.Serve(c.Listener(ln, opts))
func (c *Controller) Server(opts ServerOptions) *http.Server {
	opts = opts.withDefaults()
	return &http.Server{
		Handler:   Bounded(c.Handler(), opts),
		TLSConfig: c.deviceTLS(opts.TLS),
		// The handshake and the headers; there is deliberately no
		// ReadTimeout or WriteTimeout for the whole request: Bounded sets
		// per-body and per-write deadlines instead.
		ReadHeaderTimeout: opts.HeaderTimeout,
		IdleTimeout:       opts.IdleTimeout,
		MaxHeaderBytes:    opts.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(c.log.Handler(), slog.LevelDebug),
	}
}

// Listener wraps ln: at most opts.MaxConnsPerSource connections from one
// source, and TLS only (a client speaking plain HTTP gets 400 and is
// closed; one offering less than TLS 1.2 fails the handshake).
func (c *Controller) Listener(ln net.Listener, opts ServerOptions) net.Listener {
	opts = opts.withDefaults()
	if opts.MaxConnsPerSource > 0 {
		ln = &limitListener{Listener: ln, max: opts.MaxConnsPerSource, open: map[string]int{}, clients: opts.Clients}
	}
	return tls.NewListener(ln, c.deviceTLS(opts.TLS))
}

// deviceTLS returns base set to ask for client certificates, and to verify
// one that is given against the CA certificates of the live commit's
// DeviceCAs (VerifyClientCertIfGiven), as long as it declares any; without
// DeviceCAs no certificate is asked for. The CAs are read at each
// handshake, so a commit adding or removing a DeviceCA applies to the next
// connection. A client without a certificate is served as before; the
// device API then checks the certificate's serial, key and identity. A
// base that already sets ClientAuth or GetConfigForClient is kept as is.
func (c *Controller) deviceTLS(base *tls.Config) *tls.Config {
	if c.devices == nil || base.ClientAuth != tls.NoClientCert || base.GetConfigForClient != nil {
		return base
	}
	base = base.Clone()
	plain := base.Clone()
	type entry struct {
		pool *x509.CertPool
		cfg  *tls.Config
	}
	var cur atomic.Pointer[entry]
	base.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		pool := c.devices.ClientCAs()
		if pool == nil {
			return plain, nil
		}
		if e := cur.Load(); e != nil && e.pool == pool {
			return e.cfg, nil
		}
		cfg := plain.Clone()
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
		cfg.ClientCAs = pool
		cur.Store(&entry{pool: pool, cfg: cfg})
		return cfg, nil
	}
	return base
}

// Bounded applies opts' per-request deadlines to h: a request body must
// arrive within BodyTimeout, and every response write must complete within
// WriteStall. Server uses it; it is exported for servers built otherwise.
func Bounded(h http.Handler, opts ServerOptions) http.Handler {
	opts = opts.withDefaults()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		bw := &stallWriter{ResponseWriter: w, rc: rc, stall: opts.WriteStall}
		bw.extend()
		if r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0 {
			// Requests without a body get no read deadline: net/http
			// reads ahead on their connection to notice a client going
			// away, and a deadline there would cancel a long download.
			_ = rc.SetReadDeadline(time.Now().Add(opts.BodyTimeout))
			r.Body = &deadlineBody{ReadCloser: r.Body, rc: rc, w: w, http1: r.ProtoMajor == 1}
		}
		h.ServeHTTP(bw, r)
		// net/http flushes the response's tail after the handler returns:
		// give that write its own WriteStall too.
		bw.extend()
	})
}

// deadlineBody lifts the body's read deadline once the body has been read
// to its end, so that the handler's work after it is not cut short; a body
// that fails (its deadline passed) closes an HTTP/1 connection after the
// answer (an HTTP/2 deadline ends the stream only).
type deadlineBody struct {
	io.ReadCloser
	rc    *http.ResponseController
	w     http.ResponseWriter
	http1 bool
	done  bool
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	switch {
	case err == nil || b.done:
	case errors.Is(err, io.EOF):
		b.done = true
		_ = b.rc.SetReadDeadline(time.Time{})
	default:
		b.done = true
		if b.http1 {
			b.w.Header().Set("Connection", "close")
		}
	}
	return n, err
}

// stallWriter moves the connection's write deadline forward before every
// write, so a response may take as long as it needs while bytes flow:
// every write has at least three quarters of the stall allowance. (It
// moves the deadline only when a quarter of the allowance has passed
// since it last did: setting a deadline costs a timer update, and a poll
// writes its header and body within microseconds.)
type stallWriter struct {
	http.ResponseWriter
	rc    *http.ResponseController
	stall time.Duration
	set   time.Time // when the deadline was last moved
}

func (w *stallWriter) extend() {
	now := time.Now()
	if !w.set.IsZero() && now.Sub(w.set) < w.stall/4 {
		return
	}
	w.set = now
	_ = w.rc.SetWriteDeadline(now.Add(w.stall))
}

func (w *stallWriter) WriteHeader(code int) {
	w.extend()
	w.ResponseWriter.WriteHeader(code)
}

func (w *stallWriter) Write(p []byte) (int, error) {
	w.extend()
	return w.ResponseWriter.Write(p)
}

func (w *stallWriter) Flush() {
	w.extend()
	_ = w.rc.Flush()
}

// Unwrap lets http.ResponseController reach the connection.
func (w *stallWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// limitListener closes connections beyond max open at once from one source.
type limitListener struct {
	net.Listener
	clients clientip.Resolver
	max     int
	mu      sync.Mutex
	open    map[string]int
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		conn, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		peer := connAddr(conn.RemoteAddr())
		if peer.IsValid() && l.clients.IsTrusted(peer) {
			return conn, nil
		}
		key := conn.RemoteAddr().String()
		if peer.IsValid() {
			key = clientip.KeyOf(peer)
		}
		l.mu.Lock()
		if l.open[key] >= l.max {
			l.mu.Unlock()
			conn.Close()
			continue
		}
		l.open[key]++
		l.mu.Unlock()
		return &countedConn{Conn: conn, release: func() { l.release(key) }}, nil
	}
}

func (l *limitListener) release(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open[key]--; l.open[key] <= 0 {
		delete(l.open, key)
	}
}

type countedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *countedConn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}

// connAddr is a connection's peer address (invalid if it has none).
func connAddr(a net.Addr) netip.Addr {
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr()
}
