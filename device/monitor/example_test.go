package monitor_test

import (
	"context"
	"fmt"
	"time"

	"github.com/gitfleet/gitfleet/device/monitor"
)

// The agent's side of the contract: set the checks from Git, step (or Run)
// the Monitor, feed it deployment outcomes, and drain its events to the
// server when it is reachable.
func Example() {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	m, err := monitor.New(monitor.Options{Now: func() time.Time { return now }})
	if err != nil {
		panic(err)
	}
	defer m.Close()
	err = m.SetChecks([]monitor.Check{
		{Name: "failed-deployments", Severity: monitor.Critical, FailedDeployments: &monitor.FailedDeployments{}},
	})
	if err != nil {
		panic(err)
	}
	m.ReportDeployment(monitor.DeploymentOutcome{ID: "d-42", Artifact: "os-7", Status: "failure"})
	if _, err := m.Step(context.Background()); err != nil {
		panic(err)
	}
	m.Drain(context.Background(), 100, func(_ context.Context, evs []monitor.Event) error {
		for _, e := range evs {
			fmt.Println(e.Seq, e.Check, e.Kind, e.Severity, e.Evidence)
		}
		return nil
	})
	// Output:
	// 1 failed-deployments raised critical deployment d-42 of os-7 failed
}
