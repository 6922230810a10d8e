package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/gitfleet/gitfleet/device/monitor"
)

// MonitorServer is the controller's device monitoring API (the contract of
// device/monitor's wire.go), reached with the device's token like the
// deployment API. Client implements it.
type MonitorServer interface {
	// MonitorChecks fetches the checks assigned to the device. etag is the
	// ETag of the last answer applied ("" for none); when the checks have
	// not changed since, the answer is NotModified (HTTP 304).
	MonitorChecks(ctx context.Context, etag string) (*ChecksAnswer, error)
	// SendAlerts delivers events (at most monitor.MaxBatch, in Seq order)
	// and returns the controller's acknowledgement: the highest Seq it has
	// recorded for the device.
	SendAlerts(ctx context.Context, batch monitor.AlertBatch) (monitor.AlertAck, error)
}

// ChecksAnswer is the answer to a checks poll.
type ChecksAnswer struct {
	// NotModified: the checks are those of the ETag sent; nothing else is
	// set.
	NotModified bool
	// ETag identifies this set of checks; send it with the next poll.
	ETag string
	// Checks are the checks that decoded and passed Validate, in the
	// controller's order.
	Checks []monitor.Check
	// Skipped says why each other check was left out (it does not decode,
	// fails Validate, or repeats a name): one bad check does not stop the
	// others.
	Skipped []error
}

// Bounds of the monitoring answers.
const (
	maxChecksBytes = 1 << 20
	maxAckBytes    = 4 << 10
)

var _ MonitorServer = (*Client)(nil)

// MonitorChecks implements MonitorServer: GET monitor.ChecksPath, with
// If-None-Match when etag is set.
func (c *Client) MonitorChecks(ctx context.Context, etag string) (*ChecksAnswer, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var hdr http.Header
	if etag != "" {
		hdr = http.Header{"If-None-Match": {etag}}
	}
	resp, err := c.callWith(ctx, http.MethodGet, monitor.ChecksPath, nil, hdr)
	if err != nil {
		return nil, err
	}
	defer drain(resp)
	if resp.StatusCode == http.StatusNotModified {
		return &ChecksAnswer{NotModified: true, ETag: etag}, nil
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxChecksBytes+1))
	if err != nil {
		return nil, fmt.Errorf("%w: monitoring checks: %v", ErrServer, err)
	}
	if len(b) > maxChecksBytes {
		return nil, fmt.Errorf("%w: monitoring checks: answer larger than %d bytes", ErrRejected, maxChecksBytes)
	}
	ans, err := DecodeCheckSet(b)
	if err != nil {
		return nil, fmt.Errorf("%w: monitoring checks: %v", ErrRejected, err)
	}
	ans.ETag = resp.Header.Get("ETag")
	return ans, nil
}

// DecodeCheckSet decodes a monitor.CheckSet check by check: a check that
// does not decode (a malformed duration), fails Validate or repeats an
// earlier check's name is left out and listed in Skipped. Only a body
// that is not a CheckSet object at all is an error.
func DecodeCheckSet(b []byte) (*ChecksAnswer, error) {
	var raw struct {
		Checks []json.RawMessage `json:"checks"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, err
	}
	ans := &ChecksAnswer{Checks: []monitor.Check{}}
	seen := map[string]bool{}
	for i, r := range raw.Checks {
		var c monitor.Check
		if err := json.Unmarshal(r, &c); err != nil {
			var named struct {
				Name string `json:"name"`
			}
			json.Unmarshal(r, &named)
			ans.Skipped = append(ans.Skipped, fmt.Errorf("check %d (%q): %w", i, named.Name, err))
			continue
		}
		if err := c.Validate(); err != nil {
			ans.Skipped = append(ans.Skipped, fmt.Errorf("check %d: %w", i, err))
			continue
		}
		if seen[c.Name] {
			ans.Skipped = append(ans.Skipped, fmt.Errorf("check %d: %w %q: the name is used by an earlier check", i, monitor.ErrInvalidCheck, c.Name))
			continue
		}
		seen[c.Name] = true
		ans.Checks = append(ans.Checks, c)
	}
	return ans, nil
}

// SendAlerts implements MonitorServer: POST monitor.AlertsPath.
func (c *Client) SendAlerts(ctx context.Context, batch monitor.AlertBatch) (monitor.AlertAck, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if len(batch.Events) > monitor.MaxBatch {
		return monitor.AlertAck{}, fmt.Errorf("agent: %d alert events in one batch (at most %d)", len(batch.Events), monitor.MaxBatch)
	}
	resp, err := c.call(ctx, http.MethodPost, monitor.AlertsPath, batch)
	if err != nil {
		return monitor.AlertAck{}, err
	}
	defer drain(resp)
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAckBytes+1))
	if err != nil {
		return monitor.AlertAck{}, fmt.Errorf("%w: monitoring alerts: %v", ErrServer, err)
	}
	var ack monitor.AlertAck
	if len(b) > maxAckBytes || json.Unmarshal(b, &ack) != nil {
		// The events may have been recorded; they are sent again and the
		// controller skips what it has.
		return monitor.AlertAck{}, fmt.Errorf("%w: monitoring alerts: the answer is not an AlertAck", ErrServer)
	}
	return ack, nil
}
