package gitsource_test

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"github.com/gitfleet/gitfleet/controller/gitsource"
	"github.com/gitfleet/gitfleet/controller/gitsource/gittest"
)

func fingerprint(e *openpgp.Entity) string { return fmt.Sprintf("%X", e.PrimaryKey.Fingerprint) }

// wantRefused checks that fetching refuses head because of commit bad, with
// a reason containing reason.
func wantRefused(t *testing.T, src *gitsource.Source, head, bad, reason string) *gitsource.RefusedError {
	t.Helper()
	_, err := fetchErr(t, src)
	var refused *gitsource.RefusedError
	if !errors.As(err, &refused) || !errors.Is(err, gitsource.ErrRefused) || errors.Is(err, gitsource.ErrUnreachable) {
		t.Fatalf("fetch: %v, want a *RefusedError", err)
	}
	t.Logf("refused: %v", err)
	if refused.Head != head || refused.Commit != bad || !strings.Contains(refused.Reason, reason) {
		t.Fatalf("refused head %.12s for commit %.12s (%s), want head %.12s for commit %.12s (%s)",
			refused.Head, refused.Commit, refused.Reason, head, bad, reason)
	}
	if !strings.Contains(err.Error(), bad[:12]) {
		t.Errorf("message %q does not name commit %.12s", err, bad)
	}
	return refused
}

func TestSignedCommits(t *testing.T) {
	alice, trusted := gittest.NewSigningKey(t, "Alice")
	mallory, _ := gittest.NewSigningKey(t, "Mallory")
	repo := gittest.NewRepo(t)
	dir := filepath.Join(t.TempDir(), "clone")
	opts := gitsource.Options{URL: repo.URL(), Dir: dir, TrustedKeys: trusted}
	src := newSource(t, opts)

	good := repo.SignedCommit(alice, map[string]string{"a": "1"}, "signed by alice")
	rev := fetch(t, src)
	if rev.SHA != good || rev.Signer != fingerprint(alice) {
		t.Fatalf("signed commit: %s signer %q, want %s signer %s", rev.SHA, rev.Signer, good, fingerprint(alice))
	}

	// Unsigned: refused, and the good revision stays.
	unsigned := repo.Commit(map[string]string{"a": "2"}, "not signed")
	refused := wantRefused(t, src, unsigned, unsigned, "not signed")
	st := src.Status()
	if st.SHA != good || st.Refused == nil || st.Refused.Head != unsigned || !errors.Is(st.LastError, gitsource.ErrRefused) || st.Failures != 0 {
		t.Fatalf("Status after a refusal = %+v", st)
	}
	// Asking again is cheap and gives the same answer.
	if again := wantRefused(t, src, unsigned, unsigned, "not signed"); again != refused {
		t.Errorf("second refusal is a new error; want the recorded one")
	}

	// A good signature on top does not launder the unsigned commit.
	onTop := repo.SignedCommit(alice, map[string]string{"a": "3"}, "signed, on top of an unsigned one")
	wantRefused(t, src, onTop, unsigned, "not signed")

	// Signed by a key that is not trusted.
	repo.Reset(good)
	bad := repo.SignedCommit(mallory, map[string]string{"a": "4"}, "signed by mallory")
	wantRefused(t, src, bad, bad, "signed by key "+fingerprint(mallory)+", which is not trusted")

	// Rewriting history without the bad commits unblocks the branch.
	repo.Reset(good)
	fixed := repo.SignedCommit(alice, map[string]string{"a": "5"}, "signed again")
	if rev := fetch(t, src); rev.SHA != fixed || rev.Signer != fingerprint(alice) {
		t.Fatalf("after the rewrite: %s signer %q, want %s", rev.SHA, rev.Signer, fixed)
	}
	if st := src.Status(); st.Refused != nil || st.LastError != nil {
		t.Errorf("Status after acceptance = %+v", st)
	}

	// A merged side branch: its commits are new too, and must be signed.
	repo.Branch("feature", fixed)
	sideGood := repo.SignedCommit(alice, map[string]string{"b": "1"}, "feature, signed")
	sideBad := repo.Commit(map[string]string{"b": "2"}, "feature, unsigned")
	repo.Checkout("main")
	mainline := repo.SignedCommit(alice, map[string]string{"a": "6"}, "main moves on")
	merge := repo.Merge("feature", "merge feature", alice)
	_ = sideGood
	wantRefused(t, src, merge, sideBad, "not signed")

	// Moving back to an accepted commit needs no new signature.
	repo.Reset(fixed)
	if rev := fetch(t, src); rev.SHA != fixed {
		t.Fatalf("back to an accepted commit: %s, want %s", rev.SHA, fixed)
	}
	// The mainline commit alone is fine.
	repo.Reset(mainline)
	if rev := fetch(t, src); rev.SHA != mainline {
		t.Fatalf("fast-forward: %s, want %s", rev.SHA, mainline)
	}

	// A restart with the same Dir remembers what was accepted: an unsigned
	// commit under a signed head is still caught.
	src.Close()
	unsigned2 := repo.Commit(map[string]string{"a": "7"}, "unsigned, while we were down")
	head := repo.SignedCommit(alice, map[string]string{"a": "8"}, "signed on top")
	restarted := newSource(t, opts)
	wantRefused(t, restarted, head, unsigned2, "not signed")

	// A fresh clone knows nothing: trust on first use checks only the head…
	fresh := newSource(t, gitsource.Options{URL: repo.URL(), TrustedKeys: trusted})
	if rev := fetch(t, fresh); rev.SHA != head {
		t.Fatalf("first use with a signed head: %s, want %s", rev.SHA, head)
	}
	// …unless SignedSince says where signing started.
	anchored := newSource(t, gitsource.Options{URL: repo.URL(), TrustedKeys: trusted, SignedSince: good})
	wantRefused(t, anchored, head, unsigned2, "not signed")
	// SignedSince is also how a reviewed unsigned commit is let through.
	reviewed := newSource(t, gitsource.Options{URL: repo.URL(), TrustedKeys: trusted, SignedSince: unsigned2})
	if rev := fetch(t, reviewed); rev.SHA != head {
		t.Fatalf("SignedSince the unsigned commit: %s, want %s", rev.SHA, head)
	}
	missing := newSource(t, gitsource.Options{URL: repo.URL(), TrustedKeys: trusted, SignedSince: strings.Repeat("ab", 20)})
	wantRefused(t, missing, head, head, "not in the fetched history")

	// An unsigned head is refused on first use too.
	repo.Reset(unsigned2)
	tofu := newSource(t, gitsource.Options{URL: repo.URL(), TrustedKeys: trusted})
	wantRefused(t, tofu, unsigned2, unsigned2, "not signed")
}

func TestExpiredKey(t *testing.T) {
	// A key valid for one day, judged by a clock a year ahead.
	e, err := openpgp.NewEntity("Bob", "", "bob@gitfleet.invalid", &packet.Config{Algorithm: packet.PubKeyAlgoEdDSA, KeyLifetimeSecs: 86400})
	if err != nil {
		t.Fatal(err)
	}
	repo := gittest.NewRepo(t)
	sha := repo.SignedCommit(e, map[string]string{"a": "1"}, "signed")
	clk := newFakeClock()
	clk.now = clk.now.Add(365 * 24 * time.Hour)
	src := newSource(t, gitsource.Options{URL: repo.URL(), TrustedKeys: gittest.ArmoredPublic(t, e), Clock: clk})
	wantRefused(t, src, sha, sha, "which has expired")
}

func TestRunStallsOnRefusal(t *testing.T) {
	alice, trusted := gittest.NewSigningKey(t, "Alice")
	repo := gittest.NewRepo(t)
	good := repo.SignedCommit(alice, map[string]string{"a": "1"}, "good")
	clk := newFakeClock()
	src := newSource(t, gitsource.Options{URL: repo.URL(), TrustedKeys: trusted, Clock: clk, PollInterval: time.Minute})
	revs := make(chan gitsource.Revision, 10)
	done := runSource(t, src, nil, revs)

	if rev := nextRevision(t, revs); rev.SHA != good {
		t.Fatalf("first revision %s, want %s", rev.SHA, good)
	}
	if tm := clk.next(t); tm.d != time.Minute {
		t.Fatalf("after a good fetch Run waits %v, want the poll interval", tm.d)
	} else {
		bad := repo.Commit(map[string]string{"a": "2"}, "unsigned")
		tm.fire()
		// Refused: stalled, so the next wait is a poll, not a backoff.
		if tm := clk.next(t); tm.d != time.Minute {
			t.Fatalf("after a refusal Run waits %v, want the poll interval", tm.d)
		}
		st := src.Status()
		if st.SHA != good || st.Refused == nil || st.Refused.Commit != bad || st.Backoff != 0 {
			t.Fatalf("Status = %+v", st)
		}
	}
	if len(revs) != 0 {
		t.Fatalf("refused commit delivered: %v", <-revs)
	}
	done()
}
