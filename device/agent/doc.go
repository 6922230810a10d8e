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
// ModuleTimeoutSeconds, StateScriptTimeoutSeconds) and Gitfleet's own
// names for the rest (DataDir, IdentityScript, InventoryScriptsDir,
// ModulesDir, ModulesWorkDir, ArtifactInfoFile, BootEnv*, AllowHTTPDownloads, AllowDowngrade,
// HealthCheck, MaxBootCount, RebootCommand, RebootByExit, BootIDFile,
// BootedPartitionFile):
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
// # Reboots
//
// The agent reboots through a [Rebooter]: the RebootCommand, or with
// RebootByExit it stops and gitfleet-agent exits with
// [ExitRebootRequested] for its supervisor to reboot (the simulated device
// of device/sim does that). Either way the entry points return
// [ErrRebooting] and the record says where to go on.
package agent
