package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestUpdateSuccess(t *testing.T) {
	e := newTestEnv(t, "release-1")
	signer, _ := signers(t)
	e.deploy("release-2", buildArtifact(t, e.dir, "release-2", []byte("new image"), signer))

	a, ctx := e.agent()
	if _, err := a.CheckUpdate(ctx); !errors.Is(err, ErrRebooting) {
		t.Fatalf("CheckUpdate = %v, want ErrRebooting", err)
	}
	rec, _ := a.Record()
	if rec == nil || rec.State != StateArtifactReboot {
		t.Fatalf("record before the reboot = %+v", rec)
	}
	e.bootStep()
	a, ctx = e.agent()
	if _, err := a.CheckUpdate(ctx); err != nil {
		t.Fatal(err)
	}
	if got, want := e.server.statuses, []string{"downloading", "installing", "rebooting", "installing", "success"}; !slices.Equal(got, want) {
		t.Errorf("statuses = %v, want %v", got, want)
	}
	if string(e.dev.image()) != "new image" || e.dev.upgrade {
		t.Errorf("device runs %q, upgrade_available %v", e.dev.image(), e.dev.upgrade)
	}
	info, err := a.ArtifactInfo()
	if err != nil || info["artifact_name"] != "release-2" || info["rootfs-image.version"] != "release-2" {
		t.Errorf("artifact info = %v, %v", info, err)
	}
	if rec, _ := a.Record(); rec != nil {
		t.Errorf("record left: %+v", rec)
	}
	// Next poll: nothing to do.
	e.deploy("release-2", "unused")
	if _, err := a.CheckUpdate(ctx); err != nil {
		t.Fatal(err)
	}
	if got := e.server.statuses[len(e.server.statuses)-1]; got != StatusAlreadyInstalled {
		t.Errorf("last status = %s, want already-installed", got)
	}
}

func TestHealthCheckFailureRollsBack(t *testing.T) {
	e := newTestEnv(t, "release-1")
	signer, _ := signers(t)
	e.deploy("release-2", buildArtifact(t, e.dir, "release-2", []byte("new but unhealthy image"), signer))
	e.runToEnd()
	if got := e.server.final(); !slices.Equal(got, []string{"failure"}) {
		t.Errorf("final statuses = %v", got)
	}
	if string(e.dev.image()) != "old image" || e.dev.bootPart != 0 || e.dev.upgrade {
		t.Errorf("device runs %q (boot part %d, upgrade %v)", e.dev.image(), e.dev.bootPart, e.dev.upgrade)
	}
	if len(e.server.logs) != 1 || !strings.Contains(fmt.Sprint(e.server.logs[0]), "health check failed") {
		t.Errorf("deployment log = %v", e.server.logs)
	}
	a, _ := e.agent()
	if info, _ := a.ArtifactInfo(); info["artifact_name"] != "release-1" {
		t.Errorf("artifact_name = %q after a rollback", info["artifact_name"])
	}
	calls := strings.Join(e.dev.calls, " ")
	for _, want := range []string{"ArtifactRollback", "ArtifactVerifyRollbackReboot", "ArtifactFailure", "Cleanup"} {
		if !strings.Contains(calls, want) {
			t.Errorf("no %s in %s", want, calls)
		}
	}
	if strings.Contains(calls, "ArtifactCommit") {
		t.Errorf("committed: %s", calls)
	}
}

func TestSignatureRefusedBeforeBootSwitch(t *testing.T) {
	_, other := signers(t)
	for _, tc := range []struct{ name string }{{"wrong key"}, {"unsigned"}} {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t, "release-1")
			s := other
			if tc.name == "unsigned" {
				s = nil
			}
			e.deploy("release-2", buildArtifact(t, e.dir, "release-2", []byte("new image"), s))
			e.runToEnd()
			if got := e.server.final(); !slices.Equal(got, []string{"failure"}) {
				t.Errorf("final statuses = %v", got)
			}
			if slices.Contains(e.dev.calls, "ArtifactInstall") || slices.Contains(e.dev.calls, "Download") {
				t.Errorf("installer calls %v: the payload was read", e.dev.calls)
			}
			if e.dev.bootPart != 0 || e.dev.upgrade {
				t.Errorf("boot switched: part %d upgrade %v", e.dev.bootPart, e.dev.upgrade)
			}
			if !strings.Contains(fmt.Sprint(e.server.logs), "signature") {
				t.Errorf("log does not say why: %v", e.server.logs)
			}
		})
	}
}

func TestTamperedPayloadNeverInstalled(t *testing.T) {
	e := newTestEnv(t, "release-1")
	signer, _ := signers(t)
	path := buildArtifact(t, e.dir, "release-2", []byte("new image, exactly as signed"), signer)
	flipInFile(t, path, []byte("exactly"), []byte("EXACTLY"))
	e.deploy("release-2", path)
	e.runToEnd()
	if got := e.server.final(); !slices.Equal(got, []string{"failure"}) {
		t.Errorf("final statuses = %v", got)
	}
	if slices.Contains(e.dev.calls, "ArtifactInstall") || e.dev.bootPart != 0 {
		t.Errorf("installed a tampered image: calls %v", e.dev.calls)
	}
}

func TestDowngrade(t *testing.T) {
	for _, allow := range []bool{false, true} {
		t.Run(fmt.Sprint("allow=", allow), func(t *testing.T) {
			e := newTestEnv(t, "release-10")
			e.cfg.AllowDowngrade = allow
			signer, _ := signers(t)
			e.deploy("release-9", buildArtifact(t, e.dir, "release-9", []byte("older image"), signer))
			e.runToEnd()
			want := "failure"
			if allow {
				want = "success"
			}
			if got := e.server.final(); !slices.Equal(got, []string{want}) {
				t.Errorf("final statuses = %v, want %s", got, want)
			}
			if !allow && !strings.Contains(fmt.Sprint(e.server.logs), "downgrade") {
				t.Errorf("log = %v", e.server.logs)
			}
			if !allow && slices.Contains(e.dev.calls, "Download") {
				t.Errorf("downgrade payload was read: %v", e.dev.calls)
			}
		})
	}
}

func TestAbort(t *testing.T) {
	for _, tc := range []struct {
		at       string
		rollback bool
	}{
		{"downloading", false},
		{"installing", true},
		{"rebooting", true},
	} {
		t.Run(tc.at, func(t *testing.T) {
			e := newTestEnv(t, "release-1")
			signer, _ := signers(t)
			e.deploy("release-2", buildArtifact(t, e.dir, "release-2", []byte("new image"), signer))
			e.server.abortAt = tc.at
			e.runToEnd()
			if got := e.server.final(); len(got) != 0 {
				t.Errorf("reported %v after a 409", got)
			}
			if got := slices.Contains(e.dev.calls, "ArtifactRollback"); got != tc.rollback {
				t.Errorf("rollback = %v, want %v (calls %v)", got, tc.rollback, e.dev.calls)
			}
			if string(e.dev.image()) != "old image" || e.dev.bootPart != 0 || e.dev.upgrade {
				t.Errorf("device runs %q part %d upgrade %v", e.dev.image(), e.dev.bootPart, e.dev.upgrade)
			}
		})
	}
}

func TestCommittedDeploymentIsNotAborted(t *testing.T) {
	// A 409 can only arrive before the commit; after it the outcome stands.
	e := newTestEnv(t, "release-1")
	signer, _ := signers(t)
	e.deploy("release-2", buildArtifact(t, e.dir, "release-2", []byte("new image"), signer))
	e.runToEnd()
	if got := e.server.final(); !slices.Equal(got, []string{"success"}) {
		t.Fatalf("final = %v", got)
	}
}

// TestCrashAnywhere kills the agent before and after every installer call
// of a deployment (success and failing health check), then runs the boot
// step and starts it again until the deployment ends. The device must run
// a complete image, consistent with what the server was told.
func TestCrashAnywhere(t *testing.T) {
	signer, _ := signers(t)
	for _, image := range []string{"new image", "new but unhealthy image"} {
		for n := 1; n <= 40; n++ {
			for _, after := range []bool{false, true} {
				t.Run(fmt.Sprintf("%s/call%d/after=%v", image, n, after), func(t *testing.T) {
					e := newTestEnv(t, "release-1")
					e.deploy("release-2", buildArtifact(t, e.dir, "release-2", []byte(image), signer))
					calls := 0
					e.dev.crash = func(method string, a bool) bool {
						if a == after {
							calls++
							return calls == n
						}
						return false
					}
					e.runToEnd()
					checkOutcome(t, e, image)
				})
			}
		}
	}
}

func checkOutcome(t *testing.T, e *testEnv, image string) {
	t.Helper()
	final := e.server.final()
	if len(final) == 0 {
		t.Fatalf("no outcome reported; statuses %v calls %v", e.server.statuses, e.dev.calls)
	}
	for _, f := range final[1:] {
		if f != final[0] {
			t.Fatalf("conflicting outcomes %v", final)
		}
	}
	// One more power cycle: the device must stay where it is.
	e.bootStep()
	running := string(e.dev.image())
	switch final[0] {
	case "success":
		if running != image || e.dev.upgrade {
			t.Errorf("success reported, device runs %q (upgrade %v)", running, e.dev.upgrade)
		}
	case "failure":
		if running != "old image" || e.dev.upgrade {
			t.Errorf("failure reported, device runs %q (upgrade %v)", running, e.dev.upgrade)
		}
	}
	if strings.Contains(image, "unhealthy") && final[0] != "failure" {
		t.Errorf("unhealthy image reported %s", final[0])
	}
	a, _ := e.agent()
	info, _ := a.ArtifactInfo()
	wantName := map[string]string{"success": "release-2", "failure": "release-1"}[final[0]]
	if info["artifact_name"] != wantName {
		t.Errorf("artifact_name %q after %s", info["artifact_name"], final[0])
	}
	if rec, _ := a.Record(); rec != nil {
		t.Errorf("record left: %+v", rec)
	}
}

// TestRandomCrashes kills the agent at random installer calls, several
// times in one deployment.
func TestRandomCrashes(t *testing.T) {
	signer, _ := signers(t)
	for seed := uint64(1); seed <= 60; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 0))
			image := "new image"
			if seed%3 == 0 {
				image = "new but unhealthy image"
			}
			e := newTestEnv(t, "release-1")
			e.deploy("release-2", buildArtifact(t, e.dir, "release-2", []byte(image), signer))
			crashes := 0
			e.dev.crash = func(string, bool) bool {
				if crashes < 4 && rng.IntN(6) == 0 {
					crashes++
					return true
				}
				return false
			}
			e.runToEnd()
			checkOutcome(t, e, image)
		})
	}
}

func TestMaxBootCount(t *testing.T) {
	// The new software boots but the agent dies before it can commit,
	// every time: past MaxBootCount the agent rolls back by itself (the
	// bootloader's limit is set high so that it does not step in first).
	e := newTestEnv(t, "release-1")
	e.dev.bootlimit = 100
	e.cfg.MaxBootCount = 2
	signer, _ := signers(t)
	e.deploy("release-2", buildArtifact(t, e.dir, "release-2", []byte("new image"), signer))
	e.dev.crash = func(m string, after bool) bool { return m == "ArtifactVerifyReboot" && !after }
	e.runToEnd()
	if got := e.server.final(); !slices.Equal(got, []string{"failure"}) {
		t.Errorf("final = %v", got)
	}
	if n := strings.Count(strings.Join(e.dev.calls, " "), "ArtifactVerifyReboot"); n != 2 {
		t.Errorf("%d verify attempts, want 2", n)
	}
	if !strings.Contains(fmt.Sprint(e.server.logs), "MaxBootCount") {
		t.Errorf("log = %v", e.server.logs)
	}
}

func TestServerDownDuringReport(t *testing.T) {
	e := newTestEnv(t, "release-1")
	signer, _ := signers(t)
	e.deploy("release-2", buildArtifact(t, e.dir, "release-2", []byte("new image"), signer))
	a, ctx := e.agent()
	if _, err := a.CheckUpdate(ctx); !errors.Is(err, ErrRebooting) {
		t.Fatal(err)
	}
	e.bootStep()
	e.server.down = true
	// The agent retries the report; it is stopped during its first wait.
	e.opts = func(o *Options) {
		o.Sleep = func(ctx context.Context, _ time.Duration) error { e.dev.cancel(); return context.Canceled }
	}
	a, ctx = e.agent()
	if _, err := a.CheckUpdate(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("CheckUpdate = %v", err)
	}
	rec, _ := a.Record()
	if rec == nil || rec.State != StateReport || !rec.Committed {
		t.Fatalf("record = %+v", rec)
	}
	e.server.down = false
	e.opts = nil
	a, ctx = e.agent()
	if _, err := a.CheckUpdate(ctx); err != nil {
		t.Fatal(err)
	}
	if got := e.server.final(); !slices.Equal(got, []string{"success"}) {
		t.Errorf("final = %v", got)
	}
}

// A log the server will not take (rate-limited: 429, or refused) does not
// hold back the outcome: the failure is reported at the first attempt.
func TestLogRefusedOutcomeStillReported(t *testing.T) {
	for _, logErr := range []error{ErrServer, ErrRejected} {
		t.Run(logErr.Error(), func(t *testing.T) {
			e := newTestEnv(t, "release-1")
			signer, _ := signers(t)
			path := buildArtifact(t, e.dir, "release-2", []byte("new image, exactly as signed"), signer)
			flipInFile(t, path, []byte("exactly"), []byte("EXACTLY"))
			e.server.logErr = logErr
			e.deploy("release-2", path)
			e.opts = func(o *Options) {
				o.Sleep = func(context.Context, time.Duration) error {
					t.Error("the agent waited to retry the report")
					return context.Canceled
				}
			}
			e.runToEnd()
			if got := e.server.final(); !slices.Equal(got, []string{"failure"}) {
				t.Errorf("final statuses = %v, want [failure]", got)
			}
		})
	}
}

func flipInFile(t *testing.T, path string, from, to []byte) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, from) {
		t.Fatalf("%q not in %s", from, path)
	}
	if err := os.WriteFile(path, bytes.Replace(b, from, to, 1), 0o644); err != nil {
		t.Fatal(err)
	}
}
