"""Hard-linked files through their several names.

Every test runs on kernel overlayfs and on lamina. The names of a file
stay usable after the first one is gone, a write through one name shows
through the others, and st_ino follows overlayfs. Without the index the
names of a lower file stay apart, so a lock through one does not cover
the other.
"""

import fcntl
import os

import pytest

from helpers import RENAME_EXCHANGE, read_file, renameat2, write_file

INDEX = ["index=on"]


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


def upper_links(stack):
    stack.mount(extra=INDEX)
    write_file(stack.m("a"), "data")
    os.link(stack.m("a"), stack.m("b"))


def lower_links(stack, extra=INDEX):
    write_file(stack.lo(1, "a"), "data")
    os.link(stack.lo(1, "a"), stack.lo(1, "b"))
    stack.mount(extra=extra)


def test_lower_names_apart_without_index(stack):
    lower_links(stack, extra=["index=off"])

    assert not lock_conflicts(stack.m("a"), stack.m("b"))


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


def test_new_link_keeps_lower_ino(stack):
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


@pytest.mark.parametrize("flags", ["move", "exchange"])
def test_rename_between_names_of_one_file(stack, flags):
    """A rename from one name of a file to another name of it changes
    nothing: both names stay, and each can be removed on its own."""
    write_file(stack.lo(0, "a"), "data")
    stack.mount()
    for name in ("x", "y"):
        os.link(stack.m("a"), stack.m(name))

    if flags == "move":
        os.rename(stack.m("x"), stack.m("y"))
    else:
        renameat2(stack.m("x"), stack.m("y"), RENAME_EXCHANGE)

    assert os.stat(stack.m("x")).st_nlink == 3
    assert os.stat(stack.m("y")).st_nlink == 3
    os.unlink(stack.m("x"))
    assert read_file(stack.m("y")) == b"data"
    assert os.stat(stack.m("y")).st_nlink == 2
    os.rename(stack.m("y"), stack.m("a"))
    assert sorted(os.listdir(stack.merged)) == ["a", "y"]
    assert read_file(stack.m("a")) == b"data"


@pytest.mark.parametrize("flags", ["move", "exchange"])
def test_rename_onto_other_name_metacopy(stack, flags):
    """With metacopy, a rename from a lower name of an indexed file onto
    a name of it that moved before changes nothing. The moved name still
    opens and reads the lower data, and a write through it shows through
    every name."""
    write_file(stack.lo(1, "a"), "data")
    for name in ("b", "c"):
        os.link(stack.lo(1, "a"), stack.lo(1, name))
    extra = INDEX + ["metacopy=on", "redirect_dir=on"]
    stack.mount(extra=extra)
    os.rename(stack.m("a"), stack.m("n"))
    for name in ("b", "c", "n"):
        assert read_file(stack.m(name)) == b"data"

    if flags == "move":
        os.rename(stack.m("c"), stack.m("n"))
    else:
        renameat2(stack.m("c"), stack.m("n"), RENAME_EXCHANGE)

    assert sorted(os.listdir(stack.merged)) == ["b", "c", "n"]
    assert read_file(stack.m("n")) == b"data"
    assert read_file(stack.m("c")) == b"data"
    with open(stack.m("n"), "ab") as f:
        f.write(b"+")
    for name in ("b", "c", "n"):
        assert read_file(stack.m(name)) == b"data+"
        assert os.stat(stack.m(name)).st_nlink == 3
    stack.remount(extra=extra)
    assert read_file(stack.m("c")) == b"data+"
