// Package schema defines the fleet manifests of a Gitfleet repository and
// loads them into typed Go values.
//
// # The model
//
// A fleet repository is a tree of YAML (or CUE) documents in Kubernetes
// style. Every document has the same envelope:
//
//	apiVersion: gitfleet.io/v1
//	kind: Rollout
//	metadata:
//	  name: hello-2
//	  labels: {team: platform}
//	spec: {...}
//
// There are eight kinds. Each becomes one Go type whose Spec mirrors the
// document's spec field by field, so a path in an error message such as
// spec.phases[1].percent names both the YAML and the Go field:
//
//   - [Artifact]: an update image (a path in the artifact store or an https
//     URL), its sha256, the device types it fits, what it provides and
//     depends on, and the [SigningKey]s that must have signed it.
//   - [Rollout]: one artifact to a target, in ordered phases. Phases are
//     cumulative: each admits a larger share of the target (a percentage or a
//     device count), may hold for a while after completing, may wait for an
//     approval, and aborts the rollout on too many failures or on named
//     monitoring alerts. An approval is a later commit that adds the phase to
//     spec.approvedPhases, so the Git history records who promoted what.
//   - [DeviceGroup]: static members (Device names) and/or a [Selector].
//   - [Device]: admission. A device is accepted when its identity
//     attributes and/or public-key fingerprint are declared. One manifest may
//     declare several devices under spec.devices; the loader returns one
//     [Device] per declared device.
//   - [MonitorCheck]: something devices watch (a log file or command output,
//     a service, or one of the built-in security probes) and the alert it
//     raises.
//   - [DeviceConfig]: key/value configuration for the whole fleet, groups or
//     devices. When several apply to a device the most specific wins
//     (device over group over fleet). A value may instead be a secret,
//     which Git holds only as a reference ([ConfigSecret]): a file of the
//     controller's secrets directory, or an age ciphertext.
//   - [SigningKey]: a trusted artifact-signing public key for an environment.
//   - [Notification]: a webhook or e-mail sink and the events it receives.
//
// Manifests refer to each other by metadata.name; names are unique per kind.
//
// # Loading
//
// [Load] reads every *.yaml, *.yml, *.cue and *.devices file of a tree (an
// os.DirFS of a work tree or an fs.FS of a Git commit) and returns a
// [Fleet]. A *.devices file is a device list: one device a line, read by a
// line parser rather than CUE (see [DeviceListHeader]), for fleets of
// millions of devices; its devices are Devices like those of manifests. Each
// document is checked against the CUE definitions embedded in this package
// (see the *.cue files), decoded into its Go type, and then the whole fleet
// is cross-checked (references, duplicate names, overlapping rollouts, phase
// sizes, configuration conflicts). Load reports every problem it finds, not
// just the first, as [Errors]; each [Error] points at the manifest, not at
// the schema, and prints as
//
//	rollouts/hello.yaml:14:18: spec.phases[1].percent: phase sizes must grow: 5 is not more than 10 (phase "canary")
//
// Files the loader ignores:
//
//   - anything that is not *.yaml, *.yml, *.cue or *.devices;
//   - dot-files and dot-directories (.git, .github, .gitlab-ci.yml);
//   - the top-level policies/ directory, which holds CUE policies for the
//     policies package, not manifests;
//   - a YAML file none of whose documents looks like a manifest. A document
//     looks like a manifest when its apiVersion starts with "gitfleet.io/" or
//     its kind is one of the eight kinds above. So a CI file or a Kubernetes
//     manifest that happens to live in the tree is skipped, while a Gitfleet
//     manifest with a typo in apiVersion is reported. Once a file holds one
//     manifest, every document in it must be a manifest.
//
// Malformed YAML or CUE is always an error, as is a manifest file that is a
// symbolic link (links are never followed, so nothing outside the tree is
// read), larger than [MaxFileSize], not UTF-8 text, or holding more than
// [MaxDocuments] documents.
//
// A .cue file holds one manifest or a list of manifests, written as data:
// structs of regular fields, lists, and string, number, boolean and null
// literals, the same as YAML can say. No imports, references, let clauses,
// comprehensions, disjunctions, operators, interpolations, definitions,
// pattern constraints or optional fields.
//
// # Limits
//
// A fleet repository is untrusted input to the controller, so every file
// loads in time and memory proportional to its size, and a file that could
// not is an error naming it:
//
//   - file sizes: [MaxFileSize] per file, [MaxTotalSize] for the tree, at
//     most [MaxFiles] files and [MaxDocuments] documents per file;
//   - YAML aliases (*name) and merge keys (<<: *name) copy the value they
//     name; in one file they may add at most [MaxAliasNodes] nodes, so a
//     "billion laughs" file is refused on sight;
//   - nesting: at most 10,000 levels of YAML collections or CUE
//     expressions (the limits of the YAML and CUE parsers);
//   - .cue files are data only (see above): CUE's references,
//     comprehensions and disjunctions can make evaluation exponential in
//     the size of the file, and CUE cannot stop an evaluation midway;
//   - errors: at most [MaxErrors] are returned, and "did you mean"
//     suggestions for unknown references stop after comparing a million
//     names.
//
// # Errors in one pass
//
// Load reports the schema's errors and, for the fields of an invalid
// document that the schema did not object to, the rules checked in Go
// (phase sizes, probes, keys, ...), so that fixing the reported errors does
// not reveal more on the next run. A document with errors is left out of
// the Fleet, and so out of the cross-checks below.
//
// # Cross-checks
//
// After every document has been validated on its own, Load checks the fleet
// as a whole: references to unknown artifacts, groups, devices, keys, checks
// and rollouts; duplicate names per kind; phases whose sizes do not grow or
// pass 100 %; approvals of unknown phases; DeviceConfigs of equal
// specificity that set one key to different values for devices they may
// share; and rollouts that may target the same device without distinct
// priorities.
//
// "May target the same device" is decided offline and conservatively: two
// targets are disjoint only when that can be proven from the repository
// alone, for example two groups with disjoint static members, two selectors
// that require different values of the same attribute, or two artifacts
// without a device type in common. Anything else is treated as overlapping.
//
// # Performance
//
// Load reads the tree from one goroutine and validates its files on
// GOMAXPROCS goroutines, each with its own CUE context; contexts, with the
// schema compiled in them, are kept in a pool between calls. All the
// documents of a YAML file are validated against their definitions in one
// CUE evaluation, and decoded into Go values straight from their syntax;
// only files with errors are evaluated again document by document, to
// report them well. The cross-checks index targets by device and selector
// attribute, so that only targets that may overlap are compared. A
// generated fleet of 10,000 manifests loads in about 1.5 s on two cores
// (BenchmarkLoad10k).
//
// # Durations
//
// Durations are written as Go durations ("90m", "1h30m") extended with days
// ("2d") and weeks ("1w"); see [ParseDuration]. They decode into [Duration],
// which wraps a time.Duration.
package schema
