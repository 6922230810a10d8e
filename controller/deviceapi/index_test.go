package deviceapi

import (
	"context"
	"fmt"
	"net/http"
	"runtime"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/controller/store"
)

// poll polls as d and returns the status code and what the plan was told
// of the device's deployment.
func (e *env) poll(d *testDevice) (int, *store.Deployment) {
	e.t.Helper()
	code, b, _ := e.do(http.MethodPost, nextV2, d.token, v2Body("hello-1.0", "qemux86-64"), nil)
	if code != http.StatusOK && code != http.StatusNoContent {
		e.t.Fatalf("poll: %d %s", code, b)
	}
	e.plan.mu.Lock()
	defer e.plan.mu.Unlock()
	return code, e.plan.seen[len(e.plan.seen)-1].Deployment
}

// refresh makes the next poll read the generation's progress again (as
// it does after progressTTL).
func (e *env) refresh() { e.api.prog.forget(gen1) }

// Once the index has caught up with the change list, polls decide from it
// without reading the device's deployment, and see exactly what the store
// holds: admissions and final states made by other replicas included.
func TestIndexAnswersPolls(t *testing.T) {
	e, d1, d2 := deploymentEnv(t, 10)
	reads := func() int64 { return e.seen.deploymentReads.Load() }

	// d1 is admitted by this replica: the index learns it at once.
	if code, dep := e.poll(d1); code != http.StatusOK || dep != nil {
		t.Fatalf("first poll: %d, deployment %+v; want 200 and none", code, dep)
	}
	if code, dep := e.poll(d1); code != http.StatusOK || dep == nil || dep.State != store.StateAdmitted {
		t.Fatalf("second poll: %d, deployment %+v; want 200, resumed", code, dep)
	}

	// Another replica admits d2 and then records its success.
	if _, ok, err := e.store.Admit(ctx(), gen1, 0, 10, "dev-2"); !ok || err != nil {
		t.Fatal(ok, err)
	}
	e.refresh()
	before := reads()
	if code, dep := e.poll(d2); code != http.StatusOK || dep == nil || dep.State != store.StateAdmitted {
		t.Fatalf("d2 admitted elsewhere: %d, deployment %+v; want 200, resumed", code, dep)
	}
	if reads() != before+1 {
		t.Fatalf("the poll that found the index behind read %d deployments, want 1", reads()-before)
	}
	if _, _, err := e.store.Report(ctx(), gen1, "dev-2", store.StateSuccess, 0); err != nil {
		t.Fatal(err)
	}
	e.refresh()
	e.poll(d1) // catches the index up (and reads, being behind)
	before = reads()
	for range 5 {
		if code, dep := e.poll(d2); code != http.StatusNoContent || dep == nil || dep.State != store.StateSuccess {
			t.Fatalf("d2 finished elsewhere: %d, deployment %+v; want 204, success", code, dep)
		}
		if code, dep := e.poll(d1); code != http.StatusOK || dep == nil || dep.State != store.StateAdmitted {
			t.Fatalf("d1: %d, deployment %+v; want 200, resumed", code, dep)
		}
	}
	if n := reads() - before; n != 0 {
		t.Fatalf("polls with a current index read %d deployments from the store, want 0", n)
	}
	p, _ := e.store.Progress(ctx(), gen1)
	if p.Phases[0].Admitted != 2 || p.Phases[0].Succeeded != 1 {
		t.Fatalf("progress %+v", p)
	}
}

// With a progress older than another replica's work, the index does not
// know that a device was admitted and finished: the plan says Admit, and
// the store's Admit hands back the finished deployment, so the device is
// not sent the update again.
func TestIndexStaleFinishedDevice(t *testing.T) {
	e, d1, d2 := deploymentEnv(t, 10)
	e.poll(d1) // progress cached (nothing for d2)
	if _, ok, err := e.store.Admit(ctx(), gen1, 0, 10, "dev-2"); !ok || err != nil {
		t.Fatal(ok, err)
	}
	if _, _, err := e.store.Report(ctx(), gen1, "dev-2", store.StateFailure, 0); err != nil {
		t.Fatal(err)
	}
	if code, dep := e.poll(d2); code != http.StatusNoContent || dep != nil {
		t.Fatalf("d2 finished elsewhere, progress stale: %d, deployment %+v; want 204 (decided without it)", code, dep)
	}
	p, _ := e.store.Progress(ctx(), gen1)
	if p.Phases[0].Admitted != 2 || p.Phases[0].Failed != 1 {
		t.Fatalf("progress %+v: admitted twice?", p)
	}
}

// A generation whose change list holds less than its progress counts
// (recorded before change lists existed) is never indexed: every poll
// reads the store and the answers stay right.
func TestIndexOffWithoutChangeList(t *testing.T) {
	e, d1, d2 := deploymentEnv(t, 10)
	e.seen.noChanges.Store(true)
	e.poll(d1)
	if _, ok, err := e.store.Admit(ctx(), gen1, 0, 10, "dev-2"); !ok || err != nil {
		t.Fatal(ok, err)
	}
	if _, _, err := e.store.Report(ctx(), gen1, "dev-2", store.StateSuccess, 0); err != nil {
		t.Fatal(err)
	}
	e.refresh()
	before := e.seen.deploymentReads.Load()
	for range 3 {
		if code, dep := e.poll(d2); code != http.StatusNoContent || dep == nil || dep.State != store.StateSuccess {
			t.Fatalf("d2: %d, deployment %+v; want 204, success", code, dep)
		}
		if code, dep := e.poll(d1); code != http.StatusOK || dep == nil {
			t.Fatalf("d1: %d, deployment %+v; want 200, resumed", code, dep)
		}
	}
	if n := e.seen.deploymentReads.Load() - before; n != 6 {
		t.Fatalf("%d deployment reads for 6 polls, want 6 (not indexed)", n)
	}
	if gi := e.api.index.gen(gen1); !gi.off {
		t.Fatal("generation indexed although its change list is short")
	}
}

// Facts may arrive in any order: a final state is never taken back by an
// admission applied later.
func TestIndexMergeOrder(t *testing.T) {
	var x depIndex
	gi := x.gen(gen1)
	gi.note("a", store.Deployment{Phase: 1, State: store.StateSuccess})
	gi.note("a", store.Deployment{Phase: 1, State: store.StateAdmitted})
	gi.note("b", store.Deployment{Phase: 0, State: "downloading"})
	gi.note("b", store.Deployment{Phase: 0, State: store.StateFailure})
	p := store.Progress{}
	for dev, want := range map[string]string{"a": store.StateSuccess, "b": store.StateFailure} {
		d, ok := gi.lookup(dev, &p)
		if !ok || d == nil || d.State != want {
			t.Errorf("%s: %+v, %v; want %s", dev, d, ok, want)
		}
	}
	if d, ok := gi.lookup("c", &p); !ok || d != nil {
		t.Errorf("unknown device: %+v, %v; want none", d, ok)
	}
	p.Phases = []store.PhaseCounts{{Admitted: 3}}
	if _, ok := gi.lookup("a", &p); ok {
		t.Error("index behind the progress answered")
	}
}

// changeFeed serves a generated change list: n admissions, then a success
// for each.
type changeFeed struct {
	store.Deployments
	n int64
}

func (f changeFeed) Changes(_ context.Context, g store.GenerationRef, from int64, max int) ([]store.Change, error) {
	var out []store.Change
	for i := from; i < 2*f.n && len(out) < max; i++ {
		c := store.Change{Device: fmt.Sprintf("d%07d", i%f.n), Phase: 1, State: store.StateAdmitted}
		if i >= f.n {
			c.State = store.StateSuccess
		}
		out = append(out, c)
	}
	return out, nil
}

// BenchmarkIndexCatchUp applies the change list of a generation with
// 1,000,000 finished deployments (2,000,000 changes) to an empty index,
// and reports the index's heap per device.
//
//	go test ./controller/deviceapi -run '^$' -bench IndexCatchUp -benchtime 3x
func BenchmarkIndexCatchUp(b *testing.B) {
	const n = 1_000_000
	feed := changeFeed{n: n}
	p := store.Progress{Phases: []store.PhaseCounts{{}, {Admitted: n, Succeeded: n}}}
	var heap float64
	for b.Loop() {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		var x depIndex
		gi := x.gen(gen1)
		for {
			if _, ok := gi.lookup("d0000001", &p); ok {
				break
			}
			if err := gi.catchUp(context.Background(), feed, gen1, p.ChangeCount()); err != nil {
				b.Fatal(err)
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		heap = float64(after.HeapAlloc-before.HeapAlloc) / n
		if d, ok := gi.lookup("d0999999", &p); !ok || d == nil || d.State != store.StateSuccess {
			b.Fatalf("lookup after catch-up: %+v, %v", d, ok)
		}
		runtime.KeepAlive(gi)
	}
	b.ReportMetric(heap, "heapB/device")
	b.ReportMetric(float64(2*n)*float64(b.N)/b.Elapsed().Seconds(), "changes/s")
}

// A generation nobody polled for indexIdle is dropped when another one
// is indexed (its rollout moved on), and the number indexed stays bounded.
func TestIndexEviction(t *testing.T) {
	var x depIndex
	old := x.gen(gen1)
	old.note("a", store.Deployment{State: store.StateSuccess})
	old.mu.Lock()
	old.used = time.Now().Add(-indexIdle - time.Minute)
	old.mu.Unlock()
	x.gen(store.GenerationRef{Rollout: gen1.Rollout, Generation: 2})
	if n := x.indexed(); n != 1 || x.gen(gen1) == old {
		t.Fatalf("after a new generation: %d indexed, idle one kept: %v", n, x.gen(gen1) == old)
	}
	for i := range 2 * maxIndexedGens {
		x.gen(store.GenerationRef{Rollout: fmt.Sprint("r", i), Generation: 1})
	}
	if n := x.indexed(); n > maxIndexedGens {
		t.Fatalf("%d generations indexed, bound %d", n, maxIndexedGens)
	}
}
