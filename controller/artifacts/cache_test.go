package artifacts

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/schema"
)

func TestEnsure(t *testing.T) {
	ctx := context.Background()
	good := build{name: "app-1", signer: key(t, "release")}.bytes(t)
	unsigned := build{name: "app-1"}.bytes(t)
	byOther := build{name: "app-1", signer: key(t, "intern")}.bytes(t)
	multi := build{name: "app-1", deviceTypes: []string{"board-a", "board-b"}, signer: key(t, "release"),
		provides: map[string]string{"app.channel": "stable"}}.bytes(t)
	corrupt := bytes.Clone(good)
	corrupt[len(corrupt)-1500] ^= 1 // inside the payload archive
	noise := make([]byte, 2<<20)    // incompressible: the artifact is over MaxSize
	rand.Read(noise)
	big := build{name: "app-1", signer: key(t, "release"), payload: noise}.bytes(t)

	tests := []struct {
		name    string
		setup   func(e *env) schema.Artifact
		keys    []string
		wantErr error
		errHas  string
		check   func(t *testing.T, e *env, ent *Entry)
	}{{
		name: "good local",
		setup: func(e *env) schema.Artifact {
			e.put("apps/app-1.mender", good)
			return manifest("app-1", "apps/app-1.mender", signedBy("release"), withSHA(sum(good)))
		},
		keys: []string{"release", "intern"},
		check: func(t *testing.T, e *env, ent *Entry) {
			if ent.Digest != sum(good) || ent.Size != int64(len(good)) || ent.ArtifactName != "app-1" {
				t.Errorf("entry %+v", ent)
			}
			if !slices.Equal(ent.SignedBy, []string{"release"}) || len(ent.SignedByFingerprints) != 1 {
				t.Errorf("signed by %v %v", ent.SignedBy, ent.SignedByFingerprints)
			}
			if !slices.Equal(ent.PayloadTypes, []string{"app"}) || ent.Provides["rootfs-image.app.version"] != "app-1" || ent.Provides["artifact_name"] != "app-1" {
				t.Errorf("header info %+v", ent)
			}
			data, err := os.ReadFile(ent.Path)
			if err != nil || !bytes.Equal(data, good) {
				t.Errorf("cached file: %v", err)
			}
			if ent.Path != filepath.Join(e.dir, "sha256", ent.Digest) {
				t.Errorf("path %s", ent.Path)
			}
		},
	}, {
		name: "good local without declared sha256",
		setup: func(e *env) schema.Artifact {
			e.put("app-1.mender", good)
			return manifest("app-1", "app-1.mender", signedBy("release"))
		},
		keys: []string{"release"},
	}, {
		name: "store sidecar sha256 checked",
		setup: func(e *env) schema.Artifact {
			e.put("app-1.mender", good)
			e.put("app-1.mender.sha256", []byte(sum(unsigned)+"  app-1.mender\n"))
			return manifest("app-1", "app-1.mender")
		},
		wantErr: ErrDigest,
	}, {
		name: "good https",
		setup: func(e *env) schema.Artifact {
			u := e.host("/releases/app-1.mender", good)
			return manifest("app-1", u+"?X-Amz-Signature=secret", signedBy("release"), withSHA(sum(good)))
		},
		keys: []string{"release"},
		check: func(t *testing.T, e *env, ent *Entry) {
			if strings.Contains(ent.Source, "secret") {
				t.Errorf("source keeps its query: %s", ent.Source)
			}
			if ent.Digest != sum(good) {
				t.Errorf("digest %s", ent.Digest)
			}
		},
	}, {
		name: "https without sha256",
		setup: func(e *env) schema.Artifact {
			return manifest("app-1", e.host("/a.mender", good))
		},
		wantErr: ErrSource, errHas: "needs spec.sha256",
	}, {
		name: "https 404",
		setup: func(e *env) schema.Artifact {
			return manifest("app-1", e.srv.URL+"/nope.mender?token=secret", withSHA(sum(good)))
		},
		wantErr: ErrSource, errHas: "404",
	}, {
		name: "wrong sha256 local",
		setup: func(e *env) schema.Artifact {
			e.put("app-1.mender", good)
			return manifest("app-1", "app-1.mender", withSHA(sum(unsigned)))
		},
		wantErr: ErrDigest,
	}, {
		name: "wrong sha256 https",
		setup: func(e *env) schema.Artifact {
			return manifest("app-1", e.host("/a.mender", good), withSHA(sum(unsigned)))
		},
		wantErr: ErrDigest,
	}, {
		name: "unsigned when a key is required",
		setup: func(e *env) schema.Artifact {
			e.put("a.mender", unsigned)
			return manifest("app-1", "a.mender", signedBy("release"))
		},
		keys:    []string{"release"},
		wantErr: ErrUnsigned, errHas: "release",
	}, {
		name: "unsigned allowed when no key is named",
		setup: func(e *env) schema.Artifact {
			e.put("a.mender", unsigned)
			return manifest("app-1", "a.mender")
		},
	}, {
		name: "signed by an untrusted key",
		setup: func(e *env) schema.Artifact {
			e.put("a.mender", byOther)
			return manifest("app-1", "a.mender", signedBy("release"))
		},
		keys:    []string{"release", "intern"},
		wantErr: ErrSignature, errHas: "signed by SigningKey intern, which spec.signedBy does not list",
	}, {
		name: "signedBy names an undeclared key",
		setup: func(e *env) schema.Artifact {
			e.put("a.mender", good)
			return manifest("app-1", "a.mender", signedBy("release"))
		},
		wantErr: ErrKey,
	}, {
		name: "header name mismatch",
		setup: func(e *env) schema.Artifact {
			e.put("a.mender", good)
			return manifest("app-2", "a.mender", signedBy("release"))
		},
		keys:    []string{"release"},
		wantErr: ErrHeader, errHas: `artifact_name is "app-1", the manifest says "app-2"`,
	}, {
		name: "artifactName overrides metadata.name",
		setup: func(e *env) schema.Artifact {
			e.put("a.mender", good)
			return manifest("app-1-release", "a.mender", func(s *schema.ArtifactSpec) { s.ArtifactName = "app-1" })
		},
	}, {
		name: "device type mismatch",
		setup: func(e *env) schema.Artifact {
			e.put("a.mender", good)
			return manifest("app-1", "a.mender", func(s *schema.ArtifactSpec) { s.DeviceTypes = []string{"board-a", "board-z"} })
		},
		wantErr: ErrHeader, errHas: `"board-z"`,
	}, {
		name: "subset of device types",
		setup: func(e *env) schema.Artifact {
			e.put("a.mender", multi)
			return manifest("app-1", "a.mender", func(s *schema.ArtifactSpec) {
				s.DeviceTypes = []string{"board-b"}
				s.Provides = map[string]string{"app.channel": "stable"}
			})
		},
		check: func(t *testing.T, e *env, ent *Entry) {
			if !slices.Equal(ent.DeviceTypes, []string{"board-a", "board-b"}) || ent.Provides["app.channel"] != "stable" {
				t.Errorf("entry %+v", ent)
			}
		},
	}, {
		name: "provides mismatch",
		setup: func(e *env) schema.Artifact {
			e.put("a.mender", multi)
			return manifest("app-1", "a.mender", func(s *schema.ArtifactSpec) { s.Provides = map[string]string{"app.channel": "beta"} })
		},
		wantErr: ErrHeader, errHas: "app.channel",
	}, {
		name: "depends the header lacks",
		setup: func(e *env) schema.Artifact {
			e.put("a.mender", good)
			return manifest("app-1", "a.mender", func(s *schema.ArtifactSpec) { s.Depends = map[string]string{"libc": "2"} })
		},
		wantErr: ErrHeader, errHas: "libc",
	}, {
		name: "missing file",
		setup: func(e *env) schema.Artifact {
			return manifest("app-1", "apps/nope.mender")
		},
		wantErr: ErrSource, errHas: "no such file",
	}, {
		name: "path out of the store",
		setup: func(e *env) schema.Artifact {
			return manifest("app-1", "../outside.mender")
		},
		wantErr: ErrSource,
	}, {
		name: "symlink out of the store",
		setup: func(e *env) schema.Artifact {
			outside := filepath.Join(t.TempDir(), "x.mender")
			os.WriteFile(outside, good, 0o644)
			if err := os.Symlink(outside, filepath.Join(e.store, "link.mender")); err != nil {
				t.Skip(err)
			}
			return manifest("app-1", "link.mender")
		},
		wantErr: ErrSource,
	}, {
		name: "http is refused",
		setup: func(e *env) schema.Artifact {
			return manifest("app-1", "http://example.com/a.mender", withSHA(sum(good)))
		},
		wantErr: ErrSource,
	}, {
		name: "corrupt artifact with matching sha256",
		setup: func(e *env) schema.Artifact {
			e.put("a.mender", corrupt)
			return manifest("app-1", "a.mender", withSHA(sum(corrupt)))
		},
		wantErr: ErrFormat, errHas: "artifact: ",
	}, {
		name: "oversize download",
		setup: func(e *env) schema.Artifact {
			return manifest("app-1", e.host("/big.mender", big), withSHA(sum(big)))
		},
		wantErr: ErrTooLarge,
	}, {
		name: "oversize download without Content-Length",
		setup: func(e *env) schema.Artifact {
			f := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.(http.Flusher).Flush() // chunked: no Content-Length
				w.Write(big)
			})
			e.serve.Store(&f)
			return manifest("app-1", e.srv.URL+"/big.mender", withSHA(sum(big)))
		},
		wantErr: ErrTooLarge,
	}, {
		name: "oversize local",
		setup: func(e *env) schema.Artifact {
			e.put("big.mender", big)
			return manifest("app-1", "big.mender")
		},
		wantErr: ErrTooLarge,
	}, {
		name: "two signatures needed, one embedded",
		setup: func(e *env) schema.Artifact {
			e.put("a.mender", good)
			return manifest("app-1", "a.mender", signedBy("release", "qa"), func(s *schema.ArtifactSpec) { s.MinSignatures = 2 })
		},
		keys:    []string{"release", "qa"},
		wantErr: ErrSignature, errHas: "a.mender.sigs",
	}, {
		name: "two signatures: embedded and detached",
		setup: func(e *env) schema.Artifact {
			e.put("a.mender", good)
			sig, err := SignDetached(bytes.NewReader(good), key(t, "qa").signer)
			if err != nil {
				t.Fatal(err)
			}
			// A signature by an untrusted key and a repeat count for nothing.
			other, _ := SignDetached(bytes.NewReader(good), key(t, "intern").signer)
			e.put("a.mender.sigs", slices.Concat([]byte("# qa sign-off\n\n"), other, sig, sig))
			return manifest("app-1", "a.mender", signedBy("release", "qa"), func(s *schema.ArtifactSpec) { s.MinSignatures = 2 })
		},
		keys: []string{"release", "qa", "intern"},
		check: func(t *testing.T, e *env, ent *Entry) {
			if !slices.Equal(ent.SignedBy, []string{"release", "qa"}) {
				t.Errorf("signed by %v", ent.SignedBy)
			}
		},
	}, {
		name: "two signatures: a repeated signature counts once",
		setup: func(e *env) schema.Artifact {
			e.put("a.mender", good)
			sig, _ := SignDetached(bytes.NewReader(good), key(t, "release").signer)
			e.put("a.mender.sigs", sig)
			return manifest("app-1", "a.mender", signedBy("release", "qa"), func(s *schema.ArtifactSpec) { s.MinSignatures = 2 })
		},
		keys:    []string{"release", "qa"},
		wantErr: ErrSignature, errHas: `found 1 ["release"]`,
	}, {
		name: "two signatures over https, detached",
		setup: func(e *env) schema.Artifact {
			u := e.host("/a.mender", unsigned)
			s1, _ := SignDetached(bytes.NewReader(unsigned), key(t, "release").signer)
			s2, _ := SignDetached(bytes.NewReader(unsigned), key(t, "qa").signer)
			e.host("/a.mender.sigs", append(s1, s2...))
			return manifest("app-1", u+"?token=x", withSHA(sum(unsigned)), signedBy("release", "qa"), func(s *schema.ArtifactSpec) { s.MinSignatures = 2 })
		},
		keys: []string{"release", "qa"},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			a := tc.setup(e)
			ent, err := e.cache.Ensure(ctx, a, fleetKeys(t, tc.keys...))
			got, lerr := e.cache.Lookup(a.Name)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("Ensure: %v, want %v", err, tc.wantErr)
				}
				if !strings.Contains(err.Error(), tc.errHas) {
					t.Errorf("error %q does not say %q", err, tc.errHas)
				}
				var ae *Error
				if !errors.As(lerr, &ae) || ae.Name != a.Name || !errors.Is(lerr, tc.wantErr) || got != nil {
					t.Errorf("Lookup: %v, %v", got, lerr)
				}
				if strings.Contains(err.Error(), "secret") || strings.Contains(err.Error(), "token=") {
					t.Errorf("error leaks a query string: %v", err)
				}
				st := e.cache.Status()
				if len(st) != 1 || st[0].State != StateFailed || st[0].Reason == "" {
					t.Errorf("status %+v", st)
				}
				if f := e.tmpFiles(); len(f) != 0 && !errors.Is(err, ErrSource) {
					t.Errorf("temporary files left: %v", f)
				}
				return
			}
			if err != nil {
				t.Fatalf("Ensure: %v", err)
			}
			if got != ent || lerr != nil {
				t.Errorf("Lookup = %v, %v; Ensure gave %v", got, lerr, ent)
			}
			if st := e.cache.Status(); len(st) != 1 || st[0].State != StateOK || st[0].Entry != ent {
				t.Errorf("status %+v", st)
			}
			if f := e.tmpFiles(); len(f) != 0 {
				t.Errorf("temporary files left: %v", f)
			}
			if tc.check != nil {
				tc.check(t, e, ent)
			}
		})
	}
}

func TestSyncSharesAndChanges(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, func(o *Options) { o.KeepUnused = time.Hour })
	v1 := build{name: "app-1", signer: key(t, "release")}.bytes(t)
	e.put("a.mender", v1)
	e.put("copy/a.mender", v1)
	url := e.host("/a.mender", v1)
	fleet := &schema.Fleet{
		Artifacts: []schema.Artifact{
			manifest("app-1", "a.mender", signedBy("release")),
			manifest("app-1-copy", "copy/a.mender", func(s *schema.ArtifactSpec) { s.ArtifactName = "app-1" }),
		},
		Keys: fleetKeys(t, "release"),
	}
	if err := e.cache.Sync(ctx, fleet); err != nil {
		t.Fatal(err)
	}
	// An https source of bits already cached is not downloaded.
	fleet.Artifacts = append(fleet.Artifacts,
		manifest("app-1-web", url, withSHA(sum(v1)), func(s *schema.ArtifactSpec) { s.ArtifactName = "app-1" }))
	if err := e.cache.Sync(ctx, fleet); err != nil {
		t.Fatal(err)
	}
	for _, s := range e.cache.Status() {
		if s.State != StateOK {
			t.Fatalf("%s: %s %s", s.Name, s.State, s.Reason)
		}
	}
	if b := e.blobs(); len(b) != 1 || b[0] != sum(v1) {
		t.Fatalf("three manifests of the same bits: cached %v", b)
	}
	if e.gets.Load() != 0 {
		t.Errorf("downloaded %d times bits the store already gave", e.gets.Load())
	}
	a1, _ := e.cache.Lookup("app-1")

	// The store file changes under the same manifest: a new entry, a new
	// file; the old file stays until KeepUnused passes.
	v2 := build{name: "app-1", signer: key(t, "release"), payload: []byte("version two")}.bytes(t)
	e.put("a.mender", v2)
	future := time.Now().Add(time.Minute) // a distinct mtime even on coarse file systems
	os.Chtimes(filepath.Join(e.store, "a.mender"), future, future)
	if err := e.cache.Sync(ctx, fleet); err != nil {
		t.Fatal(err)
	}
	a2, err := e.cache.Lookup("app-1")
	if err != nil || a2.Digest != sum(v2) || a2 == a1 {
		t.Fatalf("after change: %+v, %v", a2, err)
	}
	if b := e.blobs(); len(b) != 2 {
		t.Fatalf("cached %v", b)
	}
	// Removing the copies from the fleet leaves v1 unused; it goes once
	// KeepUnused has passed.
	fleet.Artifacts = fleet.Artifacts[:1]
	if err := e.cache.Sync(ctx, fleet); err != nil {
		t.Fatal(err)
	}
	if _, err := e.cache.Lookup("app-1-copy"); !errors.Is(err, ErrNotFound) {
		t.Errorf("removed artifact: %v", err)
	}
	if len(e.blobs()) != 2 {
		t.Errorf("unused file removed before KeepUnused")
	}
	e.clock.Add(2 * time.Hour)
	if err := e.cache.Sync(ctx, fleet); err != nil {
		t.Fatal(err)
	}
	if b := e.blobs(); len(b) != 1 || b[0] != sum(v2) {
		t.Errorf("after KeepUnused: cached %v", b)
	}
	if st := e.cache.Status(); len(st) != 1 || st[0].Entry.Digest != sum(v2) {
		t.Errorf("status %+v", st)
	}
}

func TestBackoffAndRetry(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, func(o *Options) { o.MinBackoff, o.MaxBackoff = time.Minute, 4*time.Minute })
	data := build{name: "app-1"}.bytes(t)
	fail := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "down", http.StatusServiceUnavailable) })
	e.serve.Store(&fail)
	a := manifest("app-1", e.host("/a.mender", data), withSHA(sum(data)))

	wantNext := []time.Duration{time.Minute, 2 * time.Minute, 4 * time.Minute, 4 * time.Minute}
	for i, d := range wantNext {
		_, err := e.cache.Ensure(ctx, a, nil)
		var ae *Error
		if !errors.As(err, &ae) || !errors.Is(err, ErrSource) || !ae.Retry || !strings.Contains(err.Error(), "503") {
			t.Fatalf("attempt %d: %v", i, err)
		}
		st := e.cache.Status()[0]
		if st.Attempts != i+1 || !st.NextAttempt.Equal(e.clock.Now().Add(d)) {
			t.Fatalf("attempt %d: status %+v, want next in %v", i, st, d)
		}
		// Before the backoff ends, Ensure does not ask the server.
		n := e.gets.Load()
		if _, err := e.cache.Ensure(ctx, a, nil); !errors.Is(err, ErrSource) || e.gets.Load() != n {
			t.Fatalf("attempt %d: retried during backoff (%v)", i, err)
		}
		e.clock.Add(d)
	}
	e.serve.Store(nil)
	if _, err := e.cache.Ensure(ctx, a, nil); err != nil {
		t.Fatal(err)
	}
	if st := e.cache.Status()[0]; st.State != StateOK || st.Attempts != 0 || !st.NextAttempt.IsZero() {
		t.Errorf("status %+v", st)
	}
}

// TestResumeDownload drops the connection half-way through the first
// download; the next attempt asks for the rest with Range and the file
// is whole.
func TestResumeDownload(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, func(o *Options) { o.MinBackoff = time.Second })
	data := build{name: "app-1", payload: bytes.Repeat([]byte("0123456789"), 40_000)}.bytes(t)
	half := len(data) / 2
	var mu sync.Mutex
	var ranges []string
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		ranges = append(ranges, r.Header.Get("Range"))
		first := len(ranges) == 1
		mu.Unlock()
		if first {
			w.Header().Set("Content-Length", fmt.Sprint(len(data)))
			w.Write(data[:half])
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler) // drop the connection
		}
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(data))
	})
	e.serve.Store(&h)
	a := manifest("app-1", e.srv.URL+"/a.mender", withSHA(sum(data)))
	_, err := e.cache.Ensure(ctx, a, nil)
	if !errors.Is(err, ErrSource) || !strings.Contains(err.Error(), "interrupted") {
		t.Fatalf("first attempt: %v", err)
	}
	t.Logf("first attempt: %v", err)
	part, err := os.Stat(filepath.Join(e.dir, tmpDir, sum(data)+partSuffix))
	if err != nil || part.Size() == 0 {
		t.Fatalf("partial download: %v", err)
	}
	// A new Cache over the same directory (a restart) keeps the partial
	// file and resumes it.
	e.cache.Close()
	c2, err := New(e.cache.opts)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	ent, err := c2.Ensure(ctx, a, nil)
	if err != nil {
		t.Fatalf("resumed: %v", err)
	}
	got, _ := os.ReadFile(ent.Path)
	if !bytes.Equal(got, data) {
		t.Fatal("resumed file differs")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(ranges) != 2 || ranges[0] != "" || ranges[1] != fmt.Sprintf("bytes=%d-", part.Size()) {
		t.Errorf("requests' Range headers: %q (partial file %d bytes)", ranges, part.Size())
	}
	if f := e.tmpFiles(); len(f) != 0 {
		t.Errorf("temporary files left: %v", f)
	}
}

// TestResumeWrongBytes: a partial file whose bytes do not belong to the
// artifact fails the digest, is discarded, and the next attempt starts
// over.
func TestResumeWrongBytes(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, func(o *Options) { o.MinBackoff = time.Second })
	data := build{name: "app-1"}.bytes(t)
	os.WriteFile(filepath.Join(e.dir, tmpDir, sum(data)+partSuffix), []byte("garbage!"), 0o644)
	a := manifest("app-1", e.host("/a.mender", data), withSHA(sum(data)))
	if _, err := e.cache.Ensure(ctx, a, nil); !errors.Is(err, ErrDigest) {
		t.Fatalf("first: %v", err)
	}
	e.clock.Add(time.Second)
	if _, err := e.cache.Ensure(ctx, a, nil); err != nil {
		t.Fatalf("second: %v", err)
	}
}

func TestConcurrentSyncs(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, func(o *Options) { o.MaxConcurrent = 2 })
	var arts []schema.Artifact
	for i := range 6 {
		name := fmt.Sprintf("app-%d", i)
		data := build{name: name, signer: key(t, "release")}.bytes(t)
		if i%2 == 0 {
			e.put(name+".mender", data)
			arts = append(arts, manifest(name, name+".mender", signedBy("release")))
		} else {
			arts = append(arts, manifest(name, e.host("/"+name, data), withSHA(sum(data)), signedBy("release")))
		}
		// Every artifact twice under another name: same bits, one file.
		arts = append(arts, manifest(name+"-again", arts[len(arts)-1].Spec.Source, withSHA(sum(data)),
			func(s *schema.ArtifactSpec) { s.ArtifactName = name }))
	}
	fleet := &schema.Fleet{Artifacts: arts, Keys: fleetKeys(t, "release")}
	h := e.cache.Handler()
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if err := e.cache.Sync(ctx, fleet); err != nil {
				t.Error(err)
			}
		})
		wg.Go(func() {
			for range 20 {
				for _, s := range e.cache.Status() {
					if s.State == StateFailed {
						t.Errorf("%s failed: %s", s.Name, s.Reason)
					}
				}
				if ent, err := e.cache.Lookup("app-1"); err == nil {
					u, _ := e.cache.PresignURL("https://x", ent, "dev", time.Minute)
					rec := serve(h, http.MethodGet, u, nil)
					if rec.Code != http.StatusOK || rec.Body.Len() != int(ent.Size) {
						t.Errorf("download during sync: %d, %d bytes", rec.Code, rec.Body.Len())
					}
				}
			}
		})
	}
	wg.Wait()
	for _, s := range e.cache.Status() {
		if s.State != StateOK {
			t.Errorf("%s: %s %s", s.Name, s.State, s.Reason)
		}
	}
	if n := len(e.blobs()); n != 6 {
		t.Errorf("%d cached files, want 6", n)
	}
	if n := e.gets.Load(); n != 3 {
		t.Errorf("%d downloads, want 3 (one per https artifact)", n)
	}
}

// TestMenderArtifactInterop caches an artifact written and signed by the
// real mender-artifact with a key from artifact.GenerateKey.
func TestMenderArtifactInterop(t *testing.T) {
	ma := needTool(t, "mender-artifact")
	e := newEnv(t)
	k := key(t, "release")
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "release.key")
	os.WriteFile(keyFile, k.priv, 0o600)
	payload := filepath.Join(dir, "app.bin")
	os.WriteFile(payload, []byte("hello from mender-artifact\n"), 0o644)
	out := filepath.Join(e.store, "their-1.mender")
	run(t, ma, "write", "module-image", "-T", "app", "-t", "board-a", "-t", "board-b", "-n", "their-1",
		"-f", payload, "-p", "app.version:7", "-k", keyFile, "-o", out)
	data, _ := os.ReadFile(out)

	a := manifest("their-1", "their-1.mender", signedBy("release"), withSHA(sum(data)), func(s *schema.ArtifactSpec) {
		s.Provides = map[string]string{"app.version": "7"}
	})
	ent, err := e.cache.Ensure(context.Background(), a, fleetKeys(t, "release", "intern"))
	if err != nil {
		t.Fatal(err)
	}
	if ent.ArtifactName != "their-1" || !slices.Equal(ent.DeviceTypes, []string{"board-a", "board-b"}) ||
		!slices.Equal(ent.PayloadTypes, []string{"app"}) || !slices.Equal(ent.SignedBy, []string{"release"}) {
		t.Errorf("entry %+v", ent)
	}
	// The same file refused when only another key is trusted.
	a.Spec.SignedBy = []string{"intern"}
	if _, err := e.cache.Ensure(context.Background(), a, fleetKeys(t, "release", "intern")); !errors.Is(err, ErrSignature) {
		t.Errorf("other key: %v", err)
	}
	// A detached signature made by us is accepted next to theirs.
	sig, err := SignDetached(bytes.NewReader(data), key(t, "intern").signer)
	if err != nil {
		t.Fatal(err)
	}
	e.put("their-1.mender.sigs", sig)
	a.Spec.SignedBy, a.Spec.MinSignatures = []string{"release", "intern"}, 2
	if ent, err := e.cache.Ensure(context.Background(), a, fleetKeys(t, "release", "intern")); err != nil || len(ent.SignedBy) != 2 {
		t.Errorf("two signatures: %v, %v", ent, err)
	}
	// And mender-artifact still validates the cached file.
	pub := filepath.Join(dir, "release.pub")
	os.WriteFile(pub, k.pub, 0o644)
	run(t, ma, "validate", "-k", pub, ent.Path)
}

// TestStoreFileArrivesLater: a manifest committed before its file is in
// the store fails, and the next sync (no backoff for store paths) offers
// it.
func TestStoreFileArrivesLater(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	fleet := &schema.Fleet{Artifacts: []schema.Artifact{manifest("app-1", "a.mender")}}
	if err := e.cache.Sync(ctx, fleet); err != nil {
		t.Fatal(err)
	}
	if _, err := e.cache.Lookup("app-1"); !errors.Is(err, ErrSource) {
		t.Fatalf("before upload: %v", err)
	}
	e.put("a.mender", build{name: "app-1"}.bytes(t))
	if err := e.cache.Sync(ctx, fleet); err != nil {
		t.Fatal(err)
	}
	if _, err := e.cache.Lookup("app-1"); err != nil {
		t.Fatalf("after upload: %v", err)
	}
}

// TestStalledDownload: a server that stops sending is given up on after
// StallTimeout, and what arrived is kept for the next attempt.
func TestStalledDownload(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.StallTimeout = 200 * time.Millisecond })
	data := build{name: "app-1"}.bytes(t)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(len(data)))
		w.Write(data[:100])
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	})
	e.serve.Store(&h)
	_, err := e.cache.Ensure(context.Background(), manifest("app-1", e.srv.URL+"/a", withSHA(sum(data))), nil)
	if !errors.Is(err, ErrSource) || !strings.Contains(err.Error(), "stalled") {
		t.Fatalf("%v", err)
	}
	if fi, err := os.Stat(filepath.Join(e.dir, tmpDir, sum(data)+partSuffix)); err != nil || fi.Size() != 100 {
		t.Errorf("partial file: %v", err)
	}
}

// TestPartialCollected: the partial download of an artifact that left the
// fleet goes after KeepUnused.
func TestPartialCollected(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, func(o *Options) { o.KeepUnused = time.Hour })
	part := filepath.Join(e.dir, tmpDir, strings.Repeat("c", 64)+partSuffix)
	os.WriteFile(part, []byte("half"), 0o644)
	old := e.clock.Now().Add(-2 * time.Hour)
	os.Chtimes(part, old, old)
	fail := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "down", 503) })
	e.serve.Store(&fail)
	fleet := &schema.Fleet{Artifacts: []schema.Artifact{manifest("app-1", e.srv.URL+"/a", withSHA(strings.Repeat("c", 64)))}}
	if err := e.cache.Sync(ctx, fleet); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(part); err != nil {
		t.Fatalf("partial of a fleet artifact removed: %v", err)
	}
	if err := e.cache.Sync(ctx, &schema.Fleet{}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(part); !os.IsNotExist(err) {
		t.Errorf("partial of a removed artifact kept: %v", err)
	}
}
