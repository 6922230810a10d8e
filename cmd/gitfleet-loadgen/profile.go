package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

// Profiles (-profile DIR). gitfleet serve then also serves Go's pprof
// profiles on a loopback port (--debug-listen), and the run saves, in DIR:
//
//   - MODE.pprof: gitfleet serve's CPU profile while it answered the polls
//     of that mode (warm-up included);
//   - restart.pprof: its CPU profile from the start of the restart (see
//     measureRestart) for -restart-profile seconds;
//   - heap.pprof: its heap profile after the polls.
//
// Read them with `go tool pprof -top BINARY DIR/keepalive.pprof`.

// setupProfile makes the profile directory and picks the debug address.
func (c *config) setupProfile() error {
	if c.profile == "" {
		return nil
	}
	if err := os.MkdirAll(c.profile, 0o755); err != nil {
		return fmt.Errorf("-profile: %w", err)
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	c.debugAddr = fmt.Sprintf("127.0.0.1:%d", port)
	return nil
}

// saveProfile fetches path (for example "profile?seconds=10" or "heap")
// from the pprof server at addr into file. It retries connecting until
// the server listens or ctx ends, so it may be started before the
// process it profiles.
func saveProfile(ctx context.Context, addr, path, file string) error {
	url := "http://" + addr + "/debug/pprof/" + path
	deadline := time.Now().Add(time.Minute)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pprof at %s: %w", addr, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Timeout: 5 * time.Minute}).Do(req)
	if err != nil {
		return fmt.Errorf("pprof %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("pprof %s: %s: %s", path, resp.Status, b)
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// profileAsync runs saveProfile in the background; wait returns its error
// (printed, as a profile is an extra of the run).
func profileAsync(ctx context.Context, addr, path, file string) (wait func()) {
	done := make(chan error, 1)
	go func() { done <- saveProfile(ctx, addr, path, file) }()
	return func() {
		if err := <-done; err != nil {
			fmt.Printf("  profile %s not saved: %v\n", filepath.Base(file), err)
		} else {
			fmt.Printf("  profile saved: %s\n", file)
		}
	}
}

// restartResult is a restart of gitfleet serve with the clone of the
// repository already in its data directory: how a controller comes back.
type restartResult struct {
	ready time.Duration // from start until /readyz answered 200
	cpu   time.Duration // its CPU time until then
	hwm   int64         // its peak RSS then (VmHWM)
}

// measureRestart stops gitfleet serve and starts it again on the same data
// directory (the repository already cloned, the store as it was), and
// measures how long it takes until it serves the fleet, the CPU time and
// the peak RSS it took to get there. The restarted process replaces srv's.
func measureRestart(ctx context.Context, p *procs, srv *server, c config) (restartResult, error) {
	p.stop(srv.proc)
	var wait func()
	if c.profile != "" {
		wait = profileAsync(ctx, srv.debug, fmt.Sprintf("profile?seconds=%d", int(c.restartProfile.Seconds())),
			filepath.Join(c.profile, "restart.pprof"))
	}
	ns, err := startServe(ctx, p, srv.bin, srv.dataDir, srv.repoURL, srv.storeDir, srv.redisAddr, srv.fleet, c.startTimeout, srv.debug)
	if wait != nil {
		wait()
	}
	if err != nil {
		return restartResult{}, fmt.Errorf("restart: %w", err)
	}
	*srv = *ns
	return restartResult{ready: ns.ready, cpu: ns.readyCPU, hwm: ns.readyHWM}, nil
}
