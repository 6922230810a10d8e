package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/gitfleet/gitfleet/artifact"
	"github.com/gitfleet/gitfleet/device/install"
)

// One type per state. Each Run does its state's work and returns the next
// state; failures go through d.fail, which picks the error transition.

// Limits on repeated attempts of one state after crashes.
const (
	maxDownloadAttempts = 3
	maxRebootAttempts   = 3
	maxReportAttempts   = 50
)

// resumeState is where a deployment found in the record at start goes on.
// Most states are entered again (installers are idempotent); a reboot state
// means the reboot happened — unless the boot ID says it did not.
func (d *deployment) resumeState() state {
	r := d.rec
	switch r.State {
	case StateDownload:
		return download{}
	case StateArtifactInstall:
		return artifactInstall{}
	case StateArtifactReboot:
		if d.a.sameBoot(r.BootID) {
			return reboot{}
		}
		return verifyReboot{}
	case StateArtifactVerifyReboot:
		return verifyReboot{}
	case StateArtifactCommit:
		return commit{}
	case StateArtifactRollback:
		return rollback{}
	case StateArtifactRollbackReboot:
		if d.a.sameBoot(r.BootID) {
			return rollbackReboot{}
		}
		return verifyRollbackReboot{}
	case StateArtifactVerifyRollbackReboot:
		return verifyRollbackReboot{}
	case StateArtifactFailure:
		return failure{}
	case StateCleanup:
		return cleanup{}
	}
	return report{}
}

type download struct{}

func (download) Name() StateName { return StateDownload }

func (download) Run(ctx context.Context, d *deployment) (state, error) {
	r := d.rec
	if r.Attempts > maxDownloadAttempts {
		err := fmt.Errorf("download interrupted %d times", r.Attempts-1)
		return d.failed(ctx, err)
	}
	if r.Attempts > 1 {
		d.logf(slog.LevelWarn, "download interrupted; starting over (attempt %d)", r.Attempts)
		// Whatever the last attempt left is not bootable; let the
		// installers clear it before they start again.
		d.all(ctx, "Cleanup", func(in install.Installer) error { return in.Cleanup(ctx) })
		d.ins, r.Header, r.Provides = nil, nil, nil
	}
	if err := d.status(ctx, StatusDownloading, ""); err != nil {
		return d.failed(ctx, err)
	}
	if err := d.download(ctx); err != nil {
		if isStop(err) {
			return nil, err
		}
		return d.failed(ctx, err)
	}
	return artifactInstall{}, nil
}

// download streams the artifact into the installers. Nothing it does is
// bootable: the artifact reader checks the signature (with the agent's own
// keys) before the first payload byte and each file's digest at its end,
// and the boot switch waits for ArtifactInstall.
func (d *deployment) download(ctx context.Context) error {
	a, r := d.a, d.rec
	src, err := a.open(ctx, r.Deployment)
	if err != nil {
		return err
	}
	defer src.Close()
	ar, err := artifact.NewReader(src, artifact.ReaderOptions{Verifiers: a.verifiers})
	if err != nil {
		return fmt.Errorf("read artifact: %w", err)
	}
	h := ar.Header()
	if len(a.verifiers) == 0 {
		d.logf(slog.LevelWarn, "no ArtifactVerifyKeys configured: the artifact's signature is not checked")
	} else if v := ar.SignedBy(); v != nil {
		d.logf(slog.LevelInfo, "artifact %s signed by key %s", h.Name(), v.Fingerprint())
	}
	if r.Deployment.ArtifactName != "" && h.Name() != r.Deployment.ArtifactName {
		return fmt.Errorf("%w: the server offered %q, the artifact is %q", ErrIncompatible, r.Deployment.ArtifactName, h.Name())
	}
	if len(h.Payloads) == 0 {
		return fmt.Errorf("%w: artifact has no payload", ErrIncompatible)
	}
	cur, err := a.ArtifactInfo()
	if err != nil {
		return err
	}
	dt, err := a.DeviceType()
	if err != nil {
		return err
	}
	if err := checkCompatible(h, dt, cur); err != nil {
		return err
	}
	if !a.cfg.AllowDowngrade {
		if err := checkDowngrade(cur, h); err != nil {
			return err
		}
	}
	r.Deployment.ArtifactName = h.Name()
	r.Header = recordHeader(h)
	r.Provides = newProvides(cur, h)
	if err := d.save(); err != nil {
		return err
	}
	if a.scripts != nil {
		if err := a.scripts.Store(ctx, h.Scripts); err != nil {
			return fmt.Errorf("store state scripts: %w", err)
		}
	}
	ins, err := d.installers()
	if err != nil {
		return err
	}
	start := a.now()
	if err := install.DownloadAll(ctx, ar, ins); err != nil {
		return err
	}
	d.logf(slog.LevelInfo, "downloaded and verified %s in %s", h.Name(), a.now().Sub(start).Round(time.Millisecond))
	return nil
}

type artifactInstall struct{}

func (artifactInstall) Name() StateName { return StateArtifactInstall }

func (artifactInstall) Run(ctx context.Context, d *deployment) (state, error) {
	if d.rec.Header == nil {
		err := errors.New("ArtifactInstall without a downloaded artifact")
		return d.failed(ctx, err)
	}
	if err := d.status(ctx, StatusInstalling, ""); err != nil {
		return d.failed(ctx, err)
	}
	// Before the installers change a file a running check could see.
	d.expectDigests()
	if err := d.each(ctx, "ArtifactInstall", func(in install.Installer) error { return in.ArtifactInstall(ctx) }); err != nil {
		return d.failed(ctx, err)
	}
	need, err := d.needsReboot(ctx)
	if err != nil {
		return d.failed(ctx, err)
	}
	if need == install.RebootNo {
		return commit{}, nil
	}
	return reboot{}, nil
}

type reboot struct{}

func (reboot) Name() StateName { return StateArtifactReboot }

func (reboot) Run(ctx context.Context, d *deployment) (state, error) {
	r := d.rec
	if r.Attempts > maxRebootAttempts {
		err := fmt.Errorf("the device did not reboot after %d attempts", r.Attempts-1)
		return d.failed(ctx, err)
	}
	if r.Deployment.Standalone() {
		// A standalone install stops here; the user reboots and runs
		// commit (or rollback).
		r.BootID = d.a.bootID()
		if err := d.save(); err != nil {
			return nil, err
		}
		return nil, errStandaloneWait
	}
	if err := d.status(ctx, StatusRebooting, ""); err != nil {
		return d.failed(ctx, err)
	}
	need, err := d.needsReboot(ctx)
	if err != nil {
		return d.failed(ctx, err)
	}
	r.BootID = d.a.bootID()
	if err := d.save(); err != nil {
		return nil, err
	}
	if need == install.RebootYes {
		if err := d.each(ctx, "ArtifactReboot", func(in install.Installer) error { return in.ArtifactReboot(ctx) }); err != nil {
			return d.failed(ctx, err)
		}
		// The installer rebooted what it updated and we are still here.
		return verifyReboot{}, nil
	}
	d.logf(slog.LevelInfo, "rebooting into the new software")
	if err := d.a.reboot(ctx); err != nil {
		err = fmt.Errorf("reboot: %w", err)
		return d.failed(ctx, err)
	}
	return nil, ErrRebooting
}

type verifyReboot struct{}

func (verifyReboot) Name() StateName { return StateArtifactVerifyReboot }

func (verifyReboot) Run(ctx context.Context, d *deployment) (state, error) {
	if err := d.scripts(ctx, StateArtifactReboot, "Leave"); err != nil {
		return d.failed(ctx, err)
	}
	if err := d.verify(ctx); err != nil {
		return d.failed(ctx, err)
	}
	return commit{}, nil
}

// verify runs the installers' ArtifactVerifyReboot (running the expected
// partition?) and the configured health check.
func (d *deployment) verify(ctx context.Context) error {
	if err := d.each(ctx, "ArtifactVerifyReboot", func(in install.Installer) error { return in.ArtifactVerifyReboot(ctx) }); err != nil {
		return err
	}
	if err := d.a.healthCheck(ctx); err != nil {
		return err
	}
	d.logf(slog.LevelInfo, "new software verified")
	return nil
}

type commit struct{}

func (commit) Name() StateName { return StateArtifactCommit }

func (commit) Run(ctx context.Context, d *deployment) (state, error) {
	r := d.rec
	if r.Committed {
		// Cut off after the commit was recorded: only the provides may be
		// left to write.
		d.writeProvides()
		return cleanup{}, nil
	}
	if r.Deployment.Standalone() && !d.commit {
		return nil, errStandaloneWait
	}
	// After a crash in this state the verification is not repeated (it
	// passed, or the record would not name this state, and a commit may
	// have ended the trial already): installers refuse to commit what does
	// not run, e.g. when the bootloader fell back in the meantime, and
	// that refusal rolls back.
	// Last chance for the server to call the deployment off.
	if err := d.status(ctx, StatusInstalling, "committing"); err != nil {
		return d.failed(ctx, err)
	}
	if err := d.each(ctx, "ArtifactCommit", func(in install.Installer) error { return in.ArtifactCommit(ctx) }); err != nil {
		return d.failed(ctx, err)
	}
	// The order is what keeps the reported artifact equal to the booted
	// one across power cuts: first the record says committed (from then on
	// nothing rolls back, and ArtifactInfo reports the record's provides),
	// then artifact_info is written. A cut before the record leaves the
	// old provides, and a rollback, which is still allowed, makes them
	// true again.
	r.Committed = true
	r.Status = StatusSuccess
	if err := d.save(); err != nil {
		return nil, err
	}
	d.writeProvides()
	d.logf(slog.LevelInfo, "committed %s", r.Deployment.ArtifactName)
	return cleanup{}, nil
}

// writeProvides writes the committed deployment's provides to
// artifact_info. A failure is logged: ArtifactInfo reports the record's
// provides while the record lasts, and the commit is not undone.
func (d *deployment) writeProvides() {
	if err := d.a.saveProvides(d.rec.Provides); err != nil {
		d.logf(slog.LevelError, "%v", err)
	}
}

type rollback struct{}

func (rollback) Name() StateName { return StateArtifactRollback }

func (rollback) Run(ctx context.Context, d *deployment) (state, error) {
	if err := d.each(ctx, "ArtifactRollback", func(in install.Installer) error { return in.ArtifactRollback(ctx) }); err != nil {
		if isStop(err) {
			return nil, err
		}
		d.logf(slog.LevelError, "%v", err)
		d.rollbackErr = err
		return failure{}, err
	}
	d.logf(slog.LevelInfo, "rolled back")
	// The answer may be unknown when ArtifactInstall was cut off; ask now,
	// since a power cut after the boot switch may have booted the new
	// software already.
	need, err := d.needsReboot(ctx)
	if err != nil {
		d.logf(slog.LevelError, "%v", err)
		need = install.RebootAutomatic
	}
	if need == install.RebootNo {
		return failure{}, nil
	}
	return rollbackReboot{}, nil
}

type rollbackReboot struct{}

func (rollbackReboot) Name() StateName { return StateArtifactRollbackReboot }

func (rollbackReboot) Run(ctx context.Context, d *deployment) (state, error) {
	r := d.rec
	if r.Deployment.Standalone() {
		d.logf(slog.LevelInfo, "reboot to run the old software again")
		return failure{}, nil
	}
	if r.Attempts > maxRebootAttempts || r.RollbackReboots >= maxRebootAttempts {
		err := fmt.Errorf("the device did not reboot into the old software after %d attempts", r.RollbackReboots)
		d.logf(slog.LevelError, "%v", err)
		return failure{}, err
	}
	need, _ := parseReboot(r.Reboot)
	r.RollbackReboots++
	r.BootID = d.a.bootID()
	if err := d.save(); err != nil {
		return nil, err
	}
	if need == install.RebootYes {
		if err := d.each(ctx, "ArtifactRollbackReboot", func(in install.Installer) error { return in.ArtifactRollbackReboot(ctx) }); err != nil {
			if isStop(err) {
				return nil, err
			}
			d.logf(slog.LevelError, "%v", err)
			return failure{}, err
		}
		return verifyRollbackReboot{}, nil
	}
	d.logf(slog.LevelInfo, "rebooting into the old software")
	if err := d.a.reboot(ctx); err != nil {
		d.logf(slog.LevelError, "reboot: %v", err)
		return failure{}, err
	}
	return nil, ErrRebooting
}

type verifyRollbackReboot struct{}

func (verifyRollbackReboot) Name() StateName { return StateArtifactVerifyRollbackReboot }

func (verifyRollbackReboot) Run(ctx context.Context, d *deployment) (state, error) {
	d.scripts(ctx, StateArtifactRollbackReboot, "Leave")
	err := d.each(ctx, "ArtifactVerifyRollbackReboot", func(in install.Installer) error { return in.ArtifactVerifyRollbackReboot(ctx) })
	if isStop(err) {
		return nil, err
	}
	if err != nil {
		d.logf(slog.LevelError, "%v", err)
		if d.rec.RollbackReboots < maxRebootAttempts {
			return rollbackReboot{}, err
		}
		d.rollbackErr = err
		return failure{}, err
	}
	return failure{}, nil
}

type failure struct{}

func (failure) Name() StateName { return StateArtifactFailure }

func (failure) Run(ctx context.Context, d *deployment) (state, error) {
	d.all(ctx, "ArtifactFailure", func(in install.Installer) error { return in.ArtifactFailure(ctx) })
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return cleanup{}, nil
}

type cleanup struct{}

func (cleanup) Name() StateName { return StateCleanup }

func (cleanup) Run(ctx context.Context, d *deployment) (state, error) {
	d.all(ctx, "Cleanup", func(in install.Installer) error { return in.Cleanup(ctx) })
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if d.rec.Status == "" {
		d.rec.Status = StatusFailure
	}
	return report{}, nil
}

type report struct{}

func (report) Name() StateName { return StateReport }

// Run sends the outcome (after the log, on failure). Network errors are
// retried with backoff for as long as the context lives; if the agent
// stops first, the record keeps the report for the next start.
func (report) Run(ctx context.Context, d *deployment) (state, error) {
	r := d.rec
	if r.Status == "" {
		r.Status = StatusFailure
	}
	// The outcome is final here, whether or not the server hears of it.
	d.a.noteOutcome(r)
	if r.Deployment.Standalone() || d.a.server == nil {
		return nil, nil
	}
	if r.Aborted {
		d.logf(slog.LevelInfo, "deployment aborted by the server; outcome %s not reported", r.Status)
		return nil, nil
	}
	id := r.Deployment.ID
	b := d.a.backoff()
	for attempt := 1; ; attempt++ {
		err := d.sendOutcome(ctx)
		switch {
		case err == nil:
			return nil, nil
		case errors.Is(err, ErrAborted):
			return nil, nil
		case errors.Is(err, ErrRejected):
			d.a.log.Error("the server refused the outcome; giving up", "deployment", id, "status", r.Status, "err", err)
			return nil, nil
		case attempt >= maxReportAttempts:
			d.a.log.Error("could not report the outcome; giving up", "deployment", id, "status", r.Status, "err", err)
			return nil, nil
		}
		d.a.log.Warn("report failed; retrying", "deployment", id, "status", r.Status, "err", err)
		if err := d.a.sleep(ctx, b.NextBackOff()); err != nil {
			return nil, err
		}
	}
}

func (d *deployment) sendOutcome(ctx context.Context) error {
	r := d.rec
	if r.Status == StatusFailure {
		msgs := d.a.deplog.messages()
		if r.Error != "" && len(msgs) == 0 {
			msgs = []LogMessage{{Timestamp: d.a.now().UTC().Format(time.RFC3339), Level: "error", Message: r.Error}}
		}
		// The log is best effort: the outcome is what the rollout waits
		// for, so a log the server will not take (rate-limited, refused,
		// unreachable) does not hold it back. Were the server down, the
		// status fails too and both are sent again.
		if err := d.a.server.Log(ctx, r.Deployment.ID, msgs); err != nil && ctx.Err() == nil {
			d.a.log.Warn("deployment log not delivered; reporting the outcome without it", "deployment", r.Deployment.ID, "err", err)
		}
	}
	return d.a.server.Status(ctx, r.Deployment.ID, r.Status, "")
}
