package gitsource_test

import (
	"context"
	"log/slog"
	"os"
	"os/signal"

	"github.com/gitfleet/gitfleet/controller/gitsource"
)

// Follow the main branch of a fleet repository over SSH, requiring signed
// commits, and fetch at once when a webhook arrives.
func ExampleSource_Run() {
	key, _ := os.ReadFile("/etc/gitfleet/deploy_key")
	keyring, _ := os.ReadFile("/etc/gitfleet/trusted-committers.asc")
	src, err := gitsource.New(gitsource.Options{
		URL:            "git@git.example.com:ops/fleet.git",
		Ref:            "main",
		Dir:            "/var/lib/gitfleet/fleet.git",
		Auth:           gitsource.Auth{SSHKey: key},
		KnownHostsFile: "/etc/gitfleet/known_hosts",
		TrustedKeys:    string(keyring),
	})
	if err != nil {
		slog.Error("git source", "err", err)
		return
	}
	defer src.Close()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	// A webhook receiver sends without blocking; bursts coalesce.
	pushes := make(chan struct{}, 1)
	notify := func() {
		select {
		case pushes <- struct{}{}:
		default:
		}
	}
	_ = notify // handed to the webhook receiver

	src.Run(ctx, pushes, func(ctx context.Context, rev gitsource.Revision) {
		// Load and validate rev.FS; a refused revision keeps the old one live.
		slog.Info("new revision", "commit", rev.SHA, "signer", rev.Signer)
	})
}
