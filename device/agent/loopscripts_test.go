package agent

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/gitfleet/gitfleet/artifact"
)

// recordingScripts records which state scripts ran and fails the ones
// named in fail.
type recordingScripts struct {
	mu   sync.Mutex
	ran  []string
	fail map[string]bool
}

func (r *recordingScripts) Store(context.Context, []artifact.Script) error { return nil }

func (r *recordingScripts) Run(_ context.Context, st StateName, action string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	name := string(st) + "_" + action
	r.ran = append(r.ran, name)
	if r.fail[name] {
		return errors.New("exit status 1")
	}
	return nil
}

func (r *recordingScripts) calls() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.ran, " ")
}

func TestSyncScripts(t *testing.T) {
	for _, tc := range []struct {
		name    string
		fail    string
		want    string
		polled  bool
		wantErr bool
	}{
		{"both run around the check", "", "Sync_Enter Sync_Leave", true, false},
		{"a failing Enter skips the check", "Sync_Enter", "Sync_Enter Sync_Error", false, true},
		{"a failing Leave is reported", "Sync_Leave", "Sync_Enter Sync_Leave Sync_Error", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t, "rel-1")
			scripts := &recordingScripts{fail: map[string]bool{tc.fail: true}}
			a, ctx := e.agentWith(func(o *Options) { o.Scripts = scripts })
			before := e.server.nextCalls()
			_, err := a.CheckUpdate(ctx)
			if (err != nil) != tc.wantErr {
				t.Fatalf("CheckUpdate error %v, want error %v", err, tc.wantErr)
			}
			if got := scripts.calls(); got != tc.want {
				t.Errorf("scripts ran %q, want %q", got, tc.want)
			}
			if polled := e.server.nextCalls() > before; polled != tc.polled {
				t.Errorf("server asked: %v, want %v", polled, tc.polled)
			}
		})
	}
}

// agentWith starts an agent with options adjusted by f.
func (e *testEnv) agentWith(f func(*Options)) (*Agent, context.Context) {
	e.opts = f
	return e.agent()
}
