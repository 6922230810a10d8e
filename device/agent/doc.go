// Package agent is the device agent: it authenticates to the controller
// with the device's own key, polls for deployments, streams artifacts into
// the installers of device/install, reboots, verifies, commits or rolls
// back, and reports every step. It speaks the Mender device API, so it
// works against a Gitfleet controller and a Mender server alike.
//
// # Configuration
//
// A JSON file ([Config]) with mender.conf's names where Mender has the
// setting (ServerURL, ServerCertificate, TenantToken,
// UpdatePollIntervalSeconds, InventoryPollIntervalSeconds,
// RetryPollIntervalSeconds, ArtifactVerifyKey(s), RootfsPartA/B,
// DeviceTypeFile, ArtifactScriptsPath, RootfsScriptsPath,
// ModuleTimeoutSeconds, StateScriptTimeoutSeconds, DaemonLogLevel) and
// Gitfleet's own names for the rest (DataDir, IdentityScript,
// InventoryScriptsDir, ModulesDir, ModulesWorkDir, ArtifactInfoFile,
// BootEnv*, AllowHTTPDownloads, AllowDowngrade, HealthCheck, MaxBootCount,
// RebootCommand, RebootByExit, BootIDFile, BootedPartitionFile, Monitor,
// MonitorRoot, DeviceConfig*). Any other key is an error naming it, except
// the mender.conf settings this agent has no use for ([MenderOnlyKeys]),
// which are accepted so that a mender.conf loads as it is. docs/agent.md
// is the reference of every key:
//
//	{
//	  "ServerURL": "https://gitfleet.example.com",
//	  "ServerCertificate": "/etc/gitfleet/server.crt",
//	  "UpdatePollIntervalSeconds": 1800,
//	  "InventoryPollIntervalSeconds": 28800,
//	  "RetryPollIntervalSeconds": 300,
//	  "ArtifactVerifyKeys": ["/etc/gitfleet/artifact-key.pub"],
//	  "RootfsPartA": "/dev/mmcblk0p2",
//	  "RootfsPartB": "/dev/mmcblk0p3",
//	  "BootEnv": "uboot", "BootEnvConfig": "/etc/fw_env.config",
//	  "DataDir": "/var/lib/gitfleet",
//	  "HealthCheck": ["/usr/bin/systemctl", "is-system-running", "--wait"],
//	  "MaxBootCount": 3
//	}
//
// # The data directory
//
//	device.key       the device key (ECDSA P-256, SEC1 PEM, 0600), made on first start
//	state.json       the state record of the deployment in progress; absent when idle
//	artifact_info    name=value lines: what the device provides, written at commit
//	deployment.log   the log of the deployment in progress (JSON lines), sent on failure
//	rootfs.json      device/install's own record of an A/B install
//	monitor.json     device/monitor's state: alert states, baselines, the queue of alert events
//	monitor-checks.json  the monitoring checks last applied and their ETag
//	deployments.json the last 16 deployment outcomes, for failedDeployments checks
//	device-config.json        the device configuration the apply scripts read (0600; DeviceConfigPath)
//	device-config-state.json  the configuration served and its ETag, the digest applied, the last
//	                          failure, the drift reported and the reports not yet delivered (0600)
//
// # States
//
// One type per state (states.go); each Run does its state's work and
// returns the next state, or its error transition through fail:
//
//	Download → ArtifactInstall → ArtifactReboot → ArtifactVerifyReboot → ArtifactCommit → Cleanup → UpdateStatusReport
//	failure before ArtifactInstall:      → Cleanup → UpdateStatusReport (failure)
//	failure after it, rollback possible: → ArtifactRollback → ArtifactRollbackReboot
//	                                       → ArtifactVerifyRollbackReboot → ArtifactFailure → Cleanup → UpdateStatusReport
//	failure after it, no rollback:       → ArtifactFailure → Cleanup → UpdateStatusReport
//
// Idle and Sync are the daemon loop (no record). Download checks the
// signature with the agent's own keys, the device type and depends, and the
// version (no downgrade unless AllowDowngrade) before the first payload
// byte reaches an installer; nothing becomes bootable before
// ArtifactInstall. ArtifactVerifyReboot asks the installers (did the
// expected partition boot?) and runs HealthCheck.
//
// # Persistence rules
//
//  1. Before a state runs, the record naming it is written atomically (temp
//     file, fsync, rename, fsync of the directory). Facts learnt inside a
//     state (the verified header, the provides-to-be, the reboot answer,
//     the boot ID) are written before they are relied upon.
//  2. After a crash, a power cut or a reboot, the agent enters the recorded
//     state again on fresh installers (which are idempotent), except:
//     ArtifactReboot and ArtifactRollbackReboot go on to their verify
//     states — unless the boot ID is unchanged, in which case the reboot
//     never happened and is done again; Download starts over (nothing of it
//     is bootable), at most 3 times.
//  3. Every start in the new software before the commit counts in Boots;
//     past MaxBootCount the update is rolled back (the agent's reboot-loop
//     breaker, on top of the bootloader's bootcount). Past 100 records in
//     one deployment (a state loop) the agent reports failure and stops.
//  4. A 409 on any status report means the server aborted the deployment:
//     the agent rolls back if it installed, and reports nothing more.
//  5. The outcome is retried with backoff; the record stays in
//     UpdateStatusReport until the server has it (or refuses it), so an
//     outcome survives reboots and outages.
//
// # Monitoring
//
// Unless "Monitor" is false, the daemon runs the monitoring checks the
// controller assigns to the device in a device/monitor Monitor (its probes
// read under MonitorRoot, default "/"):
//
//   - With every update poll it fetches them (GET
//     /api/devices/v1/devicemonitor/checks with If-None-Match: a 304 costs
//     nothing) and applies them; a check this agent cannot run is skipped
//     and logged, the others run. The checks and their ETag are saved, so
//     after a reboot they run before the controller is reached.
//   - It delivers alert events as they are queued and after each poll (POST
//     /api/devices/v1/devicemonitor/alerts, batches of 100). The answer's
//     seq is the highest the controller recorded: queued events up to it
//     are dropped, the rest sent again; a seq beyond any this device issued
//     (its state was lost) renumbers the queue after it. 429, 5xx and
//     network errors back off (5 s doubling up to RetryPollIntervalSeconds)
//     with the events kept in the persisted, bounded queue.
//   - Every deployment outcome is recorded in deployments.json when it is
//     final (the UpdateStatusReport state, in whichever process gets there)
//     and handed to the failedDeployments checks; the daemon hands over at
//     start what an earlier process recorded, once.
//   - An artifact whose payload meta-data carries "gitfleet.expected-digests"
//     (absolute path → "sha256:HEX") announces those digests with
//     Monitor.Expect before ArtifactInstall: a fileChange check takes a
//     file with that digest as its new baseline instead of raising an alert.
//
// # Device configuration
//
// Unless "DeviceConfig" is false, the daemon applies the configuration the
// controller serves with a [ConfigApplier], the way Mender Configure does
// on the device: with every update poll it fetches it (GET
// /api/devices/v1/deviceconfig/gitfleet with If-None-Match), writes a
// changed one to DeviceConfigPath and runs the executables of
// DeviceConfigScriptsDir in lexical order with the file's path as their
// argument, then reports the outcome (applied, or failed with the script,
// its exit code and the tail of its output) and, when applied, the values
// (Mender's PUT /api/devices/v1/deviceconfig/configuration). A failed
// configuration is tried again when it changes, after
// DeviceConfigRetrySeconds and once after a reboot; a file changed on the
// device is reported once as drifted; a missing file is applied again.
// Values are never logged.
//
// # Reboots
//
// The agent reboots through a [Rebooter]: the RebootCommand, or with
// RebootByExit it stops and gitfleet-agent exits with
// [ExitRebootRequested] for its supervisor to reboot (the simulated device
// of device/sim does that). Either way the entry points return
// [ErrRebooting] and the record says where to go on.
package agent
