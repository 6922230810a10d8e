// Package rollout decides, for one device at one moment, what it should
// install next, and, after a status report or an alert, whether a rollout
// must abort. It is pure: no I/O, no clock, no store calls. Its inputs are
// the Snapshot's fleet, the rollout records and progress counters the
// caller read from the store, what the device said, and now; its outputs
// are decisions the caller carries out (an atomic store.Admit, a
// store.Abort, an event).
//
// # The model
//
// A [Plan] is compiled once per Snapshot ([Compile]) and shared by every
// poll; it holds what does not depend on the device or on progress: the
// rollouts in priority order with their generation, which declared devices
// each targets, the phase boundaries, the maintenance windows with their
// time zones loaded. A poll then costs a few map lookups and one SHA-256.
//
// A device follows at most one rollout: among the rollouts whose target
// includes it, the one with the highest priority (ties, which the schema
// forbids for overlapping targets, go to the smaller name). The device gets
// that rollout's answer even when it is "wait" or "aborted": a lower
// priority rollout never fills in. A rollout does not target a device
// whose Device manifest declares a device type its artifact lacks, so such
// a device falls through to the next rollout. [Plan.Route] names that rollout's
// generation, so the caller reads only that generation's progress and the
// device's deployment in it before calling [Plan.Next].
//
// Devices are known by the name of the Device manifest that accepted them
// ([Device.ID]); only accepted devices poll, so every polling device is
// declared in the Snapshot.
//
// # Phase membership
//
// A device's place in a rollout is its key: the first 8 bytes, big endian,
// of SHA-256(rollout name ‖ 0x00 ‖ device ID), ties (practically never)
// broken by device ID. The generation is deliberately not hashed: when a
// rollout moves to a new artifact, the same devices are its canaries again,
// so a canary group that an operator watches closely stays the same. (To
// draw new canaries, rename the rollout.) Adding or removing devices never
// changes anybody's key, so the order of devices in a rollout is fixed
// forever.
//
// Phases are cumulative. For each phase k the plan computes the cumulative
// size L(k) and the phase's quota L(k) − L(k−1), the limit given to
// store.Admit (the store counts admissions per phase).
//
// Closed targets. When the Snapshot alone decides which declared devices a
// rollout targets — the whole fleet, named devices, static group members,
// and selectors over identity attributes or over device_type where the
// Device manifest declares it — the target is known: its N devices (less
// those whose declared device type the artifact does not support) are
// ranked by key, L(k) is the phase's count, or ceil(percent × N / 100) for
// a percent phase (at least L(k−1), at most N), and a device of rank r
// belongs to the first phase k with r < L(k). Phase sizes are then exact:
// phase k admits exactly its quota. Ranks are computed by key, so adding a
// device moves the phase boundaries by at most one rank, and only devices
// right at a boundary can change phase; a device that was admitted keeps
// its phase (the store remembers it).
//
// Open targets. A selector over inventory attributes (hostname, anything
// but a declared device_type) depends on what devices report, so the target
// size is not known. The candidates — declared devices that may match — are
// counted (C) and serve only as an upper bound. A device's position is its
// key as a fraction of 2^64, in [0,1); it belongs to a percent phase when
// its position is below percent/100, so a percent phase admits about that
// share of the devices that turn out to match, the quota ceil(percent × C /
// 100) guarding the upper bound. A count phase in an open target admits
// devices in the order they first ask, up to its count.
//
// In both cases a device is admitted into the earliest open phase, from its
// own phase on, that still has room (Progress says admitted < quota). A
// device whose own phase is full — possible only after devices were added
// or removed, or by chance in an open target — therefore goes into the
// next open phase, never an earlier one. A device after the last phase
// (when it does not reach 100 %) is never admitted.
//
// # Gates
//
// Phase 0 opens when the generation starts. Phase k > 0 opens when
//
//  1. phase k−1 is complete: it has as many final states (success,
//     failure or timeout) as its quota (closed targets), or, in an open target, it
//     has admitted someone and every device it admitted is final (or it
//     reached its quota); a phase with quota 0 is complete at once;
//  2. the hold of phase k−1 has passed since it completed; and
//  3. phase k needs no approval, or is listed in spec.approvedPhases.
//
// (Phase 0 also waits for its approval when it requires one.) Completion is
// latched: once the store records when phase k completed ([NextInput]
// Completed), it stays complete, so a device admitted late into a finished
// phase never closes the phases after it again. Progress counts do not say
// when a phase completed, so decisions report the phases they find complete
// without a recorded time ([Decision.NewlyComplete], [StatusDecision]
// PhaseCompleted) and the caller records now as their completion time,
// first writer wins; a hold runs from that time.
//
// Paused, the maintenance windows and the gates stop new admissions only:
// a device that was admitted gets the same deployment again ([Resume]) until
// it reaches a final state, unless the generation was aborted.
//
// A maintenance window is a daily range [start, end) on some weekdays
// (none listed: every day) in a time zone (default UTC). When end is
// before start the window runs past midnight and belongs to the day it
// starts on ("fri 22:00–04:00" is open Saturday 02:00). start == end is a
// whole day from start. Outside every window nobody is admitted.
//
// # Offline devices
//
// In a closed target a device's phase is fixed by its rank, so an offline
// device would hold its place forever. When the caller passes
// [NextInput] LastSeen and Admitted, phases choose among present devices
// instead: a device is present when it was admitted into the generation or
// seen within spec.onlineWindow (default 1h, two default update polls)
// before now. A device of rank r may then also join an open phase j with
// room when fewer than L(j) of the devices ranked before it are present:
// its rank among present devices puts it in phase j. So an offline canary
// gives its place to the next present device by rank, deterministically,
// and gets a place in a later phase when it comes back; a device seen
// within the window keeps its place until the window passes. Admitted
// devices always count, so a place once taken is never given twice. Open
// targets need no rule: count phases take whoever asks, and a percent
// phase completes when the devices it admitted finished.
//
// # Deadlines
//
// An admitted device has until its deadline, Admitted + deviceTimeout ×
// (1 + Attempts) (spec.deviceTimeout, default 4h: eight default update
// polls; each retry gets as long again), to reach a final state. Past it
// the deployment is timed out: [Plan.Next] says so (Decision.TimedOut) when
// the device polls, and the caller's sweep finds the devices that never
// poll again ([Plan.Deadline]); either way the caller reports
// store.StateTimeout, a final state counted as PhaseCounts.TimedOut, then
// calls [Plan.OnStatus]. A phase completes on successes, failures and
// timeouts alike, so it completes past its timed-out devices. A timed-out
// device is not offered the deployment again in this generation, and a
// report it sends later changes nothing (final states never change). A
// deployment without an admission time (recorded before it was kept) has
// no deadline. Aborted generations are not swept.
//
// # Refused artifacts
//
// When the controller refuses the rollout's artifact (its digest,
// signature, signing key, format, header or size check failed; the caller
// sets [NextInput] ArtifactRefused to why), nobody is admitted and
// admitted devices are not served it ([ReasonArtifactRefused]); they keep
// their deadlines. A commit that fixes the artifact lifts it.
//
// # Compatibility
//
// Before admission the device must fit the artifact: its device type is one
// of the artifact's deviceTypes; every depends key of the artifact is
// provided by the device with that exact value; and the artifact is not a
// downgrade. A device that already provides the artifact's artifact_name
// is already up to date: when it would be admitted now it is admitted
// anyway and recorded as a success ([Installed]) so that its phase's quota
// still completes, and the device API answers 204 (no deployment), which
// is what the stock client expects when it runs the artifact already.
//
// Downgrades are refused unless spec.allowDowngrade. Versions are compared
// in two ways, and either refusing is enough:
//
//   - artifact Version: the fleet's Artifact whose artifact_name the device
//     reports, when it has a Version and belongs to the same software
//     (same provides artifact_group, or neither has one), against the new
//     artifact's Version;
//   - provides ending in ".version" (Mender's rootfs-image.version
//     convention): each such key of the new artifact that the device also
//     provides.
//
// See [CompareVersions] for the order: numeric dotted fields, then a
// pre-release below its release. Values that are not versions (no leading
// digit) are not compared.
//
// # Abort
//
// Abort criteria belong to phases. After every status report the caller
// passes the new counts to [Plan.OnStatus]; the criteria of the reporting
// device's phase are checked against that phase's counts:
//
//   - maxFailures m: the report that makes failed > m aborts (the (m+1)th
//     failure; m = 0 aborts on the first);
//   - maxFailurePercent p with minSample s: once finished = succeeded +
//     failed ≥ max(s, 1), the report that makes failed × 100 > p × finished
//     aborts (a share above p, not equal to it). A success can abort too:
//     the one that brings the sample to s when the failures already exceed
//     the share;
//   - maxTimedOut t: the timeout that makes timedOut > t aborts;
//   - maxTimedOutPercent p with minSample s: once finished = succeeded +
//     failed + timedOut ≥ max(s, 1), the timeout (or report) that makes
//     timedOut × 100 > p × finished aborts. Timeouts are not failures:
//     maxFailures and maxFailurePercent do not count them;
//   - alerts: a check named by any phase that has admitted devices, raised
//     on at least one admitted device of the generation.
//
// A report or timeout that aborts by its phase's failure or timeout
// criteria does not complete the phase (StatusDecision PhaseCompleted
// stays false), and nothing completes in an aborted generation.
//
// A failure the store turned into a retry is not a failure yet. Once the
// caller calls store.Abort, the store admits nobody into the generation,
// and [Plan.Next] tells every device of it, admitted or not, that the
// rollout was aborted.
package rollout
