package buildinfo

import (
	"runtime/debug"
	"testing"
)

func TestFrom(t *testing.T) {
	vcs := &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: []debug.BuildSetting{
		{Key: "vcs.revision", Value: "0123456789abcdef0123"}, {Key: "vcs.time", Value: "2026-12-01T10:00:00Z"}, {Key: "vcs.modified", Value: "true"}}}
	for _, tc := range []struct {
		name             string
		bi               *debug.BuildInfo
		ok               bool
		version, commit  string
		wantV, wantShort string
		wantCommit       string
	}{
		{"linked in", vcs, true, "v1.2.3", "feedface", "v1.2.3", "v1.2.3", "feedface"},
		{"go install m@v", &debug.BuildInfo{Main: debug.Module{Version: "v0.4.0"}}, true, "", "", "v0.4.0", "v0.4.0", ""},
		{"a checkout with changes", vcs, true, "", "", "devel", "devel+0123456789ab-dirty", "0123456789abcdef0123"},
		{"no build info", nil, false, "", "", "devel", "devel", ""},
	} {
		v := From(tc.bi, tc.ok, tc.version, tc.commit)
		if v.Version != tc.wantV || v.Short() != tc.wantShort || v.Commit != tc.wantCommit || v.Go == "" || v.Platform == "" {
			t.Errorf("%s: %+v (short %q), want version %q short %q commit %q", tc.name, v, v.Short(), tc.wantV, tc.wantShort, tc.wantCommit)
		}
	}
}
