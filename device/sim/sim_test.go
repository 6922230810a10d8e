package sim_test

import (
	"context"
	"strconv"
	"testing"

	"github.com/gitfleet/gitfleet/device/bootenv"
	"github.com/gitfleet/gitfleet/device/sim"
)

func TestBootStep(t *testing.T) {
	for _, tc := range []struct {
		name      string
		limit     int
		part      int
		upgrade   bool
		bootcount int
		// after the boot step
		booted    string
		wantPart  int
		wantUpg   bool
		wantCount int
	}{
		{"plain boot A", 1, 2, false, 0, "A", 2, false, 0},
		{"plain boot B", 1, 3, false, 0, "B", 3, false, 0},
		{"first trial boot", 1, 3, true, 0, "B", 3, true, 1},
		{"trial past the limit falls back", 1, 3, true, 1, "A", 2, false, 2},
		{"fallback from A to B", 1, 2, true, 1, "B", 3, false, 2},
		{"limit 3, third boot", 3, 3, true, 2, "B", 3, true, 3},
		{"limit 3, fourth boot falls back", 3, 3, true, 3, "A", 2, false, 4},
		{"bootcount ignored without a trial", 1, 3, false, 7, "B", 3, false, 7},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			d, err := sim.New(t.TempDir(), sim.Options{BootLimit: tc.limit})
			if err != nil {
				t.Fatal(err)
			}
			up := "0"
			if tc.upgrade {
				up = "1"
			}
			if err := d.Env().Set(ctx, map[string]string{
				bootenv.VarBootPart: strconv.Itoa(tc.part), bootenv.VarBootPartHex: strconv.Itoa(tc.part),
				bootenv.VarUpgradeAvailable: up, bootenv.VarBootCount: strconv.Itoa(tc.bootcount),
			}); err != nil {
				t.Fatal(err)
			}
			got, err := d.Boot()
			if err != nil {
				t.Fatal(err)
			}
			st, err := bootenv.ReadState(ctx, d.Env())
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.booted || d.Booted() != tc.booted {
				t.Errorf("booted %s (Booted() %s), want %s", got, d.Booted(), tc.booted)
			}
			if st.Part != tc.wantPart || st.UpgradeAvailable != tc.wantUpg || st.BootCount != tc.wantCount {
				t.Errorf("env after boot = %+v, want part %d upgrade %v bootcount %d", st, tc.wantPart, tc.wantUpg, tc.wantCount)
			}
		})
	}
}

func TestBootSkipsUnbootableTrial(t *testing.T) {
	// A trial partition that does not boot (a kernel panic, a watchdog
	// reset) is counted down until the bootloader falls back.
	ctx := context.Background()
	d, err := sim.New(t.TempDir(), sim.Options{
		BootLimit: 2,
		Bootable:  func(img []byte) bool { return img[0] != 0 },
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := bootenv.Switch(ctx, d.Env(), sim.PartB); err != nil {
		t.Fatal(err)
	}
	got, err := d.Boot()
	if err != nil || got != "A" {
		t.Fatalf("Boot = %s, %v; want A", got, err)
	}
	st, _ := bootenv.ReadState(ctx, d.Env())
	if st.UpgradeAvailable || st.Part != sim.PartA {
		t.Errorf("env %+v", st)
	}
}

func TestNewKeepsAnExistingDevice(t *testing.T) {
	dir := t.TempDir()
	d, err := sim.New(dir, sim.Options{ArtifactName: "r1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Boot(); err != nil {
		t.Fatal(err)
	}
	d2, err := sim.New(dir, sim.Options{ArtifactName: "other"})
	if err != nil {
		t.Fatal(err)
	}
	if d2.Booted() != "A" || d2.ArtifactName() != "r1" {
		t.Errorf("reopened device: booted %q, artifact %q", d2.Booted(), d2.ArtifactName())
	}
}
