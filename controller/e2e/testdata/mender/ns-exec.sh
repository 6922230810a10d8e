#!/bin/sh
# ns-exec.sh ROOT CMD [ARG...]
#
# Runs CMD with the stock Mender client's fixed paths replaced by the
# directories of one test device under ROOT:
#
#	ROOT/etc    → /etc/mender          (mender.conf, artifact_info, keys)
#	ROOT/share  → /usr/share/mender    (identity, inventory, update modules)
#	ROOT/data   → /var/lib/mender      (agent key, state database, device_type)
#
# It must run in a private mount namespace (the harness starts it under
# `unshare --mount --propagation private`): the mounts vanish with the last
# process in it, and the machine's own directories are never written.
set -eu
root=$1
shift
mount --bind "$root/etc" /etc/mender
mount --bind "$root/share" /usr/share/mender
if [ -d /var/lib/mender ]; then
	mount --bind "$root/data" /var/lib/mender
else
	# Debian makes /var/lib/mender a symlink to /data/mender, which need
	# not exist; a mount cannot land on a dangling link, so cover /var/lib
	# (in this namespace only) and put the data directory there.
	mount -t tmpfs -o size=1m,mode=0755 gitfleet-test /var/lib
	mkdir /var/lib/mender
	mount --bind "$root/data" /var/lib/mender
fi
exec "$@"
