"""index=on with hard-linked symlinks, FIFOs, device nodes and sockets.

overlayfs indexes every lower non-directory with more than one name, not
only regular files. A copy-up of one name goes into workdir/index, and
the other names show the copy's owner, mode, times, xattrs and link
count. Every test runs on kernel overlayfs and on lamina, mounted with
index=on, and checks the same things.
"""

import os
import socket
import stat

import pytest

from helpers import get_xattr

INDEX = ["index=on"]
MTIME_NS = 1_000_000_000_123_456_789
KINDS = ("symlink", "fifo", "chardev", "blockdev", "socket")


def make_node(path, kind):
    """Create a special file of kind at path."""
    if kind == "symlink":
        os.symlink("target", path)
    elif kind == "fifo":
        os.mkfifo(path, 0o644)
    elif kind == "chardev":
        os.mknod(path, stat.S_IFCHR | 0o644, os.makedev(1, 3))
    elif kind == "blockdev":
        os.mknod(path, stat.S_IFBLK | 0o600, os.makedev(7, 200))
    else:
        sock = socket.socket(socket.AF_UNIX)
        try:
            sock.bind(path)
        finally:
            sock.close()


def linked_lower(stack, kind, names=("a", "b")):
    """Give one special file of kind the names in the top lower layer."""
    make_node(stack.lo(0, names[0]), kind)
    for name in names[1:]:
        os.link(stack.lo(0, names[0]), stack.lo(0, name),
                follow_symlinks=False)
    assert os.lstat(stack.lo(0, names[0])).st_nlink == len(names)


def change_metadata(path):
    """Change the owner, the times and a trusted xattr of path itself."""
    os.chown(path, 1000, 1000, follow_symlinks=False)
    os.utime(path, ns=(MTIME_NS, MTIME_NS), follow_symlinks=False)
    os.setxattr(path, "trusted.x", b"1", follow_symlinks=False)


def assert_changed(path):
    st = os.lstat(path)
    assert (st.st_uid, st.st_gid) == (1000, 1000)
    assert st.st_mtime_ns == MTIME_NS
    assert get_xattr(path, "trusted.x") == b"1"


def index_entries(stack):
    index = os.path.join(stack.work, "index")
    return sorted(e for e in os.listdir(index) if not e.startswith("#"))


def inodes(stack, *names):
    return {os.lstat(stack.m(n)).st_ino for n in names}


def nlinks(stack, *names):
    return [os.lstat(stack.m(n)).st_nlink for n in names]


@pytest.mark.parametrize("kind", KINDS)
def test_change_reaches_other_name(stack, kind):
    linked_lower(stack, kind)
    stack.mount(extra=INDEX)
    before = inodes(stack, "a", "b")

    change_metadata(stack.m("a"))

    assert_changed(stack.m("b"))
    assert inodes(stack, "a", "b") == before
    assert len(before) == 1
    assert nlinks(stack, "a", "b") == [2, 2]
    assert not os.path.lexists(stack.u("b"))
    if kind == "symlink":
        assert os.readlink(stack.m("b")) == "target"


@pytest.mark.parametrize("kind", KINDS)
def test_index_entry_on_disk(stack, kind):
    """The index entry is named after the origin and counts the links."""
    linked_lower(stack, kind)
    stack.mount(extra=INDEX)

    change_metadata(stack.m("a"))

    origin = get_xattr(stack.u("a"), "trusted.overlay.origin")
    assert index_entries(stack) == [origin.hex()]
    entry = os.path.join(stack.work, "index", origin.hex())
    assert os.lstat(entry).st_ino == os.lstat(stack.u("a")).st_ino
    assert stat.S_IFMT(os.lstat(entry).st_mode) == \
        stat.S_IFMT(os.lstat(stack.lo(0, "a")).st_mode)
    assert get_xattr(entry, "trusted.overlay.nlink") == b"U+0"
    assert get_xattr(entry, "trusted.x") == b"1"


@pytest.mark.parametrize("kind", KINDS)
def test_xattr_of_name_not_copied_up(stack, kind):
    """A change through a name still in the lower goes to the entry."""
    linked_lower(stack, kind)
    stack.mount(extra=INDEX)
    change_metadata(stack.m("a"))

    os.setxattr(stack.m("b"), "trusted.y", b"2", follow_symlinks=False)

    assert get_xattr(stack.m("a"), "trusted.y") == b"2"
    assert not os.path.lexists(stack.u("b"))


@pytest.mark.parametrize("kind", KINDS)
def test_link_unlink_rename_keep_counts(stack, kind):
    linked_lower(stack, kind, ("a", "b", "c"))
    stack.mount(extra=INDEX)
    before = inodes(stack, "a")
    change_metadata(stack.m("a"))

    os.link(stack.m("b"), stack.m("d"), follow_symlinks=False)
    assert nlinks(stack, "a", "b", "c", "d") == [4, 4, 4, 4]
    os.unlink(stack.m("a"))
    os.rename(stack.m("b"), stack.m("r"))

    assert sorted(os.listdir(stack.merged)) == ["c", "d", "r"]
    assert nlinks(stack, "c", "d", "r") == [3, 3, 3]
    assert inodes(stack, "c", "d", "r") == before
    for name in ("c", "d", "r"):
        assert_changed(stack.m(name))


@pytest.mark.parametrize("reader", ["same", "other"])
@pytest.mark.parametrize("kind", ["symlink", "fifo", "chardev"])
def test_links_survive_remount(stack, kind, reader):
    linked_lower(stack, kind, ("a", "b", "c"))
    stack.mount(extra=INDEX)
    before = inodes(stack, "a")
    change_metadata(stack.m("a"))
    os.unlink(stack.m("c"))
    stack.unmount()

    impl = stack.impl if reader == "same" else stack.other_impl()
    stack.mount(impl=impl, extra=INDEX)

    assert sorted(os.listdir(stack.merged)) == ["a", "b"]
    assert nlinks(stack, "a", "b") == [2, 2]
    assert inodes(stack, "a", "b") == before
    assert_changed(stack.m("b"))
    os.link(stack.m("b"), stack.m("d"), follow_symlinks=False)
    assert nlinks(stack, "a", "b", "d") == [3, 3, 3]


@pytest.mark.parametrize("kind", ["symlink", "fifo", "chardev"])
def test_last_name_removes_index_entry(stack, kind):
    linked_lower(stack, kind)
    stack.mount(extra=INDEX)
    change_metadata(stack.m("a"))
    assert len(index_entries(stack)) == 1

    os.unlink(stack.m("a"))
    os.unlink(stack.m("b"))

    assert index_entries(stack) == []


@pytest.mark.parametrize("kind", ["symlink", "fifo"])
def test_metacopy_mount_indexes_too(stack, kind):
    """metacopy=on copies special files whole, through the index too."""
    options = ["metacopy=on", "redirect_dir=on", "index=on"]
    linked_lower(stack, kind)
    stack.mount(extra=options)

    change_metadata(stack.m("a"))

    assert_changed(stack.m("b"))
    assert nlinks(stack, "a", "b") == [2, 2]
    assert len(index_entries(stack)) == 1
    assert get_xattr(stack.u("a"), "trusted.overlay.metacopy") is None
