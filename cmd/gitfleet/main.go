// Command gitfleet is the Gitfleet controller and operator CLI: it builds,
// signs and inspects artifacts, validates fleet repositories, plans pull
// requests, and serves the device API.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

// exitError carries a process exit code for failures that are not usage
// errors (for example "validation found errors": exit 1 without a usage dump).
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "gitfleet",
		Short:         "Signed, atomic OTA updates for embedded Linux fleets, driven by Git",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(
		newArtifactCmd(),
		newKeysCmd(),
		newServeCmd(),
		newValidateCmd(),
		newPlanCmd(),
		newDevicesCmd(),
		newAlertsCmd(),
		newRolloutsCmd(),
		newConfigCmd(),
		newStatusCmd(),
		newEventsCmd(),
		newAuditCmd(),
		newSessionsCmd(),
		newOperatorsCmd(),
		newReconcileCmd(),
		newVersionCmd(),
		newLoginCmd(),
		newWebhookCmd(),
		newSchemaCmd(),
	)
	return root
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRootCmd().ExecuteContext(ctx)
	stop()
	if err == nil {
		return
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != nil && ee.err.Error() != "" {
			fmt.Fprintln(os.Stderr, "gitfleet:", ee.err)
		}
		os.Exit(ee.code)
	}
	fmt.Fprintln(os.Stderr, "gitfleet:", err)
	os.Exit(2)
}
