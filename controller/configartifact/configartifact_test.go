package configartifact

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/gitfleet/gitfleet/artifact"
	"github.com/gitfleet/gitfleet/device/devconfig"
	"github.com/google/go-cmp/cmp"
)

func testSigner(t *testing.T) *artifact.Signer {
	t.Helper()
	priv, _, err := artifact.GenerateKey(artifact.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	s, err := artifact.LoadSigner(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// read parses an artifact with package artifact's reader (verifying with
// v when given) and returns its header and every payload file name.
func read(t *testing.T, b []byte, v *artifact.Verifier) (*artifact.Header, []string) {
	t.Helper()
	var opts artifact.ReaderOptions
	if v != nil {
		opts.Verifiers = []*artifact.Verifier{v}
	}
	r, err := artifact.NewReader(bytes.NewReader(b), opts)
	if err != nil {
		t.Fatalf("read configuration artifact: %v", err)
	}
	var files []string
	for {
		f, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f.Name)
	}
	return r.Header(), files
}

func TestConfigureBuildFormat(t *testing.T) {
	values := map[string]string{"timezone": "Europe/Oslo", "html": "<a & b>", "empty": ""}
	digest := devconfig.Digest(values)
	b, err := Build(values, []string{"raspberrypi4"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	h, files := read(t, b, nil)
	name, _ := Name(digest)
	if !strings.HasPrefix(name, "configuration-") || len(name) != len("configuration-")+16 || !strings.HasPrefix(digest, "sha256:"+name[len("configuration-"):]) {
		t.Fatalf("name %q does not carry the digest %s", name, digest)
	}
	if h.Info.Provides.Name != name {
		t.Errorf("artifact_name %q, want %q", h.Info.Provides.Name, name)
	}
	if diff := cmp.Diff([]string{"raspberrypi4"}, h.Info.Depends.DeviceTypes); diff != "" {
		t.Errorf("device types (-want +got):\n%s", diff)
	}
	if len(h.Payloads) != 1 {
		t.Fatalf("%d payloads, want 1", len(h.Payloads))
	}
	p := h.Payloads[0]
	if p.Type != "mender-configure" {
		t.Errorf("payload type %q", p.Type)
	}
	if diff := cmp.Diff(map[string]string{ProvidesKey: name}, p.TypeInfo.Provides); diff != "" {
		t.Errorf("payload provides (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"data-partition.mender-configure.*"}, p.TypeInfo.ClearsProvides); diff != "" {
		t.Errorf("clears provides (-want +got):\n%s", diff)
	}
	got := map[string]string{}
	for k, v := range p.MetaData {
		s, ok := v.(string)
		if !ok {
			t.Fatalf("meta-data %s = %#v, not a string", k, v)
		}
		got[k] = s
	}
	if diff := cmp.Diff(values, got); diff != "" {
		t.Errorf("meta-data (-want +got):\n%s", diff)
	}
	if devconfig.Digest(got) != digest {
		t.Errorf("the meta-data's digest differs from the configuration's")
	}
	if len(files) != 0 {
		t.Errorf("payload files %v, want none", files)
	}

	// Deterministic when unsigned: one configuration, one artifact.
	again, err := Build(map[string]string{"empty": "", "html": "<a & b>", "timezone": "Europe/Oslo"}, []string{"raspberrypi4"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, again) {
		t.Error("two builds of one configuration differ")
	}
}

func TestConfigureBuildSigned(t *testing.T) {
	s := testSigner(t)
	b, err := Build(map[string]string{"k": "v"}, []string{"dt"}, s)
	if err != nil {
		t.Fatal(err)
	}
	read(t, b, s.Verifier()) // fails unless the signature verifies

	other := testSigner(t)
	if _, err := artifact.NewReader(bytes.NewReader(b), artifact.ReaderOptions{Verifiers: []*artifact.Verifier{other.Verifier()}}); !errors.Is(err, artifact.ErrSignature) {
		t.Errorf("verified with another key: err %v, want ErrSignature", err)
	}
	unsigned, err := Build(map[string]string{"k": "v"}, []string{"dt"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := artifact.NewReader(bytes.NewReader(unsigned), artifact.ReaderOptions{Verifiers: []*artifact.Verifier{s.Verifier()}}); err == nil {
		t.Error("an unsigned artifact passed a reader that requires a signature")
	}
}

func TestConfigureBuildErrors(t *testing.T) {
	many := map[string]string{}
	for i := range devconfig.MaxKeys + 1 {
		many[fmt.Sprintf("key%d", i)] = "v"
	}
	for _, tc := range []struct {
		name   string
		values map[string]string
		types  []string
		want   string
	}{
		{"no device type", map[string]string{"a": "b"}, nil, "at least one device type"},
		{"empty device type", map[string]string{"a": "b"}, []string{""}, "bad device type"},
		{"newline in device type", map[string]string{"a": "b"}, []string{"a\nb"}, "bad device type"},
		{"too many keys", many, []string{"dt"}, "configuration keys (at most"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Build(tc.values, tc.types, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
		})
	}
	for _, d := range []string{"", "sha256:", "md5:" + strings.Repeat("a", 64), "sha256:" + strings.Repeat("A", 64), "sha256:" + strings.Repeat("a", 63)} {
		if _, err := Name(d); !errors.Is(err, ErrDigest) {
			t.Errorf("Name(%q): err %v, want ErrDigest", d, err)
		}
	}
}

func TestConfigureInstalled(t *testing.T) {
	d := devconfig.Digest(map[string]string{"a": "1"})
	other := devconfig.Digest(map[string]string{"a": "2"})
	name, _ := Name(d)
	for _, tc := range []struct {
		name     string
		provides map[string]string
		want     bool
	}{
		{"provide", map[string]string{"artifact_name": "release-7", ProvidesKey: name}, true},
		{"provide of another configuration", map[string]string{"artifact_name": name, ProvidesKey: "configuration-0000000000000000"}, false},
		{"artifact name only (GET next)", map[string]string{"artifact_name": name, "device_type": "dt"}, true},
		{"nothing", map[string]string{"artifact_name": "factory"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Installed(tc.provides, d); got != tc.want {
				t.Errorf("Installed = %v, want %v", got, tc.want)
			}
		})
	}
	if Installed(map[string]string{ProvidesKey: name}, other) {
		t.Error("another digest counts as installed")
	}
	if Installed(map[string]string{ProvidesKey: name}, "bogus") {
		t.Error("a malformed digest counts as installed")
	}
}

func TestConfigureCache(t *testing.T) {
	s := testSigner(t)
	c := NewCache(2, s)
	if !c.Signed() {
		t.Error("Signed() false with a signer")
	}
	vals := func(v string) map[string]string { return map[string]string{"k": v} }
	a1, err := c.Get(vals("1"), devconfig.Digest(vals("1")), "dt")
	if err != nil {
		t.Fatal(err)
	}
	a2, err := c.Get(vals("1"), devconfig.Digest(vals("1")), "dt")
	if err != nil {
		t.Fatal(err)
	}
	// ECDSA signatures are randomized: equal bytes mean the cached copy.
	if !bytes.Equal(a1, a2) {
		t.Error("a second Get of the same key built the artifact again")
	}
	b, err := c.Get(vals("1"), devconfig.Digest(vals("1")), "other-type")
	if err != nil {
		t.Fatal(err)
	}
	if h, _ := read(t, b, s.Verifier()); h.Info.Depends.DeviceTypes[0] != "other-type" {
		t.Errorf("device types %v, want [other-type]", h.Info.Depends.DeviceTypes)
	}
	if _, err := c.Get(vals("2"), devconfig.Digest(vals("2")), "dt"); err != nil {
		t.Fatal(err)
	}
	if c.Len() != 2 {
		t.Errorf("Len %d, want the bound 2", c.Len())
	}
	if _, err := c.Get(vals("3"), devconfig.Digest(vals("1")), "dt3"); !errors.Is(err, ErrDigest) {
		t.Errorf("mismatched digest: err %v, want ErrDigest", err)
	}

	// Concurrent use (run with -race).
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			v := vals(string(rune('a' + i%3)))
			if _, err := c.Get(v, devconfig.Digest(v), "dt"); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
}

// TestConfigureMenderArtifactReads checks the artifact with the stock
// mender-artifact tool: it reads it, shows the configuration as the
// payload's meta-data, and verifies the signature with the public key.
func TestConfigureMenderArtifactReads(t *testing.T) {
	if _, err := exec.LookPath("mender-artifact"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("mender-artifact not installed")
		}
		t.Skip("mender-artifact not installed")
	}
	priv, pub, err := artifact.GenerateKey(artifact.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	s, err := artifact.LoadSigner(priv)
	if err != nil {
		t.Fatal(err)
	}
	values := map[string]string{"ntp_server": "pool.ntp.org", "wifi_ssid": "plant-3"}
	b, err := Build(values, []string{"gw"}, s)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "c.mender")
	pubPath := filepath.Join(dir, "key.pub")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pubPath, pub, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("mender-artifact", "read", "-k", pubPath, path).CombinedOutput()
	if err != nil {
		t.Fatalf("mender-artifact read: %v\n%s", err, out)
	}
	name, _ := Name(devconfig.Digest(values))
	for _, want := range []string{
		"Name: " + name,
		"Signature: signed and verified correctly",
		"Compatible devices: '[gw]'",
		"Type:   mender-configure",
		ProvidesKey + ": " + name,
		`"wifi_ssid": "plant-3"`,
		`"ntp_server": "pool.ntp.org"`,
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("mender-artifact read does not show %q:\n%s", want, out)
		}
	}
}

// BenchmarkConfigureBuild: generating one signed configuration artifact
// of 20 keys (a cache miss), and serving it from the cache.
func BenchmarkConfigureBuild(b *testing.B) {
	priv, _, _ := artifact.GenerateKey(artifact.ECDSAP256)
	s, _ := artifact.LoadSigner(priv)
	values := map[string]string{}
	for i := range 20 {
		values[fmt.Sprintf("key_%02d", i)] = strings.Repeat("v", 24)
	}
	digest := devconfig.Digest(values)
	b.Run("build-signed", func(b *testing.B) {
		for b.Loop() {
			if _, err := Build(values, []string{"dt"}, s); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("cached", func(b *testing.B) {
		c := NewCache(0, s)
		for b.Loop() {
			if _, err := c.Get(values, digest, "dt"); err != nil {
				b.Fatal(err)
			}
		}
	})
}
