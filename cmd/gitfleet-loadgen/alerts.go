package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gitfleet/gitfleet/controller/store/redis"
	"github.com/gitfleet/gitfleet/device/monitor"
	goredis "github.com/redis/go-redis/v9"
)

// Goals of the alert storm, printed beside the figures.
const (
	goalAlertRate = 5000                  // alerts acknowledged per second
	goalStormP99  = 20 * time.Millisecond // poll p99 while the storm runs
)

// managementToken is the management API token gitfleet serve is started
// with (see startServe).
const managementToken = "loadgen-token"

// stormModes describes the connections of each -storm-mode.
var stormModes = map[string]string{
	"keepalive": "HTTP/1.1 kept alive",
	"h2":        "HTTP/2",
	"newconn":   "a new TLS connection per batch",
}

// stormResult is what the storm measured, from the devices' side.
type stormResult struct {
	devices, sent, acked int64
	batches              int64
	conns                int64 // connections dialled
	tooMany              int64 // 429 answers, each retried
	retried              int64 // other failed attempts (transport errors, 5xx), each retried
	short                int64 // events in batches acknowledged below their last Seq
	firstShort           string
	wall                 time.Duration
	p50, p99             time.Duration // per batch, retries included
}

func (s stormResult) rate() float64 { return float64(s.acked) / s.wall.Seconds() }

// stormEvent is alert a (0 ≤ a < -alerts-per-device) of device i: Seq a+1,
// check a mod -checks and a key of its own, so every alert of the storm
// is a distinct record (device, check, key).
func stormEvent(c config, f *fleet, i, a int, t0 time.Time) monitor.Event {
	return monitor.Event{
		Seq:      uint64(a + 1),
		Check:    checkName(a % c.checks),
		Key:      fmt.Sprintf("/var/log/app%d.log#%d", a%c.checks, a/c.checks),
		Kind:     monitor.Raised,
		Severity: monitor.Error,
		Evidence: fmt.Sprintf("2026-12-02T10:00:00Z app[%d]: ERROR storm alert %d of %s", 1000+a, a, f.name(i)),
		Time:     t0.Add(time.Duration(a) * time.Millisecond),
	}
}

// runAlerts is the alert storm: a baseline of polls, then every device's
// alerts posted as fast as the controller takes them while the same
// pollers run, then a check that every alert was recorded.
func runAlerts(ctx context.Context, c config, e *env) error {
	f, srv := e.fleet, e.srv
	base := "https://" + srv.addr
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: srv.pool}}}
	defer client.CloseIdleConnections()
	if err := checkChecks(ctx, client, base, e.toks.all[0], f.name(0), c.checks); err != nil {
		return err
	}

	// The baseline: polls without the storm.
	loadBefore := loadAverage()
	pollOpts := driveOptions{mode: "keepalive", target: "gitfleet", addr: srv.addr, ca: srv.pool,
		clients: c.pollers, duration: c.duration, warmup: c.warmup, tokens: e.toks}
	baseline, err := drive(ctx, pollOpts)
	if err != nil {
		return fmt.Errorf("baseline polls: %w", err)
	}
	fmt.Printf("baseline: %d pollers, %.0f polls/s, p50 %s, p99 %s (%d polls, %d errors)\n",
		c.pollers, baseline.rate, fmtDur(baseline.p50), fmtDur(baseline.p99), baseline.polls, baseline.errors)

	raw := goredis.NewClient(&goredis.Options{Addr: e.rd.addr})
	defer raw.Close()
	memBefore, err := usedMemory(ctx, raw)
	if err != nil {
		return err
	}
	keysBefore, _ := raw.DBSize(ctx).Result()
	cmdBefore, _ := commandStats(ctx, e.rd.addr)

	// The storm, with the pollers running through it.
	stop := make(chan struct{})
	pollOpts.stop = stop
	type pollOut struct {
		r   result
		err error
	}
	polled := make(chan pollOut, 1)
	go func() {
		r, err := drive(ctx, pollOpts)
		polled <- pollOut{r, err}
	}()
	select {
	case <-time.After(c.warmup):
	case <-ctx.Done():
		close(stop)
		<-polled
		return ctx.Err()
	}
	serveCPU0, redisCPU0 := cpuTime(srv.proc.Process.Pid), cpuTime(e.rd.proc.Process.Pid)
	storm, stormErr := runStorm(ctx, c, e)
	serveCPU, redisCPU := cpuTime(srv.proc.Process.Pid)-serveCPU0, cpuTime(e.rd.proc.Process.Pid)-redisCPU0
	close(stop)
	p := <-polled
	if stormErr != nil {
		return stormErr
	}
	if p.err != nil {
		return fmt.Errorf("polls during the storm: %w", p.err)
	}
	during := p.r

	loadAfter := loadAverage()
	memAfter, err := usedMemory(ctx, raw)
	if err != nil {
		return err
	}
	keysAfter, _ := raw.DBSize(ctx).Result()
	cmdAfter, _ := commandStats(ctx, e.rd.addr)

	// Were they all recorded?
	stored, storeErr := countStored(ctx, c, e)
	mgmt, mgmtErr := checkManagementAPI(ctx, client, base, c, f)
	rss, peak := rssOf(srv.proc.Process.Pid)

	// Report.
	fmt.Println()
	fmt.Printf("gitfleet-loadgen alert storm report: %d devices declared in Git, %d MonitorChecks, %d CPUs\n", c.devices, c.checks, runtime.NumCPU())
	fmt.Printf("storm: %d devices × %d alerts = %d alerts in %d batches of ≤ %d, from %d clients (%s, %d connections)\n",
		storm.devices, c.alertsPerDevice, storm.sent, storm.batches, c.alertBatch, c.clients, stormModes[c.stormMode], storm.conns)
	fmt.Printf("  acknowledged %d of %d in %s: %.0f alerts/s (%.0f batches/s); per batch p50 %s, p99 %s\n",
		storm.acked, storm.sent, storm.wall.Round(time.Millisecond), storm.rate(), float64(storm.batches)/storm.wall.Seconds(),
		fmtDur(storm.p50), fmtDur(storm.p99))
	fmt.Printf("  429 answers: %d (each retried after Retry-After); other failed attempts retried: %d\n", storm.tooMany, storm.retried)
	if storm.short > 0 {
		fmt.Printf("  NOT ACKNOWLEDGED: %d events in batches acknowledged below their last Seq (first: %s)\n", storm.short, storm.firstShort)
	}
	if storeErr != nil {
		fmt.Printf("  store: not verified: %v\n", storeErr)
	} else {
		verdict := "all recorded"
		if stored.alerts != storm.sent {
			verdict = fmt.Sprintf("%d MISSING (first device short: %s)", storm.sent-stored.alerts, stored.firstShort)
		}
		fmt.Printf("  store (ListAlerts per device): %d open storm alerts on %d devices, %d sent: %s\n",
			stored.alerts, stored.devices, storm.sent, verdict)
	}
	if mgmtErr != nil {
		fmt.Printf("  management API: not verified: %v\n", mgmtErr)
	} else {
		fmt.Printf("  management API: %s\n", mgmt)
	}
	fmt.Printf("  CPU during the storm (polls included): gitfleet serve %s (%.0f µs per alert), redis-server %s (%.0f µs per alert)\n",
		serveCPU.Round(time.Millisecond), float64(serveCPU.Microseconds())/float64(max(storm.acked, 1)),
		redisCPU.Round(time.Millisecond), float64(redisCPU.Microseconds())/float64(max(storm.acked, 1)))
	fmt.Printf("  Redis: used_memory +%d MiB (%.0f B per alert), keys +%d, commands per batch: %s\n",
		(memAfter-memBefore)>>20, float64(memAfter-memBefore)/float64(max(storm.acked, 1)), keysAfter-keysBefore,
		perPollStats(cmdBefore, cmdAfter, storm.batches))
	fmt.Printf("polls (%d pollers)  %9s %9s %9s\n", c.pollers, "polls/s", "p50", "p99")
	fmt.Printf("  baseline        %9.0f %9s %9s  (%s)\n", baseline.rate, fmtDur(baseline.p50), fmtDur(baseline.p99), baseline.measured.Round(time.Millisecond))
	fmt.Printf("  during storm    %9.0f %9s %9s  (%s, %d polls, %d errors)\n", during.rate, fmtDur(during.p50), fmtDur(during.p99),
		during.measured.Round(time.Millisecond), during.polls, during.errors)
	fmt.Printf("gitfleet serve: RSS %d MiB (peak %d MiB); load average %s before the baseline, %s after the storm\n",
		rss>>20, peak>>20, loadBefore, loadAfter)
	lost := storm.acked != storm.sent || storm.short > 0 || storeErr != nil || stored.alerts != storm.sent
	fmt.Printf("goals: ≥ %d alerts/s: %s; poll p99 < %s during the storm: %s; every alert recorded: %s\n",
		goalAlertRate, verdict(storm.rate() >= goalAlertRate), fmtDur(goalStormP99), verdict(during.p99 < goalStormP99), verdict(!lost))
	if lost {
		return errors.New("alerts were lost or could not be verified (see above)")
	}
	return nil
}

// cpuTime is the user and system CPU time a process has used so far
// (/proc/PID/stat), or 0.
func cpuTime(pid int) time.Duration {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The fields after the command (which may hold spaces) in parentheses.
	_, rest, ok := strings.Cut(string(data), ") ")
	f := strings.Fields(rest)
	if !ok || len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / clockTicks
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat's times: 100 on
// every Linux architecture Go supports.
const clockTicks = 100

// loadAverage is the machine's 1-minute load average (other work on a
// shared machine skews the figures), or "?".
func loadAverage() string {
	data, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(data)); err == nil && len(f) > 0 {
		return f[0]
	}
	return "?"
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "NOT met"
}

// runStorm posts every device's alerts, -alert-batch events a request and
// each device's batches in Seq order, from -clients goroutines, a device
// at a time each; 429s and transport errors are retried.
func runStorm(ctx context.Context, c config, e *env) (stormResult, error) {
	f := e.fleet
	var dials atomic.Int64
	tr := transport(driveOptions{mode: c.stormMode, ca: e.srv.pool, clients: c.clients}, &dials)
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	endpoint := "https://" + e.srv.addr + monitor.AlertsPath
	t0 := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	batchesPerDevice := (c.alertsPerDevice + c.alertBatch - 1) / c.alertBatch
	res := stormResult{devices: int64(f.n), sent: int64(f.n) * int64(c.alertsPerDevice)}
	res.batches = int64(f.n) * int64(batchesPerDevice)
	var (
		next, acked, tooMany, retried, short atomic.Int64
		wg                                   sync.WaitGroup
		mu                                   sync.Mutex
		lat                                  []time.Duration
		errOnce                              sync.Once
		firstErr                             error
	)
	fail := func(err error) { errOnce.Do(func() { firstErr = err }) }
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	progressDone := make(chan struct{})
	start := time.Now()
	go func() {
		t := time.NewTicker(5 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-progressDone:
				return
			case <-t.C:
				a := acked.Load()
				fmt.Printf("  storm: %d of %d alerts acknowledged, %.0f/s, %d 429s\n", a, res.sent, float64(a)/time.Since(start).Seconds(), tooMany.Load())
			}
		}
	}()
	for range c.clients {
		wg.Go(func() {
			mine := make([]time.Duration, 0, res.batches/int64(c.clients)+1)
			defer func() {
				mu.Lock()
				lat = append(lat, mine...)
				mu.Unlock()
			}()
			events := make([]monitor.Event, 0, c.alertBatch)
			var body bytes.Buffer
			for {
				i := int(next.Add(1)) - 1
				if i >= f.n || runCtx.Err() != nil {
					return
				}
				for b := range batchesPerDevice {
					events = events[:0]
					for a := b * c.alertBatch; a < min((b+1)*c.alertBatch, c.alertsPerDevice); a++ {
						events = append(events, stormEvent(c, f, i, a, t0))
					}
					body.Reset()
					if err := json.NewEncoder(&body).Encode(monitor.AlertBatch{Events: events}); err != nil {
						fail(err)
						cancel()
						return
					}
					last := events[len(events)-1].Seq
					bt := time.Now()
					ack, err := postBatch(runCtx, client, endpoint, e.toks.all[i], body.Bytes(), &tooMany, &retried)
					if err != nil {
						fail(fmt.Errorf("alerts of %s (batch %d): %w", f.name(i), b+1, err))
						cancel()
						return
					}
					mine = append(mine, time.Since(bt))
					if ack.Seq < last {
						// Acknowledged below the batch: the rest is lost.
						got := max(ack.Seq, events[0].Seq-1) - (events[0].Seq - 1)
						acked.Add(int64(got))
						short.Add(int64(uint64(len(events)) - got))
						mu.Lock()
						if res.firstShort == "" {
							res.firstShort = fmt.Sprintf("%s: sent seq %d…%d, acknowledged %d", f.name(i), events[0].Seq, last, ack.Seq)
						}
						mu.Unlock()
						continue
					}
					acked.Add(int64(len(events)))
				}
			}
		})
	}
	wg.Wait()
	res.wall = time.Since(start)
	close(progressDone)
	if firstErr == nil {
		firstErr = ctx.Err()
	}
	if firstErr != nil {
		return res, fmt.Errorf("alert storm: %w", firstErr)
	}
	res.acked, res.tooMany, res.retried, res.short = acked.Load(), tooMany.Load(), retried.Load(), short.Load()
	res.conns = dials.Load()
	slices.Sort(lat)
	if len(lat) > 0 {
		res.p50, res.p99 = lat[len(lat)/2], lat[min(len(lat)-1, len(lat)*99/100)]
	}
	return res, nil
}

// maxAttempts bounds the attempts of one batch that fail other than with
// 429 (which is retried as long as the controller asks).
const maxAttempts = 5

// postBatch posts one AlertBatch until the controller answers 200,
// waiting as Retry-After says after a 429 and 200 ms after a transport
// error or a 5xx, and returns the acknowledgement.
func postBatch(ctx context.Context, c *http.Client, endpoint, token string, body []byte, tooMany, retried *atomic.Int64) (monitor.AlertAck, error) {
	for attempt := 1; ; {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(body))
		if err != nil {
			return monitor.AlertAck{}, err
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := c.Do(req)
		wait := 200 * time.Millisecond
		if err == nil {
			data, rerr := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			switch {
			case rerr != nil:
				err = rerr
			case resp.StatusCode == http.StatusOK:
				var ack monitor.AlertAck
				if err := json.Unmarshal(data, &ack); err != nil {
					return ack, fmt.Errorf("200 with a body that is not an AlertAck (%q): %w", data, err)
				}
				return ack, nil
			case resp.StatusCode == http.StatusTooManyRequests:
				tooMany.Add(1)
				wait = retryAfter(resp.Header.Get("Retry-After"))
				if err := sleep(ctx, wait); err != nil {
					return monitor.AlertAck{}, err
				}
				continue
			case resp.StatusCode >= 500:
				err = fmt.Errorf("%s %s", resp.Status, bytes.TrimSpace(data))
			case resp.StatusCode == http.StatusNotFound:
				return monitor.AlertAck{}, fmt.Errorf("%s %s: does this gitfleet serve the devicemonitor endpoints? (-gitfleet names the binary)", resp.Status, bytes.TrimSpace(data))
			default:
				return monitor.AlertAck{}, fmt.Errorf("%s %s", resp.Status, bytes.TrimSpace(data))
			}
		}
		if ctx.Err() != nil {
			return monitor.AlertAck{}, ctx.Err()
		}
		if attempt >= maxAttempts {
			return monitor.AlertAck{}, fmt.Errorf("%d attempts failed, the last: %w", attempt, err)
		}
		attempt++
		retried.Add(1)
		if err := sleep(ctx, wait); err != nil {
			return monitor.AlertAck{}, err
		}
	}
}

// retryAfter reads a Retry-After of seconds; without one (or an
// unreadable one) it is 500 ms, the refill time at 2 batches/s. At most
// 10 s.
func retryAfter(h string) time.Duration {
	n, err := strconv.Atoi(h)
	if err != nil || n < 0 {
		return 500 * time.Millisecond
	}
	return min(time.Duration(n)*time.Second, 10*time.Second)
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// checkChecks asserts, before the storm, that the controller assigns a
// device every storm check (else the alerts would be acknowledged but not
// recorded) and that the checks endpoint answers 304 to its own ETag.
func checkChecks(ctx context.Context, c *http.Client, base, token, device string, checks int) error {
	get := func(etag string) (*http.Response, []byte, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+monitor.ChecksPath, nil)
		if err != nil {
			return nil, nil, err
		}
		req.Header.Set("Authorization", "Bearer "+token)
		if etag != "" {
			req.Header.Set("If-None-Match", etag)
		}
		resp, err := c.Do(req)
		if err != nil {
			return nil, nil, err
		}
		defer resp.Body.Close()
		data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return resp, data, err
	}
	resp, data, err := get("")
	if err != nil {
		return fmt.Errorf("GET %s for %s: %w", monitor.ChecksPath, device, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s for %s: %s %s (does this gitfleet serve the devicemonitor endpoints?)", monitor.ChecksPath, device, resp.Status, bytes.TrimSpace(data))
	}
	var set monitor.CheckSet
	if err := json.Unmarshal(data, &set); err != nil {
		return fmt.Errorf("GET %s for %s: not a CheckSet: %w", monitor.ChecksPath, device, err)
	}
	for j := range checks {
		if !slices.ContainsFunc(set.Checks, func(ch monitor.Check) bool { return ch.Name == checkName(j) }) {
			return fmt.Errorf("GET %s for %s: check %s is not assigned (got %d checks): the storm's alerts would not be recorded", monitor.ChecksPath, device, checkName(j), len(set.Checks))
		}
	}
	etag := resp.Header.Get("ETag")
	if etag == "" {
		return fmt.Errorf("GET %s for %s: no ETag", monitor.ChecksPath, device)
	}
	resp, data, err = get(etag)
	if err != nil {
		return fmt.Errorf("GET %s for %s with If-None-Match: %w", monitor.ChecksPath, device, err)
	}
	if resp.StatusCode != http.StatusNotModified {
		return fmt.Errorf("GET %s for %s with If-None-Match %s: %s, want 304 %s", monitor.ChecksPath, device, etag, resp.Status, bytes.TrimSpace(data))
	}
	fmt.Printf("%s: %d checks assigned to %s (ETag %s, 304 when unchanged)\n", monitor.ChecksPath, len(set.Checks), device, etag)
	return nil
}

// storedCount is what the store holds of the storm.
type storedCount struct {
	alerts, devices int64 // open storm alerts, devices with all of theirs
	firstShort      string
}

// alertLister is the store's listing of device alerts (store.DeviceAlerts).
type alertLister interface {
	ListAlerts(ctx context.Context, f store.AlertFilter) ([]store.Alert, error)
}

// countStored lists every device's alerts through the store API (the
// fleet-wide listing is bounded by store.MaxPage) and counts the open
// ones of the storm's checks.
func countStored(ctx context.Context, c config, e *env) (storedCount, error) {
	st, err := redis.New(redis.Options{Addrs: []string{e.rd.addr}})
	if err != nil {
		return storedCount{}, err
	}
	defer st.Close()
	lister, ok := any(st).(alertLister)
	if !ok {
		return storedCount{}, fmt.Errorf("the Redis store has no ListAlerts (store.DeviceAlerts)")
	}
	if c.alertsPerDevice > store.MaxPage {
		return storedCount{}, fmt.Errorf("-alerts-per-device %d is above what one ListAlerts returns (%d)", c.alertsPerDevice, store.MaxPage)
	}
	f := e.fleet
	var (
		next, alerts, devices atomic.Int64
		wg                    sync.WaitGroup
		mu                    sync.Mutex
		out                   storedCount
		firstErr              error
	)
	for range 16 {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= f.n || ctx.Err() != nil {
					return
				}
				as, err := lister.ListAlerts(ctx, store.AlertFilter{Device: alertDevice(f, i), State: store.AlertOpen, Limit: store.MaxPage})
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = fmt.Errorf("ListAlerts of %s: %w", f.name(i), err)
				}
				mu.Unlock()
				if err != nil {
					return
				}
				n := 0
				for _, a := range as {
					if isStormCheck(a.Check, c.checks) {
						n++
					}
				}
				alerts.Add(int64(n))
				if n == c.alertsPerDevice {
					devices.Add(1)
				} else {
					mu.Lock()
					if out.firstShort == "" {
						out.firstShort = fmt.Sprintf("%s has %d of %d", f.name(i), n, c.alertsPerDevice)
					}
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	if firstErr == nil {
		firstErr = ctx.Err()
	}
	out.alerts, out.devices = alerts.Load(), devices.Load()
	return out, firstErr
}

func isStormCheck(name string, checks int) bool {
	for j := range checks {
		if name == checkName(j) {
			return true
		}
	}
	return false
}

// alertDevice is how the store names device i in its alert records: by
// its Device manifest's name, as the device API records them.
func alertDevice(f *fleet, i int) string { return f.name(i) }

// checkManagementAPI asks GET /api/management/v1/alerts for the open
// alerts (one page) and for the alerts of a few devices by name.
func checkManagementAPI(ctx context.Context, c *http.Client, base string, cfg config, f *fleet) (string, error) {
	list := func(q url.Values) (int, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/management/v1/alerts?"+q.Encode(), nil)
		if err != nil {
			return 0, err
		}
		req.Header.Set("Authorization", "Bearer "+managementToken)
		resp, err := c.Do(req)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
		if err != nil {
			return 0, err
		}
		if resp.StatusCode != http.StatusOK {
			return 0, fmt.Errorf("GET alerts?%s: %s %s", q.Encode(), resp.Status, bytes.TrimSpace(data))
		}
		var out struct {
			Alerts []store.Alert `json:"alerts"`
		}
		if err := json.Unmarshal(data, &out); err != nil {
			return 0, fmt.Errorf("GET alerts?%s: %w", q.Encode(), err)
		}
		return len(out.Alerts), nil
	}
	const page = 1000
	n, err := list(url.Values{"state": {"open"}, "limit": {strconv.Itoa(page)}})
	if err != nil {
		return "", err
	}
	total := int64(f.n) * int64(cfg.alertsPerDevice)
	if want := min(total, page); int64(n) != want {
		return "", fmt.Errorf("GET alerts?state=open&limit=%d: %d alerts, want %d", page, n, want)
	}
	sample := min(20, f.n)
	for k := range sample {
		i := k * f.n / sample
		got, err := list(url.Values{"device": {f.name(i)}, "state": {"open"}, "limit": {strconv.Itoa(page)}})
		if err != nil {
			return "", err
		}
		if want := min(cfg.alertsPerDevice, page); got != want {
			return "", fmt.Errorf("GET alerts?device=%s&state=open: %d alerts, want %d", f.name(i), got, want)
		}
	}
	return fmt.Sprintf("state=open&limit=%d lists %d; device=NAME lists %d for each of %d devices sampled", page, n, min(cfg.alertsPerDevice, page), sample), nil
}
