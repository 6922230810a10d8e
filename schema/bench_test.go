package schema

import (
	"fmt"
	"testing"
	"testing/fstest"
)

// generatedFleet returns a fleet of n manifests: per 10, one group, one
// rollout, one config and seven devices, 100 manifests per file.
func generatedFleet(n int) fstest.MapFS {
	fsys := fstest.MapFS{}
	var buf []byte
	flush := func(i int) {
		if len(buf) > 0 {
			fsys[fmt.Sprintf("fleet/%05d.yaml", i)] = &fstest.MapFile{Data: buf}
			buf = nil
		}
	}
	add := func(format string, args ...any) {
		buf = append(buf, "---\napiVersion: gitfleet.io/v1\n"...)
		buf = fmt.Appendf(buf, format, args...)
	}
	add("kind: Artifact\nmetadata: {name: app}\nspec: {source: a/app.mender, deviceTypes: [pi]}\n")
	for i := 0; i < n/10; i++ {
		add("kind: DeviceGroup\nmetadata: {name: g%d}\nspec: {members: [d%d-0, d%d-1]}\n", i, i, i)
		add("kind: Rollout\nmetadata: {name: r%d}\nspec:\n  artifact: app\n  target: {groups: [g%d]}\n  phases:\n    - {name: canary, count: 1, hold: 1h, abort: {maxFailures: 0}}\n    - {name: all, percent: 100, abort: {maxFailurePercent: 5, minSample: 10}}\n", i, i)
		add("kind: DeviceConfig\nmetadata: {name: c%d}\nspec: {target: {groups: [g%d]}, values: {k: v%d}}\n", i, i, i)
		for j := 0; j < 7; j++ {
			add("kind: Device\nmetadata: {name: d%d-%d}\nspec: {identity: {mac: \"%d-%d\"}, deviceType: pi}\n", i, j, i, j)
		}
		if i%10 == 9 {
			flush(i)
		}
	}
	flush(n)
	return fsys
}

// BenchmarkLoad10k validates a generated fleet of 10,000 manifests.
func BenchmarkLoad10k(b *testing.B) {
	fsys := generatedFleet(10_000)
	b.ResetTimer()
	for b.Loop() {
		f, err := Load(fsys)
		if err != nil {
			b.Fatal(err)
		}
		if f.Len() < 10_000 {
			b.Fatalf("loaded %d manifests", f.Len())
		}
	}
}
