package storetest

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/controller/store"
)

// MaxAlerts is the fleet-wide alert listing bound newStore must configure
// (the MaxAlerts option): small, so the suite can overflow it quickly.
const MaxAlerts = 20

// Device clocks in these tests run in 2020: well before the store's clock,
// which caps change times.
var alertBase = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)

func aat(sec int) time.Time { return alertBase.Add(time.Duration(sec) * time.Second) }

// aev is an alert event at second sec of alertBase.
func aev(seq uint64, check, key, kind string, sec int) store.AlertEvent {
	return store.AlertEvent{Seq: seq, Check: check, Key: key, Kind: kind, Time: aat(sec)}
}

func withEvidence(e store.AlertEvent, severity, evidence string) store.AlertEvent {
	e.Severity, e.Evidence = severity, evidence
	return e
}

// testDeviceAlerts walks every kind of event through the store: raise,
// repeat, new evidence, flapping, clear, expire, check error and recovery,
// and events that change nothing.
func testDeviceAlerts(t *testing.T, s store.Store) {
	d := "dev1"
	long := strings.Repeat("x", store.MaxAlertEvidence+500)
	cut := long[:store.MaxAlertEvidence]

	a1 := store.Alert{Device: d, Check: "disk", Key: "/", State: store.AlertOpen, Severity: "warning",
		Evidence: "92% full", Raised: aat(1), Updated: aat(1), Count: 1, Seq: 1}
	a3 := a1
	a3.Evidence, a3.Updated, a3.Count, a3.Seq = "95% full", aat(3), 2, 3
	a4 := a3
	a4.Flapping, a4.Updated, a4.Seq = true, aat(4), 4
	a5 := a4
	a5.State, a5.Closing, a5.Closed, a5.Flapping, a5.Updated, a5.Seq = store.AlertClosed, store.AlertCleared, aat(5), false, aat(5), 5
	b7 := store.Alert{Device: d, Check: "log", Key: "oom", State: store.AlertOpen, Severity: "critical",
		Evidence: "Out of memory: Killed process 42", Raised: aat(7), Updated: aat(7), Count: 1, Seq: 7}
	b8 := b7
	b8.State, b8.Closing, b8.Closed, b8.Updated, b8.Seq = store.AlertClosed, store.AlertExpired, aat(8), aat(8), 8
	c9 := store.Alert{Device: d, Check: "svc", State: store.AlertError, Evidence: "no cgroup for nginx.service", Updated: aat(9), Seq: 9}
	c10 := c9
	c10.State, c10.Closing, c10.Closed, c10.Updated, c10.Seq = store.AlertClosed, store.AlertCheckOK, aat(10), aat(10), 10

	recordAlerts(t, s, d, []store.AlertEvent{
		withEvidence(aev(1, "disk", "/", store.AlertRaised, 1), "warning", "92% full"),
		withEvidence(aev(2, "disk", "/", store.AlertRaised, 2), "", "92% full"), // the same again: no change
		withEvidence(aev(3, "disk", "/", store.AlertRaised, 3), "", "95% full"), // new evidence: counted
		aev(4, "disk", "/", store.AlertFlapping, 4),
		aev(5, "disk", "/", store.AlertCleared, 5),
		aev(6, "disk", "/", store.AlertCleared, 6), // closed already
		withEvidence(aev(7, "log", "oom", store.AlertRaised, 7), "critical", "Out of memory: Killed process 42"),
		aev(8, "log", "oom", store.AlertExpired, 8),
		withEvidence(aev(9, "svc", "", store.AlertCheckError, 9), "", "no cgroup for nginx.service"),
		aev(10, "svc", "", store.AlertCheckOK, 10),
		aev(11, "svc", "", store.AlertCheckOK, 11),   // no error to recover from
		aev(12, "never", "", store.AlertCleared, 12), // nothing to clear: no record
	}, []store.Alert{a1, a3, a4, a5, b7, b8, c9, c10}, 12)

	a13 := a5
	a13.State, a13.Closing, a13.Closed, a13.Evidence, a13.Raised, a13.Updated, a13.Count, a13.Seq =
		store.AlertOpen, "", time.Time{}, "97% full", aat(13), aat(13), 3, 13
	b14 := b8
	b14.State, b14.Closing, b14.Closed, b14.Evidence, b14.Raised, b14.Updated, b14.Count, b14.Seq =
		store.AlertOpen, "", time.Time{}, cut, aat(14), aat(14), 2, 14
	recordAlerts(t, s, d, []store.AlertEvent{
		withEvidence(aev(13, "disk", "/", store.AlertRaised, 13), "", "97% full"), // raised again after clearing
		withEvidence(aev(14, "log", "oom", store.AlertRaised, 14), "", long),      // evidence cut
		withEvidence(aev(15, "log", "oom", store.AlertRaised, 15), "", long),      // the same long evidence: no change
	}, []store.Alert{a13, b14}, 15)

	// Events that changed nothing still record their Seq (and a repeated
	// raise its time) in the record they name.
	b15 := b14
	b15.Updated, b15.Seq = aat(15), 15
	c11 := c10
	c11.Seq = 11
	want := []store.Alert{b15, a13, c11} // by change time: 14, 13, 10
	alertsAre(t, s, store.AlertFilter{Device: d, Limit: 100}, want...)
	alertsAre(t, s, store.AlertFilter{Limit: 100}, want...)
	alertsAre(t, s, store.AlertFilter{Device: "other", Limit: 100})
}

// testDeviceAlertsResend: a batch sent again changes nothing and answers
// the same last Seq; an overlapping batch applies only its new events.
func testDeviceAlertsResend(t *testing.T, s store.Store) {
	d := "dev1"
	recordAlerts(t, s, d, nil, nil, 0)
	// Applied again, the first event would count a raise (other evidence
	// than the record's now).
	batch := []store.AlertEvent{
		withEvidence(aev(1, "disk", "/", store.AlertRaised, 1), "", "first"),
		aev(2, "disk", "/data", store.AlertRaised, 2),
		withEvidence(aev(3, "disk", "/", store.AlertRaised, 3), "", "second"),
	}
	root1 := store.Alert{Device: d, Check: "disk", Key: "/", State: store.AlertOpen, Evidence: "first", Raised: aat(1), Updated: aat(1), Count: 1, Seq: 1}
	data := store.Alert{Device: d, Check: "disk", Key: "/data", State: store.AlertOpen, Raised: aat(2), Updated: aat(2), Count: 1, Seq: 2}
	root3 := root1
	root3.Evidence, root3.Updated, root3.Count, root3.Seq = "second", aat(3), 2, 3
	recordAlerts(t, s, d, batch, []store.Alert{root1, data, root3}, 3)
	recordAlerts(t, s, d, batch, nil, 3)
	recordAlerts(t, s, d, batch[1:], nil, 3)
	recordAlerts(t, s, d, nil, nil, 3)
	alertsAre(t, s, store.AlertFilter{Limit: 10}, root3, data)

	// The device sent 1…3 and 4…5, lost the answer, and sends 1…5.
	data4 := data
	data4.State, data4.Closing, data4.Closed, data4.Updated, data4.Seq = store.AlertClosed, store.AlertCleared, aat(4), aat(4), 4
	root5 := root3
	root5.State, root5.Closing, root5.Closed, root5.Updated, root5.Seq = store.AlertClosed, store.AlertCleared, aat(5), aat(5), 5
	overlap := append(slices.Clone(batch), aev(4, "disk", "/data", store.AlertCleared, 4), aev(5, "disk", "/", store.AlertCleared, 5))
	recordAlerts(t, s, d, overlap, []store.Alert{data4, root5}, 5)
	recordAlerts(t, s, d, overlap, nil, 5)
	alertsAre(t, s, store.AlertFilter{Limit: 10}, root5, data4)
	recordAlerts(t, s, "dev2", nil, nil, 0) // another device's Seq is its own
}

// testDeviceAlertsRace: replicas receiving the same batch at once apply
// each event once; each change goes to exactly one caller, and every
// caller answers the same last Seq.
func testDeviceAlertsRace(t *testing.T, s store.Store) {
	ctx := t.Context()
	round := func(seq uint64, sec int) []store.AlertEvent {
		var evs []store.AlertEvent
		for i, kind := range []string{store.AlertRaised, store.AlertRaised, store.AlertCleared, store.AlertRaised, store.AlertFlapping, store.AlertCheckError} {
			for k := range 3 {
				e := aev(seq, fmt.Sprint("check", i%3), fmt.Sprint("key", k), kind, sec)
				e.Evidence = fmt.Sprint("seen at ", sec)
				evs = append(evs, e)
				seq++
				sec++
			}
		}
		return evs
	}
	for r := range 3 {
		batch := round(uint64(1+r*18), r*100)
		last := batch[len(batch)-1].Seq
		// The same batch applied once, to another device, says what should
		// change.
		want, gotLast, err := s.RecordAlerts(ctx, "reference", batch)
		must(t, "RecordAlerts", err)
		if gotLast != last || len(want) == 0 {
			t.Fatalf("RecordAlerts(reference) = %d changes, last %d; want some, last %d", len(want), gotLast, last)
		}
		for i := range want {
			want[i].Device = "dev"
		}
		var mu sync.Mutex
		var got []store.Alert
		winners := 0
		race(t, func(int) error {
			changed, l, err := s.RecordAlerts(ctx, "dev", batch)
			if err != nil {
				return err
			}
			if l != last {
				return fmt.Errorf("RecordAlerts in a race returned last seq %d, want %d", l, last)
			}
			mu.Lock()
			defer mu.Unlock()
			got = append(got, changed...)
			if len(changed) > 0 {
				winners++
			}
			return nil
		})
		slices.SortStableFunc(got, func(a, b store.Alert) int { return cmp.Compare(a.Seq, b.Seq) })
		diff(t, fmt.Sprintf("round %d: changes returned to %d racers together", r, racers), want, got)
		if winners != 1 {
			t.Errorf("round %d: %d racers got changes; want 1 (a batch is applied whole, once)", r, winners)
		}
	}
	ref, err := s.ListAlerts(ctx, store.AlertFilter{Device: "reference", Limit: 100})
	must(t, "ListAlerts", err)
	for i := range ref {
		ref[i].Device = "dev"
	}
	alertsAre(t, s, store.AlertFilter{Device: "dev", Limit: 100}, ref...)
}

// testDeviceAlertsList: filters, limit and order (newest change first;
// equal times by descending "device|check|key"; a device's clock neither
// pins records on top nor moves them back).
func testDeviceAlertsList(t *testing.T, s store.Store) {
	ctx := t.Context()
	type rec struct {
		device, check, key, severity string
		kind                         string // the last event
		sec                          int
	}
	recs := []rec{
		{"d1", "disk", "/", "warning", store.AlertRaised, 10},
		{"d1", "disk", "/data", "warning", store.AlertRaised, 10}, // same time as d1 disk /
		{"d1", "log", "oom", "critical", store.AlertRaised, 30},
		{"d2", "disk", "/", "critical", store.AlertCleared, 20},
		{"d2", "svc", "nginx", "", store.AlertCheckError, 40},
		{"d3", "log", "oom", "critical", store.AlertExpired, 50},
		{"d3", "disk", "/", "info", store.AlertRaised, 5},
	}
	seqs := map[string]uint64{}
	for _, r := range recs {
		seqs[r.device]++
		e := aev(seqs[r.device], r.check, r.key, store.AlertRaised, r.sec-1)
		e.Severity = r.severity
		if r.kind != store.AlertRaised {
			seqs[r.device]++
			e2 := aev(seqs[r.device], r.check, r.key, r.kind, r.sec)
			recordSeq(t, s, r.device, []store.AlertEvent{e, e2}, seqs[r.device])
		} else {
			e.Time = aat(r.sec)
			recordSeq(t, s, r.device, []store.AlertEvent{e}, seqs[r.device])
		}
	}
	names := func(f store.AlertFilter) []string {
		t.Helper()
		got, err := s.ListAlerts(ctx, f)
		must(t, "ListAlerts", err)
		var out []string
		for _, a := range got {
			if !f.Matches(a) {
				t.Errorf("ListAlerts(%+v) returned %+v, which the filter does not match", f, a)
			}
			out = append(out, a.Device+" "+a.Check+" "+a.Key)
		}
		return out
	}
	all := []string{"d3 log oom", "d2 svc nginx", "d1 log oom", "d2 disk /", "d1 disk /data", "d1 disk /", "d3 disk /"}
	for _, tc := range []struct {
		f    store.AlertFilter
		want []string
	}{
		{store.AlertFilter{Limit: 100}, all},
		{store.AlertFilter{Limit: 3}, all[:3]},
		{store.AlertFilter{Limit: store.MaxPage + 1}, all}, // clamped
		{store.AlertFilter{Device: "d1", Limit: 100}, []string{"d1 log oom", "d1 disk /data", "d1 disk /"}},
		{store.AlertFilter{Device: "d1", Limit: 2}, []string{"d1 log oom", "d1 disk /data"}},
		{store.AlertFilter{Device: "d9", Limit: 100}, nil},
		{store.AlertFilter{Check: "disk", Limit: 100}, []string{"d2 disk /", "d1 disk /data", "d1 disk /", "d3 disk /"}},
		{store.AlertFilter{Severity: "critical", Limit: 100}, []string{"d3 log oom", "d1 log oom", "d2 disk /"}},
		{store.AlertFilter{State: store.AlertOpen, Limit: 100}, []string{"d1 log oom", "d1 disk /data", "d1 disk /", "d3 disk /"}},
		{store.AlertFilter{State: store.AlertClosed, Limit: 100}, []string{"d3 log oom", "d2 disk /"}},
		{store.AlertFilter{State: store.AlertError, Limit: 100}, []string{"d2 svc nginx"}},
		{store.AlertFilter{Device: "d1", Check: "disk", State: store.AlertOpen, Limit: 1}, []string{"d1 disk /data"}},
		{store.AlertFilter{Check: "log", State: store.AlertOpen, Severity: "critical", Limit: 100}, []string{"d1 log oom"}},
	} {
		diff(t, fmt.Sprintf("ListAlerts(%+v)", tc.f), tc.want, names(tc.f))
	}

	// A device whose clock went back: its change keeps its place (d1 disk /
	// changed at 10, now cleared "at 1").
	recordSeq(t, s, "d1", []store.AlertEvent{aev(seqs["d1"]+1, "disk", "/", store.AlertCleared, 1)}, seqs["d1"]+1)
	seqs["d1"]++
	diff(t, "ListAlerts after a change dated back", all, names(store.AlertFilter{Limit: 100}))
	// A clock in the future counts as the store's clock: a change that
	// happens after it in real time comes first.
	future := aev(seqs["d2"]+1, "disk", "/", store.AlertRaised, 0)
	future.Time = time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC)
	recordSeq(t, s, "d2", []store.AlertEvent{future}, seqs["d2"]+1)
	later := store.AlertEvent{Seq: seqs["d3"] + 1, Check: "zz", Kind: store.AlertRaised, Time: time.Now()}
	recordSeq(t, s, "d3", []store.AlertEvent{later}, seqs["d3"]+1)
	diff(t, "ListAlerts after a change dated in the future", []string{"d3 zz ", "d2 disk /", "d3 log oom"},
		names(store.AlertFilter{Limit: 3}))
}

// testDeviceAlertsPerDevice: a device keeps at most MaxAlertsPerDevice
// records; beyond it, the closed ones go first, then the least recently
// changed.
func testDeviceAlertsPerDevice(t *testing.T, s store.Store) {
	ctx := t.Context()
	d := "busy"
	check := func(i int) string { return string(rune('a' + i*2/store.MaxAlertsPerDevice)) } // two halves
	raise := func(i int) store.AlertEvent {
		return aev(uint64(i+1), check(i), fmt.Sprintf("k%04d", i), store.AlertRaised, i)
	}
	var batch []store.AlertEvent
	for i := range store.MaxAlertsPerDevice {
		if batch = append(batch, raise(i)); len(batch) == store.MaxAlertEvents || i == store.MaxAlertsPerDevice-1 {
			changed, _, err := s.RecordAlerts(ctx, d, batch)
			must(t, "RecordAlerts", err)
			if len(changed) != len(batch) {
				t.Fatalf("RecordAlerts(%d new alerts) returned %d changes", len(batch), len(changed))
			}
			batch = nil
		}
	}
	seq := uint64(store.MaxAlertsPerDevice)
	count := func() int {
		t.Helper()
		n := 0
		for _, c := range []string{"a", "b"} {
			got, err := s.ListAlerts(ctx, store.AlertFilter{Device: d, Check: c, Limit: store.MaxPage})
			must(t, "ListAlerts", err)
			n += len(got)
		}
		return n
	}
	has := func(key string, want bool) {
		t.Helper()
		var i int
		fmt.Sscanf(key, "k%d", &i)
		got, err := s.ListAlerts(ctx, store.AlertFilter{Device: d, Check: check(i), Limit: store.MaxPage})
		must(t, "ListAlerts", err)
		found := slices.ContainsFunc(got, func(a store.Alert) bool { return a.Key == key })
		if found != want {
			t.Errorf("record %s kept = %v, want %v", key, found, want)
		}
	}
	if n := count(); n != store.MaxAlertsPerDevice {
		t.Fatalf("device holds %d records, want %d", n, store.MaxAlertsPerDevice)
	}
	// Close two recent ones; two new records push exactly those out.
	seq += 2
	recordSeq(t, s, d, []store.AlertEvent{
		aev(seq-1, "b", "k1000", store.AlertCleared, 2000),
		aev(seq, "a", "k0010", store.AlertCleared, 2001),
	}, seq)
	seq += 2
	if changed := recordSeq(t, s, d, []store.AlertEvent{
		aev(seq-1, "new", "n1", store.AlertRaised, 2002),
		aev(seq, "new", "n2", store.AlertRaised, 2003),
	}, seq); len(changed) != 2 {
		t.Errorf("RecordAlerts(2 new alerts on a full device) returned %d changes, want 2", len(changed))
	}
	has("k1000", false)
	has("k0010", false)
	has("k0000", true)
	got, err := s.ListAlerts(ctx, store.AlertFilter{Device: d, State: store.AlertClosed, Limit: 10})
	must(t, "ListAlerts", err)
	diff(t, "closed records of a full device", []store.Alert(nil), got)
	// With no closed record left, the least recently changed open one goes.
	seq++
	recordSeq(t, s, d, []store.AlertEvent{aev(seq, "new", "n3", store.AlertRaised, 2004)}, seq)
	has("k0000", false)
	has("k0001", true)
	got, err = s.ListAlerts(ctx, store.AlertFilter{Device: d, Check: "new", Limit: 10})
	must(t, "ListAlerts", err)
	if len(got) != 3 {
		t.Errorf("new records kept: %d, want 3", len(got))
	}
	if n := count() + len(got); n != store.MaxAlertsPerDevice {
		t.Errorf("device holds %d records, want %d", n, store.MaxAlertsPerDevice)
	}
	// Another device is not affected, and the fleet-wide listing stays
	// within its own bound.
	recordSeq(t, s, "quiet", []store.AlertEvent{aev(1, "disk", "/", store.AlertRaised, 3000)}, 1)
	all, err := s.ListAlerts(ctx, store.AlertFilter{Limit: store.MaxPage})
	must(t, "ListAlerts", err)
	if len(all) != MaxAlerts || all[0].Device != "quiet" {
		t.Errorf("fleet-wide listing has %d records (first %+v), want %d, the quiet device's first", len(all), all[0], MaxAlerts)
	}
}

// testDeviceAlertsListBound: the fleet-wide listing keeps the MaxAlerts
// most recently changed records; a device's own listing keeps all of them,
// and a record that changes again comes back.
func testDeviceAlertsListBound(t *testing.T, s store.Store) {
	ctx := t.Context()
	var want []string // newest first
	for dev := range 3 {
		var evs []store.AlertEvent
		for i := range 10 {
			evs = append(evs, aev(uint64(i+1), "c", fmt.Sprint("k", i), store.AlertRaised, dev*100+i))
			want = append([]string{fmt.Sprintf("d%d c k%d", dev, i)}, want...)
		}
		recordSeq(t, s, fmt.Sprint("d", dev), evs, 10)
	}
	names := func(f store.AlertFilter) []string {
		t.Helper()
		got, err := s.ListAlerts(ctx, f)
		must(t, "ListAlerts", err)
		var out []string
		for _, a := range got {
			out = append(out, a.Device+" "+a.Check+" "+a.Key)
		}
		return out
	}
	diff(t, "fleet-wide listing beyond MaxAlerts", want[:MaxAlerts], names(store.AlertFilter{Limit: 100}))
	diff(t, "listing of a device that fell out of it", want[20:], names(store.AlertFilter{Device: "d0", Limit: 100}))
	recordSeq(t, s, "d0", []store.AlertEvent{aev(11, "c", "k3", store.AlertCleared, 1000)}, 11)
	diff(t, "fleet-wide listing after an old record changed", append([]string{"d0 c k3"}, want[:MaxAlerts-1]...),
		names(store.AlertFilter{Limit: 100}))
}

// testDeviceAlertsInvalid: bad input is refused with ErrInvalid and
// nothing of it is written.
func testDeviceAlertsInvalid(t *testing.T, s store.Store) {
	ctx := t.Context()
	ok := aev(1, "disk", "/", store.AlertRaised, 1)
	with := func(f func(e *store.AlertEvent)) store.AlertEvent {
		e := aev(2, "disk", "/x", store.AlertRaised, 2)
		f(&e)
		return e
	}
	tooMany := make([]store.AlertEvent, store.MaxAlertEvents+1)
	for i := range tooMany {
		tooMany[i] = aev(uint64(i+1), "c", "k", store.AlertRaised, i)
	}
	for _, tc := range []struct {
		name   string
		device string
		events []store.AlertEvent
	}{
		{"no device", "", []store.AlertEvent{ok}},
		{"| in device", "a|b", []store.AlertEvent{ok}},
		{"braces in device", "{d}", []store.AlertEvent{ok}},
		{"long device", strings.Repeat("d", 254), []store.AlertEvent{ok}},
		{"seq 0", "d", []store.AlertEvent{with(func(e *store.AlertEvent) { e.Seq = 0 })}},
		{"seq not increasing", "d", []store.AlertEvent{ok, with(func(e *store.AlertEvent) { e.Seq = 1 })}},
		{"no check", "d", []store.AlertEvent{ok, with(func(e *store.AlertEvent) { e.Check = "" })}},
		{"| in check", "d", []store.AlertEvent{ok, with(func(e *store.AlertEvent) { e.Check = "a|b" })}},
		{"long key", "d", []store.AlertEvent{ok, with(func(e *store.AlertEvent) { e.Key = strings.Repeat("k", 513) })}},
		{"NUL in key", "d", []store.AlertEvent{ok, with(func(e *store.AlertEvent) { e.Key = "a\x00b" })}},
		{"bad kind", "d", []store.AlertEvent{ok, with(func(e *store.AlertEvent) { e.Kind = "opened" })}},
		{"bad severity", "d", []store.AlertEvent{ok, with(func(e *store.AlertEvent) { e.Severity = "fatal" })}},
		{"too many", "d", tooMany},
	} {
		if _, _, err := s.RecordAlerts(ctx, tc.device, tc.events); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("RecordAlerts(%s): err = %v, want ErrInvalid", tc.name, err)
		}
	}
	recordAlerts(t, s, "d", nil, nil, 0) // the valid first events were not applied either
	alertsAre(t, s, store.AlertFilter{Limit: 10})
	for _, f := range []store.AlertFilter{{Limit: 0}, {Limit: -1}, {State: "raised", Limit: 10}} {
		if _, err := s.ListAlerts(ctx, f); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("ListAlerts(%+v): err = %v, want ErrInvalid", f, err)
		}
	}
}

// recordAlerts calls RecordAlerts and checks what it returns.
func recordAlerts(t *testing.T, s store.Store, device string, events []store.AlertEvent, want []store.Alert, wantLast uint64) {
	t.Helper()
	changed := recordSeq(t, s, device, events, wantLast)
	diff(t, fmt.Sprintf("RecordAlerts(%s, %d events) changes", device, len(events)), want, changed)
}

// recordSeq calls RecordAlerts and checks the last Seq it returns.
func recordSeq(t *testing.T, s store.Store, device string, events []store.AlertEvent, wantLast uint64) []store.Alert {
	t.Helper()
	changed, last, err := s.RecordAlerts(t.Context(), device, events)
	must(t, "RecordAlerts", err)
	if last != wantLast {
		t.Errorf("RecordAlerts(%s, %d events) last seq = %d, want %d", device, len(events), last, wantLast)
	}
	return changed
}

func alertsAre(t *testing.T, s store.Store, f store.AlertFilter, want ...store.Alert) {
	t.Helper()
	got, err := s.ListAlerts(t.Context(), f)
	must(t, "ListAlerts", err)
	diff(t, fmt.Sprintf("ListAlerts(%+v)", f), want, got)
}
