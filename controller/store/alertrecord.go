package store

import "time"

// AlertRecord is an Alert as both stores keep it: without the device,
// check and key (they are in its name), with times in unix ns (0 for none)
// and its change time (unix ms), which orders the listing.
type AlertRecord struct {
	State    string `json:"s"`
	Closing  string `json:"c,omitempty"`
	Severity string `json:"v,omitempty"`
	Evidence string `json:"e,omitempty"`
	Flapping bool   `json:"f,omitempty"`
	Raised   int64  `json:"r,omitempty"`
	Closed   int64  `json:"x,omitempty"`
	Updated  int64  `json:"u,omitempty"`
	Count    int64  `json:"n"`
	Seq      uint64 `json:"q"`
	Changed  int64  `json:"t"`
}

// NewAlertRecord is a's record, changed at changed (unix ms).
func NewAlertRecord(a Alert, changed int64) AlertRecord {
	return AlertRecord{State: a.State, Closing: a.Closing, Severity: a.Severity, Evidence: a.Evidence,
		Flapping: a.Flapping, Raised: Nanos(a.Raised), Closed: Nanos(a.Closed), Updated: Nanos(a.Updated),
		Count: a.Count, Seq: a.Seq, Changed: changed}
}

// Alert is the record as the Alert of device, check and key.
func (r AlertRecord) Alert(device, check, key string) Alert {
	return Alert{Device: device, Check: check, Key: key, State: r.State, Closing: r.Closing,
		Severity: r.Severity, Evidence: r.Evidence, Flapping: r.Flapping, Raised: FromNanos(r.Raised),
		Closed: FromNanos(r.Closed), Updated: FromNanos(r.Updated), Count: r.Count, Seq: r.Seq}
}

// Nanos is t in unix ns, 0 for the zero time.
func Nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// FromNanos is the time of Nanos' n (UTC), the zero time for 0.
func FromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}
