package notifier

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/mail"
	"strings"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gitfleet/gitfleet/schema"
	"github.com/gitfleet/gitfleet/webhooks/receive"
)

// End to end with real peers: events appended to a real (embedded) store
// through the decorated event log reach an HTTPS webhook receiver, which
// verifies the signature with Gitfleet's own generic receiver
// (webhooks/receive), after one refused delivery that is retried with the
// same delivery ID; and 1,000 alerts reach a local SMTP server (STARTTLS,
// AUTH) as one digest mail, sent again after the server refused it once.
func TestDeliveriesEndToEnd(t *testing.T) {
	const secret = "e2e-hook-s3cret"
	verifier, err := receive.New(receive.Options{
		Secret: secret, Ref: "main",
		Trigger: func(context.Context, receive.Push) {},
		Logger:  slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	hook := startHook(t, http.StatusServiceUnavailable) // the first delivery is refused
	hook.handler = verifier.For(receive.Generic)
	smtp := smtpServer(t)
	smtp.FailNext(1) // the first digest is refused (451)
	g := newGate(mailWindow)
	logs := &logBuffer{}
	n, err := New(Options{
		SMTP:    smtpSettings(smtp),
		Secrets: Secrets{LookupEnv: env("OPS_HOOK_SECRET", secret)},
		Client:  clientFor(hook),
		Sleep:   g.Sleep,
		Logger:  logs.Logger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	fleet := loadFleet(t,
		notification("ops-hook", "webhook: {url: '"+hook.srv.URL+"/hooks/generic', secret: {env: OPS_HOOK_SECRET}}",
			"events: [commit.live, commit.refused]"),
		notification("sec-mail", "email: {to: [sec@fleet.example, ops@fleet.example]}", "events: [alert.raised]"),
	)
	if err := n.Configure(fleet); err != nil {
		t.Fatal(err)
	}
	log := EventLog(openStore(t), n)
	ctx := context.Background()

	if _, _, err := log.AppendEvent(ctx, store.Event{Commit: "9f2c1e0d", Kind: schema.EventCommitLive, Subject: "9f2c1e0d",
		Message: "commit 9f2c1e0d is live: release 2"}); err != nil {
		t.Fatal(err)
	}
	raised := time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC)
	for i := range 1000 {
		n.Alert(ctx, store.Alert{Device: fmt.Sprintf("dev-%04d", i), Check: "ssh-root", State: store.AlertOpen,
			Severity: "critical", Evidence: "Failed password for root from 10.0.0.9", Raised: raised, Count: 1, Seq: 1},
			schema.EventAlertRaised)
	}
	g.Open() // end the digest window: everything above is in it
	reqs := hook.wait(t, 2)
	mails := smtp.WaitMails(t, 1, 30*time.Second)
	closeNotifier(t, n)

	// The webhook: refused once, then delivered and verified (202: a
	// valid generic delivery that is not a push), with one delivery ID.
	reqs = hook.requests()
	if len(reqs) != 2 || reqs[0].status != http.StatusServiceUnavailable || reqs[1].status != http.StatusAccepted {
		var codes []int
		for _, r := range reqs {
			codes = append(codes, r.status)
		}
		t.Fatalf("receiver answered %v, want [503 202]\nlog:\n%s", codes, logs.String())
	}
	if a, b := reqs[0].header.Get("X-Gitfleet-Delivery"), reqs[1].header.Get("X-Gitfleet-Delivery"); a == "" || a != b {
		t.Errorf("delivery IDs %q and %q: a retry must carry the same one", a, b)
	}
	if ev := reqs[1].header.Get("X-Gitfleet-Event"); ev != "commit.live" {
		t.Errorf("X-Gitfleet-Event = %q", ev)
	}

	// The mail: one digest of the 1,000 alerts, sent again after the
	// server refused it once.
	if smtp.Refused() != 1 {
		t.Errorf("the server refused %d messages, want 1", smtp.Refused())
	}
	if len(mails) != 1 {
		t.Fatalf("%d mails, want one digest", len(mails))
	}
	msg, err := mail.ReadMessage(strings.NewReader(string(mails[0].Data)))
	if err != nil {
		t.Fatal(err)
	}
	if subj := msg.Header.Get("Subject"); subj != "[Gitfleet] 1000 events: 1000 alert.raised" {
		t.Errorf("subject = %q", subj)
	}
	if !mails[0].TLS || strings.Join(mails[0].To, ",") != "sec@fleet.example,ops@fleet.example" {
		t.Errorf("mail TLS %v to %v", mails[0].TLS, mails[0].To)
	}
	var mailStats, hookStats SinkStats
	for _, s := range n.Stats().Sinks {
		switch s.Sink {
		case "email":
			mailStats = s
		case "webhook":
			hookStats = s
		}
	}
	if mailStats.Delivered != 1000 || mailStats.Messages != 1 || mailStats.Failed != 0 || mailStats.Dropped != 0 {
		t.Errorf("e-mail stats = %+v", mailStats)
	}
	if hookStats.Delivered != 1 || hookStats.Failed != 0 {
		t.Errorf("webhook stats = %+v", hookStats)
	}
	if strings.Contains(logs.String(), secret) || strings.Contains(logs.String(), "smtp-PASSWORD-7c1") {
		t.Error("a secret reached the log")
	}
}
