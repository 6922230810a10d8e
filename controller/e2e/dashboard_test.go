package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"image"
	"image/png"
	"maps"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/gitfleet/gitfleet/controller/store"
)

// chromiumPath is Debian's chromium.
const chromiumPath = "/usr/bin/chromium"

// screenshotDir is where the dashboard test writes its screenshots:
// $GITFLEET_SCREENSHOTS, default <repo root>/.gitfleet/screenshots.
func screenshotDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("GITFLEET_SCREENSHOTS")
	if dir == "" {
		_, file, _, _ := runtime.Caller(0)
		dir = filepath.Join(filepath.Dir(file), "..", "..", ".gitfleet", "screenshots")
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	mkdir(t, dir)
	return dir
}

// browser is a headless Chromium trusting exactly one controller's
// certificate (by its public key), with a fresh profile.
type browser struct {
	t   *testing.T
	ctx context.Context
	dir string // screenshots
	n   int
}

func startBrowser(t *testing.T, certPEM []byte) *browser {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is required when CI=true (Debian: apt-get install chromium chromium-driver; scripts/test-deps installs it)", chromiumPath)
		}
		t.Skipf("%s not installed (Debian: apt-get install chromium chromium-driver)", chromiumPath)
	}
	block, _ := pem.Decode(certPEM)
	if block == nil {
		t.Fatal("controller certificate: no PEM block")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	spki := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("no-default-browser-check", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.Flag("force-device-scale-factor", "1"),
		// Trust the test controller's own certificate, and only it.
		chromedp.Flag("ignore-certificate-errors-spki-list", base64.StdEncoding.EncodeToString(spki[:])),
		chromedp.WindowSize(1280, 900),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancel()      // closes the browser
		cancelAlloc() // and ends its process
	})
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return &browser{t: t, ctx: ctx, dir: screenshotDir(t)}
}

// do runs actions within Deadline.
func (b *browser) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, Deadline)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.t.Fatalf("browser: %s: %v\npage text:\n%s", what, err, b.pageText())
	}
}

// pageText is the page's text, for failures.
func (b *browser) pageText() string {
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	s, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`))
	return s
}

// eval evaluates a JavaScript expression on the page.
func eval[T any](b *browser, expr string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, Deadline)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		b.t.Fatalf("browser: evaluate %s: %v", expr, err)
	}
	return v
}

// await waits until the JavaScript expression is true on the page.
func (b *browser) await(what, expr string) {
	b.t.Helper()
	deadline := time.Now().Add(Deadline)
	for {
		ctx, cancel := context.WithTimeout(b.ctx, time.Until(deadline)+5*time.Second)
		_, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingInterval(100*time.Millisecond), chromedp.WithPollingTimeout(time.Until(deadline))))
		cancel()
		if err == nil {
			return
		}
		// A navigation (the login's redirect, a reload without JS)
		// destroys the page's JavaScript context under a running poll
		// (Chrome answers "Cannot find context with specified id",
		// "Execution context was destroyed" or "Inspected target
		// navigated or closed", all server errors -32000): poll again in
		// the new one.
		if gone := strings.Contains(err.Error(), "(-32000)") || strings.Contains(err.Error(), "context was destroyed"); !gone || time.Now().After(deadline) {
			b.t.Fatalf("browser: waiting for %s (%s): %v\npage text:\n%s", what, expr, err, b.pageText())
		}
	}
}

// text returns the text of the first element matching the CSS selector
// ("" when none).
func (b *browser) text(sel string) string {
	b.t.Helper()
	return eval[string](b, fmt.Sprintf(`(() => { const e = document.querySelector(%q); return e ? e.innerText : ""; })()`, sel))
}

// shot is one full-page screenshot and the page's text when it was taken.
type shot struct {
	img  image.Image
	text string
	rect map[string]box // selector → its box in the image
	path string
}

type box struct{ X, Y, W, H float64 }

// screenshot takes a full-page PNG, saves it as dashboard-NN-name.png, and
// returns it decoded with the text of the page's live part and the boxes
// of the selectors (read just before and after the capture; taken again
// if a live refresh moved the page in between).
func (b *browser) screenshot(name string, selectors ...string) shot {
	b.t.Helper()
	boxes := func() map[string]box {
		out := map[string]box{}
		for _, sel := range selectors {
			r := eval[box](b, fmt.Sprintf(`(() => { const e = document.querySelector(%q); if (!e) return {X:-1,Y:-1,W:0,H:0};
				const r = e.getBoundingClientRect(); const s = window.devicePixelRatio || 1;
				return {X: (r.left + window.scrollX) * s, Y: (r.top + window.scrollY) * s, W: r.width * s, H: r.height * s}; })()`, sel))
			if r.W <= 0 {
				b.t.Fatalf("screenshot %s: no element %s on the page:\n%s", name, sel, b.pageText())
			}
			out[sel] = r
		}
		return out
	}
	for attempt := 0; ; attempt++ {
		before := boxes()
		ctx, cancel := context.WithTimeout(b.ctx, Deadline)
		buf, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		cancel()
		if err != nil {
			b.t.Fatalf("screenshot %s: %v", name, err)
		}
		text := eval[string](b, `document.getElementById("live").innerText`)
		after := boxes()
		if !maps.Equal(before, after) && attempt < 5 {
			continue // a live refresh moved the page: take it again
		}
		img, err := png.Decode(bytes.NewReader(buf))
		if err != nil {
			b.t.Fatalf("screenshot %s: not a PNG: %v", name, err)
		}
		b.n++
		path := filepath.Join(b.dir, fmt.Sprintf("dashboard-%02d-%s.png", b.n, name))
		writeFile(b.t, path, buf, 0o644)
		b.t.Logf("screenshot %s (%dx%d)", path, img.Bounds().Dx(), img.Bounds().Dy())
		return shot{img: img, text: text, rect: after, path: path}
	}
}

// colorShare is the share of the pixels on the middle row of the box of
// sel that have colour hex (within a small distance).
func (s shot) colorShare(sel, hex string) float64 {
	var want [3]int
	fmt.Sscanf(hex, "#%02x%02x%02x", &want[0], &want[1], &want[2])
	r := s.rect[sel]
	y := int(r.Y + r.H/2)
	x0, x1 := int(math.Ceil(r.X))+1, int(r.X+r.W)-1
	n, hit := 0, 0
	for x := x0; x < x1; x++ {
		if !(image.Point{x, y}.In(s.img.Bounds())) {
			continue
		}
		cr, cg, cb, _ := s.img.At(x, y).RGBA()
		n++
		d := math.Abs(float64(cr>>8)-float64(want[0])) + math.Abs(float64(cg>>8)-float64(want[1])) + math.Abs(float64(cb>>8)-float64(want[2]))
		if d < 30 {
			hit++
		}
	}
	if n == 0 {
		return 0
	}
	return float64(hit) / float64(n)
}

// columnShare is the share of the pixels on the column at x = box.X +
// dx of sel's box that have colour hex.
func (s shot) columnShare(sel string, dx float64, hex string) float64 {
	var want [3]int
	fmt.Sscanf(hex, "#%02x%02x%02x", &want[0], &want[1], &want[2])
	r := s.rect[sel]
	x := int(r.X + dx)
	n, hit := 0, 0
	for y := int(r.Y) + 8; y < int(r.Y+r.H)-8; y++ {
		cr, cg, cb, _ := s.img.At(x, y).RGBA()
		n++
		d := math.Abs(float64(cr>>8)-float64(want[0])) + math.Abs(float64(cg>>8)-float64(want[1])) + math.Abs(float64(cb>>8)-float64(want[2]))
		if d < 40 {
			hit++
		}
	}
	if n == 0 {
		return 0
	}
	return float64(hit) / float64(n)
}

// The dashboard's colours (controller/web/static/dashboard.css).
const (
	colorOK      = "#1a7f37"
	colorFailed  = "#cf222e"
	colorPending = "#e4e8ec"
)

// dashboardRollout declares rollout "fleet" of artifact to devices: a
// canary of one device held for 5s, then all of them; paused or not.
func dashboardRollout(artifact string, devices []string, paused bool) map[string]string {
	return map[string]string{"rollouts/fleet.yaml": fmt.Sprintf(`apiVersion: gitfleet.io/v1
kind: Rollout
metadata:
  name: fleet
spec:
  artifact: %s
  paused: %t
  target:
    devices: [%s]
  phases:
    - name: canary
      count: 1
      hold: 5s
    - name: all
      percent: 100
`, artifact, paused, strings.Join(devices, ", "))}
}

// TestDashboardInChromium drives the dashboard in real headless Chromium
// against `gitfleet serve` with Redis and three simulated devices running
// the real gitfleet-agent. The browser logs in through the login form;
// without reloading, the rollout page shows the rollout paused (empty
// bars), then progressing and complete once it is unpaused in Git (the
// canary bar fills green, counts change); the overview shows an alert a
// device's monitoring raises (its attacker-controlled evidence as text),
// then a refused commit with its file:line error while the last good
// commit is still served. Each step's screenshot is written to
// $GITFLEET_SCREENSHOTS (default .gitfleet/screenshots) and checked: the
// page text at the moment it was taken, and pixels of the progress bars
// and of the refused-commit banner.
func TestDashboardInChromium(t *testing.T) {
	if _, err := os.Stat(chromiumPath); err != nil && os.Getenv("CI") != "true" {
		t.Skipf("%s not installed (Debian: apt-get install chromium chromium-driver)", chromiumPath)
	}
	storeDir := filepath.Join(t.TempDir(), "artifact-store")
	priv, pub := generateKey(t)
	env, c := agentFleet(t, storeDir, map[string][]byte{"release": pub})
	const imageSize = 256 << 10
	initial := TestImage("dash-1", imageSize, true)
	next := WriteRootfsArtifact(t, storeDir, "dash-2", TestImage("dash-2", imageSize, true), priv)

	names := []string{"dev-1", "dev-2", "dev-3"}
	devs := map[string]*Agent{}
	roots := map[string]*monitorRoot{}
	declare := map[string]string{}
	for _, name := range names {
		roots[name] = newMonitorRoot(t)
		devs[name] = NewAgent(t, c, AgentOptions{Name: name, Image: initial, ArtifactName: "dash-1", VerifyKeys: [][]byte{pub}, MonitorRoot: roots[name].dir})
		maps.Copy(declare, devs[name].Manifest())
	}
	checks := checkManifests(map[string]string{"app-errors": "log: {path: /var/log/app.log, pattern: 'ERROR'}"}, "severity: error\n  interval: 1s")
	env.CommitAndServe(c, merge(declare, checks, ArtifactManifest(next, "2", "release"), dashboardRollout(next.Name, names, true)),
		"declare dev-1..3, the app-errors check and rollout fleet (paused)")
	for _, name := range names {
		if err := devs[name].Start(); err != nil {
			t.Fatal(err)
		}
	}

	br := startBrowser(t, c.CertPEM())

	// Logging in: a page asked for without a session is the login form,
	// with no fleet data; the form leads back to that page.
	br.do("open the rollout page", chromedp.Navigate(c.URL()+"/ui/rollouts/fleet"), chromedp.WaitVisible(chromedp.CSS(`#token`)))
	login := br.screenshot("login", "#login")
	if strings.Contains(login.text, "dash-2") || strings.Contains(login.text, "dev-1") || !strings.Contains(login.text, "Management token") {
		t.Errorf("login page text:\n%s", login.text)
	}
	br.do("log in", chromedp.SendKeys(chromedp.CSS(`#token`), env.Token), chromedp.Click(chromedp.CSS(`#login button[type=submit]`)),
		chromedp.WaitVisible(chromedp.CSS(`tr.phase[data-phase="canary"]`)))
	location := eval[string](br, `location.href`)
	if location != c.URL()+"/ui/rollouts/fleet" {
		t.Errorf("after logging in the browser is at %s, want the rollout page", location)
	}

	// Paused: nobody admitted, the phase says why.
	for _, name := range names {
		c.AwaitDevice(devs[name].ID(), "accepted", func(rec store.Device) bool { return rec.Status == store.DeviceAccepted })
	}
	awaitChecksApplied(t, devs["dev-1"], "app-errors")
	canaryBar := `tr.phase[data-phase="canary"] svg.bar`
	allBar := `tr.phase[data-phase="all"] svg.bar`
	br.await("the canary phase paused", `document.querySelector('tr.phase[data-phase="canary"]').innerText.includes("paused")`)
	paused := br.screenshot("rollout-paused", canaryBar, allBar)
	if !strings.Contains(paused.text, "paused (spec.paused is set)") || !strings.Contains(paused.text, "0/1 admitted") {
		t.Errorf("paused rollout page text:\n%s", paused.text)
	}
	if g := paused.colorShare(canaryBar, colorOK); g > 0.02 {
		t.Errorf("paused: the canary bar is %.0f%% green, want none", g*100)
	}
	if e := paused.colorShare(canaryBar, colorPending); e < 0.9 {
		t.Errorf("paused: the canary bar is %.0f%% empty, want all of it", e*100)
	}

	// Unpaused in Git: the page follows the rollout by itself (no reload).
	sha := env.CommitAndServe(c, dashboardRollout(next.Name, names, false), "unpause rollout fleet")
	t.Logf("unpaused at %.12s", sha)
	// The canary succeeded; the next phase holds: one bar full, one empty.
	br.await("the canary to succeed and the next phase to hold",
		`document.querySelector('tr.phase[data-phase="canary"] .n-ok').innerText.startsWith("1 ") && document.querySelector('tr.phase[data-phase="all"]').innerText.includes("holds after the previous phase")`)
	progress := br.screenshot("rollout-progress", canaryBar, allBar)
	if g := progress.colorShare(canaryBar, colorOK); g < 0.95 {
		t.Errorf("canary succeeded: its bar is %.0f%% green, want all of it", g*100)
	}
	if g := progress.colorShare(allBar, colorOK); g > 0.02 {
		t.Errorf("holding: the next phase's bar is %.0f%% green, want none", g*100)
	}
	br.await("the rollout to complete", `!!document.querySelector('#rollout-fleet h2 .state.completed')`)
	done := br.screenshot("rollout-completed", canaryBar, allBar)
	if !strings.Contains(progress.text, "1 succeeded") || !strings.Contains(progress.text, "0 succeeded") || !strings.Contains(done.text, "completed") {
		t.Errorf("rollout page text in progress:\n%s\ncompleted:\n%s", progress.text, done.text)
	}
	for _, ph := range []string{"canary", "all"} {
		sel := fmt.Sprintf(`tr.phase[data-phase=%q] svg.bar`, ph)
		g0, g1, g2 := paused.colorShare(sel, colorOK), progress.colorShare(sel, colorOK), done.colorShare(sel, colorOK)
		t.Logf("phase %s: green %.0f%% paused, %.0f%% in progress, %.0f%% completed", ph, g0*100, g1*100, g2*100)
		if !(g0 <= g1+0.01 && g1 <= g2+0.01) || g2 < 0.5 {
			t.Errorf("phase %s: the green part of its bar does not grow to most of it: %.2f, %.2f, %.2f", ph, g0, g1, g2)
		}
	}
	if g := done.colorShare(canaryBar, colorOK); g < 0.95 {
		t.Errorf("completed: the canary bar is %.0f%% green, want all of it", g*100)
	}
	br.do("open the rollout's devices", chromedp.WaitVisible(chromedp.CSS(`#rollout-devices`)))
	devText := br.text("#rollout-devices")
	for _, name := range names {
		if !strings.Contains(devText, name) {
			t.Errorf("the rollout's devices do not list %s:\n%s", name, devText)
		}
	}

	// An alert: dev-1's monitoring matches a log line whose text is the
	// device's to choose; the overview lists it, as text.
	br.do("open the overview", chromedp.Navigate(c.URL()+"/"), chromedp.WaitVisible(chromedp.CSS(`#open-alerts`)))
	evidence := `ERROR <b id="injected">disk</b> full`
	roots["dev-1"].appendLine("/var/log/app.log", evidence)
	br.await("the alert on the overview", `document.querySelector('#open-alerts').innerText.includes("app-errors")`)
	alert := br.screenshot("overview-alert", `#open-alerts`, `#rollouts-summary svg.bar`)
	if !strings.Contains(alert.text, `<b id="injected">disk</b>`) || !strings.Contains(alert.text, "dev-1") {
		t.Errorf("the overview does not show the alert's evidence as text:\n%s", alert.text)
	}
	if eval[bool](br, `!!document.getElementById("injected")`) {
		t.Error("the alert's evidence became markup on the page")
	}
	if got := br.text(".n-open"); got != "1" {
		t.Errorf("open alerts on the overview: %q, want 1", got)
	}
	if g := alert.colorShare(`#rollouts-summary svg.bar`, colorOK); g < 0.95 {
		t.Errorf("the overview's bar of the completed rollout is %.0f%% green", g*100)
	}

	// A refused commit: the overview says so prominently, with the
	// file:line error, and still shows the last good commit served.
	good := sha
	bad := env.Commit(map[string]string{"rollouts/broken.yaml": "apiVersion: gitfleet.io/v1\nkind: Rollout\nmetadata:\n  name: broken\nspec:\n  artifact: 12\n"},
		"add a broken rollout")
	if code := env.Push(c, bad, false); code/100 != 2 {
		t.Fatalf("push: HTTP %d", code)
	}
	c.AwaitRefused(bad)
	br.await("the refused commit on the overview", `!!document.querySelector('#refused.current')`)
	refused := br.screenshot("overview-refused", `#refused`, `#serving`)
	if !strings.Contains(refused.text, "Commit refused") || !strings.Contains(refused.text, bad[:12]) || !strings.Contains(refused.text, "rollouts/broken.yaml:") {
		t.Errorf("the overview does not show %.12s refused with its file:line error:\n%s", bad, refused.text)
	}
	if serving := br.text("#serving .big"); !strings.Contains(serving, good[:12]) || strings.Contains(serving, bad[:12]) {
		t.Errorf("the overview's served commit: %q, want %.12s", serving, good)
	}
	// The banner's frame is red: the column two pixels in from its left edge.
	if r := refused.columnShare(`#refused`, 1, colorFailed); r < 0.8 {
		t.Errorf("the refused-commit banner's left border is %.0f%% red", r*100)
	}

	// The devices page: every device on the new artifact, the alert beside dev-1.
	br.do("open the devices", chromedp.Navigate(c.URL()+"/ui/devices"), chromedp.WaitVisible(chromedp.CSS(`#devices`)))
	br.await("every device on dash-2", `Array.from(document.querySelectorAll('#devices tr.device')).every(r => r.innerText.includes("dash-2"))`)
	devices := br.screenshot("devices", `#devices`)
	if !strings.Contains(devices.text, "app-errors") || strings.Count(devices.text, "dash-2") < len(names) {
		t.Errorf("devices page text:\n%s", devices.text)
	}
	for _, name := range names {
		if err := devs[name].Err(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}
