package notify

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"mime/quotedprintable"
	"net/mail"
	"strings"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/webhooks/notify/notifytest"
)

// startSMTP starts a local SMTP server (with STARTTLS when withTLS) that
// wants user and pass.
func startSMTP(t *testing.T, user, pass string, withTLS bool) *notifytest.SMTPServer {
	return notifytest.StartSMTP(t, notifytest.SMTPOptions{Username: user, Password: pass, TLS: withTLS})
}

// smtpOptions are the options of an Email sink sending to s, changed by mod.
func smtpOptions(s *notifytest.SMTPServer, mod func(*EmailOptions)) EmailOptions {
	o := EmailOptions{Host: s.Host(), Port: s.Port(), Username: "fleet", Password: "smtp-PASSWORD-31f",
		From: "gitfleet@fleet.example", To: []string{"ops@fleet.example", "sec@fleet.example"},
		TLSConfig: &tls.Config{RootCAs: s.RootCAs()}, Timeout: 10 * time.Second}
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
	m, err := NewEmail(smtpOptions(srv, func(o *EmailOptions) { o.Sleep = g.Sleep }))
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
	if !got.TLS {
		t.Error("mail was not sent over STARTTLS")
	}
	if got.From != "gitfleet@fleet.example" || strings.Join(got.To, ",") != "ops@fleet.example,sec@fleet.example" {
		t.Errorf("envelope from %s to %v", got.From, got.To)
	}
	msg, err := mail.ReadMessage(strings.NewReader(string(got.Data)))
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
	if strings.Contains(string(got.Data), "smtp-PASSWORD-31f") {
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
	fails := srv.AuthFailures()
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
	srv.FailNext(1)
	clk := newFakeClock()
	m, err := NewEmail(smtpOptions(srv, func(o *EmailOptions) { o.Sleep, o.Now = clk.Sleep, clk.Now }))
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
	m, err := NewEmail(smtpOptions(srv, func(o *EmailOptions) { o.Sleep, o.Now = clk.Sleep, clk.Now }))
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
	if strings.Join(mails[0].To, ",") != "ops@fleet.example,sec@fleet.example" {
		t.Errorf("envelope recipients %v", mails[0].To)
	}
	msg, err := mail.ReadMessage(strings.NewReader(string(mails[0].Data)))
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
	m, err := NewEmail(smtpOptions(srv, func(o *EmailOptions) { o.Sleep, o.QueueSize = g.Sleep, 5 }))
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
	msg, err := mail.ReadMessage(strings.NewReader(string(mails[0].Data)))
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
	m, err := NewEmail(smtpOptions(srv, func(o *EmailOptions) {
		o.Sleep, o.Now, o.Logger, o.MaxAttempts, o.AllowPlaintext = clk.Sleep, clk.Now, logs.Logger(), 1, true
	}))
	if err != nil {
		t.Fatal(err)
	}
	m.Notify(alert("dev-1"))
	closeSink(t, m)
	fails := srv.AuthFailures()
	if n := len(srv.Mails()); n != 0 || fails != 0 {
		t.Errorf("%d mails, %d AUTH attempts over plaintext; want none", n, fails)
	}

	open := startSMTP(t, "", "", false)
	m, err = NewEmail(smtpOptions(open, func(o *EmailOptions) {
		o.Sleep, o.Now, o.MaxAttempts, o.AllowPlaintext, o.Username, o.Password = clk.Sleep, clk.Now, 1, true, "", ""
	}))
	if err != nil {
		t.Fatal(err)
	}
	m.Notify(alert("dev-1"))
	closeSink(t, m)
	if mails := open.Mails(); len(mails) != 1 || mails[0].TLS {
		t.Errorf("AllowPlaintext without credentials: %d mails", len(mails))
	}
}

// sendOneAlert sends one alert through an Email sink to srv (two attempts,
// a fake clock) and closes the sink; it returns the sink and its logs.
func sendOneAlert(t *testing.T, srv *notifytest.SMTPServer) (*Email, *logBuffer) {
	t.Helper()
	logs := &logBuffer{}
	clk := newFakeClock()
	m, err := NewEmail(smtpOptions(srv, func(o *EmailOptions) {
		o.Sleep, o.Now, o.Logger, o.MaxAttempts = clk.Sleep, clk.Now, logs.Logger(), 2
	}))
	if err != nil {
		t.Fatal(err)
	}
	m.Notify(alert("dev-1"))
	closeSink(t, m)
	return m, logs
}
