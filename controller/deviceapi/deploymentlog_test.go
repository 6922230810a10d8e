package deviceapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"

	"github.com/gitfleet/gitfleet/controller/store"
)

// A deployment log upload is stored for the management API, bounded to the
// last store.MaxLogLines lines; uploads over the device's rate are not.
func TestDeploymentLogStored(t *testing.T) {
	e, d1, d2 := deploymentEnv(t, 10)
	if code, b, _ := e.do(http.MethodPost, nextV2, d1.token, v2Body("hello-1.0", "qemux86-64"), nil); code != http.StatusOK {
		t.Fatalf("next: %d %s", code, b)
	}
	path := logPath(DeploymentID(gen1))
	upload := func(tok string, n int, marker string) int {
		var msgs []LogMessage
		for i := range n {
			msgs = append(msgs, LogMessage{Timestamp: "2025-06-01T12:00:00Z", Level: "error", Message: fmt.Sprintf("%s %d", marker, i)})
		}
		body, _ := json.Marshal(map[string]any{"messages": msgs})
		code, _, _ := e.do(http.MethodPut, path, tok, body, nil)
		return code
	}
	if code := upload(d1.token, store.MaxLogLines+50, "first"); code != http.StatusNoContent {
		t.Fatalf("upload: %d", code)
	}
	l, err := e.store.DeploymentLog(t.Context(), gen1, "dev-1")
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Lines) != store.MaxLogLines || l.Dropped != 50 || l.Lines[0].Message != "first 50" ||
		l.Lines[len(l.Lines)-1] != (store.LogLine{Time: "2025-06-01T12:00:00Z", Level: "error", Message: fmt.Sprintf("first %d", store.MaxLogLines+49)}) {
		t.Fatalf("stored %d lines, %d dropped, first %+v", len(l.Lines), l.Dropped, l.Lines[0])
	}
	// dev-2 was never admitted: no deployment to attach a log to.
	if code := upload(d2.token, 1, "stray"); code != http.StatusNotFound {
		t.Errorf("upload without a deployment: %d, want 404", code)
	}
	if _, err := e.store.DeploymentLog(t.Context(), gen1, "dev-2"); err == nil {
		t.Error("dev-2 has a stored log")
	}
	// Over the rate: answered 204, not stored.
	for i := range DefaultLogBurst + 5 {
		if code := upload(d1.token, 1, fmt.Sprintf("again-%d", i)); code != http.StatusNoContent {
			t.Fatalf("upload %d: %d", i, code)
		}
	}
	if l, err = e.store.DeploymentLog(t.Context(), gen1, "dev-1"); err != nil || len(l.Lines) != 1 || l.Lines[0].Message == fmt.Sprintf("again-%d 0", DefaultLogBurst+4) {
		t.Fatalf("after the flood: %v %+v, want the last upload within the rate", err, l)
	}
}
