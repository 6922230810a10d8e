package schema

// A MonitorCheck is something the targeted devices watch, and the alert
// they raise when it fires. Exactly one probe field of the spec is set.
type MonitorCheck struct {
	Meta
	Spec MonitorCheckSpec
}

// Severity ranks an alert.
type Severity string

// The severities, most severe first.
const (
	SeverityCritical Severity = "critical"
	SeverityError    Severity = "error"
	SeverityWarning  Severity = "warning"
	SeverityInfo     Severity = "info"
)

// MonitorCheckSpec is the spec of a [MonitorCheck].
type MonitorCheckSpec struct {
	// Target is the devices that run the check; zero means the whole
	// fleet.
	Target Target `json:"target,omitzero"`

	Severity Severity `json:"severity,omitempty"` // default warning

	// Expiry closes a raised alert after this long (default 48h) unless
	// it cleared by itself before (a service running again, say). An
	// expired condition that persists stays quiet until it recovers, or,
	// for fileChange, until the file changes again.
	Expiry Duration `json:"expiry,omitzero"`

	// Interval is how often the probe scans (at least 1s); zero means
	// the probe's own default.
	Interval Duration `json:"interval,omitzero"`

	Log               *LogProbe               `json:"log,omitempty"`
	Service           *ServiceProbe           `json:"service,omitempty"`
	ListeningPorts    *ListeningPortsProbe    `json:"listeningPorts,omitempty"`
	SetUID            *SetUIDProbe            `json:"setuid,omitempty"`
	FileChange        *FileChangeProbe        `json:"fileChange,omitempty"`
	ProcessRestart    *ProcessRestartProbe    `json:"processRestart,omitempty"`
	Traffic           *TrafficProbe           `json:"traffic,omitempty"`
	WiFi              *WiFiProbe              `json:"wifi,omitempty"`
	RootLogin         *RootLoginProbe         `json:"rootLogin,omitempty"`
	FailedDeployments *FailedDeploymentsProbe `json:"failedDeployments,omitempty"`
	LibraryInjection  *LibraryInjectionProbe  `json:"libraryInjection,omitempty"`
}

// MarshalJSON encodes c in the shape of its manifest.
func (c MonitorCheck) MarshalJSON() ([]byte, error) { return marshal(&c.Meta, &c.Spec) }

// Probe returns the name of the probe field that is set ("log",
// "service", "listeningPorts", ...) and its value, or "" and nil.
func (s *MonitorCheckSpec) Probe() (string, any) {
	for _, p := range s.probes() {
		if p.set {
			return p.name, p.value
		}
	}
	return "", nil
}

type probeField struct {
	name  string
	set   bool
	value any
}

func (s *MonitorCheckSpec) probes() []probeField {
	return []probeField{
		{"log", s.Log != nil, s.Log},
		{"service", s.Service != nil, s.Service},
		{"listeningPorts", s.ListeningPorts != nil, s.ListeningPorts},
		{"setuid", s.SetUID != nil, s.SetUID},
		{"fileChange", s.FileChange != nil, s.FileChange},
		{"processRestart", s.ProcessRestart != nil, s.ProcessRestart},
		{"traffic", s.Traffic != nil, s.Traffic},
		{"wifi", s.WiFi != nil, s.WiFi},
		{"rootLogin", s.RootLogin != nil, s.RootLogin},
		{"failedDeployments", s.FailedDeployments != nil, s.FailedDeployments},
		{"libraryInjection", s.LibraryInjection != nil, s.LibraryInjection},
	}
}

// A LogProbe fires when a line matching Pattern (a Go regular expression)
// appears in the log file at Path, or, when Path starts with "@", in the
// output of that command ("@journalctl -f -u app").
type LogProbe struct {
	Path    string `json:"path"`
	Pattern string `json:"pattern"`
}

// A ServiceProbe fires when Name is not running: a systemd unit (a name
// with a unit suffix such as "sshd.service" or "app.socket") with no
// process in its cgroup, or else no process of that name.
type ServiceProbe struct {
	Name string `json:"name"`
}

// A ListeningPortsProbe fires when a TCP or UDP port outside Allow is
// listening.
type ListeningPortsProbe struct {
	Allow []int `json:"allow,omitempty"`
}

// A SetUIDProbe fires when a set-uid executable appears under one of Paths
// that was not there when the agent started watching. The default is where
// executables live and where anyone may write (/bin, /sbin, /usr/bin,
// /usr/sbin, /usr/local, /usr/libexec, /opt, /etc, /tmp, /var/tmp, /home,
// /root, /srv, /data; those a device lacks are skipped). A scan stops at
// 100,000 entries: name smaller trees than /usr or / on a full system.
type SetUIDProbe struct {
	Paths []string `json:"paths,omitempty"`
}

// A FileChangeProbe fires when the digest or inode of one of Paths
// changes.
type FileChangeProbe struct {
	Paths []string `json:"paths"`
}

// A ProcessRestartProbe fires when the PID of the process called Name
// changes (it restarted) or it disappears.
type ProcessRestartProbe struct {
	Name string `json:"name"`
}

// A TrafficProbe fires when more than MaxBytes cross Interface (both
// directions) within Window (default 1h).
type TrafficProbe struct {
	Interface string   `json:"interface"`
	MaxBytes  int64    `json:"maxBytes"`
	Window    Duration `json:"window,omitzero"`
}

// A WiFiProbe fires when the SSID Interface is associated with changes,
// or, when Expected is set, whenever it is not Expected.
type WiFiProbe struct {
	Interface string `json:"interface,omitempty"`
	Expected  string `json:"expected,omitempty"`
}

// A RootLoginProbe fires on every root login attempt found in the
// authentication log (default: the systemd journal).
type RootLoginProbe struct {
	Log string `json:"log,omitempty"`
}

// A FailedDeploymentsProbe fires when a deployment fails on the device.
type FailedDeploymentsProbe struct{}

// A LibraryInjectionProbe fires while /etc/ld.so.preload names a library
// or a running process was started with LD_PRELOAD: the active guard
// against code injected into every program.
type LibraryInjectionProbe struct{}
