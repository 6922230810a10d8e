// Command gitfleet-loadgen measures how many device polls `gitfleet serve`
// answers on this machine, beside the same generator against a trivial
// HTTPS handler (the ceiling), and how much Redis memory a device takes.
//
// In one run it
//
//  1. starts its own redis-server (hash-max-listpack-value 1024, no
//     persistence) and registers -devices accepted devices in it through
//     the store API (store.SeeDevice and SetInventory with a typical
//     Mender inventory, -seeders at once), measuring INFO used_memory
//     before and after; then the same for -compare-devices devices in a
//     second redis-server with Redis's default hash-max-listpack-value
//     (64), so both figures are reported; with -device-ca, each device
//     is recorded as the device API records one a DeviceCA admitted by
//     its client certificate: identity {serial: d<i>} (the certificate's
//     subject serial number), its ID derived from it, the certificate's
//     key bound, accepted;
//  2. writes a fleet repository declaring every device (Device manifests
//     with spec.devices lists of 10,000, admitted by identity; with
//     -device-lists, device-list files of 10,000 lines instead), a signed
//     artifact and a rollout targeting the whole fleet in three phases:
//     canary (10 devices), half (50 %), all (100 %, needs an approval);
//     with the mtls mode, also a DeviceCA (a test CA made for the run);
//     with -device-ca, that DeviceCA and no Device manifest or device
//     list at all: the rollout's target (all) is then open to the
//     devices the DeviceCA admits, each called loadgen-d<i>;
//  3. starts `gitfleet serve` on 127.0.0.1 with that repository and Redis,
//     waits until it serves the commit, then records the rollout's
//     progress through the store API as the controller would have: every
//     device of the canary and half phases (the ones the controller ranks
//     there, by rollout.Key) admitted, all but 100 finished with success,
//     and measures the Redis memory this adds. With -device-ca the
//     controller's own plan (rollout.Compile of the repository) decides,
//     for devices asking in index order, who is admitted where: the
//     canary (a count phase) takes the first ten that ask, the half phase
//     (50 %) every later device whose rollout.Position is below 0.5, about
//     half of them. So a poll is by device:
//     finished (204), in flight (200 and the deployment again, with a
//     presigned URL) or waiting for the approval of the last phase (204),
//     each through the whole decision (route, progress, deployment,
//     gates);
//  4. authenticates -auth-sample devices for real (Ed25519-signed
//     auth_requests; gitfleet serve's CPU per request is reported) and
//     mints a token for every device with the key the controller shares
//     through the store (the same JWT the device API issues), checking
//     that a minted token has the claims of the one the controller issued
//     to the same device and that the controller accepts minted tokens;
//     with -device-ca, each device of the sample authenticates on a TLS
//     connection of its own presenting its certificate (its key, its
//     serial), and the tokens carry the certificate as the controller
//     issues them (gf.crt "loadgen/<serial in hex>");
//  5. for each mode — kept-alive HTTP/1.1 connections, kept-alive HTTP/2,
//     a new TLS connection (full handshake) per poll, and a new mutual-TLS
//     connection per poll (mtls: each client presents a client
//     certificate of the test CA, which the DeviceCA declares) — drives
//     POST v2 deployments/next from -clients concurrent clients, each poll
//     for a random device, for -duration, first against a trivial HTTPS
//     handler (a separate process serving 204 with the controller's
//     certificate; for mtls it asks for and verifies client certificates
//     of the test CA), then against gitfleet, in turn -rounds times
//     (default 3); and prints polls/s, p50 (the median round's) and p99
//     (the highest round's) latency, the ratio to the ceiling (the
//     median of the rounds' ratios: one ceiling run and one gitfleet run
//     on a shared machine can be ±0.1 apart), gitfleet serve's CPU per poll
//     and, for mtls, in how many handshakes each server asked for the
//     client certificate (a controller that does not ask measures plain
//     TLS: the report says so); with -device-ca, every connection of
//     every mode presents a client certificate of the test CA, as a
//     device the DeviceCA admits presents its certificate on each TLS
//     connection, and the ceiling asks for and verifies one in every
//     mode too (newconn and mtls are then the same measurement). The
//     controller does not bind a token to the connection's certificate
//     (a token is enough on any connection), so the clients' certificates
//     are the test CA's client certificates, not each polled device's;
//  6. lets the 100 in-flight devices finish (a poll, then the status
//     reports installing, rebooting, success): gitfleet serve's CPU and
//     Redis commands per report;
//  7. commits -reloads changes to the rollout, each followed by POST
//     /api/management/v1/reconcile until it is live: the per-commit
//     reload time, gitfleet serve's CPU for it and its peak RSS;
//  8. with -restart (the default), stops gitfleet serve and starts it
//     again on the same data directory, as a controller comes back: the
//     clone is there, so this is the time to load and serve the fleet
//     (the first start's "ready" includes cloning the repository), with
//     its CPU and peak RSS until then, against the goal of < 5 s and
//     < 1 GiB.
//
// With -device-ca the report's header says "behind a DeviceCA, N devices
// registered in Redis", and each rollout commit is held against the goal
// of being live in < 0.5 s. For the goal of a 1,000,000-device fleet
// behind a DeviceCA:
//
//	go run ./cmd/gitfleet-loadgen -device-ca -devices 1000000
//
// By default (-warm), every device polls once before the modes, as in
// a fleet that has been polling for a poll interval: the modes then
// measure a controller that has seen its fleet (its deployment index
// caught up, its heap at its working size); that first pass, the first
// poll of every device after a start, is measured and reported on its
// own line. With -warm=false a short run at 1,000,000 devices measures
// mostly first polls.
//
// With -profile DIR, gitfleet serve also serves Go's pprof profiles on a
// loopback port, and the run saves its CPU profile in each mode
// (DIR/MODE.pprof), during the restart (DIR/restart.pprof) and its heap
// after the polls (DIR/heap.pprof), for `go tool pprof`.
//
// Everything listens on 127.0.0.1 and is stopped at the end.
//
//	go run ./cmd/gitfleet-loadgen -devices 1000000 -device-lists
//	go run ./cmd/gitfleet-loadgen -devices 100000 -clients 32 -duration 10s
//
// docs/benchmarks.md has the figures of these runs on the development
// machine, before and after the token cache and device lists.
//
// # Two replicas on a Redis Cluster (-cluster)
//
// With -cluster the program starts three redis-server nodes in cluster
// mode on free loopback ports and joins them (redis-cli --cluster create),
// seeds the fleet (-devices, default 100,000) into the cluster, writes the
// repository as above and starts two gitfleet serve replicas sharing the
// cluster. It then polls with kept-alive HTTP/1.1 from -clients clients:
// all to replica A, all to B, then half to each (as a round-robin load
// balancer would), and reports polls/s in total and per replica, each
// replica's CPU per poll and Redis commands per poll: how the throughput
// divides between the replicas.
//
//	go run ./cmd/gitfleet-loadgen -cluster
//
// # The alert storm (-alerts)
//
// With -alerts the program measures instead how fast the controller takes
// devices' monitoring alerts, and what that does to polls. Steps 1 to 4
// are as above (-devices defaults to 10,000 and -compare-devices to 0),
// with -checks MonitorChecks (default 10) in the fleet repository, each
// for the whole fleet with a log probe and severity error. Then it
//
//  1. asks GET devicemonitor/checks for one device, which must list every
//     check (else the alerts would be acknowledged but not recorded), and
//     again with its ETag, which must answer 304;
//  2. polls deployments/next from -pollers clients (default 8, kept-alive
//     HTTP/1.1) for -duration: the baseline;
//  3. the storm: every device posts its -alerts-per-device alerts (default
//     10, each for a distinct check and key, Seq 1…n) to POST
//     devicemonitor/alerts in batches of -alert-batch events (default 10:
//     one request per device, within the per-device rate limit), its
//     batches in order, from -clients concurrent clients as fast as the
//     controller answers, over kept-alive HTTP/1.1 connections (-storm-mode
//     h2, or newconn for a TLS handshake per batch); a 429 is retried after its Retry-After, a
//     transport error or 5xx up to 5 times. The pollers poll throughout;
//  4. checks that every alert was acknowledged (AlertAck.Seq of each
//     batch at least its last Seq) and recorded: the store's ListAlerts
//     for every device must hold all of its alerts open, and the
//     management API's GET /api/management/v1/alerts must list a full page
//     of open alerts and every alert of sampled devices by name;
//  5. reports alerts/s (acknowledged alerts over the storm's wall time),
//     per-batch latency, 429s, the CPU gitfleet serve and redis-server
//     used, Redis memory and commands per batch, and the polls' p50/p99 during the storm beside the baseline, with the
//     goals: at least 5,000 alerts/s, poll p99 under 20 ms during the
//     storm, and no alert lost. It exits 1 if an alert was lost.
//
// For example:
//
//	go run ./cmd/gitfleet-loadgen -alerts
//	go run ./cmd/gitfleet-loadgen -alerts -devices 1000 -alerts-per-device 50 -alert-batch 5
//
// Figures of `go run ./cmd/gitfleet-loadgen -alerts` (10,000 devices, 10
// checks, 100,000 alerts as one batch of 10 per device from 32 clients, 8
// pollers, a 20 s baseline), twice, and with -storm-mode newconn, on the
// 2-CPU development machine, 2026-12-02 (shared with other work: load
// average 4 to 6):
//
//	storm           alerts/s  batch p50/p99      polls/s  poll p50/p99     baseline polls/s, p50/p99
//	32 clients         11440  24.40ms/66.73ms       5683  1.05ms/7.41ms     9486  685µs/4.42ms
//	32 clients         12707  23.03ms/58.90ms       6349  848µs/7.24ms     15131  404µs/3.40ms
//	32, newconn         4670  66.03ms/136.21ms      1185  5.22ms/30.65ms   11997  535µs/4.08ms
//
//	every run: 100,000 of 100,000 alerts acknowledged and recorded (the
//	store's ListAlerts for each device, the management API), no 429 or 503
//	goals: met with kept-alive connections (as the agent sends); not with
//	a TLS handshake per batch (about 1 ms of CPU each, before the
//	controller can hold a batch back)
//	Redis: 415 B per alert record, 7 commands per batch
//	CPU (polls included): gitfleet serve 70 µs per alert (118 µs with a
//	TLS handshake per batch), redis-server 20–23 µs
//
// The controller processes at most 2×GOMAXPROCS alert batches at once and
// lets the others wait, so polls keep the CPU they need; without that bound
// the storm ran at 18,000–21,000 alerts/s with a poll p99 of 15–19 ms.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gitfleet/gitfleet/device/monitor"
)

type config struct {
	devices        int
	compareDevices int
	seeders        int
	clients        int
	duration       time.Duration
	warmup         time.Duration
	authSample     int
	modes          string
	gitfleet       string
	keep           bool
	startTimeout   time.Duration
	reloads        int
	deviceLists    bool
	deviceCA       bool
	cluster        bool
	restart        bool
	warmTokens     bool
	rounds         int           // ceiling and gitfleet measured in turn this many times per mode
	profile        string        // directory for gitfleet serve's profiles (profile.go)
	restartProfile time.Duration // how long restart.pprof profiles
	debugAddr      string        // gitfleet serve's --debug-listen, with -profile

	// The alert storm (-alerts).
	alerts          bool
	alertsPerDevice int
	alertBatch      int
	checks          int
	pollers         int
	stormMode       string
}

func main() {
	// The ceiling server is this program run again.
	if len(os.Args) > 1 && os.Args[1] == "ceiling-server" {
		if err := ceilingServer(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "ceiling server:", err)
			os.Exit(1)
		}
		return
	}
	var c config
	flag.IntVar(&c.devices, "devices", 1_000_000, "devices registered in Redis and declared in the fleet repository")
	flag.IntVar(&c.compareDevices, "compare-devices", 100_000, "devices registered in a second Redis with default hash settings, for its memory figure (0: skip)")
	flag.IntVar(&c.seeders, "seeders", 128, "concurrent store writers while registering devices")
	flag.IntVar(&c.clients, "clients", 32, "concurrent polling clients")
	flag.DurationVar(&c.duration, "duration", 20*time.Second, "measured duration of each mode and target, in each round")
	flag.IntVar(&c.rounds, "rounds", 3, "measure the ceiling and gitfleet in turn this many times per mode; the ratio reported is the median of the rounds' ratios (one ceiling run and one gitfleet run on a shared machine can be ±0.1 apart)")
	flag.DurationVar(&c.warmup, "warmup", 2*time.Second, "unmeasured polling before each measurement")
	flag.IntVar(&c.authSample, "auth-sample", 1000, "devices that authenticate with signed auth requests")
	flag.StringVar(&c.modes, "modes", "keepalive,h2,newconn,mtls", "modes to run: keepalive (HTTP/1.1), h2, newconn (a TLS handshake per poll), mtls (a TLS handshake with a client certificate per poll)")
	flag.IntVar(&c.reloads, "reloads", 3, "commits changing the rollout after the polls, each timed until gitfleet serve serves it (0: none)")
	flag.BoolVar(&c.deviceLists, "device-lists", false, "declare the devices in device-list files (devices/*.devices, one device a line) instead of Device manifests")
	flag.BoolVar(&c.deviceCA, "device-ca", false, "declare no device in Git but a DeviceCA (a test CA) admitting every device by its client certificate; Redis holds the devices as the controller records certificate-admitted ones, and every device connection presents a client certificate (see the package doc)")
	flag.BoolVar(&c.warmTokens, "warm", true, "before the modes, poll every device once (measured and reported as the first polls after a start), so that the modes measure a controller that has seen its fleet, as one that has run for a poll interval has; -warm=false measures mostly first polls")
	flag.BoolVar(&c.warmTokens, "warm-tokens", true, "the same as -warm")
	flag.BoolVar(&c.restart, "restart", true, "after the reloads, restart gitfleet serve on its data directory (the clone already there) and report how long until it serves the fleet, its CPU and peak RSS")
	flag.StringVar(&c.profile, "profile", "", "directory where gitfleet serve's CPU profile of each mode (MODE.pprof), of the restart (restart.pprof) and its heap after the polls (heap.pprof) are saved")
	flag.DurationVar(&c.restartProfile, "restart-profile", 20*time.Second, "with -profile: how long the restart's CPU profile runs")
	flag.BoolVar(&c.cluster, "cluster", false, "run two gitfleet serve replicas against a three-node Redis Cluster instead, and report how the polls divide between them (see the package doc); -devices defaults to 100,000")
	flag.StringVar(&c.gitfleet, "gitfleet", "", "gitfleet binary (default: go build ./cmd/gitfleet)")
	flag.BoolVar(&c.keep, "keep", false, "keep the work directory (repository, logs)")
	flag.DurationVar(&c.startTimeout, "start-timeout", 10*time.Minute, "how long gitfleet serve may take to serve the fleet")
	flag.BoolVar(&c.alerts, "alerts", false, "run the alert storm instead of the poll benchmark (see the package doc); -devices defaults to 10,000 and -compare-devices to 0")
	flag.IntVar(&c.alertsPerDevice, "alerts-per-device", 10, "-alerts: alerts each device raises in the storm, each for a distinct check and key")
	flag.IntVar(&c.alertBatch, "alert-batch", 10, "-alerts: events per POST devicemonitor/alerts (at most monitor.MaxBatch)")
	flag.IntVar(&c.checks, "checks", 10, "-alerts: MonitorChecks declared in the fleet repository (target all, a log probe each)")
	flag.StringVar(&c.stormMode, "storm-mode", "keepalive", "-alerts: the storm's connections: keepalive (HTTP/1.1), h2, newconn (a TLS handshake per batch, as devices that each connect once)")
	flag.IntVar(&c.pollers, "pollers", 8, "-alerts: concurrent clients polling deployments/next during the baseline and the storm")
	flag.Parse()
	if c.cluster && !c.alerts {
		set := map[string]bool{}
		flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if !set["devices"] {
			c.devices = 100_000
		}
	}
	if c.alerts {
		set := map[string]bool{}
		flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if !set["devices"] {
			c.devices = 10_000
		}
		if !set["compare-devices"] {
			c.compareDevices = 0
		}
		if stormModes[c.stormMode] == "" {
			fmt.Fprintf(os.Stderr, "gitfleet-loadgen: -storm-mode %q: give keepalive, h2 or newconn\n", c.stormMode)
			os.Exit(2)
		}
		if c.alertsPerDevice < 1 || c.alertsPerDevice > store.MaxAlertsPerDevice || c.alertBatch < 1 || c.alertBatch > monitor.MaxBatch ||
			c.checks < 1 || c.pollers < 1 {
			fmt.Fprintf(os.Stderr, "gitfleet-loadgen: -alerts-per-device must be 1…%d (what the store keeps per device), -alert-batch 1…%d, -checks and -pollers positive\n",
				store.MaxAlertsPerDevice, monitor.MaxBatch)
			os.Exit(2)
		}
	} else {
		c.checks = 0
	}
	if c.deviceCA && (c.cluster || c.alerts || c.deviceLists) {
		fmt.Fprintln(os.Stderr, "gitfleet-loadgen: -device-ca measures the poll benchmark of one controller; leave out -cluster, -alerts and -device-lists (the DeviceCA fleet declares no device)")
		os.Exit(2)
	}
	if c.devices < 1 || c.clients < 1 || c.duration <= 0 || c.seeders < 1 || c.rounds < 1 {
		fmt.Fprintln(os.Stderr, "gitfleet-loadgen: -devices, -clients, -seeders and -duration must be positive")
		os.Exit(2)
	}
	if err := c.setupProfile(); err != nil {
		fmt.Fprintln(os.Stderr, "gitfleet-loadgen:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, c); err != nil {
		fmt.Fprintln(os.Stderr, "gitfleet-loadgen:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, c config) (err error) {
	dir, err := os.MkdirTemp("", "gitfleet-loadgen-")
	if err != nil {
		return err
	}
	defer func() {
		if c.keep || err != nil {
			fmt.Printf("work directory kept: %s\n", dir)
			return
		}
		os.RemoveAll(dir)
	}()
	var procs procs
	defer procs.stopAll()
	what := fmt.Sprintf("%d clients, %s per run", c.clients, c.duration)
	if c.alerts {
		what = fmt.Sprintf("alert storm of %d alerts per device in batches of %d from %d clients, %d pollers, %d checks",
			c.alertsPerDevice, c.alertBatch, c.clients, c.pollers, c.checks)
	}
	fmt.Printf("gitfleet-loadgen: %d devices, %s, GOMAXPROCS %d, %d CPUs\n",
		c.devices, what, runtime.GOMAXPROCS(0), runtime.NumCPU())
	if c.cluster {
		return runCluster(ctx, c, dir, &procs)
	}
	e, err := setup(ctx, c, dir, &procs)
	if err != nil {
		return err
	}
	if c.alerts {
		return runAlerts(ctx, c, e)
	}
	return runPolls(ctx, c, e, &procs)
}

// env is what setup prepared: Redis with the device records, the fleet
// repository, gitfleet serve serving it, the rollout's deployments and a
// token for every device.
type env struct {
	rd         *redisProc
	fleet      *fleet
	mem        memReport
	memDefault *memReport // nil without -compare-devices
	srv        *server
	deps       deploymentsReport
	toks       *tokens
	pki        *clientPKI // with the mtls mode: the DeviceCA and client certificates
}

// setup runs steps 1 to 4 of the package doc, for both the poll benchmark
// and the alert storm (which declares c.checks MonitorChecks as well).
func setup(ctx context.Context, c config, dir string, procs *procs) (*env, error) {
	e := &env{fleet: newFleet(c.devices)}
	e.fleet.lists = c.deviceLists
	if c.deviceCA {
		e.fleet.ca = caName
	}

	// 1. Redis and the device records.
	rd, err := startRedis(ctx, procs, filepath.Join(dir, "redis"), "--hash-max-listpack-value", "1024")
	if err != nil {
		return nil, err
	}
	e.rd = rd
	if e.mem, err = seed(ctx, rd.addr, e.fleet, c.seeders, "hash-max-listpack-value 1024"); err != nil {
		return nil, err
	}
	if c.compareDevices > 0 {
		rd2, err := startRedis(ctx, procs, filepath.Join(dir, "redis-default"))
		if err != nil {
			return nil, err
		}
		cf := newFleet(min(c.compareDevices, c.devices))
		cf.ca = e.fleet.ca
		m, err := seed(ctx, rd2.addr, cf, c.seeders, "Redis defaults")
		if err != nil {
			return nil, err
		}
		e.memDefault = &m
		procs.stop(rd2.proc)
	}

	// 2. The fleet repository and artifact store.
	start := time.Now()
	if c.deviceCA || !c.alerts && slices.Contains(strings.Split(strings.ReplaceAll(c.modes, " ", ""), ","), "mtls") {
		if e.pki, err = newClientPKI(dir, c.clients); err != nil {
			return nil, err
		}
		e.pki.always = c.deviceCA
	}
	repo, store, err := writeRepo(ctx, filepath.Join(dir, "fleet"), e.fleet, c.checks, e.pki)
	if err != nil {
		return nil, err
	}
	if c.deviceCA {
		fmt.Printf("fleet repository with DeviceCA %s and no declared device written and committed in %s\n", caName, time.Since(start).Round(time.Millisecond))
	} else {
		fmt.Printf("fleet repository with %d declared devices written and committed in %s\n", c.devices, time.Since(start).Round(time.Millisecond))
	}

	// 3. gitfleet serve.
	bin := c.gitfleet
	if bin == "" {
		if bin, err = buildGitfleet(ctx, dir); err != nil {
			return nil, err
		}
	}
	if e.srv, err = startServe(ctx, procs, bin, filepath.Join(dir, "serve"), repo, store, rd.addr, e.fleet, c.startTimeout, c.debugAddr); err != nil {
		return nil, err
	}

	// The rollout's progress: canary and half done, a few in flight.
	if e.deps, err = seedDeployments(ctx, rd.addr, e.fleet, c.seeders, e.srv.repo); err != nil {
		return nil, err
	}

	// 4. Tokens.
	if e.toks, err = prepareTokens(ctx, rd.addr, e.srv, e.pki, e.fleet, e.deps.probe, c.authSample); err != nil {
		return nil, err
	}
	return e, nil
}

// runPolls is step 5 of the package doc and the poll benchmark's report.
func runPolls(ctx context.Context, c config, e *env, procs *procs) error {
	rd, srv, deps, toks := e.rd, e.srv, e.deps, e.toks
	pki := e.pki
	// With -device-ca every device presents its certificate, so the
	// ceiling asks for and verifies one in every mode, as gitfleet does.
	clientCA := ""
	if c.deviceCA {
		clientCA = pki.caFile
	}
	ceil, err := startCeiling(ctx, procs, e.srv.certFile, e.srv.keyFile, clientCA)
	if err != nil {
		return err
	}
	var warm *warmResult
	if c.warmTokens {
		w, err := warmTokens(ctx, srv, pki, toks, c.clients)
		if err != nil {
			return err
		}
		warm = &w
	}
	var mceil *server
	var results []result
	for _, mode := range strings.Split(c.modes, ",") {
		mode = strings.TrimSpace(mode)
		if !slices.Contains(pollModes, mode) {
			return fmt.Errorf("unknown mode %q (give %s)", mode, strings.Join(pollModes, ", "))
		}
		ceilAddr := ceil.addr
		if mode == "mtls" && !c.deviceCA {
			if mceil == nil {
				if mceil, err = startCeiling(ctx, procs, srv.certFile, srv.keyFile, pki.caFile); err != nil {
					return err
				}
			}
			ceilAddr = mceil.addr
		}
		var rounds [2][]result // ceiling, gitfleet
		for round := range c.rounds {
			for ti, target := range []struct{ name, addr string }{{"ceiling", ceilAddr}, {"gitfleet", srv.addr}} {
				before, _ := commandStats(ctx, rd.addr)
				cpu0 := cpuOf(srv.proc.Process.Pid)
				var waitProfile func()
				if c.profile != "" && target.name == "gitfleet" && round == 0 {
					waitProfile = profileAsync(ctx, srv.debug, fmt.Sprintf("profile?seconds=%d", int((c.warmup+c.duration).Seconds())),
						filepath.Join(c.profile, mode+".pprof"))
				}
				r, err := drive(ctx, driveOptions{mode: mode, target: target.name, addr: target.addr, ca: srv.pool, pki: pki,
					clients: c.clients, duration: c.duration, warmup: c.warmup, tokens: toks})
				if err != nil {
					return err
				}
				after, _ := commandStats(ctx, rd.addr)
				if waitProfile != nil {
					waitProfile()
				}
				perPoll := ""
				if target.name == "gitfleet" {
					// CPU over every poll, the warm-up's included.
					r.cpu = cpuOf(srv.proc.Process.Pid) - cpu0
					r.cpuPerPoll = r.cpu / time.Duration(max(r.all, 1))
					perPoll = fmt.Sprintf(", %d answered 200, gitfleet serve CPU %s per poll, Redis per poll: %s",
						r.offered, fmtDur(r.cpuPerPoll), perPollStats(before, after, r.all))
				}
				if mode == "mtls" || c.deviceCA {
					perPoll += fmt.Sprintf(", client certificate asked for in %d of %d handshakes", r.asked, r.conns)
				}
				fmt.Printf("  %-9s %-8s %9.0f polls/s  p50 %7s  p99 %7s  (round %d: %d polls, %d errors, %d connections%s)\n",
					mode, target.name, r.rate, fmtDur(r.p50), fmtDur(r.p99), round+1, r.polls, r.errors, r.conns, perPoll)
				// In flight are deps.inFlight of the devices: a run expected
				// to hit them 20 times or more and never offered the artifact
				// is wrong (fewer hits may be chance).
				if target.name == "gitfleet" && r.offered == 0 && r.all*int64(deps.inFlight) >= 20*int64(c.devices) {
					return fmt.Errorf("%s: no poll was answered with a deployment, though %d devices are in flight", mode, deps.inFlight)
				}
				if (mode == "mtls" || c.deviceCA) && target.name == "ceiling" && r.asked < r.conns {
					return fmt.Errorf("%s: the ceiling server asked for a client certificate in only %d of %d handshakes", mode, r.asked, r.conns)
				}
				rounds[ti] = append(rounds[ti], r)
			}
		}
		ce, gf := combine(rounds[0]), combine(rounds[1])
		var ratios []float64
		for i := range rounds[0] {
			ratios = append(ratios, rounds[1][i].rate/rounds[0][i].rate)
		}
		slices.Sort(ratios)
		gf.ratio = ratios[len(ratios)/2]
		if len(ratios)%2 == 0 {
			gf.ratio = (ratios[len(ratios)/2-1] + ratios[len(ratios)/2]) / 2
		}
		gf.ratios = ratios
		results = append(results, ce, gf)
	}
	rss, peak := rssOf(srv.proc.Process.Pid)
	if c.profile != "" {
		profileAsync(ctx, srv.debug, "heap", filepath.Join(c.profile, "heap.pprof"))()
	}
	reports, err := measureReports(ctx, srv, pki, rd.addr, toks, deps.inFlightIdx)
	if err != nil {
		return err
	}
	var reloads []reloadResult
	if c.reloads > 0 {
		if reloads, err = measureReloads(ctx, srv, c.reloads); err != nil {
			return err
		}
	}

	first := *srv // the first process's figures, for the report
	var restart *restartResult
	if c.restart {
		r, err := measureRestart(ctx, procs, srv, c)
		if err != nil {
			return err
		}
		restart = &r
	}

	// Report.
	srv = &first
	fmt.Println()
	fleetIs := fmt.Sprintf("%d devices registered in Redis and declared in Git", c.devices)
	if c.deviceCA {
		fleetIs = fmt.Sprintf("behind a DeviceCA, %d devices registered in Redis", c.devices)
	}
	fmt.Printf("gitfleet-loadgen report: %s, %d clients, %s per run, %d rounds per mode (ceiling and gitfleet in turn; ratio: the median round's), %d CPUs\n",
		fleetIs, c.clients, c.duration, c.rounds, runtime.NumCPU())
	fmt.Printf("%-10s %12s %12s %7s %9s %9s %9s %9s  %s\n", "mode", "ceiling/s", "gitfleet/s", "ratio", "p50", "p99", "CPU/poll", "goal", "")
	for i := 0; i+1 < len(results); i += 2 {
		ce, gf := results[i], results[i+1]
		ratio := gf.ratio // the median of the rounds'

		goal, ok := 0.8, gf.p99 < 20*time.Millisecond
		p99goal := ", p99 < 20ms"
		if gf.mode == "newconn" || gf.mode == "mtls" {
			goal, ok, p99goal = 0.9, true, ""
		}
		verdict := "met"
		if ratio < goal || !ok {
			verdict = "NOT met"
		}
		note := ""
		if (gf.mode == "mtls" || c.deviceCA) && gf.asked < gf.conns {
			note = fmt.Sprintf("; gitfleet asked for the client certificate in %d of %d handshakes", gf.asked, gf.conns)
		}
		if len(gf.ratios) > 1 {
			var rs []string
			for _, r := range gf.ratios {
				rs = append(rs, fmt.Sprintf("%.2f", r))
			}
			note += "; ratio of each round, sorted: " + strings.Join(rs, " ")
		}
		fmt.Printf("%-10s %12.0f %12.0f %7.2f %9s %9s %9s  ≥ %.1f%s: %s (ceiling p50 %s p99 %s%s)\n", gf.mode, ce.rate, gf.rate, ratio,
			fmtDur(gf.p50), fmtDur(gf.p99), fmtDur(gf.cpuPerPoll), goal, p99goal, verdict, fmtDur(ce.p50), fmtDur(ce.p99), note)
	}
	if warm != nil {
		ratio := ""
		for i := 0; i+1 < len(results); i += 2 {
			if results[i].mode == "keepalive" {
				ratio = fmt.Sprintf(", %.2f of the kept-alive ceiling", warm.rate()/results[i].rate)
			}
		}
		fmt.Printf("first polls after the start (every device once, kept-alive, before the modes): %.0f polls/s%s, gitfleet serve CPU %s per poll\n",
			warm.rate(), ratio, fmtDur(warm.cpu))
	}
	fmt.Printf("Redis memory per device: %s\n", e.mem)
	if e.memDefault != nil {
		fmt.Printf("                         %s\n", e.memDefault)
	}
	fmt.Printf("                         + %s\n", deps)
	declared := fmt.Sprintf("%d declared devices", c.devices)
	if c.deviceCA {
		declared = fmt.Sprintf("a DeviceCA and %d devices in Redis", c.devices)
	}
	fmt.Printf("gitfleet serve: ready in %s with %s; RSS %d MiB after the polls (peak %d MiB)\n",
		srv.ready.Round(time.Millisecond), declared, rss>>20, peak>>20)
	if restart != nil {
		verdict := "met"
		if restart.ready >= 5*time.Second || restart.hwm >= 1<<30 {
			verdict = "NOT met"
		}
		fmt.Printf("gitfleet serve restarted (clone in its data directory): ready in %s, CPU %s until then, peak RSS %d MiB; goal < 5s and < 1 GiB: %s\n",
			restart.ready.Round(time.Millisecond), restart.cpu.Round(time.Millisecond), restart.hwm>>20, verdict)
	}
	fmt.Printf("status reports (%d, installing, rebooting, success): %.0f/s from 8 clients, gitfleet serve CPU %s each, Redis %s\n",
		reports.n, reports.rate, fmtDur(reports.cpu), reports.cmds)
	for i, r := range reloads {
		goal := ""
		if c.deviceCA {
			goal = "; goal < 0.5s: met"
			if r.took >= 500*time.Millisecond {
				goal = "; goal < 0.5s: NOT met"
			}
		}
		fmt.Printf("commit %d changing the rollout: live after %s (gitfleet serve CPU %s; RSS peak %d MiB)%s\n",
			i+1, r.took.Round(time.Millisecond), r.cpu.Round(time.Millisecond), r.peak>>20, goal)
	}
	if toks.authRate > 0 {
		how := ""
		if c.deviceCA {
			how = ", each on a new mutual-TLS connection with the device's certificate"
		}
		fmt.Printf("signed auth requests (Ed25519, %d devices, %d clients%s): %.0f/s, gitfleet serve CPU %s each\n",
			toks.authN, authClients, how, toks.authRate, fmtDur(toks.authCPU))
	}
	return nil
}

// pollModes are the modes of -modes.
var pollModes = []string{"keepalive", "h2", "newconn", "mtls"}

func fmtDur(d time.Duration) string {
	switch {
	case d >= time.Second:
		return fmt.Sprintf("%.2fs", d.Seconds())
	case d >= time.Millisecond:
		return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%dµs", d.Microseconds())
}

// rssOf returns a process's resident and peak resident memory in bytes.
func rssOf(pid int) (cur, peak int64) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		var kb int64
		switch {
		case strings.HasPrefix(line, "VmRSS:"):
			fmt.Sscanf(strings.TrimPrefix(line, "VmRSS:"), "%d", &kb)
			cur = kb << 10
		case strings.HasPrefix(line, "VmHWM:"):
			fmt.Sscanf(strings.TrimPrefix(line, "VmHWM:"), "%d", &kb)
			peak = kb << 10
		}
	}
	return cur, peak
}
