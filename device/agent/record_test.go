package agent

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRecordRoundTrip(t *testing.T) {
	dir := t.TempDir()
	s := NewRecords(filepath.Join(dir, "state.json"))
	if r, err := s.Load(); r != nil || err != nil {
		t.Fatalf("empty store: %v, %v", r, err)
	}
	r := &Record{State: StateArtifactReboot, Deployment: Deployment{ID: "d1", URI: "https://x/y"}, Reboot: "Automatic", Installed: true, Attempts: 1, Transitions: 4}
	if err := s.Save(r); err != nil {
		t.Fatal(err)
	}
	got, err := s.Load()
	if err != nil || got.State != StateArtifactReboot || got.Deployment.ID != "d1" || !got.Installed || got.Version != recordVersion {
		t.Fatalf("loaded %+v, %v", got, err)
	}
	fi, err := os.Stat(filepath.Join(dir, "state.json"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("record mode %v, %v", fi.Mode(), err)
	}
	// No temporary files are left behind.
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("files: %v", ents)
	}
	if err := s.Clear(); err != nil {
		t.Fatal(err)
	}
	if r, err := s.Load(); r != nil || err != nil {
		t.Fatalf("after Clear: %v, %v", r, err)
	}
}

func TestRecordRefusesWhatItCannotRead(t *testing.T) {
	for _, tc := range []struct{ name, body, want string }{
		{"garbage", "{not json", "unreadable"},
		{"future version", `{"version": 2, "state": "Download"}`, "version 2"},
		{"unknown state", `{"version": 1, "state": "Dance"}`, "unknown state"},
		{"idle persisted", `{"version": 1, "state": "Idle"}`, "unknown state"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "state.json")
			os.WriteFile(p, []byte(tc.body), 0o600)
			_, err := NewRecords(p).Load()
			if !errors.Is(err, ErrRecord) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v", err)
			}
		})
	}
}

// TestResumeFromEachState starts an agent on a record in each persisted
// state, as a crash or power cut leaves it, and checks where the
// deployment goes.
func TestResumeFromEachState(t *testing.T) {
	for _, tc := range []struct {
		state     StateName
		sameBoot  bool
		installed bool
		committed bool
		// first installer call after the restart, and the outcome
		first, outcome string
	}{
		// The download starts over. The agent stopped as it entered
		// Download, and an https download stops with it, so no installer
		// was made and none needs its Cleanup first.
		{StateDownload, false, false, false, "Download", "success"},
		{StateArtifactInstall, false, true, false, "ArtifactInstall", "success"},
		{StateArtifactReboot, false, true, false, "ArtifactVerifyReboot", "success"},
		{StateArtifactReboot, true, true, false, "", "success"}, // no reboot happened: reboot again
		{StateArtifactVerifyReboot, false, true, false, "ArtifactVerifyReboot", "success"},
		// The stopped agent goes on to the commit, which it records in
		// ArtifactCommit before writing the provides; after the restart
		// the commit is not repeated.
		{StateArtifactCommit, false, true, true, "Cleanup", "success"},
		{StateArtifactRollback, false, true, false, "ArtifactRollback", "failure"},
		{StateArtifactRollbackReboot, false, true, false, "ArtifactVerifyRollbackReboot", "failure"},
		{StateArtifactFailure, false, true, false, "ArtifactFailure", "failure"},
		{StateCleanup, false, true, true, "Cleanup", "success"},
		{StateReport, false, true, true, "", "success"},
	} {
		name := string(tc.state)
		if tc.sameBoot {
			name += "/same boot"
		}
		t.Run(name, func(t *testing.T) {
			e := newTestEnv(t, "release-1")
			signer, _ := signers(t)
			e.deploy("release-2", buildArtifact(t, e.dir, "release-2", []byte("new image"), signer))
			// Run the deployment up to the state under test, stopping
			// the agent there.
			e.runUntil(tc.state, tc.state == StateArtifactReboot && !tc.sameBoot)
			a, _ := e.agent()
			rec, err := a.Record()
			if err != nil || rec == nil {
				t.Fatalf("no record: %v", err)
			}
			if rec.State != tc.state {
				t.Fatalf("record in %s, want %s", rec.State, tc.state)
			}
			if rec.Installed != tc.installed || rec.Committed != tc.committed {
				t.Errorf("installed %v committed %v", rec.Installed, rec.Committed)
			}
			e.dev.calls = nil
			e.runToEnd()
			if tc.first != "" && (len(e.dev.calls) == 0 || e.dev.calls[0] != tc.first) {
				t.Errorf("calls after restart %v, want %s first", e.dev.calls, tc.first)
			}
			if got := e.server.final(); len(got) == 0 || got[0] != tc.outcome {
				t.Errorf("outcome %v, want %s", got, tc.outcome)
			}
		})
	}
}

// runUntil runs the deployment and stops the agent as it enters state
// (after the record is written). boot runs the boot step after stopping.
func (e *testEnv) runUntil(st StateName, boot bool) {
	e.t.Helper()
	// Drive the healthy path, with the unhealthy one for rollback states.
	switch st {
	case StateArtifactRollback, StateArtifactRollbackReboot, StateArtifactFailure:
		e.dev.fail["ArtifactVerifyReboot"] = errors.New("forced failure")
	}
	for i := 0; i < 10; i++ {
		a, ctx := e.agent()
		a.records = &stopRecords{recordStore: a.records, at: st, stop: e.dev.cancel}
		_, err := a.CheckUpdate(ctx)
		if rec, _ := a.Record(); rec != nil && rec.State == st && (err != nil) {
			if errors.Is(err, ErrRebooting) && !boot {
				// The agent stopped for its reboot, which has not happened.
			} else if boot || errors.Is(err, ErrRebooting) {
				e.bootStep()
			}
			delete(e.dev.fail, "ArtifactVerifyReboot")
			return
		}
		e.bootStep()
	}
	e.t.Fatalf("never reached %s", st)
}

// stopRecords cancels the agent right after it saved a record in state at.
type stopRecords struct {
	recordStore
	at   StateName
	stop func()
}

func (s *stopRecords) Save(r *Record) error {
	if err := s.recordStore.Save(r); err != nil {
		return err
	}
	if r.State == s.at {
		s.stop()
	}
	return nil
}

// TestArtifactInfoFollowsCommittedRecord: a power cut after the commit was
// recorded but before artifact_info was written leaves the old provides
// in the file; the agent reports the committed record's provides, and
// finishing the deployment (here: the rollback command, which refuses to
// undo a commit) writes them.
func TestArtifactInfoFollowsCommittedRecord(t *testing.T) {
	e := newTestEnv(t, "release-1")
	a, ctx := e.agent()
	rec := &Record{State: StateArtifactCommit, Deployment: Deployment{ArtifactName: "release-2", URI: "/x.mender"},
		Installed: true, Committed: true, Status: StatusSuccess, Attempts: 1, Transitions: 5,
		Provides: map[string]string{"artifact_name": "release-2", "rootfs-image.version": "release-2"}}
	if err := a.records.Save(rec); err != nil {
		t.Fatal(err)
	}
	if info, err := a.ArtifactInfo(); err != nil || info["artifact_name"] != "release-2" {
		t.Fatalf("ArtifactInfo = %v, %v; want the committed record's release-2", info, err)
	}
	if err := a.Rollback(ctx); !errors.Is(err, ErrBusy) {
		t.Fatalf("Rollback of a committed update: %v, want ErrBusy", err)
	}
	if r, _ := a.Record(); r != nil {
		t.Fatalf("record left in %s", r.State)
	}
	if info, err := a.ArtifactInfo(); err != nil || info["artifact_name"] != "release-2" {
		t.Fatalf("after the deployment ended: ArtifactInfo = %v, %v", info, err)
	}
}
