#!/bin/sh
# Tests the vuln-scan update module and the scan in a temporary directory,
# never touching the real system: the module installs under a scratch root
# (VULN_SCAN_ROOT), a fake systemctl records what it is asked, and a fake
# trivy writes a report in the template's format.
#
#   sh scanner/test.sh
#
# With VULN_SCAN_TEST_KEEP=DIR the scratch files are made in DIR and left
# there (DIR/root/var/log/vuln-scan.log is the findings log the scan wrote).

# The sh -c commands below expand their own arguments.
# shellcheck disable=SC2016
set -eu

here=$(cd "$(dirname "$0")" && pwd)
if [ -n "${VULN_SCAN_TEST_KEEP:-}" ]; then
	t=$VULN_SCAN_TEST_KEEP
	mkdir -p "$t"
else
	t=$(mktemp -d "${TMPDIR:-/tmp}/vuln-scan-test.XXXXXX")
	trap 'rm -rf "$t"' EXIT
fi
module=$here/vuln-scan
root=$t/root
tree=$t/tree
bin=$t/bin
failures=0

ok() { echo "ok - $*"; }
not_ok() {
	echo "not ok - $*"
	failures=$((failures + 1))
}
# check DESCRIPTION COMMAND...: runs the command as the assertion.
check() {
	what=$1
	shift
	if "$@"; then ok "$what"; else not_ok "$what"; fi
}
# has FILE LINE: FILE holds exactly LINE as one of its lines.
has() { grep -Fqx -- "$2" "$1"; }
# mode FILE MODE: FILE's permission bits are exactly MODE (octal).
mode() { [ -n "$(find "$1" -prune -perm "$2")" ]; }

mkdir -p "$root" "$bin"

# A systemctl that records its arguments and keeps "enabled" in a file.
cat >"$bin/systemctl" <<EOF
#!/bin/sh
echo "\$*" >>"$t/systemctl.log"
case "\$1" in
is-enabled) [ -e "$t/timer-enabled" ] ;;
enable) : >"$t/timer-enabled" ;;
disable) rm -f "$t/timer-enabled" ;;
esac
EOF
# A trivy that writes FAKE_TRIVY_REPORT where --output says, records its
# arguments one per line, and fails with FAKE_TRIVY_EXIT (and a message)
# when that is set.
cat >"$bin/trivy" <<EOF
#!/bin/sh
printf '%s\n' "\$@" >"$t/trivy.args"
if [ -n "\${FAKE_TRIVY_EXIT:-}" ]; then
	echo "2026-03-02T04:11:09Z	FATAL	init error: DB error: failed to download vulnerability DB" >&2
	exit "\$FAKE_TRIVY_EXIT"
fi
while [ \$# -gt 0 ]; do
	if [ "\$1" = --output ]; then cp "\$FAKE_TRIVY_REPORT" "\$2"; fi
	shift
done
EOF
chmod 755 "$bin/systemctl" "$bin/trivy"

export VULN_SCAN_ROOT="$root" VULN_SCAN_SYSTEMCTL="$bin/systemctl"

# payload [EXTRA...]: a fresh work tree whose files/ holds the payload,
# plus the extra files named.
payload() {
	rm -rf "$tree"
	mkdir -p "$tree/files" "$tree/tmp"
	cp "$here/payload/vuln-scan" "$here/payload/findings.tpl" \
		"$here/payload/vuln-scan.service" "$here/payload/vuln-scan.timer" "$tree/files/"
	for extra in "$@"; do
		cp "$extra" "$tree/files/"
	done
}
state() { "$module" "$1" "$tree"; }

# --- syntax -----------------------------------------------------------------
for f in "$module" "$here/payload/vuln-scan" "$here/build.sh" "$0"; do
	check "sh -n ${f##*/}" sh -n "$f"
done

# --- queries ----------------------------------------------------------------
payload
check "NeedsArtifactReboot answers No" [ "$(state NeedsArtifactReboot)" = No ]
check "SupportsRollback answers Yes" [ "$(state SupportsRollback)" = Yes ]
check "Download does not stream and says nothing" [ -z "$(state Download)" ]

# --- a wrong artifact installs nothing ----------------------------------------
echo 'rm -rf /' >"$t/evil.sh"
payload "$t/evil.sh"
check "an unexpected payload file fails ArtifactInstall" sh -c '! "$0" ArtifactInstall "$1" 2>/dev/null' "$module" "$tree"
payload
rm "$tree/files/vuln-scan.timer"
check "a missing payload file fails ArtifactInstall" sh -c '! "$0" ArtifactInstall "$1" 2>/dev/null' "$module" "$tree"
check "nothing was installed" [ -z "$(find "$root" -type f)" ]

# --- install on a gateway without the scanner ---------------------------------
payload
rm -f "$t/systemctl.log"
check "ArtifactInstall succeeds" state ArtifactInstall
check "scan script installed, mode 0755" mode "$root/usr/local/sbin/vuln-scan" 0755
check "scan script is the payload's" cmp -s "$root/usr/local/sbin/vuln-scan" "$here/payload/vuln-scan"
check "template installed, mode 0644" mode "$root/usr/local/share/vuln-scan/findings.tpl" 0644
check "service unit installed, mode 0644" mode "$root/etc/systemd/system/vuln-scan.service" 0644
check "timer unit installed, mode 0644" mode "$root/etc/systemd/system/vuln-scan.timer" 0644
check "no scanner binary installed (none in the artifact)" [ ! -e "$root/usr/local/lib/vuln-scan/trivy" ]
check "empty findings log made, mode 0640" sh -c '[ ! -s "$1" ] && [ -n "$(find "$1" -perm 0640)" ]' sh "$root/var/log/vuln-scan.log"
check "systemd reloaded, timer enabled and (re)started" sh -c 'has() { grep -Fqx -- "$2" "$1"; }
	has "$0" daemon-reload && has "$0" "enable vuln-scan.timer" && has "$0" "restart vuln-scan.timer"' "$t/systemctl.log"

# --- scans ------------------------------------------------------------------
# The installed scan, with the fake trivy first on PATH.
scan=$bin/scan
printf '#!/bin/sh\nPATH="%s:$PATH" exec "%s" "$@"\n' "$bin" "$root/usr/local/sbin/vuln-scan" >"$scan"
chmod 755 "$scan"
# A report as findings.tpl prints it: a leading empty line, a finding twice
# (the same package found in two places), a fixed version with a blank in
# it, MEDIUM (logged only once the conf below asks for it), and a line that
# is no finding.
cat >"$t/report" <<'EOF'

CVE-2024-45490 HIGH expat 2.6.2-r0 2.6.3-r0
CVE-2024-6119 CRITICAL openssl 3.0.13-r0 3.0.15-r0
CVE-2023-5678 MEDIUM openssl 3.0.13-r0 3.0.13-r1, 3.1.5-r0
CVE-2024-45490 HIGH expat 2.6.2-r0 2.6.3-r0
GHSA-xxxx-yyyy-zzzz HIGH golang.org/x/net v0.17.0 -
not a finding
EOF
export FAKE_TRIVY_REPORT="$t/report"
log=$root/var/log/vuln-scan.log
check "a scan succeeds" sh -c '"$0" >/dev/null' "$scan"
sed 's/^[0-9TZ:-]* //' "$log" >"$t/log.stripped"
cat >"$t/log.want" <<'EOF'
vuln-scan: CVE-2024-6119 CRITICAL openssl 3.0.13-r0 fixed=3.0.15-r0
vuln-scan: CVE-2024-45490 HIGH expat 2.6.2-r0 fixed=2.6.3-r0
vuln-scan: GHSA-xxxx-yyyy-zzzz HIGH golang.org/x/net v0.17.0 fixed=-
vuln-scan: scan finished: 1 critical, 2 high
EOF
if cmp -s "$t/log.want" "$t/log.stripped"; then
	ok "findings logged once each, most severe first, then the summary"
else
	not_ok "findings log; want:"
	sed 's/^/#   /' "$t/log.want"
	echo "#  got:"
	sed 's/^/#   /' "$log"
fi
check "every line starts with a UTC time" sh -c '! grep -v "^[0-9]\{4\}-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9]Z vuln-scan: " "$0"' "$log"
check "trivy asked for a rootfs scan of HIGH and CRITICAL vulnerabilities" sh -c '
	head -n 1 "$0" | grep -qx rootfs &&
	grep -A1 -x -- --scanners "$0" | tail -n 1 | grep -qx vuln &&
	grep -A1 -x -- --severity "$0" | tail -n 1 | grep -qx HIGH,CRITICAL &&
	grep -A1 -x -- --template "$0" | tail -n 1 | grep -qx "@$1/usr/local/share/vuln-scan/findings.tpl" &&
	grep -A1 -x -- --cache-dir "$0" | tail -n 1 | grep -qx "$1/var/cache/vuln-scan" &&
	tail -n 1 "$0" | grep -qx "$1/"' "$t/trivy.args" "$root"

# /etc/vuln-scan.conf: other severities, extra arguments, a small log that
# rotates.
cat >"$root/etc/vuln-scan.conf" <<'EOF'
VULN_SCAN_SEVERITY=MEDIUM,HIGH,CRITICAL
VULN_SCAN_ARGS="--skip-db-update --offline-scan"
VULN_SCAN_LOG_MAX=100
EOF
check "a scan with /etc/vuln-scan.conf succeeds" sh -c '"$0" >/dev/null' "$scan"
check "the log over VULN_SCAN_LOG_MAX was rotated to .1" [ -s "$log.1" ]
check "the new log has this scan's five lines" [ "$(wc -l <"$log")" -eq 5 ]
check "the MEDIUM finding is logged" grep -q "vuln-scan: CVE-2023-5678 MEDIUM openssl 3.0.13-r0 fixed=3.0.13-r1,3.1.5-r0$" "$log"
check "the summary counts it as other" grep -q "vuln-scan: scan finished: 1 critical, 2 high, 1 other$" "$log"
check "the conf's severities and extra arguments reach trivy" sh -c '
	grep -A1 -x -- --severity "$0" | tail -n 1 | grep -qx MEDIUM,HIGH,CRITICAL &&
	grep -qx -- --skip-db-update "$0" && grep -qx -- --offline-scan "$0"' "$t/trivy.args"
rm "$root/etc/vuln-scan.conf" "$log.1"

# Failures are logged as such, for vuln-scan-failed.
: >"$log"
check "a failing scanner fails the scan" sh -c '! FAKE_TRIVY_EXIT=1 "$0" 2>/dev/null' "$scan"
check "... and logs ERROR with the scanner's last message" \
	grep -q "vuln-scan: ERROR scanner trivy failed: 2026-03-02T04:11:09Z FATAL init error: DB error: failed to download vulnerability DB$" "$log"
if command -v trivy >/dev/null 2>&1; then
	echo "ok - # skip no-scanner case: this machine has trivy on PATH"
else
	: >"$log"
	check "no scanner anywhere fails the scan" sh -c '! "$0" 2>/dev/null' "$root/usr/local/sbin/vuln-scan"
	check "... and logs ERROR no scanner" grep -q "vuln-scan: ERROR no scanner: " "$log"
fi
: >"$log"
check "service-ended after a timeout logs ERROR" sh -c 'SERVICE_RESULT=timeout EXIT_CODE=killed EXIT_STATUS=TERM "$0" service-ended' "$scan"
check "... naming the result" grep -q "vuln-scan: ERROR scan ended by systemd: timeout (killed TERM)$" "$log"
: >"$log"
check "service-ended after the scan's own failure or success logs nothing" sh -c '
	SERVICE_RESULT=exit-code "$0" service-ended && SERVICE_RESULT=success "$0" service-ended && [ ! -s "$1" ]' "$scan" "$log"

# --- rollback of a first install ----------------------------------------------
rm -f "$t/systemctl.log"
check "ArtifactRollback succeeds" state ArtifactRollback
check "rollback removed every installed file but the log" [ "$(find "$root" -type f)" = "$log" ]
check "rollback disabled and stopped the timer" grep -Fqx "disable --now vuln-scan.timer" "$t/systemctl.log"

# --- upgrade with a bundled scanner, then rollback -----------------------------
payload
state ArtifactInstall
mkdir -p "$t/bundle"
printf '#!/bin/sh\necho bundled\n' >"$t/bundle/trivy"
chmod 755 "$t/bundle/trivy"
echo "# version 2" >>"$t/v2-vuln-scan"
cat "$here/payload/vuln-scan" "$t/v2-vuln-scan" >"$t/vuln-scan.v2"
payload "$t/bundle/trivy"
cp "$t/vuln-scan.v2" "$tree/files/vuln-scan"
rm -f "$t/systemctl.log"
check "upgrade with a bundled scanner succeeds" state ArtifactInstall
check "the bundled scanner is installed, mode 0755" mode "$root/usr/local/lib/vuln-scan/trivy" 0755
check "the new scan script is installed" cmp -s "$root/usr/local/sbin/vuln-scan" "$t/vuln-scan.v2"
check "ArtifactRollback of the upgrade succeeds" state ArtifactRollback
check "the previous scan script is back" cmp -s "$root/usr/local/sbin/vuln-scan" "$here/payload/vuln-scan"
check "the bundled scanner is gone again" [ ! -e "$root/usr/local/lib/vuln-scan/trivy" ]
check "the timer, enabled before, was restarted" grep -Fqx "restart vuln-scan.timer" "$t/systemctl.log"
check "the timer was not disabled" sh -c '! grep -q "^disable" "$0"' "$t/systemctl.log"

if [ "$failures" -ne 0 ]; then
	echo "# $failures failed"
	exit 1
fi
echo "# all passed"
