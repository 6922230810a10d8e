#!/bin/sh
# Builds the vuln-scan artifact: an update-module artifact of type vuln-scan
# whose payload is the scan, its report template and its systemd units
# (scanner/payload), and optionally the Trivy binary for the gateways'
# architecture. Writes OUTPUT and OUTPUT.sha256, the digest file the
# controller's artifact store checks.
#
#   scanner/build.sh -k release.key -o store/artifacts/vuln-scan-1.0.mender
#   scanner/build.sh -k release.key -s ~/trivy-arm64/trivy -o ...
#
# Options:
#   -k KEY      private key (PEM) to sign with; the Artifact manifest's
#               signedBy key must be its public half. Unsigned without -k.
#   -o OUTPUT   the artifact file (default vuln-scan-1.0.mender)
#   -n NAME     artifact name (default vuln-scan-1.0; the Artifact manifest's
#               metadata.name)
#   -V VERSION  the version it provides as rootfs-image.vuln-scan.version
#               (default 1.0)
#   -t TYPE     device type; repeatable (default edge-gateway)
#   -s TRIVY    bundle this scanner binary; without it the gateways need
#               trivy on PATH
#
# The artifact tool is $GITFLEET (default: gitfleet on PATH), or
# mender-artifact when MENDER_ARTIFACT names it: both take the same flags.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
key=
out=vuln-scan-1.0.mender
name=vuln-scan-1.0
version=1.0
types=
scanner=

usage() {
	sed -n '2,/^set -eu/p' "$0" | sed -e '/^set -eu/d' -e 's/^# \{0,1\}//' >&2
	exit 2
}

while getopts k:o:n:V:t:s:h opt; do
	case $opt in
	k) key=$OPTARG ;;
	o) out=$OPTARG ;;
	n) name=$OPTARG ;;
	V) version=$OPTARG ;;
	t) types="$types $OPTARG" ;;
	s) scanner=$OPTARG ;;
	*) usage ;;
	esac
done
shift $((OPTIND - 1))
[ $# -eq 0 ] || usage
[ -n "$types" ] || types=" edge-gateway"

for f in vuln-scan findings.tpl vuln-scan.service vuln-scan.timer; do
	[ -f "$here/payload/$f" ] || {
		echo "build.sh: missing $here/payload/$f" >&2
		exit 1
	}
done
sh -n "$here/payload/vuln-scan"
if [ -n "$scanner" ]; then
	[ -x "$scanner" ] || {
		echo "build.sh: $scanner is not an executable file" >&2
		exit 1
	}
	[ "${scanner##*/}" = trivy ] || {
		echo "build.sh: the scanner file must be called trivy (the module installs it as /usr/local/lib/vuln-scan/trivy), not ${scanner##*/}" >&2
		exit 1
	}
fi

# The command, as positional parameters: one tool or the other.
if [ -n "${MENDER_ARTIFACT:-}" ]; then
	set -- "$MENDER_ARTIFACT" write module-image
else
	set -- "${GITFLEET:-gitfleet}" artifact write module-image
fi
set -- "$@" -T vuln-scan -n "$name" -o "$out" \
	--software-name vuln-scan --software-version "$version"
for t in $types; do
	set -- "$@" -t "$t"
done
for f in vuln-scan findings.tpl vuln-scan.service vuln-scan.timer; do
	set -- "$@" -f "$here/payload/$f"
done
[ -z "$scanner" ] || set -- "$@" -f "$scanner"
[ -z "$key" ] || set -- "$@" -k "$key"

mkdir -p "$(dirname "$out")"
"$@" >/dev/null
(cd "$(dirname "$out")" && sha256sum "${out##*/}" >"${out##*/}.sha256")
echo "build.sh: wrote $out ($name for$types) and $out.sha256"
