package sim_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/artifact"
	"github.com/gitfleet/gitfleet/device/bootenv"
	"github.com/gitfleet/gitfleet/device/sim"
)

// TestPowerCuts kills the agent process with SIGKILL at seeded random
// instants during a deployment, runs the boot step and starts it again,
// until the deployment is over. The boot step refuses to boot an
// incomplete image, so a partial image made bootable shows up as a
// failure. Every run must end on a complete image consistent with the
// outcome the server was told. GITFLEET_POWERCUTS sets the number of runs
// (default 6; the full run is 200).
func TestPowerCuts(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the agent under repeated SIGKILL")
	}
	runs := 6
	if s := os.Getenv("GITFLEET_POWERCUTS"); s != "" {
		runs, _ = strconv.Atoi(s)
	}
	oldImage := bytes.Repeat([]byte("release-1 image "), 4096)
	priv, pub, err := artifact.GenerateKey(artifact.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	base := t.TempDir()
	pubPath := filepath.Join(base, "artifact.pub")
	os.WriteFile(pubPath, pub, 0o644)
	images := map[bool][]byte{
		true:  bytes.Repeat([]byte("release-2 healthy image "), 40000),   // ~1 MiB
		false: bytes.Repeat([]byte("release-2 unhealthy image "), 40000), // health check fails
	}
	arts := map[bool][]byte{}
	for healthy, img := range images {
		arts[healthy] = signedArtifact(t, base, fmt.Sprint("release-2-", healthy), img, priv)
	}
	var cuts, failures int
	for seed := 1; seed <= runs; seed++ {
		healthy := seed%3 != 0
		t.Run(fmt.Sprintf("seed%d", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(seed), 42))
			srv := newMenderServer(t)
			dir := t.TempDir()
			newImg := images[healthy]
			logBuf := &syncBuffer{}
			dev, err := sim.New(dir, sim.Options{
				AgentBinary:        agentBinary,
				ServerURL:          srv.srv.URL,
				ServerCertificate:  srv.certFile(t.TempDir()),
				ArtifactName:       "release-1",
				Image:              oldImage,
				ArtifactVerifyKeys: []string{pubPath},
				HealthCheck:        []string{"/bin/sh", "-c", `! grep -q unhealthy "$(cat booted)"`},
				Bootable: func(img []byte) bool {
					return bytes.HasPrefix(img, oldImage) || bytes.HasPrefix(img, newImg)
				},
				Log: logBuf,
			})
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				dev.Kill()
				if t.Failed() {
					t.Logf("agent log:\n%s", logBuf.String())
				}
			}()
			// The artifact's name differs per image; the server offers it
			// under one name.
			srv.deploy("dep", "release-2-"+fmt.Sprint(healthy), arts[healthy])
			if err := dev.Start(); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(90 * time.Second)
			for n := 0; ; n++ {
				if time.Now().After(deadline) {
					t.Fatalf("no outcome after %d power cuts; statuses %v", n, srv.statuses["dep"])
				}
				srv.mu.Lock()
				done := srv.done("dep")
				srv.mu.Unlock()
				rec, _ := dev.Record()
				if done && rec == nil {
					break
				}
				if n >= 8 {
					// Enough cuts; let it finish.
					time.Sleep(100 * time.Millisecond)
					continue
				}
				time.Sleep(time.Duration(rng.IntN(120)) * time.Millisecond)
				dev.Kill()
				cuts++
				if _, err := dev.Boot(); err != nil {
					t.Fatalf("boot after power cut %d: %v", n+1, err)
				}
				if err := dev.Start(); err != nil {
					t.Fatal(err)
				}
			}
			dev.Kill()
			if _, err := dev.Boot(); err != nil {
				t.Fatalf("final boot: %v", err)
			}
			outcome := ""
			for _, st := range srv.statuses["dep"] {
				if st == "success" || st == "failure" {
					if outcome != "" && outcome != st {
						t.Fatalf("conflicting outcomes %v", srv.statuses["dep"])
					}
					outcome = st
				}
			}
			img, _ := dev.Image()
			st, _ := bootenv.ReadState(context.Background(), dev.Env())
			switch outcome {
			case "success":
				if !bytes.HasPrefix(img, newImg) || st.UpgradeAvailable || dev.ArtifactName() != "release-2-true" {
					t.Errorf("success, but booted %s (%.20q), env %+v, artifact %s", dev.Booted(), img, st, dev.ArtifactName())
				}
				if !healthy {
					t.Errorf("an unhealthy image was reported a success")
				}
			case "failure":
				if !bytes.HasPrefix(img, oldImage) || st.UpgradeAvailable || dev.ArtifactName() != "release-1" {
					t.Errorf("failure, but booted %s (%.20q), env %+v, artifact %s", dev.Booted(), img, st, dev.ArtifactName())
				}
				if healthy {
					failures++ // legitimate (e.g. a cut before the commit made the bootloader fall back), but counted
				}
			}
		})
	}
	t.Logf("%d runs, %d power cuts, %d healthy updates ended in failure (rolled back cleanly)", runs, cuts, failures)
}

// rootfsArtifact builds a signed rootfs-image artifact carrying image, with
// the given state scripts.
func rootfsArtifact(t *testing.T, name string, image []byte, signer *artifact.Signer, scripts ...artifact.Script) string {
	t.Helper()
	dir := t.TempDir()
	img := filepath.Join(dir, name+".img")
	if err := os.WriteFile(img, image, 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, name+".mender")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	err = artifact.Write(context.Background(), f, artifact.Spec{
		Name:        name,
		DeviceTypes: []string{"sim"},
		Payloads:    []artifact.PayloadSpec{artifact.RootfsImage(artifact.FileSpec{Path: img}, name, artifact.Software{})},
		Scripts:     scripts,
		Signer:      signer,
		TempDir:     dir,
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// standaloneDevice is a simulated device running release-1 that trusts
// the key of signer (pubPath), booted once.
func standaloneDevice(t *testing.T, oldImage, newImage []byte, pubPath string) *sim.Device {
	t.Helper()
	d, err := sim.New(t.TempDir(), sim.Options{
		AgentBinary: agentBinary, ArtifactName: "release-1", Image: oldImage,
		ArtifactVerifyKeys: []string{pubPath},
		Bootable: func(img []byte) bool {
			return bytes.HasPrefix(img, oldImage) || bytes.HasPrefix(img, newImage)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Boot(); err != nil {
		t.Fatal(err)
	}
	return d
}

// reported is what `gitfleet-agent show-artifact` says.
func reported(t *testing.T, d *sim.Device) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, code, err := d.RunCommand(ctx, "show-artifact")
	if err != nil || code != 0 {
		t.Fatalf("show-artifact: exit %d, %v\n%s", code, err, out)
	}
	return strings.TrimSpace(out)
}

// booted names the artifact whose image the device booted.
func booted(t *testing.T, d *sim.Device, images map[string][]byte) string {
	t.Helper()
	img, err := d.Image()
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range images {
		if bytes.HasPrefix(img, want) {
			return name
		}
	}
	t.Fatalf("booted an unknown image %.20q", img)
	return ""
}

// bootsNext names the artifact whose image the next boot boots, with no
// update in progress: the environment must have no trial armed.
func bootsNext(t *testing.T, d *sim.Device, images map[string][]byte) string {
	t.Helper()
	st, err := bootenv.ReadState(context.Background(), d.Env())
	if err != nil {
		t.Fatal(err)
	}
	if st.UpgradeAvailable {
		t.Fatalf("no update in progress, but a trial is armed: %+v", st)
	}
	part := map[int]string{sim.PartA: "A", sim.PartB: "B"}[st.Part]
	img, err := os.ReadFile(d.PartitionPath(part))
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range images {
		if bytes.HasPrefix(img, want) {
			return name
		}
	}
	t.Fatalf("partition %s holds an unknown image %.20q", part, img)
	return ""
}

// TestPowerCutAfterCommitThenRollback is issue 10's defect 13 exactly: the
// power is cut in ArtifactCommit right after the new provides are written
// (an ArtifactCommit_Leave script of the artifact kills the agent there,
// once), then the operator runs `gitfleet-agent rollback`. What
// show-artifact says must be what boots, before and after the next boot.
func TestPowerCutAfterCommitThenRollback(t *testing.T) {
	oldImage := bytes.Repeat([]byte("release-1 image "), 4096)
	newImage := bytes.Repeat([]byte("release-2 image "), 8192)
	images := map[string][]byte{"release-1": oldImage, "release-2": newImage}
	signer, pubPath := releaseKey(t)
	d := standaloneDevice(t, oldImage, newImage, pubPath)
	marker := filepath.Join(d.Dir(), "power-cut-done")
	cut := artifact.Script{Name: "ArtifactCommit_Leave_00", Data: fmt.Appendf(nil,
		"#!/bin/sh\n[ -e %q ] && exit 0\ntouch %q\nkill -9 $PPID\nsleep 10\n", marker, marker)}
	art := rootfsArtifact(t, "release-2", newImage, signer, cut)

	run := func(args ...string) (string, int) {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		out, code, err := d.RunCommand(ctx, args...)
		if err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		return out, code
	}
	check := func(when string) {
		t.Helper()
		got := reported(t, d)
		if want := booted(t, d, images); got != want {
			t.Fatalf("%s: show-artifact says %s, the device runs %s", when, got, want)
		}
		if rec, _ := d.Record(); rec == nil || rec.Committed {
			if want := bootsNext(t, d, images); got != want {
				t.Fatalf("%s: show-artifact says %s, the next boot boots %s", when, got, want)
			}
		}
	}
	if out, code := run("install", art); code != 0 {
		t.Fatalf("install: exit %d\n%s", code, out)
	}
	if _, err := d.Boot(); err != nil { // reboot into the trial
		t.Fatal(err)
	}
	if out, code := run("commit"); code == 0 {
		t.Fatalf("commit was not cut off\n%s", out)
	}
	if _, err := os.Stat(marker); err != nil {
		t.Fatal("the power cut did not happen in ArtifactCommit_Leave")
	}
	if _, err := d.Boot(); err != nil { // power back on
		t.Fatal(err)
	}
	check("after the power cut")
	out, code := run("rollback")
	t.Logf("rollback: exit %d: %s", code, lastLine(out))
	check("after rollback")
	if _, err := d.Boot(); err != nil {
		t.Fatal(err)
	}
	check("after rollback and a reboot")
	if rec, _ := d.Record(); rec != nil {
		t.Errorf("record left in %s (committed %v)", rec.State, rec.Committed)
	}
}

// TestPowerCutsWithCommands interleaves the operator's commands (install,
// commit, rollback) of a standalone update with power cuts at seeded
// random instants (a command SIGKILLed after 1-40 ms, then the boot step)
// and plain reboots. Whenever no update is in progress, show-artifact must
// name the image that boots; at the end every run settles (commit or
// rollback) on one of the two images. GITFLEET_POWERCUTS_COMMANDS sets the
// number of runs (default 4).
func TestPowerCutsWithCommands(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the agent under repeated SIGKILL")
	}
	runs := 4
	if s := os.Getenv("GITFLEET_POWERCUTS_COMMANDS"); s != "" {
		runs, _ = strconv.Atoi(s)
	}
	oldImage := bytes.Repeat([]byte("release-1 image "), 4096)
	newImage := bytes.Repeat([]byte("release-2 image "), 40000)
	images := map[string][]byte{"release-1": oldImage, "release-2": newImage}
	signer, pubPath := releaseKey(t)
	art := rootfsArtifact(t, "release-2", newImage, signer)
	var cuts, steps int
	for seed := 1; seed <= runs; seed++ {
		t.Run(fmt.Sprintf("seed%d", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(seed), 13))
			d := standaloneDevice(t, oldImage, newImage, pubPath)
			var history []string
			fail := func(format string, args ...any) {
				t.Helper()
				t.Fatalf("after %v: %s", history, fmt.Sprintf(format, args...))
			}
			command := func(args []string, cutAfter time.Duration) {
				ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
				if cutAfter > 0 {
					ctx, cancel = context.WithTimeout(context.Background(), cutAfter)
				}
				defer cancel()
				_, code, err := d.RunCommand(ctx, args...)
				if err != nil && ctx.Err() == nil {
					fail("%v: %v", args, err)
				}
				if code < 0 || ctx.Err() != nil { // killed: the power was cut
					cuts++
					history = append(history, fmt.Sprintf("%s(cut at %s)", args[0], cutAfter))
					if _, err := d.Boot(); err != nil {
						fail("boot after a power cut: %v", err)
					}
					return
				}
				history = append(history, fmt.Sprintf("%s=%d", args[0], code))
			}
			check := func() {
				t.Helper()
				rec, err := d.Record()
				if err != nil {
					fail("record: %v", err)
				}
				if rec != nil && !rec.Committed {
					return // an update in progress: awaiting commit or rollback
				}
				if got, want := reported(t, d), bootsNext(t, d, images); got != want {
					fail("show-artifact says %s, the device boots %s next (record %+v)", got, want, rec)
				}
			}
			for i := 0; i < 14; i++ {
				steps++
				var cut time.Duration
				if rng.IntN(2) == 0 {
					cut = time.Duration(1+rng.IntN(40)) * time.Millisecond
				}
				switch rng.IntN(5) {
				case 0:
					command([]string{"install", art}, cut)
				case 1, 2:
					command([]string{"commit"}, cut)
				case 3:
					command([]string{"rollback"}, cut)
				case 4:
					history = append(history, "reboot")
					if _, err := d.Boot(); err != nil {
						fail("boot: %v", err)
					}
				}
				check()
			}
			// Settle: roll back or commit until nothing is in progress.
			for i := 0; ; i++ {
				rec, _ := d.Record()
				if rec == nil {
					break
				}
				if i == 6 {
					fail("never settled; record in %s", rec.State)
				}
				if _, err := d.Boot(); err != nil {
					fail("boot: %v", err)
				}
				history = append(history, "reboot")
				if i%2 == 0 {
					command([]string{"commit"}, 0)
				} else {
					command([]string{"rollback"}, 0)
				}
			}
			if _, err := d.Boot(); err != nil {
				fail("final boot: %v", err)
			}
			check()
			st, _ := bootenv.ReadState(context.Background(), d.Env())
			if st.UpgradeAvailable {
				fail("settled with a trial still armed: %+v", st)
			}
			t.Logf("%v → %s", history, reported(t, d))
		})
	}
	t.Logf("%d runs, %d steps, %d power cuts", runs, steps, cuts)
}

// releaseKey makes an artifact signing key; it returns its signer and the
// path of its public key (what the device trusts).
func releaseKey(t *testing.T) (*artifact.Signer, string) {
	t.Helper()
	priv, pub, err := artifact.GenerateKey(artifact.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := artifact.LoadSigner(priv)
	if err != nil {
		t.Fatal(err)
	}
	pubPath := filepath.Join(t.TempDir(), "artifact.pub")
	if err := os.WriteFile(pubPath, pub, 0o644); err != nil {
		t.Fatal(err)
	}
	return signer, pubPath
}
