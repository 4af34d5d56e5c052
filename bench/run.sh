#!/usr/bin/env bash
# Runs the side-by-side benchmark of lamina, native, kernel overlayfs,
# fuse-overlayfs and unionfs-fuse. See docs/benchmarks.md for the flags.
#
# Environment: LAMINA is the absolute path of the lamina binary. When it
# is unset or the binary does not work, lamina's column reads "failed".
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)

if [ "$(id -u)" -ne 0 ]; then
	echo "bench/run.sh: must run as root: it mounts file systems and writes /proc/sys/vm/drop_caches" >&2
	exit 1
fi

tmp=$(mktemp -d /tmp/lamina-bench.XXXXXX)

# The Python harness unmounts everything it mounted on every exit path it
# reaches. This is the last resort for when it was killed outright: each
# mount still below $tmp is detached, deepest first, which also ends the
# FUSE daemons serving them, and $tmp is removed only when nothing is
# mounted there any more. No process is signalled here, because this
# shell does not know the pids that the harness started.
cleanup() {
	local rc=$? mnt
	while read -r mnt; do
		umount -l "$mnt" || echo "bench/run.sh: lazy unmount of $mnt failed" >&2
	done < <(awk -v root="$tmp/" 'index($5, root) == 1 { print $5 }' /proc/self/mountinfo | sort -r)
	if awk -v root="$tmp/" 'index($5, root) == 1 { found = 1 } END { exit !found }' /proc/self/mountinfo; then
		echo "bench/run.sh: mounts remain below $tmp; leaving it in place" >&2
	else
		# A stopped process may still be finishing a write, so retry briefly.
		for _ in 1 2 3 4 5; do
			rm -rf --one-file-system "$tmp" 2>/dev/null && break
			sleep 1
		done
		[ ! -e "$tmp" ] || echo "bench/run.sh: could not remove $tmp" >&2
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

cc -O2 -Wall -Wextra -o "$tmp/statloop" "$here/statloop.c"

# Debian's python3 with the standard library only; a python3 earlier in
# PATH (pyenv, a virtualenv) is deliberately not used.
/usr/bin/python3 -B "$here/bench.py" --tmpdir="$tmp" --stat-helper="$tmp/statloop" "$@"
