// Package monitor runs the device's monitoring checks and keeps their alert
// state. It is the device half of Gitfleet monitoring: checks are declared in
// Git (schema MonitorCheck), the agent hands them to a Monitor as plain Check
// values, and the Monitor turns what its probes observe into alert events
// that the agent delivers to the controller.
//
// # Model
//
// A Check names exactly one probe. At every interval (the check's own, or the
// probe's default) the Monitor runs the probe's scan, which returns
// observations: each has a key (which condition: a port, a path, a PID) and
// an evidence line (what was seen, in words). Observations come in two
// flavours:
//
//   - a condition ("level"): present while it holds, such as a port listening
//     outside the allow list or a changed file digest. It is raised when it
//     first appears and cleared when a later scan no longer sees it.
//   - an occurrence ("event"): something that happened once, such as a
//     matching log line or a PID change. It is raised when it happens and
//     cleared only by the check's expiry.
//
// Each (check, key) pair has its own alert state machine:
//
//	closed --observed--> open --recovered (level) / expiry--> closed
//
// An alert is raised once per condition: further observations of an open
// alert change nothing. An open alert older than the check's expiry is
// closed as "expired"; a condition still present then stays quiet until it
// recovers and appears again, so a stuck condition does not raise an alert at
// every expiry. State changes that come too fast are damped: FlapThreshold
// changes within FlapWindow mark the alert as flapping, one "flapping" event
// is sent, and no further notification goes out until the alert has been
// stable for FlapWindow, when its current state is sent once.
//
// A probe that cannot run (a missing interface, no permission) reports a
// check error: one "check_error" event per distinct error, one "check_ok" when
// the check works again. A check error is never an alert.
//
// # Persistence and delivery
//
// Alert states, each probe's baseline (the set-uid files, digests, PIDs, log
// offsets first seen) and the outgoing queue are written atomically to one
// state file (device/atomicfile) whenever they change, so a restart or reboot
// neither raises an alert again nor loses one. Events wait in a bounded queue
// (oldest dropped first, counted in Dropped) until Drain hands them to a
// sender function; each event has a sequence number the server can use as an
// idempotency key.
//
// After an update, the agent passes the new image's expected digests to
// Expect: a watched file whose new digest is the expected one becomes the new
// baseline without an alert.
//
// # Probes, cost and default interval
//
// Probes read /proc, /sys and /etc under Options.Root (default "/") directly,
// never the output of tools. Costs are per scan on a small device:
//
//	probe              default interval  cost per scan
//	log (file)         5s                one stat, reads only new bytes (≤ 1 MiB per scan, lines ≤ 4 KiB)
//	log (@command)     5s                one long-running child, restarted with backoff (1s..5m); reads its stdout
//	service            30s               one cgroup.procs read (unit) or one pass over /proc/*/comm (process)
//	listeningPorts     60s               /proc/net/{tcp,tcp6,udp,udp6}; /proc/*/fd only when a port is outside the allow list
//	setuid             10m               one walk of the watched trees (≤ 100,000 entries)
//	fileChange         5m                one stat per file; sha256 only when size, mtime, ctime or inode changed
//	processRestart     30s               one pass over /proc/*/comm
//	traffic            60s               two reads of /sys/class/net/IF/statistics
//	wifi               60s               /proc/net/wireless and one wpa_supplicant control-socket request
//	rootLogin          5s                as log
//	failedDeployments  10s               none: the agent reports deployment outcomes to the Monitor
//	libraryInjection   5m                one read of /etc/ld.so.preload and of each /proc/PID/environ (≤ 64 KiB each)
//
// No probe keeps a file open between scans except a followed log file (one
// descriptor) and a command's pipe (one descriptor). Step holds the
// Monitor's lock while probes scan, so Drain and ReportDeployment wait for
// the longest scan (a set-uid walk or the digest of a large changed file).
//
// # What the probes can and cannot see
//
//   - listeningPorts: every listening TCP socket and every unconnected bound
//     UDP socket in the agent's network namespace, loopback included; the
//     owner is found by matching the socket inode against /proc/PID/fd links,
//     which needs root for other users' processes (otherwise the evidence says
//     the owner is unknown).
//   - libraryInjection: /proc/PID/environ is the environment a process was
//     started with; a process may overwrite that memory, so this is a
//     tripwire, not proof of absence. Needs root to read other users'
//     processes.
//   - wifi: the kernel lists wireless interfaces in /proc/net/wireless but
//     gives their SSID only over nl80211 netlink; the probe asks
//     wpa_supplicant over its control socket (/run/wpa_supplicant/IF), and a
//     device without wpa_supplicant gets a check error saying so.
//   - rootLogin: without /var/log/auth.log or /var/log/secure the probe
//     follows "journalctl --follow" (the journal's files are not read
//     directly).
//   - log: a file truncated and refilled beyond its old length between two
//     scans is read from the old offset (the truncation is not seen); a
//     rotated file is finished before the new one is read.
//   - processRestart: the set of PIDs named so; a program that respawns
//     workers under the same name raises an alert at each respawn.
package monitor
