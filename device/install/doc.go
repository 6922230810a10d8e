// Package install puts the payloads of an artifact in place: A/B root
// filesystem images ([Rootfs]), update modules ([Module]) and the state
// scripts that run around each state ([Runner]). The device agent
// (device/agent) owns the state machine and the persisted state record; this
// package owns what each state does to the device.
//
// # The model
//
// An artifact carries one or more payloads; each payload has a type
// ("rootfs-image", or the name of an update module) and an [Installer] for
// that type does the work. The agent walks every installer of an artifact
// through the states of Mender's update module protocol (v3), in this order
// when nothing fails:
//
//	Download               consume the payload's files as they stream in
//	ArtifactInstall        make the update the one that runs next
//	ArtifactReboot         only if NeedsArtifactReboot said Yes
//	                       (Automatic: the agent reboots the host itself)
//	ArtifactVerifyReboot   after the reboot: is the new software running?
//	ArtifactCommit         make it permanent
//	Cleanup                always last, whatever happened
//
// and on failure after a successful ArtifactInstall, when SupportsRollback:
//
//	ArtifactRollback → ArtifactRollbackReboot → ArtifactVerifyRollbackReboot
//	→ ArtifactFailure → Cleanup
//
// (without rollback support: ArtifactFailure → Cleanup). A failed Download
// goes straight to Cleanup.
//
// # Power cuts
//
// The agent records the state it is about to enter before entering it, and
// after a crash or power cut it enters that state again, on a freshly made
// Installer. Every state method is therefore idempotent: running it twice,
// or running it after an earlier run was cut off at any instant, ends where
// one clean run ends. What an installer must remember between states it
// keeps on disk ([RootfsOptions.StateDir], the module's work tree), written
// with temp file, fsync, rename, fsync of the directory.
//
// # Trust
//
// Download receives [artifact.File] streams from an [artifact.Reader] that
// has checked the artifact's signature and header before the first payload
// byte; each file's sha256 is checked as it is read, and the Read that
// reaches its end returns [artifact.ErrDigest] instead of io.EOF when the
// bytes were tampered with. Nothing is made bootable or active during
// Download: [Rootfs] writes only to the inactive partition, which the
// bootloader does not boot, and flips the boot switch in ArtifactInstall
// only when Download saw the image end with a matching digest, fsynced it,
// and recorded that. A tampered or truncated image leaves a partial image in
// the inactive partition: harmless, since nothing points the bootloader at
// it, and the next download overwrites it.
//
// The agent must call ArtifactInstall only after the whole artifact was read
// to io.EOF ([DownloadAll] does that), so that every file the manifest
// lists was present and intact.
//
// # A/B root filesystems
//
// [Rootfs] streams the rootfs-image payload into the partition that is not
// running (the one mender_boot_part does not name), refusing an image larger
// than the partition; ArtifactInstall is [bootenv.Switch]; after the reboot
// ArtifactVerifyReboot checks that the running partition is the new one
// ([RootfsOptions.Booted]: /proc/cmdline and the mounted root on a device,
// the simulator's marker in device/sim) and runs the optional health check
// command; ArtifactCommit is [bootenv.Commit]; ArtifactRollback is
// [bootenv.Rollback] to the old partition. NeedsArtifactReboot is
// Automatic: the agent reboots (the simulator: stops the agent, runs its
// boot step, starts it again).
//
// # Update modules
//
// [Module] runs an executable from /usr/share/mender/modules/v3/<type> the
// way the Mender client does, so modules written for Mender run unchanged:
// invocation "<module> <State> <tree>" with the working directory set to the
// tree <workdir>/payloads/<NNNN>/tree, the header files under header/, the
// files under files/ or streamed through the stream-next and streams/ FIFOs,
// the "Yes"/"No"/"Automatic" answers of the NeedsArtifactReboot and
// SupportsRollback queries, exit status 0 for success, a timeout after which
// the module's process group gets SIGTERM and, a grace period later,
// SIGKILL. See [ModuleOptions] and module.go for the details.
//
// # State scripts
//
// [Runner] runs the scripts named <State>_<Enter|Leave|Error>_<NN>[_comment]
// around each state: Idle, Sync and Download scripts from the root
// filesystem's scripts directory (/etc/mender/scripts), the Artifact* scripts
// that came in the artifact's header (stored by [Runner.Store]). They run in
// NN order; exit status 0 is success, 21 asks to be run again after
// RetryInterval for at most RetryTimeout, anything else fails the state
// (Enter and Leave) or is logged and ignored (Error scripts).
//
// The agent's order around a state S is:
//
//	Run(S, Enter); do S; Run(S, Leave)       on success
//	Run(S, Enter); do S; Run(S, Error)       when Enter or S failed
//
// with Mender's one exception: ArtifactReboot_Leave runs after
// ArtifactVerifyReboot, and no scripts run between ArtifactReboot and
// ArtifactVerifyReboot (there are no ArtifactVerifyReboot scripts).
//
// # What the agent does with this package
//
//   - Once the artifact's header is read (signature checked): make the
//     installers with [Installers.New], one per payload, and store the
//     header's scripts with [Runner.Store]; clear them ([Runner.Clear]) when
//     the deployment ends.
//   - Download: [DownloadAll], between the Download_Enter and Download_Leave
//     scripts.
//   - Reboots: combine the installers' NeedsArtifactReboot answers with
//     [CombineReboots]; for RebootYes call ArtifactReboot, for
//     RebootAutomatic reboot the host (the same for ArtifactRollbackReboot).
//   - After any restart, make the installers again from the stored
//     artifact header and enter the recorded state again: every method
//     finds what it needs on disk.
//   - Health checks: [RootfsOptions.HealthCheck] runs a command inside
//     ArtifactVerifyReboot; checks of the agent's own (services, the server
//     reachable) go between ArtifactVerifyReboot and ArtifactCommit, and a
//     failure there leads to ArtifactRollback like any other.
//
// # Processes
//
// Modules, scripts and the health check run through the small [Exec]
// interface; [OSExec] is the real one, and tests fake it.
package install
