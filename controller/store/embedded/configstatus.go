package embedded

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/gitfleet/gitfleet/controller/store"
	bolt "go.etcd.io/bbolt"
)

// Devices' configuration reports (store.ConfigStatuses) live in one bucket:
//
//	cfgstatus   device (manifest name) → configRecord JSON
//
// SetConfigStatus is one write transaction: it reads the recorded report,
// compares, chooses Since and writes.
var bConfigStatus = []byte("cfgstatus")

// configRecord is a store.ConfigStatus as kept, without the device (the
// key) and with times in unix ns, the fields the Redis store keeps.
type configRecord struct {
	Digest     string `json:"d"`
	State      string `json:"s"`
	Script     string `json:"sc,omitempty"`
	ExitCode   int    `json:"x,omitempty"`
	Output     string `json:"o,omitempty"`
	FileDigest string `json:"fd,omitempty"`
	Via        string `json:"v,omitempty"`
	Reported   int64  `json:"r"`
	Since      int64  `json:"t"`
}

func (r configRecord) status(device string) store.ConfigStatus {
	return store.ConfigStatus{Device: device, Digest: r.Digest, State: r.State, Script: r.Script,
		ExitCode: r.ExitCode, Output: r.Output, FileDigest: r.FileDigest, Via: r.Via,
		Reported: store.FromNanos(r.Reported), Since: store.FromNanos(r.Since)}
}

// sameReport reports whether r and n say the same, times aside.
func (r configRecord) sameReport(n configRecord) bool {
	r.Reported, r.Since, n.Reported, n.Since = 0, 0, 0, 0
	return r == n
}

// SetConfigStatus records a device's configuration report.
func (s *Store) SetConfigStatus(ctx context.Context, st store.ConfigStatus) (bool, error) {
	if err := store.ValidateConfigStatus(st); err != nil {
		return false, err
	}
	if st.Reported.IsZero() {
		st.Reported = s.opts.Now()
	}
	valid := func(x string) string { return strings.ToValidUTF8(x, "\uFFFD") }
	next := configRecord{Digest: valid(st.Digest), State: valid(st.State), Script: valid(st.Script),
		ExitCode: st.ExitCode, Output: valid(st.Output), FileDigest: valid(st.FileDigest), Via: valid(st.Via),
		Reported: st.Reported.UnixNano()}
	next.Since = next.Reported
	changed := false
	err := s.update(ctx, "set config status of device "+st.Device, func(tx *bolt.Tx) error {
		b := tx.Bucket(bConfigStatus)
		key := []byte(st.Device)
		changed = true
		if v := b.Get(key); v != nil {
			var prev configRecord
			if err := json.Unmarshal(v, &prev); err != nil {
				return fmt.Errorf("recorded status: %w", err)
			}
			changed = !prev.sameReport(next)
			if prev.Digest == next.Digest && prev.State == next.State && prev.Since <= next.Reported {
				next.Since = prev.Since
			}
		}
		enc, err := json.Marshal(next)
		if err != nil {
			return err
		}
		return b.Put(key, enc)
	})
	if err != nil {
		changed = false
	}
	return changed, err
}

// ConfigStatusOf reads devices' reports in one read transaction.
func (s *Store) ConfigStatusOf(ctx context.Context, devices []string) (map[string]store.ConfigStatus, error) {
	out := make(map[string]store.ConfigStatus, len(devices))
	err := s.view(ctx, "config statuses", func(tx *bolt.Tx) error {
		b := tx.Bucket(bConfigStatus)
		for _, d := range devices {
			if d == "" {
				continue // bbolt keys are never empty; no report has one
			}
			v := b.Get([]byte(d))
			if v == nil {
				continue
			}
			var r configRecord
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("config status of device %s: %w", d, err)
			}
			out[d] = r.status(d)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
