package agent

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/gitfleet/gitfleet/schema/didyoumean"
)

// Config is the agent's configuration file: a JSON object. Where the Mender
// client (mender.conf) has a name for the same setting, the name and the
// meaning are Mender's, so a device can switch agents with its existing
// /etc/mender/mender.conf; settings Mender does not have are Gitfleet's and
// documented as such. A name that is neither is an error that names it
// (a typo must not silently leave a setting at its default). The mender.conf
// settings of the Mender client 3.x that this agent has no use for (DBus,
// Connectivity, HttpsClient, …; see [MenderOnlyKeys]) are accepted and
// listed in [Config.Ignored], so a mender.conf still loads unchanged.
//
// Durations are whole seconds, as in mender.conf. Zero means the default.
type Config struct {
	// ServerURL is the controller, e.g. "https://gitfleet.example.com".
	// Mender's Servers list is accepted too; its first entry is used when
	// ServerURL is empty.
	ServerURL string `json:"ServerURL"`
	Servers   []struct {
		ServerURL string `json:"ServerURL"`
	} `json:"Servers,omitempty"`
	// ServerCertificate is a PEM file of extra CA certificates trusted for
	// the server (added to the system pool).
	ServerCertificate string `json:"ServerCertificate,omitempty"`
	// TenantToken is sent with every authentication request.
	TenantToken string `json:"TenantToken,omitempty"`

	// UpdatePollIntervalSeconds: how often to ask for a deployment.
	// Default 1800.
	UpdatePollIntervalSeconds int `json:"UpdatePollIntervalSeconds,omitempty"`
	// InventoryPollIntervalSeconds: how often to send the inventory.
	// Default 28800.
	InventoryPollIntervalSeconds int `json:"InventoryPollIntervalSeconds,omitempty"`
	// RetryPollIntervalSeconds caps the backoff between retries while the
	// server cannot be reached. Default 300.
	RetryPollIntervalSeconds int `json:"RetryPollIntervalSeconds,omitempty"`

	// ArtifactVerifyKey and ArtifactVerifyKeys are PEM public keys (paths).
	// When any is set, only artifacts signed by one of them are installed;
	// when none is, unsigned artifacts are accepted (as the Mender client
	// does) and a warning is logged.
	ArtifactVerifyKey  string   `json:"ArtifactVerifyKey,omitempty"`
	ArtifactVerifyKeys []string `json:"ArtifactVerifyKeys,omitempty"`

	// RootfsPartA and RootfsPartB are the two root filesystem partitions
	// (block devices, or files on the simulated device).
	RootfsPartA string `json:"RootfsPartA,omitempty"`
	RootfsPartB string `json:"RootfsPartB,omitempty"`

	// DeviceTypeFile holds "device_type=NAME". Default
	// <DataDir>/device_type, as Mender's /var/lib/mender/device_type.
	DeviceTypeFile string `json:"DeviceTypeFile,omitempty"`

	// ArtifactScriptsPath is where the state scripts an artifact carries are
	// kept while it installs (Mender: /var/lib/mender/scripts).
	// Default <DataDir>/scripts.
	ArtifactScriptsPath string `json:"ArtifactScriptsPath,omitempty"`
	// RootfsScriptsPath holds the state scripts installed with the root
	// filesystem (Mender: /etc/mender/scripts).
	RootfsScriptsPath string `json:"RootfsScriptsPath,omitempty"`
	// ModuleTimeoutSeconds bounds one update-module call. Default 14400.
	ModuleTimeoutSeconds int `json:"ModuleTimeoutSeconds,omitempty"`
	// StateScriptTimeoutSeconds bounds one state script. Default 3600.
	StateScriptTimeoutSeconds int `json:"StateScriptTimeoutSeconds,omitempty"`

	// DaemonLogLevel is the log level (debug, info, warn, error) when
	// gitfleet-agent is not given --log-level. Default info.
	DaemonLogLevel string `json:"DaemonLogLevel,omitempty"`

	// --- Gitfleet's own settings (no Mender equivalent in mender.conf) ---

	// DataDir holds the device key, the state record, artifact_info and
	// provides, and the deployment log. Default /var/lib/gitfleet.
	DataDir string `json:"DataDir,omitempty"`
	// IdentityScript prints the device identity as name=value lines.
	// Default /usr/share/gitfleet/identity/gitfleet-device-identity (the
	// Debian package installs one); a device moving from the Mender client
	// sets /usr/share/mender/identity/mender-device-identity.
	IdentityScript string `json:"IdentityScript,omitempty"`
	// InventoryScriptsDir holds executables named mender-inventory-* that
	// print inventory attributes as name=value lines.
	// Default /usr/share/gitfleet/inventory; a device moving from the
	// Mender client sets /usr/share/mender/inventory.
	InventoryScriptsDir string `json:"InventoryScriptsDir,omitempty"`
	// ModulesDir holds the update modules (protocol v3).
	// Default /usr/share/mender/modules/v3.
	ModulesDir string `json:"ModulesDir,omitempty"`
	// ModulesWorkDir is where update modules keep their files while they
	// run. Default <DataDir>/modules/v3.
	ModulesWorkDir string `json:"ModulesWorkDir,omitempty"`
	// ArtifactInfoFile holds "artifact_name=NAME" of the running software
	// (Mender: /etc/mender/artifact_info, which is part of the image).
	// It is read only until the agent has committed an update; from then
	// on <DataDir>/artifact_info (same format, every provide) is.
	// Default /etc/mender/artifact_info.
	ArtifactInfoFile string `json:"ArtifactInfoFile,omitempty"`
	// BootEnv selects the bootloader environment: "uboot" (fw_env.config
	// at BootEnvConfig, default /etc/fw_env.config), "grub" (the block
	// file at BootEnvFile), "file" (a plain name=value file at
	// BootEnvFile, for the simulated device) or "tools" (fw_printenv and
	// fw_setenv). Default "uboot".
	BootEnv       string `json:"BootEnv,omitempty"`
	BootEnvConfig string `json:"BootEnvConfig,omitempty"`
	BootEnvFile   string `json:"BootEnvFile,omitempty"`
	// BootedPartitionFile, when set, names a file holding the partition
	// that booted (a path equal to RootfsPartA or RootfsPartB, or the
	// partition number). The simulated device writes it; on real devices
	// leave it empty and the partition is found from the mount of "/".
	BootedPartitionFile string `json:"BootedPartitionFile,omitempty"`

	// AllowHTTPDownloads lets the agent download a deployment's artifact
	// from a plain http URL the server sends. Default false: only https
	// URLs are read; any other source the server names (http, a local
	// path, file://) fails the deployment, and the failure is reported.
	// A standalone `install FILE|URL` may always name a local file or an
	// http(s) URL.
	AllowHTTPDownloads bool `json:"AllowHTTPDownloads,omitempty"`

	// AllowDowngrade installs an artifact whose version is lower than the
	// running one. Default false: such an artifact fails in Download.
	AllowDowngrade bool `json:"AllowDowngrade,omitempty"`
	// HealthCheck is a command (argv) run after the reboot into the new
	// software; a non-zero exit rolls the update back.
	HealthCheck []string `json:"HealthCheck,omitempty"`
	// HealthCheckTimeoutSeconds bounds the health check. Default 300.
	HealthCheckTimeoutSeconds int `json:"HealthCheckTimeoutSeconds,omitempty"`
	// MaxBootCount is how many times the agent may start in the new
	// software without committing it before it rolls back (the agent's own
	// reboot-loop breaker, on top of the bootloader's bootcount).
	// Default 3.
	MaxBootCount int `json:"MaxBootCount,omitempty"`
	// RebootCommand is run to reboot the device. Default ["reboot"].
	RebootCommand []string `json:"RebootCommand,omitempty"`
	// RebootByExit: instead of running RebootCommand, gitfleet-agent
	// exits with status 75 (ExitRebootRequested) and leaves the reboot to
	// its supervisor. The simulated device uses it: it runs its boot step
	// and starts the agent again.
	RebootByExit bool `json:"RebootByExit,omitempty"`
	// BootIDFile identifies the current boot: finding a reboot state in
	// the record within the same boot means the reboot has not happened
	// yet. Default /proc/sys/kernel/random/boot_id.
	BootIDFile string `json:"BootIDFile,omitempty"`

	// Monitor runs the device monitoring checks the controller assigns
	// (device/monitor) in the daemon and delivers their alerts. Default
	// true; false turns monitoring off (gitfleet-agent --no-monitor does
	// too). Use MonitorEnabled to read it.
	Monitor *bool `json:"Monitor,omitempty"`
	// MonitorRoot is the directory the checks see as "/": /proc, /sys,
	// /etc and every watched path are read under it. Default "/"; the
	// simulated device and tests point it elsewhere.
	MonitorRoot string `json:"MonitorRoot,omitempty"`

	// DeviceConfig applies the device configuration the controller serves
	// (the fleet repository's DeviceConfig manifests) in the daemon, the
	// way Mender Configure does: the values are written as a JSON object
	// to DeviceConfigPath and every executable in DeviceConfigScriptsDir
	// runs with that path as its first argument. Default true; false turns
	// it off (gitfleet-agent --no-device-config does too). Use
	// DeviceConfigEnabled to read it.
	DeviceConfig *bool `json:"DeviceConfig,omitempty"`
	// DeviceConfigPath is the configuration file the apply scripts read
	// (mode 0600). Default <DataDir>/device-config.json; Mender Configure's
	// is /var/lib/mender-configure/device-config.json.
	DeviceConfigPath string `json:"DeviceConfigPath,omitempty"`
	// DeviceConfigScriptsDir holds the apply scripts, run in lexical order.
	// Default /usr/lib/gitfleet/apply-device-config.d; Mender Configure's
	// is /usr/lib/mender-configure/apply-device-config.d.
	DeviceConfigScriptsDir string `json:"DeviceConfigScriptsDir,omitempty"`
	// DeviceConfigScriptTimeoutSeconds bounds one apply script; its
	// process group is killed then. Default 300.
	DeviceConfigScriptTimeoutSeconds int `json:"DeviceConfigScriptTimeoutSeconds,omitempty"`
	// DeviceConfigRetrySeconds: a configuration whose apply failed is
	// tried again after this long (and once after each reboot) while it
	// stays the desired one. Default 600.
	DeviceConfigRetrySeconds int `json:"DeviceConfigRetrySeconds,omitempty"`
	// DeviceConfigRepairDrift: when the applied file is found changed on
	// the device, apply the desired configuration again after reporting
	// the drift. Default false: drift is only reported, and the file is
	// rewritten when the desired configuration next changes.
	DeviceConfigRepairDrift bool `json:"DeviceConfigRepairDrift,omitempty"`

	// RemoteTerminal configures the built-in remote terminal (the device
	// side of Mender's deviceconnect, which mender-connect implements for
	// the Mender client): operators reach the device with mender-cli
	// terminal, cp and port-forward through the controller. Absent or
	// "Enabled": false (the default), the daemon does not connect for
	// remote sessions at all. Use RemoteTerminalSettings to read it with
	// its defaults.
	RemoteTerminal *RemoteTerminal `json:"RemoteTerminal,omitempty"`

	// Ignored lists the mender.conf settings the file set that this agent
	// does not use (see MenderOnlyKeys), for a warning at start.
	Ignored []string `json:"-"`
}

// RemoteTerminal is the "RemoteTerminal" object of the configuration.
// Zero values mean the defaults.
type RemoteTerminal struct {
	// Enabled turns the remote terminal on. Default false: the device
	// refuses every remote session by not connecting for them.
	Enabled bool `json:"Enabled"`
	// Terminal offers a shell (mender-cli terminal). Default true.
	Terminal *bool `json:"Terminal,omitempty"`
	// ShellCommand is the shell's absolute path. Default /bin/sh.
	ShellCommand string `json:"ShellCommand,omitempty"`
	// User runs shells as this user, and file transfer with this user's
	// permissions (uploads belong to them); the agent must run as root to
	// use another user than its own. Default: the agent's user.
	User string `json:"User,omitempty"`
	// FileTransfer offers mender-cli cp both ways. Default true.
	FileTransfer *bool `json:"FileTransfer,omitempty"`
	// PortForward offers mender-cli port-forward to PortForwardAllow.
	// Default false.
	PortForward bool `json:"PortForward,omitempty"`
	// PortForwardAllow lists the HOST:PORT a port forward may connect to;
	// PORT may be "*". Default ["127.0.0.1:*", "[::1]:*", "localhost:*"].
	PortForwardAllow []string `json:"PortForwardAllow,omitempty"`
	// IdleTimeoutSeconds ends a session without traffic for this long.
	// Default 900.
	IdleTimeoutSeconds int `json:"IdleTimeoutSeconds,omitempty"`
	// MaxSessions bounds the sessions open at once. Default 4, at most 64.
	MaxSessions int `json:"MaxSessions,omitempty"`
}

// Defaults of RemoteTerminal.
const (
	DefaultRemoteShell       = "/bin/sh"
	DefaultRemoteIdleTimeout = 900
	DefaultRemoteSessions    = 4
	maxRemoteSessions        = 64
)

// DefaultPortForwardAllow is the default of RemoteTerminal.PortForwardAllow:
// the device's loopback.
var DefaultPortForwardAllow = []string{"127.0.0.1:*", "[::1]:*", "localhost:*"}

// RemoteTerminalSettings returns RemoteTerminal with its defaults filled
// in (disabled when the configuration has none).
func (c *Config) RemoteTerminalSettings() RemoteTerminal {
	var r RemoteTerminal
	if c.RemoteTerminal != nil {
		r = *c.RemoteTerminal
	}
	on := true
	if r.Terminal == nil {
		r.Terminal = &on
	}
	if r.FileTransfer == nil {
		r.FileTransfer = &on
	}
	if r.ShellCommand == "" {
		r.ShellCommand = DefaultRemoteShell
	}
	if r.PortForwardAllow == nil {
		r.PortForwardAllow = slices.Clone(DefaultPortForwardAllow)
	}
	if r.IdleTimeoutSeconds <= 0 {
		r.IdleTimeoutSeconds = DefaultRemoteIdleTimeout
	}
	if r.MaxSessions <= 0 {
		r.MaxSessions = DefaultRemoteSessions
	}
	return r
}

// problems reports RemoteTerminal settings the agent cannot work with.
func (r *RemoteTerminal) problems() []error {
	var errs []error
	if r.ShellCommand != "" && !filepath.IsAbs(r.ShellCommand) {
		errs = append(errs, fmt.Errorf("RemoteTerminal.ShellCommand %q is not an absolute path", r.ShellCommand))
	}
	if r.IdleTimeoutSeconds < 0 {
		errs = append(errs, fmt.Errorf("RemoteTerminal.IdleTimeoutSeconds %d is negative", r.IdleTimeoutSeconds))
	}
	if r.MaxSessions < 0 || r.MaxSessions > maxRemoteSessions {
		errs = append(errs, fmt.Errorf("RemoteTerminal.MaxSessions %d is not between 1 and %d", r.MaxSessions, maxRemoteSessions))
	}
	for _, a := range r.PortForwardAllow {
		host, port, err := net.SplitHostPort(a)
		if err != nil || host == "" {
			errs = append(errs, fmt.Errorf("RemoteTerminal.PortForwardAllow %q is not HOST:PORT (e.g. 127.0.0.1:8080 or 127.0.0.1:*)", a))
			continue
		}
		if n, err := strconv.ParseUint(port, 10, 16); port != "*" && (err != nil || n == 0) {
			errs = append(errs, fmt.Errorf("RemoteTerminal.PortForwardAllow %q: port %q is neither 1-65535 nor *", a, port))
		}
	}
	return errs
}

// MenderOnlyKeys are the settings of the Mender client 3.x's mender.conf
// (conf.MenderConfigFromFile of its 3.4 and 3.5 branches) that this agent
// accepts and does nothing with, so that an existing mender.conf loads.
var MenderOnlyKeys = []string{
	"BootUtilitiesGetNextActivePart", // the agent talks to the bootloader environment itself (BootEnv)
	"BootUtilitiesSetActivePart",
	"Connectivity",                    // keep-alive tuning of the HTTP client
	"DBus",                            // the agent has no D-Bus API
	"HttpsClient",                     // client certificates (mutual TLS) are not supported by the agent yet
	"RetryPollCount",                  // the agent retries until the server answers, backing off
	"Security",                        // the device key lives in DataDir/device.key
	"SkipVerify",                      // never: use ServerCertificate for a private CA
	"StateScriptRetryIntervalSeconds", // state scripts that ask for a retry are retried on install's schedule
	"StateScriptRetryTimeoutSeconds",  //
	"UpdateControlMapBootExpirationTimeSeconds", // update control maps are a Mender Enterprise feature
	"UpdateControlMapExpirationTimeSeconds",
	"UpdateLogPath", // deployment logs are kept in DataDir
}

// DeviceConfigEnabled reports whether the daemon applies the device
// configuration (DeviceConfig, true unless set to false).
func (c *Config) DeviceConfigEnabled() bool { return c.DeviceConfig == nil || *c.DeviceConfig }

// ConfigApplierOptions returns the options of the daemon's ConfigApplier
// (without a clock, boot ID or logger).
func (c *Config) ConfigApplierOptions() ConfigApplierOptions {
	return ConfigApplierOptions{
		DataDir:       c.DataDir,
		Path:          c.DeviceConfigPath,
		ScriptsDir:    c.DeviceConfigScriptsDir,
		ScriptTimeout: seconds(c.DeviceConfigScriptTimeoutSeconds),
		RetryInterval: seconds(c.DeviceConfigRetrySeconds),
		RepairDrift:   c.DeviceConfigRepairDrift,
	}
}

// MonitorEnabled reports whether the daemon runs monitoring (Monitor, true
// unless set to false).
func (c *Config) MonitorEnabled() bool { return c.Monitor == nil || *c.Monitor }

// Defaults of the Config fields.
const (
	DefaultDataDir = "/var/lib/gitfleet"
	// DefaultIdentityScript and DefaultInventoryScriptsDir are where the
	// Debian package installs the identity script and inventory scripts.
	DefaultIdentityScript      = "/usr/share/gitfleet/identity/gitfleet-device-identity"
	DefaultInventoryScriptsDir = "/usr/share/gitfleet/inventory"
	DefaultUpdatePoll          = 1800
	DefaultInventoryPoll       = 28800
	DefaultRetryPoll           = 300
	DefaultMaxBootCount        = 3
	DefaultHealthTimeout       = 300
	DefaultModuleTimeout       = 14400
	DefaultStateScriptLimit    = 3600
	// DefaultDeviceConfigScriptsDir is where the apply scripts are looked
	// for unless DeviceConfigScriptsDir says otherwise.
	DefaultDeviceConfigScriptsDir = "/usr/lib/gitfleet/apply-device-config.d"
	DefaultDeviceConfigTimeout    = 300
	DefaultDeviceConfigRetry      = 600
	maxConfigBytes                = 1 << 20
)

// ErrConfig marks a configuration the agent cannot run with.
var ErrConfig = errors.New("agent: invalid configuration")

// LoadConfig reads a configuration file and fills in the defaults.
func LoadConfig(path string) (Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxConfigBytes+1))
	if err != nil {
		return Config{}, fmt.Errorf("config %s: %w", path, err)
	}
	if len(b) > maxConfigBytes {
		return Config{}, fmt.Errorf("%w: %s is larger than %d bytes", ErrConfig, path, maxConfigBytes)
	}
	return parseConfig(path, b)
}

// ParseConfig parses a configuration and fills in the defaults. A key that
// is neither a Config field nor one of MenderOnlyKeys is an error naming
// it; JSON errors name the line and column.
func ParseConfig(b []byte) (Config, error) { return parseConfig("", b) }

// parseConfig parses the configuration read from file (named in errors
// when not "").
func parseConfig(file string, b []byte) (Config, error) {
	where := ""
	if file != "" {
		where = file + ": "
	}
	c, err := decodeConfig(b)
	if err != nil {
		return Config{}, fmt.Errorf("%w: %s%w", ErrConfig, where, err)
	}
	c.SetDefaults()
	if errs := c.problems(); len(errs) > 0 {
		return c, fmt.Errorf("%w: %s%w", ErrConfig, where, errList(errs))
	}
	return c, nil
}

// errList is several errors on one line ("; " between them): the
// agent's last line on stderr is its reason.
type errList []error

func (l errList) Error() string {
	s := make([]string, len(l))
	for i, err := range l {
		s[i] = err.Error()
	}
	return strings.Join(s, "; ")
}

func (l errList) Unwrap() []error { return l }

func decodeConfig(b []byte) (Config, error) {
	// The keys first: one object, its names checked against Config's
	// fields and MenderOnlyKeys (case-insensitively, as encoding/json
	// matches them).
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return Config{}, jsonError(b, err)
	}
	known := configKeys()
	var unknown []string
	var ignored []string
	for k := range raw {
		switch name, ok := known[strings.ToLower(k)]; {
		case !ok:
			unknown = append(unknown, k)
		case slices.Contains(MenderOnlyKeys, name):
			ignored = append(ignored, name)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		var errs []error
		for _, k := range unknown {
			msg := fmt.Sprintf("unknown key %q", k)
			if s := didyoumean.Closest(k, slices.Collect(maps.Values(known))); s != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", s)
			}
			errs = append(errs, errors.New(msg))
		}
		return Config{}, fmt.Errorf("%w (docs/agent.md lists every key)", errList(errs))
	}
	if err := nestedKeys(raw, "RemoteTerminal", reflect.TypeFor[RemoteTerminal]()); err != nil {
		return Config{}, err
	}
	var c struct {
		Config
		menderOnly
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return Config{}, jsonError(b, err)
	}
	sort.Strings(ignored)
	c.Config.Ignored = ignored
	return c.Config, nil
}

// nestedKeys checks the keys of the object named name (matched
// case-insensitively, as encoding/json does) against t's fields.
func nestedKeys(raw map[string]json.RawMessage, name string, t reflect.Type) error {
	for k, v := range raw {
		if !strings.EqualFold(k, name) {
			continue
		}
		var obj map[string]json.RawMessage
		if json.Unmarshal(v, &obj) != nil {
			return nil // not an object: the decoder says so, with the line
		}
		known := map[string]string{}
		for f := range t.Fields() {
			n, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			known[strings.ToLower(n)] = n
		}
		var errs []error
		for _, sub := range slices.Sorted(maps.Keys(obj)) {
			if _, ok := known[strings.ToLower(sub)]; ok {
				continue
			}
			msg := fmt.Sprintf("unknown key %q in %s", sub, name)
			if s := didyoumean.Closest(sub, slices.Collect(maps.Values(known))); s != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", s)
			}
			errs = append(errs, errors.New(msg))
		}
		if len(errs) > 0 {
			return fmt.Errorf("%w (docs/agent.md lists every key)", errList(errs))
		}
	}
	return nil
}

// menderOnly holds the MenderOnlyKeys while the file is decoded: any JSON
// value is accepted.
type menderOnly struct {
	BootUtilitiesGetNextActivePart            json.RawMessage
	BootUtilitiesSetActivePart                json.RawMessage
	Connectivity                              json.RawMessage
	DBus                                      json.RawMessage
	HttpsClient                               json.RawMessage
	RetryPollCount                            json.RawMessage
	Security                                  json.RawMessage
	SkipVerify                                json.RawMessage
	StateScriptRetryIntervalSeconds           json.RawMessage
	StateScriptRetryTimeoutSeconds            json.RawMessage
	UpdateControlMapBootExpirationTimeSeconds json.RawMessage
	UpdateControlMapExpirationTimeSeconds     json.RawMessage
	UpdateLogPath                             json.RawMessage
}

// configKeys maps the lowercased name of every accepted key to its
// spelling.
func configKeys() map[string]string {
	out := map[string]string{}
	for _, t := range []reflect.Type{reflect.TypeFor[Config](), reflect.TypeFor[menderOnly]()} {
		for f := range t.Fields() {
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "-" {
				continue
			}
			if name == "" {
				name = f.Name
			}
			out[strings.ToLower(name)] = name
		}
	}
	return out
}

// jsonError turns a decoding error into one that says where: line and
// column, and the key of a value of the wrong type.
func jsonError(b []byte, err error) error {
	var (
		syn *json.SyntaxError
		typ *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &syn):
		line, col := position(b, syn.Offset-1) // Offset counts the bad byte
		return fmt.Errorf("line %d, column %d: %v", line, col, syn)
	case errors.As(err, &typ):
		line, col := position(b, typ.Offset)
		if typ.Field == "" {
			return fmt.Errorf("line %d, column %d: the configuration must be a JSON object, not %s", line, col, typ.Value)
		}
		return fmt.Errorf("line %d, column %d: %s must be %s, not %s", line, col, typ.Field, jsonKind(typ.Type), typ.Value)
	}
	return err
}

func jsonKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Pointer:
		return jsonKind(t.Elem())
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int64:
		return "a whole number"
	case reflect.Slice:
		return "a list"
	case reflect.Struct, reflect.Map:
		return "an object"
	}
	return t.String()
}

// position returns the 1-based line and column of byte offset off.
func position(b []byte, off int64) (line, col int) {
	off = max(0, off)
	if off > int64(len(b)) {
		off = int64(len(b))
	}
	before := b[:off]
	line = 1 + bytes.Count(before, []byte("\n"))
	col = int(off) - bytes.LastIndexByte(before, '\n')
	return line, col
}

// SetDefaults fills every zero field that has a default.
func (c *Config) SetDefaults() {
	if c.ServerURL == "" && len(c.Servers) > 0 {
		c.ServerURL = c.Servers[0].ServerURL
	}
	c.ServerURL = strings.TrimRight(c.ServerURL, "/")
	def := func(p *int, v int) {
		if *p <= 0 {
			*p = v
		}
	}
	def(&c.UpdatePollIntervalSeconds, DefaultUpdatePoll)
	def(&c.InventoryPollIntervalSeconds, DefaultInventoryPoll)
	def(&c.RetryPollIntervalSeconds, DefaultRetryPoll)
	def(&c.MaxBootCount, DefaultMaxBootCount)
	def(&c.HealthCheckTimeoutSeconds, DefaultHealthTimeout)
	def(&c.ModuleTimeoutSeconds, DefaultModuleTimeout)
	def(&c.StateScriptTimeoutSeconds, DefaultStateScriptLimit)
	def(&c.DeviceConfigScriptTimeoutSeconds, DefaultDeviceConfigTimeout)
	def(&c.DeviceConfigRetrySeconds, DefaultDeviceConfigRetry)
	str := func(p *string, v string) {
		if *p == "" {
			*p = v
		}
	}
	str(&c.DataDir, DefaultDataDir)
	str(&c.DeviceTypeFile, filepath.Join(c.DataDir, "device_type"))
	str(&c.ArtifactScriptsPath, filepath.Join(c.DataDir, "scripts"))
	str(&c.IdentityScript, DefaultIdentityScript)
	str(&c.InventoryScriptsDir, DefaultInventoryScriptsDir)
	str(&c.ModulesDir, "/usr/share/mender/modules/v3")
	str(&c.ModulesWorkDir, filepath.Join(c.DataDir, "modules", "v3"))
	str(&c.ArtifactInfoFile, "/etc/mender/artifact_info")
	str(&c.BootEnv, "uboot")
	str(&c.BootIDFile, "/proc/sys/kernel/random/boot_id")
	str(&c.MonitorRoot, "/")
	str(&c.DaemonLogLevel, "info")
	str(&c.DeviceConfigPath, filepath.Join(c.DataDir, "device-config.json"))
	str(&c.DeviceConfigScriptsDir, DefaultDeviceConfigScriptsDir)
	if c.BootEnv == "uboot" {
		str(&c.BootEnvConfig, "/etc/fw_env.config")
	}
	if len(c.RebootCommand) == 0 {
		c.RebootCommand = []string{"reboot"}
	}
}

// Validate reports settings the agent cannot work with.
func (c *Config) Validate() error {
	if errs := c.problems(); len(errs) > 0 {
		return fmt.Errorf("%w: %w", ErrConfig, errList(errs))
	}
	return nil
}

func (c *Config) problems() []error {
	var errs []error
	if c.ServerURL != "" && !strings.HasPrefix(c.ServerURL, "https://") && !strings.HasPrefix(c.ServerURL, "http://") {
		errs = append(errs, fmt.Errorf("ServerURL %q is not an http(s) URL", c.ServerURL))
	}
	switch c.BootEnv {
	case "uboot", "tools":
	case "grub", "file":
		if c.BootEnvFile == "" {
			errs = append(errs, fmt.Errorf("BootEnv %q needs BootEnvFile", c.BootEnv))
		}
	default:
		errs = append(errs, fmt.Errorf("BootEnv %q is not one of uboot, grub, file, tools", c.BootEnv))
	}
	if (c.RootfsPartA == "") != (c.RootfsPartB == "") {
		errs = append(errs, errors.New("RootfsPartA and RootfsPartB are set together"))
	}
	if c.MonitorRoot != "" && !filepath.IsAbs(c.MonitorRoot) {
		errs = append(errs, fmt.Errorf("MonitorRoot %q is not an absolute path", c.MonitorRoot))
	}
	if c.DaemonLogLevel != "" {
		var lv slog.Level
		if err := lv.UnmarshalText([]byte(c.DaemonLogLevel)); err != nil {
			errs = append(errs, fmt.Errorf("DaemonLogLevel %q is not one of debug, info, warn, error", c.DaemonLogLevel))
		}
	}
	if c.RemoteTerminal != nil {
		errs = append(errs, c.RemoteTerminal.problems()...)
	}
	if c.ArtifactVerifyKey != "" && len(c.ArtifactVerifyKeys) > 0 {
		errs = append(errs, errors.New("only one of ArtifactVerifyKey and ArtifactVerifyKeys may be set"))
	}
	return errs
}

// VerifyKeys returns the configured artifact verification key paths.
func (c *Config) VerifyKeys() []string {
	if c.ArtifactVerifyKey != "" {
		return []string{c.ArtifactVerifyKey}
	}
	return c.ArtifactVerifyKeys
}

func seconds(n int) time.Duration { return time.Duration(n) * time.Second }
