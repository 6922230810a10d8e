package artifacts_test

import (
	"context"
	"fmt"
	"log"
	"net/http"
	"os"
	"time"

	"github.com/gitfleet/gitfleet/controller/artifacts"
	"github.com/gitfleet/gitfleet/schema"
)

// The controller keeps one Cache, syncs it with every snapshot (and on a
// timer), mounts its handler and hands devices presigned URLs.
func Example() {
	dir, _ := os.MkdirTemp("", "cache")
	defer os.RemoveAll(dir)
	store, _ := os.MkdirTemp("", "store")
	defer os.RemoveAll(store)

	cache, err := artifacts.New(artifacts.Options{
		Dir:          dir,
		StoreDir:     store,
		DownloadKeys: [][]byte{[]byte("a secret shared by every replica, 32+ bytes")},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer cache.Close()

	mux := http.NewServeMux()
	mux.Handle("GET "+artifacts.DownloadPath, cache.Handler())

	fleet := &schema.Fleet{Artifacts: []schema.Artifact{{
		Meta: schema.Meta{Name: "hello-2"},
		Spec: schema.ArtifactSpec{Source: "hello-2.mender", DeviceTypes: []string{"raspberrypi4"}},
	}}}
	if err := cache.Sync(context.Background(), fleet); err != nil {
		log.Fatal(err)
	}
	if _, err := cache.Lookup("hello-2"); err != nil {
		fmt.Println(err)
	}
	for _, s := range cache.Status() {
		fmt.Println(s.Name, s.State)
	}
	// With an offered entry e:
	//   uri, expire := cache.PresignURL("https://gitfleet.example.com", e, deviceID, time.Hour)
	_ = time.Hour
	// Output:
	// artifact hello-2: artifacts: source unavailable: hello-2.mender: no such file in the artifact store
	// hello-2 failed
}
