#!/bin/bash
# Run lamina's tests: every unit test binary in $UNIT_DIR, then pytest over
# tests/integration and tests/acceptance (when present) inside a private
# mount namespace, so no test mount can leak into the caller's namespace.
#
# The last line is "N passed, N failed" (", N skipped" is added when
# pytest skipped tests), counting unit binaries and pytest test cases
# together. A pytest error, such as a failed fixture teardown, counts as a
# failure. The exit status is non-zero when anything failed.
#
# Environment:
#   LAMINA    the lamina binary the tests drive (default: build/lamina)
#   UNIT_DIR  directory of unit test binaries; each exits 0 on success
#   UNIT_TIMEOUT  seconds one unit binary may run (default: 300)
# Arguments are passed on to pytest, e.g. tests/run.sh -k readdir; test
# paths among them replace the default suites.
#
# Run as root: the tests mount filesystems. make check sets LAMINA and
# UNIT_DIR.
set -uo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

if [ "$(id -u)" -ne 0 ]; then
	echo "run.sh: must run as root, because the tests mount filesystems" >&2
	echo "0 passed, 1 failed"
	exit 1
fi

export LAMINA=${LAMINA:-$repo/build/lamina}
export PYTHONDONTWRITEBYTECODE=1

work=$(mktemp -d /tmp/lamina-run.XXXXXX)
trap 'rm -rf "$work"' EXIT

passed=0
failed=0
skipped=0

# Unit tests ------------------------------------------------------------

# An unset UNIT_DIR means no unit tests, as in make check-passthrough-off.
if [ -n "${UNIT_DIR:-}" ] && [ -d "$UNIT_DIR" ]; then
	for unit in "$UNIT_DIR"/*; do
		[ -f "$unit" ] && [ -x "$unit" ] || continue
		name=$(basename "$unit")
		if timeout "${UNIT_TIMEOUT:-300}" "$unit" >"$work/unit.log" 2>&1; then
			echo "unit $name: passed"
			passed=$((passed + 1))
		else
			status=$?
			echo "unit $name: failed with exit status $status; output:"
			sed 's/^/    /' "$work/unit.log"
			failed=$((failed + 1))
		fi
	done
elif [ -n "${UNIT_DIR:-}" ]; then
	echo "run.sh: UNIT_DIR=$UNIT_DIR is not a directory, so no unit tests ran; build them with make unit or unset UNIT_DIR" >&2
fi

# Integration and acceptance tests ---------------------------------------

suites=("$repo/tests/integration")
if [ -d "$repo/tests/acceptance" ]; then
	suites+=("$repo/tests/acceptance")
fi
# Test paths among the arguments (a file, a dir or file::test) replace
# the default suites, so tests/run.sh tests/integration/test_xattr.py runs
# that file alone.
for arg in "$@"; do
	if [[ $arg != -* ]] && { [ -e "${arg%%::*}" ]; }; then
		suites=()
		break
	fi
done

junit=$work/junit.xml
unshare -m --propagation private \
	/usr/bin/python3 -m pytest -p no:cacheprovider -rfEs \
	--junitxml="$junit" --rootdir="$repo" "${suites[@]}" "$@"
pytest_status=$?

# Count test cases from the JUnit report: a case with a <failure> or
# <error> element failed (this includes errors in fixture teardown), one
# with <skipped> was skipped, and any other case passed.
counts=$(/usr/bin/python3 - "$junit" <<'EOF'
import sys
import xml.etree.ElementTree as ET

try:
    root = ET.parse(sys.argv[1]).getroot()
except (OSError, ET.ParseError):
    print("missing")
    sys.exit(0)
passed = failed = skipped = 0
for case in root.iter("testcase"):
    tags = {child.tag for child in case}
    if tags & {"failure", "error"}:
        failed += 1
    elif "skipped" in tags:
        skipped += 1
    else:
        passed += 1
# A collection error is reported as a test case too; an error outside any
# test case shows up only in the suite's errors attribute.
for suite in root.iter("testsuite"):
    if int(suite.get("tests", "0")) == 0 and int(suite.get("errors", "0")):
        failed += int(suite.get("errors"))
print(passed, failed, skipped)
EOF
)

if [ "$counts" = "missing" ]; then
	echo "run.sh: pytest wrote no JUnit report (exit status $pytest_status)" >&2
	failed=$((failed + 1))
else
	read -r p f s <<<"$counts"
	passed=$((passed + p))
	failed=$((failed + f))
	skipped=$((skipped + s))
	# Exit status 5 means no tests were collected; 0 and 1 are normal.
	# Anything else (interrupted, internal error, usage error) is a
	# failure even if the report counted no failed case.
	case $pytest_status in
	0 | 1 | 5) ;;
	*)
		echo "run.sh: pytest exited with status $pytest_status" >&2
		if [ "$f" -eq 0 ]; then
			failed=$((failed + 1))
		fi
		;;
	esac
fi

if [ "$skipped" -ne 0 ]; then
	echo "$passed passed, $failed failed, $skipped skipped"
else
	echo "$passed passed, $failed failed"
fi
[ "$failed" -eq 0 ]
