"""index=on: a daemon killed in the middle of an indexed copy-up.

strace kills lamina (SIGKILL) on entry to one system call of a chmod,
unlink or rename of a hard-linked lower file, at each step where the
copy goes into workdir/index, is linked to its upper name and gets its
overlay.nlink. The step is found by its arguments in a trace of the same
operations, so the kill needs no timing. After the crash, kernel
overlayfs and lamina each mount a state made the same way. Both must
show every remaining name with the right link count and content. The
last name must keep them after the other names are removed and after
another mount.
"""

import errno
import os
import re
import shutil
import signal
import subprocess

import pytest

from conftest import force_unmount
from helpers import read_file, write_file

INDEX = ["index=on"]
NAMES = ("a", "b", "c")
TRACED = "linkat,renameat2,lsetxattr,setxattr,fsetxattr,unlinkat"
INDEX_NAME = r'"[0-9a-f]{20,}"'


def last_match(pattern):
    """Find the last trace line that matches pattern."""
    regex = re.compile(pattern)

    def find(lines):
        hits = [i for i, line in enumerate(lines) if regex.search(line)]
        return hits[-1] if hits else None
    return find


def removal_of_exchanged():
    """Find the unlinkat of the file that a whiteout exchange moved to
    the work directory: the removal of the upper link itself."""
    exchange = re.compile(r'renameat2\(\d+, ("#[^"]+"), \d+, "b", '
                          r'RENAME_EXCHANGE')

    def find(lines):
        for i, line in enumerate(lines):
            found = exchange.search(line)
            if not found:
                continue
            for j in range(i + 1, len(lines)):
                if re.search(rf'unlinkat\(\d+, {re.escape(found.group(1))}, 0',
                             lines[j]):
                    return j
        return None
    return find


NLINK_L = last_match(r'"trusted\.overlay\.nlink", "L')
NLINK_U = last_match(r'"trusted\.overlay\.nlink", "U')
LINK_INDEX = last_match(rf'linkat\(\d+, "#[^"]+", \d+, {INDEX_NAME}, 0')
RENAME_UP = last_match(r'renameat2\(\d+, "#[^"]+", \d+, "b", '
                       r'RENAME_NOREPLACE')
LINK_UP = last_match(rf'linkat\(\d+, {INDEX_NAME}, \d+, "b", 0')
WHITEOUT = last_match(r'renameat2\(\d+, "#[^"]+", \d+, "b", '
                      r'RENAME_EXCHANGE')
UNLINK_OLD = removal_of_exchanged()
MOVE = last_match(r'renameat2\(\d+, "b", \d+, "d", ')

# The steps of a first copy-up into the index, then of the link of a
# later name to the entry.
FIRST = [("nlink-lower", NLINK_L), ("link-index", LINK_INDEX),
         ("rename-up", RENAME_UP), ("nlink-upper", NLINK_U)]
LATER = [("nlink-lower", NLINK_L), ("link-up", LINK_UP),
         ("nlink-upper", NLINK_U)]
REMOVAL = [("whiteout", WHITEOUT), ("unlink-old", UNLINK_OLD)]

# (operation, whether another name was copied up first, steps)
SCENARIOS = [
    ("chmod", False, FIRST),
    ("unlink", False, FIRST + REMOVAL),
    ("rename", False, FIRST + [("move", MOVE)]),
    ("chmod", True, LATER),
    ("unlink", True, LATER + REMOVAL),
    ("rename", True, LATER + [("move", MOVE)]),
]
CASES = [pytest.param(op, before, name, find,
                      id=f"{op}-{'later' if before else 'first'}-{name}")
         for op, before, steps in SCENARIOS for name, find in steps]


def operate(stack, op):
    """Run the operation of a scenario on b, in one request."""
    if op == "chmod":
        os.chmod(stack.m("b"), 0o640)
    elif op == "unlink":
        os.unlink(stack.m("b"))
    else:
        os.rename(stack.m("b"), stack.m("d"))


def prepare(any_stack, before):
    """Make a stack of three names of one lower file, mounted once by
    lamina. With before, that mount copies up a, so that b is linked to
    the index entry later."""
    stack = any_stack("lamina")
    write_file(stack.lo(1, NAMES[0]), "data")
    for name in NAMES[1:]:
        os.link(stack.lo(1, NAMES[0]), stack.lo(1, name))
    stack.mount(extra=INDEX)
    if before:
        os.chmod(stack.m("a"), 0o600)
    stack.unmount()
    return stack


def attach_strace(stack, args):
    """Trace the mounted daemon with strace from now on. Counting starts
    at the attach, so calls made while mounting do not count."""
    proc = subprocess.Popen(
        ["strace", "-f", "-p", str(stack.daemon.pid), *args],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True)
    # strace reports the attach once it traces every thread.
    line = proc.stderr.readline()
    assert "attached" in line, f"strace did not attach: {line!r}"
    return proc


TRACES = {}


def trace_of(any_stack, op, before):
    """The traced system calls of lamina running a scenario to its end."""
    key = (op, before)
    if key not in TRACES:
        stack = prepare(any_stack, before)
        log = os.path.join(stack.root, "trace")
        stack.mount(extra=INDEX)
        tracer = attach_strace(stack, ["-o", log, "-e", f"trace={TRACED}"])
        operate(stack, op)
        # Detach before the daemon exits: LeakSanitizer fails under ptrace.
        tracer.send_signal(signal.SIGINT)
        tracer.communicate()
        stack.unmount()
        with open(log) as f:
            TRACES[key] = [line for line in f if "resumed>" not in line]
    return TRACES[key]


def kill_point(lines, find):
    """The system call of the step and its occurrence in its thread, as
    strace's inject=...:when= counts them. The operation is one request,
    which one thread serves from start to end."""
    at = find(lines)
    assert at is not None, "the step is not in the trace:\n" + "".join(lines)
    tid, call = re.match(r"(\d+) +(\w+)\(", lines[at]).groups()
    when = sum(1 for line in lines[:at + 1]
               if re.match(rf"{tid} +{call}\(", line))
    return call, when


def crash(any_stack, op, before, call, when):
    """Make a stack whose daemon was killed at the step."""
    stack = prepare(any_stack, before)
    stack.mount(extra=INDEX)
    tracer = attach_strace(stack, [
        "-o", "/dev/null", "-e", f"trace={call}",
        "-e", f"inject={call}:signal=SIGKILL:when={when}"])
    with pytest.raises(OSError) as info:
        operate(stack, op)
    assert info.value.errno in (errno.ENOTCONN, errno.ECONNABORTED)
    daemon = stack.daemon
    assert daemon.wait_exit() is not None, "the daemon outlived the kill"
    tracer.communicate()
    assert not force_unmount(stack.merged)
    stack.daemon = None
    stack.mounted_impl = None
    return stack


def visible(stack):
    """Stat every name that may show: {name: (links, mode, data)}, and
    whether they all have one inode number."""
    seen, inodes = {}, set()
    for name in (*NAMES, "d"):
        try:
            st = os.stat(stack.m(name))
        except FileNotFoundError:
            continue
        seen[name] = (st.st_nlink, st.st_mode, read_file(stack.m(name)))
        inodes.add(st.st_ino)
    return seen, len(inodes) <= 1


def observe(stack, impl):
    """Mount the crashed state with impl and record what it shows, while
    all names but the last are removed, and after a remount."""
    record = []
    stack.mount(impl=impl, extra=INDEX)
    seen, one_inode = visible(stack)
    record.append(seen)
    assert one_inode, f"{impl}: the names have several inode numbers"
    assert seen, f"{impl}: no name is left"
    for name, (links, _, data) in seen.items():
        assert links == len(seen), f"{impl}: {name} has {links} links"
        assert data == b"data", f"{impl}: {name} reads {data!r}"
    names = sorted(seen)
    for name in names[:-1]:
        os.unlink(stack.m(name))
    last = names[-1]
    with open(stack.m(last), "a") as f:
        f.write("+more")
    record.append(visible(stack)[0])
    assert record[-1][last][0] == 1
    assert record[-1][last][2] == b"data+more"
    stack.remount(impl=impl, extra=INDEX)
    record.append(visible(stack)[0])
    assert record[-1] == record[-2], f"{impl}: the remount changed {last}"
    stack.unmount()
    return record


@pytest.mark.parametrize("op,before,step,find", CASES)
def test_crash_in_index_copy_up(any_stack, op, before, step, find):
    """A kill at the step leaves a state that lamina shows as overlayfs
    does, with every remaining name counted and readable."""
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed; scripts/install-deps.sh "
                    "installs it")
    call, when = kill_point(trace_of(any_stack, op, before), find)

    kernel = observe(crash(any_stack, op, before, call, when), "kernel")
    lamina = observe(crash(any_stack, op, before, call, when), "lamina")

    assert lamina == kernel
