"""Descriptors that lamina keeps for directories in every layer.

A request below a directory starts from a descriptor kept for that
directory instead of walking its path from the layer root. The tests
check what that must not change: entries of moved, replaced, recreated
and merged directories, a descriptor limit that files opened through the
mount can still use, and descriptors that close when the kernel forgets
the directories. The tests on `stack` run on kernel overlayfs too.
"""

import os
import re

from conftest import read_log, run, wait_for
from helpers import read_file, write_file

DIRS = 300


def dir_fds(pid):
    """Count the daemon's descriptors of the directories d0, d1, ... The
    daemon reaches each layer through a private mount, so their paths
    read /d0, /d1 and so on."""
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            continue  # closed meanwhile
        if re.fullmatch(r"/d[0-9]+", target):
            count += 1
    return count


def make_dirs(root, count):
    for d in range(count):
        write_file(os.path.join(root, f"d{d}", "f"), f"file {d}".encode())


def read_all(stack, count):
    for d in range(count):
        assert read_file(stack.m(f"d{d}", "f")) == f"file {d}".encode()


def read_all_open_at_once(stack, count):
    """Open d0/f ... through the mount, keep them all open, read each."""
    files = [open(stack.m(f"d{d}", "f"), "rb") for d in range(count)]
    try:
        for d, f in enumerate(files):
            assert f.read() == f"file {d}".encode()
    finally:
        for f in files:
            f.close()


def test_descriptors_close_when_kernel_forgets(lamina_stack):
    stack = lamina_stack
    make_dirs(stack.lo(1), DIRS)
    stack.mount()
    pid = stack.daemon.pid

    read_all(stack, DIRS)
    # A background thread may hold one more for a moment.
    assert wait_for(lambda: dir_fds(pid) == DIRS, 5)

    run(["sh", "-c", "sync; echo 2 > /proc/sys/vm/drop_caches"])
    assert wait_for(lambda: dir_fds(pid) == 0, 5)
    read_all(stack, DIRS)


def test_open_files_keep_room_under_a_low_limit(lamina_stack):
    """With 256 descriptors allowed, at most a quarter go to directories,
    and 150 files can stay open through the mount at once."""
    stack = lamina_stack
    make_dirs(stack.lo(1), DIRS)
    stack.mount(daemon_wrapper=["prlimit", "--nofile=256:256"])
    pid = stack.daemon.pid

    read_all(stack, DIRS)
    assert os.listdir(stack.m("d7")) == ["f"]
    assert dir_fds(pid) <= 256 // 4
    read_all_open_at_once(stack, 150)


def test_tiny_limit_keeps_no_descriptors_and_opens_files(lamina_stack):
    """With 40 descriptors allowed, the daemon's own use most of them, so
    it keeps no directory descriptors, and files still open through the
    mount."""
    stack = lamina_stack
    make_dirs(stack.lo(1), 50)
    stack.mount(daemon_wrapper=["prlimit", "--nofile=40:40"])
    pid = stack.daemon.pid

    read_all(stack, 50)
    # A background thread may hold one for a moment, but keeps none.
    assert wait_for(lambda: dir_fds(pid) == 0, 5)
    read_all_open_at_once(stack, 8)
    assert "kept directory descriptors" in read_log(stack.daemon.log_path)


def test_moved_directory_keeps_lower_entries(lamina_stack):
    """A lower directory renamed in the mount after lookups below it still
    shows the lower entries that no one had looked up yet."""
    stack = lamina_stack
    for name in ["seen", "unseen"]:
        write_file(stack.lo(1, "a", "b", name), name.encode())
    stack.mount(extra=["redirect_dir=on"])
    assert read_file(stack.m("a", "b", "seen")) == b"seen"

    os.rename(stack.m("a"), stack.m("z"))
    assert not os.path.exists(stack.m("a"))
    assert read_file(stack.m("z", "b", "unseen")) == b"unseen"
    assert sorted(os.listdir(stack.m("z", "b"))) == ["seen", "unseen"]


def test_directory_missing_from_a_middle_layer(lamina_stack):
    """A directory in the top and bottom lowers but missing from the
    middle one merges the entries of both. The middle layer's file next
    to it does not show inside it."""
    stack = lamina_stack
    lowers = [os.path.join(stack.root, f"layer{i}") for i in range(3)]
    write_file(os.path.join(lowers[0], "dir", "top"), b"top")
    write_file(os.path.join(lowers[1], "other"), b"other")
    write_file(os.path.join(lowers[2], "dir", "bottom"), b"bottom")
    stack.mount(lowers=lowers)

    assert read_file(stack.m("dir", "top")) == b"top"
    assert read_file(stack.m("dir", "bottom")) == b"bottom"
    assert not os.path.exists(stack.m("dir", "other"))
    assert sorted(os.listdir(stack.m("dir"))) == ["bottom", "top"]


def test_renamed_upper_directory(stack):
    stack.mount()
    os.mkdir(stack.m("a"))
    write_file(stack.m("a", "before"), b"1")
    os.rename(stack.m("a"), stack.m("b"))

    write_file(stack.m("b", "after"), b"2")
    os.chmod(stack.m("b", "before"), 0o600)

    assert sorted(os.listdir(stack.u("b"))) == ["after", "before"]
    assert not os.path.exists(stack.u("a"))
    assert os.stat(stack.u("b", "before")).st_mode & 0o777 == 0o600


def test_recreated_directory(stack):
    """A directory removed and made again under the same name gets the
    new entries, not the removed directory."""
    stack.mount()
    os.mkdir(stack.m("d"))
    write_file(stack.m("d", "old"), b"1")
    os.unlink(stack.m("d", "old"))
    os.rmdir(stack.m("d"))
    os.mkdir(stack.m("d"))

    write_file(stack.m("d", "new"), b"2")

    assert os.listdir(stack.m("d")) == ["new"]
    assert os.listdir(stack.u("d")) == ["new"]


def test_directory_replaced_by_rename(stack):
    stack.mount()
    os.mkdir(stack.m("a"))
    write_file(stack.m("a", "f"), b"1")
    os.mkdir(stack.m("b"))
    write_file(stack.m("b", "g"), b"2")
    os.unlink(stack.m("b", "g"))
    os.rename(stack.m("a"), stack.m("b"))

    write_file(stack.m("b", "h"), b"3")

    assert sorted(os.listdir(stack.m("b"))) == ["f", "h"]
    assert sorted(os.listdir(stack.u("b"))) == ["f", "h"]


def test_lower_directory_copied_up_later(stack):
    """A lower directory looked into before its copy-up takes new entries
    in its upper copy afterwards."""
    write_file(stack.lo(1, "dir", "lower"), b"l")
    stack.mount()
    assert read_file(stack.m("dir", "lower")) == b"l"

    write_file(stack.m("dir", "first"), b"1")
    write_file(stack.m("dir", "second"), b"2")

    assert sorted(os.listdir(stack.u("dir"))) == ["first", "second"]
    assert sorted(os.listdir(stack.m("dir"))) == ["first", "lower",
                                                   "second"]
