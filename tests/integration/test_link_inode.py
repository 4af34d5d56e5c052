"""All names of a hard-linked file are one inode, as in overlayfs.

Every test runs on kernel overlayfs and on lamina. A lock taken through
one name conflicts with a lock taken through another, an inotify watch
on one name sees writes through another, and the remaining names still
work after the first one is gone. overlayfs shares the inode between the
names of an upper file, and with index=on between the names of a lower
file, copied up or not; with index=off the names of a lower file stay
apart.
"""

import ctypes
import fcntl
import os
import select
import struct

import pytest

from helpers import read_file, write_file

INDEX = ["index=on"]
IN_MODIFY = 0x2
IN_NONBLOCK = 0o4000

libc = ctypes.CDLL(None, use_errno=True)


def lock_conflicts(path_a, path_b):
    """Whether flock(2) through path_b fails while path_a holds it."""
    fa = os.open(path_a, os.O_RDONLY)
    fb = os.open(path_b, os.O_RDONLY)
    try:
        fcntl.flock(fa, fcntl.LOCK_EX)
        try:
            fcntl.flock(fb, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        return False
    finally:
        os.close(fb)
        os.close(fa)


def modify_events(watched, written):
    """The IN_MODIFY events on watched while data is appended to written."""
    fd = libc.inotify_init1(IN_NONBLOCK)
    assert fd >= 0
    try:
        assert libc.inotify_add_watch(fd, os.fsencode(watched), IN_MODIFY) >= 0
        with open(written, "ab") as f:
            f.write(b"+")
        ready, _, _ = select.select([fd], [], [], 2)
        if not ready:
            return 0
        data = os.read(fd, 4096)
        return len(data) // struct.calcsize("iIII")
    finally:
        os.close(fd)


def upper_links(stack):
    stack.mount(extra=INDEX)
    write_file(stack.m("a"), "data")
    os.link(stack.m("a"), stack.m("b"))


def lower_links(stack, extra=INDEX):
    write_file(stack.lo(1, "a"), "data")
    os.link(stack.lo(1, "a"), stack.lo(1, "b"))
    stack.mount(extra=extra)


def test_upper_names_share_locks(stack):
    upper_links(stack)

    assert lock_conflicts(stack.m("a"), stack.m("b"))
    assert lock_conflicts(stack.m("b"), stack.m("a"))


def test_lower_names_share_locks(stack):
    lower_links(stack)

    assert lock_conflicts(stack.m("a"), stack.m("b"))


def test_copied_up_names_share_locks(stack):
    lower_links(stack)
    with open(stack.m("a"), "a") as f:
        f.write("+")

    assert lock_conflicts(stack.m("b"), stack.m("a"))
    assert read_file(stack.m("b")) == b"data+"


def test_lower_names_apart_without_index(stack):
    lower_links(stack, extra=["index=off"])

    assert not lock_conflicts(stack.m("a"), stack.m("b"))


@pytest.mark.parametrize("where", ["upper", "lower"])
def test_watch_sees_other_name(stack, where):
    if where == "upper":
        upper_links(stack)
    else:
        lower_links(stack)

    assert modify_events(stack.m("b"), stack.m("a")) >= 1


@pytest.mark.parametrize("where", ["upper", "lower"])
@pytest.mark.parametrize("gone", ["unlink", "rename-over", "rename"])
def test_other_name_after_first_goes(stack, where, gone):
    if where == "upper":
        upper_links(stack)
    else:
        lower_links(stack)
    os.stat(stack.m("a"))
    os.stat(stack.m("b"))

    if gone == "unlink":
        os.unlink(stack.m("a"))
    elif gone == "rename-over":
        write_file(stack.m("x"), "x")
        os.rename(stack.m("x"), stack.m("a"))
    else:
        os.rename(stack.m("a"), stack.m("c"))
    os.chmod(stack.m("b"), 0o600)
    with open(stack.m("b"), "a") as f:
        f.write("+b")
    os.setxattr(stack.m("b"), "user.k", b"v")

    st = os.stat(stack.m("b"))
    assert st.st_mode & 0o777 == 0o600
    assert st.st_nlink == (2 if gone == "rename" else 1)
    assert read_file(stack.m("b")) == b"data+b"
    assert os.getxattr(stack.m("b"), "user.k") == b"v"
    if gone == "rename":
        assert read_file(stack.m("c")) == b"data+b"
        assert os.getxattr(stack.m("c"), "user.k") == b"v"
    stack.remount(extra=INDEX)
    assert read_file(stack.m("b")) == b"data+b"
    assert os.stat(stack.m("b")).st_mode & 0o777 == 0o600


def test_third_name_joins(stack):
    upper_links(stack)
    os.link(stack.m("b"), stack.m("c"))

    assert lock_conflicts(stack.m("c"), stack.m("a"))
    assert [os.stat(stack.m(n)).st_nlink for n in "abc"] == [3, 3, 3]
    os.unlink(stack.m("b"))
    assert [os.stat(stack.m(n)).st_nlink for n in "ac"] == [2, 2]


def test_write_while_both_names_read(stack):
    """Readers open on both names of a lower file, then a write through
    one name: the write works, and new opens of either name see it."""
    lower_links(stack)
    fa = os.open(stack.m("a"), os.O_RDONLY)
    fb = os.open(stack.m("b"), os.O_RDONLY)
    try:
        with open(stack.m("a"), "ab") as f:
            f.write(b"+")
        assert read_file(stack.m("b")) == b"data+"
        assert read_file(stack.m("a")) == b"data+"
        assert os.stat(stack.m("a")).st_ino == os.stat(stack.m("b")).st_ino
    finally:
        os.close(fb)
        os.close(fa)


def test_new_link_keeps_lower_ino_without_index(stack):
    """Without the index, a lower file with one link that gets a second
    name through the mount shows the lower st_ino on both, also after a
    remount and in readdir."""
    write_file(stack.lo(1, "a"), "data")
    lower_ino = os.stat(stack.lo(1, "a")).st_ino
    stack.mount(extra=["index=off"])
    os.link(stack.m("a"), stack.m("b"))

    stack.remount(extra=["index=off"])

    for name in ("a", "b"):
        assert os.stat(stack.m(name)).st_ino == lower_ino
        entry = next(e for e in os.scandir(stack.merged) if e.name == name)
        assert entry.inode() == lower_ino
