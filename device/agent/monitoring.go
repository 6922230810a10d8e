package agent

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gitfleet/gitfleet/artifact"
	"github.com/gitfleet/gitfleet/device/atomicfile"
	"github.com/gitfleet/gitfleet/device/monitor"
)

// Monitoring in the daemon: the checks the controller assigns run in a
// device/monitor Monitor; its events go to the controller in batches.
//
// Files in the data directory:
//
//	monitor.json         the Monitor's state: alert states, baselines, the event queue
//	monitor-checks.json  the last checks applied and their ETag, so a device runs its
//	                     checks (and polls with If-None-Match) from its first second after a reboot
//	deployments.json     the last deployment outcomes, for failedDeployments checks
const (
	monitorStateFile  = "monitor.json"
	monitorChecksFile = "monitor-checks.json"
	outcomesFile      = "deployments.json"
)

// ExpectedDigestsKey is the key of an artifact payload's meta-data
// (mender-artifact --meta-data FILE.json) that announces the files the new
// software brings: an object from absolute path to "sha256:HEX". Before it
// installs such an artifact the agent hands them to Monitor.Expect, so a
// fileChange check takes them as its new baseline instead of raising an
// alert.
const ExpectedDigestsKey = artifact.ExpectedDigestsKey

// Bounds of the monitoring delivery and history.
const (
	// alertBatchSize is the most events one POST carries.
	alertBatchSize = 100
	// maxOutcomes is how many deployment outcomes deployments.json keeps.
	maxOutcomes = 16
	// outcomeMaxAge: an outcome older than this is not handed to a
	// failedDeployments check that appears later (its alert would have
	// expired by now).
	outcomeMaxAge = monitor.DefaultExpiry
)

// monitoring is the agent's side of device monitoring.
type monitoring struct {
	a   *Agent
	m   *monitor.Monitor
	api MonitorServer // nil: the server does not serve monitoring
	log *slog.Logger

	mu      sync.Mutex
	etag    string
	checks  []monitor.Check
	applied int  // SetChecks calls
	running bool // probes scan (the daemon runs): outcomes are reported
	absent  bool // the controller answered 404: it serves no monitoring

	deliverMu sync.Mutex
	kick      chan struct{}
}

// errPartialAck: the controller recorded part of a batch; send the rest.
var errPartialAck = errors.New("agent: the controller acknowledged part of an alert batch")

// monitoring returns the agent's monitoring, made on first use; nil when
// the configuration turns it off or its state cannot be opened (logged:
// monitoring never stands in the way of an update).
func (a *Agent) monitoring() *monitoring {
	if !a.cfg.MonitorEnabled() {
		return nil
	}
	a.monMu.Lock()
	defer a.monMu.Unlock()
	if a.mon != nil || a.monFailed {
		return a.mon
	}
	log := a.log.With("component", "monitor")
	m, err := monitor.New(monitor.Options{
		StatePath: filepath.Join(a.cfg.DataDir, monitorStateFile),
		Root:      a.cfg.MonitorRoot,
		Now:       a.now,
		Logger:    log,
	})
	if err != nil {
		a.log.Error("monitoring is off: its state cannot be read; remove the file to start afresh", "err", err)
		a.monFailed = true
		return nil
	}
	api := a.monAPI
	if api == nil {
		api, _ = a.server.(MonitorServer)
	}
	a.mon = &monitoring{a: a, m: m, api: api, log: log, kick: make(chan struct{}, 1)}
	return a.mon
}

// closeMonitoring stops the Monitor's commands; the next monitoring call
// makes a new one on the same state.
func (a *Agent) closeMonitoring() {
	a.monMu.Lock()
	defer a.monMu.Unlock()
	if a.mon != nil {
		a.mon.m.Close()
		a.mon = nil
	}
}

// resume applies the checks saved by the last run and hands the Monitor
// the deployment outcomes it has not seen: what the daemon does before its
// first poll, so checks run (and failures are reported) while the
// controller cannot be reached.
func (mo *monitoring) resume() {
	mo.mu.Lock()
	mo.running = true
	mo.mu.Unlock()
	path := filepath.Join(mo.a.cfg.DataDir, monitorChecksFile)
	b, err := readFileBounded(path, 2*maxChecksBytes)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		mo.log.Warn("saved monitoring checks unreadable; waiting for the controller's", "path", path, "err", err)
	default:
		var saved struct {
			ETag   string          `json:"etag"`
			Checks json.RawMessage `json:"checks"`
		}
		if err := json.Unmarshal(b, &saved); err != nil {
			mo.log.Warn("saved monitoring checks unreadable; waiting for the controller's", "path", path, "err", err)
			break
		}
		ans, err := DecodeCheckSet(append(append([]byte(`{"checks":`), saved.Checks...), '}'))
		if err != nil {
			mo.log.Warn("saved monitoring checks unreadable; waiting for the controller's", "path", path, "err", err)
			break
		}
		for _, e := range ans.Skipped {
			mo.log.Warn("saved monitoring check skipped", "err", e)
		}
		mo.apply(ans.Checks, saved.ETag, false)
		return // apply reports the outcomes
	}
	mo.reportOutcomes()
}

// start resumes and runs the Monitor and the alert delivery until ctx
// ends; wait returns once both have stopped. Without a monitoring API at
// the server there is nothing to run.
func (mo *monitoring) start(ctx context.Context) (wait func()) {
	if mo.api == nil {
		mo.log.Info("the server does not serve device monitoring; checks do not run")
		return func() {}
	}
	mo.resume()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		mo.m.Run(ctx)
	}()
	go func() {
		defer wg.Done()
		mo.deliveryLoop(ctx)
	}()
	return func() {
		wg.Wait()
		mo.mu.Lock()
		mo.running = false
		mo.mu.Unlock()
	}
}

// apply hands checks to the Monitor and remembers their ETag (saving both
// when save is set).
func (mo *monitoring) apply(checks []monitor.Check, etag string, save bool) {
	if err := mo.m.SetChecks(checks); err != nil {
		// DecodeCheckSet validated them; only the state file can fail.
		mo.log.Error("monitoring checks not applied", "err", err)
		return
	}
	mo.mu.Lock()
	mo.checks, mo.etag = checks, etag
	mo.applied++
	mo.mu.Unlock()
	names := make([]string, len(checks))
	for i, c := range checks {
		names[i] = c.Name
	}
	mo.log.Info("monitoring checks applied", "checks", strings.Join(names, ","), "etag", etag)
	if save {
		b, err := json.Marshal(struct {
			ETag   string          `json:"etag"`
			Checks []monitor.Check `json:"checks"`
		}{etag, checks})
		if err == nil {
			err = atomicfile.WriteFile(filepath.Join(mo.a.cfg.DataDir, monitorChecksFile), b, 0o600)
		}
		if err != nil {
			mo.log.Warn("monitoring checks not saved; they are fetched again after a restart", "err", err)
		}
	}
	mo.reportOutcomes()
}

// poll fetches the checks (conditionally on the last ETag), applies them
// when they changed, and, the controller having answered, wakes the
// delivery of alerts (ending its back-off).
func (mo *monitoring) poll(ctx context.Context) error {
	if mo.api == nil {
		return nil
	}
	mo.mu.Lock()
	etag := mo.etag
	mo.mu.Unlock()
	ans, err := mo.api.MonitorChecks(ctx, etag)
	if isStatus(err, http.StatusNotFound, http.StatusMethodNotAllowed) {
		mo.mu.Lock()
		first := !mo.absent
		mo.absent = true
		mo.mu.Unlock()
		if first {
			mo.log.Info("the controller serves no device monitoring (404); the checks in use stay", "err", err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("monitoring checks: %w", err)
	}
	defer signalChan(mo.kick)
	mo.mu.Lock()
	mo.absent = false
	mo.mu.Unlock()
	if ans.NotModified {
		return nil
	}
	for _, e := range ans.Skipped {
		mo.log.Warn("monitoring check skipped: this agent cannot run it", "err", e)
	}
	mo.apply(ans.Checks, ans.ETag, true)
	return nil
}

func signalChan(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// deliveryLoop delivers alerts when the Monitor queues them and after each
// poll; failures back off (5 s doubling up to RetryPollIntervalSeconds)
// with the events kept in the Monitor's persisted, bounded queue. A poll
// ends a back-off: the controller just answered.
func (mo *monitoring) deliveryLoop(ctx context.Context) {
	b := mo.a.backoff()
	var retry *time.Timer
	var retryC <-chan time.Time
	for {
		if retryC == nil {
			err := mo.deliver(ctx)
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				d := b.NextBackOff()
				mo.log.Warn("delivering monitoring alerts failed; they stay queued", "err", err, "retry_in", d.Round(time.Second))
				retry = time.NewTimer(d)
				retryC = retry.C
			} else {
				b.Reset()
			}
		}
		select {
		case <-ctx.Done():
			if retry != nil {
				retry.Stop()
			}
			return
		case <-mo.m.Queued():
		case <-mo.kick:
			if retry != nil {
				retry.Stop()
			}
			retryC = nil
		case <-retryC:
			retryC = nil
		}
	}
}

// deliver sends the queued events, oldest first, until the queue is empty
// or a send fails.
func (mo *monitoring) deliver(ctx context.Context) error {
	if mo.api == nil {
		return nil
	}
	mo.deliverMu.Lock()
	defer mo.deliverMu.Unlock()
	// Every round removes at least one event or returns; the bound only
	// stops a controller that acknowledges one event at a time from holding
	// the loop while new events keep coming.
	for range 4 * monitor.MaxBatch {
		err := mo.m.Drain(ctx, alertBatchSize, mo.send)
		switch {
		case errors.Is(err, errPartialAck):
		case refused(err):
			if err := mo.isolate(ctx, err); err != nil {
				return err
			}
		default:
			return err
		}
	}
	return nil
}

func (mo *monitoring) send(ctx context.Context, evs []monitor.Event) error {
	ack, err := mo.api.SendAlerts(ctx, monitor.AlertBatch{Events: evs})
	if err != nil {
		return err
	}
	return mo.acked(evs, ack.Seq)
}

// acked applies the controller's acknowledgement of evs: seq is the
// highest Seq it has recorded for the device.
func (mo *monitoring) acked(evs []monitor.Event, seq uint64) error {
	first, last := evs[0].Seq, evs[len(evs)-1].Seq
	switch {
	case seq < first:
		return fmt.Errorf("%w: monitoring alerts: the controller acknowledged seq %d, below the events sent (%d-%d); they stay queued", ErrServer, seq, first, last)
	case seq < last:
		if err := mo.m.Ack(seq); err != nil {
			return err
		}
		return errPartialAck
	}
	renumbered, err := mo.m.Resequence(seq)
	if err != nil {
		return err
	}
	if renumbered {
		// Beyond anything this device numbered: the controller skipped the
		// batch as replays of a previous life. Send it again, renumbered.
		mo.log.Warn("the controller has recorded alert events up to a seq this device never issued (its monitoring state was lost); queued events renumbered after it", "seq", seq)
		return errPartialAck
	}
	return mo.m.Ack(seq)
}

// refused reports whether the controller refused a batch itself (400, 413,
// 422): sending it again as it is cannot succeed.
func refused(err error) bool {
	return isStatus(err, http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusUnprocessableEntity)
}

// isolate follows a refused batch: it sends the oldest event alone and
// drops it when the controller refuses that too, so one event the
// controller cannot take does not hold up the queue for good.
func (mo *monitoring) isolate(ctx context.Context, batchErr error) error {
	q, _ := mo.m.Pending()
	if len(q) == 0 {
		return nil
	}
	head := q[:1]
	ack, err := mo.api.SendAlerts(ctx, monitor.AlertBatch{Events: head})
	if refused(err) {
		e := head[0]
		mo.log.Error("the controller refused a monitoring event; dropping it", "seq", e.Seq, "check", e.Check, "key", e.Key, "kind", string(e.Kind), "err", err)
		return mo.m.Ack(e.Seq)
	}
	if err != nil {
		return err
	}
	if err := mo.acked(head, ack.Seq); err != nil && !errors.Is(err, errPartialAck) {
		return err
	}
	mo.log.Warn("the controller refused a batch of monitoring events but took its first one alone; sending the rest", "err", batchErr)
	return nil
}

// --- deployment outcomes ------------------------------------------------------

// outcome is one deployment outcome in deployments.json.
type outcome struct {
	ID       string    `json:"id"`
	Artifact string    `json:"artifact,omitempty"`
	Status   string    `json:"status"`
	Time     time.Time `json:"time"`
	// Reported is when the outcome was handed to a failedDeployments
	// check, zero while it has not been.
	Reported time.Time `json:"reported,omitzero"`
}

// noteOutcome records the final outcome of the deployment of r (the
// report state calls it, in whichever process the deployment ends) and,
// while the daemon monitors, hands it to the Monitor. Recording it first
// is what lets a failure that ended in an earlier process (before a
// reboot, a crash) be reported once the daemon runs again.
func (a *Agent) noteOutcome(r *Record) {
	if !a.cfg.MonitorEnabled() || r.Status == "" {
		return
	}
	id := r.Deployment.ID
	if id == "" {
		id = "standalone-" + r.Started.UTC().Format("20060102T150405.000Z")
	}
	a.outMu.Lock()
	list := a.loadOutcomes()
	if !slices.ContainsFunc(list, func(o outcome) bool { return o.ID == id }) {
		list = append(list, outcome{ID: id, Artifact: r.Deployment.ArtifactName, Status: r.Status, Time: a.now().UTC()})
		if len(list) > maxOutcomes {
			list = list[len(list)-maxOutcomes:]
		}
		a.saveOutcomes(list)
	}
	a.outMu.Unlock()
	a.monMu.Lock()
	mo := a.mon
	a.monMu.Unlock()
	if mo != nil {
		mo.reportOutcomes()
	}
}

func (a *Agent) loadOutcomes() []outcome {
	path := filepath.Join(a.cfg.DataDir, outcomesFile)
	b, err := readFileBounded(path, 1<<20)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	var list []outcome
	if err == nil {
		err = json.Unmarshal(b, &list)
	}
	if err != nil {
		a.log.Warn("deployment outcomes unreadable; starting afresh", "path", path, "err", err)
		return nil
	}
	return list
}

func (a *Agent) saveOutcomes(list []outcome) {
	b, err := json.Marshal(list)
	if err == nil {
		err = atomicfile.WriteFile(filepath.Join(a.cfg.DataDir, outcomesFile), b, 0o600)
	}
	if err != nil {
		a.log.Warn("deployment outcomes not saved", "err", err)
	}
}

// reportOutcomes hands the recorded outcomes to the Monitor while its
// probes scan and a failedDeployments check is set: those never handed to
// one (unless older than outcomeMaxAge), and, again, those handed to one
// within two of its intervals, whose scan may not have happened before the
// agent stopped (the check itself skips deployments it has seen).
func (mo *monitoring) reportOutcomes() {
	mo.mu.Lock()
	running := mo.running
	interval := time.Duration(0)
	for _, c := range mo.checks {
		if c.FailedDeployments != nil {
			iv := c.Interval
			if iv == 0 {
				iv = 10 * time.Second // the probe's default
			}
			interval = max(interval, iv)
		}
	}
	mo.mu.Unlock()
	if !running || interval == 0 {
		return
	}
	a := mo.a
	now := a.now()
	a.outMu.Lock()
	defer a.outMu.Unlock()
	list := a.loadOutcomes()
	changed := false
	for i := range list {
		o := &list[i]
		switch {
		case o.Reported.IsZero() && now.Sub(o.Time) > outcomeMaxAge:
			continue
		case !o.Reported.IsZero() && now.Sub(o.Reported) >= 2*interval:
			continue
		}
		mo.m.ReportDeployment(monitor.DeploymentOutcome{ID: o.ID, Artifact: o.Artifact, Status: o.Status, Time: o.Time})
		if o.Reported.IsZero() {
			o.Reported = now.UTC()
			changed = true
		}
	}
	if changed {
		a.saveOutcomes(list)
	}
}

// --- expected digests -----------------------------------------------------------

// expectDigests announces the expected file digests the artifact's
// payload meta-data carries (ExpectedDigestsKey) to the Monitor, before
// the installers change anything. Entries it cannot read are logged and
// left out: the files they name raise alerts when they change, which is
// the safe side.
func (d *deployment) expectDigests() {
	digests, problems := expectedDigests(d.rec.Header)
	for _, p := range problems {
		d.logf(slog.LevelWarn, "artifact meta-data %s: %s", ExpectedDigestsKey, p)
	}
	if len(digests) == 0 {
		return
	}
	mo := d.a.monitoring()
	if mo == nil {
		return
	}
	if err := mo.m.Expect(digests); err != nil {
		d.logf(slog.LevelWarn, "monitoring: the expected digests of the new software were not saved (changed files will raise alerts): %v", err)
		return
	}
	d.logf(slog.LevelInfo, "monitoring: %d expected file digests of the new software announced", len(digests))
}

// expectedDigests collects ExpectedDigestsKey from every payload's
// meta-data: absolute path → "sha256:HEX". A path two payloads give
// different digests is left out.
func expectedDigests(h *HeaderRecord) (map[string]string, []string) {
	if h == nil {
		return nil, nil
	}
	out := map[string]string{}
	conflict := map[string]bool{}
	var problems []string
	for i, p := range h.Payloads {
		v, ok := p.MetaData[ExpectedDigestsKey]
		if !ok {
			continue
		}
		obj, ok := v.(map[string]any)
		if !ok {
			problems = append(problems, fmt.Sprintf("payload %d: not an object of path to \"sha256:HEX\"", i))
			continue
		}
		for path, dv := range obj {
			s, _ := dv.(string)
			digest, ok := parseDigest(s)
			if !filepath.IsAbs(path) || filepath.Clean(path) != path || !ok {
				problems = append(problems, fmt.Sprintf("payload %d: %q: %q: want an absolute clean path and \"sha256:\" with 64 hex digits", i, path, s))
				continue
			}
			if prev, ok := out[path]; ok && prev != digest {
				conflict[path] = true
			}
			out[path] = digest
		}
	}
	for path := range conflict {
		problems = append(problems, fmt.Sprintf("%s: payloads expect different digests; left out", path))
		delete(out, path)
	}
	slices.Sort(problems)
	return out, problems
}

// parseDigest accepts "sha256:HEX" (or bare HEX) and returns "sha256:hex".
func parseDigest(s string) (string, bool) {
	h := strings.ToLower(strings.TrimPrefix(s, "sha256:"))
	if b, err := hex.DecodeString(h); err != nil || len(b) != 32 {
		return "", false
	}
	return "sha256:" + h, true
}
