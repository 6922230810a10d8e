// Package bootenv reads and writes the bootloader environment: the few
// variables through which the agent and the bootloader agree on which root
// filesystem to boot.
//
// # The A/B model
//
// A device has two root filesystem partitions, A and B. One is active (the
// running system); the other is where an update is written. After the image
// is written and verified, the agent flips the boot switch; the bootloader
// then boots the new partition on trial, and only a commit from the new
// system makes the switch permanent. If the new system never commits — it
// hangs, reboots, or fails its health check — the bootloader falls back to
// the old partition on its own.
//
// # The Mender convention
//
// The variables are those Mender uses, so bootloader scripts written for
// Mender (meta-mender's U-Boot integration, grub-mender-grubenv) read them
// unchanged:
//
//	mender_boot_part      partition number to boot, decimal ("2", "3")
//	mender_boot_part_hex  the same number in lowercase hex ("2", "3", "a"),
//	                      for U-Boot commands such as "load mmc 0:${mender_boot_part_hex}"
//	upgrade_available     "1" while a new partition is on trial, "0" otherwise
//	bootcount             boots attempted during the trial
//
// Who writes what, when:
//
//   - Boot switch (agent, ArtifactInstall, after the image checks out):
//     mender_boot_part and mender_boot_part_hex = the new partition,
//     upgrade_available=1, bootcount=0 — all four in one write ([Switch]).
//     Were they written one by one, a power cut between two of them could
//     leave a bootloader that boots the new partition with no trial, or
//     counts a trial of the old one.
//   - Each boot (bootloader): if upgrade_available=1, it increments bootcount
//     and saves; when bootcount exceeds its bootlimit it switches
//     mender_boot_part back to the other partition and clears
//     upgrade_available (U-Boot's altbootcmd; grub-mender-grubenv does the
//     same). The agent never increments bootcount.
//   - Commit (agent, running the new partition, health checks passed):
//     upgrade_available=0, bootcount=0 ([Commit]).
//   - Rollback (agent, before or after the reboot): mender_boot_part and
//     mender_boot_part_hex = the old partition, upgrade_available=0,
//     bootcount=0 ([Rollback]).
//
// [ReadState] reads the four back, and refuses a mender_boot_part_hex that
// names another partition than mender_boot_part.
//
// # Backends
//
// [Env] is the interface; [Env.Set] writes several variables in one update.
// Each backend documents what "atomic" means for it:
//
//   - [UBoot]: the binary environment U-Boot and fw_printenv/fw_setenv
//     (libubootenv) use, located by an fw_env.config, read and written in Go.
//     With two copies (redundant environment) a write goes to the inactive
//     copy and a power cut at any instant leaves the other one valid. With a
//     single copy a write is in place and not power-safe.
//   - [GRUB]: the 1024-byte environment block file grub-editenv writes,
//     replaced atomically (temp file, fsync, rename, fsync dir).
//   - [File]: a plain name=value file for tests and the simulated device,
//     replaced the same way.
//   - [Tools]: runs fw_printenv/fw_setenv, for devices whose environment only
//     the vendor's tools can reach; as atomic as the tools are (fw_setenv -s
//     writes all variables in one store).
//
// Writers in one process are serialised by each value's mutex. Across
// processes, [UBoot] takes the flock fw_setenv takes; [GRUB] and [File] take
// none (neither does grub-editenv): two processes writing at once can lose
// one's update, though never corrupt the file.
//
// An empty value in [Env.Set] deletes the variable, as "fw_setenv name" and
// U-Boot's "setenv name" do, in every backend.
package bootenv
