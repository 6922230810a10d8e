package reconcile

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/controller/gitsource"
	"github.com/gitfleet/gitfleet/controller/gitsource/gittest"
	"github.com/gitfleet/gitfleet/controller/store/embedded"
)

// listFleet returns the files of a fleet of n devices in device-list
// files of perFile, an artifact and a rollout of the whole fleet whose
// canary phase has canary devices.
func listFleet(n, perFile, canary int) map[string]string {
	files := map[string]string{
		"artifact.yaml": sprintf(artifactAll, digestA),
		"rollout.yaml":  sprintf(rolloutAll, canary),
	}
	for f := 0; f*perFile < n; f++ {
		var b strings.Builder
		b.WriteString("gitfleet.io/v1 devices\n")
		for i := f * perFile; i < min((f+1)*perFile, n); i++ {
			fmt.Fprintf(&b, "d%07d %064x mac=02:00:00:%02x:%02x:%02x +deviceType=board\n", i, i, i>>16&0xff, i>>8&0xff, i&0xff)
		}
		files[fmt.Sprintf("devices/line-%03d.devices", f)] = b.String()
	}
	return files
}

const artifactAll = `apiVersion: gitfleet.io/v1
kind: Artifact
metadata: {name: app-1}
spec:
  source: artifacts/app-1.mender
  sha256: %s
  deviceTypes: [board]
`

const rolloutAll = `apiVersion: gitfleet.io/v1
kind: Rollout
metadata: {name: app}
spec:
  artifact: app-1
  target: {all: true}
  phases:
    - {name: canary, count: %d}
    - {name: all, percent: 100}
`

// allocated returns the bytes allocated by f.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// A commit that changes one rollout of a fleet declared in device lists
// costs in proportion to that change, not to the fleet: fetched from a
// real repository and applied, it allocates less than 1% of what loading
// the fleet did, and the new snapshot shares the devices of the previous.
func TestCommitCostFollowsChange(t *testing.T) {
	gittest.RequireGit(t)
	const devices = 100_000
	repo := gittest.NewRepo(t)
	repo.Commit(listFleet(devices, 25_000, 1), "the fleet")
	src := newSource(t, repo)
	st, err := embedded.Open(t.TempDir()+"/state.db", embedded.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	r := New(Options{Store: st, History: src, Branch: "main"})

	var res Result
	full := allocated(func() { res = fetchApply(t, src, r) })
	if res.Outcome != Applied {
		t.Fatalf("first commit: %s %v", res.Outcome, res.Errors)
	}
	first := r.Live()
	if n := len(first.Fleet.Devices); n != devices {
		t.Fatalf("%d devices live, want %d", n, devices)
	}

	// The smallest of three rollout commits: TotalAlloc counts every
	// goroutine of the process, and a background one (the runtime's, the
	// store's) can add to one measurement; a commit whose own cost grew
	// with the fleet exceeds the bound in all three.
	var change uint64
	for canary := 2; canary <= 4; canary++ {
		repo.Commit(map[string]string{"rollout.yaml": sprintf(rolloutAll, canary)}, "a bigger canary")
		n := allocated(func() { res = fetchApply(t, src, r) })
		if res.Outcome != Applied || len(res.Changes) != 1 {
			t.Fatalf("rollout commit: %s %v %v", res.Outcome, res.Errors, res.Changes)
		}
		second := r.Live()
		if second.Fleet.Rollouts[0].Spec.Phases[0].Count != canary {
			t.Fatalf("the live rollout's canary is %d, want %d", second.Fleet.Rollouts[0].Spec.Phases[0].Count, canary)
		}
		if &first.Fleet.Devices[0] != &second.Fleet.Devices[0] {
			t.Error("the snapshot copied the devices instead of sharing them")
		}
		if canary == 2 || n < change {
			change = n
		}
	}
	t.Logf("loading %d devices allocated %d MB; the rollout commit %d KB (%.3f%%)", devices, full>>20, change>>10, 100*float64(change)/float64(full))
	if change*100 > full {
		t.Errorf("the rollout commit allocated %d bytes, more than 1%% of the %d of loading the fleet", change, full)
	}
}

// BenchmarkCommit applies, to a fleet of 100,000 devices in device lists
// (GITFLEET_BENCH_DEVICES sets another size), commits that each change
// the rollout, from a real repository: the time from fetched to live.
//
//	GITFLEET_BENCH_DEVICES=1000000 go test ./controller/reconcile -run '^$' -bench Commit -benchtime 5x
func BenchmarkCommit(b *testing.B) {
	gittest.RequireGit(b)
	devices := 100_000
	if v := os.Getenv("GITFLEET_BENCH_DEVICES"); v != "" {
		if _, err := fmt.Sscan(v, &devices); err != nil {
			b.Fatalf("GITFLEET_BENCH_DEVICES=%q: %v", v, err)
		}
	}
	repo := gittest.NewRepo(b)
	repo.Commit(listFleet(devices, 100_000, 1), "the fleet")
	src, err := gitsource.New(gitsource.Options{URL: repo.URL(), Dir: filepath.Join(b.TempDir(), "clone"), FetchTimeout: 10 * time.Minute})
	if err != nil {
		b.Fatal(err)
	}
	st, err := embedded.Open(b.TempDir()+"/state.db", embedded.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	r := New(Options{Store: st, History: src, Branch: "main"})
	rev, err := src.Fetch(b.Context())
	if err != nil {
		b.Fatal(err)
	}
	var ms runtime.MemStats
	start := time.Now()
	full := allocated(func() {
		if res, err := r.Apply(b.Context(), rev); err != nil || res.Outcome != Applied {
			b.Fatal(err, res.Errors)
		}
	})
	took := time.Since(start)
	runtime.GC()
	runtime.ReadMemStats(&ms)
	b.Logf("first commit: %d devices live after %s, %d MB allocated, %d MB live heap after", devices, took.Round(time.Millisecond), full>>20, ms.HeapAlloc>>20)
	canary := 1
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		canary++
		repo.Commit(map[string]string{"rollout.yaml": sprintf(rolloutAll, canary)}, "canary")
		rev, err := src.Fetch(b.Context())
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if res, err := r.Apply(b.Context(), rev); err != nil || res.Outcome != Applied {
			b.Fatal(err, res.Errors)
		}
	}
}
