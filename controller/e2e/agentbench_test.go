package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/artifact"
	"github.com/gitfleet/gitfleet/controller/deviceapi"
	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gitfleet/gitfleet/device/sim"
)

// agentBenchSize is the rootfs image size of BenchmarkAgentInstall: 1 GiB,
// 256 MiB with -short, or GITFLEET_BENCH_SIZE (bytes, or with a MiB/GiB
// suffix).
func agentBenchSize(b *testing.B) int64 {
	s := os.Getenv("GITFLEET_BENCH_SIZE")
	if s == "" {
		if testing.Short() {
			return 256 << 20
		}
		return 1 << 30
	}
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		m      int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"G", 1 << 30}, {"M", 1 << 20}} {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = v, u.m
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		b.Fatalf("GITFLEET_BENCH_SIZE=%q", os.Getenv("GITFLEET_BENCH_SIZE"))
	}
	return n * mult
}

// benchPattern yields n pseudo-random (incompressible) bytes without
// holding them.
type benchPattern struct {
	left int64
	x    uint64
}

func (p *benchPattern) Read(b []byte) (int, error) {
	if p.left == 0 {
		return 0, io.EOF
	}
	if int64(len(b)) > p.left {
		b = b[:p.left]
	}
	for i := range b {
		if i%8 == 0 {
			p.x ^= p.x << 13
			p.x ^= p.x >> 7
			p.x ^= p.x << 17
		}
		b[i] = byte(p.x >> (8 * (i % 8)))
	}
	p.left -= int64(len(b))
	return len(b), nil
}

// benchAPI is the smallest device API an idle agent needs: it admits any
// device, takes its inventory and never has a deployment. It counts the
// deployments/next polls.
type benchAPI struct{ polls atomic.Int64 }

func (a *benchAPI) register(mux *http.ServeMux) {
	mux.HandleFunc("POST /api/devices/v1/authentication/auth_requests", func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, io.LimitReader(r.Body, 1<<20))
		io.WriteString(w, "bench-token")
	})
	mux.HandleFunc("PUT /api/devices/v1/inventory/device/attributes", func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, io.LimitReader(r.Body, 1<<20))
	})
	next := func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, io.LimitReader(r.Body, 1<<20))
		a.polls.Add(1)
		w.WriteHeader(http.StatusNoContent)
	}
	mux.HandleFunc("POST /api/devices/v2/deployments/device/deployments/next", next)
	mux.HandleFunc("/api/devices/v1/deployments/device/deployments/next", next)
}

// BenchmarkAgentInstall measures the real gitfleet-agent binary on a
// simulated device (device/sim) installing a signed, uncompressed
// rootfs-image artifact of GITFLEET_BENCH_SIZE (default 1 GiB, 256 MiB
// with -short) from a local HTTPS server (`gitfleet-agent install URL`:
// download, signature and digest checks, write to partition B, fsync, boot
// switch). In the same run it measures the ceiling: the same bytes from
// the same server through sha256 into a file, with fsync.
//
//	go test ./controller/e2e -run '^$' -bench AgentInstall -benchtime 1x
//
// ns/op and MB/s are the agent's install (the process's run only);
// ceiling-MB/s and ratio (goal ≥ 0.8) sit beside it. agent-peak-rss-MiB is
// the install process's VmHWM (sampled every 10 ms), agent-cpu-s its CPU
// time (user+sys, rusage); idle-rss-MiB is the daemon's VmRSS after five
// polls of a server with nothing to do (idle-peak-rss-MiB its VmHWM).
func BenchmarkAgentInstall(b *testing.B) {
	size := agentBenchSize(b)
	bin := BenchAgentBinary(b)
	dir := b.TempDir()

	// The image, and its digest to check the installed partition against.
	image := filepath.Join(dir, "rootfs.ext4")
	f, err := os.Create(image)
	if err != nil {
		b.Fatal(err)
	}
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(f, h), &benchPattern{left: size, x: 88172645463325252}); err != nil {
		b.Fatal(err)
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
	imageSum := hex.EncodeToString(h.Sum(nil))

	priv, pub, err := artifact.GenerateKey(artifact.ECDSAP256)
	if err != nil {
		b.Fatal(err)
	}
	signer, err := artifact.LoadSigner(priv)
	if err != nil {
		b.Fatal(err)
	}
	pubFile := filepath.Join(dir, "artifact.pub")
	writeFile(b, pubFile, pub, 0o644)
	art := filepath.Join(dir, "rootfs.mender")
	out, err := os.Create(art)
	if err != nil {
		b.Fatal(err)
	}
	err = artifact.Write(context.Background(), out, artifact.Spec{
		Name: "bench-rootfs", DeviceTypes: []string{"sim"}, Compression: artifact.None, Signer: signer, TempDir: dir,
		Payloads: []artifact.PayloadSpec{artifact.RootfsImage(artifact.FileSpec{Path: image}, "bench-rootfs", artifact.Software{})},
	})
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		b.Fatal(err)
	}
	os.Remove(image) // the disk holds the artifact, partition B and the ceiling's copy
	fi, err := os.Stat(art)
	if err != nil {
		b.Fatal(err)
	}
	artSize := fi.Size()

	api := &benchAPI{}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /rootfs.mender", func(w http.ResponseWriter, r *http.Request) { http.ServeFile(w, r, art) })
	api.register(mux)
	srv := httptest.NewTLSServer(mux)
	b.Cleanup(srv.Close)
	certFile := filepath.Join(dir, "server.crt")
	writeFile(b, certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644)
	url := srv.URL + "/rootfs.mender"

	newDevice := func(name string, partSize int64) *sim.Device {
		devDir := filepath.Join(dir, name)
		mkdir(b, devDir)
		dev, err := sim.New(devDir, sim.Options{
			AgentBinary: bin, ServerURL: srv.URL, ServerCertificate: certFile,
			ArtifactVerifyKeys: []string{pubFile}, PartitionSize: partSize, AllowDowngrade: true,
			UpdatePollSeconds: 1, InventoryPollSeconds: 3600,
		})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := dev.Boot(); err != nil {
			b.Fatal(err)
		}
		return dev
	}

	// ceiling: GET, sha256 and a file, fsync. A 1 MiB buffer, so that the
	// copy is not held back by small writes.
	client := srv.Client()
	buf := make([]byte, 1<<20)
	ceiling := func() time.Duration {
		dst := filepath.Join(dir, "ceiling.img")
		start := time.Now()
		resp, err := client.Get(url)
		if err != nil {
			b.Fatal(err)
		}
		f, err := os.Create(dst)
		if err != nil {
			b.Fatal(err)
		}
		h := sha256.New()
		n, err := io.CopyBuffer(io.MultiWriter(h, f), resp.Body, buf)
		resp.Body.Close()
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		elapsed := time.Since(start)
		if err != nil || n != artSize {
			b.Fatalf("ceiling copy: %d of %d bytes: %v", n, artSize, err)
		}
		os.Remove(dst)
		return elapsed
	}

	// install: a fresh device each time (the previous one waits for its
	// reboot); partition files are sparse until written.
	// Only the install process's run is timed.
	install := func(i int) (time.Duration, ProcUsage) {
		dev := newDevice(fmt.Sprintf("dev-%d", i), size)
		var log bytes.Buffer
		cmd := exec.Command(bin, "--config", dev.ConfigPath(), "--log-level", "info", "install", url)
		cmd.Dir, cmd.Stdout, cmd.Stderr = dev.Dir(), &log, &log
		b.StartTimer()
		start := time.Now()
		err := cmd.Start()
		var stop func() int64
		if err == nil {
			stop = SamplePeakRSS(cmd.Process.Pid, 10*time.Millisecond)
			err = cmd.Wait()
		}
		elapsed := time.Since(start)
		b.StopTimer()
		if err != nil {
			b.Fatalf("gitfleet-agent install: %v\n%s", err, tailLines(log.String(), 30))
		}
		peak := stop()
		if !strings.Contains(log.String(), "installed bench-rootfs") {
			b.Fatalf("gitfleet-agent install said:\n%s", tailLines(log.String(), 30))
		}
		usage := ExitedUsage(cmd.ProcessState)
		usage.PeakRSS = peak
		if i == 0 { // what was installed is the image, byte for byte
			p, err := os.Open(dev.PartitionPath("B"))
			if err != nil {
				b.Fatal(err)
			}
			h := sha256.New()
			_, err = io.Copy(h, io.LimitReader(p, size))
			p.Close()
			if got := hex.EncodeToString(h.Sum(nil)); err != nil || got != imageSum {
				b.Fatalf("partition B holds sha256 %s (%v), the image is %s", got, err, imageSum)
			}
		}
		os.RemoveAll(dev.Dir())
		return elapsed, usage
	}

	b.SetBytes(size)
	b.ResetTimer()
	b.StopTimer()
	var agentTime, ceilTime time.Duration
	var peak int64
	var cpu time.Duration
	for i := 0; i < b.N; i++ {
		// Alternate which runs first, so neither always meets a warmer cache.
		if i%2 == 1 {
			ceilTime += ceiling()
		}
		elapsed, usage := install(i)
		agentTime += elapsed
		peak = max(peak, usage.PeakRSS)
		cpu += usage.CPU
		if i%2 == 0 {
			ceilTime += ceiling()
		}
	}

	// Idle: the daemon polling a server that has nothing for it.
	dev := newDevice("idle", 4<<20)
	var log bytes.Buffer
	cmd := exec.Command(bin, "--config", dev.ConfigPath(), "--log-level", "info", "daemon")
	cmd.Dir, cmd.Stdout, cmd.Stderr = dev.Dir(), &log, &log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	polls0 := api.polls.Load()
	deadline := time.Now().Add(Deadline)
	for api.polls.Load()-polls0 < 5 {
		select {
		case <-exited:
			b.Fatalf("idle agent exited: %v\n%s", cmd.ProcessState, tailLines(log.String(), 30))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			b.Fatalf("idle agent: %d polls in %s\n%s", api.polls.Load()-polls0, Deadline, tailLines(log.String(), 30))
		}
	}
	idle, err := ReadProcUsage(cmd.Process.Pid)
	syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	}
	if err != nil {
		b.Fatal(err)
	}

	mbps := func(d time.Duration) float64 { return float64(size) / 1e6 / d.Seconds() }
	agentRate, ceilRate := mbps(agentTime/time.Duration(b.N)), mbps(ceilTime/time.Duration(b.N))
	b.ReportMetric(ceilRate, "ceiling-MB/s")
	b.ReportMetric(agentRate/ceilRate, "ratio")
	b.ReportMetric(float64(peak)/(1<<20), "agent-peak-rss-MiB")
	b.ReportMetric(cpu.Seconds()/float64(b.N), "agent-cpu-s")
	b.ReportMetric(float64(idle.RSS)/(1<<20), "idle-rss-MiB")
	b.ReportMetric(float64(idle.PeakRSS)/(1<<20), "idle-peak-rss-MiB")
	b.Logf("%d MiB image (%d-byte artifact): agent %.0f MB/s, ceiling %.0f MB/s, ratio %.2f; install peak RSS %.1f MiB, CPU %.2f s; idle RSS %.1f MiB (peak %.1f MiB)",
		size>>20, artSize, agentRate, ceilRate, agentRate/ceilRate, float64(peak)/(1<<20), cpu.Seconds()/float64(b.N),
		float64(idle.RSS)/(1<<20), float64(idle.PeakRSS)/(1<<20))
}

// benchFleet is a seed fleet holding only the release signing key.
func benchFleet(t testing.TB, pubPEM []byte) string {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "keys", "release.yaml"), []byte(`apiVersion: gitfleet.io/v1
kind: SigningKey
metadata:
  name: release
spec:
  algorithm: ecdsa-p256
  publicKey: |
`+indent(string(pubPEM), "    ")), 0o644)
	return dir
}

// BenchmarkAgentVsMender runs Debian's stock mender 3.4 daemon
// (StartMender) and the gitfleet-agent daemon side by side against one
// real `gitfleet serve` (with Redis), both with 1 s poll intervals and
// log level info. Both are admitted by one commit; one commit then rolls
// out the same module-image artifact (mender-artifact, signed) to each
// (two one-device rollouts), installed through the same test update
// module (gitfleet-test; the agent's copy names its own output directory
// instead of reading /etc/mender). Each iteration is a fresh controller
// and fresh devices.
//
//	go test ./controller/e2e -run '^$' -bench AgentVsMender -benchtime 1x
//
// Per client: dep-cpu-ms is the CPU time (user+sys, itself plus the
// update modules and scripts it waited for, from /proc/PID/stat) from the
// rollout commit to the success reported in the store; life-cpu-ms is
// the whole process life from start to SIGTERM (key generation,
// authentication, idle polls and the deployment; from wait4's rusage);
// peak-rss-MiB is VmHWM at the deployment's end (both are daemons that
// live on). CPU is counted in USER_HZ ticks: 10 ms resolution. The ratios are agent ÷
// mender (goal: memory ≤ 0.5, CPU < 1).
func BenchmarkAgentVsMender(b *testing.B) {
	RequireMender(b)
	bin := BenchAgentBinary(b)
	type sums struct{ depCPU, lifeCPU, peak float64 }
	var ag, mn sums
	for i := 0; i < b.N; i++ {
		a, m := agentVsMender(b, bin)
		ag.depCPU += a.dep.CPU.Seconds() * 1000
		ag.lifeCPU += a.life.CPU.Seconds() * 1000
		ag.peak += float64(a.peak) / (1 << 20)
		mn.depCPU += m.dep.CPU.Seconds() * 1000
		mn.lifeCPU += m.life.CPU.Seconds() * 1000
		mn.peak += float64(m.peak) / (1 << 20)
	}
	n := float64(b.N)
	b.ReportMetric(ag.peak/n, "agent-peak-rss-MiB")
	b.ReportMetric(mn.peak/n, "mender-peak-rss-MiB")
	b.ReportMetric(ag.peak/mn.peak, "rss-ratio")
	b.ReportMetric(ag.depCPU/n, "agent-dep-cpu-ms")
	b.ReportMetric(mn.depCPU/n, "mender-dep-cpu-ms")
	b.ReportMetric(ag.depCPU/mn.depCPU, "dep-cpu-ratio")
	b.ReportMetric(ag.lifeCPU/n, "agent-life-cpu-ms")
	b.ReportMetric(mn.lifeCPU/n, "mender-life-cpu-ms")
	b.ReportMetric(ag.lifeCPU/mn.lifeCPU, "life-cpu-ratio")
	b.Logf("peak RSS: agent %.1f MiB, mender %.1f MiB (%.2f×); CPU for the deployment: agent %.0f ms, mender %.0f ms (%.2f×); CPU for the whole life: agent %.0f ms, mender %.0f ms (%.2f×)",
		ag.peak/n, mn.peak/n, ag.peak/mn.peak, ag.depCPU/n, mn.depCPU/n, ag.depCPU/mn.depCPU, ag.lifeCPU/n, mn.lifeCPU/n, ag.lifeCPU/mn.lifeCPU)
}

// clientUsage is one client's usage in one run of agentVsMender.
type clientUsage struct {
	dep  ProcUsage // the deployment window (CPU only)
	life ProcUsage // start to exit
	peak int64     // VmHWM at the end of the deployment
}

func agentVsMender(b *testing.B, bin string) (agentU, menderU clientUsage) {
	b.StopTimer()
	work := b.TempDir()
	key, pub := GenerateSigningKey(b, filepath.Join(work, "keys", "release"))
	pubFile := filepath.Join(work, "keys", "release.pub")
	storeDir := filepath.Join(work, "artifact-store")
	art := WriteMenderArtifact(b, storeDir, MenderArtifactSpec{
		Name: "bench-1", Module: MenderModuleOK, Key: key,
		Files: map[string]string{"hello.txt": "hello from the benchmark\n"},
	})

	env := newEnv(b, benchFleet(b, pub))
	c := env.StartController("bench", menderServeFlags(storeDir)...)
	c.AwaitServing(env.Repo.Head())
	if ok, code := c.DeviceAPIServed(); !ok {
		b.Skipf("gitfleet serve does not serve the device API (HTTP %d)", code)
	}
	certFile := filepath.Join(work, "server.crt")
	writeFile(b, certFile, c.CertPEM(), 0o644)

	// The agent's device: the same device type, factory artifact, poll
	// intervals and update module as the stock client's.
	identity := map[string]string{"mac": "02:00:00:00:00:43"}
	devDir := filepath.Join(work, "agent-device")
	mkdir(b, devDir)
	dev, err := sim.New(devDir, sim.Options{
		AgentBinary: bin, ServerURL: c.URL(), ServerCertificate: certFile,
		DeviceType: MenderDeviceType, ArtifactName: "factory", Identity: identity,
		ArtifactVerifyKeys: []string{pubFile}, AllowDowngrade: true,
		UpdatePollSeconds: 1, InventoryPollSeconds: 1, RetryPollSeconds: 1,
	})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := dev.Boot(); err != nil {
		b.Fatal(err)
	}
	agentOut := filepath.Join(devDir, "out")
	mkdir(b, agentOut)
	module, err := os.ReadFile(filepath.Join(testdataDir(), "mender", "modules", MenderModuleOK))
	if err != nil {
		b.Fatal(err)
	}
	module = bytes.ReplaceAll(module, []byte("$(cat /etc/mender/gitfleet-test-out)"), []byte(agentOut))
	writeFile(b, filepath.Join(devDir, "modules", MenderModuleOK), module, 0o755)

	m := StartMender(b, c.URL(), c.CertPEM(), MenderOptions{VerifyKey: pub, LogLevel: "info"})
	var agentLog lockedBuffer
	cmd := exec.Command(bin, "--config", dev.ConfigPath(), "--log-level", "info", "daemon")
	cmd.Dir, cmd.Stdout, cmd.Stderr = devDir, &agentLog, &agentLog
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	agentExited := make(chan struct{})
	go func() { cmd.Wait(); close(agentExited) }()
	stopAgent := func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-agentExited:
		case <-time.After(10 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-agentExited
		}
	}
	b.Cleanup(stopAgent)
	defer func() {
		if b.Failed() {
			b.Logf("agent log (tail):\n%s", tailLines(agentLog.String(), 40))
		}
	}()

	// Both ask to be admitted; one commit admits both.
	agentID := deviceapi.DeviceID(deviceapi.Attributes(identity))
	pm := c.AwaitPending(m.ID())
	pa := c.AwaitPending(agentID)
	files := menderDevice("mender-1", m, pm.KeyFingerprint)
	maps.Copy(files, deviceManifest("agent-1", identity, pa.KeyFingerprint))
	sha := env.Commit(files, "admit mender-1 and agent-1")
	env.Push(c, sha, false)
	c.AwaitServing(sha)
	for _, id := range []string{m.ID(), agentID} {
		c.AwaitDevice(id, "accepted with its inventory", func(d store.Device) bool {
			return d.Status == store.DeviceAccepted && Inventory(d)["artifact_name"] == "factory"
		})
	}

	// One commit rolls the artifact out to each.
	m0, err := ReadProcUsage(m.PID())
	if err != nil {
		b.Fatal(err)
	}
	a0, err := ReadProcUsage(cmd.Process.Pid)
	if err != nil {
		b.Fatal(err)
	}
	files = menderRollout("bench-mender", "mender-1", art, "1")
	maps.Copy(files, menderRollout("bench-agent", "agent-1", art, "1"))
	sha = env.Commit(files, "roll out bench-1")
	b.StartTimer()
	env.Push(c, sha, false)
	c.AwaitServing(sha)
	c.AwaitDeployment("bench-mender", "mender-1", store.StateSuccess)
	c.AwaitDeployment("bench-agent", "agent-1", store.StateSuccess)
	b.StopTimer()
	m1, err := ReadProcUsage(m.PID())
	if err != nil {
		b.Fatal(err)
	}
	a1, err := ReadProcUsage(cmd.Process.Pid)
	if err != nil {
		b.Fatal(err)
	}
	m.AwaitInstalled("hello.txt", "hello from the benchmark\n")
	if got, err := os.ReadFile(filepath.Join(agentOut, "hello.txt")); err != nil || string(got) != "hello from the benchmark\n" {
		b.Fatalf("the agent's update module wrote hello.txt = %q (%v)", got, err)
	}

	m.Stop()
	stopAgent()
	menderU = clientUsage{dep: ProcUsage{CPU: m1.CPU - m0.CPU}, life: ExitedUsage(m.cmd.ProcessState), peak: m1.PeakRSS}
	agentU = clientUsage{dep: ProcUsage{CPU: a1.CPU - a0.CPU}, life: ExitedUsage(cmd.ProcessState), peak: a1.PeakRSS}
	b.Logf("mender: deployment CPU %s, life CPU %s, peak RSS %.1f MiB; agent: deployment CPU %s, life CPU %s, peak RSS %.1f MiB",
		menderU.dep.CPU, menderU.life.CPU, float64(menderU.peak)/(1<<20),
		agentU.dep.CPU, agentU.life.CPU, float64(agentU.peak)/(1<<20))
	return agentU, menderU
}
