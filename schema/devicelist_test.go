package schema

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"runtime"
	"strings"
	"sync"
	"testing"
	"testing/fstest"

	"github.com/google/go-cmp/cmp"
)

// deviceListFS returns a tree declaring devices d0000000… in device-list
// files of perFile devices, every third by trust on first use, every
// fifth with a device type; plus an artifact and a rollout of the whole
// fleet.
func deviceListFS(devices, perFile int) fstest.MapFS {
	fsys := fstest.MapFS{}
	for f := 0; f*perFile < devices; f++ {
		var buf bytes.Buffer
		buf.WriteString(DeviceListHeader + "\n# name key identity\n")
		for i := f * perFile; i < min((f+1)*perFile, devices); i++ {
			if i%3 == 0 {
				fmt.Fprintf(&buf, "d%07d tofu mac=02:00:00:%02x:%02x:%02x", i, i>>16&0xff, i>>8&0xff, i&0xff)
			} else {
				fmt.Fprintf(&buf, "d%07d %064x mac=02:00:00:%02x:%02x:%02x serial=S%d", i, i, i>>16&0xff, i>>8&0xff, i&0xff, i)
			}
			if i%5 == 0 {
				buf.WriteString(" +deviceType=sim")
			}
			buf.WriteByte('\n')
		}
		fsys[fmt.Sprintf("devices/line-%04d.devices", f)] = &fstest.MapFile{Data: buf.Bytes()}
	}
	fsys["artifact.yaml"] = &fstest.MapFile{Data: []byte("apiVersion: gitfleet.io/v1\nkind: Artifact\nmetadata: {name: app}\nspec:\n  source: app.mender\n  deviceTypes: [sim]\n")}
	fsys["rollout.yaml"] = rolloutFile(1)
	return fsys
}

func rolloutFile(canary int) *fstest.MapFile {
	return &fstest.MapFile{Data: fmt.Appendf(nil, "apiVersion: gitfleet.io/v1\nkind: Rollout\nmetadata: {name: fleet}\nspec:\n  artifact: app\n  target: {all: true}\n  phases: [{name: canary, count: %d}, {name: all, percent: 100}]\n", canary)}
}

// A device list declares the same devices as the Device manifests that
// say the same thing.
func TestDeviceListSameAsManifests(t *testing.T) {
	list := deviceListFS(100, 40)
	manifests := fstest.MapFS{"artifact.yaml": list["artifact.yaml"], "rollout.yaml": list["rollout.yaml"]}
	var buf bytes.Buffer
	for i := range 100 {
		fmt.Fprintf(&buf, "---\napiVersion: gitfleet.io/v1\nkind: Device\nmetadata: {name: d%07d}\nspec:\n  identity: {mac: \"02:00:00:%02x:%02x:%02x\"", i, i>>16&0xff, i>>8&0xff, i&0xff)
		if i%3 != 0 {
			fmt.Fprintf(&buf, ", serial: S%d}\n  publicKeySHA256: \"%064x\"\n", i, i)
		} else {
			buf.WriteString("}\n  trustOnFirstUse: true\n")
		}
		if i%5 == 0 {
			buf.WriteString("  deviceType: sim\n")
		}
	}
	manifests["devices.yaml"] = &fstest.MapFile{Data: buf.Bytes()}
	fl, err := Load(list)
	if err != nil {
		t.Fatal(err)
	}
	fm, err := Load(manifests)
	if err != nil {
		t.Fatal(err)
	}
	if len(fl.Devices) != 100 {
		t.Fatalf("the list declares %d devices, want 100", len(fl.Devices))
	}
	if d := cmp.Diff(fleetJSON(t, fm), fleetJSON(t, fl)); d != "" {
		t.Fatalf("fleets differ (-manifests +list):\n%s", d)
	}
	if got, want := fl.Devices[41].Source.String(), "devices/line-0001.devices:4:1"; got != want {
		t.Errorf("d0000041 declared at %s, want %s", got, want)
	}
}

// benchDevices returns GITFLEET_BENCH_DEVICES, or def.
func benchDevices(b *testing.B, def int) int {
	if v := os.Getenv("GITFLEET_BENCH_DEVICES"); v != "" {
		if _, err := fmt.Sscan(v, &def); err != nil || def < 1 {
			b.Fatalf("GITFLEET_BENCH_DEVICES=%q: want a number of devices", v)
		}
	}
	return def
}

// BenchmarkLoadDeviceList loads a fleet of 100,000 devices in device-list
// files of 100,000 from scratch (GITFLEET_BENCH_DEVICES sets another
// size):
//
//	GITFLEET_BENCH_DEVICES=1000000 go test ./schema -run '^$' -bench LoadDeviceList -benchtime 3x
func BenchmarkLoadDeviceList(b *testing.B) {
	n := benchDevices(b, 100_000)
	fsys := deviceListFS(n, 100_000)
	base := liveHeap()
	start := rusage()
	b.ReportAllocs()
	var f *Fleet
	for b.Loop() {
		var err error
		f, err = Load(fsys)
		if err != nil || len(f.Devices) != n {
			b.Fatal(err, len(f.Devices))
		}
	}
	reportUsage(b, start)
	// The fleet's own memory: the live heap with it, less without.
	b.ReportMetric(float64(liveHeap()-base)/(1<<20), "fleet-MB")
	runtime.KeepAlive(f)
}

// BenchmarkCheckIdentities is the check that no two devices share an
// identity, alone, for 100,000 devices with two identity attributes each
// (GITFLEET_BENCH_DEVICES sets another size); the last device repeats
// the first's identity, so the check must find one clash.
func BenchmarkCheckIdentities(b *testing.B) {
	n := benchDevices(b, 100_000)
	devs := make([]Device, n)
	for i := range devs {
		devs[i].Name = fmt.Sprintf("d%07d", i)
		devs[i].Spec.Identity = map[string]string{"mac": fmt.Sprintf("02:00:00:%02x:%02x:%02x", i>>16&0xff, i>>8&0xff, i&0xff), "serial": fmt.Sprint(i)}
	}
	devs[n-1].Spec.Identity = map[string]string{"serial": "0", "mac": "02:00:00:00:00:00"}
	b.ReportAllocs()
	for b.Loop() {
		l := &loader{}
		l.checkIdentities(devs)
		if l.errs.count() != 1 {
			b.Fatalf("%d errors, want 1: %v", l.errs.count(), l.errs)
		}
	}
}

// liveHeap returns the bytes of live heap objects, after a collection.
func liveHeap() int64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

// hashFS is a MapFS whose directory entries know their file's content
// hash, as those of a Git tree do: LoadCached need not read a file it
// has cached.
type hashFS struct {
	fstest.MapFS
	sums map[string]string
}

func newHashFS(m fstest.MapFS) *hashFS {
	h := &hashFS{MapFS: fstest.MapFS{}, sums: map[string]string{}}
	for p, f := range m {
		h.set(p, f)
	}
	return h
}

func (h *hashFS) set(p string, f *fstest.MapFile) {
	h.MapFS[p] = f
	sum := sha256.Sum256(f.Data)
	h.sums[p] = hex.EncodeToString(sum[:])
}

func (h *hashFS) ReadDir(name string) ([]fs.DirEntry, error) {
	es, err := h.MapFS.ReadDir(name)
	for i, e := range es {
		if sum, ok := h.sums[path.Join(name, e.Name())]; ok {
			es[i] = hashEntry{e, sum}
		}
	}
	return es, err
}

type hashEntry struct {
	fs.DirEntry
	sum string
}

func (e hashEntry) ContentHash() string { return e.sum }

// BenchmarkLoadDeviceListCommit loads the fleet of BenchmarkLoadDeviceList
// again after a commit that changed only its rollout, with the cache, in
// a tree whose entries know their content hash (as Git's do).
func BenchmarkLoadDeviceListCommit(b *testing.B) {
	n := benchDevices(b, 100_000)
	fsys := newHashFS(deviceListFS(n, 100_000))
	c := NewCache()
	if _, err := LoadCached(fsys, c); err != nil {
		b.Fatal(err)
	}
	canary := 1
	b.ReportAllocs()
	for b.Loop() {
		canary++
		fsys.set("rollout.yaml", rolloutFile(canary))
		f, err := LoadCached(fsys, c)
		if err != nil || len(f.Devices) != n {
			b.Fatal(err, len(f.Devices))
		}
	}
}

// LoadCached shares the devices of the previous load when no file that
// declares devices changed, and only then.
func TestLoadCachedSharesDevices(t *testing.T) {
	for _, name := range []string{"read", "content hash"} {
		t.Run(name, func(t *testing.T) {
			m := deviceListFS(1000, 300)
			var fsys fs.FS = m
			set := func(p string, f *fstest.MapFile) { m[p] = f }
			if name == "content hash" {
				h := newHashFS(m)
				fsys, set = h, h.set
			}
			c := NewCache()
			first, err := LoadCached(fsys, c)
			if err != nil {
				t.Fatal(err)
			}
			set("rollout.yaml", rolloutFile(7))
			second, err := LoadCached(fsys, c)
			if err != nil {
				t.Fatal(err)
			}
			if !first.SameDevices(second) || second.Rollouts[0].Spec.Phases[0].Count != 7 {
				t.Fatalf("after a rollout change: same devices %v, canary %d", first.SameDevices(second), second.Rollouts[0].Spec.Phases[0].Count)
			}
			list := m["devices/line-0001.devices"].Data
			set("devices/line-0001.devices", &fstest.MapFile{Data: append(bytes.Clone(list), "extra-1 tofu mac=x\n"...)})
			third, err := LoadCached(fsys, c)
			if err != nil {
				t.Fatal(err)
			}
			if second.SameDevices(third) || len(third.Devices) != 1001 || third.Device("extra-1") == nil {
				t.Fatalf("after a list change: same devices %v, %d devices", second.SameDevices(third), len(third.Devices))
			}
			if d := cmp.Diff(fleetJSON(t, mustLoad(t, fsys)), fleetJSON(t, third)); d != "" {
				t.Fatalf("LoadCached differs from Load:\n%s", d)
			}
		})
	}
}

func mustLoad(t *testing.T, fsys fs.FS) *Fleet {
	t.Helper()
	f, err := Load(fsys)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// FuzzDeviceList loads arbitrary device-list files: no panic, every error
// at a line of the file, every device valid by the rules of Device
// manifests.
//
//	go test ./schema -run '^$' -fuzz FuzzDeviceList -fuzztime 30s
func FuzzDeviceList(f *testing.F) {
	f.Add([]byte(DeviceListHeader + "\nd-1 tofu mac=1 +deviceType=x\n"))
	f.Add([]byte("# c\n" + DeviceListHeader + "\r\nd-1 " + strings.Repeat("ab", 32) + "\n\td-2\ttofu\ta=b=c # x\n"))
	f.Add([]byte(DeviceListHeader + "\nd-1 tofu\n-x y\nd-1 tofu a=\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		fl, err := Load(fstest.MapFS{"f.devices": {Data: data}})
		lines := bytes.Count(data, []byte{'\n'}) + 1
		var errs Errors
		if err != nil && !errors.As(err, &errs) {
			t.Fatalf("not Errors: %v", err)
		}
		for _, e := range errs {
			if e.File != "" && (e.File != "f.devices" || e.Line < 1 || e.Line > lines) {
				t.Fatalf("error outside the file: %v", e)
			}
		}
		for _, d := range fl.Devices {
			if !validName(d.Name) || (d.Spec.PublicKeySHA256 == "") == !d.Spec.TrustOnFirstUse || d.Spec.TrustOnFirstUse && len(d.Spec.Identity) == 0 {
				t.Fatalf("invalid device loaded: %+v", d)
			}
		}
	})
}

// The devices of several lists are parsed into one array, each list into
// its region, so the fleet's devices are that array, not a copy; a list
// with an error (fewer devices than lines) makes a copy instead.
func TestDeviceListsNotCopied(t *testing.T) {
	load := func(fsys fs.FS) *loader {
		l := &loader{fsys: fsys, fsMu: new(sync.Mutex), fleet: &Fleet{}, overlapBudget: MaxOverlapPairs}
		if _, err := l.loadFiles(l.walk(), nil); err != nil {
			t.Fatal(err)
		}
		return l
	}
	fsys := deviceListFS(1000, 300)
	l := load(fsys)
	if len(l.fleet.Devices) != 1000 || len(l.lists) != 1000 || &l.fleet.Devices[0] != &l.lists[0] {
		t.Fatalf("%d devices, %d in the lists' array; shared: %v", len(l.fleet.Devices), len(l.lists), len(l.lists) > 0 && &l.fleet.Devices[0] == &l.lists[0])
	}
	fsys["devices/line-0001.devices"].Data = append(fsys["devices/line-0001.devices"].Data, "-bad- tofu a=b\n"...)
	l = load(fsys)
	if len(l.fleet.Devices) != 1000 || &l.fleet.Devices[0] == &l.lists[0] || l.errs.count() != 1 {
		t.Fatalf("with a bad line: %d devices, %d errors, shared %v", len(l.fleet.Devices), l.errs.count(), &l.fleet.Devices[0] == &l.lists[0])
	}
}

// A loaded Fleet looks devices up by the loader's index of names (no
// scan of a million devices per lookup), and a Fleet whose devices were
// replaced since falls back to the scan, still right.
func TestFleetDeviceByIndex(t *testing.T) {
	c := NewCache()
	for _, load := range []func(fs.FS) (*Fleet, error){Load, func(f fs.FS) (*Fleet, error) { return LoadCached(f, c) }} {
		f, err := load(deviceListFS(1000, 300))
		if err != nil {
			t.Fatal(err)
		}
		if f.names == nil {
			t.Fatal("a loaded fleet has no index of device names")
		}
		if d := f.Device("d0000041"); d != &f.Devices[41] {
			t.Fatalf("Device(d0000041) = %v, want the 42nd device", d)
		}
		if d := f.Device("nope"); d != nil {
			t.Fatalf("Device(nope) = %v", d.Name)
		}
		g := *f
		g.Devices = g.Devices[1:]
		if d := g.Device("d0000000"); d != nil {
			t.Fatal("a device no longer in the fleet is still found")
		}
		if d := g.Device("d0000041"); d != &f.Devices[41] {
			t.Fatalf("after replacing Devices, Device(d0000041) = %v", d)
		}
	}
	// A commit that changes only the rollout shares devices and index.
	fsys := deviceListFS(1000, 300)
	first, _ := LoadCached(fsys, c)
	fsys["rollout.yaml"] = rolloutFile(9)
	second, err := LoadCached(fsys, c)
	if err != nil || !first.SameDevices(second) || second.names == nil || second.names.m["d0000999"] == nil {
		t.Fatalf("second load: %v, same devices %v", err, first.SameDevices(second))
	}
}
