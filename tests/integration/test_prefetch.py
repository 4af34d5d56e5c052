"""Directory prefetch: lamina reads lower directories ahead of the requests.

The prefetch thread only fills the lower filesystem's caches. The tests
check what a user can see: the thread follows its option, changes nothing
in the lower layers (access times included), and stops with the mount.
"""

import errno
import json
import os
import shutil
import time

import pytest

from conftest import make_tempdir, run_lamina, scratch_mount
from helpers import FILE_CAPS, write_file

THREAD = "lamina-prefetch"


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
    assert (THREAD in thread_names(stack.daemon.pid)) == (mode == "on")
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


def test_lookup_notes_files_without_xattrs(lamina_stack):
    """A lookup notes a lower file without xattrs too, with no prefetch
    and no listing. An xattr added to the lower file afterwards stays
    unseen until copy-up. A file with xattrs keeps them, and an opaque
    directory stays opaque."""
    stack = lamina_stack
    lower = make_tempdir("lamina-late.")
    try:
        write_file(os.path.join(lower, "bare"), b"x")
        write_file(os.path.join(lower, "tagged"), b"x")
        os.setxattr(os.path.join(lower, "tagged"), "user.t", b"1")
        write_file(os.path.join(lower, "opq", "shown"), b"x")
        os.setxattr(os.path.join(lower, "opq"), "trusted.overlay.opaque",
                    b"y")
        write_file(stack.lo(0, "opq", "hidden"), b"x")
        stack.mount(lowers=[lower, stack.lowers[0]], extra=("prefetch=off",))

        assert os.listxattr(stack.m("bare")) == []
        os.setxattr(os.path.join(lower, "bare"), "user.late", b"1")
        with pytest.raises(OSError) as info:
            os.getxattr(stack.m("bare"), "user.late")
        assert info.value.errno == errno.ENODATA
        assert os.getxattr(stack.m("tagged"), "user.t") == b"1"
        assert os.listdir(stack.m("opq")) == ["shown"]
        os.chmod(stack.m("bare"), 0o600)  # copy-up
        assert os.getxattr(stack.m("bare"), "user.late") == b"1"
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
