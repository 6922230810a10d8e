// Package buildinfo says which build a Gitfleet binary is: the version
// and commit linked in by release builds (-ldflags "-X main.version=…"),
// else what the Go toolchain recorded (the module version of `go install
// m@v`, the VCS revision of a build in a checkout).
package buildinfo

import (
	"runtime"
	"runtime/debug"
)

// Info describes a build.
type Info struct {
	Version  string `json:"version"`
	Commit   string `json:"commit,omitempty"`
	Time     string `json:"commit_time,omitempty"`
	Modified bool   `json:"modified,omitempty"` // built from a tree with uncommitted changes
	Go       string `json:"go"`
	Platform string `json:"platform"`
}

// Read describes this binary: version and commit as linked in (either may
// be empty), completed from the toolchain's build information.
func Read(version, commit string) Info {
	bi, ok := debug.ReadBuildInfo()
	return From(bi, ok, version, commit)
}

// From is Read with the build information given (for tests).
func From(bi *debug.BuildInfo, ok bool, version, commit string) Info {
	v := Info{Version: version, Commit: commit, Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if ok && bi != nil {
		if v.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			v.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if v.Commit == "" {
					v.Commit = s.Value
				}
			case "vcs.time":
				v.Time = s.Value
			case "vcs.modified":
				v.Modified = s.Value == "true"
			}
		}
	}
	if v.Version == "" {
		v.Version = "devel"
	}
	return v
}

// Short is the version in one word: the version, or for a development
// build "devel+<commit>" (and "-dirty" with uncommitted changes).
func (v Info) Short() string {
	if v.Version != "devel" || v.Commit == "" {
		return v.Version
	}
	c := v.Commit
	if len(c) > 12 {
		c = c[:12]
	}
	if v.Modified {
		c += "-dirty"
	}
	return "devel+" + c
}
