package notifier

import (
	"context"
	"errors"
	"fmt"
	"net/mail"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gitfleet/gitfleet/schema"
	"github.com/gitfleet/gitfleet/webhooks/notify"
	"github.com/prometheus/client_golang/prometheus"
)

// One fleet with a webhook, a Slack and an e-mail Notification: each gets
// its sink, with the secrets read from a file and from the environment,
// and each receives exactly the events its events, rollouts and checks
// select.
func TestConfigureSinksAndFilters(t *testing.T) {
	hook, chat, smtp := startHook(t), startHook(t), smtpServer(t)
	secretFile := writeSecret(t, "hook-secret", "hook-s3cret-from-file\n")
	g := newGate(mailWindow, slackWindow)
	n, err := New(Options{
		SMTP:        smtpSettings(smtp),
		Secrets:     Secrets{LookupEnv: env("CHAT_URL", chat.srv.URL+"/services/T0/B0/xyz")},
		Client:      clientFor(hook, chat),
		SlackWindow: slackWindow,
		Sleep:       g.Sleep,
	})
	if err != nil {
		t.Fatal(err)
	}
	fleet := loadFleet(t,
		notification("ops-hook",
			"webhook: {url: '"+hook.srv.URL+"/gitfleet', secret: {file: '"+secretFile+"'}}",
			"events: [rollout.aborted, alert.raised]", "rollouts: [canary]", "checks: [ssh-root]"),
		notification("team-chat", "slack: {url: {env: CHAT_URL}}", "events: [commit.live]"),
		notification("sec-mail", "email: {to: [sec@fleet.example]}", "events: [alert.raised, alert.cleared]", "checks: [ssh-root]"),
	)
	if err := n.Configure(fleet); err != nil {
		t.Fatalf("Configure: %v", err)
	}
	var got []string
	for _, s := range n.Stats().Sinks {
		got = append(got, s.Notification+"/"+s.Sink)
	}
	if want := []string{"ops-hook/webhook", "team-chat/slack", "sec-mail/email"}; !slices.Equal(got, want) {
		t.Fatalf("sinks = %v, want %v", got, want)
	}

	ctx := context.Background()
	t0 := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	n.Notify(ctx, notify.Event{Kind: notify.RolloutAborted, Rollout: "canary", Commit: "c1", Time: t0})
	n.Notify(ctx, notify.Event{Kind: notify.RolloutAborted, Rollout: "stable", Commit: "c1"}) // rollouts filter
	n.Notify(ctx, notify.Event{Kind: notify.RolloutStarted, Rollout: "canary", Commit: "c1"}) // events filter
	n.Alert(ctx, store.Alert{Device: "dev-1", Check: "ssh-root", State: store.AlertOpen, Severity: "critical",
		Evidence: "Failed password for root", Raised: t0, Seq: 7, Count: 1}, schema.EventAlertRaised)
	n.Alert(ctx, store.Alert{Device: "dev-1", Check: "disk", State: store.AlertOpen, Seq: 8}, schema.EventAlertRaised) // checks filter
	n.Alert(ctx, store.Alert{Device: "dev-1", Check: "ssh-root", State: store.AlertClosed, Closing: store.AlertExpired,
		Closed: t0.Add(time.Hour), Seq: 9}, schema.EventAlertCleared)
	n.Notify(ctx, notify.Event{Kind: notify.CommitLive, Commit: "c2", Details: map[string]string{"message": "commit c2 is live"}})
	hook.wait(t, 2)
	closeNotifier(t, n)

	// The webhook: the aborted canary rollout and the ssh-root alert,
	// signed with the secret from the file.
	ps := hook.payloads(t)
	if len(ps) != 2 || ps[0].Event != notify.RolloutAborted || ps[0].Rollout != "canary" ||
		ps[1].Event != notify.AlertRaised || ps[1].Check != "ssh-root" || ps[1].Device != "dev-1" {
		t.Fatalf("webhook payloads = %+v", ps)
	}
	if ps[1].Details["severity"] != "critical" || ps[1].Details["evidence"] != "Failed password for root" {
		t.Errorf("alert details = %v", ps[1].Details)
	}
	for _, r := range hook.requests() {
		want := notify.Sign([]byte("hook-s3cret-from-file"), r.header.Get(notify.HeaderTimestamp),
			r.header.Get(notify.HeaderDelivery), r.body)
		if got := r.header.Get(notify.HeaderSignature); got != want {
			t.Errorf("signature %q, want %q (the secret file's content, trimmed)", got, want)
		}
	}

	// Slack: commit.live only.
	if texts := chat.slackTexts(t); len(texts) != 1 || !strings.Contains(texts[0], "commit.live") {
		t.Errorf("slack messages = %q", texts)
	}

	// E-mail: one digest of the ssh-root alert raised and cleared.
	mails := smtp.Mails()
	if len(mails) != 1 {
		t.Fatalf("%d mails, want 1", len(mails))
	}
	msg, err := mail.ReadMessage(strings.NewReader(string(mails[0].Data)))
	if err != nil {
		t.Fatal(err)
	}
	if subj := msg.Header.Get("Subject"); subj != "[Gitfleet] 2 events: 1 alert.raised, 1 alert.cleared" {
		t.Errorf("subject = %q", subj)
	}
	if strings.Join(mails[0].To, ",") != "sec@fleet.example" || mails[0].From != "gitfleet@fleet.example" || !mails[0].TLS {
		t.Errorf("mail from %s to %v, TLS %v", mails[0].From, mails[0].To, mails[0].TLS)
	}
	st := n.Stats()
	if st.Total.Delivered != 5 || st.Total.Failed != 0 || st.Problems != 0 {
		t.Errorf("stats = %+v", st)
	}
}

// A manifest whose settings and secrets did not change keeps its sink, and
// so the events waiting in its queue; a changed secret makes a new sink; a
// removed manifest's sink delivers what it holds before it goes.
func TestConfigureKeepsUnchangedSinks(t *testing.T) {
	hook, chat := startHook(t), startHook(t)
	secretFile := writeSecret(t, "hook-secret", "first-secret")
	g := newGate(slackWindow)
	n, err := New(Options{
		Secrets:     Secrets{LookupEnv: env("CHAT_URL", chat.srv.URL+"/services/T0/B0/xyz")},
		Client:      clientFor(hook, chat),
		SlackWindow: slackWindow,
		Sleep:       g.Sleep,
	})
	if err != nil {
		t.Fatal(err)
	}
	hookManifest := notification("ops-hook", "webhook: {url: '"+hook.srv.URL+"/x', secret: {file: '"+secretFile+"'}}",
		"events: [commit.live]")
	chatManifest := notification("team-chat", "slack: {url: {env: CHAT_URL}}", "events: [commit.live]")
	if err := n.Configure(loadFleet(t, hookManifest, chatManifest)); err != nil {
		t.Fatal(err)
	}
	first := slices.Clone(n.sinks)
	ctx := context.Background()
	n.Notify(ctx, notify.Event{Kind: notify.CommitLive, Commit: "c1"})
	hook.wait(t, 1) // the Slack event waits in its window (the gate is shut)

	// The same manifests, loaded again from a new commit: same sinks.
	if err := n.Configure(loadFleet(t, hookManifest, chatManifest)); err != nil {
		t.Fatal(err)
	}
	if n.sinks[0] != first[0] || n.sinks[1] != first[1] {
		t.Fatal("unchanged manifests got new sinks")
	}
	if q := n.Stats().Sinks[1].Queued; q != 1 {
		t.Fatalf("slack queue holds %d events, want the 1 from before Configure", q)
	}

	// A rotated secret file: a new webhook sink, the Slack one stays.
	if err := writeFile(secretFile, "second-secret"); err != nil {
		t.Fatal(err)
	}
	if err := n.Configure(loadFleet(t, hookManifest, chatManifest)); err != nil {
		t.Fatal(err)
	}
	if n.sinks[0] == first[0] || n.sinks[1] != first[1] {
		t.Fatal("a changed secret must replace the webhook sink and only it")
	}
	n.Notify(ctx, notify.Event{Kind: notify.CommitLive, Commit: "c2"})
	reqs := hook.wait(t, 2)
	last := reqs[1]
	if want := notify.Sign([]byte("second-secret"), last.header.Get(notify.HeaderTimestamp),
		last.header.Get(notify.HeaderDelivery), last.body); last.header.Get(notify.HeaderSignature) != want {
		t.Error("the new sink does not sign with the rotated secret")
	}

	// The Slack manifest removed: its sink delivers its two queued events
	// on the way out, without waiting for its window.
	if err := n.Configure(loadFleet(t, hookManifest)); err != nil {
		t.Fatal(err)
	}
	msgs := chat.wait(t, 1)
	if len(n.Stats().Sinks) != 1 {
		t.Errorf("sinks after removal: %+v", n.Stats().Sinks)
	}
	closeNotifier(t, n)
	if len(msgs) != 1 || !strings.Contains(chat.slackTexts(t)[0], "2 events") {
		t.Errorf("slack got %q, want one message with both events", chat.slackTexts(t))
	}
}

// Manifests the controller cannot carry out (a missing environment
// variable or file, e-mail without an SMTP server) are reported, logged
// and counted, and do not keep the others from working.
func TestConfigureProblems(t *testing.T) {
	hook := startHook(t)
	logs := &logBuffer{}
	reg := prometheus.NewRegistry()
	lookup := map[string]string{}
	n, err := New(Options{
		Secrets:  Secrets{LookupEnv: func(k string) (string, bool) { v, ok := lookup[k]; return v, ok }},
		Client:   clientFor(hook),
		Logger:   logs.Logger(),
		Registry: reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	missing := t.TempDir() + "/no-such-file"
	fleet := loadFleet(t,
		notification("good", "webhook: {url: '"+hook.srv.URL+"/x', secret: {env: GOOD_SECRET}}"),
		notification("no-env", "webhook: {url: '"+hook.srv.URL+"/y', secret: {env: UNSET_SECRET}}"),
		notification("no-file", "slack: {url: {file: '"+missing+"'}}"),
		notification("no-smtp", "email: {to: [ops@fleet.example]}"),
	)
	lookup["GOOD_SECRET"] = "g00d-secret"
	err = n.Configure(fleet)
	if err == nil {
		t.Fatal("Configure reported no problem")
	}
	probs := n.Problems()
	if len(probs) != 3 {
		t.Fatalf("problems = %v", probs)
	}
	for i, want := range []string{
		"notification no-env (notifications/1.yaml:1:1): webhook secret: notifier: secret not available: environment variable UNSET_SECRET is not set",
		"notification no-file (notifications/2.yaml:1:1): slack url: notifier: secret not available: file " + missing + " on the controller: no such file or directory",
		"notification no-smtp (notifications/3.yaml:1:1): notifier: no SMTP server configured: start the controller with --smtp-addr",
	} {
		if !strings.Contains(probs[i].Error(), want) {
			t.Errorf("problem %d = %q, want it to contain %q", i, probs[i], want)
		}
	}
	if !errors.Is(probs[0], ErrSecret) || !errors.Is(probs[2], ErrNoSMTP) {
		t.Error("problems do not wrap ErrSecret / ErrNoSMTP")
	}
	if st := n.Stats(); len(st.Sinks) != 1 || st.Sinks[0].Notification != "good" || st.Problems != 3 {
		t.Errorf("stats = %+v", st)
	}
	if v := metricValue(t, reg, "gitfleet_notification_problems"); v != 3 {
		t.Errorf("gitfleet_notification_problems = %v", v)
	}
	if out := logs.String(); strings.Count(out, "notification not configured") != 3 || strings.Contains(out, "g00d-secret") {
		t.Errorf("log:\n%s", out)
	}

	// The good one works meanwhile.
	n.Notify(context.Background(), notify.Event{Kind: notify.CommitLive, Commit: "c1"})
	hook.wait(t, 1)

	// Setting the variable and configuring again (the next commit) mends
	// that one; the others are logged again.
	lookup["UNSET_SECRET"] = "now-set"
	n.Configure(fleet)
	if probs := n.Problems(); len(probs) != 2 {
		t.Errorf("problems after the fix = %v", probs)
	}
	if out := logs.String(); strings.Count(out, "notification not configured") != 5 {
		t.Errorf("problems are not logged at every Configure:\n%s", out)
	}
	closeNotifier(t, n)
	if v := metricValue(t, reg, "gitfleet_notification_problems"); v != 2 {
		t.Errorf("gitfleet_notification_problems = %v", v)
	}
}

// metricValue returns the value of the one metric called name in reg.
func metricValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name || len(mf.Metric) != 1 {
			continue
		}
		m := mf.Metric[0]
		if m.Gauge != nil {
			return m.Gauge.GetValue()
		}
		return m.Counter.GetValue()
	}
	t.Fatalf("no single metric %s", name)
	return 0
}

// The event log decorator notifies an event once, when the store records
// it for the first time, and only events of the schema's list.
func TestEventLogNotifiesOnlyWhenAdded(t *testing.T) {
	hook := startHook(t)
	reg := prometheus.NewRegistry()
	n, err := New(Options{Secrets: Secrets{LookupEnv: env("S", "s3cret")}, Client: clientFor(hook), Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Configure(loadFleet(t, notification("all", "webhook: {url: '"+hook.srv.URL+"/x', secret: {env: S}}"))); err != nil {
		t.Fatal(err)
	}
	st := openStore(t)
	log := EventLog(st, n)
	ctx := context.Background()
	live := store.Event{Commit: "c1", Kind: schema.EventCommitLive, Subject: "c1", Author: "Ada <ada@example.com>",
		Message: "commit c1 is live: ship it"}
	id1, added, err := log.AppendEvent(ctx, live)
	if err != nil || !added {
		t.Fatalf("first append: added %v, %v", added, err)
	}
	// Another replica (or a retry) appends the same event: not added, not
	// notified again.
	id2, added, err := log.AppendEvent(ctx, live)
	if err != nil || added || id2 != id1 {
		t.Fatalf("second append: id %q added %v err %v", id2, added, err)
	}
	// A kind outside the schema's list is recorded but not notified.
	if _, added, err := log.AppendEvent(ctx, store.Event{Commit: "c1", Kind: "rollout.phase-completed", Subject: "canary/g1/phase0"}); err != nil || !added {
		t.Fatalf("append: %v %v", added, err)
	}
	if _, _, err := log.AppendEvent(ctx, store.Event{Commit: "c1", Kind: schema.EventRolloutStarted, Subject: "canary",
		Message: "rollout canary started generation 1"}); err != nil {
		t.Fatal(err)
	}
	hook.wait(t, 2)
	closeNotifier(t, n)

	ps := hook.payloads(t)
	if len(ps) != 2 {
		t.Fatalf("%d notifications, want 2: %+v", len(ps), ps)
	}
	if ps[0].Event != notify.CommitLive || ps[0].Commit != "c1" || ps[0].Details["author"] != "Ada <ada@example.com>" ||
		ps[0].Details["message"] != "commit c1 is live: ship it" || !strings.HasPrefix(ps[0].ID, "ev-"+id1+"-") {
		t.Errorf("commit.live payload = %+v", ps[0])
	}
	if ps[1].Event != notify.RolloutStarted || ps[1].Rollout != "canary" {
		t.Errorf("rollout.started payload = %+v", ps[1])
	}
	if evs, err := log.RecentEvents(ctx, 10); err != nil || len(evs) != 3 {
		t.Errorf("the log reads through to the store: %d events, %v", len(evs), err)
	}
	if v := metricValue(t, reg, "gitfleet_notification_events_ignored_total"); v != 1 {
		t.Errorf("ignored events = %v, want 1", v)
	}
}

func TestLogEvent(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   store.Event
		want notify.Event
		ok   bool
	}{
		{"commit.live: the subject is the commit",
			store.Event{Kind: "commit.live", Commit: "abc", Subject: "abc", Message: "commit abc is live"},
			notify.Event{Kind: notify.CommitLive, Commit: "abc", Details: map[string]string{"message": "commit abc is live"}}, true},
		{"rollout change: the subject is the rollout",
			store.Event{Kind: "rollout.stopped", Commit: "abc", Subject: "canary"},
			notify.Event{Kind: notify.RolloutStopped, Commit: "abc", Rollout: "canary"}, true},
		{"rollout/NAME subject",
			store.Event{Kind: "rollout.aborted", Subject: "rollout/canary"},
			notify.Event{Kind: notify.RolloutAborted, Rollout: "canary"}, true},
		{"phase subject gives generation and phase",
			store.Event{Kind: "rollout.phase_completed", Subject: "canary/g3/phase1"},
			notify.Event{Kind: notify.RolloutPhaseCompleted, Rollout: "canary", Details: map[string]string{"generation": "3", "phase": "1"}}, true},
		{"generation subject",
			store.Event{Kind: "rollout.completed", Subject: "canary/g12"},
			notify.Event{Kind: notify.RolloutCompleted, Rollout: "canary", Details: map[string]string{"generation": "12"}}, true},
		{"device event, bare ID", store.Event{Kind: "device.pending", Subject: "dev-9"},
			notify.Event{Kind: notify.DevicePending, Device: "dev-9"}, true},
		{"device event",
			store.Event{Kind: "device.pending", Subject: "device/dev-9"},
			notify.Event{Kind: notify.DevicePending, Device: "dev-9"}, true},
		{"kind not in the schema", store.Event{Kind: "rollout.phase-completed"}, notify.Event{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := LogEvent(tc.in, "17")
			if ok != tc.ok {
				t.Fatalf("ok = %v", ok)
			}
			if !ok {
				return
			}
			if !strings.HasPrefix(got.ID, "ev-17-") || got.Validate() != nil {
				t.Errorf("ID %q", got.ID)
			}
			got.ID = ""
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
	// The same event recorded under another store ID (appended again after
	// the dedupe window) is another notification.
	e := store.Event{Kind: "commit.live", Commit: "abc"}
	a, _ := LogEvent(e, "1")
	b, _ := LogEvent(e, "2")
	if a.ID == b.ID {
		t.Error("two log entries share a notification ID")
	}
	long, _ := LogEvent(store.Event{Kind: "commit.refused", Message: strings.Repeat("x", 100_000)}, "3")
	if len(long.Details["message"]) > maxMessage+8 {
		t.Errorf("message of %d bytes not bounded", len(long.Details["message"]))
	}
}

func TestAlertEvent(t *testing.T) {
	raised := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	a := store.Alert{Device: "dev-1", Check: "ports", Key: "tcp/8080", State: store.AlertOpen, Severity: "critical",
		Evidence: "port 8080 (nc)", Raised: raised, Updated: raised, Count: 2, Seq: 42}
	ev, err := AlertEvent(a, schema.EventAlertRaised)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"severity": "critical", "evidence": "port 8080 (nc)", "key": "tcp/8080", "count": "2"}
	if ev.Kind != notify.AlertRaised || ev.Device != "dev-1" || ev.Check != "ports" || !ev.Time.Equal(raised) ||
		fmt.Sprint(ev.Details) != fmt.Sprint(want) || ev.Validate() != nil {
		t.Errorf("raised = %+v", ev)
	}
	again, _ := AlertEvent(a, schema.EventAlertRaised)
	if again.ID != ev.ID {
		t.Error("the same change announced twice has two IDs")
	}
	a.State, a.Closing, a.Closed, a.Seq = store.AlertClosed, store.AlertCleared, raised.Add(time.Minute), 43
	cl, err := AlertEvent(a, schema.EventAlertCleared)
	if err != nil || cl.Kind != notify.AlertCleared || cl.Details["closing"] != store.AlertCleared ||
		!cl.Time.Equal(a.Closed) || cl.ID == ev.ID {
		t.Errorf("cleared = %+v, %v", cl, err)
	}
	if _, err := AlertEvent(a, "alert.flapping"); err == nil {
		t.Error("an alert kind outside alert.raised/alert.cleared was accepted")
	}
}

func TestSecretsResolve(t *testing.T) {
	file := writeSecret(t, "ok", "  t0ken\n")
	empty := writeSecret(t, "empty", "\n")
	big := writeSecret(t, "big", strings.Repeat("x", MaxSecretFile+1))
	s := Secrets{LookupEnv: env("SET", "v4lue", "BLANK", " ")}
	for _, tc := range []struct {
		name string
		ref  schema.SecretRef
		want notify.Secret
		err  string
	}{
		{"env", schema.SecretRef{Env: "SET"}, "v4lue", ""},
		{"file, trimmed", schema.SecretRef{File: file}, "t0ken", ""},
		{"unset env", schema.SecretRef{Env: "UNSET"}, "", "environment variable UNSET is not set"},
		{"blank env", schema.SecretRef{Env: "BLANK"}, "", "environment variable BLANK is not set (or empty)"},
		{"missing file", schema.SecretRef{File: file + ".nope"}, "", "no such file or directory"},
		{"empty file", schema.SecretRef{File: empty}, "", "is empty"},
		{"oversized file", schema.SecretRef{File: big}, "", "larger than 65536 bytes"},
		{"both", schema.SecretRef{Env: "SET", File: file}, "", "names both"},
		{"neither", schema.SecretRef{}, "", "neither"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.Resolve(tc.ref)
			if tc.err == "" {
				if err != nil || got != tc.want {
					t.Errorf("Resolve = %q, %v", string(got), err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) || !errors.Is(err, ErrSecret) {
				t.Errorf("err = %v, want %q", err, tc.err)
			}
		})
	}
	// The default reads the real environment.
	t.Setenv("GITFLEET_NOTIFIER_TEST_SECRET", "from-env")
	if v, err := (Secrets{}).Resolve(schema.SecretRef{Env: "GITFLEET_NOTIFIER_TEST_SECRET"}); err != nil || v != "from-env" {
		t.Errorf("default environment: %q, %v", string(v), err)
	}
}

func TestNewChecksSMTP(t *testing.T) {
	for _, tc := range []struct {
		name string
		smtp SMTP
	}{
		{"no port", SMTP{Addr: "smtp.example.com", From: "a@b.example"}},
		{"bad port", SMTP{Addr: "smtp.example.com:smtp", From: "a@b.example"}},
		{"no from", SMTP{Addr: "smtp.example.com:587"}},
		{"bad from", SMTP{Addr: "smtp.example.com:587", From: "not an address"}},
		{"user without password", SMTP{Addr: "smtp.example.com:587", From: "a@b.example", Username: "u"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(Options{SMTP: tc.smtp}); !errors.Is(err, ErrOptions) {
				t.Errorf("New = %v, want ErrOptions", err)
			}
		})
	}
	if _, err := New(Options{SMTP: SMTP{Addr: "127.0.0.1:2525", From: "Gitfleet <gitfleet@fleet.example>"}}); err != nil {
		t.Errorf("valid settings refused: %v", err)
	}
}

// After Close nothing is taken or configured, and a second Close is a
// no-op.
func TestCloseStops(t *testing.T) {
	hook := startHook(t)
	n, err := New(Options{Secrets: Secrets{LookupEnv: env("S", "s3cret")}, Client: clientFor(hook)})
	if err != nil {
		t.Fatal(err)
	}
	fleet := loadFleet(t, notification("all", "webhook: {url: '"+hook.srv.URL+"/x', secret: {env: S}}"))
	if err := n.Configure(fleet); err != nil {
		t.Fatal(err)
	}
	closeNotifier(t, n)
	n.Notify(context.Background(), notify.Event{Kind: notify.CommitLive})
	if err := n.Configure(fleet); err != nil {
		t.Fatal(err)
	}
	closeNotifier(t, n)
	if len(hook.requests()) != 0 {
		t.Errorf("a closed notifier sent %d requests", len(hook.requests()))
	}
}
