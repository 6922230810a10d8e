package install_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/gitfleet/gitfleet/artifact"
	"github.com/gitfleet/gitfleet/device/bootenv"
	"github.com/gitfleet/gitfleet/device/install"
)

// An A/B update on a simulated device: two partition files, a boot
// environment file and a file that says which partition booted. The agent
// makes a new Installer after the reboot, as it does after any restart.
func Example() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "install-example")
	defer os.RemoveAll(dir)
	check := func(err error) {
		if err != nil {
			panic(err)
		}
	}
	for _, p := range []string{"a.img", "b.img"} {
		check(os.WriteFile(filepath.Join(dir, p), make([]byte, 1<<20), 0o644))
	}
	env := bootenv.NewFile(filepath.Join(dir, "bootenv"))
	check(bootenv.Rollback(ctx, env, 2)) // boots partition 2 (A), no trial
	booted := filepath.Join(dir, "booted")
	check(os.WriteFile(booted, []byte("2"), 0o644))

	set := install.Installers{Rootfs: &install.RootfsOptions{
		A:        install.Partition{Path: filepath.Join(dir, "a.img"), Number: 2},
		B:        install.Partition{Path: filepath.Join(dir, "b.img"), Number: 3},
		Env:      env,
		StateDir: filepath.Join(dir, "state"),
		Booted:   install.FileBooted(booted),
		Logger:   slog.New(slog.DiscardHandler),
	}}
	scripts := install.NewRunner(install.RunnerOptions{
		RootfsDir:   filepath.Join(dir, "etc-scripts"),
		ArtifactDir: filepath.Join(dir, "artifact-scripts"),
	})

	// The artifact, as the agent would download it.
	image := bytes.Repeat([]byte("rootfs"), 100_000)
	var art bytes.Buffer
	check(artifact.Write(ctx, &art, artifact.Spec{
		Name: "release-2", DeviceTypes: []string{"sim"},
		Payloads: []artifact.PayloadSpec{artifact.RootfsImage(artifact.FileSpec{Name: "rootfs.img", Open: func() (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(image)), nil
		}}, "release-2", artifact.Software{})},
	}))

	ar, err := artifact.NewReader(&art, artifact.ReaderOptions{})
	check(err)
	check(scripts.Store(ar.Header().Scripts))
	p := install.Payload{Header: ar.Header(), Index: 0}
	in, err := set.New(p)
	check(err)

	check(scripts.Run(ctx, install.StateDownload, install.Enter))
	check(install.DownloadAll(ctx, ar, []install.Installer{in}))
	check(scripts.Run(ctx, install.StateDownload, install.Leave))

	check(scripts.Run(ctx, install.StateArtifactInstall, install.Enter))
	check(in.ArtifactInstall(ctx))
	check(scripts.Run(ctx, install.StateArtifactInstall, install.Leave))
	reboot, err := in.NeedsArtifactReboot(ctx)
	check(err)
	st, _ := bootenv.ReadState(ctx, env)
	fmt.Printf("installed: reboot %s, next boot %d, on trial %t\n", reboot, st.Part, st.UpgradeAvailable)

	// The reboot: the bootloader boots partition 3; the agent starts again.
	check(os.WriteFile(booted, []byte("3"), 0o644))
	in, err = set.New(p)
	check(err)
	check(in.ArtifactVerifyReboot(ctx))
	check(in.ArtifactCommit(ctx))
	check(in.Cleanup(ctx))
	check(scripts.Clear())
	st, _ = bootenv.ReadState(ctx, env)
	fmt.Printf("committed: boots %d, on trial %t\n", st.Part, st.UpgradeAvailable)
	// Output:
	// installed: reboot Automatic, next boot 3, on trial true
	// committed: boots 3, on trial false
}
