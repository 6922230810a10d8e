// Package devconfig is the device configuration contract between the
// controller and devices: the configuration a device should run (the
// merged DeviceConfig values of the fleet repository), its digest, and what
// the device reports back after applying it.
//
// The configuration is a flat JSON object of string values, the format of
// Mender Configure's device-config.json, so apply scripts written for
// Mender Configure work unchanged. Its digest is the SHA-256 of Encode's
// bytes: the controller and the device compute it alike.
//
// Endpoints (device token, beside the deployment API):
//
//	GET /api/devices/v1/deviceconfig/gitfleet         → 200 Configuration (ETag: the quoted digest; If-None-Match → 304)
//	PUT /api/devices/v1/deviceconfig/gitfleet/status  ← Status → 204
//	PUT /api/devices/v1/deviceconfig/configuration    ← the applied configuration (Mender's report) → 204
package devconfig

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Endpoint paths.
const (
	ConfigPath = "/api/devices/v1/deviceconfig/gitfleet"
	StatusPath = "/api/devices/v1/deviceconfig/gitfleet/status"
	ReportPath = "/api/devices/v1/deviceconfig/configuration"
)

// Status states.
const (
	Applied = "applied" // every apply script exited 0 with the file of Digest
	Failed  = "failed"  // an apply script failed (Script, ExitCode, Output)
	Drifted = "drifted" // the applied file was changed on the device (FileDigest)
)

// Bounds.
const (
	MaxOutput = 4096    // bytes of a failing script's output kept (its tail)
	MaxBody   = 1 << 20 // a configuration or report body
	MaxKeys   = 1000    // keys of one configuration
)

// Configuration is what GET ConfigPath answers.
type Configuration struct {
	Digest string            `json:"digest"` // Digest(Values)
	Values map[string]string `json:"configuration"`
}

// Status is what a device reports after applying (or failing to apply) a
// configuration, and when it finds the applied file changed.
type Status struct {
	Digest     string    `json:"digest"` // the configuration the device applied or tried to
	State      string    `json:"state"`  // Applied, Failed or Drifted
	Script     string    `json:"script,omitempty"`
	ExitCode   int       `json:"exit_code,omitempty"`
	Output     string    `json:"output,omitempty"`      // the tail of the failing script's output
	FileDigest string    `json:"file_digest,omitempty"` // Drifted: the digest of the file found
	Time       time.Time `json:"time"`                  // device clock
}

// Encode returns the canonical JSON of values: keys sorted, no spaces.
// It is the content of the device's configuration file.
func Encode(values map[string]string) []byte {
	if values == nil {
		values = map[string]string{}
	}
	b, _ := json.Marshal(values) // map[string]string: sorted keys, cannot fail
	return b
}

// Digest is "sha256:" and the hex SHA-256 of Encode(values).
func Digest(values map[string]string) string { return DigestOf(Encode(values)) }

// DigestOf is "sha256:" and the hex SHA-256 of b.
func DigestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// ErrInvalid marks a Configuration that fails Verify.
var ErrInvalid = errors.New("devconfig: invalid configuration")

// Verify checks what a device checks before applying c: at most MaxKeys
// values, and a digest that is Digest(c.Values). Its errors never carry
// a value (values may be secrets).
func (c Configuration) Verify() error {
	if len(c.Values) > MaxKeys {
		return fmt.Errorf("%w: %d values (at most %d)", ErrInvalid, len(c.Values), MaxKeys)
	}
	if want := Digest(c.Values); c.Digest != want {
		d := c.Digest
		if len(d) > 80 {
			d = d[:80] + "…"
		}
		return fmt.Errorf("%w: digest %q is not the digest of the values (%s)", ErrInvalid, d, want)
	}
	return nil
}
