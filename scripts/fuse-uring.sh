#!/bin/bash
# Run a command with FUSE over io_uring switched on in the kernel, then
# put the setting back. The fuse module's enable_uring parameter is off
# by default. It decides only whether FUSE connections made while it is
# on may use io_uring, so other mounts keep working either way.
#
# Usage, as root: scripts/fuse-uring.sh COMMAND [ARG...]
set -uo pipefail

param=/sys/module/fuse/parameters/enable_uring

if [ $# -eq 0 ]; then
	echo "usage: fuse-uring.sh COMMAND [ARG...]" >&2
	exit 2
fi
if [ ! -w "$param" ]; then
	echo "fuse-uring.sh: $param is missing or not writable (kernel older than 6.14, or not root); running without FUSE over io_uring" >&2
	exec "$@"
fi

old=$(cat "$param")
restore() {
	echo "$old" >"$param"
}
trap restore EXIT
trap 'exit 130' INT TERM
echo Y >"$param" || exit 1
"$@"
