package deviceconfig

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/fstest"

	"filippo.io/age"
	"filippo.io/age/armor"
	"github.com/google/go-cmp/cmp"

	"github.com/gitfleet/gitfleet/device/devconfig"
	"github.com/gitfleet/gitfleet/schema"
)

// load validates a fleet of YAML files as the controller does.
func load(t *testing.T, files map[string]string) *schema.Fleet {
	t.Helper()
	fsys := fstest.MapFS{}
	for name, data := range files {
		fsys[name] = &fstest.MapFile{Data: []byte(data)}
	}
	fleet, err := schema.Load(fsys)
	if err != nil {
		t.Fatalf("fleet does not validate:\n%v", err)
	}
	return fleet
}

func compile(t *testing.T, fleet *schema.Fleet, opts Options) *Set {
	t.Helper()
	s, err := Compile(fleet, opts)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	return s
}

// encrypt returns the armored age ciphertext of msg to r, as
// `age -a -r RECIPIENT` writes it.
func encrypt(t *testing.T, r age.Recipient, msg string) string {
	t.Helper()
	var b strings.Builder
	a := armor.NewWriter(&b)
	w, err := age.Encrypt(a, r)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(w, msg); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// indent indents a block for a YAML literal.
func indent(s, prefix string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return prefix + strings.Join(lines, "\n"+prefix)
}

const devicesYAML = `apiVersion: gitfleet.io/v1
kind: Device
metadata: {name: devs}
spec:
  devices:
    - {name: d1, identity: {mac: "01"}, trustOnFirstUse: true}
    - {name: d2, identity: {mac: "02"}, trustOnFirstUse: true}
    - {name: d3, identity: {mac: "03"}, trustOnFirstUse: true}
    - {name: d4, identity: {mac: "04"}, trustOnFirstUse: true}
---
apiVersion: gitfleet.io/v1
kind: DeviceGroup
metadata: {name: lab}
spec: {members: [d1, d2]}
---
apiVersion: gitfleet.io/v1
kind: DeviceGroup
metadata: {name: cameras}
spec:
  selector: {inventory: {device_type: camera}}
`

const precedenceYAML = `apiVersion: gitfleet.io/v1
kind: DeviceConfig
metadata: {name: fleet}
spec:
  target: {all: true}
  values: {level: info, ntp: pool.ntp.org, mode: fleet, wifi-pass: open, fps: "10"}
---
apiVersion: gitfleet.io/v1
kind: DeviceConfig
metadata: {name: lab}
spec:
  target: {groups: [lab]}
  values: {level: debug, mode: lab}
---
apiVersion: gitfleet.io/v1
kind: DeviceConfig
metadata: {name: cameras}
spec:
  target: {groups: [cameras]}
  values: {fps: "30"}
---
apiVersion: gitfleet.io/v1
kind: DeviceConfig
metadata: {name: d1}
spec:
  target: {devices: [d1]}
  values: {mode: bench}
  secrets:
    wifi-pass: {file: wifi-pass}
`

func TestPrecedence(t *testing.T) {
	fleet := load(t, map[string]string{"devices.yaml": devicesYAML, "configs.yaml": precedenceYAML})
	s := compile(t, fleet, Options{ReadFile: func(name string) ([]byte, error) {
		if name == "wifi-pass" {
			return []byte("hunter2\n"), nil
		}
		return nil, os.ErrNotExist
	}})
	camera := map[string]string{"device_type": "camera"}
	tests := []struct {
		name      string
		device    string
		inventory map[string]string
		want      map[string]string
	}{
		{"fleet only", "d4", nil,
			map[string]string{"level": "info", "ntp": "pool.ntp.org", "mode": "fleet", "wifi-pass": "open", "fps": "10"}},
		{"static group over fleet", "d2", nil,
			map[string]string{"level": "debug", "ntp": "pool.ntp.org", "mode": "lab", "wifi-pass": "open", "fps": "10"}},
		{"selector group over fleet", "d3", camera,
			map[string]string{"level": "info", "ntp": "pool.ntp.org", "mode": "fleet", "wifi-pass": "open", "fps": "30"}},
		{"device over groups, a secret over a value", "d1", camera,
			map[string]string{"level": "debug", "ntp": "pool.ntp.org", "mode": "bench", "wifi-pass": "hunter2", "fps": "30"}},
		{"an undeclared device gets the fleet", "nobody", nil,
			map[string]string{"level": "info", "ntp": "pool.ntp.org", "mode": "fleet", "wifi-pass": "open", "fps": "10"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, digest := s.For(tc.device, map[string]string{"mac": "x"}, tc.inventory)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("For(%s) (-want +got):\n%s", tc.device, diff)
			}
			if want := devconfig.Digest(tc.want); digest != want {
				t.Errorf("digest %s, want %s", digest, want)
			}
		})
	}
	if !s.NeedsInventory() {
		t.Error("NeedsInventory false with a group selecting on inventory")
	}
	if !s.Secret("wifi-pass") || s.Secret("level") {
		t.Error("Secret: wifi-pass should be, level should not be")
	}
	got := s.Redact(map[string]string{"wifi-pass": "hunter2", "level": "debug"})
	if diff := cmp.Diff(map[string]string{"wifi-pass": Redacted, "level": "debug"}, got); diff != "" {
		t.Errorf("Redact (-want +got):\n%s", diff)
	}
}

func TestEmptyConfiguration(t *testing.T) {
	for _, s := range []*Set{nil, compile(t, &schema.Fleet{}, Options{})} {
		v, digest := s.For("d1", nil, nil)
		if len(v) != 0 || digest != devconfig.Digest(map[string]string{}) {
			t.Errorf("no DeviceConfig: got %v %s, want the empty configuration", v, digest)
		}
	}
}

func TestSelectorOnIdentity(t *testing.T) {
	fleet := load(t, map[string]string{"devices.yaml": devicesYAML, "configs.yaml": `apiVersion: gitfleet.io/v1
kind: DeviceGroup
metadata: {name: odd}
spec: {members: [d2], selector: {identity: {mac: {in: ["01", "03"]}}}}
---
apiVersion: gitfleet.io/v1
kind: DeviceConfig
metadata: {name: odd}
spec: {target: {groups: [odd]}, values: {odd: "yes"}}
`})
	s := compile(t, fleet, Options{})
	if s.NeedsInventory() {
		t.Error("NeedsInventory true with selectors on identity only")
	}
	for _, tc := range []struct {
		device, mac string
		want        bool
	}{{"d1", "01", true}, {"d2", "02", true}, {"d3", "03", true}, {"d4", "04", false}} {
		got, _ := s.For(tc.device, map[string]string{"mac": tc.mac}, nil)
		if (got["odd"] == "yes") != tc.want {
			t.Errorf("%s (mac %s): %v, want odd=%v", tc.device, tc.mac, got, tc.want)
		}
		if c := s.Covers("odd", tc.device, map[string]string{"mac": tc.mac}, nil); c != tc.want {
			t.Errorf("Covers(odd, %s) = %v, want %v", tc.device, c, tc.want)
		}
	}
	if got := s.DevicesOf("odd"); !cmp.Equal(got, []string{"d2"}) {
		t.Errorf("DevicesOf(odd) = %v, want the static member d2", got)
	}
}

// TestWithinLevelByName builds a fleet validate would refuse (two fleet
// configs setting one key differently): the result must not depend on
// manifest order, and the name sorting last wins, as documented.
func TestWithinLevelByName(t *testing.T) {
	cfg := func(name, v string) schema.DeviceConfig {
		return schema.DeviceConfig{Meta: schema.Meta{Name: name, Kind: schema.KindDeviceConfig},
			Spec: schema.DeviceConfigSpec{Target: schema.Target{All: true}, Values: schema.Values{"k": v, name: "set"}}}
	}
	want := map[string]string{"k": "from-b", "a": "set", "b": "set", "c": "set"}
	for _, order := range [][]string{{"a", "b", "c"}, {"c", "b", "a"}, {"b", "c", "a"}} {
		f := &schema.Fleet{}
		for _, n := range order {
			v := "from-" + n
			if n == "c" {
				f.Configs = append(f.Configs, schema.DeviceConfig{Meta: schema.Meta{Name: "c"},
					Spec: schema.DeviceConfigSpec{Target: schema.Target{All: true}, Values: schema.Values{"c": "set"}}})
				continue
			}
			f.Configs = append(f.Configs, cfg(n, v))
		}
		got, _ := compile(t, f, Options{}).For("d", nil, nil)
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("order %v (-want +got):\n%s", order, diff)
		}
	}
}

func TestCacheOneMergePerConfiguration(t *testing.T) {
	var b strings.Builder
	b.WriteString("apiVersion: gitfleet.io/v1\nkind: Device\nmetadata: {name: many}\nspec:\n  devices:\n")
	var members []string
	for i := range 10000 {
		fmt.Fprintf(&b, "    - {name: dev-%d, identity: {mac: \"%d\"}, trustOnFirstUse: true}\n", i, i)
		if i%2 == 0 {
			members = append(members, fmt.Sprintf("dev-%d", i))
		}
	}
	fleet := load(t, map[string]string{"devices.yaml": b.String(), "configs.yaml": `apiVersion: gitfleet.io/v1
kind: DeviceGroup
metadata: {name: even}
spec: {members: [` + strings.Join(members, ", ") + `]}
---
apiVersion: gitfleet.io/v1
kind: DeviceConfig
metadata: {name: fleet}
spec: {target: {all: true}, values: {a: "1"}}
---
apiVersion: gitfleet.io/v1
kind: DeviceConfig
metadata: {name: even}
spec: {target: {groups: [even]}, values: {b: "2"}}
---
apiVersion: gitfleet.io/v1
kind: DeviceConfig
metadata: {name: dev-7}
spec: {target: {devices: [dev-7]}, values: {c: "3"}}
`})
	s := compile(t, fleet, Options{})
	var wg sync.WaitGroup
	digests := make([]string, 10000)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < 10000; i += 4 {
				_, digests[i] = s.For(fmt.Sprintf("dev-%d", i), nil, nil)
			}
		}()
	}
	wg.Wait()
	// Three configurations: the fleet's (odd devices), the even group's,
	// and dev-7's own. Concurrent first calls may each merge, but at
	// most once per worker.
	if n := s.cache.merges.Load(); n < 3 || n > 3*4 {
		t.Errorf("%d merges for 10,000 devices of 3 configurations", n)
	}
	before := s.cache.merges.Load()
	for i := range 10000 {
		s.For(fmt.Sprintf("dev-%d", i), nil, nil)
	}
	if n := s.cache.merges.Load() - before; n != 0 {
		t.Errorf("%d merges on the second round, want 0 (cached)", n)
	}
	distinct := map[string]bool{}
	for _, d := range digests {
		distinct[d] = true
	}
	if len(distinct) != 3 {
		t.Errorf("%d distinct digests, want 3", len(distinct))
	}
	// The map For returns is the caller's: changing it changes nothing.
	v, d := s.For("dev-0", nil, nil)
	v["b"] = "changed"
	if v2, d2 := s.For("dev-0", nil, nil); v2["b"] != "2" || d2 != d {
		t.Errorf("a caller's change leaked into the cache: %v", v2)
	}
	if got := s.DevicesOf("even"); len(got) != 5000 {
		t.Errorf("DevicesOf(even): %d devices, want 5000", len(got))
	}
	if got := s.DevicesOf("fleet"); len(got) != 10000 {
		t.Errorf("DevicesOf(fleet): %d devices, want 10000", len(got))
	}
}

func TestSecretFromFile(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "wifi-pass"), []byte("correct horse\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "crlf"), []byte("line\r\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "exact"), []byte("two\n\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fleet := load(t, map[string]string{"devices.yaml": devicesYAML, "c.yaml": `apiVersion: gitfleet.io/v1
kind: DeviceConfig
metadata: {name: wifi}
spec:
  target: {all: true}
  secrets: {wifi-pass: {file: wifi-pass}, crlf: {file: crlf}, exact: {file: exact}}
`})
	got, _ := compile(t, fleet, Options{SecretsDir: dir}).For("d1", nil, nil)
	want := map[string]string{"wifi-pass": "correct horse", "crlf": "line", "exact": "two\n"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestSecretFromAge(t *testing.T) {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	other, _ := age.GenerateX25519Identity()
	fleet := load(t, map[string]string{"devices.yaml": devicesYAML, "c.yaml": `apiVersion: gitfleet.io/v1
kind: DeviceConfig
metadata: {name: api}
spec:
  target: {groups: [lab]}
  secrets:
    api-key:
      age: |
` + indent(encrypt(t, id.Recipient(), "sk-12345\n"), "        ") + `
`})
	got, _ := compile(t, fleet, Options{Identities: Identities{other, id}}).For("d1", nil, nil)
	if diff := cmp.Diff(map[string]string{"api-key": "sk-12345"}, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestUnresolvableSecrets(t *testing.T) {
	id, _ := age.GenerateX25519Identity()
	wrong, _ := age.GenerateX25519Identity()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "binary"), []byte{0xff, 0xfe, 0}, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "big"), make([]byte, MaxSecret+10), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "adir"), 0o700); err != nil {
		t.Fatal(err)
	}
	outside := filepath.Join(t.TempDir(), "outside")
	if err := os.WriteFile(outside, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(dir, "escape")); err != nil {
		t.Fatal(err)
	}
	fleet := load(t, map[string]string{"devices.yaml": devicesYAML, "c.yaml": `apiVersion: gitfleet.io/v1
kind: DeviceConfig
metadata: {name: wifi}
spec:
  target: {all: true}
  secrets:
    wifi-pass: {file: wifi-pass}
    blob: {file: binary}
    big: {file: big}
    adir: {file: adir}
    escape: {file: escape}
---
apiVersion: gitfleet.io/v1
kind: DeviceConfig
metadata: {name: api}
spec:
  target: {devices: [d1]}
  secrets:
    api-key:
      age: |
` + indent(encrypt(t, wrong.Recipient(), "sk-1"), "        ") + `
`})
	_, err := Compile(fleet, Options{SecretsDir: dir, Identities: Identities{id}})
	var errs schema.Errors
	if !errors.As(err, &errs) {
		t.Fatalf("Compile: %v, want schema.Errors", err)
	}
	want := []string{
		`c.yaml:7:16: spec.secrets.wifi-pass: DeviceConfig "wifi", secret "wifi-pass": no file wifi-pass in --config-secrets-dir ` + dir + `: create it, holding the value`,
		`c.yaml:8:11: spec.secrets.blob: DeviceConfig "wifi", secret "blob": file binary is not UTF-8 text (devices receive a JSON string): base64-encode binary values`,
		`c.yaml:9:10: spec.secrets.big: DeviceConfig "wifi", secret "big": file big is larger than 65536 bytes`,
		`c.yaml:10:11: spec.secrets.adir: DeviceConfig "wifi", secret "adir": read adir in --config-secrets-dir ` + dir + `: not a regular file`,
		`c.yaml:11:13: spec.secrets.escape: DeviceConfig "wifi", secret "escape": read escape in --config-secrets-dir ` + dir + `: path escapes from parent`,
		`c.yaml:20:7: spec.secrets.api-key: DeviceConfig "api", secret "api-key": cannot decrypt: no identity matches: the value was encrypted to another recipient; encrypt it again with age -a -r ` + id.Recipient().String(),
	}
	var got []string
	for _, e := range errs {
		got = append(got, e.Error())
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("errors (-want +got):\n%s", diff)
	}

	// Without a secrets directory or an identity, the errors say which
	// flag is missing.
	_, err = Compile(fleet, Options{})
	for _, want := range []string{
		`secret "wifi-pass": the controller has no secrets directory: start gitfleet serve with --config-secrets-dir DIR and put the file wifi-pass in DIR`,
		`secret "api-key": cannot decrypt: the controller has no age identity: start gitfleet serve with --config-age-identity FILE`,
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Compile without options: %v\nwant it to contain %q", err, want)
		}
	}
}

func TestLoadIdentities(t *testing.T) {
	id, _ := age.GenerateX25519Identity()
	dir := t.TempDir()
	good := filepath.Join(dir, "key.txt")
	content := "# created: today\n# public key: " + id.Recipient().String() + "\n" + id.String() + "\n"
	if err := os.WriteFile(good, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	ids, err := LoadIdentities(good)
	if err != nil {
		t.Fatal(err)
	}
	if got := ids.Recipients(); !cmp.Equal(got, []string{id.Recipient().String()}) {
		t.Errorf("Recipients = %v", got)
	}

	open := filepath.Join(dir, "open.txt")
	if err := os.WriteFile(open, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o644); err != nil { // past the umask
		t.Fatal(err)
	}
	_, err = LoadIdentities(open)
	if err == nil || !strings.Contains(err.Error(), "accessible by others (mode 0644): it is a private key; chmod 600 "+open) {
		t.Errorf("group/world-readable identity: %v", err)
	}

	bad := filepath.Join(dir, "bad.txt")
	if err := os.WriteFile(bad, []byte("AGE-SECRET-KEY-1NOTAKEY-"+strings.Repeat("Q", 20)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = LoadIdentities(bad)
	if err == nil || strings.Contains(err.Error(), "NOTAKEY") {
		t.Errorf("malformed identity: %v (must fail without quoting the key)", err)
	}
	if _, err := LoadIdentities(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing identity file: %v", err)
	}
}

func TestConfigs(t *testing.T) {
	fleet := load(t, map[string]string{"devices.yaml": devicesYAML, "configs.yaml": precedenceYAML})
	s := compile(t, fleet, Options{ReadFile: func(string) ([]byte, error) { return []byte("x"), nil }})
	var names []string
	for _, c := range s.Configs() {
		names = append(names, fmt.Sprintf("%s:%s:%v", c.Level, c.Name, c.Selectors))
	}
	want := []string{"fleet:fleet:false", "group:cameras:true", "group:lab:false", "device:d1:false"}
	if diff := cmp.Diff(want, names); diff != "" {
		t.Errorf("Configs (-want +got):\n%s", diff)
	}
	d1, ok := s.Config("d1")
	if !ok || !cmp.Equal(d1.Values, []string{"mode"}) || !cmp.Equal(d1.Secrets, []string{"wifi-pass"}) || !cmp.Equal(d1.Devices, []string{"d1"}) {
		t.Errorf("Config(d1) = %+v, %v", d1, ok)
	}
	for _, tc := range []struct {
		cfg, device string
		inventory   map[string]string
		want        bool
	}{
		{"fleet", "d4", nil, true},
		{"lab", "d1", nil, true},
		{"lab", "d3", nil, false},
		{"cameras", "d3", map[string]string{"device_type": "camera"}, true},
		{"cameras", "d3", map[string]string{"device_type": "gateway"}, false},
		{"d1", "d1", nil, true},
		{"d1", "d2", nil, false},
		{"nope", "d1", nil, false},
	} {
		if got := s.Covers(tc.cfg, tc.device, nil, tc.inventory); got != tc.want {
			t.Errorf("Covers(%s, %s, %v) = %v", tc.cfg, tc.device, tc.inventory, got)
		}
	}
	if got := s.DevicesOf("lab"); !cmp.Equal(got, []string{"d1", "d2"}) {
		t.Errorf("DevicesOf(lab) = %v", got)
	}
	if got := s.DevicesOf("fleet"); !cmp.Equal(got, []string{"d1", "d2", "d3", "d4"}) {
		t.Errorf("DevicesOf(fleet) = %v", got)
	}
	if got := s.DevicesOf("cameras"); len(got) != 0 {
		t.Errorf("DevicesOf(cameras) = %v, want none (selector only)", got)
	}
}
