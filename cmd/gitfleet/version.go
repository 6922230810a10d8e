package main

import (
	"fmt"
	"runtime/debug"

	"github.com/spf13/cobra"

	"github.com/gitfleet/gitfleet/cmd/internal/buildinfo"
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

// versionInfo describes this binary from the ldflags and the build info.
func versionInfo(info *debug.BuildInfo, ok bool) buildinfo.Info {
	return buildinfo.From(info, ok, version, commit)
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

func printVersion(cmd *cobra.Command, v buildinfo.Info) {
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
