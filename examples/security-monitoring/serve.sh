#!/bin/sh
# Serves this example as the quickstart serves its own: a fleet repository
# made from examples/security-monitoring, the scanner artifact built and
# signed into an artifact store, and the controller following the
# repository on the embedded store (no Redis needed).
#
#   examples/security-monitoring/serve.sh      # from the repository's root
#
# State lives in .gitfleet/security-monitoring (delete it to start over):
# the fleet repository, the store with vuln-scan-1.0.mender, the signing
# key and the controller's data. Change the fleet the Gitfleet way: edit
# the files in .gitfleet/security-monitoring/fleet and commit; the
# controller fetches every 10 seconds.
set -eu
cd "$(dirname "$0")/../.."
root=$PWD/.gitfleet/security-monitoring
repo=$root/fleet
store=$root/store
bin=$PWD/bin/gitfleet
listen=${GITFLEET_EXAMPLE_LISTEN:-127.0.0.1:8444}

[ -x "$bin" ] || go build -o bin/ ./cmd/gitfleet

if [ ! -d "$repo/.git" ]; then
	mkdir -p "$repo" "$store/artifacts"
	cp -R examples/security-monitoring/. "$repo/"
	# A release key of this example's own, the scanner artifact signed
	# with it, and the SigningKey manifest trusting it.
	"$bin" keys generate --type ecdsa --out "$root/release" >/dev/null
	GITFLEET=$bin examples/security-monitoring/scanner/build.sh \
		-k "$root/release.key" -o "$store/artifacts/vuln-scan-1.0.mender"
	{
		echo "# The key this example's artifacts are signed with (made by serve.sh)."
		echo "apiVersion: gitfleet.io/v1"
		echo "kind: SigningKey"
		echo "metadata:"
		echo "  name: release"
		echo "spec:"
		echo "  algorithm: ecdsa-p256"
		echo "  environment: production"
		echo "  publicKey: |"
		sed 's/^/    /' "$root/release.pub"
	} >"$repo/keys.yaml"
	git -C "$repo" init -q -b main
	git -C "$repo" add -A
	git -C "$repo" -c user.name="Gitfleet example" -c user.email="example@gitfleet.invalid" \
		commit -q -m "Security monitoring: six gateways, every probe, the vulnerability scanner"
	echo "serve.sh: created the fleet repository $repo"
fi

"$bin" validate "$repo"

# The management token: random, made once, kept with the example's state.
if [ ! -s "$root/management-token" ]; then
	(umask 077 && head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$root/management-token")
fi
token=$(cat "$root/management-token")
api="curl -sk -H 'Authorization: Bearer $token' https://$listen/api/management/v1"

cat <<TXT

serve.sh: starting the controller on https://$listen (Ctrl-C stops it).

  Status:     $api/status
  Rollouts:   $api/rollouts
  Alerts:     $api/alerts?state=open
              $bin alerts --server https://$listen --token $token \\
                  --ca-cert $root/data/dev-tls.crt --open
  Change it:  edit $repo, then git -C $repo commit -am "…"

  The Notifications send nothing until their secrets exist: export
  GITFLEET_SECURITY_WEBHOOK_SECRET, write the Slack URL to
  /etc/gitfleet/slack-security-url, and pass --smtp-addr and --smtp-from
  (arguments to this script go to gitfleet serve). Until then the log says
  "notification not configured" for each, at every commit.

TXT
exec "$bin" serve --repo "file://$repo" --branch main --data-dir "$root/data" \
	--artifact-store "$store" --listen "$listen" \
	--management-token-file "$root/management-token" --poll-interval 10s "$@"
