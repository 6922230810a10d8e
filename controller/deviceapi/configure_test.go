package deviceapi

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/artifact"
	"github.com/gitfleet/gitfleet/controller/configartifact"
	"github.com/gitfleet/gitfleet/controller/reconcile"
	"github.com/gitfleet/gitfleet/controller/rollout"
	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gitfleet/gitfleet/device/devconfig"
	"github.com/gitfleet/gitfleet/schema"
)

// configureEnv is deploymentEnv (dev-1 of type qemux86-64, dev-2 of any
// type, a fake plan that routes everyone to gen1) serving configuration
// to stock clients, signed with a key a SigningKey "config" declares.
// No rollout targets anyone until the test sets e.plan.route.
type configureEnv struct {
	*env
	d1, d2 *testDevice
	src    *fakeConfig
	signer *artifact.Signer
}

func newConfigureEnv(t *testing.T) *configureEnv {
	t.Helper()
	e, d1, d2 := deploymentEnv(t, 10)
	e.plan.route = nil
	priv, pub, err := artifact.GenerateKey(artifact.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := artifact.LoadSigner(priv)
	if err != nil {
		t.Fatal(err)
	}
	key := schema.SigningKey{Spec: schema.SigningKeySpec{Algorithm: schema.AlgorithmECDSAP256, PublicKey: string(pub)}}
	key.Name, key.Kind, key.APIVersion = "config", "SigningKey", "gitfleet.io/v1"
	snap := e.snap.Load()
	snap.Fleet.Keys = []schema.SigningKey{key}
	src := &fakeConfig{values: map[string]map[string]string{
		"dev-1": {"ntp_server": "pool.ntp.org", "wifi_psk": "hunter2-very-secret"},
		"dev-2": {"ntp_server": "time.example.com"},
	}}
	e.api.opts.Config = func(*reconcile.Snapshot) ConfigSource { return src }
	cf, err := NewConfigure(ConfigureOptions{Artifacts: configartifact.NewCache(0, signer), KeyName: "config"})
	if err != nil {
		t.Fatal(err)
	}
	e.api.opts.Configure = cf
	ce := &configureEnv{env: e, d1: d1, d2: d2, src: src, signer: signer}
	ce.inventory(d1, map[string]any{"update_modules": []string{"single-file", "mender-configure"}, "artifact_name": "factory"})
	return ce
}

// inventory PUTs the device's inventory attributes.
func (e *configureEnv) inventory(d *testDevice, attrs map[string]any) {
	e.t.Helper()
	var list []map[string]any
	for k, v := range attrs {
		list = append(list, map[string]any{"name": k, "value": v})
	}
	b, _ := json.Marshal(list)
	if code, resp, _ := e.do(http.MethodPut, inventoryPath, d.token, b, nil); code != http.StatusOK {
		e.t.Fatalf("inventory: %d %s", code, resp)
	}
}

// poll asks deployments/next (v2) with these provides besides
// artifact_name and device_type.
func (e *configureEnv) poll(d *testDevice, artifactName, deviceType string, provides map[string]string) (int, NextResponse) {
	e.t.Helper()
	p := map[string]string{"artifact_name": artifactName, "device_type": deviceType}
	for k, v := range provides {
		p[k] = v
	}
	b, _ := json.Marshal(map[string]any{"device_provides": p, "update_control_map": true})
	code, resp, _ := e.do(http.MethodPost, nextV2, d.token, b, nil)
	var next NextResponse
	if code == http.StatusOK {
		if err := json.Unmarshal(resp, &next); err != nil {
			e.t.Fatal(err)
		}
	} else if code != http.StatusNoContent {
		e.t.Fatalf("deployments/next: %d %s", code, resp)
	}
	return code, next
}

// download GETs a presigned URL from the test server (the URL's host is
// the public one).
func (e *configureEnv) download(uri string, hdr map[string]string) (int, []byte, http.Header) {
	e.t.Helper()
	u, err := url.Parse(uri)
	if err != nil {
		e.t.Fatal(err)
	}
	if u.Scheme != "https" || u.Host != "gitfleet.test" || !strings.HasPrefix(u.Path, ConfigDownloadPath) {
		e.t.Fatalf("download URL %s", uri)
	}
	return e.do(http.MethodGet, u.RequestURI(), "", nil, hdr)
}

func (e *configureEnv) report(d *testDevice, id, status string) int {
	e.t.Helper()
	code, _, _ := e.do(http.MethodPut, statusPath(id), d.token, []byte(`{"status":"`+status+`"}`), nil)
	return code
}

func (e *configureEnv) status(name string) store.ConfigStatus {
	e.t.Helper()
	m, err := e.store.ConfigStatusOf(ctx(), []string{name})
	if err != nil {
		e.t.Fatal(err)
	}
	return m[name]
}

// A stock client with mender-configure gets its configuration as a
// deployment: a signed mender-configure artifact named after the digest,
// for its device type, downloaded through a presigned URL; success makes
// it applied; then its provides say it runs it, and nothing more is
// offered.
func TestConfigureOfferedDownloadedApplied(t *testing.T) {
	e := newConfigureEnv(t)
	want := e.src.values["dev-1"]
	digest := devconfig.Digest(want)
	name, _ := configartifact.Name(digest)

	code, next := e.poll(e.d1, "factory", "qemux86-64", nil)
	if code != http.StatusOK {
		t.Fatalf("poll: %d, want the configuration deployment", code)
	}
	if next.ID != "config-"+strings.TrimPrefix(digest, "sha256:") || next.Artifact.ArtifactName != name ||
		len(next.Artifact.DeviceTypesCompatible) != 1 || next.Artifact.DeviceTypesCompatible[0] != "qemux86-64" {
		t.Fatalf("deployment %+v", next)
	}
	if exp, err := time.Parse(time.RFC3339, next.Artifact.Source.Expire); err != nil || !exp.After(e.clock.Now()) {
		t.Fatalf("expire %q", next.Artifact.Source.Expire)
	}
	code, art, h := e.download(next.Artifact.Source.URI, nil)
	if code != http.StatusOK || h.Get("Content-Length") == "" {
		t.Fatalf("download: %d %s", code, art)
	}
	r, err := artifact.NewReader(bytes.NewReader(art), artifact.ReaderOptions{Verifiers: []*artifact.Verifier{e.signer.Verifier()}})
	if err != nil {
		t.Fatalf("the artifact does not verify with the configuration key: %v", err)
	}
	hd := r.Header()
	if hd.Info.Provides.Name != name || hd.Payloads[0].Type != "mender-configure" || hd.Payloads[0].MetaData["wifi_psk"] != "hunter2-very-secret" ||
		hd.Info.Depends.DeviceTypes[0] != "qemux86-64" {
		t.Fatalf("artifact header %+v", hd)
	}
	// Range, as a client resuming a download asks.
	code, part, _ := e.download(next.Artifact.Source.URI, map[string]string{"Range": "bytes=100-"})
	if code != http.StatusPartialContent || !bytes.Equal(part, art[100:]) {
		t.Fatalf("range: %d, %d bytes", code, len(part))
	}

	// The client reports progress, then success: applied, via mender.
	for _, s := range []string{"downloading", "installing"} {
		if code := e.report(e.d1, next.ID, s); code != http.StatusNoContent {
			t.Fatalf("status %s: %d", s, code)
		}
	}
	if st := e.status("dev-1"); st.State != "" {
		t.Fatalf("progress recorded a status: %+v", st)
	}
	if code := e.report(e.d1, next.ID, "success"); code != http.StatusNoContent {
		t.Fatalf("status success: %d", code)
	}
	if st := e.status("dev-1"); st.State != devconfig.Applied || st.Digest != digest || st.Via != "mender" {
		t.Fatalf("status after success %+v", st)
	}
	// No rollout progress was touched.
	if p, _ := e.store.Progress(ctx(), gen1); len(p.Phases) != 0 {
		t.Fatalf("a configuration deployment counted in a rollout: %+v", p)
	}
	// Its provides now show the configuration: nothing more to do.
	if code, _ := e.poll(e.d1, name, "qemux86-64", map[string]string{configartifact.ProvidesKey: name}); code != http.StatusNoContent {
		t.Fatalf("poll after install: %d", code)
	}

	// Git changes the configuration: a new deployment, with a new name.
	e.src.values["dev-1"] = map[string]string{"ntp_server": "ntp.example.com"}
	code, next2 := e.poll(e.d1, name, "qemux86-64", map[string]string{configartifact.ProvidesKey: name})
	if code != http.StatusOK || next2.ID == next.ID || next2.Artifact.ArtifactName == name {
		t.Fatalf("after a change in Git: %d %+v", code, next2)
	}
}

// Who gets no configuration deployment.
func TestConfigureNotOffered(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(e *configureEnv)
		dev   func(e *configureEnv) *testDevice
	}{
		{"gitfleet-agent", func(e *configureEnv) {
			e.inventory(e.d1, map[string]any{"gitfleet_agent_version": "1.0", "update_modules": "mender-configure"})
		}, nil},
		{"stock client without mender-configure", func(e *configureEnv) {
			e.inventory(e.d1, map[string]any{"update_modules": []string{"single-file", "script"}})
		}, nil},
		{"stock client that reports no modules", func(*configureEnv) {}, func(e *configureEnv) *testDevice { return e.d2 }},
		{"no configuration in Git", func(e *configureEnv) { delete(e.src.values, "dev-1") }, nil},
		{"the signing key is not declared in Git", func(e *configureEnv) { e.snap.Load().Fleet.Keys = nil }, nil},
		{"another key under the SigningKey's name", func(e *configureEnv) {
			_, pub, _ := artifact.GenerateKey(artifact.ECDSAP256)
			e.snap.Load().Fleet.Keys[0].Spec.PublicKey = string(pub)
		}, nil},
		{"it failed with this configuration", func(e *configureEnv) {
			if _, err := e.store.SetConfigStatus(ctx(), store.ConfigStatus{Device: "dev-1", Digest: devconfig.Digest(e.src.values["dev-1"]),
				State: devconfig.Failed, Via: "mender", Reported: e.clock.Now()}); err != nil {
				t.Fatal(err)
			}
		}, nil},
		{"it reported this configuration", func(e *configureEnv) {
			if _, err := e.store.SetConfigStatus(ctx(), store.ConfigStatus{Device: "dev-1", Digest: devconfig.Digest(e.src.values["dev-1"]),
				State: devconfig.Applied, Via: "mender", Reported: e.clock.Now()}); err != nil {
				t.Fatal(err)
			}
		}, nil},
		{"not served", func(e *configureEnv) { e.api.opts.Configure = nil }, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newConfigureEnv(t)
			tc.setup(e)
			d := e.d1
			if tc.dev != nil {
				d = tc.dev(e)
			}
			if code, next := e.poll(d, "factory", "qemux86-64", nil); code != http.StatusNoContent {
				t.Fatalf("%d %+v, want 204", code, next)
			}
		})
	}
}

// A stock client that reported a configuration (its module's inventory
// script did) can take one, whatever its inventory says; so can one whose
// provides show a configuration artifact.
func TestConfigureCapableBy(t *testing.T) {
	e := newConfigureEnv(t)
	// dev-2 reports no update_modules.
	if code, _ := e.poll(e.d2, "factory", "rpi4", nil); code != http.StatusNoContent {
		t.Fatalf("before any report: %d", code)
	}
	b, _ := json.Marshal(map[string]string{"ntp_server": "old"})
	if code, resp, _ := e.do(http.MethodPut, configReportPath, e.d2.token, b, nil); code != http.StatusNoContent {
		t.Fatalf("report: %d %s", code, resp)
	}
	// What the inventory said is remembered; a new Configure (a restart)
	// reads it again.
	cf, _ := NewConfigure(ConfigureOptions{Artifacts: configartifact.NewCache(0, e.signer), KeyName: "config"})
	e.api.opts.Configure = cf
	if code, next := e.poll(e.d2, "factory", "rpi4", nil); code != http.StatusOK || next.Artifact.DeviceTypesCompatible[0] != "rpi4" {
		t.Fatalf("after its report: %d %+v", code, next)
	}
	e.api.opts.Configure, _ = NewConfigure(ConfigureOptions{Artifacts: configartifact.NewCache(0, e.signer), KeyName: "config"})
	e.store.SetConfigStatus(ctx(), store.ConfigStatus{Device: "dev-2", Digest: devconfig.Digest(map[string]string{"x": "y"}), State: devconfig.Applied, Via: "agent", Reported: e.clock.Now()})
	if code, _ := e.poll(e.d2, "configuration-0123456789abcdef", "rpi4", map[string]string{configartifact.ProvidesKey: "configuration-0123456789abcdef"}); code != http.StatusOK {
		t.Fatalf("with a configuration artifact's provides: %d", code)
	}
}

// Precedence: a rollout deployment in progress first; the configuration
// before a new admission.
func TestConfigurePrecedence(t *testing.T) {
	e := newConfigureEnv(t)
	e.plan.route = func(*rollout.Device) (store.GenerationRef, rollout.Reason, bool) { return gen1, "", true }
	code, next := e.poll(e.d1, "factory", "qemux86-64", nil)
	if code != http.StatusOK || !strings.HasPrefix(next.ID, "config-") {
		t.Fatalf("first poll: %d %+v, want the configuration before the admission", code, next)
	}
	if p, _ := e.store.Progress(ctx(), gen1); len(p.Phases) != 0 && p.Phases[0].Admitted != 0 {
		t.Fatalf("admitted while configuring: %+v", p)
	}
	if code := e.report(e.d1, next.ID, "success"); code != http.StatusNoContent {
		t.Fatal(code)
	}
	name := next.Artifact.ArtifactName
	provides := map[string]string{configartifact.ProvidesKey: name}
	code, next = e.poll(e.d1, name, "qemux86-64", provides)
	if code != http.StatusOK || next.ID != "canary.v2-g1" {
		t.Fatalf("after the configuration: %d %+v, want the rollout", code, next)
	}
	// Git changes the configuration while the rollout deployment runs:
	// the rollout goes on first.
	e.src.values["dev-1"] = map[string]string{"ntp_server": "ntp.example.com"}
	if code, next = e.poll(e.d1, name, "qemux86-64", provides); code != http.StatusOK || next.ID != "canary.v2-g1" {
		t.Fatalf("during the rollout: %d %+v", code, next)
	}
	if code := e.report(e.d1, "canary.v2-g1", "success"); code != http.StatusNoContent {
		t.Fatal(code)
	}
	if code, next = e.poll(e.d1, "hello-2.0", "qemux86-64", provides); code != http.StatusOK || !strings.HasPrefix(next.ID, "config-") {
		t.Fatalf("after the rollout: %d %+v, want the new configuration", code, next)
	}
}

// A failure is recorded with the failing script, its exit code and the
// log's tail, secrets scrubbed; it is not offered again.
func TestConfigureFailureAndLog(t *testing.T) {
	e := newConfigureEnv(t)
	code, next := e.poll(e.d1, "factory", "qemux86-64", nil)
	if code != http.StatusOK {
		t.Fatal(code)
	}
	if code := e.report(e.d1, next.ID, "failure"); code != http.StatusNoContent {
		t.Fatal(code)
	}
	digest := devconfig.Digest(e.src.values["dev-1"])
	if st := e.status("dev-1"); st.State != devconfig.Failed || st.Digest != digest || st.Via != "mender" {
		t.Fatalf("after failure %+v", st)
	}
	logBody, _ := json.Marshal(map[string]any{"messages": []map[string]string{
		{"timestamp": "2026-01-01T00:00:00Z", "level": "info", "message": "Executing /usr/lib/mender-configure/apply-device-config.d/10-ntp"},
		{"timestamp": "2026-01-01T00:00:01Z", "level": "error", "message": `Script "/usr/lib/mender-configure/apply-device-config.d/05-reboot" returned exit code 20.`},
		{"timestamp": "2026-01-01T00:00:01Z", "level": "error", "message": "wpa_supplicant: bad psk hunter2-very-secret"},
		{"timestamp": "2026-01-01T00:00:02Z", "level": "error", "message": `Script "/usr/lib/mender-configure/apply-device-config.d/20-wifi" returned exit code 3.`},
		{"timestamp": "2026-01-01T00:00:03Z", "level": "error", "message": "ArtifactInstall: Process exited with status 3"},
	}})
	if code, resp, _ := e.do(http.MethodPut, logPath(next.ID), e.d1.token, logBody, nil); code != http.StatusNoContent {
		t.Fatalf("log: %d %s", code, resp)
	}
	st := e.status("dev-1")
	if st.State != devconfig.Failed || st.Script != "/usr/lib/mender-configure/apply-device-config.d/20-wifi" || st.ExitCode != 3 ||
		!strings.Contains(st.Output, "Process exited with status 3") {
		t.Fatalf("status after the log %+v", st)
	}
	if strings.Contains(st.Output, "hunter2") || !strings.Contains(st.Output, "bad psk <secret>") {
		t.Fatalf("secret in the stored output: %q", st.Output)
	}
	if code, _ := e.poll(e.d1, "factory", "qemux86-64", nil); code != http.StatusNoContent {
		t.Fatalf("offered again after failing: %d", code)
	}
	// A log for another digest changes nothing.
	other := ConfigDeploymentID(devconfig.Digest(map[string]string{"a": "b"}))
	if code, _, _ := e.do(http.MethodPut, logPath(other), e.d1.token, logBody, nil); code != http.StatusNoContent {
		t.Fatal(code)
	}
	if st2 := e.status("dev-1"); st2.Digest != digest {
		t.Fatalf("a log of another deployment changed the status: %+v", st2)
	}
	// Bad reports: 400.
	if code, _, _ := e.do(http.MethodPut, statusPath(next.ID), e.d1.token, []byte(`{"status":"exploded"}`), nil); code != http.StatusBadRequest {
		t.Errorf("unknown status: %d", code)
	}
}

// Download URLs: bound to the device, the deployment and the expiry.
func TestConfigureDownloadRefused(t *testing.T) {
	e := newConfigureEnv(t)
	_, next := e.poll(e.d1, "factory", "qemux86-64", nil)
	uri := next.Artifact.Source.URI
	u, _ := url.Parse(uri)
	edit := func(f func(q url.Values, u *url.URL)) string {
		v := *u
		q := v.Query()
		f(q, &v)
		v.RawQuery = q.Encode()
		return v.String()
	}
	for _, tc := range []struct {
		name string
		uri  string
		want int
	}{
		{"no signature", edit(func(q url.Values, _ *url.URL) { q.Del("sig") }), http.StatusUnauthorized},
		{"bad signature", edit(func(q url.Values, _ *url.URL) { q.Set("sig", strings.Repeat("00", 32)) }), http.StatusForbidden},
		{"another device", edit(func(q url.Values, _ *url.URL) { q.Set("device", "dev-2") }), http.StatusForbidden},
		{"later expiry", edit(func(q url.Values, _ *url.URL) { q.Set("expire", "99999999999") }), http.StatusForbidden},
		{"another device type", edit(func(_ url.Values, u *url.URL) {
			u.Path = strings.Replace(u.Path, "/qemux86-64/", "/rpi4/", 1)
		}), http.StatusForbidden},
		{"not a configuration ID", edit(func(_ url.Values, u *url.URL) {
			u.Path = strings.Replace(u.Path, "/config-", "/canary-g", 1)
		}), http.StatusNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if code, b, _ := e.download(tc.uri, nil); code != tc.want {
				t.Fatalf("%d %s, want %d", code, b, tc.want)
			}
		})
	}
	// Another replica (an empty cache) builds it again from Git.
	e.api.opts.Configure, _ = NewConfigure(ConfigureOptions{Artifacts: configartifact.NewCache(0, e.signer), KeyName: "config"})
	if code, _, _ := e.download(uri, nil); code != http.StatusOK {
		t.Fatalf("on a cache miss: %d", code)
	}
	// Git changed the configuration since the offer: 404 (the client
	// fails, and gets the new one).
	e.api.opts.Configure, _ = NewConfigure(ConfigureOptions{Artifacts: configartifact.NewCache(0, e.signer), KeyName: "config"})
	e.src.values["dev-1"] = map[string]string{"ntp_server": "changed"}
	if code, _, _ := e.download(uri, nil); code != http.StatusNotFound {
		t.Fatalf("after a change: %d, want 404", code)
	}
	// The device is removed from Git: 403.
	e.snap.Load().Fleet.Devices = e.snap.Load().Fleet.Devices[1:]
	if code, _, _ := e.download(uri, nil); code != http.StatusForbidden {
		t.Fatalf("device removed: %d, want 403", code)
	}
	// Expired.
	e.clock.Add(2 * time.Hour)
	if code, _, _ := e.download(uri, nil); code != http.StatusForbidden {
		t.Fatalf("expired: %d, want 403", code)
	}
}

// Unsigned: without a signing key the artifacts are unsigned and no
// SigningKey is needed.
func TestConfigureUnsigned(t *testing.T) {
	e := newConfigureEnv(t)
	e.snap.Load().Fleet.Keys = nil
	e.api.opts.Configure, _ = NewConfigure(ConfigureOptions{Artifacts: configartifact.NewCache(0, nil)})
	code, next := e.poll(e.d1, "factory", "qemux86-64", nil)
	if code != http.StatusOK {
		t.Fatalf("%d", code)
	}
	code, art, _ := e.download(next.Artifact.Source.URI, nil)
	if code != http.StatusOK {
		t.Fatal(code)
	}
	if _, err := artifact.NewReader(bytes.NewReader(art), artifact.ReaderOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := artifact.NewReader(bytes.NewReader(art), artifact.ReaderOptions{Verifiers: []*artifact.Verifier{e.signer.Verifier()}}); err == nil {
		t.Fatal("an unsigned artifact verified")
	}
}

func TestConfigureDeploymentID(t *testing.T) {
	d := devconfig.Digest(map[string]string{"a": "1"})
	id := ConfigDeploymentID(d)
	if got, ok := parseConfigDeploymentID(id); !ok || got != d {
		t.Fatalf("round trip %q → %q %v", id, got, ok)
	}
	for _, bad := range []string{"config-", "config-g1", "canary-g1", "config-" + strings.Repeat("A", 64), "config-" + strings.Repeat("a", 63), "xconfig-" + strings.Repeat("a", 64)} {
		if _, ok := parseConfigDeploymentID(bad); ok {
			t.Errorf("%q parsed as a configuration deployment", bad)
		}
	}
	// A rollout called "config" has IDs that never look like one.
	if _, ok := parseConfigDeploymentID(DeploymentID(store.GenerationRef{Rollout: "config", Generation: 1})); ok {
		t.Error("config-g1 parsed")
	}
}

func TestConfigureFailureOfTail(t *testing.T) {
	var msgs []LogMessage
	for range 300 {
		msgs = append(msgs, LogMessage{Message: strings.Repeat("x", 40)})
	}
	msgs = append(msgs, LogMessage{Message: `Script "/a/b" returned exit code 7.`})
	script, code, tail := failureOf(msgs)
	if script != "/a/b" || code != 7 || len(tail) > devconfig.MaxOutput || !strings.HasSuffix(tail, "exit code 7.") || strings.HasPrefix(tail, "\n") {
		t.Fatalf("failureOf: %q %d, tail of %d bytes", script, code, len(tail))
	}
	if s, c, _ := failureOf([]LogMessage{{Message: `Script "/r" returned exit code 20.`}}); s != "" || c != 0 {
		t.Fatalf("a reboot request counted as the failure: %q %d", s, c)
	}
}

// The key check explains itself.
func TestConfigureKeyCheckMessages(t *testing.T) {
	priv, pub, _ := artifact.GenerateKey(artifact.ECDSAP256)
	s, _ := artifact.LoadSigner(priv)
	key := schema.SigningKey{Spec: schema.SigningKeySpec{PublicKey: string(pub)}}
	key.Name = "release"
	snap := &reconcile.Snapshot{Fleet: &schema.Fleet{Keys: []schema.SigningKey{key}}}
	if err := checkConfigKey(snap, s.Verifier(), ""); err != nil {
		t.Errorf("matched by fingerprint: %v", err)
	}
	if err := checkConfigKey(snap, s.Verifier(), "release"); err != nil {
		t.Errorf("matched by name: %v", err)
	}
	if err := checkConfigKey(snap, s.Verifier(), "config"); err == nil || !strings.Contains(err.Error(), `no SigningKey "config"`) {
		t.Errorf("missing name: %v", err)
	}
	_, other, _ := artifact.GenerateKey(artifact.ECDSAP256)
	snap.Fleet.Keys[0].Spec.PublicKey = string(other)
	if err := checkConfigKey(snap, s.Verifier(), "release"); err == nil || !strings.Contains(err.Error(), "declares key") {
		t.Errorf("another key: %v", err)
	}
	if err := checkConfigKey(snap, s.Verifier(), ""); err == nil || !strings.Contains(err.Error(), "gitfleet keys public") {
		t.Errorf("no key: %v", err)
	}
	if err := checkConfigKey(snap, nil, "x"); err != nil {
		t.Errorf("unsigned: %v", err)
	}
}

// A stock device that installed its configuration and then reports
// another file shows as drifted (the applied digest kept, the file's as
// FileDigest), is not offered the same configuration again, and is in
// sync again when the file is restored or Git changes.
func TestConfigureStockDrift(t *testing.T) {
	e := newConfigureEnv(t)
	digest := devconfig.Digest(e.src.values["dev-1"])
	_, next := e.poll(e.d1, "factory", "qemux86-64", nil)
	if code := e.report(e.d1, next.ID, "success"); code != http.StatusNoContent {
		t.Fatal(code)
	}
	report := func(values map[string]string) {
		t.Helper()
		b, _ := json.Marshal(values)
		if code, resp, _ := e.do(http.MethodPut, configReportPath, e.d1.token, b, nil); code != http.StatusNoContent {
			t.Fatalf("report: %d %s", code, resp)
		}
	}
	report(e.src.values["dev-1"])
	if st := e.status("dev-1"); st.State != devconfig.Applied || st.Digest != digest {
		t.Fatalf("after reporting the applied file: %+v", st)
	}
	edited := map[string]string{"ntp_server": "evil.example.com", "wifi_psk": "hunter2-very-secret"}
	report(edited)
	st := e.status("dev-1")
	if st.State != devconfig.Drifted || st.Digest != digest || st.FileDigest != devconfig.Digest(edited) || st.Via != "mender" {
		t.Fatalf("after an edit: %+v", st)
	}
	name := next.Artifact.ArtifactName
	if code, _ := e.poll(e.d1, name, "qemux86-64", map[string]string{configartifact.ProvidesKey: name}); code != http.StatusNoContent {
		t.Fatalf("drifted device offered the same configuration: %d", code)
	}
	report(e.src.values["dev-1"])
	if st := e.status("dev-1"); st.State != devconfig.Applied || st.Digest != digest || st.FileDigest != "" {
		t.Fatalf("after restoring the file: %+v", st)
	}
	report(edited)
	e.src.values["dev-1"] = map[string]string{"ntp_server": "ntp.example.com"}
	if code, next2 := e.poll(e.d1, name, "qemux86-64", map[string]string{configartifact.ProvidesKey: name}); code != http.StatusOK || next2.ID == next.ID {
		t.Fatalf("after a change in Git: %d %+v", code, next2)
	}
	// A report of a configuration Git never gave it, before any
	// deployment: applied with its digest (pending, not drifted).
	b, _ := json.Marshal(map[string]string{"x": "1"})
	if code, _, _ := e.do(http.MethodPut, configReportPath, e.d2.token, b, nil); code != http.StatusNoContent {
		t.Fatal(code)
	}
	if st := e.status("dev-2"); st.State != devconfig.Applied || st.Digest != devconfig.Digest(map[string]string{"x": "1"}) {
		t.Fatalf("dev-2 %+v", st)
	}
}
