package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/gitfleet/gitfleet/artifact"
	"github.com/gitfleet/gitfleet/device/agent"
	"github.com/gitfleet/gitfleet/device/bootenv"
	"github.com/gitfleet/gitfleet/device/install"
	"github.com/gitfleet/gitfleet/device/remote"
)

// newAgent builds the agent from its configuration: bootloader environment,
// installers (device/install), state scripts, and, when online, the device
// API client with the device key.
func newAgent(cfg agent.Config, log *slog.Logger, online bool) (*agent.Agent, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var a *agent.Agent // the installers read the running artifact through it

	var rootfs *install.RootfsOptions
	if cfg.RootfsPartA != "" {
		env, err := bootEnv(cfg)
		if err != nil {
			return nil, err
		}
		pa, pb := install.Partition{Path: cfg.RootfsPartA}, install.Partition{Path: cfg.RootfsPartB}
		rootfs = &install.RootfsOptions{A: pa, B: pb, Env: env, StateDir: cfg.DataDir, Logger: log}
		if cfg.BootedPartitionFile != "" {
			rootfs.Booted = bootedFromFile(cfg.BootedPartitionFile, cfg.RootfsPartA, cfg.RootfsPartB)
		}
	}
	modules := install.ModuleOptions{
		Dir:     cfg.ModulesDir,
		WorkDir: cfg.ModulesWorkDir,
		Timeout: time.Duration(cfg.ModuleTimeoutSeconds) * time.Second,
		Logger:  log,
	}
	newInstaller := func(p install.Payload) (install.Installer, error) {
		ins := install.Installers{Rootfs: rootfs, Modules: modules}
		if info, err := a.ArtifactInfo(); err == nil {
			ins.Modules.ArtifactName, ins.Modules.ArtifactGroup = info["artifact_name"], info["artifact_group"]
		}
		ins.Modules.DeviceType, _ = a.DeviceType()
		return ins.New(p)
	}
	scripts := scriptRunner{install.NewRunner(install.RunnerOptions{
		RootfsDir:   cfg.RootfsScriptsPath,
		ArtifactDir: cfg.ArtifactScriptsPath,
		Timeout:     time.Duration(cfg.StateScriptTimeoutSeconds) * time.Second,
		Logger:      log,
	})}

	opts := agent.Options{
		Config:     cfg,
		Installers: newInstaller,
		Types:      install.Installers{Rootfs: rootfs, Modules: modules}.Types,
		Scripts:    scripts,
		Logger:     log,
	}
	httpc, err := agent.HTTPClient(cfg.ServerCertificate)
	if err != nil {
		return nil, err
	}
	opts.Download.HTTP = httpc
	if online {
		if cfg.ServerURL == "" {
			return nil, fmt.Errorf("%w: ServerURL is not set", agent.ErrConfig)
		}
		key, pub, err := agent.LoadOrCreateKey(filepath.Join(cfg.DataDir, "device.key"))
		if err != nil {
			return nil, err
		}
		cmds := agent.OSCommander{}
		opts.Server = agent.NewClient(agent.ClientOptions{
			ServerURL:    cfg.ServerURL,
			HTTP:         httpc,
			Key:          key,
			PublicKeyPEM: pub,
			TenantToken:  cfg.TenantToken,
			Identity: func(ctx context.Context) (map[string]string, error) {
				return agent.Identity(ctx, cmds, cfg.IdentityScript)
			},
		})
	}
	a, err = agent.New(opts)
	return a, err
}

// startRemote starts the built-in remote terminal (device/remote) beside
// the daemon when the configuration enables it; stop ends it and waits.
// Disabled, the agent does not connect for remote sessions at all, so the
// controller tells an operator that the device is not connected.
func startRemote(ctx context.Context, cfg agent.Config, a *agent.Agent, log *slog.Logger) (stop func(), err error) {
	rt := cfg.RemoteTerminalSettings()
	if !rt.Enabled {
		log.Debug("remote terminal disabled (RemoteTerminal.Enabled is false): no remote sessions")
		return func() {}, nil
	}
	tokens := a.Tokens()
	if tokens == nil {
		return nil, fmt.Errorf("%w: RemoteTerminal needs the server connection", agent.ErrConfig)
	}
	httpc, err := agent.HTTPClient(cfg.ServerCertificate)
	if err != nil {
		return nil, err
	}
	var tlsConf *tls.Config
	if tr, ok := httpc.Transport.(*http.Transport); ok {
		tlsConf = tr.TLSClientConfig
	}
	c, err := remote.New(remote.Options{
		ServerURL:        cfg.ServerURL,
		TLS:              tlsConf,
		Token:            tokens.Token,
		Invalidate:       tokens.Invalidate,
		Terminal:         *rt.Terminal,
		FileTransfer:     *rt.FileTransfer,
		PortForward:      rt.PortForward,
		Shell:            rt.ShellCommand,
		User:             rt.User,
		PortForwardAllow: rt.PortForwardAllow,
		IdleTimeout:      time.Duration(rt.IdleTimeoutSeconds) * time.Second,
		MaxSessions:      rt.MaxSessions,
		MaxRetry:         time.Duration(cfg.RetryPollIntervalSeconds) * time.Second,
		Logger:           log,
	})
	if err != nil {
		return nil, fmt.Errorf("RemoteTerminal: %w", err)
	}
	log.Info("remote terminal enabled", "terminal", *rt.Terminal, "file_transfer", *rt.FileTransfer, "port_forward", rt.PortForward, "max_sessions", rt.MaxSessions)
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = c.Run(ctx)
	}()
	return func() { cancel(); <-done }, nil
}

func bootEnv(cfg agent.Config) (bootenv.Env, error) {
	switch cfg.BootEnv {
	case "file":
		return bootenv.NewFile(cfg.BootEnvFile), nil
	case "grub":
		return bootenv.NewGRUB(cfg.BootEnvFile), nil
	case "tools":
		return bootenv.NewTools(bootenv.ToolsOptions{Config: cfg.BootEnvConfig}), nil
	default:
		return bootenv.NewUBoot(bootenv.UBootOptions{Config: cfg.BootEnvConfig})
	}
}

// bootedFromFile reads the partition that booted from a file (the
// simulated device writes it): a partition number, or the path of A or B.
func bootedFromFile(path, a, b string) func(context.Context) (int, error) {
	return func(context.Context) (int, error) {
		data, err := readSmall(path)
		if err != nil {
			return 0, fmt.Errorf("booted partition: %w", err)
		}
		s := strings.TrimSpace(data)
		if n, err := strconv.Atoi(s); err == nil {
			return n, nil
		}
		for _, p := range []string{a, b} {
			if s == p {
				return trailingNumber(p)
			}
		}
		return 0, fmt.Errorf("booted partition %q is neither %s nor %s", s, a, b)
	}
}

// scriptRunner adapts install.Runner to agent.Scripts.
type scriptRunner struct{ r *install.Runner }

func (s scriptRunner) Store(ctx context.Context, scripts []artifact.Script) error {
	return s.r.Store(scripts)
}

func (s scriptRunner) Run(ctx context.Context, st agent.StateName, action string) error {
	return s.r.Run(ctx, install.State(st), install.Action(action))
}

// trailingNumber is the partition number that ends a path
// ("/dev/mmcblk0p2" → 2), as Mender derives mender_boot_part.
func trailingNumber(path string) (int, error) {
	i := len(path)
	for i > 0 && path[i-1] >= '0' && path[i-1] <= '9' {
		i--
	}
	n, err := strconv.Atoi(path[i:])
	if err != nil {
		return 0, fmt.Errorf("partition %s: no number at the end of its name", path)
	}
	return n, nil
}

func readSmall(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 4<<10))
	return string(b), err
}
