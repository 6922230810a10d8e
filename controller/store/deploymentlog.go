package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// DeploymentLogs keeps the log a device uploads for its deployment in a
// generation (the Mender client sends it when an update fails), bounded,
// so that the management API can show why a device failed.
type DeploymentLogs interface {
	// SetDeploymentLog stores log as device's log in g, replacing any log
	// stored before, with Stored set to the store's clock. Only the last
	// MaxLogLines lines, and of those the last whose JSON encoding fits
	// MaxLogBytes, are kept; Dropped counts the others (plus those the
	// caller dropped already, log.Dropped). ErrNotFound when device has no
	// deployment in g. A store may expire a log DeploymentLogTTL after it
	// was stored (the Redis store does).
	SetDeploymentLog(ctx context.Context, g GenerationRef, device string, log DeploymentLog) (DeploymentLog, error)
	// DeploymentLog returns device's stored log in g, or ErrNotFound.
	DeploymentLog(ctx context.Context, g GenerationRef, device string) (DeploymentLog, error)
}

// Bounds of a stored deployment log.
const (
	MaxLogLines      = 200
	MaxLogBytes      = 64 << 10
	MaxLogLineBytes  = 1 << 10 // a longer message is cut
	DeploymentLogTTL = 30 * 24 * time.Hour
)

// LogLine is one line of a deployment log, as the device sent it
// (timestamp and level as strings: the device's clock and vocabulary).
type LogLine struct {
	Time    string `json:"timestamp"`
	Level   string `json:"level"`
	Message string `json:"message"`
}

// DeploymentLog is the log a device uploaded for one deployment.
type DeploymentLog struct {
	Lines []LogLine `json:"lines"`
	// Dropped counts the lines not kept (the oldest).
	Dropped int `json:"dropped,omitempty"`
	// Stored is when the store kept it.
	Stored time.Time `json:"stored"`
}

// BoundLog cuts l to the bounds of a stored log (see
// DeploymentLogs.SetDeploymentLog): each field cut to MaxLogLineBytes
// (Time and Level to 64 and 16 bytes), then the last lines that fit
// MaxLogLines and MaxLogBytes kept.
func BoundLog(l DeploymentLog) DeploymentLog {
	lines := l.Lines
	out := DeploymentLog{Dropped: l.Dropped, Stored: l.Stored}
	if len(lines) > MaxLogLines {
		out.Dropped += len(lines) - MaxLogLines
		lines = lines[len(lines)-MaxLogLines:]
	}
	size := 64 // the envelope
	first := len(lines)
	kept := make([]LogLine, len(lines))
	for i := len(lines) - 1; i >= 0; i-- {
		ln := LogLine{Time: cut(lines[i].Time, 64), Level: cut(lines[i].Level, 16), Message: cut(lines[i].Message, MaxLogLineBytes)}
		b, _ := json.Marshal(ln)
		if size+len(b)+1 > MaxLogBytes {
			break
		}
		size += len(b) + 1
		kept[i], first = ln, i
	}
	out.Dropped += first
	out.Lines = kept[first:]
	return out
}

// cut shortens s to at most n bytes without splitting a UTF-8 sequence.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && s[n]&0xc0 == 0x80 {
		n--
	}
	return s[:n]
}

// EncodeDeploymentLog and ParseDeploymentLog give both stores one form.
func EncodeDeploymentLog(l DeploymentLog) ([]byte, error) { return json.Marshal(l) }

// ParseDeploymentLog reverses EncodeDeploymentLog.
func ParseDeploymentLog(b []byte) (DeploymentLog, error) {
	var l DeploymentLog
	if err := json.Unmarshal(b, &l); err != nil {
		return DeploymentLog{}, fmt.Errorf("deployment log record: %w", err)
	}
	return l, nil
}
