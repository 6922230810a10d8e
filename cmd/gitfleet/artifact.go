package main

import "github.com/spf13/cobra"

func newArtifactCmd() *cobra.Command {
	return &cobra.Command{Use: "artifact", Short: "Write, read, sign and verify Mender artifacts"}
}
