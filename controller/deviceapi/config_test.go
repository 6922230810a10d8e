package deviceapi

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/gitfleet/gitfleet/controller/reconcile"
	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gitfleet/gitfleet/device/devconfig"
)

const (
	configPath       = "/api/devices/v1/deviceconfig/gitfleet"
	configStatusPath = "/api/devices/v1/deviceconfig/gitfleet/status"
	configReportPath = "/api/devices/v1/deviceconfig/configuration"
)

// fakeConfig gives every device values, with "wifi_psk" a secret.
type fakeConfig struct{ values map[string]map[string]string }

func (f *fakeConfig) For(name string, identity, inventory map[string]string) (map[string]string, string) {
	v := f.values[name]
	return v, devconfig.Digest(v)
}
func (f *fakeConfig) NeedsInventory() bool   { return false }
func (f *fakeConfig) Secret(key string) bool { return key == "wifi_psk" }

func configEnv(t *testing.T) (*monitorEnv, *fakeConfig) {
	t.Helper()
	e := newMonitorEnv(t)
	src := &fakeConfig{values: map[string]map[string]string{
		"dev-0": {"ntp_server": "pool.ntp.org", "wifi_psk": "hunter2-very-secret"},
		"dev-1": {"ntp_server": "time.example.com"},
	}}
	e.api.opts.Config = func(*reconcile.Snapshot) ConfigSource { return src }
	return e, src
}

func (e *monitorEnv) config(dev int, etag string) (int, devconfig.Configuration, string) {
	e.t.Helper()
	hdr := map[string]string{}
	if etag != "" {
		hdr["If-None-Match"] = etag
	}
	code, body, h := e.do(http.MethodGet, configPath, e.devs[dev].token, nil, hdr)
	var cfg devconfig.Configuration
	if code == http.StatusOK {
		if err := json.Unmarshal(body, &cfg); err != nil {
			e.t.Fatal(err)
		}
	}
	return code, cfg, h.Get("ETag")
}

func (e *monitorEnv) configStatus(dev int) store.ConfigStatus {
	e.t.Helper()
	name := []string{"dev-0", "dev-1", "dev-2"}[dev]
	m, err := e.store.ConfigStatusOf(ctx(), []string{name})
	if err != nil {
		e.t.Fatal(err)
	}
	return m[name]
}

func TestConfigServedWithETag(t *testing.T) {
	e, src := configEnv(t)
	code, cfg, etag := e.config(0, "")
	if code != http.StatusOK || cfg.Values["ntp_server"] != "pool.ntp.org" || cfg.Digest != devconfig.Digest(src.values["dev-0"]) || etag != `"`+cfg.Digest+`"` {
		t.Fatalf("GET config: %d %+v ETag %q", code, cfg, etag)
	}
	if code, _, _ := e.config(0, etag); code != http.StatusNotModified {
		t.Errorf("unchanged: %d, want 304", code)
	}
	src.values["dev-0"] = map[string]string{"ntp_server": "ntp.example.com"}
	if code, cfg, etag2 := e.config(0, etag); code != http.StatusOK || etag2 == etag || cfg.Values["ntp_server"] != "ntp.example.com" {
		t.Errorf("changed: %d %+v %q", code, cfg, etag2)
	}
	// No configuration served: 404.
	e.api.opts.Config = nil
	if code, _, _ := e.config(0, ""); code != http.StatusNotFound {
		t.Errorf("without configuration: %d, want 404", code)
	}
	if code, _, _ := e.do(http.MethodGet, configPath, "", nil, nil); code != http.StatusUnauthorized {
		t.Errorf("without a token: %d", code)
	}
}

func TestConfigStatusRecorded(t *testing.T) {
	e, src := configEnv(t)
	d0 := devconfig.Digest(src.values["dev-0"])
	put := func(dev int, path string, v any) (int, string) {
		t.Helper()
		b, _ := json.Marshal(v)
		code, resp, _ := e.do(http.MethodPut, path, e.devs[dev].token, b, nil)
		return code, string(resp)
	}
	if code, b := put(0, configStatusPath, devconfig.Status{Digest: d0, State: devconfig.Applied}); code != http.StatusNoContent {
		t.Fatalf("applied: %d %s", code, b)
	}
	if st := e.configStatus(0); st.Digest != d0 || st.State != devconfig.Applied || st.Via != "agent" || st.Device != "dev-0" {
		t.Errorf("status %+v", st)
	}
	// A failing script that printed the secret: stored scrubbed.
	code, b := put(0, configStatusPath, devconfig.Status{Digest: d0, State: devconfig.Failed, Script: "10-wifi", ExitCode: 3,
		Output: "configuring wlan0 with psk hunter2-very-secret\nwpa_cli: failed\n"})
	if code != http.StatusNoContent {
		t.Fatalf("failed: %d %s", code, b)
	}
	st := e.configStatus(0)
	if st.State != devconfig.Failed || st.Script != "10-wifi" || st.ExitCode != 3 || !strings.Contains(st.Output, "wpa_cli: failed") {
		t.Errorf("failed status %+v", st)
	}
	if strings.Contains(st.Output, "hunter2") || !strings.Contains(st.Output, "<secret>") {
		t.Errorf("the secret reached the store: %q", st.Output)
	}
	// A stock client's report of the values it runs.
	if code, b := put(1, configReportPath, src.values["dev-1"]); code != http.StatusNoContent {
		t.Fatalf("report: %d %s", code, b)
	}
	if st := e.configStatus(1); st.Digest != devconfig.Digest(src.values["dev-1"]) || st.State != devconfig.Applied || st.Via != "mender" {
		t.Errorf("reported status %+v", st)
	}
	// Bad input: 400, nothing recorded.
	for name, body := range map[string]string{
		"bad state":   `{"digest":"` + d0 + `","state":"great"}`,
		"bad digest":  `{"digest":"md5:00","state":"applied"}`,
		"extra field": `{"digest":"` + d0 + `","state":"applied","x":1}`,
		"not json":    `{`,
	} {
		if code, resp, _ := e.do(http.MethodPut, configStatusPath, e.devs[2].token, []byte(body), nil); code != http.StatusBadRequest {
			t.Errorf("%s: %d %s, want 400", name, code, resp)
		}
	}
	if code, resp, _ := e.do(http.MethodPut, configReportPath, e.devs[2].token, []byte(`{"a":1}`), nil); code != http.StatusBadRequest {
		t.Errorf("non-string report value: %d %s", code, resp)
	}
	if st := e.configStatus(2); st.State != "" {
		t.Errorf("bad input recorded %+v", st)
	}
}
