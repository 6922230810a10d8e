package schema

import (
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/schema/didyoumean"
)

func TestParseDuration(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    time.Duration
		wantErr bool
	}{
		{in: "0", want: 0},
		{in: "90m", want: 90 * time.Minute},
		{in: "1h30m", want: 90 * time.Minute},
		{in: "2d", want: 48 * time.Hour},
		{in: "1w", want: 7 * 24 * time.Hour},
		{in: "1w2d12h", want: (9*24 + 12) * time.Hour},
		{in: "1.5d", want: 36 * time.Hour},
		{in: "500ms", want: 500 * time.Millisecond},
		{in: "", wantErr: true},
		{in: "-1h", wantErr: true},
		{in: "2", wantErr: true},
		{in: "d", wantErr: true},
		{in: "2x", wantErr: true},
		{in: "2 days", wantErr: true},
		{in: "99999999999999w", wantErr: true},
	} {
		got, err := ParseDuration(tc.in)
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v, error %v", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestDurationString(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{0, "0s"},
		{90 * time.Minute, "1h30m"},
		{2 * time.Hour, "2h"},
		{48 * time.Hour, "2d"},
		{7 * 24 * time.Hour, "1w"},
		{9 * 24 * time.Hour, "1w2d"},
		{36 * time.Hour, "36h"},
		{30 * time.Second, "30s"},
	} {
		if got := (Duration{tc.d}).String(); got != tc.want {
			t.Errorf("Duration(%v).String() = %q, want %q", tc.d, got, tc.want)
		}
		back, err := ParseDuration((Duration{tc.d}).String())
		if err != nil || back != tc.d {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", Duration{tc.d}, back, err, tc.d)
		}
	}
}

func TestMatch(t *testing.T) {
	eq := "pi"
	for _, tc := range []struct {
		m    Match
		v    string
		want bool
	}{
		{Match{Equal: &eq}, "pi", true},
		{Match{Equal: &eq}, "pi4", false},
		{Match{In: []string{"a", "b"}}, "b", true},
		{Match{In: []string{"a", "b"}}, "c", false},
		{Match{Glob: "sim-*"}, "sim-001", true},
		{Match{Glob: "sim-*"}, "pi-001", false},
		{Match{}, "x", false},
	} {
		if got := tc.m.Matches(tc.v); got != tc.want {
			t.Errorf("%+v.Matches(%q) = %v, want %v", tc.m, tc.v, got, tc.want)
		}
	}
}

func TestSuggest(t *testing.T) {
	names := []string{"percent", "count", "hold", "requiresApproval", "abort", "name"}
	for _, tc := range []struct{ in, want string }{
		{"percnt", "percent"},
		{"hodl", "hold"},
		{"requireApproval", "requiresApproval"},
		{"Count", "count"},
		{"xyz", ""},
		{"size", ""},
	} {
		if got := didyoumean.Closest(tc.in, names); got != tc.want {
			t.Errorf("Closest(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestMetaPos(t *testing.T) {
	f, err := Load(fstestFS("r.yaml", `apiVersion: gitfleet.io/v1
kind: Artifact
metadata: {name: a}
spec:
  source: a.mender
  deviceTypes: [pi, x86]
`))
	if err != nil {
		t.Fatal(err)
	}
	a := f.Artifact("a")
	for path, want := range map[string]string{
		"":                    "r.yaml:1:1",
		"spec.deviceTypes[1]": "r.yaml:6:21",
		"spec.source":         "r.yaml:5:11",
		"spec.nothing.here":   "r.yaml:5:3",
	} {
		if got := a.Pos(path).String(); got != want {
			t.Errorf("Pos(%q) = %s, want %s", path, got, want)
		}
	}
}
