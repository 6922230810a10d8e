package deviceapi

import (
	"testing"
	"testing/fstest"

	"github.com/gitfleet/gitfleet/controller/reconcile"
	"github.com/gitfleet/gitfleet/schema"
)

// The admission index carries over to a Snapshot whose devices are those
// of the previous one (a commit that changed no device declaration), and
// is rebuilt for one whose devices changed.
func TestAdmissionIndexCarriesOver(t *testing.T) {
	fsys := fstest.MapFS{
		"line.devices": {Data: []byte("gitfleet.io/v1 devices\nd-1 tofu mac=02:00:00:00:00:01\n")},
		"rollout.yaml": {Data: []byte("apiVersion: gitfleet.io/v1\nkind: Artifact\nmetadata: {name: app}\nspec: {source: app.mender, deviceTypes: [x]}\n")},
	}
	c := schema.NewCache()
	load := func() *reconcile.Snapshot {
		t.Helper()
		f, err := schema.LoadCached(fsys, c)
		if err != nil {
			t.Fatal(err)
		}
		return &reconcile.Snapshot{Fleet: f}
	}
	var a admissions
	s1 := load()
	i1 := a.get(s1)
	fsys["rollout.yaml"] = &fstest.MapFile{Data: append(fsys["rollout.yaml"].Data, "# changed\n"...)}
	s2 := load()
	if i2 := a.get(s2); i2 != i1 {
		t.Error("the index was rebuilt for a commit that changed no device")
	}
	fsys["line.devices"] = &fstest.MapFile{Data: append(fsys["line.devices"].Data, "d-2 tofu mac=02:00:00:00:00:02\n"...)}
	s3 := load()
	i3 := a.get(s3)
	if i3 == i1 {
		t.Fatal("the index was kept for a commit that added a device")
	}
	if d := i3.admit(Attributes{"mac": "02:00:00:00:00:02"}, false, "ab"); d == nil || d.Name != "d-2" {
		t.Fatalf("the new device is not admitted by the rebuilt index: %v", d)
	}
}
