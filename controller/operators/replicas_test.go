package operators

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/controller/deviceapi"
	"github.com/gitfleet/gitfleet/controller/reconcile"
	"github.com/gitfleet/gitfleet/controller/store/redis"
	"github.com/gitfleet/gitfleet/controller/store/redistest"
	"github.com/labstack/echo/v5"
)

// Two replicas on one real redis-server: a session token issued by one is
// accepted by the other (the key is the store's shared secret), and an SSH
// challenge answered on one is refused as a replay on the other.
func TestReplicasShareTokensAndChallenges(t *testing.T) {
	addr, _ := redistest.Start(t)
	e := newEnv(t) // for its fleet, key and clock
	var urls []string
	var replicas []*Access
	for i := 0; i < 2; i++ {
		st, err := redis.New(redis.Options{Addrs: []string{addr}, Prefix: "ops"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		a, err := New(Options{Live: func() *reconcile.Snapshot { return e.live.Load() }, Store: st, Now: func() time.Time { return time.Unix(e.clock.Load(), 0) }})
		if err != nil {
			t.Fatal(err)
		}
		ec := echo.New()
		ec.HTTPErrorHandler = deviceapi.JSONErrors
		a.Register(ec)
		srv := httptest.NewServer(ec)
		t.Cleanup(srv.Close)
		urls, replicas = append(urls, srv.URL), append(replicas, a)
	}
	// Log in on replica 0, use the token on replica 1.
	req, _ := http.NewRequest("POST", urls[0]+LoginPath, nil)
	req.SetBasicAuth("alice", aliceToken)
	rsp, body := e.do(req)
	if rsp.StatusCode != http.StatusOK {
		t.Fatalf("login on replica 0: %d %s", rsp.StatusCode, body)
	}
	r1 := httptest.NewRequest("GET", "/", nil)
	r1.Header.Set("Authorization", "Bearer "+body)
	if op, err := replicas[1].Operator(r1); err != nil || op != "alice" {
		t.Fatalf("replica 1 refused replica 0's session token: %q %v", op, err)
	}
	// A challenge from replica 0, answered on replica 1, replayed on 0.
	e.srv.URL = urls[0]
	c := e.challenge("alice")
	e.srv.URL = urls[1]
	if code, body := e.sshLogin(e.key, "alice", c); code != http.StatusOK {
		t.Fatalf("ssh login on replica 1: %d %s", code, body)
	}
	e.srv.URL = urls[0]
	code, body := e.sshLogin(e.key, "alice", c)
	if code != http.StatusUnauthorized || !strings.Contains(body, "used already") {
		t.Fatalf("replay on replica 0: %d %s", code, body)
	}
	var msg struct {
		Error string `json:"error"`
	}
	if json.Unmarshal([]byte(body), &msg) != nil || msg.Error == "" {
		t.Errorf("refusal is not {\"error\": …}: %s", body)
	}
}
