package notify

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
)

// closedPort returns a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// No secret — the signing secret, URL userinfo, a token in the URL's path
// or query, a Slack URL — appears in any log line or error the sinks write.
func TestSecretsNeverInLogsOrErrors(t *testing.T) {
	addr := closedPort(t)
	const (
		signing  = "whsec-SIGNING-9b1f"
		password = "URLPASS-77ab"
		pathTok  = "T000/B000/SLACKTOKEN-4c2d"
		queryTok = "QUERYTOKEN-e5f6"
	)
	for _, tc := range []struct {
		name    string
		start   func(log *slog.Logger, clk *fakeClock) (Sink, error)
		secrets []string
	}{
		{"webhook to an unreachable host → error names the host only", func(log *slog.Logger, clk *fakeClock) (Sink, error) {
			return NewWebhook(WebhookOptions{
				URL:    Secret("http://user:" + password + "@" + addr + "/hook/" + pathTok + "?token=" + queryTok),
				Secret: signing, AllowHTTP: true, Logger: log, Now: clk.Now, Sleep: clk.Sleep,
				Retry: RetryOptions{MaxAttempts: 2},
			})
		}, []string{signing, password, pathTok, queryTok}},
		{"slack to an unreachable host → error names the host only", func(log *slog.Logger, clk *fakeClock) (Sink, error) {
			return NewSlack(SlackOptions{
				URL: Secret("http://" + addr + "/services/" + pathTok), AllowHTTP: true,
				Logger: log, Now: clk.Now, Sleep: clk.Sleep, Retry: RetryOptions{MaxAttempts: 2},
			})
		}, []string{pathTok}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logs := &logBuffer{}
			clk := newFakeClock()
			s, err := tc.start(logs.Logger(), clk)
			if err != nil {
				t.Fatal(err)
			}
			s.Notify(alert("dev-1"))
			closeSink(t, s)
			if st := s.Stats(); st.Failed != 1 {
				t.Fatalf("stats = %+v; the delivery should have failed", st)
			}
			out := logs.String()
			if !strings.Contains(out, "127.0.0.1") {
				t.Errorf("log does not name the destination host: %s", out)
			}
			for _, sec := range tc.secrets {
				if strings.Contains(out, sec) {
					t.Errorf("log leaks %q:\n%s", sec, out)
				}
			}
		})
	}
}

// Options errors do not quote the URL either.
func TestSecretsNotInOptionErrors(t *testing.T) {
	const tok = "SLACKTOKEN-4c2d"
	for _, raw := range []string{"http://hooks.example/services/" + tok, "hooks.example/" + tok, "https://[::1/" + tok} {
		_, err := NewSlack(SlackOptions{URL: Secret(raw)})
		if err == nil {
			t.Fatalf("%s accepted", raw)
		}
		if strings.Contains(err.Error(), tok) {
			t.Errorf("error leaks the URL: %v", err)
		}
	}
}

func TestSecretPrintsRedacted(t *testing.T) {
	s := Secret("hunter2-xyz")
	var b strings.Builder
	u := Secret("https://hooks.example/hunter2-in-path")
	slog.New(slog.NewTextHandler(&b, nil)).Info("x", "secret", s, "opts", WebhookOptions{Secret: s, URL: u})
	for _, out := range []string{fmt.Sprint(s), fmt.Sprintf("%v %+v %#v %s", s, s, s, s), b.String(),
		fmt.Sprintf("%+v", WebhookOptions{Secret: s, URL: u}), fmt.Sprintf("%+v", SlackOptions{URL: u}), fmt.Sprintf("%#v", EmailOptions{Password: s})} {
		if strings.Contains(out, "hunter2") {
			t.Errorf("printed secret: %s", out)
		}
	}
}

func TestScrubberDropsChainWhenItRemovesText(t *testing.T) {
	base := errors.New("dial tcp: lookup pw=hunter2-xyz")
	err := newScrubber("hunter2-xyz").err(fmt.Errorf("x: %w", base))
	if strings.Contains(err.Error(), "hunter2") || errors.Is(err, base) {
		t.Errorf("scrubbed error %v still leaks or unwraps", err)
	}
}
