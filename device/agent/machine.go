package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/gitfleet/gitfleet/device/install"
)

// state is one state of the update state machine. Run does the state's
// work and returns the state to enter next (nil: the deployment is over).
// A non-nil error with a next state is the state's failure, already turned
// into its error transition; a stop error (see isStop) ends the run with
// the record left as it is, to be resumed later.
type state interface {
	Name() StateName
	Run(ctx context.Context, d *deployment) (state, error)
}

// stop errors end a run without a transition: the record stays in the
// state it names and the deployment resumes from there.
var (
	errStandaloneWait = errors.New("agent: waiting for commit or rollback")
)

func isStop(err error) bool {
	return errors.Is(err, ErrRebooting) || errors.Is(err, errStandaloneWait) ||
		errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) ||
		errors.As(err, new(*persistError))
}

// persistError: the record could not be written. The agent stops: going on
// without a record would lose the deployment at the next power cut.
type persistError struct{ err error }

func (e *persistError) Error() string { return e.err.Error() }
func (e *persistError) Unwrap() error { return e.err }

// maxTransitions bounds the records written for one deployment: beyond it
// the agent is in a state loop (Mender's lesson) and reports failure.
const maxTransitions = 100

// deployment is one run of the state machine over a record.
type deployment struct {
	a   *Agent
	rec *Record
	ins []install.Installer
	// resumed: the current state was found in the record at start (not
	// entered from another state in this process).
	resumed bool
	// commit: a standalone deployment may go past the reboot or commit
	// point (the commit command).
	commit bool
	// rollbackErr is why rolling back failed, if it did.
	rollbackErr error
}

// run drives the machine from st until the deployment ends or stops.
// Before a state runs, the record naming it is written.
func (d *deployment) run(ctx context.Context, st state) error {
	for st != nil {
		if err := ctx.Err(); err != nil {
			return err // stopped: the record names the state to resume
		}
		if d.rec.Transitions >= maxTransitions && st.Name() != StateReport {
			d.logf(slog.LevelError, "state loop: %d transitions; giving up in %s", d.rec.Transitions, st.Name())
			if !d.rec.Committed {
				d.rec.Status = StatusFailure
			}
			st = report{}
		}
		if d.rec.Transitions >= maxTransitions+maxReportAttempts {
			d.logf(slog.LevelError, "state loop: giving up the deployment unreported")
			break
		}
		if err := d.enter(st); err != nil {
			return err
		}
		if err := d.scripts(ctx, st.Name(), "Enter"); err != nil {
			if isStop(err) {
				return err
			}
			next := d.fail(ctx, err)
			d.scripts(ctx, st.Name(), "Error")
			d.resumed = false
			st = next
			continue
		}
		next, err := st.Run(ctx, d)
		if err != nil && isStop(err) {
			return err
		}
		if err != nil {
			d.scripts(ctx, st.Name(), "Error")
		} else if st.Name() != StateArtifactReboot && st.Name() != StateArtifactRollbackReboot {
			// The Leave scripts of the reboot states run after the reboot.
			if serr := d.scripts(ctx, st.Name(), "Leave"); serr != nil {
				if isStop(serr) {
					return serr
				}
				next = d.fail(ctx, serr)
			}
		}
		d.resumed = false
		st = next
	}
	if err := d.a.records.Clear(); err != nil {
		return &persistError{err}
	}
	d.a.log.Info("deployment finished", "deployment", d.rec.Deployment.ID, "artifact", d.rec.Deployment.ArtifactName, "status", d.rec.Status)
	return nil
}

// enter writes the record for st. It counts attempts (entries into the
// same state) and transitions; past maxTransitions the deployment is
// redirected to its report.
func (d *deployment) enter(st state) error {
	r := d.rec
	if r.State == st.Name() {
		r.Attempts++
	} else {
		r.Attempts = 1
	}
	r.State = st.Name()
	r.Transitions++
	r.Updated = d.a.now()
	if st.Name() == StateArtifactInstall {
		r.Installed = true
	}
	if err := d.a.records.Save(r); err != nil {
		return &persistError{err}
	}
	d.a.log.Debug("enter state", "state", st.Name(), "deployment", r.Deployment.ID, "attempt", r.Attempts)
	return nil
}

// save writes the record without a transition (new facts within a state).
func (d *deployment) save() error {
	d.rec.Updated = d.a.now()
	if err := d.a.records.Save(d.rec); err != nil {
		return &persistError{err}
	}
	return nil
}

// fail turns a state's error into the error transition: nothing installed
// yet → Cleanup; installed and every installer can roll back →
// ArtifactRollback; otherwise → ArtifactFailure. Committed deployments do
// not fail any more: the error is logged and the deployment goes on to
// Cleanup.
func (d *deployment) fail(ctx context.Context, err error) state {
	if errors.Is(err, ErrAborted) {
		d.rec.Aborted = true
	}
	d.logf(slog.LevelError, "%v", err)
	if d.rec.Error == "" {
		d.rec.Error = err.Error()
	}
	if d.rec.Committed {
		return cleanup{}
	}
	d.rec.Status = StatusFailure
	if !d.rec.Installed {
		return cleanup{}
	}
	ok, rerr := d.supportsRollback(ctx)
	if rerr != nil {
		d.logf(slog.LevelError, "SupportsRollback: %v", rerr)
	}
	if ok {
		return rollback{}
	}
	return failure{}
}

// failed is fail for a state's Run: a stop error stops instead.
func (d *deployment) failed(ctx context.Context, err error) (state, error) {
	if isStop(err) {
		return nil, err
	}
	return d.fail(ctx, err), err
}

func (d *deployment) supportsRollback(ctx context.Context) (bool, error) {
	ins, err := d.installers()
	if err != nil || len(ins) == 0 {
		return false, err
	}
	for _, in := range ins {
		ok, err := in.SupportsRollback(ctx)
		if err != nil {
			return false, err
		}
		if !ok {
			return false, nil
		}
	}
	return true, nil
}

// installers makes (once) the installers for the record's header.
func (d *deployment) installers() ([]install.Installer, error) {
	if d.ins != nil || d.rec.Header == nil {
		return d.ins, nil
	}
	h, err := d.rec.Header.artifactHeader()
	if err != nil {
		return nil, err
	}
	ins := make([]install.Installer, len(h.Payloads))
	for i := range h.Payloads {
		in, err := d.a.newInstaller(install.Payload{Header: h, Index: i})
		if err != nil {
			return nil, fmt.Errorf("installer for payload %d (%s): %w", i, h.Payloads[i].Type, err)
		}
		ins[i] = in
	}
	d.ins = ins
	return ins, nil
}

// each calls f on every installer, stopping at the first error.
func (d *deployment) each(ctx context.Context, what string, f func(install.Installer) error) error {
	ins, err := d.installers()
	if err != nil {
		return err
	}
	for i, in := range ins {
		if err := f(in); err != nil {
			return fmt.Errorf("%s (payload %d): %w", what, i, err)
		}
	}
	return nil
}

// all calls f on every installer, logging errors and going on: for the
// states that must run whatever happened (ArtifactFailure, Cleanup).
func (d *deployment) all(ctx context.Context, what string, f func(install.Installer) error) {
	ins, err := d.installers()
	if err != nil {
		d.logf(slog.LevelError, "%s: %v", what, err)
		return
	}
	for i, in := range ins {
		if err := f(in); err != nil {
			if isStop(err) {
				return
			}
			d.logf(slog.LevelError, "%s (payload %d): %v", what, i, err)
		}
	}
}

// needsReboot asks every installer (once; the answer is kept in the record).
func (d *deployment) needsReboot(ctx context.Context) (install.Reboot, error) {
	if r, ok := parseReboot(d.rec.Reboot); ok {
		return r, nil
	}
	ins, err := d.installers()
	if err != nil {
		return install.RebootNo, err
	}
	answers := make([]install.Reboot, len(ins))
	for i, in := range ins {
		if answers[i], err = in.NeedsArtifactReboot(ctx); err != nil {
			return install.RebootNo, fmt.Errorf("NeedsArtifactReboot (payload %d): %w", i, err)
		}
	}
	out, err := install.CombineReboots(answers...)
	if err != nil {
		return install.RebootNo, err
	}
	d.rec.Reboot = out.String()
	return out, nil
}

// status reports a status of a server deployment. ErrAborted is returned;
// other errors are logged: the deployment goes on, the final status is
// what matters and is retried.
func (d *deployment) status(ctx context.Context, status, substate string) error {
	if d.rec.Deployment.Standalone() || d.a.server == nil || d.rec.Aborted {
		return nil
	}
	err := d.a.server.Status(ctx, d.rec.Deployment.ID, status, substate)
	if errors.Is(err, ErrAborted) {
		return err
	}
	if err != nil {
		d.a.log.Warn("status report failed", "deployment", d.rec.Deployment.ID, "status", status, "err", err)
	}
	return nil
}

func (d *deployment) scripts(ctx context.Context, st StateName, action string) error {
	if d.a.scripts == nil {
		return nil
	}
	switch st {
	case StateArtifactVerifyReboot, StateArtifactVerifyRollbackReboot, StateCleanup, StateReport:
		return nil // no scripts for these states
	}
	err := d.a.scripts.Run(ctx, st, action)
	if err != nil && action == "Error" {
		d.logf(slog.LevelWarn, "%s_%s scripts: %v", st, action, err)
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s_%s scripts: %w", st, action, err)
	}
	return nil
}

// logf logs to the agent's log and to the deployment log.
func (d *deployment) logf(level slog.Level, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	d.a.log.Log(context.Background(), level, msg, "deployment", d.rec.Deployment.ID, "state", d.rec.State)
	d.a.deplog.append(d.a.now(), strings.ToLower(level.String()), string(d.rec.State)+": "+msg)
}
