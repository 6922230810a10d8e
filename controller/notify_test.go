package controller_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/gitfleet/gitfleet/controller"
	"github.com/gitfleet/gitfleet/controller/notifier"
	"github.com/gitfleet/gitfleet/webhooks/notify"
)

// A commit that adds a Notification is announced to it: the sinks follow
// the commit before its events go out. Later commits' events follow, a
// Notification the controller cannot carry out (e-mail without an SMTP
// server) is reported without holding the commit back, and a stopped
// rollout is notified as rollout.stopped.
func TestNotificationsFollowTheLiveCommit(t *testing.T) {
	var mu sync.Mutex
	var got []notify.Payload
	recv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var p notify.Payload
		body, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(body, &p); err != nil {
			t.Errorf("payload %q: %v", body, err)
		}
		mu.Lock()
		got = append(got, p)
		mu.Unlock()
	}))
	t.Cleanup(recv.Close)
	received := func() []notify.Payload {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(got)
	}
	tc := startController(t, func(o *controller.Options, _ *controller.ServerOptions) {
		o.Notifications = notifier.Options{
			Client: recv.Client(),
			Secrets: notifier.Secrets{LookupEnv: func(k string) (string, bool) {
				return "hook-secret", k == "HOOK_SECRET"
			}},
		}
	})
	add := tc.Repo.Commit(map[string]string{"notifications/ops.yaml": `apiVersion: gitfleet.io/v1
kind: Notification
metadata: {name: ops}
spec:
  webhook: {url: "` + recv.URL + `/gitfleet", secret: {env: HOOK_SECRET}}
  events: [commit.live, rollout.stopped]
---
apiVersion: gitfleet.io/v1
kind: Notification
metadata: {name: mail}
spec:
  email: {to: [ops@fleet.example]}
`}, "notify ops")
	tc.Trigger()
	// Live (a Notification the controller cannot carry out, the e-mail
	// one, does not hold the commit back) and announced to the webhook;
	// the announcement may arrive before this replica swaps its snapshot.
	await(t, tc, "the commit adding the Notification live and announced to it", func() bool {
		ps := received()
		return len(ps) == 1 && ps[0].Event == notify.CommitLive && ps[0].Commit == add && tc.Live().Commit.SHA == add
	})
	if probs := tc.Notifier().Problems(); len(probs) != 1 || !strings.Contains(probs[0].Error(), "notification mail") {
		t.Errorf("problems = %v, want the e-mail Notification without an SMTP server", probs)
	}

	stop := tc.Repo.Commit(map[string]string{"rollout.yaml": "# removed\n"}, "stop hello-2")
	tc.Trigger()
	await(t, tc, "the stopped rollout notified", func() bool { return len(received()) == 3 })
	ps := received()
	kinds := []notify.Kind{ps[1].Event, ps[2].Event}
	if !slices.Equal(kinds, []notify.Kind{notify.CommitLive, notify.RolloutStopped}) || ps[2].Rollout != "hello-2" || ps[2].Commit != stop {
		t.Errorf("notifications after the second commit = %+v", ps[1:])
	}
}
