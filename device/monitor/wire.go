package monitor

import (
	"encoding/json"
	"fmt"
	"time"
)

// The device API's monitoring endpoints, which the agent polls with its
// device token (the controller serves them beside the deployment API):
//
//	GET  /api/devices/v1/devicemonitor/checks   → 200 CheckSet (ETag; If-None-Match → 304)
//	POST /api/devices/v1/devicemonitor/alerts   ← AlertBatch → 200 AlertAck
const (
	ChecksPath = "/api/devices/v1/devicemonitor/checks"
	AlertsPath = "/api/devices/v1/devicemonitor/alerts"
	// MaxBatch is the most events one AlertBatch may carry.
	MaxBatch = 1000
)

// CheckSet is the checks the controller assigns to one device.
type CheckSet struct {
	Checks []Check `json:"checks"`
}

// AlertBatch is events a device sends, in Seq order.
type AlertBatch struct {
	Events []Event `json:"events"`
}

// AlertAck answers an AlertBatch: the highest Seq the controller has
// recorded for the device; the device drops its queued events up to it.
type AlertAck struct {
	Seq uint64 `json:"seq"`
}

// wireCheck is Check on the wire: durations as Go duration strings.
type wireCheck struct {
	Name     string   `json:"name"`
	Severity Severity `json:"severity,omitempty"`
	Expiry   string   `json:"expiry,omitempty"`
	Interval string   `json:"interval,omitempty"`

	Log               *Log               `json:"log,omitempty"`
	Service           *Service           `json:"service,omitempty"`
	ListeningPorts    *ListeningPorts    `json:"listeningPorts,omitempty"`
	Setuid            *Setuid            `json:"setuid,omitempty"`
	FileChange        *FileChange        `json:"fileChange,omitempty"`
	ProcessRestart    *ProcessRestart    `json:"processRestart,omitempty"`
	Traffic           *wireTraffic       `json:"traffic,omitempty"`
	Wifi              *Wifi              `json:"wifi,omitempty"`
	RootLogin         *RootLogin         `json:"rootLogin,omitempty"`
	FailedDeployments *FailedDeployments `json:"failedDeployments,omitempty"`
	LibraryInjection  *LibraryInjection  `json:"libraryInjection,omitempty"`
}

type wireTraffic struct {
	Interface string `json:"interface"`
	MaxBytes  uint64 `json:"maxBytes"`
	Window    string `json:"window,omitempty"`
}

func durString(d time.Duration) string {
	if d == 0 {
		return ""
	}
	return d.String()
}

func parseDur(field, s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%s %q: %w", field, s, err)
	}
	return d, nil
}

// MarshalJSON encodes c with durations as strings ("90s").
func (c Check) MarshalJSON() ([]byte, error) {
	w := wireCheck{
		Name: c.Name, Severity: c.Severity, Expiry: durString(c.Expiry), Interval: durString(c.Interval),
		Log: c.Log, Service: c.Service, ListeningPorts: c.ListeningPorts, Setuid: c.Setuid,
		FileChange: c.FileChange, ProcessRestart: c.ProcessRestart, Wifi: c.Wifi, RootLogin: c.RootLogin,
		FailedDeployments: c.FailedDeployments, LibraryInjection: c.LibraryInjection,
	}
	if t := c.Traffic; t != nil {
		w.Traffic = &wireTraffic{Interface: t.Interface, MaxBytes: t.MaxBytes, Window: durString(t.Window)}
	}
	return json.Marshal(w)
}

// UnmarshalJSON decodes what MarshalJSON encodes. It does not validate:
// call Validate.
func (c *Check) UnmarshalJSON(b []byte) error {
	var w wireCheck
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	out := Check{
		Name: w.Name, Severity: w.Severity,
		Log: w.Log, Service: w.Service, ListeningPorts: w.ListeningPorts, Setuid: w.Setuid,
		FileChange: w.FileChange, ProcessRestart: w.ProcessRestart, Wifi: w.Wifi, RootLogin: w.RootLogin,
		FailedDeployments: w.FailedDeployments, LibraryInjection: w.LibraryInjection,
	}
	var err error
	if out.Expiry, err = parseDur("expiry", w.Expiry); err != nil {
		return fmt.Errorf("check %q: %w", w.Name, err)
	}
	if out.Interval, err = parseDur("interval", w.Interval); err != nil {
		return fmt.Errorf("check %q: %w", w.Name, err)
	}
	if t := w.Traffic; t != nil {
		out.Traffic = &Traffic{Interface: t.Interface, MaxBytes: t.MaxBytes}
		if out.Traffic.Window, err = parseDur("traffic window", t.Window); err != nil {
			return fmt.Errorf("check %q: %w", w.Name, err)
		}
	}
	*c = out
	return nil
}
