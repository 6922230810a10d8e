package monitor

import (
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// Severity of a check's alerts, as in the schema's #Severity.
type Severity string

// The severities.
const (
	Critical Severity = "critical"
	Error    Severity = "error"
	Warning  Severity = "warning"
	Info     Severity = "info"
)

// DefaultExpiry closes an open alert when its check sets no expiry (the
// seed's two days).
const DefaultExpiry = 48 * time.Hour

// Check is one monitoring check: a name, how severe its alerts are, when they
// expire, and exactly one probe. It mirrors the schema's MonitorCheck spec.
type Check struct {
	Name     string
	Severity Severity      // default Error
	Expiry   time.Duration // default DefaultExpiry
	Interval time.Duration // default: the probe's own

	Log               *Log
	Service           *Service
	ListeningPorts    *ListeningPorts
	Setuid            *Setuid
	FileChange        *FileChange
	ProcessRestart    *ProcessRestart
	Traffic           *Traffic
	Wifi              *Wifi
	RootLogin         *RootLogin
	FailedDeployments *FailedDeployments
	LibraryInjection  *LibraryInjection
}

// Log raises an alert for each line matching Pattern (RE2) in a followed
// file, or in the output of a command when Path is "@command".
type Log struct {
	Path    string `json:"path"`
	Pattern string `json:"pattern"`
}

// Service raises an alert while a systemd unit (a name ending in ".service",
// ".socket", ...) has no process in its cgroup, or while no process of that
// name runs.
type Service struct {
	Name string `json:"name"`
}

// ListeningPorts raises an alert for each TCP or UDP port listening outside
// Allow, naming the owning process and its executable.
type ListeningPorts struct {
	Allow []int `json:"allow,omitempty"`
}

// Setuid raises an alert for each set-uid file under Paths that was not
// there at the first scan.
type Setuid struct {
	Paths []string `json:"paths"`
}

// FileChange raises an alert when a file's sha256 or inode differs from
// the one first seen (or the one announced by Monitor.Expect).
type FileChange struct {
	Paths []string `json:"paths"`
}

// ProcessRestart raises an alert when the process named Name has a new PID.
type ProcessRestart struct {
	Name string `json:"name"`
}

// Traffic raises an alert when the bytes received plus sent on Interface
// exceed MaxBytes within one Window (default one hour).
type Traffic struct {
	Interface string
	MaxBytes  uint64
	Window    time.Duration
}

// Wifi raises an alert when the SSID of Interface changes, or differs from
// Expected when set. Interface defaults to the first one in
// /proc/net/wireless.
type Wifi struct {
	Interface string `json:"interface,omitempty"`
	Expected  string `json:"expected,omitempty"`
}

// RootLogin raises an alert for each ssh or sudo root login attempt in the
// auth log Log (default /var/log/auth.log, else /var/log/secure, else the
// systemd journal).
type RootLogin struct {
	Log string `json:"log,omitempty"`
}

// FailedDeployments raises an alert for each failed deployment the agent
// reports with Monitor.ReportDeployment.
type FailedDeployments struct{}

// LibraryInjection raises an alert while /etc/ld.so.preload holds a library
// or a running process was started with LD_PRELOAD.
type LibraryInjection struct{}

// ErrInvalidCheck is wrapped by every error Validate returns.
var ErrInvalidCheck = errors.New("monitor: invalid check")

var checkName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// Validate reports what is wrong with c, or nil.
func (c *Check) Validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w %q: %s", ErrInvalidCheck, c.Name, fmt.Sprintf(format, a...))
	}
	if !checkName.MatchString(c.Name) {
		return bad("the name must be 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit")
	}
	switch c.Severity {
	case "", Critical, Error, Warning, Info:
	default:
		return bad("severity %q is not one of critical, error, warning, info", c.Severity)
	}
	if c.Expiry < 0 || c.Interval < 0 {
		return bad("expiry and interval must not be negative")
	}
	if c.Interval != 0 && c.Interval < time.Second {
		return bad("interval %s is below the 1s minimum", c.Interval)
	}
	n := 0
	for _, set := range []bool{c.Log != nil, c.Service != nil, c.ListeningPorts != nil, c.Setuid != nil,
		c.FileChange != nil, c.ProcessRestart != nil, c.Traffic != nil, c.Wifi != nil, c.RootLogin != nil,
		c.FailedDeployments != nil, c.LibraryInjection != nil} {
		if set {
			n++
		}
	}
	if n != 1 {
		return bad("a check sets exactly one probe, this one sets %d", n)
	}
	switch {
	case c.Log != nil:
		if strings.TrimPrefix(c.Log.Path, "@") == "" || (!strings.HasPrefix(c.Log.Path, "@") && !filepath.IsAbs(c.Log.Path)) {
			return bad("log: path %q must be an absolute file path or \"@command\"", c.Log.Path)
		}
		if _, err := regexp.Compile(c.Log.Pattern); err != nil || c.Log.Pattern == "" {
			return bad("log: pattern %q is not an RE2 expression: %v", c.Log.Pattern, err)
		}
	case c.Service != nil:
		if c.Service.Name == "" || strings.ContainsAny(c.Service.Name, "/\x00") {
			return bad("service: name must be a unit or process name without '/'")
		}
	case c.ListeningPorts != nil:
		for _, p := range c.ListeningPorts.Allow {
			if p < 1 || p > 65535 {
				return bad("listeningPorts: port %d is outside 1-65535", p)
			}
		}
	case c.Setuid != nil:
		if len(c.Setuid.Paths) == 0 {
			return bad("setuid: name at least one path")
		}
		if err := absPaths(c.Setuid.Paths); err != nil {
			return bad("setuid: %v", err)
		}
	case c.FileChange != nil:
		if len(c.FileChange.Paths) == 0 {
			return bad("fileChange: name at least one path")
		}
		if err := absPaths(c.FileChange.Paths); err != nil {
			return bad("fileChange: %v", err)
		}
	case c.RootLogin != nil:
		if c.RootLogin.Log != "" && !strings.HasPrefix(c.RootLogin.Log, "@") && !filepath.IsAbs(c.RootLogin.Log) {
			return bad("rootLogin: log %q must be an absolute file path or \"@command\"", c.RootLogin.Log)
		}
	case c.ProcessRestart != nil:
		if c.ProcessRestart.Name == "" || strings.ContainsAny(c.ProcessRestart.Name, "/\x00") {
			return bad("processRestart: name must be a process name without '/'")
		}
	case c.Traffic != nil:
		if c.Traffic.Interface == "" || strings.ContainsAny(c.Traffic.Interface, "/\x00") || c.Traffic.MaxBytes == 0 {
			return bad("traffic: set an interface name and maxBytes > 0")
		}
		if c.Traffic.Window < 0 {
			return bad("traffic: window must not be negative")
		}
	case c.Wifi != nil:
		if strings.ContainsAny(c.Wifi.Interface, "/\x00") {
			return bad("wifi: interface %q is not an interface name", c.Wifi.Interface)
		}
	}
	return nil
}

func absPaths(paths []string) error {
	for _, p := range paths {
		if !filepath.IsAbs(p) || strings.ContainsRune(p, 0) {
			return fmt.Errorf("path %q must be absolute", p)
		}
	}
	return nil
}

func (c *Check) severity() Severity {
	if c.Severity == "" {
		return Error
	}
	return c.Severity
}

func (c *Check) expiry() time.Duration {
	if c.Expiry == 0 {
		return DefaultExpiry
	}
	return c.Expiry
}
