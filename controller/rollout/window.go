package rollout

import (
	"fmt"
	"time"

	"github.com/gitfleet/gitfleet/schema"
)

// window is a compiled schema.MaintenanceWindow.
type window struct {
	loc        *time.Location
	days       uint8 // bit per time.Weekday
	start, end int   // minutes after midnight
}

var weekdays = map[string]time.Weekday{
	"sun": time.Sunday, "mon": time.Monday, "tue": time.Tuesday, "wed": time.Wednesday,
	"thu": time.Thursday, "fri": time.Friday, "sat": time.Saturday,
}

func compileWindow(w schema.MaintenanceWindow) (window, error) {
	cw := window{loc: time.UTC}
	if w.TimeZone != "" {
		loc, err := time.LoadLocation(w.TimeZone)
		if err != nil {
			return cw, fmt.Errorf("maintenance window: %w", err)
		}
		cw.loc = loc
	}
	if len(w.Days) == 0 {
		cw.days = 0x7f
	}
	for _, d := range w.Days {
		wd, ok := weekdays[d]
		if !ok {
			return cw, fmt.Errorf("maintenance window: unknown day %q", d)
		}
		cw.days |= 1 << wd
	}
	var err error
	if cw.start, err = clock(w.Start); err != nil {
		return cw, err
	}
	if cw.end, err = clock(w.End); err != nil {
		return cw, err
	}
	return cw, nil
}

func clock(s string) (int, error) {
	var h, m int
	if len(s) != 5 || s[2] != ':' {
		return 0, fmt.Errorf("maintenance window: bad time %q (want HH:MM)", s)
	}
	if _, err := fmt.Sscanf(s, "%02d:%02d", &h, &m); err != nil || h > 23 || m > 59 {
		return 0, fmt.Errorf("maintenance window: bad time %q (want HH:MM)", s)
	}
	return h*60 + m, nil
}

func (w *window) on(d time.Weekday) bool { return w.days&(1<<d) != 0 }

// open reports whether t is inside w. A window that ends at or before its
// start runs past midnight and belongs to the day it starts on.
func (w *window) open(t time.Time) bool {
	t = t.In(w.loc)
	m := t.Hour()*60 + t.Minute()
	wd := t.Weekday()
	if w.start < w.end {
		return w.on(wd) && m >= w.start && m < w.end
	}
	return w.on(wd) && m >= w.start || w.on((wd+6)%7) && m < w.end
}

// next returns the first start of w after t.
func (w *window) next(t time.Time) time.Time {
	l := t.In(w.loc)
	y, mo, d := l.Date()
	for i := 0; i <= 7; i++ {
		s := time.Date(y, mo, d+i, w.start/60, w.start%60, 0, 0, w.loc)
		if s.After(t) && w.on(s.Weekday()) {
			return s
		}
	}
	return time.Time{}
}

// inWindow reports whether admissions are allowed at t: always without
// windows, otherwise inside any of them.
func (pl *plan) inWindow(t time.Time) bool {
	if len(pl.window) == 0 {
		return true
	}
	for i := range pl.window {
		if pl.window[i].open(t) {
			return true
		}
	}
	return false
}

// nextWindow returns when the next window opens after t.
func (pl *plan) nextWindow(t time.Time) time.Time {
	var best time.Time
	for i := range pl.window {
		if n := pl.window[i].next(t); !n.IsZero() && (best.IsZero() || n.Before(best)) {
			best = n
		}
	}
	return best
}
