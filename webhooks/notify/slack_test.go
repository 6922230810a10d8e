package notify

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

func slackTexts(t *testing.T, r *receiver) []string {
	t.Helper()
	var out []string
	for _, d := range r.deliveries() {
		var m struct {
			Text string `json:"text"`
		}
		if err := json.Unmarshal(d.body, &m); err != nil {
			t.Fatalf("body %q: %v", d.body, err)
		}
		if d.header.Get("Content-Type") != "application/json" {
			t.Errorf("Content-Type = %q", d.header.Get("Content-Type"))
		}
		out = append(out, m.Text)
	}
	return out
}

// A burst within one window makes one Slack message that counts the
// events by kind and lists the first ones.
func TestSlackBatchesBurstIntoOneMessage(t *testing.T) {
	r := newReceiver(t, "")
	g := newGate(30 * time.Second)
	s, err := NewSlack(SlackOptions{URL: Secret(r.srv.URL + "/services/T0/B0/x"), Client: r.srv.Client(),
		Window: 30 * time.Second, Listed: 5, Sleep: g.Sleep})
	if err != nil {
		t.Fatal(err)
	}
	s.Notify(alert("dev-0000"))
	g.waitEntered(t)
	for i := 1; i < 1000; i++ {
		s.Notify(alert(fmt.Sprintf("dev-%04d", i)))
	}
	s.Notify(Event{Kind: RolloutAborted, Rollout: "canary", Details: map[string]string{"reason": "alert ssh-root"}})
	close(g.open)
	eventually(t, "one Slack message", func() bool { return len(r.deliveries()) >= 1 })
	closeSink(t, s)
	texts := slackTexts(t, r)
	if len(texts) != 1 {
		t.Fatalf("%d messages, want 1", len(texts))
	}
	txt := texts[0]
	for _, want := range []string{"*Gitfleet: 1001 events: 1000 alert.raised, 1 rollout.aborted*",
		"alert.raised check ssh-root device dev-0000", "device dev-0004", "… and 996 more"} {
		if !strings.Contains(txt, want) {
			t.Errorf("message lacks %q:\n%s", want, txt)
		}
	}
	if strings.Contains(txt, "dev-0005") {
		t.Errorf("message lists more than Listed events:\n%s", txt)
	}
	if st := s.Stats(); st.Delivered != 1001 || st.Messages != 1 {
		t.Errorf("stats = %+v", st)
	}
}

// A single event is one readable line; names cannot form Slack links or
// mentions.
func TestSlackSingleEventEscapesMarkup(t *testing.T) {
	r := newReceiver(t, "")
	clk := newFakeClock()
	s, err := NewSlack(SlackOptions{URL: Secret(r.srv.URL + "/x"), Client: r.srv.Client(), Now: clk.Now, Sleep: clk.Sleep})
	if err != nil {
		t.Fatal(err)
	}
	s.Notify(Event{Kind: AlertRaised, Check: "auth", Device: "<!channel>",
		Details: map[string]string{"evidence": "<https://evil.example|click>"}})
	closeSink(t, s)
	texts := slackTexts(t, r)
	if len(texts) != 1 {
		t.Fatalf("%d messages", len(texts))
	}
	if strings.ContainsAny(strings.ReplaceAll(texts[0], "> evidence", ""), "<>") {
		t.Errorf("unescaped markup: %s", texts[0])
	}
	if !strings.Contains(texts[0], "alert.raised check auth device &lt;!channel&gt;") {
		t.Errorf("text = %s", texts[0])
	}
}

// Slack is retried like the webhook: a 503 then a 200 is one message.
func TestSlackRetriesServerError(t *testing.T) {
	r := newReceiver(t, "", status(http.StatusServiceUnavailable, "2"))
	clk := newFakeClock()
	s, err := NewSlack(SlackOptions{URL: Secret(r.srv.URL + "/x"), Client: r.srv.Client(), Now: clk.Now, Sleep: clk.Sleep})
	if err != nil {
		t.Fatal(err)
	}
	s.Notify(alert("dev-1"))
	closeSink(t, s)
	if n := len(r.deliveries()); n != 2 {
		t.Errorf("requests = %d, want 2", n)
	}
	if st := s.Stats(); st.Delivered != 1 || st.Failed != 0 {
		t.Errorf("stats = %+v", st)
	}
}
