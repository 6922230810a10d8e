package sim_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
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
