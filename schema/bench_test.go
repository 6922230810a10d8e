package schema

import (
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"testing/fstest"
)

// generatedFleet returns a valid fleet of at least n manifests, laid out
// the way a team would: a folder per kind and, per site, one file of each
// kind. Each site of 100 manifests has 75 Device manifests (one of them
// declaring several devices), 4 DeviceGroups (static members and
// selectors), 6 Rollouts of different priorities (groups, selectors,
// devices), 8 DeviceConfigs (group and device scope, keys shared across
// sites), 4 MonitorChecks, an Artifact, a SigningKey and a Notification
// (written in CUE every tenth site). Device types rotate between sites,
// so rollouts of equal priority at different sites are told apart
// sometimes by device type, sometimes by selector attribute and sometimes
// by static members, and the overlap checks see every kind of target.
func generatedFleet(n int) fstest.MapFS {
	fsys := fstest.MapFS{}
	rng := rand.New(rand.NewPCG(1, 2))
	seed := make([]byte, ed25519.SeedSize)
	key := ed25519.NewKeyFromSeed(seed).Public()
	der, err := x509.MarshalPKIXPublicKey(key)
	if err != nil {
		panic(err)
	}
	keyPEM := strings.TrimSpace(string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})))
	types := []string{"raspberrypi4", "raspberrypi5", "x86-64", "imx8"}

	var buf []byte
	add := func(format string, args ...any) {
		buf = append(buf, "---\napiVersion: gitfleet.io/v1\n"...)
		buf = fmt.Appendf(buf, format, args...)
	}
	flush := func(name string) {
		fsys[name] = &fstest.MapFile{Data: buf, Mode: 0o644}
		buf = nil
	}
	for s := 0; s*100 < n; s++ {
		site := fmt.Sprintf("site-%03d", s)
		dtype := types[s%len(types)]
		dev := func(j int) string { return fmt.Sprintf("%s-dev-%03d", site, j) }
		serial := func(j int) string { return fmt.Sprintf("S%03d-%03d", s, j) }

		// Devices: 74 single manifests, in both YAML styles, and one
		// manifest declaring 6 more.
		for j := range 74 {
			if j%2 == 0 {
				add("kind: Device\nmetadata: {name: %s, labels: {site: %s}}\nspec: {identity: {mac: \"02:%02x:%02x:00:00:01\", serial: %s}, trustOnFirstUse: true, deviceType: %s}\n",
					dev(j), site, s%256, j, serial(j), dtype)
			} else {
				add("kind: Device\nmetadata:\n  name: %s\n  labels:\n    site: %s\n    rack: r%d\nspec:\n  identity:\n    mac: \"02:%02x:%02x:00:00:01\"\n    serial: %s\n  publicKeySHA256: \"%064x\"\n  deviceType: %s\n",
					dev(j), site, j%4, s%256, j, serial(j), rng.Uint64(), dtype)
			}
		}
		add("kind: Device\nmetadata: {name: %s-lab}\nspec:\n  devices:\n", site)
		for j := 74; j < 80; j++ {
			buf = fmt.Appendf(buf, "    - {name: %s, identity: {serial: %s}, trustOnFirstUse: true, deviceType: %s}\n", dev(j), serial(j), dtype)
		}
		flush("devices/" + site + ".yaml")

		// Groups: the site by selector, a canary and a ring by members,
		// and the lab by a glob.
		add("kind: DeviceGroup\nmetadata: {name: %s, labels: {production: \"true\"}}\nspec:\n  selector:\n    identity: {serial: {glob: \"S%03d-*\"}}\n    inventory: {site: %s}\n", site, s, site)
		add("kind: DeviceGroup\nmetadata: {name: %s-canary}\nspec: {members: [%s, %s, %s]}\n", site, dev(0), dev(1), dev(2))
		var ring []string
		for j := 10; j < 30; j++ {
			ring = append(ring, dev(j))
		}
		add("kind: DeviceGroup\nmetadata: {name: %s-ring1, labels: {critical: \"true\"}}\nspec:\n  members:\n    - %s\n", site, strings.Join(ring, "\n    - "))
		add("kind: DeviceGroup\nmetadata: {name: %s-lab}\nspec: {selector: {identity: {serial: {in: [%s, %s, %s]}}}}\n", site, serial(74), serial(75), serial(76))
		flush("groups/" + site + ".yaml")

		// Rollouts: one per priority per site, so that the overlap check
		// compares every site with every other.
		art := "app-" + site
		add(`kind: Rollout
metadata: {name: %s-canary, labels: {team: platform}}
spec:
  artifact: %s
  target: {groups: [%s-canary]}
  priority: 10
  phases:
    - {name: one, count: 1, hold: 1h, abort: {maxFailures: 0, alerts: [%s-app-errors]}}
    - {name: all, percent: 100, abort: {maxFailurePercent: 5, minSample: 2}}
`, site, art, site, site)
		add(`kind: Rollout
metadata: {name: %s-ring1}
spec:
  artifact: %s
  target:
    groups: [%s-ring1]
  priority: 5
  retries: 2
  phases:
    - name: canary
      count: 2
      hold: 2d
      abort: {maxFailures: 0}
    - name: early
      percent: 25
      hold: 90m
      requiresApproval: true
      abort: {maxFailurePercent: 10, minSample: 5}
    - name: all
      percent: 100
      requiresApproval: true
  approvedPhases: [early]
  maintenanceWindows:
    - {days: [mon, tue, wed, thu, fri], start: "22:00", end: "04:00", timeZone: Europe/Berlin}
`, site, art, site)
		add(`kind: Rollout
metadata: {name: %s}
spec:
  artifact: %s
  target: {groups: [%s]}
  phases:
    - {name: p1, percent: 1, hold: 1d}
    - {name: p10, percent: 10, hold: 1d, abort: {maxFailurePercent: 2, minSample: 20}}
    - {name: p50, percent: 50, hold: 12h}
    - {name: all, percent: 100}
`, site, art, site)
		add("kind: Rollout\nmetadata: {name: %s-pick}\nspec:\n  artifact: %s\n  priority: 20\n  target: {selector: {identity: {serial: {in: [%s, %s]}}}}\n  phases: [{name: all, count: 2}]\n",
			site, art, serial(40), serial(41))
		add("kind: Rollout\nmetadata: {name: %s-hotfix}\nspec:\n  artifact: %s\n  priority: 30\n  allowDowngrade: true\n  target: {devices: [%s, %s]}\n  phases: [{name: all, percent: 100}]\n",
			site, art, dev(50), dev(51))
		add("kind: Rollout\nmetadata: {name: %s-lab}\nspec:\n  artifact: %s\n  priority: -1\n  paused: true\n  target: {groups: [%s-lab]}\n  phases: [{name: all, percent: 100}]\n",
			site, art, site)
		flush("rollouts/" + site + ".yaml")

		// Configs: keys shared by every site at group scope, and
		// per-device keys.
		add("kind: DeviceConfig\nmetadata: {name: %s}\nspec:\n  target: {groups: [%s]}\n  values:\n    ntp_server: ntp%d.example.com\n    site: %s\n    upload_kbps: %d\n", site, site, s%4, site, 100+s)
		add("kind: DeviceConfig\nmetadata: {name: %s-ring1}\nspec: {target: {groups: [%s-ring1]}, values: {log_level: info, telemetry: true}}\n", site, site)
		add("kind: DeviceConfig\nmetadata: {name: %s-canary}\nspec: {target: {groups: [%s-canary]}, values: {log_level: debug}}\n", site, site)
		for j := range 5 {
			add("kind: DeviceConfig\nmetadata: {name: %s-host-%d}\nspec: {target: {devices: [%s]}, values: {hostname: %s, upload_kbps: %d}}\n", site, j, dev(60+j), dev(60+j), 10*j)
		}
		flush("configs/" + site + ".yaml")

		add("kind: MonitorCheck\nmetadata: {name: %s-app-errors}\nspec:\n  target: {groups: [%s]}\n  severity: error\n  expiry: 2d\n  log: {path: \"@journalctl -f -u app\", pattern: \"panic|fatal error\"}\n", site, site)
		add("kind: MonitorCheck\nmetadata: {name: %s-app-running}\nspec: {target: {groups: [%s]}, service: {name: app.service}}\n", site, site)
		add("kind: MonitorCheck\nmetadata: {name: %s-ports}\nspec: {target: {groups: [%s-ring1]}, severity: critical, listeningPorts: {allow: [22, 443, 8443]}}\n", site, site)
		add("kind: MonitorCheck\nmetadata: {name: %s-traffic}\nspec: {target: {devices: [%s]}, traffic: {interface: eth0, maxBytes: 1000000000, window: 1h}}\n", site, dev(3))
		flush("checks/" + site + ".yaml")

		add("kind: Artifact\nmetadata: {name: %s, labels: {app: app}}\nspec:\n  source: artifacts/%s.mender\n  version: \"1.%d.0\"\n  deviceTypes: [%s]\n  provides: {rootfs-image.app.version: \"1.%d\"}\n  signedBy: [release-%s]\n", art, art, s, dtype, s, site)
		flush("artifacts/" + art + ".yaml")
		add("kind: SigningKey\nmetadata: {name: release-%s}\nspec:\n  algorithm: ed25519\n  environment: production\n  publicKey: |\n    %s\n", site, strings.ReplaceAll(keyPEM, "\n", "\n    "))
		flush("keys/release-" + site + ".yaml")
		if s%10 == 0 {
			fsys["notifications/"+site+".cue"] = &fstest.MapFile{Mode: 0o644, Data: fmt.Appendf(nil, `apiVersion: "gitfleet.io/v1"
kind:       "Notification"
metadata: name: "%s-ops"
spec: {
	webhook: {url: "https://hooks.example.com/%s", secret: env: "HOOK_SECRET"}
	events: ["rollout.aborted", "alert.raised"]
	rollouts: ["%s", "%s-ring1"]
	checks: ["%s-app-errors"]
}
`, site, site, site, site, site)}
		} else {
			add("kind: Notification\nmetadata: {name: %s-ops}\nspec:\n  email: {to: [ops+%s@example.com]}\n  events: [rollout.aborted, alert.raised]\n  rollouts: [%s, %s-ring1]\n  checks: [%s-app-errors]\n", site, site, site, site, site)
			flush("notifications/" + site + ".yaml")
		}
	}
	return fsys
}

func TestGeneratedFleet(t *testing.T) {
	f, err := Load(generatedFleet(1000))
	if err != nil {
		t.Fatal(err)
	}
	if f.Len() < 1000 {
		t.Fatalf("loaded %d manifests, want at least 1000", f.Len())
	}
}

// BenchmarkLoad10k validates a generated fleet of 10,000 manifests.
func BenchmarkLoad10k(b *testing.B) {
	fsys := generatedFleet(10_000)
	start := rusage()
	for b.Loop() {
		f, err := Load(fsys)
		if err != nil {
			b.Fatal(err)
		}
		if f.Len() < 10_000 {
			b.Fatalf("loaded %d manifests", f.Len())
		}
	}
	reportUsage(b, start)
}
