package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"maps"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/artifact"
	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gitfleet/gitfleet/device/agent"
)

// Goals of the agent with every monitoring probe at its default interval.
const (
	monitorGoalCPUPercent = 1.0 // of one core, averaged over the window
	monitorGoalRSSMiB     = 32.0
)

// monitorBenchDuration is the measured window of BenchmarkAgentMonitoring:
// GITFLEET_BENCH_DURATION (a Go duration, at least 10s), default 10m, 1m
// with -short.
func monitorBenchDuration(b *testing.B) time.Duration {
	s := os.Getenv("GITFLEET_BENCH_DURATION")
	if s == "" {
		if testing.Short() {
			return time.Minute
		}
		return 10 * time.Minute
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 10*time.Second {
		b.Fatalf("GITFLEET_BENCH_DURATION=%q: want a Go duration of at least 10s, such as 30s or 10m", s)
	}
	return d
}

// setuidBenchPaths are the trees the benchmark's setuid check walks, under
// the real /usr (the monitor root's /usr is a link to it): the whole of a
// small device's /usr, and within the probe's 100,000-entry bound here.
var setuidBenchPaths = []string{"/usr/bin", "/usr/sbin", "/usr/lib", "/usr/libexec"}

// fileChangeBenchPaths are the files the benchmark's fileChange check
// watches: the root's own /etc files and two real executables.
var fileChangeBenchPaths = []string{"/etc/app.conf", "/etc/passwd", "/etc/group", "/etc/hosts", "/usr/bin/env", "/usr/bin/tail"}

// newBenchMonitorRoot makes the directory the monitored agent sees as "/":
// the real /proc, /sys and /usr (links), and its own /etc and /var/log.
func newBenchMonitorRoot(b testing.TB) string {
	b.Helper()
	dir := b.TempDir()
	for _, d := range []string{"proc", "sys", "usr"} {
		if err := os.Symlink("/"+d, filepath.Join(dir, d)); err != nil {
			b.Fatal(err)
		}
	}
	writeFile(b, filepath.Join(dir, "etc", "app.conf"), []byte("level = info\nworkers = 4\n"), 0o644)
	for _, f := range []string{"passwd", "group", "hosts"} {
		body, err := os.ReadFile("/etc/" + f)
		if err != nil {
			body = []byte("root:x:0:0:root:/root:/bin/sh\n")
		}
		writeFile(b, filepath.Join(dir, "etc", f), body, 0o644)
	}
	writeFile(b, filepath.Join(dir, "var", "log", "app.log"), []byte("app started\n"), 0o644)
	writeFile(b, filepath.Join(dir, "var", "log", "auth.log"), []byte("Dec  2 06:00:00 dev CRON[1]: pam_unix(cron:session): session opened for user root\n"), 0o640)
	return dir
}

// countEntries counts what a walk of the trees visits (the setuid probe's
// bound is 100,000).
func countEntries(paths []string) int {
	n := 0
	for _, p := range paths {
		filepath.WalkDir(p, func(string, fs.DirEntry, error) error { n++; return nil })
	}
	return n
}

// monitorBenchChecks declares one check of every probe, with no interval:
// each scans at its probe's default. root is the monitor root (the
// "@command" source runs on the host, so it names the root's file).
func monitorBenchChecks(root, svc, rst string) map[string]string {
	quote := func(ss []string) string { return "[" + strings.Join(ss, ", ") + "]" }
	checks := map[string]string{
		// A line a second; a match a minute, which expires after 30 s: an
		// alert raised and one expired every minute.
		"app-errors": "expiry: 30s\n  log: {path: /var/log/app.log, pattern: 'ERROR'}",
		// The same file through a command's output: one child process,
		// one line a second read from its pipe.
		"app-panics": "expiry: 2m\n  log: {path: '@tail -n 0 -F " + filepath.Join(root, "var", "log", "app.log") + "', pattern: 'panic:'}",
		"svc-down":   "service: {name: " + svc + "}",
		"ports":      "listeningPorts: {allow: [22]}",
		"suid":       "setuid: {paths: " + quote(setuidBenchPaths) + "}",
		"conf":       "fileChange: {paths: " + quote(fileChangeBenchPaths) + "}",
		"restart":    "processRestart: {name: " + rst + "}",
		"traffic":    "traffic: {interface: lo, maxBytes: 1099511627776}",
		"wifi":       "wifi: {}",
		"root-login": "rootLogin: {log: /var/log/auth.log}",
		"failed":     "failedDeployments: {}",
		"inject":     "libraryInjection: {}",
	}
	return checkManifests(checks, "severity: warning")
}

// logWriter appends to the monitor root's logs what a busy little device
// writes: app.log a line a second, an ERROR every minute and a panic every
// five; auth.log a cron session every 30 s and a failed root login every
// five minutes.
func logWriter(ctx context.Context, root string, errs chan<- error) {
	appendTo := func(name, line string) error {
		f, err := os.OpenFile(filepath.Join(root, "var", "log", name), os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			return err
		}
		_, err = f.WriteString(line + "\n")
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		return err
	}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for i := 1; ; i++ {
		select {
		case <-ctx.Done():
			errs <- nil
			return
		case now := <-t.C:
			stamp := now.UTC().Format(time.RFC3339)
			line := stamp + " INFO GET /api/status 200 3ms"
			switch {
			case i%300 == 0:
				line = stamp + " panic: runtime error: index out of range [3] with length 3"
			case i%60 == 0:
				line = stamp + " ERROR payment worker: upstream timed out"
			}
			err := appendTo("app.log", line)
			if err == nil && i%30 == 0 {
				sys := now.Format(time.Stamp)
				line := sys + " dev CRON[2211]: pam_unix(cron:session): session opened for user root(uid=0) by (uid=0)"
				if i%300 == 0 {
					line = sys + " dev sshd[4242]: Failed password for root from 203.0.113.9 port 52211 ssh2"
				}
				err = appendTo("auth.log", line)
			}
			if err != nil {
				errs <- err
				return
			}
		}
	}
}

// benchDaemon is a gitfleet-agent daemon the benchmark starts itself (log
// level info, as on a device) on a simulated device made by NewAgent.
type benchDaemon struct {
	name   string
	cmd    *exec.Cmd
	log    *lockedBuffer
	exited chan struct{}
}

func startBenchDaemon(b *testing.B, bin string, a *Agent, extra ...string) *benchDaemon {
	b.Helper()
	if _, err := a.Boot(); err != nil {
		b.Fatal(err)
	}
	d := &benchDaemon{name: a.Name, log: &lockedBuffer{}, exited: make(chan struct{})}
	args := append([]string{"--config", a.ConfigPath(), "--log-level", "info"}, extra...)
	d.cmd = exec.Command(bin, append(args, "daemon")...)
	d.cmd.Dir, d.cmd.Stdout, d.cmd.Stderr = a.Dir(), d.log, d.log
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := d.cmd.Start(); err != nil {
		b.Fatal(err)
	}
	go func() { d.cmd.Wait(); close(d.exited) }()
	b.Cleanup(d.stop)
	return d
}

func (d *benchDaemon) pid() int { return d.cmd.Process.Pid }

func (d *benchDaemon) running() bool {
	select {
	case <-d.exited:
		return false
	default:
		return true
	}
}

// stop ends the daemon's process group (SIGTERM, then SIGKILL), by its PID.
func (d *benchDaemon) stop() {
	if !d.running() {
		return
	}
	syscall.Kill(-d.pid(), syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(10 * time.Second):
		syscall.Kill(-d.pid(), syscall.SIGKILL)
		<-d.exited
	}
}

// windowUsage is one daemon's usage over the measured window.
type windowUsage struct {
	start, end TreeUsage
	maxRSS     int64           // highest VmRSS sampled in the window
	perMinute  []time.Duration // tree CPU of each whole minute of the window
}

func (w *windowUsage) treePercent(d time.Duration) float64 {
	return 100 * (w.end.CPU - w.start.CPU).Seconds() / d.Seconds()
}

func (w *windowUsage) ownPercent(d time.Duration) float64 {
	return 100 * (w.end.Own.CPU - w.start.Own.CPU).Seconds() / d.Seconds()
}

// BenchmarkAgentMonitoring measures the real gitfleet-agent daemon on a
// simulated device with one monitoring check of every probe, each at its
// probe's default interval, against a real `gitfleet serve` (with Redis),
// for GITFLEET_BENCH_DURATION (default 10m; 1m with -short) after a
// warm-up: key generation, authentication, the first poll and the first
// scan of every check (baselines, digests, the first set-uid walk) are
// not in the window. Beside it, over the same window on the same
// controller, the same daemon with --no-monitor: the difference is the
// monitoring's own cost.
//
//	GITFLEET_BENCH_DURATION=10m go test -run '^$' -bench BenchmarkAgentMonitoring -benchtime 1x -timeout 40m ./controller/e2e/
//
// The device: update poll every 30 min (the agent's default), a log file
// written a line a second with an ERROR every minute (expiry 30 s, so an
// alert raised and expired, and delivered, every minute), the same file
// followed by "@tail -F" (a child process), a service and a restart check
// on processes that run, listening ports (the machine's, so ports other
// than 22 are alerts), a set-uid walk of the real /usr/bin, /usr/sbin,
// /usr/lib and /usr/libexec (tens of thousands of entries), fileChange on
// six files, traffic on lo, wifi (no wireless here: one check error), root
// logins in an auth log, failed deployments and library injection.
//
// CPU is counted in USER_HZ ticks (10 ms) from /proc/PID/stat over the
// daemon's process tree: the daemon, the children it waited for and its
// live descendants (the @command's tail). Reported:
//
//	cpu-%-of-one-core   the monitored daemon's tree, CPU time ÷ wall time × 100 (goal < 1)
//	agent-cpu-%         the daemon process alone (with the children it reaped)
//	off-cpu-%           the daemon with --no-monitor
//	monitoring-cpu-%    cpu-%-of-one-core − off-cpu-%
//	peak-rss-MiB        the monitored daemon's VmHWM over its life (goal < 32)
//	rss-MiB             its VmRSS at the window's end
//	children-rss-MiB    its descendants' VmRSS at the end
//	off-peak-rss-MiB, off-rss-MiB  the same of the --no-monitor daemon
func BenchmarkAgentMonitoring(b *testing.B) {
	window := monitorBenchDuration(b)
	bin := BenchAgentBinary(b)
	if n := countEntries(setuidBenchPaths); n > 100000 {
		b.Fatalf("the set-uid trees %v hold %d entries here, over the probe's 100,000 bound: trim setuidBenchPaths", setuidBenchPaths, n)
	} else {
		b.Logf("set-uid check walks %v: %d entries", setuidBenchPaths, n)
	}

	_, pub, err := artifact.GenerateKey(artifact.ECDSAP256)
	if err != nil {
		b.Fatal(err)
	}
	env := newEnv(b, benchFleet(b, pub))
	c := env.StartController("bench")
	c.AwaitServing(env.Repo.Head())

	suffix := make([]byte, 3)
	rand.Read(suffix)
	svcName, rstName := "gfs"+hex.EncodeToString(suffix), "gfr"+hex.EncodeToString(suffix)
	namedProcess(b, svcName)
	namedProcess(b, rstName)

	root := newBenchMonitorRoot(b)
	mon := NewAgent(b, c, AgentOptions{Name: "dev-mon", MonitorRoot: root, UpdatePollSeconds: agent.DefaultUpdatePoll})
	off := NewAgent(b, c, AgentOptions{Name: "dev-off", UpdatePollSeconds: agent.DefaultUpdatePoll})
	env.CommitAndServe(c, merge(mon.Manifest(), off.Manifest(), monitorBenchChecks(root, svcName, rstName)), "declare the devices and one check of every probe")

	ctx, cancel := context.WithCancel(context.Background())
	writerDone := make(chan error, 1)
	go logWriter(ctx, root, writerDone)
	defer func() {
		cancel()
		if err := <-writerDone; err != nil {
			b.Errorf("log writer: %v", err)
		}
	}()

	dMon := startBenchDaemon(b, bin, mon)
	dOff := startBenchDaemon(b, bin, off, "--no-monitor")
	defer func() {
		if b.Failed() {
			b.Logf("dev-mon log (tail):\n%s", tailLines(dMon.log.String(), 40))
			b.Logf("dev-off log (tail):\n%s", tailLines(dOff.log.String(), 20))
		}
	}()
	for _, a := range []*Agent{mon, off} {
		c.AwaitDevice(a.ID(), "accepted with its inventory", func(d store.Device) bool {
			return d.Status == store.DeviceAccepted && Inventory(d)["artifact_name"] != ""
		})
	}
	all := []string{"app-errors", "app-panics", "svc-down", "ports", "suid", "conf", "restart", "traffic", "wifi", "root-login", "failed", "inject"}
	awaitChecksApplied(b, mon, all...)
	// Warm-up: the first scans are done; let the first deliveries (the
	// machine's listening ports, the wifi check error) go out.
	time.Sleep(15 * time.Second)

	for i := 0; i < b.N; i++ {
		on, offU := measureWindow(b, window, dMon, dOff)
		report(b, window, on, offU, dMon, dOff, c, mon)
	}
}

// measureWindow samples both daemons' trees every second for window.
func measureWindow(b *testing.B, window time.Duration, dMon, dOff *benchDaemon) (on, off windowUsage) {
	read := func(d *benchDaemon) TreeUsage {
		u, err := ReadTreeUsage(d.pid())
		if err != nil {
			b.Fatalf("%s: %v (exited: %v)\n%s", d.name, err, !d.running(), tailLines(d.log.String(), 30))
		}
		return u
	}
	b.ResetTimer()
	on.start, off.start = read(dMon), read(dOff)
	start := time.Now()
	minuteStart := on.start.CPU
	next := start.Add(time.Minute)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for now := range tick.C {
		done := !now.Before(start.Add(window))
		on.end, off.end = read(dMon), read(dOff)
		on.maxRSS = max(on.maxRSS, on.end.Own.RSS)
		off.maxRSS = max(off.maxRSS, off.end.Own.RSS)
		if !now.Before(next) {
			on.perMinute = append(on.perMinute, on.end.CPU-minuteStart)
			minuteStart, next = on.end.CPU, next.Add(time.Minute)
		}
		if done {
			break
		}
	}
	b.StopTimer()
	return on, off
}

func report(b *testing.B, window time.Duration, on, off windowUsage, dMon, dOff *benchDaemon, c *Controller, mon *Agent) {
	mib := func(n int64) float64 { return float64(n) / (1 << 20) }
	onPct, offPct := on.treePercent(window), off.treePercent(window)
	b.ReportMetric(onPct, "cpu-%-of-one-core")
	b.ReportMetric(on.ownPercent(window), "agent-cpu-%")
	b.ReportMetric(offPct, "off-cpu-%")
	b.ReportMetric(onPct-offPct, "monitoring-cpu-%")
	b.ReportMetric(mib(on.end.Own.PeakRSS), "peak-rss-MiB")
	b.ReportMetric(mib(on.end.Own.RSS), "rss-MiB")
	b.ReportMetric(mib(on.end.DescendantRSS), "children-rss-MiB")
	b.ReportMetric(mib(off.end.Own.PeakRSS), "off-peak-rss-MiB")
	b.ReportMetric(mib(off.end.Own.RSS), "off-rss-MiB")

	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "MISSED"
	}
	b.Logf("window %s: monitored agent %.3f %% of one core (%s CPU: agent %s, its %d live descendants %s; goal < %.0f %%: %s); --no-monitor agent %.3f %% (%s); monitoring's share %.3f %%",
		window, onPct, on.end.CPU-on.start.CPU, on.end.Own.CPU-on.start.Own.CPU, on.end.Descendants,
		(on.end.CPU-on.start.CPU)-(on.end.Own.CPU-on.start.Own.CPU), monitorGoalCPUPercent, verdict(onPct < monitorGoalCPUPercent),
		offPct, off.end.CPU-off.start.CPU, onPct-offPct)
	b.Logf("memory: monitored agent VmHWM %.1f MiB (goal < %.0f MiB: %s), VmRSS %.1f MiB at the end (highest sampled in the window %.1f MiB), descendants %.1f MiB; --no-monitor agent VmHWM %.1f MiB, VmRSS %.1f MiB",
		mib(on.end.Own.PeakRSS), monitorGoalRSSMiB, verdict(mib(on.end.Own.PeakRSS) < monitorGoalRSSMiB), mib(on.end.Own.RSS), mib(on.maxRSS),
		mib(on.end.DescendantRSS), mib(off.end.Own.PeakRSS), mib(off.end.Own.RSS))
	if len(on.perMinute) > 0 {
		ms := make([]string, len(on.perMinute))
		for i, d := range on.perMinute {
			ms[i] = fmt.Sprint(d.Milliseconds())
		}
		b.Logf("monitored agent's CPU per minute of the window, ms: %s", strings.Join(ms, " "))
	}

	// The monitoring worked: what the controller holds of dev-mon.
	alerts, err := c.Alerts(url.Values{"device": {"dev-mon"}, "limit": {"1000"}})
	if err != nil {
		b.Fatal(err)
	}
	byCheck := map[string]int{}
	raised := map[string]int64{}
	for _, a := range alerts {
		byCheck[a.Check]++
		raised[a.Check] += a.Count
	}
	var summary []string
	for _, k := range slices.Sorted(maps.Keys(byCheck)) {
		summary = append(summary, fmt.Sprintf("%s: %d keys, raised %d times", k, byCheck[k], raised[k]))
	}
	b.Logf("alerts of dev-mon at the controller: %s", strings.Join(summary, "; "))
	if window >= 2*time.Minute && raised["app-errors"] == 0 {
		b.Errorf("dev-mon raised no app-errors alert in %s although app.log had an ERROR every minute:\n%s", window, tailLines(dMon.log.String(), 40))
	}
	var st struct {
		Checks map[string]struct {
			LastError string `json:"last_error"`
		} `json:"checks"`
	}
	if raw, err := os.ReadFile(filepath.Join(mon.Dir(), "data", "monitor.json")); err == nil && json.Unmarshal(raw, &st) == nil {
		for name, cs := range st.Checks {
			if cs.LastError != "" {
				b.Logf("check %s reports an error (sent once as check_error): %s", name, cs.LastError)
			}
		}
	}
	for _, d := range []*benchDaemon{dMon, dOff} {
		if !d.running() {
			b.Errorf("%s exited during the window:\n%s", d.name, tailLines(d.log.String(), 30))
		}
	}
	if n := bytes.Count([]byte(dMon.log.String()), []byte("monitor command ended")); n > 0 {
		b.Logf("the @command source ended %d times", n)
	}
}
