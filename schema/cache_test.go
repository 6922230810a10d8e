package schema

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"testing"
	"testing/fstest"

	"github.com/google/go-cmp/cmp"
)

// mapFS copies a directory into a MapFS the test can change.
func mapFS(t testing.TB, dir string) fstest.MapFS {
	t.Helper()
	out := fstest.MapFS{}
	err := fs.WalkDir(os.DirFS(dir), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := fs.ReadFile(os.DirFS(dir), p)
		out[p] = &fstest.MapFile{Data: data}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func fleetJSON(t testing.TB, f *Fleet) string {
	t.Helper()
	b, err := json.MarshalIndent(f, "", " ")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// Commit after commit, LoadCached returns what Load returns: the same
// manifests when nothing changed, the change when a file changed, and
// the same errors, at the same positions, when a commit is invalid, also
// across files that came from the cache.
func TestLoadCached(t *testing.T) {
	fsys := mapFS(t, "../fleet-repo-template")
	c := NewCache()
	same := func(what string) {
		t.Helper()
		want, werr := Load(fsys)
		got, gerr := LoadCached(fsys, c)
		if d := cmp.Diff(fmt.Sprint(werr), fmt.Sprint(gerr)); d != "" {
			t.Fatalf("%s: errors differ (-Load +LoadCached):\n%s", what, d)
		}
		if d := cmp.Diff(fleetJSON(t, want), fleetJSON(t, got)); d != "" {
			t.Fatalf("%s: fleets differ (-Load +LoadCached):\n%s", what, d)
		}
	}
	same("first load")
	if f, _ := Load(fsys); f.Len() < 5 || len(fleetJSON(t, f)) < 1000 {
		t.Fatalf("the template loads as %d manifests, %d bytes of JSON: not a test of anything", f.Len(), len(fleetJSON(t, f)))
	}
	files := c.Len()
	if files == 0 {
		t.Fatal("nothing cached after a valid load")
	}
	same("unchanged")

	// A changed rollout: only it is parsed again; the cache follows.
	var rollout string
	for p, f := range fsys {
		if bytes.Contains(f.Data, []byte("kind: Rollout")) {
			rollout = p
			break
		}
	}
	if rollout == "" {
		t.Fatal("the template has no Rollout")
	}
	orig := fsys[rollout].Data
	fsys[rollout] = &fstest.MapFile{Data: bytes.Replace(orig, []byte("kind: Rollout"), []byte("kind: Rollout\n# a comment"), 1)}
	same("rollout changed")
	if c.Len() != files {
		t.Fatalf("cache holds %d files, want %d (one repository's)", c.Len(), files)
	}

	// Errors: one in the changed file, one across files (a reference to
	// a device no cached file declares), then valid again.
	fsys[rollout] = &fstest.MapFile{Data: bytes.Replace(orig, []byte("spec:"), []byte("spec:\n  bogus: 1"), 1)}
	if _, err := LoadCached(fsys, c); err == nil {
		t.Fatal("a rollout with an unknown field loaded")
	}
	same("unknown field")
	fsys["rollouts/extra.yaml"] = &fstest.MapFile{Data: []byte("apiVersion: gitfleet.io/v1\nkind: Rollout\nmetadata: {name: extra}\nspec:\n  artifact: nope\n  target: {devices: [ghost]}\n  phases: [{name: all, percent: 100}]\n")}
	fsys[rollout] = &fstest.MapFile{Data: orig}
	if _, err := LoadCached(fsys, c); err == nil {
		t.Fatal("a rollout of an unknown artifact and device loaded")
	}
	same("cross-file errors")
	delete(fsys, "rollouts/extra.yaml")
	same("valid again")
}

// BenchmarkLoadCachedCommit loads a fleet of 100,000 devices (Device
// manifests of 10,000) after a commit that changed only a rollout: the
// work a controller does per commit at that size, with the cache.
//
//	go test ./schema -run '^$' -bench LoadCachedCommit -benchtime 5x
//
// GITFLEET_BENCH_DEVICES=1000000 sets another fleet size (a multiple of
// 10,000).
func BenchmarkLoadCachedCommit(b *testing.B) {
	devices := 100_000
	if v := os.Getenv("GITFLEET_BENCH_DEVICES"); v != "" {
		if _, err := fmt.Sscan(v, &devices); err != nil || devices < 10_000 || devices%10_000 != 0 {
			b.Fatalf("GITFLEET_BENCH_DEVICES=%q: want a multiple of 10000", v)
		}
	}
	fsys := fstest.MapFS{}
	for f := range devices / 10_000 {
		var buf bytes.Buffer
		fmt.Fprintf(&buf, "apiVersion: gitfleet.io/v1\nkind: Device\nmetadata: {name: sims-%04d}\nspec:\n  devices:\n", f)
		for i := f * 10000; i < (f+1)*10000; i++ {
			fmt.Fprintf(&buf, "    - {name: d%07d, identity: {mac: \"02:00:00:%02x:%02x:%02x\"}, trustOnFirstUse: true, deviceType: sim}\n", i, i>>16&0xff, i>>8&0xff, i&0xff)
		}
		fsys[fmt.Sprintf("devices/sims-%04d.yaml", f)] = &fstest.MapFile{Data: buf.Bytes()}
	}
	rollout := func(n int) *fstest.MapFile {
		return &fstest.MapFile{Data: fmt.Appendf(nil, "apiVersion: gitfleet.io/v1\nkind: Rollout\nmetadata: {name: fleet}\nspec:\n  artifact: app\n  target: {all: true}\n  phases: [{name: canary, count: %d}, {name: all, percent: 100}]\n", n)}
	}
	fsys["artifact.yaml"] = &fstest.MapFile{Data: []byte("apiVersion: gitfleet.io/v1\nkind: Artifact\nmetadata: {name: app}\nspec:\n  source: app.mender\n  deviceTypes: [sim]\n")}
	fsys["rollout.yaml"] = rollout(1)
	c := NewCache()
	if _, err := LoadCached(fsys, c); err != nil {
		b.Fatal(err)
	}
	n := 1
	b.ReportAllocs()
	for b.Loop() {
		n++
		fsys["rollout.yaml"] = rollout(n)
		f, err := LoadCached(fsys, c)
		if err != nil || len(f.Devices) != devices {
			b.Fatal(err, len(f.Devices))
		}
	}
}
