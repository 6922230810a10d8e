// Package notifytest runs what tests of outbound notifications talk to: a
// local SMTP submission server (STARTTLS with a self-signed certificate for
// 127.0.0.1, AUTH PLAIN) that keeps the mails it accepts and can refuse
// deliveries on request.
//
// It is for tests only: the server binds 127.0.0.1 on a free port and stops
// when the test ends.
package notifytest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// SMTPOptions configure [StartSMTP].
type SMTPOptions struct {
	// Username and Password are the AUTH PLAIN credentials the server
	// requires before MAIL FROM. Empty Username: no authentication.
	Username, Password string
	// TLS offers STARTTLS with a self-signed certificate for 127.0.0.1
	// ([SMTPServer.RootCAs] trusts it). Without it the server offers no
	// TLS and allows AUTH in the clear (so a test can see a client refuse
	// to send credentials there).
	TLS bool
}

// Mail is one message the server accepted.
type Mail struct {
	From string
	To   []string
	Data []byte // the message as sent (headers and body)
	TLS  bool   // sent inside STARTTLS
}

// SMTPServer is a running local SMTP server.
type SMTPServer struct {
	opts SMTPOptions
	srv  *smtp.Server
	host string
	port int
	pool *x509.CertPool

	mu        sync.Mutex
	mails     []Mail
	authFails int
	tempFails int // DATA answers 451 this many more times
	refused   int // messages answered 451
	changed   chan struct{}
}

// StartSMTP starts a server on 127.0.0.1 and stops it when t ends.
func StartSMTP(t testing.TB, opts SMTPOptions) *SMTPServer {
	t.Helper()
	s := &SMTPServer{opts: opts, changed: make(chan struct{})}
	srv := smtp.NewServer(backend{s})
	srv.Domain = "127.0.0.1"
	srv.ReadTimeout, srv.WriteTimeout = 10*time.Second, 10*time.Second
	srv.MaxMessageBytes = 4 << 20
	if opts.TLS {
		cert, pool := Cert(t)
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
		s.pool = pool
	} else {
		srv.AllowInsecureAuth = true
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.srv = srv
	host, port, _ := net.SplitHostPort(l.Addr().String())
	s.host = host
	s.port, _ = strconv.Atoi(port)
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return s
}

// Host and Port are where the server listens; Addr is "host:port".
func (s *SMTPServer) Host() string { return s.host }
func (s *SMTPServer) Port() int    { return s.port }
func (s *SMTPServer) Addr() string { return net.JoinHostPort(s.host, strconv.Itoa(s.port)) }

// RootCAs trusts the server's certificate; nil without TLS.
func (s *SMTPServer) RootCAs() *x509.CertPool { return s.pool }

// Mails returns the mails accepted so far.
func (s *SMTPServer) Mails() []Mail {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Mail(nil), s.mails...)
}

// AuthFailures counts the AUTH attempts refused.
func (s *SMTPServer) AuthFailures() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.authFails
}

// FailNext makes the next n messages fail with a temporary error (451
// after DATA), as a busy server answers; a client should retry them.
func (s *SMTPServer) FailNext(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tempFails = n
}

// Refused counts the messages refused because of FailNext.
func (s *SMTPServer) Refused() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refused
}

// WaitMails waits until the server has accepted at least n mails and
// returns them; the test fails when timeout passes first.
func (s *SMTPServer) WaitMails(t testing.TB, n int, timeout time.Duration) []Mail {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		if len(s.mails) >= n {
			out := append([]Mail(nil), s.mails...)
			s.mu.Unlock()
			return out
		}
		ch := s.changed
		s.mu.Unlock()
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("the SMTP server got %d mails within %s, want %d", len(s.Mails()), timeout, n)
			return nil
		}
	}
}

// add keeps an accepted mail and wakes WaitMails.
func (s *SMTPServer) add(m Mail) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mails = append(s.mails, m)
	close(s.changed)
	s.changed = make(chan struct{})
}

type backend struct{ s *SMTPServer }

func (b backend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	return &session{srv: b.s, conn: c}, nil
}

type session struct {
	srv  *SMTPServer
	conn *smtp.Conn
	auth bool
	m    Mail
}

func (ss *session) AuthMechanisms() []string { return []string{sasl.Plain} }

func (ss *session) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(_, user, pass string) error {
		if user != ss.srv.opts.Username || pass != ss.srv.opts.Password {
			ss.srv.mu.Lock()
			ss.srv.authFails++
			ss.srv.mu.Unlock()
			return errors.New("invalid credentials")
		}
		ss.auth = true
		return nil
	}), nil
}

func (ss *session) Mail(from string, _ *smtp.MailOptions) error {
	if ss.srv.opts.Username != "" && !ss.auth {
		return smtp.ErrAuthRequired
	}
	ss.m = Mail{From: from}
	return nil
}

func (ss *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	ss.m.To = append(ss.m.To, to)
	return nil
}

func (ss *session) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	ss.m.Data = b
	_, ss.m.TLS = ss.conn.TLSConnectionState()
	ss.srv.mu.Lock()
	if ss.srv.tempFails > 0 {
		ss.srv.tempFails--
		ss.srv.refused++
		ss.srv.mu.Unlock()
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try again later"}
	}
	ss.srv.mu.Unlock()
	ss.srv.add(ss.m)
	return nil
}

func (ss *session) Reset()        {}
func (ss *session) Logout() error { return nil }

// Cert makes a self-signed certificate for 127.0.0.1, valid for an hour
// around now, and a pool that trusts it.
func Cert(t testing.TB) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "127.0.0.1"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}
