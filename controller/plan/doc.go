// Package plan says what merging a change to a fleet repository would do,
// in the words of the reviewer who has to approve it.
//
// # The model
//
// A plan compares two fleets: the one at the base of a pull request (what
// the controller serves now) and the one at its head (what it would serve
// after the merge). It never looks at devices or at the store: everything
// in it is derived from the two commits, so it can run in CI, on a laptop,
// or in a pull-request comment.
//
// Each manifest that differs becomes a [Change]: its kind and name, the
// actions a reviewer cares about, and one detail line per changed thing.
// The actions follow what the controller does with the new commit
// (DESIGN.md §4):
//
//   - A Rollout that appears is started (or added paused); one that
//     disappears is stopped: nobody new is admitted. A changed artifact
//     (another artifact, or new bits under the same name) starts a new
//     generation; changed phases, thresholds, windows or targets apply to
//     the running generation. A rollout can be paused or resumed, and a
//     phase added to spec.approvedPhases promotes it.
//   - Devices are accepted (a Device manifest appears) or removed.
//   - Artifacts, groups, monitor checks, configs, signing keys and
//     notifications are added, changed or removed; a detail line names each
//     field that changed, with its old and new value. A DeviceConfig's
//     secrets show by key and source only ("api-key (age, changed)"):
//     never a ciphertext, let alone a value.
//   - The rules change too: a built-in policy pack selected, dropped or
//     given another severity, a policy file added, edited or removed (kind
//     [KindPolicy]), so that weakening a policy is as visible as a rollout.
//
// Where it can be known offline, a change also lists the devices it
// targets ([Targets]): the static members of the groups it names, the
// Device manifests its selectors match (by identity, and by device type
// when the Device declares one), the devices it names. A selector over
// inventory attributes cannot be resolved without the devices, so such
// targets are marked inexact and described instead.
//
// The plan also carries the validation of the head commit (the schema's
// errors and the policies' violations): a change that would be refused by
// the controller says so first.
//
// # Output
//
// A Plan renders as plain text (a terminal), Markdown (a pull-request
// comment: a headline, the validation result, then one section per kind)
// and JSON, whose field names are stable.
package plan
