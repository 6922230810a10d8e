package storetest

import (
	"fmt"
	"testing"

	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// ignoreSeq leaves out CommitRecord.Seq, which the store sets.
var ignoreSeq = cmpopts.IgnoreFields(store.CommitRecord{}, "Seq")

// moveLive calls MoveLive and checks ok and the sequence number live has
// afterwards.
func moveLive(t *testing.T, s store.Store, next store.CommitRecord, prevSeq int64, wantOK bool, wantSHA string, wantSeq int64) {
	t.Helper()
	live, ok, err := s.MoveLive(t.Context(), next, prevSeq)
	must(t, "MoveLive", err)
	if ok != wantOK || live.SHA != wantSHA || live.Seq != wantSeq {
		t.Fatalf("MoveLive(%s, prev seq %d) = %s seq %d, %v; want %s seq %d, %v",
			next.SHA, prevSeq, live.SHA, live.Seq, ok, wantSHA, wantSeq, wantOK)
	}
	got, err := s.Live(t.Context())
	must(t, "Live", err)
	if got.SHA != wantSHA || got.Seq != wantSeq {
		t.Fatalf("Live after MoveLive(%s, %d) = %s seq %d; want %s seq %d", next.SHA, prevSeq, got.SHA, got.Seq, wantSHA, wantSeq)
	}
}

func testMoveLive(t *testing.T, s store.Store) {
	ctx := t.Context()
	a, b := commit("aaaa", 1), commit("bbbb", 2)
	if _, _, err := s.MoveLive(ctx, store.CommitRecord{}, 0); err == nil {
		t.Error("MoveLive(no SHA) succeeded; want ErrInvalid")
	}
	if live, ok, err := s.MoveLive(ctx, a, 3); err != nil || ok || live.SHA != "" {
		t.Fatalf("MoveLive(prev seq 3) on an empty store = %+v, %v, %v; want nothing live, false", live, ok, err)
	}
	moveLive(t, s, a, 0, true, "aaaa", 1)
	moveLive(t, s, b, 0, false, "aaaa", 1) // stale
	moveLive(t, s, b, 1, true, "bbbb", 2)
	// The same commit again at the current seq: nothing written.
	moveLive(t, s, b, 2, true, "bbbb", 2)
	// Back to a: a new seq, a new record.
	a2 := a
	a2.Loaded = at(50)
	moveLive(t, s, a2, 2, true, "aaaa", 3)
	liveIs(t, s, a2)
	// A replica that last saw b at seq 2 cannot bring b back over a.
	moveLive(t, s, b, 2, false, "aaaa", 3)
	// Another replica that saw seq 2 and fetched a too: ok, record kept.
	moveLive(t, s, a, 2, true, "aaaa", 3)
	liveIs(t, s, a2)

	// SetLive numbers its moves too.
	mustSet(t, s, b, "aaaa")
	if got, _ := s.Live(ctx); got.Seq != 4 {
		t.Fatalf("Seq after SetLive = %d; want 4", got.Seq)
	}
	moveLive(t, s, a, 4, true, "aaaa", 5)
}

func testMoveLiveRace(t *testing.T, s store.Store) {
	ctx := t.Context()
	moveLive(t, s, commit("base", 1), 0, true, "base", 1)
	next := make([]store.CommitRecord, racers)
	for i := range next {
		next[i] = commit(fmt.Sprintf("next%02d", i%4), 2) // four commits, four racers each
		next[i].Loaded = at(100 + i)
	}
	won := make([]bool, racers)
	race(t, func(i int) error {
		_, ok, err := s.MoveLive(ctx, next[i], 1)
		won[i] = ok
		return err
	})
	got, err := s.Live(ctx)
	must(t, "Live", err)
	if got.Seq != 2 {
		t.Fatalf("Seq after the race = %d; want 2 (exactly one move)", got.Seq)
	}
	for i, ok := range won {
		if ok != (next[i].SHA == got.SHA) {
			t.Errorf("racer %d (%s) ok = %v with %s live", i, next[i].SHA, ok, got.SHA)
		}
	}
}

func testEventsOccurrence(t *testing.T, s store.Store) {
	ctx := t.Context()
	e := event("c1", "commit.live", "c1")
	e.Occurrence = "live:1"
	id1, added, err := s.AppendEvent(ctx, e)
	must(t, "AppendEvent", err)
	if !added {
		t.Fatal("first occurrence not added")
	}
	id, added, err := s.AppendEvent(ctx, e)
	must(t, "AppendEvent", err)
	if added || id != id1 {
		t.Fatalf("same occurrence again = %s, %v; want %s, false", id, added, id1)
	}
	e.Occurrence = "live:3"
	if _, added, err = s.AppendEvent(ctx, e); err != nil || !added {
		t.Fatalf("second occurrence = %v, %v; want added", added, err)
	}
	evs, err := s.Events(ctx, "", 10)
	must(t, "Events", err)
	if len(evs) != 2 {
		t.Fatalf("%d events; want 2", len(evs))
	}
}
