package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// version and commit are set at build time:
//
//	go build -ldflags "-X main.version=1.2.3 -X main.commit=$(git rev-parse HEAD)"
//
// Without them, the module version and the VCS settings Go records in the
// binary (runtime/debug.ReadBuildInfo) are used.
var (
	version string
	commit  string
)

// readBuildInfo is debug.ReadBuildInfo (tests replace it).
var readBuildInfo = debug.ReadBuildInfo

// buildVersion describes this binary.
type buildVersion struct {
	Version  string `json:"version"`
	Commit   string `json:"commit,omitempty"`
	Time     string `json:"commit_time,omitempty"`
	Modified bool   `json:"modified,omitempty"` // built from a tree with uncommitted changes
	Go       string `json:"go"`
	Platform string `json:"platform"`
}

// versionInfo reads the version from the ldflags, else the build info.
func versionInfo(info *debug.BuildInfo, ok bool) buildVersion {
	v := buildVersion{Version: version, Commit: commit, Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if ok {
		if v.Version == "" && info.Main.Version != "" && info.Main.Version != "(devel)" {
			v.Version = info.Main.Version
		}
		for _, s := range info.Settings {
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

func newVersionCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version, commit and Go version of this binary",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			v := versionInfo(readBuildInfo())
			if asJSON {
				return printJSON(cmd, v)
			}
			printVersion(cmd, v)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the version as JSON")
	return cmd
}

func printVersion(cmd *cobra.Command, v buildVersion) {
	w := cmd.OutOrStdout()
	fmt.Fprintf(w, "gitfleet %s\n", v.Version)
	if v.Commit != "" {
		c := v.Commit
		if v.Time != "" {
			c += " (" + v.Time + ")"
		}
		if v.Modified {
			c += ", with uncommitted changes"
		}
		fmt.Fprintf(w, "commit:   %s\n", c)
	}
	fmt.Fprintf(w, "go:       %s\nplatform: %s\n", v.Go, v.Platform)
}
