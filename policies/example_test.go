package policies_test

import (
	"fmt"
	"testing/fstest"

	"github.com/gitfleet/gitfleet/policies"
)

// A fleet repository with one policy of its own: every rollout names its
// owner.
func ExampleValidate() {
	repo := fstest.MapFS{
		"policies/owners.cue": {Data: []byte(`
fleet: _

policy: "rollout-owner": {
	severity: "warn"
	violations: [
		for r in fleet.rollouts
		if r.metadata.labels.owner == _|_ {
			manifest: r
			message:  "rollout has no owner label"
		},
	]
}
`)},
		"fleet.yaml": {Data: []byte(`apiVersion: gitfleet.io/v1
kind: Artifact
metadata: {name: app-2}
spec: {source: artifacts/app-2.mender, deviceTypes: [rpi4]}
---
apiVersion: gitfleet.io/v1
kind: Rollout
metadata: {name: app-2}
spec:
  artifact: app-2
  target: {all: true}
  phases: [{name: all, percent: 100}]
`)},
	}
	_, report, err := policies.Validate(repo)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, v := range report.Violations {
		fmt.Println(v.String())
	}
	fmt.Println(report.Summary())
	// Output:
	// fleet.yaml:6:1: warn: rollout has no owner label (rollout-owner)
	// passed: 1 warning
}
