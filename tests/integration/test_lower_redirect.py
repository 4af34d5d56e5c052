"""Redirects found in lower layers, as an upper becomes a lower.

A layer that was once an upper may hold moved directories: a directory
with overlay.redirect and a whiteout at its old name. Mounted as a lower
layer, the kernel follows such redirects into the layers below; these
tests build such layers by hand and compare both implementations.
"""

import errno
import os
import shutil
import stat

import pytest

from helpers import read_file, write_file

REDIRECT = "trusted.overlay.redirect"


def whiteout(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    os.mknod(path, stat.S_IFCHR | 0o600, 0)


def moved_dir(path, redirect):
    os.makedirs(path, exist_ok=True)
    os.setxattr(path, REDIRECT, redirect.encode())


def base_tree(stack, layer):
    write_file(stack.lo(layer, "a", "b", "f"), "f")
    write_file(stack.lo(layer, "a", "g"), "g")
    os.makedirs(stack.lo(layer, "c"))


@pytest.mark.parametrize("upper", [True, False])
def test_absolute_redirect_in_lower(stack, upper):
    """A lower dir with an absolute redirect merges the old place below."""
    base_tree(stack, 1)
    moved_dir(stack.lo(0, "c", "a2"), "/a")
    write_file(stack.lo(0, "c", "a2", "new"), "new")
    whiteout(stack.lo(0, "a"))
    stack.mount(extra=["redirect_dir=on"], upper=upper)

    assert sorted(os.listdir(stack.merged)) == ["c"]
    assert sorted(os.listdir(stack.m("c", "a2"))) == ["b", "g", "new"]
    assert read_file(stack.m("c", "a2", "b", "f")) == b"f"
    assert read_file(stack.m("c", "a2", "g")) == b"g"


def test_relative_redirect_in_lower(stack):
    """A relative redirect names the old entry in the same parent."""
    base_tree(stack, 1)
    moved_dir(stack.lo(0, "a3"), "a")
    whiteout(stack.lo(0, "a"))
    stack.mount(extra=["redirect_dir=on"])

    assert sorted(os.listdir(stack.merged)) == ["a3", "c"]
    assert sorted(os.listdir(stack.m("a3"))) == ["b", "g"]
    assert read_file(stack.m("a3", "b", "f")) == b"f"


def test_chained_redirects(make_stack):
    """Moved twice in two layers: each redirect leads one layer further."""
    stack = make_stack(nlower=3)
    base_tree(stack, 2)
    moved_dir(stack.lo(1, "x"), "/a")
    write_file(stack.lo(1, "x", "mid"), "mid")
    whiteout(stack.lo(1, "a"))
    moved_dir(stack.lo(0, "c", "y"), "/x")
    whiteout(stack.lo(0, "x"))
    stack.mount(extra=["redirect_dir=on"])

    assert sorted(os.listdir(stack.merged)) == ["c"]
    assert sorted(os.listdir(stack.m("c", "y"))) == ["b", "g", "mid"]
    assert read_file(stack.m("c", "y", "b", "f")) == b"f"


def test_absolute_redirect_past_opaque_parent(make_stack):
    """A path that leads through an opaque directory and then through a
    directory with an absolute redirect goes on below at the redirect."""
    stack = make_stack(nlower=3)
    write_file(stack.lo(2, "t", "u", "f"), "f")
    write_file(stack.lo(2, "t", "u", "g"), "g")
    os.makedirs(stack.lo(1, "r"))
    os.setxattr(stack.lo(1, "r"), "trusted.overlay.opaque", b"y")
    moved_dir(stack.lo(1, "r", "t2"), "/t")
    whiteout(stack.lo(1, "t"))
    moved_dir(stack.lo(0, "ua"), "/r/t2/u")
    write_file(stack.lo(0, "ua", "top"), "top")
    whiteout(stack.lo(0, "r", "t2", "u"))
    stack.mount(extra=["redirect_dir=on"])

    assert sorted(os.listdir(stack.m("ua"))) == ["f", "g", "top"]
    assert read_file(stack.m("ua", "g")) == b"g"
    assert sorted(os.listdir(stack.m("r", "t2"))) == []


def test_relative_redirect_below_absolute(make_stack):
    """A directory found at the path of an absolute redirect and renamed
    before: its relative redirect renames the last component of that
    path, not the name in the merged parent."""
    stack = make_stack(nlower=3)
    write_file(stack.lo(2, "b", "f"), "right")
    write_file(stack.lo(2, "c", "b", "wrong"), "wrong")
    moved_dir(stack.lo(1, "a"), "b")
    whiteout(stack.lo(1, "b"))
    moved_dir(stack.lo(0, "c", "x"), "/a")
    whiteout(stack.lo(0, "a"))
    stack.mount(extra=["redirect_dir=on"])

    assert sorted(os.listdir(stack.m("c", "x"))) == ["f"]
    assert read_file(stack.m("c", "x", "f")) == b"right"
    os.rename(stack.m("c", "x"), stack.m("y"))
    stack.remount()
    assert sorted(os.listdir(stack.m("y"))) == ["f"]
    assert read_file(stack.m("y", "f")) == b"right"


@pytest.mark.parametrize("value", ["a/b", ""])
@pytest.mark.parametrize("where", ["entry", "on the way"])
def test_invalid_redirect_fails_lookup(make_stack, where, value):
    """A redirect that is neither one name nor an absolute path makes the
    lookup fail with EINVAL, on the entry itself and on a directory that
    an absolute redirect leads through."""
    stack = make_stack(nlower=3)
    write_file(stack.lo(2, "a", "b", "f"), "f")
    moved_dir(stack.lo(1, "x"), value)
    if where == "entry":
        name = "x"
    else:
        write_file(stack.lo(1, "x", "b", "g"), "g")
        moved_dir(stack.lo(0, "y"), "/x/b")
        whiteout(stack.lo(0, "x"))
        name = "y"
    stack.mount(extra=["redirect_dir=on"])

    with pytest.raises(OSError) as info:
        os.stat(stack.m(name))
    assert info.value.errno == errno.EINVAL


@pytest.mark.parametrize("blocker", ["whiteout", "file"])
def test_redirect_stops_at_hidden_path(make_stack, blocker):
    """A whiteout or a file on a redirect's path in a middle layer hides
    the path in the layers below it."""
    stack = make_stack(nlower=3)
    write_file(stack.lo(0, "e", "x", "p"), "p")
    if blocker == "whiteout":
        whiteout(stack.lo(1, "e"))
    else:
        write_file(stack.lo(1, "e"), "e")
    write_file(stack.lo(2, "e", "x", "q"), "q")
    stack.mount(extra=["redirect_dir=on"])

    os.rename(stack.m("e", "x"), stack.m("n"))

    assert os.listdir(stack.m("n")) == ["p"]
    stack.remount(extra=["redirect_dir=on"])
    assert os.listdir(stack.m("n")) == ["p"]


def test_lower_redirect_then_write_and_rename(stack):
    """A dir moved in a lower layer takes writes and moves again."""
    base_tree(stack, 1)
    moved_dir(stack.lo(0, "c", "a2"), "/a")
    whiteout(stack.lo(0, "a"))
    stack.mount(extra=["redirect_dir=on"])

    write_file(stack.m("c", "a2", "b", "h"), "h")
    os.rename(stack.m("c", "a2"), stack.m("z"))
    stack.unmount()
    stack.mount(extra=["redirect_dir=on"])

    assert sorted(os.listdir(stack.merged)) == ["c", "z"]
    assert sorted(os.listdir(stack.m("z", "b"))) == ["f", "h"]
    assert read_file(stack.m("z", "g")) == b"g"


def test_nofollow_refuses_lower_redirect(stack):
    """With redirect_dir=nofollow a dir that carries a redirect is EPERM.

    overlayfs refuses to look up a directory whose redirect it may not
    follow, rather than show it without its moved contents.
    """
    base_tree(stack, 1)
    moved_dir(stack.lo(0, "c", "a2"), "/a")
    write_file(stack.lo(0, "c", "a2", "new"), "new")
    whiteout(stack.lo(0, "a"))
    stack.mount(extra=["redirect_dir=nofollow"], upper=False)

    with pytest.raises(PermissionError):
        os.listdir(stack.m("c", "a2"))
    assert sorted(os.listdir(stack.m("c"))) == ["a2"]


def test_moved_into_opaque_dir_after_remount(stack):
    """An absolute redirect reaches past an opaque parent, as in overlayfs."""
    base_tree(stack, 1)
    write_file(stack.lo(1, "o", "g"), "g")
    stack.mount(extra=["redirect_dir=on"])
    shutil.rmtree(stack.m("o"))
    os.mkdir(stack.m("o"))
    os.rename(stack.m("a"), stack.m("o", "a2"))
    stack.unmount()

    stack.mount(extra=["redirect_dir=on"])

    assert sorted(os.listdir(stack.m("o"))) == ["a2"]
    assert sorted(os.listdir(stack.m("o", "a2"))) == ["b", "g"]


def test_rename_below_lower_redirect(stack):
    """A directory below a dir moved in a lower layer moves with its files."""
    base_tree(stack, 1)
    moved_dir(stack.lo(0, "a2"), "a")
    whiteout(stack.lo(0, "a"))
    stack.mount(extra=["redirect_dir=on"])

    os.rename(stack.m("a2", "b"), stack.m("top"))

    assert os.listdir(stack.m("top")) == ["f"]
    stack.unmount()
    stack.mount(extra=["redirect_dir=on"])
    assert os.listdir(stack.m("top")) == ["f"]
    assert sorted(os.listdir(stack.m("a2"))) == ["g"]
