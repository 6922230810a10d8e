package storetest

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/controller/store"
)

// cdigest is a configuration digest made of one repeated hex digit.
func cdigest(c byte) string { return "sha256:" + strings.Repeat(string(c), 64) }

// creport is a device's configuration report at second sec of base.
func creport(device, digest, state string, sec int) store.ConfigStatus {
	return store.ConfigStatus{Device: device, Digest: digest, State: state, Via: "agent", Reported: at(sec)}
}

// recorded is r as the store records it: Since as given.
func recorded(r store.ConfigStatus, since time.Time) store.ConfigStatus {
	r.Since = since
	return r
}

// testConfigStatus walks one device's reports through the store: the
// changed flag for each field, Since kept while Digest and State stay and
// reset when either changes, a slower clock moving Since back, the store's
// clock for a zero Reported, and invalid UTF-8.
func testConfigStatus(t *testing.T, s store.Store) {
	d := "gw-01"
	d1, d2 := cdigest('1'), cdigest('2')
	r1 := creport(d, d1, "applied", 1)
	failed := func(sec int, output string) store.ConfigStatus {
		r := creport(d, d1, "failed", sec)
		r.Script, r.ExitCode, r.Output = "10-network", 2, output
		return r
	}
	drifted := func(sec int, file string) store.ConfigStatus {
		r := creport(d, d2, "drifted", sec)
		r.FileDigest = file
		return r
	}
	steps := []struct {
		name     string
		report   store.ConfigStatus
		changed  bool
		sinceSec int
	}{
		{"first report", r1, true, 1},
		{"same report later", creport(d, d1, "applied", 2), false, 1},
		{"same report once more", creport(d, d1, "applied", 3), false, 1},
		{"via a stock client", func() store.ConfigStatus { r := creport(d, d1, "applied", 4); r.Via = "mender"; return r }(), true, 1},
		{"no via", func() store.ConfigStatus { r := creport(d, d1, "applied", 5); r.Via = ""; return r }(), true, 1},
		{"failed", failed(6, "ip: cannot find device eth9"), true, 6},
		{"failed, same", failed(7, "ip: cannot find device eth9"), false, 6},
		{"failed, other output", failed(8, "ip: RTNETLINK answers: File exists"), true, 6},
		{"failed, other exit code", func() store.ConfigStatus {
			r := failed(9, "ip: RTNETLINK answers: File exists")
			r.ExitCode = 1
			return r
		}(), true, 6},
		{"failed, other script", func() store.ConfigStatus {
			r := failed(10, "ip: RTNETLINK answers: File exists")
			r.Script, r.ExitCode = "20-ntp", 1
			return r
		}(), true, 6},
		{"applied again", creport(d, d1, "applied", 11), true, 11},
		{"new digest", creport(d, d2, "applied", 12), true, 12},
		{"drifted", drifted(13, cdigest('a')), true, 13},
		{"drifted, other file", drifted(14, cdigest('b')), true, 13},
		{"drifted, same", drifted(15, cdigest('b')), false, 13},
		// A replica whose clock is behind: the last report still wins, and
		// Since is never after Reported.
		{"slower clock", drifted(12, cdigest('b')), false, 12},
		{"back in step", drifted(16, cdigest('b')), false, 12},
	}
	other := creport("gw-02", d1, "applied", 0) // untouched by every step
	setConfig(t, s, other, true)
	for _, step := range steps {
		setConfig(t, s, step.report, step.changed)
		configIs(t, s, step.name, []string{d, "gw-02"}, recorded(step.report, at(step.sinceSec)), recorded(other, at(0)))
	}

	// A zero Reported is the store's clock; Since stays (same digest and
	// state, recorded before now).
	r := drifted(0, cdigest('b'))
	r.Reported = time.Time{}
	before := time.Now()
	setConfig(t, s, r, false)
	after := time.Now()
	got := configOf(t, s, d)[d]
	if got.Reported.Before(before) || got.Reported.After(after) {
		t.Errorf("SetConfigStatus with a zero Reported recorded %v, want the store's clock (between %v and %v)", got.Reported, before, after)
	}
	if !got.Since.Equal(at(12)) {
		t.Errorf("Since after a report at the store's clock = %v, want %v (kept)", got.Since, at(12))
	}

	// A clock behind by a nanosecond moves Since back by a nanosecond.
	r = drifted(12, cdigest('b'))
	r.Reported = r.Reported.Add(-time.Nanosecond)
	setConfig(t, s, r, false)
	configIs(t, s, "a report a nanosecond before Since", []string{d}, recorded(r, r.Reported))

	// Invalid UTF-8 (a script's output cut inside a character) is recorded
	// as U+FFFD, and the same report again is no change.
	cut := failed(20, "Ausgabe: Schnittstelle gel\xc3")
	setConfig(t, s, cut, true)
	setConfig(t, s, failed(21, "Ausgabe: Schnittstelle gel\xc3"), false)
	want := failed(21, "Ausgabe: Schnittstelle gel\uFFFD")
	configIs(t, s, "invalid UTF-8 in the output", []string{d}, recorded(want, at(20)))
}

// testConfigStatusBatch reads many devices at once: none, one, and
// thousands over several pages, with absent and repeated names.
func testConfigStatusBatch(t *testing.T, s store.Store) {
	ctx := t.Context()
	got, err := s.ConfigStatusOf(ctx, nil)
	must(t, "ConfigStatusOf(nil)", err)
	if got == nil || len(got) != 0 {
		t.Errorf("ConfigStatusOf(nil) = %#v, want an empty map", got)
	}
	configIs(t, s, "nothing reported", []string{"gw-0", "", "{x}"})

	// 2.5 pages of names, every fifth never reported.
	n := 2*store.MaxPage + store.MaxPage/2
	names := make([]string, n)
	reports := make(map[string]store.ConfigStatus, n)
	var written []store.ConfigStatus
	for i := range names {
		names[i] = fmt.Sprintf("gw-%04d", i)
		if i%5 == 4 {
			continue
		}
		r := creport(names[i], cdigest("0123456789abcdef"[i%16]), []string{"applied", "failed", "drifted"}[i%3], i%60)
		if r.State == "failed" {
			r.Script, r.ExitCode, r.Output = "50-app", i%7+1, fmt.Sprint("exit ", i)
		}
		reports[names[i]] = recorded(r, r.Reported)
		written = append(written, r)
	}
	// Written by a few goroutines, as several replicas would.
	const writers = 8
	var wg sync.WaitGroup
	errs := make([]error, writers)
	for w := range writers {
		wg.Go(func() {
			for i := w; i < len(written); i += writers {
				if _, err := s.SetConfigStatus(ctx, written[i]); err != nil {
					errs[w] = fmt.Errorf("SetConfigStatus(%s): %w", written[i].Device, err)
					return
				}
			}
		})
	}
	wg.Wait()
	must(t, "writing reports", errors.Join(errs...))

	one := configOf(t, s, names[0])
	diff(t, "ConfigStatusOf(one device)", map[string]store.ConfigStatus{names[0]: reports[names[0]]}, one)
	configIs(t, s, "an absent device", []string{names[4]})

	// Every name, some twice, and a name no report can have.
	ask := append(append([]string{}, names...), names[:10]...)
	ask = append(ask, "")
	all := configOf(t, s, ask...)
	if len(all) != len(reports) {
		t.Errorf("ConfigStatusOf(%d names) returned %d devices, want %d", len(ask), len(all), len(reports))
	}
	diff(t, fmt.Sprintf("ConfigStatusOf(%d names)", len(ask)), reports, all)
}

// testConfigStatusInvalid: bad reports are refused with ErrInvalid and
// nothing of them is written, not even over a device's earlier report.
func testConfigStatusInvalid(t *testing.T, s store.Store) {
	ctx := t.Context()
	good := creport("gw-01", cdigest('1'), "applied", 1)
	setConfig(t, s, good, true)
	with := func(f func(r *store.ConfigStatus)) store.ConfigStatus {
		r := creport("gw-01", cdigest('2'), "failed", 2)
		r.Script, r.ExitCode, r.Output = "10-network", 1, "failed"
		f(&r)
		return r
	}
	for _, tc := range []struct {
		name   string
		report store.ConfigStatus
	}{
		{"no device", with(func(r *store.ConfigStatus) { r.Device = "" })},
		{"braces in device", with(func(r *store.ConfigStatus) { r.Device = "gw-{01}" })},
		{"NUL in device", with(func(r *store.ConfigStatus) { r.Device = "gw\x0001" })},
		{"long device", with(func(r *store.ConfigStatus) { r.Device = strings.Repeat("d", 254) })},
		{"no state", with(func(r *store.ConfigStatus) { r.State = "" })},
		{"unknown state", with(func(r *store.ConfigStatus) { r.State = "ok" })},
		{"no digest", with(func(r *store.ConfigStatus) { r.Digest = "" })},
		{"md5 digest", with(func(r *store.ConfigStatus) { r.Digest = "md5:" + strings.Repeat("1", 32) })},
		{"short digest", with(func(r *store.ConfigStatus) { r.Digest = cdigest('1')[:70] })},
		{"long output", with(func(r *store.ConfigStatus) { r.Output = strings.Repeat("o", 4097) })},
		{"long script", with(func(r *store.ConfigStatus) { r.Script = strings.Repeat("s", 256) })},
		{"long file digest", with(func(r *store.ConfigStatus) { r.FileDigest = cdigest('f') + "0" })},
		{"long via", with(func(r *store.ConfigStatus) { r.Via = strings.Repeat("v", 17) })},
	} {
		changed, err := s.SetConfigStatus(ctx, tc.report)
		if !errors.Is(err, store.ErrInvalid) || changed {
			t.Errorf("SetConfigStatus(%s) = %v, %v; want false, ErrInvalid", tc.name, changed, err)
		}
		configIs(t, s, "after a refused report ("+tc.name+")", []string{"gw-01", tc.report.Device}, recorded(good, at(1)))
	}
}

// testConfigStatusRace: replicas recording reports of one device at once.
// Identical reports are one change, and Since is the earliest of their
// times whatever order they land in; different reports leave one of them,
// whole, and readers never see a mix.
func testConfigStatusRace(t *testing.T, s store.Store) {
	ctx := t.Context()
	var changes atomic.Int64
	race(t, func(i int) error {
		changed, err := s.SetConfigStatus(ctx, creport("same", cdigest('1'), "applied", racers-i))
		if changed {
			changes.Add(1)
		}
		return err
	})
	if n := changes.Load(); n != 1 {
		t.Errorf("%d racers sent the same report: %d saw a change, want 1", racers, n)
	}
	got := configOf(t, s, "same")["same"]
	if !got.Since.Equal(at(1)) {
		t.Errorf("Since after racing identical reports at %v…%v = %v, want the earliest", at(1), at(racers), got.Since)
	}

	// Each racer sends its own reports; a reader checks every record it
	// sees is one report, whole.
	const rounds = 10
	report := func(i, j int) store.ConfigStatus {
		r := creport("mixed", cdigest("0123456789abcdef"[i%16]), "failed", 100+j)
		r.Script, r.ExitCode, r.Output = fmt.Sprintf("s-%d-%d", i, j), i*100+j, fmt.Sprintf("out-%d-%d", i, j)
		return r
	}
	whole := func(r store.ConfigStatus) error {
		var i, j int
		if _, err := fmt.Sscanf(r.Script, "s-%d-%d", &i, &j); err != nil {
			return fmt.Errorf("recorded script %q: %v", r.Script, err)
		}
		want := report(i, j)
		if r.Digest != want.Digest || r.ExitCode != want.ExitCode || r.Output != want.Output || !r.Reported.Equal(want.Reported) {
			return fmt.Errorf("recorded report %+v mixes reports (script %s's is %+v)", r, r.Script, want)
		}
		return nil
	}
	stop := make(chan struct{})
	readErr := make(chan error, 1)
	go func() {
		defer close(readErr)
		for {
			select {
			case <-stop:
				return
			default:
			}
			m, err := s.ConfigStatusOf(ctx, []string{"mixed", "same"})
			if err == nil {
				if r, ok := m["mixed"]; ok {
					err = whole(r)
				}
			}
			if err != nil {
				readErr <- err
				return
			}
		}
	}()
	race(t, func(i int) error {
		for j := range rounds {
			if _, err := s.SetConfigStatus(ctx, report(i, j)); err != nil {
				return err
			}
		}
		return nil
	})
	close(stop)
	if err := <-readErr; err != nil {
		t.Errorf("reading while racers write: %v", err)
	}
	got = configOf(t, s, "mixed")["mixed"]
	if err := whole(got); err != nil {
		t.Error(err)
	}
	if got.Since.After(got.Reported) {
		t.Errorf("Since %v after Reported %v", got.Since, got.Reported)
	}
}

// configRestart records reports before a restart; the returned function
// checks them after it.
func configRestart(t *testing.T, s store.Store) (after func(s store.Store)) {
	r := creport("gw-01", cdigest('1'), "failed", 1)
	r.Script, r.ExitCode, r.Output, r.Via = "10-network", 3, "no such device", "mender"
	setConfig(t, s, r, true)
	setConfig(t, s, creport("gw-02", cdigest('2'), "applied", 1), true)
	setConfig(t, s, creport("gw-02", cdigest('2'), "applied", 2), false)
	return func(s store.Store) {
		configIs(t, s, "after restart", []string{"gw-01", "gw-02", "gw-03"},
			recorded(r, at(1)), recorded(creport("gw-02", cdigest('2'), "applied", 2), at(1)))
		setConfig(t, s, creport("gw-02", cdigest('2'), "applied", 3), false)
		configIs(t, s, "a report after restart", []string{"gw-02"}, recorded(creport("gw-02", cdigest('2'), "applied", 3), at(1)))
	}
}

func setConfig(t *testing.T, s store.Store, r store.ConfigStatus, wantChanged bool) {
	t.Helper()
	changed, err := s.SetConfigStatus(t.Context(), r)
	must(t, "SetConfigStatus", err)
	if changed != wantChanged {
		t.Errorf("SetConfigStatus(%+v) changed = %v, want %v", r, changed, wantChanged)
	}
}

func configOf(t *testing.T, s store.Store, devices ...string) map[string]store.ConfigStatus {
	t.Helper()
	got, err := s.ConfigStatusOf(t.Context(), devices)
	must(t, "ConfigStatusOf", err)
	if got == nil {
		t.Fatalf("ConfigStatusOf(%q) returned a nil map", devices)
	}
	return got
}

// configIs checks that ConfigStatusOf(devices) returns exactly want.
func configIs(t *testing.T, s store.Store, what string, devices []string, want ...store.ConfigStatus) {
	t.Helper()
	m := make(map[string]store.ConfigStatus, len(want))
	for _, w := range want {
		m[w.Device] = w
	}
	diff(t, fmt.Sprintf("ConfigStatusOf(%q): %s", devices, what), m, configOf(t, s, devices...))
}
