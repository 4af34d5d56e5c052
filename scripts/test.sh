#!/bin/bash
# Install the dependencies, then run the whole test suite twice: against the
# normal build (make check) and against the ASan and UBSan build
# (make check-asan); then the integration tests once more with passthrough
# off (make check-passthrough-off) and once more with FUSE over io_uring
# switched on in the kernel (make check-uring). Ends with one line "N passed, N failed"
# that adds up the runs, and exits non-zero if any run failed, reported a
# failed test, or printed no summary line.
#
# Run as root from anywhere: scripts/test.sh
set -uo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

if [ "$(id -u)" -ne 0 ]; then
	echo "test.sh: must run as root, because the tests mount filesystems" >&2
	exit 1
fi

"$repo/scripts/install-deps.sh" || exit 1

# mount(8) finds lamina only in the shell's default search path, so the
# test of mount -t fuse.lamina needs the build installed there.
if ! make --no-print-directory -C "$repo" install >/dev/null; then
	echo "test.sh: make install failed" >&2
	echo "0 passed, 1 failed"
	exit 1
fi

logs=$(mktemp -d /tmp/lamina-test-logs.XXXXXX)
trap 'rm -rf "$logs"' EXIT

# The summary line that tests/run.sh prints last, with an optional
# skipped count.
summary_re='^([0-9]+) passed, ([0-9]+) failed(, ([0-9]+) skipped)?$'

total_passed=0
total_failed=0
total_skipped=0
status=0

for target in check check-asan check-passthrough-off check-uring; do
	log=$logs/$target.log
	echo "test.sh: make $target"
	make -s --no-print-directory -C "$repo" "$target" 2>&1 | tee "$log"
	make_status=${PIPESTATUS[0]}

	summary=$(tr -d '\r' <"$log" | grep -E "$summary_re" | tail -n 1)
	if [ -z "$summary" ]; then
		echo "test.sh: make $target printed no 'N passed, N failed' line" \
			"(exit status $make_status); counting it as one failure" >&2
		status=1
		total_failed=$((total_failed + 1))
		continue
	fi
	[[ $summary =~ $summary_re ]]
	total_passed=$((total_passed + BASH_REMATCH[1]))
	total_failed=$((total_failed + BASH_REMATCH[2]))
	total_skipped=$((total_skipped + ${BASH_REMATCH[4]:-0}))

	if [ "$make_status" -ne 0 ]; then
		echo "test.sh: make $target failed with exit status $make_status" >&2
		status=1
	fi
done

if [ "$total_failed" -ne 0 ]; then
	status=1
fi

if [ "$total_skipped" -ne 0 ]; then
	echo "$total_passed passed, $total_failed failed, $total_skipped skipped"
else
	echo "$total_passed passed, $total_failed failed"
fi
exit "$status"
