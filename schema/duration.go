package schema

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// A Duration is a time.Duration written in a manifest as a Go duration
// extended with days and weeks (see [ParseDuration]). Its zero value means
// the field was not set.
type Duration struct {
	time.Duration
}

// ParseDuration parses a non-negative duration such as "90m", "1h30m", "2d"
// or "1w2d12h": a sequence of decimal numbers, each with a unit of "ns",
// "us" (or "µs"), "ms", "s", "m", "h", "d" (24h) or "w" (7d). Unlike
// time.ParseDuration it rejects negative durations and a bare "0" is the
// only number accepted without a unit.
func ParseDuration(s string) (time.Duration, error) {
	if s == "0" {
		return 0, nil
	}
	if s == "" {
		return 0, errors.New("empty duration")
	}
	if s[0] == '-' || s[0] == '+' {
		return 0, fmt.Errorf("invalid duration %q: sign not allowed", s)
	}
	// Split off the day and week terms; time.ParseDuration does the rest.
	var total time.Duration
	var rest strings.Builder
	for t := s; t != ""; {
		i := 0
		for i < len(t) && (t[i] >= '0' && t[i] <= '9' || t[i] == '.') {
			i++
		}
		j := i
		for j < len(t) && !(t[j] >= '0' && t[j] <= '9' || t[j] == '.') {
			j++
		}
		num, unit := t[:i], t[i:j]
		if num == "" || unit == "" {
			return 0, fmt.Errorf("invalid duration %q", s)
		}
		switch unit {
		case "d", "w":
			f, err := strconv.ParseFloat(num, 64)
			if err != nil {
				return 0, fmt.Errorf("invalid duration %q", s)
			}
			day := 24 * time.Hour
			if unit == "w" {
				day *= 7
			}
			if f > float64(1<<62)/float64(day) {
				return 0, fmt.Errorf("invalid duration %q: too long", s)
			}
			total += time.Duration(f * float64(day))
		default:
			rest.WriteString(t[:j])
		}
		t = t[j:]
	}
	if rest.Len() > 0 {
		d, err := time.ParseDuration(rest.String())
		if err != nil {
			return 0, fmt.Errorf("invalid duration %q", s)
		}
		if total > 1<<62 || d > 1<<62 {
			return 0, fmt.Errorf("invalid duration %q: too long", s)
		}
		total += d
	}
	return total, nil
}

// String formats d with the largest units that represent it exactly, using
// days and weeks: "2d", "1w", "36h", "1h30m".
func (d Duration) String() string {
	x := d.Duration
	if x <= 0 {
		return x.String()
	}
	const (
		day  = 24 * time.Hour
		week = 7 * day
	)
	var b strings.Builder
	if w := x / week; w > 0 && x%day == 0 {
		fmt.Fprintf(&b, "%dw", w)
		x -= w * week
	}
	if dd := x / day; dd > 0 && x%day == 0 {
		fmt.Fprintf(&b, "%dd", dd)
		x -= dd * day
	}
	if x > 0 {
		s := x.String() // "2h0m0s"
		if strings.HasSuffix(s, "m0s") {
			s = s[:len(s)-2]
		}
		if strings.HasSuffix(s, "h0m") {
			s = s[:len(s)-2]
		}
		b.WriteString(s)
	}
	return b.String()
}

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler using [ParseDuration].
func (d *Duration) UnmarshalText(b []byte) error {
	x, err := ParseDuration(string(b))
	if err != nil {
		return err
	}
	d.Duration = x
	return nil
}
