package storetest

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/gitfleet/gitfleet/controller/store"
)

// testDeploymentLog: a device's log is stored for its deployment only,
// replaced by a later upload, bounded to the last MaxLogLines lines and
// MaxLogBytes, kept apart per generation and device.
func testDeploymentLog(t *testing.T, s store.Store) {
	ctx := t.Context()
	if _, err := s.SetDeploymentLog(ctx, genA, "d1", store.DeploymentLog{Lines: []store.LogLine{{Message: "x"}}}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("SetDeploymentLog before admission: %v, want ErrNotFound", err)
	}
	if _, err := s.DeploymentLog(ctx, genA, "d1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("DeploymentLog never stored: %v, want ErrNotFound", err)
	}
	admit(t, s, genA, 0, 3, "d1", store.Deployment{Phase: 0, State: store.StateAdmitted}, true)
	admit(t, s, genA, 0, 3, "d2", store.Deployment{Phase: 0, State: store.StateAdmitted}, true)

	first := []store.LogLine{{Time: "2025-06-01T12:00:00Z", Level: "info", Message: "downloading"}, {Time: "2025-06-01T12:01:00Z", Level: "error", Message: "écriture: no space left"}}
	stored, err := s.SetDeploymentLog(ctx, genA, "d1", store.DeploymentLog{Lines: first})
	must(t, "SetDeploymentLog", err)
	if stored.Stored.IsZero() || stored.Dropped != 0 {
		t.Fatalf("stored %+v", stored)
	}
	got, err := s.DeploymentLog(ctx, genA, "d1")
	must(t, "DeploymentLog", err)
	diff(t, "DeploymentLog(d1)", stored, got)
	if _, err := s.DeploymentLog(ctx, genA, "d2"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("d2 has no log: %v, want ErrNotFound", err)
	}
	if _, err := s.DeploymentLog(ctx, store.GenerationRef{Rollout: genA.Rollout, Generation: 2}, "d1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("another generation has no log: %v, want ErrNotFound", err)
	}

	// A second upload replaces the first; too many lines keep the last.
	var many []store.LogLine
	for i := range store.MaxLogLines + 50 {
		many = append(many, store.LogLine{Level: "info", Message: fmt.Sprintf("line %d", i)})
	}
	stored, err = s.SetDeploymentLog(ctx, genA, "d1", store.DeploymentLog{Lines: many, Dropped: 3})
	must(t, "SetDeploymentLog", err)
	got, err = s.DeploymentLog(ctx, genA, "d1")
	must(t, "DeploymentLog", err)
	if len(got.Lines) != store.MaxLogLines || got.Dropped != 53 || got.Lines[0].Message != "line 50" || got.Lines[len(got.Lines)-1].Message != fmt.Sprintf("line %d", store.MaxLogLines+49) {
		t.Fatalf("bounded by lines: %d lines, %d dropped, first %+v", len(got.Lines), got.Dropped, got.Lines[0])
	}

	// Long lines: each cut to MaxLogLineBytes, and only the last that fit
	// MaxLogBytes kept.
	long := make([]store.LogLine, 100)
	for i := range long {
		long[i] = store.LogLine{Message: fmt.Sprintf("%03d", i) + strings.Repeat("é", store.MaxLogLineBytes)}
	}
	_, err = s.SetDeploymentLog(ctx, genA, "d2", store.DeploymentLog{Lines: long})
	must(t, "SetDeploymentLog", err)
	got, err = s.DeploymentLog(ctx, genA, "d2")
	must(t, "DeploymentLog", err)
	enc, _ := store.EncodeDeploymentLog(got)
	if len(enc) > store.MaxLogBytes || len(got.Lines)+got.Dropped != 100 || len(got.Lines) < 50 || !strings.HasPrefix(got.Lines[len(got.Lines)-1].Message, "099") {
		t.Fatalf("bounded by bytes: %d bytes, %d lines, %d dropped", len(enc), len(got.Lines), got.Dropped)
	}
	for _, l := range got.Lines {
		if len(l.Message) > store.MaxLogLineBytes || !strings.HasSuffix(l.Message, "é") {
			t.Fatalf("line of %d bytes, cut inside a character: %q", len(l.Message), l.Message[len(l.Message)-4:])
		}
	}
	if _, err := s.SetDeploymentLog(ctx, genA, "", store.DeploymentLog{}); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("empty device: %v, want ErrInvalid", err)
	}
}
