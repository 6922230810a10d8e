package e2e

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/gitfleet/gitfleet/controller"
	"github.com/gitfleet/gitfleet/controller/configartifact"
	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gitfleet/gitfleet/device/devconfig"
)

// The Mender Configure side of a stock device, as the test installs it:
// the update module and the inventory script written to Mender
// Configure's protocol (testdata/mender-configure), Mender's
// update_modules inventory script (Debian's package lacks it), and an
// apply script that records each call. Mender Configure's own TEST_*
// variables move its files into the test's directory.
type stockConfigure struct {
	Dir     string // the device's /var/lib/mender-configure and apply directory
	Config  string // device-config.json
	Applied string // one line per apply script call: the path it was given, a tab, the file's content
	Sent    string // the inventory script's record of what it reported
}

func newStockConfigure(t *testing.T) *stockConfigure {
	t.Helper()
	dir := t.TempDir()
	sc := &stockConfigure{Dir: dir, Config: filepath.Join(dir, "device-config.json"),
		Applied: filepath.Join(dir, "applied.log"), Sent: filepath.Join(dir, "device-config-reported.sha256")}
	writeFile(t, filepath.Join(dir, "apply-device-config.d", "10-record"), []byte(`#!/bin/sh
# Records the path it is given and the file's content, on one line.
set -eu
printf '%s\t%s\n' "$1" "$(tr -d '\n' < "$1")" >> `+sc.Applied+`
`), 0o755)
	return sc
}

// options are what StartMender needs for it: the module, the inventory
// scripts, the environment that moves the files, and the D-Bus bus the
// inventory script asks the client's token on.
func (sc *stockConfigure) options(bus, caFile string) MenderOptions {
	src := filepath.Join(testdataDir(), "mender-configure")
	return MenderOptions{
		DBusAddress: bus,
		Env: []string{
			"TEST_CONFIG=" + sc.Config,
			"TEST_APPLY_DIR=" + filepath.Join(sc.Dir, "apply-device-config.d"),
			"TEST_CONFIG_CHECKSUM=" + sc.Sent,
			// Should curl, in the inventory script, reach the server
			// itself, it trusts the controller's certificate as the
			// client does.
			"CURL_CA_BUNDLE=" + caFile,
		},
		Install: map[string]string{
			"share/modules/v3/mender-configure":                 filepath.Join(src, "mender-configure"),
			"share/inventory/mender-inventory-mender-configure": filepath.Join(src, "mender-inventory-mender-configure"),
			"share/inventory/mender-inventory-update-modules":   filepath.Join(src, "mender-inventory-update-modules"),
		},
	}
}

// calls returns the apply script's calls so far.
func (sc *stockConfigure) calls() []string {
	b, _ := os.ReadFile(sc.Applied)
	return strings.Split(strings.TrimRight(string(b), "\n"), "\n")
}

// file returns the configuration file's values (nil when absent or not
// a JSON object of strings).
func (sc *stockConfigure) file() map[string]string {
	b, err := os.ReadFile(sc.Config)
	if err != nil {
		return nil
	}
	var v map[string]string
	if json.Unmarshal(b, &v) != nil {
		return nil
	}
	return v
}

// requireTools skips (fails on CI) without the programs the device side
// runs.
func requireTools(t *testing.T, tools ...string) {
	t.Helper()
	var missing []string
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := "needs " + strings.Join(missing, ", ") + " (apt-get install dbus curl)"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// startSystemBus runs a private D-Bus daemon of type "system" that lets
// anyone own and call anything, and returns its address. It is killed at
// cleanup.
func startSystemBus(t *testing.T) string {
	return startDBus(t, `  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
`).Addr
}

// stockConfig is a DeviceConfig for one device.
func stockConfig(name, device string, values map[string]string) map[string]string {
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: gitfleet.io/v1\nkind: DeviceConfig\nmetadata:\n  name: %s\nspec:\n  target:\n    devices: [%s]\n  values:\n", name, device)
	for _, k := range slices.Sorted(maps.Keys(values)) {
		fmt.Fprintf(&b, "    %s: %q\n", k, values[k])
	}
	return map[string]string{"config/" + name + ".yaml": b.String()}
}

// awaitConfigStatus waits until the device's configuration status (by
// its Device manifest name) satisfies ok.
func (c *Controller) awaitConfigStatus(device, what string, ok func(store.ConfigStatus) bool) store.ConfigStatus {
	c.env.t.Helper()
	st := c.env.Store()
	var (
		last    store.ConfigStatus
		lastErr error
	)
	c.awaitFunc(fmt.Sprintf("configuration of %s %s", device, what), func() bool {
		m, err := st.ConfigStatusOf(c.env.t.Context(), []string{device})
		last, lastErr = m[device], err
		return err == nil && ok(last)
	}, func() string { return fmt.Sprintf("last status %+v, error %v", last, lastErr) })
	return last
}

// awaitConfigState waits until the management API shows the device's
// state for the DeviceConfig called config as state.
func (c *Controller) awaitConfigState(config, device, state string) controller.DeviceConfigState {
	c.env.t.Helper()
	var (
		last    controller.DeviceConfigState
		lastErr error
	)
	c.awaitFunc(fmt.Sprintf("%s %s for DeviceConfig %s in the management API", device, state, config), func() bool {
		var out struct {
			Devices []controller.DeviceConfigState `json:"devices"`
		}
		lastErr = c.getJSON("/api/management/v1/config/devices?config="+config, &out)
		for _, d := range out.Devices {
			if d.Device == device {
				last = d
			}
		}
		return lastErr == nil && last.State == state
	}, func() string { return fmt.Sprintf("last %+v, error %v", last, lastErr) })
	return last
}

// TestStockMenderConfigure is the stock client's configuration story:
// Debian's mender 3.4 daemon, which verifies artifact signatures, with a
// module of Mender Configure's protocol, is accepted by a commit; a
// DeviceConfig commit reaches it as a mender-configure deployment signed
// with the controller's configuration key (declared in Git); the module
// writes the file and runs the apply script with it; the deployment's
// success and the device's own report (its inventory script, with the
// token it gets from the client over D-Bus) show the desired digest in
// sync. The file edited by hand shows as drifted and is left alone; a
// change in Git converges the same way.
func TestStockMenderConfigure(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: runs the stock Mender client")
	}
	RequireMender(t)
	requireTools(t, "dbus-daemon", "dbus-send", "curl", "sha256sum")
	guard := hostMenderDirs(t)

	work := t.TempDir()
	key, pub := GenerateSigningKey(t, filepath.Join(work, "keys", "release"))
	env := newEnv(t, menderFleet(t, pub)) // SigningKey "release"
	seed := env.Repo.Head()
	c := env.StartController("a", "--config-signing-key", key, "--config-signing-key-name", "release")
	c.AwaitServing(seed)
	caFile := filepath.Join(work, "controller.crt")
	writeFile(t, caFile, c.CertPEM(), 0o644)

	bus := startSystemBus(t)
	sc := newStockConfigure(t)
	opts := sc.options(bus, caFile)
	opts.VerifyKey = pub // it refuses unsigned artifacts
	m := StartMender(t, c.URL(), c.CertPEM(), opts)
	pending := c.AwaitPending(m.ID())
	sha := env.Commit(menderDevice("mender-1", m, pending.KeyFingerprint), "accept mender-1")
	env.Push(c, sha, false)
	c.AwaitServing(sha)
	c.AwaitDevice(m.ID(), "accepted, reporting its update modules", func(d store.Device) bool {
		return d.Status == store.DeviceAccepted && strings.Contains(Inventory(d)["update_modules"], "mender-configure")
	})

	// A DeviceConfig commit: the client installs it and the apply script
	// runs with the file.
	values := map[string]string{"ntp_server": "pool.ntp.org", "log_level": "info"}
	digest := devconfig.Digest(values)
	sha = env.Commit(stockConfig("mender-1", "mender-1", values), "configure mender-1")
	env.Push(c, sha, false)
	c.AwaitServing(sha)
	m.Await("applying the configuration", func() bool { return len(sc.file()) == 2 && sc.file()["ntp_server"] == "pool.ntp.org" })
	m.Await("running the apply script", func() bool {
		calls := sc.calls()
		return len(calls) > 0 && strings.HasPrefix(calls[len(calls)-1], sc.Config+"\t")
	})
	if got := sc.file(); got["log_level"] != "info" {
		t.Fatalf("device-config.json %v, want %v", got, values)
	}
	st := c.awaitConfigStatus("mender-1", "applied with the desired digest", func(s store.ConfigStatus) bool {
		return s.State == devconfig.Applied && s.Digest == digest && s.Via == "mender"
	})
	c.awaitConfigState("mender-1", "mender-1", controller.ConfigInSync)
	t.Logf("configured: %s applied via %s, in sync; apply script calls %q", st.Digest[:19], st.Via, sc.calls())

	// The device reports the file it runs: its inventory script asks the
	// client for its token over D-Bus (the 3.4 client answers with its
	// local proxy's URL, http://127.0.0.1:PORT, which forwards to the
	// server) and PUTs the file; it records the report only after a 2xx.
	m.Await("reporting its configuration", func() bool { _, err := os.Stat(sc.Sent); return err == nil })
	m.AwaitLog(`Request: .*/api/devices/v1/deviceconfig/configuration`)
	name, _ := configartifact.Name(digest)
	c.AwaitDevice(m.ID(), "running the configuration artifact", func(d store.Device) bool { return Inventory(d)["artifact_name"] == name })

	// The file is edited by hand: the device reports what it runs, which
	// shows as another digest (out of sync), and Git's is not forced over
	// it until Git changes.
	edited := map[string]string{"ntp_server": "pool.ntp.org", "log_level": "debug"}
	writeFile(t, sc.Config, devconfig.Encode(edited), 0o600)
	st = c.awaitConfigStatus("mender-1", "drifted", func(s store.ConfigStatus) bool {
		return s.State == devconfig.Drifted && s.Digest == digest && s.FileDigest == devconfig.Digest(edited) && s.Via == "mender"
	})
	shown := c.awaitConfigState("mender-1", "mender-1", controller.ConfigDrifted)
	t.Logf("edited by hand: drifted, the file's digest %.19s; the management API: %+v", st.FileDigest, shown)

	// Git changes a value: it converges again, once.
	before := len(sc.calls())
	sentBefore, _ := os.ReadFile(sc.Sent)
	values["ntp_server"] = "ntp.example.com"
	digest2 := devconfig.Digest(values)
	sha = env.Commit(stockConfig("mender-1", "mender-1", values), "new NTP server for mender-1")
	env.Push(c, sha, false)
	c.AwaitServing(sha)
	m.Await("applying the new configuration", func() bool { return sc.file()["ntp_server"] == "ntp.example.com" })
	st = c.awaitConfigStatus("mender-1", "applied with the new digest", func(s store.ConfigStatus) bool {
		return s.State == devconfig.Applied && s.Digest == digest2
	})
	name2, _ := configartifact.Name(digest2)
	c.AwaitDevice(m.ID(), "running the new configuration artifact", func(d store.Device) bool { return Inventory(d)["artifact_name"] == name2 })
	// The device's report of the new file agrees; polls go on and nothing
	// more is installed.
	m.Await("reporting the new configuration", func() bool {
		b, _ := os.ReadFile(sc.Sent)
		return len(b) > 0 && string(b) != string(sentBefore)
	})
	checks := strings.Count(m.Logs(), "No update available")
	m.Await("polling twice more", func() bool { return strings.Count(m.Logs(), "No update available") >= checks+2 })
	if st := c.awaitConfigStatus("mender-1", "still in sync", func(store.ConfigStatus) bool { return true }); st.Digest != digest2 || st.State != devconfig.Applied {
		t.Errorf("after the device's report: %+v", st)
	}
	c.awaitConfigState("mender-1", "mender-1", controller.ConfigInSync)
	if calls := sc.calls(); len(calls) != before+1 {
		t.Errorf("apply script calls after the change: %q (want exactly one more than %d)", calls, before)
	}
	if n := strings.Count(c.Logs(), `"msg":"configuration deployment offered"`); n != 2 {
		t.Errorf("%d configuration deployments offered, want 2", n)
	}
	t.Logf("reconfigured: %s applied; %d apply script calls", st.Digest[:19], len(sc.calls()))

	m.Stop()
	guard()
}
