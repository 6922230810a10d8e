package store

import (
	"strings"
	"testing"
	"time"
)

// Apply is the one alert state machine both stores run.
func TestAlertApply(t *testing.T) {
	at := func(s int) time.Time { return time.Date(2026, 1, 1, 0, 0, s, 0, time.UTC) }
	ev := func(seq uint64, kind, evidence string) AlertEvent {
		return AlertEvent{Seq: seq, Check: "c", Key: "k", Kind: kind, Severity: "error", Evidence: evidence, Time: at(int(seq))}
	}
	type step struct {
		e       AlertEvent
		changed bool
		state   string
		count   int64
	}
	for name, steps := range map[string][]step{
		"raise, repeat, clear, clear again": {
			{ev(1, AlertRaised, "x"), true, AlertOpen, 1},
			{ev(2, AlertRaised, "x"), false, AlertOpen, 1},
			{ev(3, AlertCleared, ""), true, AlertClosed, 1},
			{ev(4, AlertCleared, ""), false, AlertClosed, 1},
		},
		"a new occurrence while open counts": {
			{ev(1, AlertRaised, "x"), true, AlertOpen, 1},
			{ev(2, AlertRaised, "y"), true, AlertOpen, 2},
		},
		"flapping, expired and check_ok without anything raised change nothing": {
			{ev(1, AlertFlapping, ""), false, "", 0},
			{ev(2, AlertExpired, ""), false, "", 0},
			{ev(3, AlertCheckOK, ""), false, "", 0},
		},
		"check error and recovery": {
			{ev(1, AlertCheckError, "no such interface"), true, AlertError, 0},
			{ev(2, AlertCheckOK, ""), true, AlertClosed, 0},
		},
		"a long evidence repeated counts once": {
			{ev(1, AlertRaised, strings.Repeat("e", 2*MaxAlertEvidence)), true, AlertOpen, 1},
			{ev(2, AlertRaised, strings.Repeat("e", 2*MaxAlertEvidence)), false, AlertOpen, 1},
		},
	} {
		var a Alert
		for i, s := range steps {
			var changed bool
			a, changed = s.e.Apply("dev", a)
			if changed != s.changed || a.State != s.state || a.Count != s.count || a.Seq != s.e.Seq {
				t.Errorf("%s: step %d (%s): changed %v state %q count %d seq %d; want %v %q %d %d",
					name, i, s.e.Kind, changed, a.State, a.Count, a.Seq, s.changed, s.state, s.count, s.e.Seq)
			}
			if len(a.Evidence) > MaxAlertEvidence {
				t.Errorf("%s: evidence kept at %d bytes", name, len(a.Evidence))
			}
		}
	}
}
