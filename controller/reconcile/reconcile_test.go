package reconcile

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/gitfleet/gitfleet/controller/gitsource"
	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gitfleet/gitfleet/controller/store/embedded"
)

// linear is a History for commits c1 → c2 → c3 … named in order.
type linear []string

func (l linear) IsAncestor(a, b string) (bool, bool, error) {
	ia, ib := index(l, a), index(l, b)
	if ia < 0 {
		return false, false, nil
	}
	if ib < 0 {
		return false, true, nil
	}
	return ia <= ib, true, nil
}

func index(l []string, s string) int {
	for i, v := range l {
		if v == s {
			return i
		}
	}
	return -1
}

const artifactYAML = `apiVersion: gitfleet.io/v1
kind: Artifact
metadata: {name: app-1}
spec:
  source: artifacts/app-1.mender
  sha256: %s
  deviceTypes: [board]
---
apiVersion: gitfleet.io/v1
kind: DeviceGroup
metadata: {name: all}
spec:
  members: [dev-1, dev-2]
---
apiVersion: gitfleet.io/v1
kind: Device
metadata: {name: boards}
spec:
  devices:
    - {name: dev-1, identity: {mac: "02:00:00:00:00:01"}, deviceType: board, trustOnFirstUse: true}
    - {name: dev-2, identity: {mac: "02:00:00:00:00:02"}, deviceType: board, trustOnFirstUse: true}
`

const rolloutYAML = `apiVersion: gitfleet.io/v1
kind: Rollout
metadata: {name: app}
spec:
  artifact: app-1
  target: {groups: [all]}
  phases:
    - {name: canary, count: 1, abort: {maxFailures: 0}}
    - {name: all, percent: 100, abort: {maxFailures: %d}}
`

func rev(sha string, files map[string]string) gitsource.Revision {
	fsys := fstest.MapFS{}
	for name, data := range files {
		fsys[name] = &fstest.MapFile{Data: []byte(data)}
	}
	return gitsource.Revision{SHA: sha, Author: gitsource.Person{Name: "Ada", Email: "ada@example.com"}, Message: "change " + sha, Time: time.Unix(1700000000, 0), FS: fsys}
}

func fleetFiles(digest string, maxFailures int) map[string]string {
	return map[string]string{
		"artifact.yaml": sprintf(artifactYAML, digest),
		"rollout.yaml":  sprintf(rolloutYAML, maxFailures),
	}
}

func openStore(t *testing.T) store.Store {
	t.Helper()
	s, err := embedded.Open(filepath.Join(t.TempDir(), "state.db"), embedded.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

var digestA = strings.Repeat("a", 64)
var digestB = strings.Repeat("b", 64)

func TestApplySequence(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	hist := linear{"c1", "c2", "c3", "c4"}
	r := New(Options{Store: st, History: hist, Branch: "main"})

	steps := []struct {
		sha     string
		files   map[string]string
		outcome Outcome
		live    string
		events  []string // kinds appended by this step
	}{
		{"c1", fleetFiles(digestA, 1), Applied, "c1", []string{"commit.live", "rollout.started"}},
		{"c1", fleetFiles(digestA, 1), Unchanged, "c1", nil},
		{"c2", map[string]string{"rollout.yaml": "apiVersion: gitfleet.io/v1\nkind: Rollout\nmetadata: {name: app}\nspec: {artifact: nope}\n"}, Refused, "c1", []string{"commit.refused"}},
		{"c3", fleetFiles(digestA, 3), Applied, "c3", []string{"commit.live", "rollout.settings"}},
		{"c4", fleetFiles(digestB, 3), Applied, "c4", []string{"commit.live", "rollout.artifact"}},
		{"c2", fleetFiles(digestA, 1), Behind, "c4", nil},
	}
	seen := 0
	for _, s := range steps {
		res, err := r.Apply(ctx, rev(s.sha, s.files))
		if err != nil {
			t.Fatalf("%s: %v", s.sha, err)
		}
		if res.Outcome != s.outcome {
			t.Fatalf("%s: outcome %s, want %s (%v)", s.sha, res.Outcome, s.outcome, res.Errors)
		}
		if got := r.Live().Commit.SHA; got != s.live {
			t.Fatalf("%s: serving %s, want %s", s.sha, got, s.live)
		}
		live, err := st.Live(ctx)
		if err != nil || live.SHA != s.live {
			t.Fatalf("%s: store live %v %v", s.sha, live.SHA, err)
		}
		evs, err := st.Events(ctx, "", 100)
		if err != nil {
			t.Fatal(err)
		}
		var kinds []string
		for _, e := range evs[seen:] {
			kinds = append(kinds, e.Kind)
		}
		seen = len(evs)
		if strings.Join(kinds, ",") != strings.Join(s.events, ",") {
			t.Fatalf("%s: events %v, want %v", s.sha, kinds, s.events)
		}
	}
	ref, err := st.LastRefused(ctx)
	if err != nil || ref.SHA != "c2" || len(ref.Errors) == 0 || !strings.Contains(strings.Join(ref.Errors, "\n"), "rollout.yaml") {
		t.Fatalf("last refused: %+v %v", ref, err)
	}
	ros, _ := st.Rollouts(ctx)
	if len(ros) != 1 || ros[0].Generation != 2 || !strings.Contains(ros[0].Artifact, digestB) {
		t.Fatalf("rollouts: %+v", ros)
	}
}

func TestRefusedFirstCommitServesNothing(t *testing.T) {
	r := New(Options{Store: openStore(t), History: linear{"c1"}})
	res, err := r.Apply(context.Background(), rev("c1", map[string]string{"bad.yaml": "apiVersion: gitfleet.io/v1\nkind: Rollout\n"}))
	if err != nil || res.Outcome != Refused {
		t.Fatalf("%+v %v", res, err)
	}
	if r.Live() != nil {
		t.Fatal("a refused commit is being served")
	}
}

// TestReplicasAgree runs two reconcilers on one store, as two controller
// replicas would, applying the same commits concurrently and out of order.
func TestReplicasAgree(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	hist := linear{"c1", "c2"}
	a := New(Options{Store: st, History: hist})
	b := New(Options{Store: st, History: hist})
	var wg sync.WaitGroup
	for _, r := range []*Reconciler{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, sha := range []string{"c1", "c2"} {
				if _, err := r.Apply(ctx, rev(sha, fleetFiles(digestA, len(sha)))); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	if a.Live() == nil || b.Live() == nil {
		t.Fatal("a replica serves nothing")
	}
	if a.Live().Commit.SHA != "c2" || b.Live().Commit.SHA != "c2" {
		t.Fatalf("replicas serve %s and %s", a.Live().Commit.SHA, b.Live().Commit.SHA)
	}
	// A replica that fetched late is told it is behind, not allowed back.
	late := New(Options{Store: st, History: hist})
	if res, _ := late.Apply(ctx, rev("c1", fleetFiles(digestA, 2))); res.Outcome != Behind {
		t.Fatalf("late replica: %s", res.Outcome)
	}
	evs, _ := st.Events(ctx, "", 100)
	count := map[string]int{}
	for _, e := range evs {
		count[e.Kind+" "+e.Commit]++
	}
	for k, n := range count {
		if n != 1 {
			t.Errorf("event %q appended %d times", k, n)
		}
	}
}

func TestForcePushAccepted(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	r := New(Options{Store: st, History: linear{"c1"}})
	if res, err := r.Apply(ctx, rev("c1", fleetFiles(digestA, 1))); err != nil || res.Outcome != Applied {
		t.Fatal(res, err)
	}
	// x2 was force-pushed over c1: the local clone knows both, neither
	// descends from the other. A revision that was not fetched (no
	// Fetched time) cannot say it is newer than live: behind.
	r.opts.History = forked{}
	if res, err := r.Apply(ctx, rev("x2", fleetFiles(digestA, 2))); err != nil || res.Outcome != Behind {
		t.Fatalf("force push, not fetched: %+v %v", res, err)
	}
	// Fetched after this replica last read the live pointer: the branch
	// head, which goes live, recorded as rewound.
	x2 := rev("x2", fleetFiles(digestA, 2))
	x2.Fetched = time.Now()
	if res, err := r.Apply(ctx, x2); err != nil || res.Outcome != Applied {
		t.Fatalf("force push: %+v %v", res, err)
	}
	evs, err := st.RecentEvents(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	if evs[0].Kind != "commit.rewound" || evs[1].Kind != "commit.live" || !strings.Contains(evs[0].Message, "force-pushed from c1 to x2") {
		t.Fatalf("events: %+v", evs)
	}
}

type forked struct{}

func (forked) IsAncestor(a, b string) (bool, bool, error) { return a == b, true, nil }

type failing struct{ store.Store }

func (failing) Live(context.Context) (store.CommitRecord, error) {
	return store.CommitRecord{}, errors.New("connection refused")
}

func TestStoreDownIsTransient(t *testing.T) {
	r := New(Options{Store: failing{openStore(t)}, History: linear{"c1"}})
	_, err := r.Apply(context.Background(), rev("c1", fleetFiles(digestA, 1)))
	if !errors.Is(err, ErrTransient) || r.Live() != nil {
		t.Fatalf("%v, serving %v", err, r.Live())
	}
}

func sprintf(format string, a ...any) string { return fmt.Sprintf(format, a...) }
