package reconcile

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gitfleet/gitfleet/controller/deviceconfig"
)

const wifiConfigYAML = `apiVersion: gitfleet.io/v1
kind: DeviceConfig
metadata: {name: wifi}
spec:
  target: {groups: [all]}
  values: {ssid: field}
  secrets:
    wifi-pass: {file: %s}
`

// TestUnresolvableSecretRefusesTheCommit: a commit whose secrets the
// controller cannot resolve never goes live (devices would get half a
// configuration); the refusal names the manifest, key and fix; the next
// commit whose secrets resolve goes live with its configuration. Neither
// the events nor the log hold the value.
func TestUnresolvableSecretRefusesTheCommit(t *testing.T) {
	const secret = "wifi-plaintext-0c9e71"
	ctx := context.Background()
	st := openStore(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "wifi-pass"), []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	r := New(Options{Store: st, History: linear{"c1", "c2", "c3"}, Branch: "main",
		Logger:       slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		DeviceConfig: deviceconfig.Options{SecretsDir: dir}})

	files := func(secretFile string) map[string]string {
		f := fleetFiles(digestA, 1)
		f["config.yaml"] = fmt.Sprintf(wifiConfigYAML, secretFile)
		return f
	}
	res, err := r.Apply(ctx, rev("c1", fleetFiles(digestA, 1)))
	if err != nil || res.Outcome != Applied {
		t.Fatalf("c1: %+v %v", res, err)
	}
	if c := r.Live().Config; c == nil || len(c.Configs()) != 0 {
		t.Fatalf("c1 (no DeviceConfig) has Config %v, want an empty Set", c)
	}

	res, err = r.Apply(ctx, rev("c2", files("wifi-password")))
	if err != nil || res.Outcome != Refused {
		t.Fatalf("c2: %+v %v, want refused", res, err)
	}
	want := `config.yaml:8:16: spec.secrets.wifi-pass: DeviceConfig "wifi", secret "wifi-pass": no file wifi-password in --config-secrets-dir ` + dir + `: create it, holding the value`
	if len(res.Errors) != 1 || res.Errors[0] != want {
		t.Fatalf("c2 errors:\n%s\nwant:\n%s", strings.Join(res.Errors, "\n"), want)
	}
	if r.Live().Commit.SHA != "c1" {
		t.Fatalf("serving %s after a refused commit, want c1", r.Live().Commit.SHA)
	}
	ref, err := st.LastRefused(ctx)
	if err != nil || ref.SHA != "c2" || len(ref.Errors) != 1 || ref.Errors[0] != want {
		t.Fatalf("last refused: %+v %v", ref, err)
	}

	res, err = r.Apply(ctx, rev("c3", files("wifi-pass")))
	if err != nil || res.Outcome != Applied {
		t.Fatalf("c3: %+v %v", res, err)
	}
	snap := r.Live()
	values, digest := snap.Config.For("dev-1", nil, nil)
	if values["wifi-pass"] != secret || values["ssid"] != "field" || digest == "" {
		t.Fatalf("c3 configuration of dev-1: %v %s", values, digest)
	}
	if v, _ := snap.Config.For("dev-3", nil, nil); len(v) != 0 {
		t.Fatalf("dev-3 is not in group all but gets %v", v)
	}

	evs, err := st.Events(ctx, "", 100)
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	var all strings.Builder
	for _, e := range evs {
		kinds = append(kinds, e.Kind+" "+e.Commit)
		fmt.Fprintf(&all, "%+v\n", e)
	}
	if got := strings.Join(kinds, ","); !strings.Contains(got, "commit.refused c2") || !strings.Contains(got, "commit.live c3") {
		t.Errorf("events: %s", got)
	}
	fmt.Fprintf(&all, "%+v %#v %v\n", snap, snap, *snap)
	all.Write(logs.Bytes())
	if strings.Contains(all.String(), secret) {
		t.Errorf("the secret value is in the events, log or snapshot print:\n%s", all.String())
	}
}
