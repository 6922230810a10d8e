package deviceconfig_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"

	"filippo.io/age"
	"filippo.io/age/armor"

	"github.com/gitfleet/gitfleet/controller/deviceconfig"
	"github.com/gitfleet/gitfleet/controller/plan"
	"github.com/gitfleet/gitfleet/policies"
	"github.com/gitfleet/gitfleet/schema"
)

func indent(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return "        " + strings.Join(lines, "\n        ")
}

func fleetFS(files map[string]string) fstest.MapFS {
	fsys := fstest.MapFS{}
	for name, data := range files {
		fsys[name] = &fstest.MapFile{Data: []byte(data)}
	}
	return fsys
}

const devices = `apiVersion: gitfleet.io/v1
kind: Device
metadata: {name: devs}
spec:
  devices:
    - {name: d1, identity: {mac: "01"}, trustOnFirstUse: true}
    - {name: d2, identity: {mac: "02"}, trustOnFirstUse: true}
---
apiVersion: gitfleet.io/v1
kind: DeviceGroup
metadata: {name: lab}
spec: {members: [d1]}
`

func configYAML(ciphertext string) string {
	return `apiVersion: gitfleet.io/v1
kind: DeviceConfig
metadata: {name: wifi}
spec:
  target: {all: true}
  values: {ssid: field}
  secrets:
    wifi-pass: {file: wifi-pass}
---
apiVersion: gitfleet.io/v1
kind: DeviceConfig
metadata: {name: lab-api}
spec:
  target: {groups: [lab]}
  secrets:
    api-key:
      age: |
` + indent(ciphertext) + "\n"
}

// TestSecretsNeverLeak resolves secrets from a file and from age, then
// writes everything that may show a configuration (the plan in every
// format, fmt's verbs on the Set, its options and what they hold, slog
// through JSON and text handlers, encoding/json, compile errors) and
// looks for the secret values and the identity in all of it.
func TestSecretsNeverLeak(t *testing.T) {
	const (
		fileSecret   = "file-plaintext-7f3a9c"
		ageSecret    = "age-plaintext-91bc2e"
		ageSecretNew = "age-plaintext-new-44d0a1"
	)
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "wifi-pass"), []byte(fileSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	oldCipher := deviceconfig.Encrypt(t, id.Recipient(), ageSecret)
	newCipher := deviceconfig.Encrypt(t, id.Recipient(), ageSecretNew)
	base := fleetFS(map[string]string{"devices.yaml": devices, "configs.yaml": configYAML(oldCipher)})
	head := fleetFS(map[string]string{"devices.yaml": devices, "configs.yaml": configYAML(newCipher)})

	var out bytes.Buffer

	// The plan of the change, in every format.
	baseFleet, err := schema.Load(base)
	if err != nil {
		t.Fatal(err)
	}
	headFleet, report, err := policies.Validate(head)
	if err != nil || !report.OK() {
		t.Fatalf("head does not validate: %v %v", err, report)
	}
	p := plan.New(plan.Input{BaseFleet: baseFleet, HeadFleet: headFleet, Validation: report})
	for _, format := range plan.Formats() {
		var b bytes.Buffer
		if err := p.Write(&b, format); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(b.String(), "api-key (age, changed)") {
			t.Errorf("%s plan does not say the age secret changed:\n%s", format, b.String())
		}
		out.Write(b.Bytes())
	}

	// Compile, and check that the secrets did resolve: otherwise the
	// search below would prove nothing.
	opts := deviceconfig.Options{SecretsDir: dir, Identities: deviceconfig.Identities{id}}
	set, err := deviceconfig.Compile(headFleet, opts)
	if err != nil {
		t.Fatal(err)
	}
	values, _ := set.For("d1", nil, nil)
	if values["wifi-pass"] != fileSecret || values["api-key"] != ageSecretNew {
		t.Fatalf("secrets did not resolve: wifi-pass and api-key are %q and %q", values["wifi-pass"], values["api-key"])
	}
	redacted := set.Redact(values)
	if redacted["wifi-pass"] != deviceconfig.Redacted || redacted["api-key"] != deviceconfig.Redacted || redacted["ssid"] != "field" {
		t.Errorf("Redact = %v", redacted)
	}
	fmt.Fprintln(&out, redacted)

	// fmt, every verb, on everything that holds a value or a key.
	for _, v := range []any{set, *set, opts, &opts, opts.Identities, set.Configs()} {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%d"} {
			fmt.Fprintf(&out, verb+"\n", v)
		}
		fmt.Fprintln(&out, v)
	}
	// encoding/json
	for _, v := range []any{set, *set, opts.Identities, set.Configs()} {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatalf("json.Marshal(%T): %v", v, err)
		}
		out.Write(b)
	}
	// slog, through both handlers, as attributes and as messages.
	for _, h := range []slog.Handler{slog.NewJSONHandler(&out, nil), slog.NewTextHandler(&out, nil)} {
		log := slog.New(h)
		log.Info("compiled", "set", set, "options", opts, "identities", opts.Identities, "set_value", *set)
		log.Info(fmt.Sprint(set), slog.Any("configs", set.Configs()))
	}
	// Compile errors: a wrong identity, a missing directory.
	other, _ := age.GenerateX25519Identity()
	_, err = deviceconfig.Compile(headFleet, deviceconfig.Options{Identities: deviceconfig.Identities{other}})
	if err == nil {
		t.Fatal("Compile with the wrong identity succeeded")
	}
	fmt.Fprintln(&out, err)

	text := out.String()
	for what, s := range map[string]string{
		"the file secret":          fileSecret,
		"the age secret":           ageSecret,
		"the new age secret":       ageSecretNew,
		"the identity":             id.String(),
		"the other identity":       other.String(),
		"an identity (any)":        "AGE-SECRET-KEY-",
		"ciphertext (base64 line)": strings.Split(newCipher, "\n")[1],
		"ciphertext (armor)":       armor.Header,
	} {
		if strings.Contains(text, s) {
			i := strings.Index(text, s)
			t.Errorf("%s appears in the output, near: %q", what, text[max(0, i-80):min(len(text), i+len(s)+20)])
		}
	}
	if t.Failed() {
		return
	}
	// And something was written: the search looked at real output.
	for _, want := range []string{"secrets: api-key (age, changed)", "deviceconfig.Set{2 configs, 2 secret keys}", "1 age identities", deviceconfig.Redacted} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q", want)
		}
	}
}

// TestAgeCLI encrypts with the age command-line tool, as the docs tell
// operators to, and has the controller decrypt with the identity file
// age-keygen wrote.
func TestAgeCLI(t *testing.T) {
	for _, tool := range []string{"age", "age-keygen"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s not installed (Debian package age; scripts/test-deps installs it)", tool)
			}
			t.Skipf("%s not installed (Debian package age)", tool)
		}
	}
	dir := t.TempDir()
	key := filepath.Join(dir, "identity.txt")
	if out, err := exec.Command("age-keygen", "-o", key).CombinedOutput(); err != nil {
		t.Fatalf("age-keygen: %v\n%s", err, out)
	}
	recipient, err := exec.Command("age-keygen", "-y", key).Output()
	if err != nil {
		t.Fatalf("age-keygen -y: %v", err)
	}
	enc := exec.Command("age", "-a", "-r", strings.TrimSpace(string(recipient)))
	enc.Stdin = strings.NewReader("from the age CLI\n")
	ciphertext, err := enc.Output()
	if err != nil {
		t.Fatalf("age -a -r: %v", err)
	}
	fleet, err := schema.Load(fleetFS(map[string]string{"devices.yaml": devices, "configs.yaml": `apiVersion: gitfleet.io/v1
kind: DeviceConfig
metadata: {name: cli}
spec:
  target: {devices: [d2]}
  secrets:
    token:
      age: |
` + indent(string(ciphertext)) + "\n"}))
	if err != nil {
		t.Fatalf("a ciphertext of the age CLI does not validate: %v", err)
	}
	ids, err := deviceconfig.LoadIdentities(key) // age-keygen writes it 0600
	if err != nil {
		t.Fatal(err)
	}
	set, err := deviceconfig.Compile(fleet, deviceconfig.Options{Identities: ids})
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := set.For("d2", nil, nil); v["token"] != "from the age CLI" {
		t.Errorf("token = %q, want the value given to age (one trailing newline dropped)", v["token"])
	}
	if v, _ := set.For("d1", nil, nil); len(v) != 0 {
		t.Errorf("d1 got %v; the secret targets d2 only", v)
	}
}
