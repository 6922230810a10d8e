package agent

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strings"

	"github.com/gitfleet/gitfleet/artifact"
	"github.com/gitfleet/gitfleet/device/atomicfile"
)

// Errors from the checks Download makes on an artifact's header.
var (
	// ErrIncompatible: the artifact is not for this device (device type,
	// artifact_depends, type-info depends).
	ErrIncompatible = errors.New("agent: artifact not compatible with this device")
	// ErrDowngrade: the artifact's version is lower than the running one
	// and AllowDowngrade is off.
	ErrDowngrade = errors.New("agent: refusing a downgrade")
)

// ArtifactInfo reads what the device provides now: <DataDir>/artifact_info
// when the agent has committed an artifact, otherwise the image's own
// ArtifactInfoFile (Mender's /etc/mender/artifact_info). Both are
// name=value lines; artifact_name is among them. A device with neither
// provides artifact_name "unknown".
//
// While the state record of a committed deployment lasts (a power cut
// between the commit and the end of the deployment), its provides are
// what the device provides, whatever artifact_info says yet.
func (a *Agent) ArtifactInfo() (map[string]string, error) {
	if rec, err := a.records.Load(); err == nil && rec != nil && rec.Committed && rec.Provides != nil {
		out := make(map[string]string, len(rec.Provides))
		for k, v := range rec.Provides {
			out[k] = v
		}
		return out, nil
	}
	for _, p := range []string{a.providesPath(), a.cfg.ArtifactInfoFile} {
		m, err := readKeyValueFile(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("artifact info: %w", err)
		}
		if m["artifact_name"] == "" {
			m["artifact_name"] = "unknown"
		}
		return m, nil
	}
	return map[string]string{"artifact_name": "unknown"}, nil
}

func (a *Agent) saveProvides(p map[string]string) error {
	if err := atomicfile.WriteFile(a.providesPath(), formatKeyValues(p), 0o644); err != nil {
		return fmt.Errorf("artifact info: %w", err)
	}
	return nil
}

// DeviceType reads "device_type=NAME" from DeviceTypeFile.
func (a *Agent) DeviceType() (string, error) {
	m, err := readKeyValueFile(a.cfg.DeviceTypeFile)
	if err != nil {
		return "", fmt.Errorf("device type: %w", err)
	}
	if m["device_type"] == "" {
		return "", fmt.Errorf("device type: %s has no device_type=", a.cfg.DeviceTypeFile)
	}
	return m["device_type"], nil
}

// newProvides is what the device provides once h is committed: the old
// provides, minus those matching any payload's clears_artifact_provides
// (shell-style patterns, as in mender-artifact), plus the artifact's.
func newProvides(old map[string]string, h *artifact.Header) map[string]string {
	var clears []string
	for _, p := range h.Payloads {
		clears = append(clears, p.TypeInfo.ClearsProvides...)
	}
	out := map[string]string{}
	for k, v := range old {
		if k == "artifact_name" || k == "artifact_group" {
			continue // always replaced
		}
		cleared := false
		for _, pat := range clears {
			if ok, _ := path.Match(pat, k); ok {
				cleared = true
				break
			}
		}
		if !cleared {
			out[k] = v
		}
	}
	for k, v := range h.Provides() {
		out[k] = v
	}
	return out
}

// checkCompatible applies the artifact's depends to the device.
func checkCompatible(h *artifact.Header, deviceType string, provides map[string]string) error {
	if !slices.Contains(h.DeviceTypes(), deviceType) {
		return fmt.Errorf("%w: built for device types %v, this is %q", ErrIncompatible, h.DeviceTypes(), deviceType)
	}
	d := h.Info.Depends
	if len(d.Names) > 0 && !slices.Contains(d.Names, provides["artifact_name"]) {
		return fmt.Errorf("%w: depends on artifact %v, the device runs %q", ErrIncompatible, d.Names, provides["artifact_name"])
	}
	if len(d.Groups) > 0 && !slices.Contains(d.Groups, provides["artifact_group"]) {
		return fmt.Errorf("%w: depends on artifact group %v, the device has %q", ErrIncompatible, d.Groups, provides["artifact_group"])
	}
	for k, vs := range h.Depends() {
		switch k {
		case "device_type", "artifact_name", "artifact_group":
			continue
		}
		if !slices.Contains(vs, provides[k]) {
			return fmt.Errorf("%w: depends on %s in %v, the device provides %q", ErrIncompatible, k, vs, provides[k])
		}
	}
	return nil
}

// checkDowngrade refuses an artifact whose version is lower than what the
// device runs. Versions are compared for every provides key ending in
// ".version" that both sides have (rootfs-image.version,
// rootfs-image.<module>.version); when they share none, the artifact names
// are compared. A comparison counts only when the two strings differ first
// in a run of digits ("1.9" < "1.10", "release-2" < "release-10");
// strings that differ elsewhere ("foo" and "bar") are not ordered and never
// refused.
func checkDowngrade(old map[string]string, h *artifact.Header) error {
	newP := h.Provides()
	compared := false
	for k, nv := range newP {
		if !strings.HasSuffix(k, ".version") {
			continue
		}
		ov, ok := old[k]
		if !ok {
			continue
		}
		compared = true
		if c, ok := compareVersions(nv, ov); ok && c < 0 {
			return fmt.Errorf("%w: %s %q is older than the running %q", ErrDowngrade, k, nv, ov)
		}
	}
	if !compared {
		if c, ok := compareVersions(h.Name(), old["artifact_name"]); ok && c < 0 {
			return fmt.Errorf("%w: artifact %q is older than the running %q", ErrDowngrade, h.Name(), old["artifact_name"])
		}
	}
	return nil
}

// compareVersions compares a and b run by run (digits numerically). ok is
// false when they differ first outside a pair of digit runs.
func compareVersions(a, b string) (c int, ok bool) {
	for a != "" && b != "" {
		ra, restA := nextRun(a)
		rb, restB := nextRun(b)
		da, db := isDigits(ra), isDigits(rb)
		if ra != rb {
			if !da || !db {
				return 0, false
			}
			ta, tb := strings.TrimLeft(ra, "0"), strings.TrimLeft(rb, "0")
			if len(ta) != len(tb) {
				return cmpInt(len(ta), len(tb)), true
			}
			if c := strings.Compare(ta, tb); c != 0 {
				return c, true
			}
		}
		a, b = restA, restB
	}
	switch {
	case a == "" && b == "":
		return 0, true
	default:
		// One is a prefix of the other ("1.2" and "1.2.1", "1.0" and
		// "1.0-rc1"): not ordered.
		return 0, false
	}
}

func nextRun(s string) (run, rest string) {
	d := s[0] >= '0' && s[0] <= '9'
	i := 1
	for i < len(s) && (s[i] >= '0' && s[i] <= '9') == d {
		i++
	}
	return s[:i], s[i:]
}

func isDigits(s string) bool { return s != "" && s[0] >= '0' && s[0] <= '9' }

func cmpInt(a, b int) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
