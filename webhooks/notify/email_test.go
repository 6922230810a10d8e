package notify

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// smtpServer is a local SMTP server (emersion/go-smtp) with STARTTLS and
// AUTH PLAIN that keeps the mails it accepts.
type smtpServer struct {
	user, pass string
	mu         sync.Mutex
	mails      []smtpMail
	authFails  int
	tempFails  int // DATA answers 451 this many times first
	srv        *smtp.Server
	host       string
	port       int
	pool       *x509.CertPool
}

type smtpMail struct {
	from string
	to   []string
	data []byte
	tls  bool
}

func startSMTP(t *testing.T, user, pass string, withTLS bool) *smtpServer {
	t.Helper()
	s := &smtpServer{user: user, pass: pass}
	srv := smtp.NewServer(s)
	srv.Domain = "127.0.0.1"
	srv.ReadTimeout, srv.WriteTimeout = 10*time.Second, 10*time.Second
	srv.MaxMessageBytes = 4 << 20
	if withTLS {
		cert, pool := testCert(t)
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

func (s *smtpServer) Mails() []smtpMail {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]smtpMail(nil), s.mails...)
}

func (s *smtpServer) NewSession(c *smtp.Conn) (smtp.Session, error) {
	_, isTLS := c.TLSConnectionState()
	return &smtpSession{srv: s, tls: isTLS, conn: c}, nil
}

type smtpSession struct {
	srv  *smtpServer
	conn *smtp.Conn
	tls  bool
	auth bool
	m    smtpMail
}

func (ss *smtpSession) AuthMechanisms() []string { return []string{sasl.Plain} }

func (ss *smtpSession) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(_, user, pass string) error {
		if user != ss.srv.user || pass != ss.srv.pass {
			ss.srv.mu.Lock()
			ss.srv.authFails++
			ss.srv.mu.Unlock()
			return errors.New("invalid credentials")
		}
		ss.auth = true
		return nil
	}), nil
}

func (ss *smtpSession) Mail(from string, _ *smtp.MailOptions) error {
	if ss.srv.user != "" && !ss.auth {
		return smtp.ErrAuthRequired
	}
	ss.m = smtpMail{from: from}
	return nil
}

func (ss *smtpSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	ss.m.to = append(ss.m.to, to)
	return nil
}

func (ss *smtpSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	ss.m.data = b
	_, ss.m.tls = ss.conn.TLSConnectionState()
	ss.srv.mu.Lock()
	if ss.srv.tempFails > 0 {
		ss.srv.tempFails--
		ss.srv.mu.Unlock()
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try again later"}
	}
	ss.srv.mails = append(ss.srv.mails, ss.m)
	ss.srv.mu.Unlock()
	return nil
}

func (ss *smtpSession) Reset()        {}
func (ss *smtpSession) Logout() error { return nil }

func (s *smtpServer) options(mod func(*EmailOptions)) EmailOptions {
	o := EmailOptions{Host: s.host, Port: s.port, Username: "fleet", Password: "smtp-PASSWORD-31f",
		From: "gitfleet@fleet.example", To: []string{"ops@fleet.example", "sec@fleet.example"},
		TLSConfig: &tls.Config{RootCAs: s.pool}, Timeout: 10 * time.Second}
	if mod != nil {
		mod(&o)
	}
	return o
}

// A burst of 1,000 alerts within one window is one digest mail, sent
// over STARTTLS after AUTH PLAIN, that a human can read.
func TestEmailBurstIsOneDigest(t *testing.T) {
	srv := startSMTP(t, "fleet", "smtp-PASSWORD-31f", true)
	g := newGate(time.Minute)
	m, err := NewEmail(srv.options(func(o *EmailOptions) { o.Sleep = g.Sleep }))
	if err != nil {
		t.Fatal(err)
	}
	m.Notify(alert("dev-0000"))
	g.waitEntered(t)
	for i := 1; i < 1000; i++ {
		m.Notify(alert(fmt.Sprintf("dev-%04d", i)))
	}
	close(g.open)
	eventually(t, "the digest mail", func() bool { return len(srv.Mails()) >= 1 })
	closeSink(t, m)

	mails := srv.Mails()
	if len(mails) != 1 {
		t.Fatalf("%d mails, want 1 digest", len(mails))
	}
	got := mails[0]
	if !got.tls {
		t.Error("mail was not sent over STARTTLS")
	}
	if got.from != "gitfleet@fleet.example" || strings.Join(got.to, ",") != "ops@fleet.example,sec@fleet.example" {
		t.Errorf("envelope from %s to %v", got.from, got.to)
	}
	msg, err := mail.ReadMessage(strings.NewReader(string(got.data)))
	if err != nil {
		t.Fatal(err)
	}
	if subj := msg.Header.Get("Subject"); subj != "[Gitfleet] 1000 events: 1000 alert.raised" {
		t.Errorf("subject = %q", subj)
	}
	if msg.Header.Get("Message-Id") == "" {
		t.Error("no Message-ID")
	}
	body, _ := io.ReadAll(msg.Body)
	text := decodeQP(t, msg.Header.Get("Content-Transfer-Encoding"), body)
	for _, want := range []string{"Gitfleet: 1000 event(s)", "  1000 alert.raised",
		"alert.raised check ssh-root device dev-0000", "evidence: Failed password for root from 10.0.0.9",
		"severity: critical", "device dev-0019", "… and 980 more event(s) not listed here."} {
		if !strings.Contains(text, want) {
			t.Errorf("body lacks %q:\n%.2000s", want, text)
		}
	}
	if strings.Contains(text, "dev-0020") {
		t.Error("body lists more than the first 20 events")
	}
	if strings.Contains(string(got.data), "smtp-PASSWORD-31f") {
		t.Error("the mail carries the SMTP password")
	}
	if st := m.Stats(); st.Delivered != 1000 || st.Messages != 1 {
		t.Errorf("stats = %+v", st)
	}
}

// STARTTLS is required by default: a server that does not offer it gets
// no mail (and so never sees the password).
func TestEmailRequiresSTARTTLS(t *testing.T) {
	srv := startSMTP(t, "fleet", "smtp-PASSWORD-31f", false)
	m, logs := sendOneAlert(t, srv)
	if n := len(srv.Mails()); n != 0 {
		t.Fatalf("%d mails sent without TLS", n)
	}
	if st := m.Stats(); st.Failed != 1 {
		t.Errorf("stats = %+v", st)
	}
	if out := logs.String(); !strings.Contains(out, "STARTTLS") {
		t.Errorf("log does not say TLS was missing: %s", out)
	}
}

// A wrong password is refused without the password in any log line.
func TestEmailAuthFailureDoesNotLeakPassword(t *testing.T) {
	srv := startSMTP(t, "fleet", "the-right-one", true)
	m, logs := sendOneAlert(t, srv)
	if len(srv.Mails()) != 0 || m.Stats().Failed != 1 {
		t.Fatalf("mails %d, stats %+v", len(srv.Mails()), m.Stats())
	}
	srv.mu.Lock()
	fails := srv.authFails
	srv.mu.Unlock()
	if fails == 0 {
		t.Error("the server never saw an AUTH attempt")
	}
	out := logs.String()
	if !strings.Contains(out, "notification not delivered") || strings.Contains(out, "smtp-PASSWORD-31f") {
		t.Errorf("log: %s", out)
	}
}

func TestEmailOptionsRequired(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    EmailOptions
	}{
		{"no host", EmailOptions{From: "a@b", To: []string{"c@d"}}},
		{"no from", EmailOptions{Host: "h", To: []string{"c@d"}}},
		{"no recipients", EmailOptions{Host: "h", From: "a@b"}},
		{"unknown event kind", EmailOptions{Host: "h", From: "a@b", To: []string{"c@d"}, Filter: Filter{Events: []Kind{"alert.fired"}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := NewEmail(tc.o); err == nil {
				t.Error("accepted")
			}
		})
	}
}

// decodeQP undoes quoted-printable so the test reads the text as a human.
func decodeQP(t *testing.T, cte string, body []byte) string {
	t.Helper()
	if !strings.EqualFold(cte, "quoted-printable") {
		return string(body)
	}
	b, err := io.ReadAll(quotedprintable.NewReader(bytes.NewReader(body)))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// A temporary refusal (451) is retried with backoff; the retry is the same
// message (same Message-ID).
func TestEmailRetriesTemporaryFailure(t *testing.T) {
	srv := startSMTP(t, "fleet", "smtp-PASSWORD-31f", true)
	srv.tempFails = 1
	clk := newFakeClock()
	m, err := NewEmail(srv.options(func(o *EmailOptions) { o.Sleep, o.Now = clk.Sleep, clk.Now }))
	if err != nil {
		t.Fatal(err)
	}
	m.Notify(alert("dev-1"))
	closeSink(t, m)
	if n := len(srv.Mails()); n != 1 {
		t.Fatalf("%d mails, want 1 after the retry", n)
	}
	if st := m.Stats(); st.Delivered != 1 || st.Failed != 0 {
		t.Errorf("stats = %+v", st)
	}
	var backoffs int
	for _, d := range clk.Sleeps() {
		if d != time.Minute { // the batch window
			backoffs++
		}
	}
	if backoffs != 1 {
		t.Errorf("sleeps = %v, want the window and one backoff", clk.Sleeps())
	}
}

// Names that reach the subject (a device ID, a check) cannot add a header
// or a recipient: control characters become spaces.
func TestEmailSubjectCannotInjectHeaders(t *testing.T) {
	srv := startSMTP(t, "fleet", "smtp-PASSWORD-31f", true)
	clk := newFakeClock()
	m, err := NewEmail(srv.options(func(o *EmailOptions) { o.Sleep, o.Now = clk.Sleep, clk.Now }))
	if err != nil {
		t.Fatal(err)
	}
	m.Notify(Event{Kind: DevicePending, Device: "dev-1\r\nBcc: attacker@evil.example\r\nX-Injected: yes",
		Details: map[string]string{"note": "a\r\n\r\nfake body"}})
	closeSink(t, m)
	mails := srv.Mails()
	if len(mails) != 1 {
		t.Fatalf("%d mails", len(mails))
	}
	if strings.Join(mails[0].to, ",") != "ops@fleet.example,sec@fleet.example" {
		t.Errorf("envelope recipients %v", mails[0].to)
	}
	msg, err := mail.ReadMessage(strings.NewReader(string(mails[0].data)))
	if err != nil {
		t.Fatal(err)
	}
	if msg.Header.Get("Bcc") != "" || msg.Header.Get("X-Injected") != "" {
		t.Errorf("injected headers: %v", msg.Header)
	}
	if subj := msg.Header.Get("Subject"); !strings.Contains(subj, "device dev-1  Bcc: attacker@evil.example") {
		t.Errorf("subject = %q", subj)
	}
}

// When a burst overflows the queue, the digest keeps the newest events and
// says how many were dropped.
func TestEmailDigestReportsDropped(t *testing.T) {
	srv := startSMTP(t, "fleet", "smtp-PASSWORD-31f", true)
	g := newGate(time.Minute)
	m, err := NewEmail(srv.options(func(o *EmailOptions) { o.Sleep, o.QueueSize = g.Sleep, 5 }))
	if err != nil {
		t.Fatal(err)
	}
	m.Notify(alert("dev-00"))
	g.waitEntered(t)
	for i := 1; i < 12; i++ {
		m.Notify(alert(fmt.Sprintf("dev-%02d", i)))
	}
	close(g.open)
	eventually(t, "the digest", func() bool { return len(srv.Mails()) >= 1 })
	closeSink(t, m)
	mails := srv.Mails()
	if len(mails) != 1 {
		t.Fatalf("%d mails", len(mails))
	}
	msg, err := mail.ReadMessage(strings.NewReader(string(mails[0].data)))
	if err != nil {
		t.Fatal(err)
	}
	if subj := msg.Header.Get("Subject"); subj != "[Gitfleet] 5 events: 5 alert.raised (+7 dropped)" {
		t.Errorf("subject = %q", subj)
	}
	body, _ := io.ReadAll(msg.Body)
	text := decodeQP(t, msg.Header.Get("Content-Transfer-Encoding"), body)
	if !strings.Contains(text, "7 more event(s) were dropped because the notification queue was full.") ||
		!strings.Contains(text, "device dev-07") || strings.Contains(text, "device dev-06") {
		t.Errorf("body:\n%s", text)
	}
	if st := m.Stats(); st.Dropped != 7 || st.Delivered != 5 {
		t.Errorf("stats = %+v", st)
	}
}

// With AllowPlaintext and no STARTTLS on offer, the password is still
// never sent in the clear: with a username STARTTLS stays required (on
// its own, PLAIN would go out unencrypted to a loopback server). Without
// credentials, AllowPlaintext does send.
func TestEmailPlaintextNeverSendsPassword(t *testing.T) {
	srv := startSMTP(t, "fleet", "smtp-PASSWORD-31f", false)
	clk := newFakeClock()
	logs := &logBuffer{}
	m, err := NewEmail(srv.options(func(o *EmailOptions) {
		o.Sleep, o.Now, o.Logger, o.MaxAttempts, o.AllowPlaintext = clk.Sleep, clk.Now, logs.Logger(), 1, true
	}))
	if err != nil {
		t.Fatal(err)
	}
	m.Notify(alert("dev-1"))
	closeSink(t, m)
	srv.mu.Lock()
	fails := srv.authFails
	srv.mu.Unlock()
	if n := len(srv.Mails()); n != 0 || fails != 0 {
		t.Errorf("%d mails, %d AUTH attempts over plaintext; want none", n, fails)
	}

	open := startSMTP(t, "", "", false)
	m, err = NewEmail(open.options(func(o *EmailOptions) {
		o.Sleep, o.Now, o.MaxAttempts, o.AllowPlaintext, o.Username, o.Password = clk.Sleep, clk.Now, 1, true, "", ""
	}))
	if err != nil {
		t.Fatal(err)
	}
	m.Notify(alert("dev-1"))
	closeSink(t, m)
	if mails := open.Mails(); len(mails) != 1 || mails[0].tls {
		t.Errorf("AllowPlaintext without credentials: %d mails", len(mails))
	}
}

// sendOneAlert sends one alert through an Email sink to srv (two attempts,
// a fake clock) and closes the sink; it returns the sink and its logs.
func sendOneAlert(t *testing.T, srv *smtpServer) (*Email, *logBuffer) {
	t.Helper()
	logs := &logBuffer{}
	clk := newFakeClock()
	m, err := NewEmail(srv.options(func(o *EmailOptions) {
		o.Sleep, o.Now, o.Logger, o.MaxAttempts = clk.Sleep, clk.Now, logs.Logger(), 2
	}))
	if err != nil {
		t.Fatal(err)
	}
	m.Notify(alert("dev-1"))
	closeSink(t, m)
	return m, logs
}
