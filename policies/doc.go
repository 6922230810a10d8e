// Package policies checks a fleet against policies written in CUE: rules a
// team sets for itself on top of what the schema allows, such as "a rollout
// to production starts with a canary of at most 5 %".
//
// # The model
//
// A policy is a named rule with a severity. It looks at the whole fleet
// (every manifest of a commit, after the schema loaded and cross-checked
// them) and returns violations: which manifest is at fault, optionally which
// field, and a message. A violation of a "deny" policy fails validation and
// so blocks the pull request and keeps the controller on its last good
// commit; a "warn" violation is reported and lets the change through.
//
// Policies come from two places:
//
//   - Built-in packs, compiled into the binary. A fleet repository selects
//     them by name in policies/packs.yaml (see below); a repository without
//     that file runs no built-in pack.
//   - The repository's own policy files, policies/*.cue. Every one of them
//     always runs.
//
// The built-in packs (see the packs/ folder of this package for the source,
// which doubles as an example of policy writing):
//
//	production-safety  rollouts that reach a group labelled production
//	                   start with a canary of at most 5 % (or 5 devices),
//	                   set abort criteria on every phase (deny), and wait
//	                   for an approval after the canary (warn)
//	signed-artifacts   every artifact names the SigningKeys that sign it,
//	                   and an artifact sent to production is signed by a
//	                   key trusted in production (deny)
//	critical-windows   rollouts that reach a group labelled critical only
//	                   update inside maintenance windows (deny), written
//	                   with an explicit time zone (warn)
//
// "Labelled production" means the group has a label whose value is
// "production" (environment: production) or a label named production whose
// value is not "false" (production: "true"); likewise for critical. A
// rollout reaches such a group when it targets it, targets one of its static
// members, or targets the whole fleet.
//
// # Selecting packs
//
// policies/packs.yaml lists the packs a repository enforces, each by name or
// as a mapping that also overrides the severity of all its policies, for
// example to introduce a pack as warnings first:
//
//	packs:
//	  - production-safety
//	  - signed-artifacts
//	  - name: critical-windows
//	    severity: warn
//
// The schema loader skips the policies/ folder, so neither this file nor the
// policy files are taken for manifests.
//
// # Writing a policy
//
// A policy file is a CUE file in policies/. It declares the field fleet,
// which the evaluator fills with the fleet, and one or more policies under
// policy:
//
//	fleet: _
//
//	policy: "rollout-owner": {
//		description: "Every rollout names the team that owns it."
//		severity:    "warn"
//		violations: [
//			for r in fleet.rollouts
//			if r.metadata.labels.owner == _|_ {
//				manifest: r
//				path:     "metadata.labels"
//				message:  "rollout has no owner label; add metadata.labels.owner"
//			},
//		]
//	}
//
// fleet has one field per kind, each a struct of manifests keyed by
// metadata.name: fleet.artifacts, fleet.rollouts, fleet.groups,
// fleet.devices (one entry per declared device), fleet.checks,
// fleet.configs, fleet.keys, fleet.notifications, fleet.deviceCAs and
// fleet.operators. Every kind is present,
// possibly empty. A manifest appears in the shape it is written in
// (apiVersion, kind, metadata with name and labels, spec), with its spec as
// the schema decoded it: optional fields that were not written are absent
// (test them with == _|_ or give a default such as *r.spec.paused | false),
// durations are strings ("2d"), and metadata.labels is always present.
//
// A policy is a struct with
//
//	severity     "deny" (the default) or "warn"
//	description  optional, one line saying what the policy wants
//	violations   a list of violations, each with
//	  manifest   the manifest at fault: any value with its kind and
//	             metadata.name, usually the one being iterated over.
//	             Leave it out for a violation of the fleet as a whole,
//	             which is reported at the policy's declaration.
//	  path       optional: the field at fault, such as
//	             "spec.phases[0].percent"; the violation then points at
//	             that field's line
//	  message    what is wrong, in words the author of the pull request
//	             can act on
//
// Each file is evaluated on its own: it may import the CUE standard library
// ("strings", "list", "regexp", ...) but nothing else, and hidden fields and
// definitions are not shared between files. Policy names are unique in a
// repository. A policy file that does not compile, or a policy whose
// violations do not evaluate (an undefined field in a comprehension, a
// message that is not a string), is an error at the policy file's position,
// and fails validation like a deny.
//
// A violation of a built-in policy is named pack/policy
// (production-safety/canary-first); a repository policy by its name alone.
//
// # Using the package
//
// [Validate] is what gitfleet validate and the controller run: it loads a
// tree with [schema.Load] and checks what loaded with [Check], returning a
// [Report] whose OK method says whether the commit may be served. [Select]
// says which packs and policy files a tree selects, so that a plan can show
// a change to the rules themselves.
//
// # Budget
//
// A repository's policy files are untrusted programs, and the CUE
// evaluator cannot be interrupted. They therefore run in a separate
// process (this program started again, see sandbox.go) under a [Budget]:
// wall-clock time (the process is killed when it runs out), memory and
// CPU time (limits the process sets on itself with setrlimit), and the
// size of what it reports. A policy file over budget is an error at that
// file, saying which budget and how to raise it, and the files after it
// are reported as not evaluated; the evaluator process is gone when
// [CheckContext] returns. The built-in packs are this package's own code,
// bounded by the size of the fleet, and run in the calling process.
//
// Evaluation is bounded by what policies refer to: only the kinds a file
// names (fleet.rollouts, fleet.groups, ...) are turned into CUE values, so
// the thousands of Device manifests of a large fleet cost nothing to a
// policy about rollouts.
package policies
