"""Deleting lower entries: whiteouts, opaque directories, workdir cleanup."""

import errno
import os

import pytest

from helpers import (
    get_xattr,
    is_whiteout,
    make_whiteout,
    read_file,
    write_file,
)

OPAQUE = "trusted.overlay.opaque"


def test_unlink_lower_leaves_whiteout(stack):
    write_file(stack.lo(1, "f"), "lower")
    stack.mount()

    os.unlink(stack.m("f"))

    assert not os.path.lexists(stack.m("f"))
    assert is_whiteout(stack.u("f"))
    assert "f" not in os.listdir(stack.merged)


def test_unlink_upper_only_leaves_nothing(stack):
    """A file that exists only in upper is removed without a whiteout."""
    stack.mount()
    write_file(stack.m("f"), "new")

    os.unlink(stack.m("f"))

    assert not os.path.lexists(stack.u("f"))


def test_whiteout_survives_remount(stack):
    write_file(stack.lo(0, "f"), "lower")
    stack.mount()
    os.unlink(stack.m("f"))

    stack.remount()

    assert not os.path.lexists(stack.m("f"))
    assert "f" not in os.listdir(stack.merged)


def test_whiteout_hides_all_lowers(stack):
    """One whiteout hides the name in every lower layer at once."""
    write_file(stack.lo(0, "f"), "0")
    write_file(stack.lo(1, "f"), "1")
    stack.mount()

    os.unlink(stack.m("f"))

    assert not os.path.lexists(stack.m("f"))


def test_create_over_whiteout(stack):
    """A new file at a whited-out name starts empty, with no lower data."""
    write_file(stack.lo(0, "f"), "lower data")
    stack.mount()
    os.unlink(stack.m("f"))

    write_file(stack.m("f"), "new")

    assert read_file(stack.m("f")) == b"new"
    assert read_file(stack.u("f")) == b"new"
    stack.remount()
    assert read_file(stack.m("f")) == b"new"


def test_rmdir_lower_dir_leaves_whiteout(stack):
    os.makedirs(stack.lo(0, "d"))
    stack.mount()

    os.rmdir(stack.m("d"))

    assert not os.path.lexists(stack.m("d"))
    assert is_whiteout(stack.u("d"))


def test_rmdir_nonempty_merged_dir(stack):
    """rmdir of a dir whose only entries are in a lower fails ENOTEMPTY."""
    write_file(stack.lo(1, "d", "x"), "")
    stack.mount()

    with pytest.raises(OSError) as info:
        os.rmdir(stack.m("d"))

    assert info.value.errno == errno.ENOTEMPTY


def test_rmdir_dir_emptied_by_whiteouts(stack):
    """A merged dir whose lower entries were all deleted can be removed."""
    write_file(stack.lo(1, "d", "x"), "")
    write_file(stack.lo(0, "d", "y"), "")
    stack.mount()
    os.unlink(stack.m("d", "x"))
    os.unlink(stack.m("d", "y"))

    assert os.listdir(stack.m("d")) == []
    os.rmdir(stack.m("d"))

    assert not os.path.lexists(stack.m("d"))
    assert is_whiteout(stack.u("d"))


def test_mkdir_over_whiteout_is_opaque(stack):
    """rmdir then mkdir of a merged dir gives an opaque dir hiding lowers."""
    write_file(stack.lo(1, "d", "x"), "")
    write_file(stack.lo(0, "d", "y"), "")
    stack.mount()
    os.unlink(stack.m("d", "x"))
    os.unlink(stack.m("d", "y"))
    os.rmdir(stack.m("d"))

    os.mkdir(stack.m("d"))

    assert os.listdir(stack.m("d")) == []
    assert get_xattr(stack.u("d"), OPAQUE) == b"y"
    assert not os.path.lexists(stack.m("d", "x"))
    stack.remount()
    assert os.listdir(stack.m("d")) == []


def test_opaque_xattr_hidden(stack):
    """The opaque marker does not show through the merged tree."""
    write_file(stack.lo(0, "d", "x"), "")
    stack.mount()
    os.unlink(stack.m("d", "x"))
    os.rmdir(stack.m("d"))
    os.mkdir(stack.m("d"))

    assert OPAQUE not in os.listxattr(stack.m("d"))
    assert get_xattr(stack.m("d"), OPAQUE) is None


def test_preset_opaque_dir_hides_lower(stack):
    """An upper dir created with the opaque xattr before mount hides lowers."""
    write_file(stack.lo(0, "d", "hidden"), "")
    write_file(stack.u("d", "shown"), "")
    os.setxattr(stack.u("d"), OPAQUE, b"y")
    stack.mount()

    assert os.listdir(stack.m("d")) == ["shown"]
    assert not os.path.lexists(stack.m("d", "hidden"))


def test_replace_dir_with_file(stack):
    """rm -r of a lower dir then a file at that name: a plain upper file."""
    write_file(stack.lo(0, "d", "x"), "")
    stack.mount()
    os.unlink(stack.m("d", "x"))
    os.rmdir(stack.m("d"))

    write_file(stack.m("d"), "now a file")

    assert read_file(stack.m("d")) == b"now a file"
    assert os.path.isfile(stack.u("d"))


def test_replace_file_with_dir(stack):
    """A dir made where a lower file was deleted is opaque and empty."""
    write_file(stack.lo(0, "f"), "file")
    stack.mount()
    os.unlink(stack.m("f"))

    os.mkdir(stack.m("f"))

    assert os.listdir(stack.m("f")) == []
    assert os.path.isdir(stack.u("f"))


def test_workdir_leftovers_cleaned(stack):
    """Files left in workdir/work by an earlier crash are removed at mount.

    The leftovers are a file and a dir holding one file, the shapes an
    interrupted copy-up or rename leaves. Kernel overlayfs (checked on 6.18)
    removes only two levels below workdir/work: with deeper leftovers it
    logs "cleanup ... failed (-39)" and mounts read-only.
    """
    os.makedirs(os.path.join(stack.work, "work", "#12"))
    write_file(os.path.join(stack.work, "work", "#12", "f"), "stale")
    write_file(os.path.join(stack.work, "work", "#13"), "stale")
    stack.mount()

    leftovers = os.listdir(os.path.join(stack.work, "work"))

    assert "#12" not in leftovers
    assert "#13" not in leftovers
    write_file(stack.m("writable"), "")


def test_lower_whiteout_hides_deeper(stack):
    """A whiteout inside a lower layer hides the name in the layers below."""
    write_file(stack.lo(1, "hidden"), "lower1")
    write_file(stack.lo(1, "shown"), "lower1")
    make_whiteout(stack.lo(0, "hidden"))
    stack.mount()

    assert not os.path.lexists(stack.m("hidden"))
    assert sorted(os.listdir(stack.merged)) == ["shown"]


def test_lower_opaque_dir_hides_deeper(stack):
    """An opaque dir inside a lower layer hides the same dir below it."""
    write_file(stack.lo(1, "d", "deep"), "")
    write_file(stack.lo(0, "d", "top"), "")
    os.setxattr(stack.lo(0, "d"), OPAQUE, b"y")
    write_file(stack.u("d", "up"), "")
    stack.mount()

    assert sorted(os.listdir(stack.m("d"))) == ["top", "up"]
    assert not os.path.lexists(stack.m("d", "deep"))


def test_whiteouts_read_by_other_impl(stack):
    """Whiteouts and an opaque dir made by one impl hide names in the other."""
    write_file(stack.lo(1, "gone"), "")
    write_file(stack.lo(1, "d", "old"), "")
    stack.mount()
    os.unlink(stack.m("gone"))
    os.unlink(stack.m("d", "old"))
    os.rmdir(stack.m("d"))
    os.mkdir(stack.m("d"))
    write_file(stack.m("d", "new"), "")

    stack.remount(stack.other_impl())

    assert sorted(os.listdir(stack.merged)) == ["d"]
    assert os.listdir(stack.m("d")) == ["new"]


def test_whiteouts_share_one_inode(stack):
    """Whiteouts are links of one inode, which costs no inode per file."""
    for name in ("a", "b", "c"):
        write_file(stack.lo(0, name), name)
    os.makedirs(stack.lo(0, "d"))
    write_file(stack.lo(0, "d", "e"), "e")
    stack.mount()

    for name in ("a", "b", "c", "d/e"):
        os.unlink(stack.m(name))

    inodes = {os.lstat(stack.u(name)).st_ino for name in ("a", "b", "c", "d/e")}
    assert len(inodes) == 1
    assert os.lstat(stack.u("a")).st_nlink >= 4
    stack.remount()
    assert sorted(os.listdir(stack.merged)) == ["d"]
    assert os.listdir(stack.m("d")) == []


def remove_first_of_two(stack):
    """Mount two lower files a and b, remove a, and return workdir/work,
    which then contains the shared whiteout."""
    for name in ("a", "b"):
        write_file(stack.lo(0, name), name)
    stack.mount()
    os.unlink(stack.m("a"))
    return os.path.join(stack.work, "work")


def test_shared_whiteout_gone_from_workdir(lamina_stack):
    """Removing the shared whiteout's name in the work directory changes
    nothing: lamina links from the inode, which the first whiteout still
    names."""
    stack = lamina_stack
    work = remove_first_of_two(stack)
    for name in os.listdir(work):
        os.unlink(os.path.join(work, name))

    os.unlink(stack.m("b"))

    assert is_whiteout(stack.u("a"))
    assert is_whiteout(stack.u("b"))
    assert not os.path.lexists(stack.m("b"))


def test_shared_whiteout_removed_at_unmount(lamina_stack):
    stack = lamina_stack
    write_file(stack.lo(0, "a"), "a")
    stack.mount()
    os.unlink(stack.m("a"))
    assert len(os.listdir(os.path.join(stack.work, "work"))) == 1

    stack.unmount()

    assert os.listdir(os.path.join(stack.work, "work")) == []
    assert os.lstat(stack.u("a")).st_nlink == 1


@pytest.mark.parametrize("planted", ["file", "symlink", "directory"])
def test_shared_whiteout_name_taken_over(lamina_stack, planted):
    """Whatever takes the shared whiteout's name in the work directory,
    new whiteouts stay 0/0 devices: lamina links the inode it made."""
    stack = lamina_stack
    work = remove_first_of_two(stack)
    (shared,) = os.listdir(work)
    path = os.path.join(work, shared)
    os.unlink(path)
    if planted == "file":
        write_file(path, "planted")
    elif planted == "symlink":
        os.symlink("/etc/hostname", path)
    else:
        os.mkdir(path)

    os.unlink(stack.m("b"))

    assert is_whiteout(stack.u("a"))
    assert is_whiteout(stack.u("b"))
    assert not os.path.lexists(stack.m("b"))
    stack.unmount()
    assert os.path.lexists(path), "lamina removed a name it does not own"


def test_shared_whiteout_without_names_made_anew(lamina_stack):
    """When every name of the shared whiteout is gone, the next whiteout
    gets a new shared inode."""
    stack = lamina_stack
    work = remove_first_of_two(stack)
    for name in os.listdir(work):
        os.unlink(os.path.join(work, name))
    os.unlink(stack.u("a"))

    os.unlink(stack.m("b"))

    assert is_whiteout(stack.u("b"))
    assert len(os.listdir(work)) == 1
    assert not os.path.lexists(stack.m("b"))


@pytest.mark.parametrize("options, opaque", [
    (["redirect_dir=on", "index=off"], True),
    (["redirect_dir=off", "index=on"], True),
    (["redirect_dir=off", "index=off"], False),
])
def test_mkdir_in_merged_dir_opaque(stack, options, opaque):
    """A new directory in a merged directory is opaque where overlayfs
    makes it so: with redirect_dir=on or the index. One in a directory
    that only the upper layer has never is."""
    os.makedirs(stack.lo(0, "d"))
    stack.mount(extra=options)

    os.mkdir(stack.m("new"))
    os.mkdir(stack.m("d", "new"))
    os.mkdir(stack.m("new", "sub"))

    mark = b"y" if opaque else None
    assert get_xattr(stack.u("new"), "trusted.overlay.opaque") == mark
    assert get_xattr(stack.u("d", "new"), "trusted.overlay.opaque") == mark
    assert get_xattr(stack.u("new", "sub"), "trusted.overlay.opaque") is None
    assert os.listdir(stack.m("new")) == ["sub"]


def test_link_marks_parent_impure(stack):
    """A directory that gains a name of a copied-up lower file is impure."""
    os.makedirs(stack.lo(0, "e"))
    os.makedirs(stack.lo(0, "c"))
    write_file(stack.lo(0, "e", "f"), "f")
    stack.mount()

    os.link(stack.m("e", "f"), stack.m("c", "f"))

    assert get_xattr(stack.u("c"), "trusted.overlay.impure") == b"y"
    entry = next(e for e in os.scandir(stack.m("c")) if e.name == "f")
    assert entry.inode() == os.lstat(stack.m("c", "f")).st_ino


@pytest.mark.parametrize("options", [["index=on"], ["index=off"]])
def test_link_after_remount_marks_parent_impure(stack, options):
    """A file copied up before a remount still has its origin, so a new
    name of it makes its directory impure too."""
    os.makedirs(stack.lo(0, "e"))
    os.makedirs(stack.lo(0, "c"))
    write_file(stack.lo(0, "e", "f"), "f")
    stack.mount(extra=options)
    os.setxattr(stack.m("e", "f"), "user.a", b"1")
    stack.remount(extra=options)

    os.link(stack.m("e", "f"), stack.m("c", "f"))

    assert get_xattr(stack.u("c"), "trusted.overlay.impure") == b"y"


def test_link_of_lower_link_without_index(stack):
    """Without the index a lower hard link loses its origin on copy-up, so
    a new name of it leaves its directory as it is."""
    os.makedirs(stack.lo(0, "e"))
    os.makedirs(stack.lo(0, "c"))
    write_file(stack.lo(0, "e", "f"), "f")
    os.link(stack.lo(0, "e", "f"), stack.lo(0, "e", "g"))
    stack.mount(extra=["index=off"])

    os.link(stack.m("e", "f"), stack.m("c", "f"))

    assert get_xattr(stack.u("c"), "trusted.overlay.impure") is None
    assert get_xattr(stack.u("e", "f"), "trusted.overlay.origin") is None
