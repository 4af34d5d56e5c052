"""Directory prefetch: lamina reads directories ahead of the requests.

The prefetch thread only fills the lower filesystem's caches. The
readers list directories through a private copy of the mount, so that
the kernel learns their entries in one request instead of a lookup
each. The tests check what a user can see. The threads follow their
option and change nothing in the lower layers, access times included.
Listings and names stay right while files change. The mount point is
never busy because of them, and they stop with the mount.
"""

import errno
import json
import os
import re
import shutil
import threading
import time

import pytest

from conftest import make_tempdir, run, run_lamina, scratch_mount, wait_for
from helpers import FILE_CAPS, find_mount, write_file

THREAD = "lamina-prefetch"
READER = "lamina-readdir"
# A request line of lamina -d: its opcode and the calling thread.
REQUEST = re.compile(r"opcode: (\w+) \(\d+\), nodeid: \d+, insize: \d+, "
                     r"pid: (\d+)")


def thread_names(pid):
    names = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                names.append(f.read().strip())
        except FileNotFoundError:
            pass  # the thread ended after the directory was listed
    return names


def status(stack):
    code, out, err = run_lamina(["status", "--json", stack.merged],
                                stack.root)
    assert code == 0, err
    return json.loads(out)["mounts"][0]


def make_tree(root, dirs, files):
    """Create dirs directories below root, each with files files and a
    subdirectory named inner."""
    for d in range(dirs):
        sub = os.path.join(root, f"d{d}", "inner")
        os.makedirs(sub)
        for i in range(files):
            write_file(os.path.join(root, f"d{d}", f"f{i}"), b"x")
        write_file(os.path.join(sub, "leaf"), b"y")


def dirs_below(root):
    """Return root and every directory below it. Listing them moves their
    access times, so the list is made once, before the times are read."""
    return [dirpath for dirpath, _dirs, _files in os.walk(root)]


def atimes(paths):
    return {path: os.lstat(path).st_atime_ns for path in paths}


def run_time_ns(pid, tid):
    with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
        return int(f.read().split()[0])


def prefetch_tid(pid):
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/comm") as f:
            if f.read().strip() == THREAD:
                return tid
    raise AssertionError(f"no {THREAD} thread in lamina pid {pid}")


def wait_for_work(pid, tid, since):
    """Wait until the thread's run time has grown past since and then
    stopped growing."""
    last = since
    for _ in range(200):
        time.sleep(0.05)
        now = run_time_ns(pid, tid)
        if last > since and now == last:
            return
        last = now
    raise AssertionError(f"{THREAD} did not run, or did not rest")


@pytest.fixture
def strictatime_dir():
    """Mount a tmpfs with strictatime, where every read of a directory
    moves its access time unless the reader opened it with O_NOATIME."""
    with scratch_mount("lamina-atime.", "tmpfs",
                       "size=64m,strictatime") as path:
        yield path


@pytest.mark.parametrize("mode", ["on", "off"])
def test_prefetch_follows_option(lamina_stack, mode):
    stack = lamina_stack
    make_tree(stack.lo(1), 3, 2)
    extra = [] if mode == "on" else ["prefetch=off"]
    stack.mount(extra=extra)

    assert sorted(os.listdir(stack.m())) == ["d0", "d1", "d2"]
    names = thread_names(stack.daemon.pid)
    assert (THREAD in names) == (mode == "on")
    assert (READER in names) == (mode == "on")
    mount = status(stack)
    assert mount["features"]["prefetch"] is (mode == "on")
    code, out, err = run_lamina(["status", stack.merged], stack.root)
    assert code == 0, err
    assert f"prefetch={'yes' if mode == 'on' else 'no'}" in out


def test_prefetch_keeps_access_times(lamina_stack, strictatime_dir):
    """Directories that lamina reads ahead, and no user lists, keep their
    access times on a filesystem that would move them on every read."""
    stack = lamina_stack
    lower = os.path.join(strictatime_dir, "lower")
    make_tree(lower, 4, 20)
    os.symlink("/", os.path.join(lower, "d0", "root-link"))
    os.symlink("loop", os.path.join(lower, "d1", "loop"))
    os.mkfifo(os.path.join(lower, "d2", "fifo"))
    control = os.path.join(lower, "control")
    os.mkdir(control)
    stack.mount(lowers=[lower])
    pid = stack.daemon.pid
    tid = prefetch_tid(pid)
    dirs = dirs_below(lower)
    before = atimes(dirs)
    ran = run_time_ns(pid, tid)
    time.sleep(0.05)  # so that a new access time would differ

    # Look up the directories without listing them: the prefetch lists
    # each d* and then each inner directory.
    for d in range(4):
        assert os.path.isdir(stack.m(f"d{d}", "inner"))
    wait_for_work(pid, tid, ran)
    os.listdir(control)  # a plain read moves the time on this tmpfs

    after = atimes(dirs)
    assert after.pop(control) != before.pop(control)
    assert after == before


def test_unmount_while_prefetching(lamina_stack):
    """A mount that goes away with directories still queued ends
    cleanly. The fixture checks that the daemon exits with status 0."""
    stack = lamina_stack
    make_tree(stack.lo(1), 200, 30)
    stack.mount()

    assert len(os.listdir(stack.m())) == 200
    stack.unmount()



def test_prefetch_notes_files_without_xattrs(lamina_stack):
    """Once the prefetch has seen a lower file without xattrs, lamina
    reports its xattrs as absent without a look at the layer. So an xattr
    added to the lower file afterwards, which overlayfs leaves undefined,
    stays unseen until the file is copied up. A file created through the
    mount reports its security.capability the same way. This shows that
    both shortcuts are in use."""
    stack = lamina_stack
    # A lower of its own, which the fixture does not expect to stay as
    # it was.
    lower = make_tempdir("lamina-late.")
    try:
        notes_files_without_xattrs(stack, lower)
    finally:
        stack.unmount()
        shutil.rmtree(lower)


def notes_files_without_xattrs(stack, lower):
    write_file(os.path.join(lower, "d", "bare"), b"x")
    stack.mount(lowers=[lower])
    pid = stack.daemon.pid
    tid = prefetch_tid(pid)
    ran = run_time_ns(pid, tid)
    os.stat(stack.m("d"))
    wait_for_work(pid, tid, ran)
    assert os.listxattr(stack.m("d", "bare")) == []

    os.setxattr(os.path.join(lower, "d", "bare"), "user.late", b"1")
    with pytest.raises(OSError) as info:
        os.getxattr(stack.m("d", "bare"), "user.late")
    assert info.value.errno == errno.ENODATA
    assert os.listxattr(stack.m("d", "bare")) == []
    os.chmod(stack.m("d", "bare"), 0o600)  # copy-up
    assert os.getxattr(stack.m("d", "bare"), "user.late") == b"1"

    write_file(stack.m("new"), b"x")
    os.setxattr(stack.u("new"), "security.capability", FILE_CAPS)
    with pytest.raises(OSError) as info:
        os.getxattr(stack.m("new"), "security.capability")
    assert info.value.errno == errno.ENODATA
    os.removexattr(stack.u("new"), "security.capability")


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


def daemon_threads(pid):
    return {int(tid) for tid in os.listdir(f"/proc/{pid}/task")}


def wait_listed(stack, count=1):
    """Wait until lamina's own threads have listed count directories
    through the mount: two READDIRPLUS each, the second at the end."""
    tids = daemon_threads(stack.daemon.pid)

    def listed():
        _, found = logged_requests(stack)
        plus = [p for op, p in found if op == "READDIRPLUS" and p in tids]
        return len(plus) >= 2 * count

    assert wait_for(listed, 10), "no directory was listed ahead"


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
    _, found = logged_requests(stack, start)
    assert [op for op, _ in found if op == "LOOKUP"] == []


def test_readahead_below_listed_directory(lamina_stack):
    """Below a directory listed ahead, one looked-up name is enough for
    a directory to be listed too."""
    stack = lamina_stack
    write_file(stack.lo(1, "d", "a"), b"x")
    write_file(stack.lo(1, "d", "b"), b"x")
    for i in range(50):
        write_file(stack.lo(1, "d", "sub", f"f{i:02d}"), b"x")
    stack.mount(daemon_args=["-d"])

    os.stat(stack.m("d", "a"))
    os.stat(stack.m("d", "b"))
    wait_listed(stack)
    os.stat(stack.m("d", "sub", "f00"))
    wait_listed(stack, 2)
    start, _ = logged_requests(stack)
    for i in range(1, 50):
        assert os.stat(stack.m("d", "sub", f"f{i:02d}")).st_size == 1
    _, found = logged_requests(stack, start)
    assert [op for op, _ in found if op == "LOOKUP"] == []


def test_readahead_off(lamina_stack):
    """With prefetch=off every name is a LOOKUP of its own."""
    stack = lamina_stack
    for i in range(20):
        write_file(stack.lo(1, "d", f"f{i}"), b"x")
    stack.mount(extra=["prefetch=off"], daemon_args=["-d"])
    start, _ = logged_requests(stack)

    for i in range(20):
        os.stat(stack.m("d", f"f{i}"))

    _, found = logged_requests(stack, start)
    assert len([op for op, _ in found if op == "LOOKUP"]) == 21


def test_unmount_during_readahead(lamina_stack):
    """The readers' copy of the mount does not make the mount point
    busy: a plain umount right after many directories were queued
    works at once. The fixture checks that the daemon exits with
    status 0."""
    stack = lamina_stack
    for d in range(40):
        for i in range(200):
            write_file(stack.lo(1, f"d{d}", f"f{i}"), b"")
    stack.mount()

    for d in range(40):
        os.stat(stack.m(f"d{d}", "f0"))
        os.stat(stack.m(f"d{d}", "f1"))
    run(["umount", stack.merged])

    assert find_mount(stack.merged) is None


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
            assert os.stat("f2", dir_fd=fd).st_size == 1
        finally:
            run(["umount", stack.merged])
    finally:
        os.close(fd)


def test_unmount_never_busy(lamina_stack):
    """No umount fails with EBUSY because of the readers, however the
    unmount falls between their steps."""
    stack = lamina_stack
    for d in range(20):
        for i in range(50):
            write_file(stack.lo(1, f"d{d}", f"f{i}"), b"")
    for _ in range(10):
        stack.mount()
        for d in range(20):
            os.stat(stack.m(f"d{d}", "f0"))
            os.stat(stack.m(f"d{d}", "f1"))
        run(["umount", stack.merged])
        assert find_mount(stack.merged) is None
        stack.unmount()


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
