"""Directory readahead: a reader process lists directories through the
mount once callers look up names in them, so that the names they look up
next are in the kernel's cache already.

The readers are threads of a child process of the daemon, named
lamina-readdir, that works in a private copy of the mount. The tests
count the daemon's LOOKUP requests in its -d log. They check that the
mount point is never busy because of the readers and that listings stay
right while names change. The reader process must neither outlive the
daemon nor keep a killed daemon's mount from ending.
"""

import errno
import os
import re
import signal
import subprocess
import threading
import time

import pytest

from conftest import LAMINA, run, wait_for
from helpers import find_mount, write_file

READER = "lamina-readdir"
# A request line of lamina -d: its opcode and the calling thread.
REQUEST = re.compile(r"opcode: (\w+) \(\d+\), nodeid: \d+, insize: \d+, "
                     r"pid: (\d+)")


def children(pid):
    """Return the pids of pid's child processes."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry))
    return found


def reader_pid(daemon_pid):
    """Return the pid of the daemon's reader process, or None."""
    for pid in children(daemon_pid):
        try:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() == READER:
                    return pid
        except OSError:
            continue
    return None


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def logged_requests(stack, start=0):
    """Return the log length and the (opcode, caller) pairs logged by
    lamina -d after line start."""
    with open(stack.daemon.log_path, errors="replace") as f:
        lines = f.readlines()
    found = []
    for line in lines[start:]:
        match = REQUEST.search(line)
        if match:
            found.append((match.group(1), int(match.group(2))))
    return len(lines), found


def wait_listed(stack, count=1):
    """Wait until the reader process has listed count directories: two
    READDIRPLUS each, the second at the end."""
    pid = reader_pid(stack.daemon.pid)
    assert pid is not None, "the daemon has no reader process"
    tids = {int(tid) for tid in os.listdir(f"/proc/{pid}/task")}

    def listed():
        _, found = logged_requests(stack)
        plus = [p for op, p in found if op == "READDIRPLUS" and p in tids]
        return len(plus) >= 2 * count

    assert wait_for(listed, 10), "no directory was listed ahead"


def fill_lower(stack, dirs, files, data):
    """Create dirs directories d0, d1, ... in the bottom lower layer,
    each with files files f0, f1, ... that contain data."""
    for d in range(dirs):
        for i in range(files):
            write_file(stack.lo(1, f"d{d}", f"f{i}"), data)


def stat_two_names(stack, dirs):
    """Look up two names in each of dirs directories, which queues every
    one of them for a listing."""
    for d in range(dirs):
        os.stat(stack.m(f"d{d}", "f0"))
        os.stat(stack.m(f"d{d}", "f1"))


def lookups_after(stack, start):
    _, found = logged_requests(stack, start)
    return [op for op, _ in found if op == "LOOKUP"]


def test_readahead_spares_lookups(lamina_stack):
    """After two names of a directory were looked up, the others need
    no LOOKUP request: a reader listed the directory with attributes."""
    stack = lamina_stack
    for i in range(100):
        write_file(stack.lo(1, "d", f"f{i:03d}"), b"x")
    write_file(stack.lo(0, "d", "top"), b"y")
    stack.mount(daemon_args=["-d"])

    os.stat(stack.m("d", "f000"))
    os.stat(stack.m("d", "f001"))
    wait_listed(stack)
    start, _ = logged_requests(stack)
    sizes = {os.stat(stack.m("d", f"f{i:03d}")).st_size
             for i in range(2, 100)}
    assert sizes == {1}
    assert os.stat(stack.m("d", "top")).st_size == 1
    assert lookups_after(stack, start) == []


def test_readahead_of_mount_root(lamina_stack):
    """The root of the mount is listed like any directory."""
    stack = lamina_stack
    for i in range(30):
        write_file(stack.lo(1, f"f{i:02d}"), b"x")
    stack.mount(daemon_args=["-d"])

    os.stat(stack.m("f00"))
    os.stat(stack.m("f01"))
    wait_listed(stack)
    start, _ = logged_requests(stack)
    for i in range(2, 30):
        assert os.stat(stack.m(f"f{i:02d}")).st_size == 1
    assert lookups_after(stack, start) == []
    assert reader_pid(stack.daemon.pid) is not None


def test_readahead_lists_subdirectories(lamina_stack):
    """The subdirectories of a directory listed for a caller are listed
    too, before the caller walks into them."""
    stack = lamina_stack
    write_file(stack.lo(1, "d", "a"), b"x")
    write_file(stack.lo(1, "d", "b"), b"x")
    for i in range(50):
        write_file(stack.lo(1, "d", "sub", f"f{i:02d}"), b"x")
    stack.mount(daemon_args=["-d"])

    os.stat(stack.m("d", "a"))
    os.stat(stack.m("d", "b"))
    wait_listed(stack, 2)
    start, _ = logged_requests(stack)
    for i in range(50):
        assert os.stat(stack.m("d", "sub", f"f{i:02d}")).st_size == 1
    assert lookups_after(stack, start) == []


def test_readahead_below_listed_directory(lamina_stack):
    """Two levels below a directory listed for a caller, one looked-up
    name is enough for a directory to be listed."""
    stack = lamina_stack
    write_file(stack.lo(1, "d", "a"), b"x")
    write_file(stack.lo(1, "d", "b"), b"x")
    for i in range(50):
        write_file(stack.lo(1, "d", "sub", "deep", f"f{i:02d}"), b"x")
    stack.mount(daemon_args=["-d"])

    os.stat(stack.m("d", "a"))
    os.stat(stack.m("d", "b"))
    wait_listed(stack, 2)
    os.stat(stack.m("d", "sub", "deep", "f00"))
    wait_listed(stack, 3)
    start, _ = logged_requests(stack)
    for i in range(1, 50):
        assert os.stat(stack.m("d", "sub", "deep", f"f{i:02d}")).st_size == 1
    assert lookups_after(stack, start) == []


def test_readahead_off(lamina_stack):
    """With prefetch=off there is no reader process, and every name is a
    LOOKUP of its own."""
    stack = lamina_stack
    for i in range(20):
        write_file(stack.lo(1, "d", f"f{i}"), b"x")
    stack.mount(extra=["prefetch=off"], daemon_args=["-d"])
    assert reader_pid(stack.daemon.pid) is None
    start, _ = logged_requests(stack)

    for i in range(20):
        os.stat(stack.m("d", f"f{i}"))

    assert len(lookups_after(stack, start)) == 21


def test_reader_holds_no_fuse_device(lamina_stack):
    """The reader process has its copy of the mount, its socket and the
    daemon's standard streams, and no descriptor of /dev/fuse or of the
    layers."""
    stack = lamina_stack
    write_file(stack.lo(1, "f"), b"x")
    stack.mount()
    pid = reader_pid(stack.daemon.pid)
    assert pid is not None

    fds = {int(fd): os.readlink(f"/proc/{pid}/fd/{fd}")
           for fd in os.listdir(f"/proc/{pid}/fd")}
    assert sorted(fds) == [0, 1, 2, 3, 4]
    assert fds[4].startswith("socket:")
    assert all("fuse" not in target for target in fds.values())
    # The standard streams are the daemon's, here its log file.
    assert all(not target.startswith(stack.root)
               for fd, target in fds.items() if fd > 2)
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        assert f.read() == READER.encode() + b"\0"


def test_reader_started_by_hand_refuses():
    """Run without the daemon's descriptors, the reader says so."""
    proc = subprocess.run([READER], executable=LAMINA, capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, check=False)
    assert proc.returncode == 2
    assert "started by the lamina daemon" in proc.stderr


def test_unmount_during_readahead(lamina_stack):
    """The readers' copy of the mount does not make the mount point
    busy: a plain umount right after many directories were queued
    works at once. The fixture checks that the daemon exits with
    status 0; the reader process ends with it."""
    stack = lamina_stack
    fill_lower(stack, 40, 200, b"")
    stack.mount()
    pid = reader_pid(stack.daemon.pid)

    stat_two_names(stack, 40)
    run(["umount", stack.merged])

    assert find_mount(stack.merged) is None
    assert stack.daemon.wait_exit() == 0
    assert wait_for(lambda: not alive(pid), 10)


def test_readahead_under_covered_mount_point(lamina_stack):
    """The readers work in their own copy of the mount, so they go on
    listing directories for a caller that reaches the mount through a
    descriptor after another filesystem covered the mount point."""
    stack = lamina_stack
    for i in range(30):
        write_file(stack.lo(1, "d", f"f{i}"), b"x")
    stack.mount(daemon_args=["-d"])
    fd = os.open(stack.m("d"), os.O_RDONLY | os.O_DIRECTORY)
    try:
        run(["mount", "-t", "tmpfs", "lamina-cover", stack.merged])
        try:
            os.stat("f0", dir_fd=fd)
            os.stat("f1", dir_fd=fd)
            wait_listed(stack)
            start, _ = logged_requests(stack)
            assert os.stat("f2", dir_fd=fd).st_size == 1
            assert lookups_after(stack, start) == []
        finally:
            run(["umount", stack.merged])
    finally:
        os.close(fd)


def test_unmount_never_busy(lamina_stack):
    """No umount fails with EBUSY because of the readers, however the
    unmount falls between their steps."""
    stack = lamina_stack
    fill_lower(stack, 20, 50, b"")
    for _ in range(10):
        stack.mount()
        stat_two_names(stack, 20)
        run(["umount", stack.merged])
        assert find_mount(stack.merged) is None
        stack.unmount()


def test_daemon_killed_while_reading_ahead(lamina_stack):
    """A daemon killed while the readers' requests wait for it still
    ends: the reader process dies with it, the mount reports the lost
    connection and can be unmounted."""
    stack = lamina_stack
    fill_lower(stack, 4, 2000, b"")
    stack.mount()
    daemon = stack.daemon
    pid = reader_pid(daemon.pid)
    assert pid is not None

    stat_two_names(stack, 4)
    # Stopped, the daemon keeps the requests that the readers just sent
    # waiting.
    os.kill(daemon.pid, signal.SIGSTOP)
    time.sleep(0.2)
    daemon.proc.kill()
    assert daemon.wait_exit() == -signal.SIGKILL

    assert wait_for(lambda: not alive(pid), 10), \
        "the reader process outlived the daemon"
    with pytest.raises(OSError) as info:
        os.stat(stack.m("d0", "f5"))
    # ECONNABORTED over io_uring
    assert info.value.errno in (errno.ENOTCONN, errno.ECONNABORTED)
    run(["umount", stack.merged])
    assert find_mount(stack.merged) is None
    stack.daemon = None
    stack.mounted_impl = None


def change_while_listed(stack, stop):
    """Create, rename and remove names in d until stop is set."""
    n = 0
    while not stop.is_set():
        write_file(stack.m("d", f"new{n}"), b"n")
        os.rename(stack.m("d", f"new{n}"), stack.m("d", f"moved{n}"))
        os.unlink(stack.m("d", f"moved{n}"))
        n += 1


def test_readahead_while_names_change(lamina_stack):
    """Listings made ahead while names come and go through the mount
    leave the directory as the changes made it."""
    stack = lamina_stack
    for i in range(300):
        write_file(stack.lo(1, "d", f"f{i:03d}"), b"x")
    stack.mount()
    stop = threading.Event()
    changer = threading.Thread(target=change_while_listed, args=(stack, stop))
    changer.start()
    try:
        for i in range(0, 300, 3):
            os.unlink(stack.m("d", f"f{i:03d}"))
            os.rename(stack.m("d", f"f{i + 1:03d}"),
                      stack.m("d", f"r{i + 1:03d}"))
            assert os.stat(stack.m("d", f"f{i + 2:03d}")).st_size == 1
    finally:
        stop.set()
        changer.join()

    expect = set()
    for i in range(0, 300, 3):
        expect |= {f"r{i + 1:03d}", f"f{i + 2:03d}"}
    assert set(os.listdir(stack.m("d"))) == expect
    for name in expect:
        assert os.stat(stack.m("d", name)).st_size == 1
    for i in range(0, 300, 3):
        with pytest.raises(FileNotFoundError):
            os.stat(stack.m("d", f"f{i:03d}"))


def test_readahead_keeps_access_times(lamina_stack):
    """Listing ahead does not move the access time of a directory that
    no caller listed, as a lookup on kernel overlayfs does not."""
    stack = lamina_stack
    write_file(stack.lo(1, "d", "a"), b"x")
    write_file(stack.lo(1, "d", "b"), b"x")
    write_file(stack.lo(1, "d", "sub", "c"), b"x")
    stack.mount(daemon_args=["-d"])
    os.mkdir(stack.m("up"))
    for name in ("x1", "x2"):
        write_file(stack.m("up", name), b"y")
    old = 1577836800  # 2020-01-01
    for path in (stack.m("up"), stack.m("d"), stack.m("d", "sub")):
        os.utime(path, (old, os.stat(path).st_mtime))
    stack.unmount()
    stack.mount(daemon_args=["-d"])

    os.stat(stack.m("up", "x1"))
    os.stat(stack.m("up", "x2"))
    os.stat(stack.m("d", "a"))
    os.stat(stack.m("d", "b"))
    wait_listed(stack, 3)
    assert int(os.stat(stack.u("up")).st_atime) == old
    for path in (stack.m("up"), stack.m("d"), stack.m("d", "sub")):
        assert int(os.stat(path).st_atime) == old, path


def test_no_readahead_below_file_limit(lamina_stack):
    """With a small limit of open files, the readers could take the
    descriptors that callers need, so there are none."""
    stack = lamina_stack
    for i in range(20):
        write_file(stack.lo(1, "d", f"f{i}"), b"x")
    stack.mount(daemon_wrapper=["prlimit", "--nofile=512:512", "--"])
    assert reader_pid(stack.daemon.pid) is None
    for i in range(20):
        assert os.stat(stack.m("d", f"f{i}")).st_size == 1


def test_reader_killed_mount_goes_on(lamina_stack):
    """A killed reader process ends the readahead and nothing else: the
    daemon reaps it and keeps serving."""
    stack = lamina_stack
    fill_lower(stack, 3, 10, b"x")
    stack.mount()
    pid = reader_pid(stack.daemon.pid)
    os.kill(pid, signal.SIGKILL)

    for d in range(3):
        for i in range(10):
            assert os.stat(stack.m(f"d{d}", f"f{i}")).st_size == 1
    assert wait_for(lambda: not os.path.exists(f"/proc/{pid}"), 10)
