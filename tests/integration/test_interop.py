"""Same tree both ways: one implementation writes, the other reads it back.

A fixed set of changes is made through one implementation, and the merged
tree is recorded. Then the stack is mounted again on the same lower, upper
and work dirs with the other implementation. The two merged trees must
match entry by entry: type, mode, owner, size, sha256 of the content,
symlink target, device number and xattrs. The kernel-to-kernel case is the
control that shows the scenario itself is sound.
"""

import os
import stat

import pytest

from helpers import diff_trees, get_xattr, read_file, snapshot_tree, write_file


def build_lowers(stack):
    """Lower layers with files, dirs, links and xattrs to change later."""
    lo0, lo1 = stack.lowers
    write_file(os.path.join(lo1, "edit.txt"), "lower text\n")
    write_file(os.path.join(lo1, "delete.txt"), "to delete")
    write_file(os.path.join(lo1, "chmod.txt"), "mode", mode=0o644)
    write_file(os.path.join(lo1, "chown.txt"), "owner")
    write_file(os.path.join(lo1, "xattr.txt"), "xattr")
    write_file(os.path.join(lo1, "rename-src.txt"), "renamed")
    write_file(os.path.join(lo1, "link-src.txt"), "linked")
    write_file(os.path.join(lo1, "deldir", "a"), "a")
    write_file(os.path.join(lo1, "deldir", "sub", "b"), "b")
    write_file(os.path.join(lo1, "dir2file", "x"), "x")
    write_file(os.path.join(lo1, "file2dir"), "was a file")
    write_file(os.path.join(lo1, "opaque", "old1"), "old")
    write_file(os.path.join(lo0, "opaque", "old0"), "old")
    write_file(os.path.join(lo0, "merged", "from0"), "0")
    write_file(os.path.join(lo1, "merged", "from1"), "1")
    write_file(os.path.join(lo1, "merged", "drop"), "drop")
    os.symlink("edit.txt", os.path.join(lo1, "sym"))
    os.setxattr(os.path.join(lo1, "xattr.txt"), "user.keep", b"lower")
    os.mkfifo(os.path.join(lo0, "fifo"))


def apply_changes(m):
    """Make every kind of change through the merged tree m."""
    with open(os.path.join(m, "edit.txt"), "a") as f:
        f.write("appended\n")
    os.unlink(os.path.join(m, "delete.txt"))
    os.chmod(os.path.join(m, "chmod.txt"), 0o600)
    os.chown(os.path.join(m, "chown.txt"), 1234, 5678)
    os.setxattr(os.path.join(m, "xattr.txt"), "user.added", b"upper")
    os.rename(os.path.join(m, "rename-src.txt"),
              os.path.join(m, "rename-dst.txt"))
    os.link(os.path.join(m, "link-src.txt"), os.path.join(m, "link-dst.txt"))

    # Remove a lower dir tree, replace a dir with a file and a file with
    # a dir, and recreate a merged dir so it turns opaque.
    os.unlink(os.path.join(m, "deldir", "sub", "b"))
    os.rmdir(os.path.join(m, "deldir", "sub"))
    os.unlink(os.path.join(m, "deldir", "a"))
    os.rmdir(os.path.join(m, "deldir"))
    os.unlink(os.path.join(m, "dir2file", "x"))
    os.rmdir(os.path.join(m, "dir2file"))
    write_file(os.path.join(m, "dir2file"), "now a file")
    os.unlink(os.path.join(m, "file2dir"))
    os.mkdir(os.path.join(m, "file2dir"))
    write_file(os.path.join(m, "file2dir", "inside"), "in")
    os.unlink(os.path.join(m, "opaque", "old0"))
    os.unlink(os.path.join(m, "opaque", "old1"))
    os.rmdir(os.path.join(m, "opaque"))
    os.mkdir(os.path.join(m, "opaque"))
    write_file(os.path.join(m, "opaque", "fresh"), "fresh")

    os.unlink(os.path.join(m, "merged", "drop"))
    write_file(os.path.join(m, "merged", "fromupper"), "u")
    write_file(os.path.join(m, "newdir", "deep", "file"), "new", mode=0o640)
    os.symlink("newdir/deep/file", os.path.join(m, "newsym"))
    os.mknod(os.path.join(m, "newchr"), stat.S_IFCHR | 0o600,
             os.makedev(1, 3))
    os.chmod(os.path.join(m, "fifo"), 0o600)


DIRECTIONS = [
    ("lamina", "kernel"),
    ("kernel", "lamina"),
    ("kernel", "kernel"),
]


@pytest.mark.parametrize("writer,reader", DIRECTIONS,
                         ids=[f"{w}-to-{r}" for w, r in DIRECTIONS])
def test_same_tree_both_ways(any_stack, writer, reader):
    stack = any_stack(writer)
    build_lowers(stack)
    stack.mount()
    apply_changes(stack.merged)
    written = snapshot_tree(stack.merged)

    stack.remount(reader)
    read_back = snapshot_tree(stack.merged)

    assert diff_trees(written, read_back) == []


@pytest.mark.parametrize("writer,reader", DIRECTIONS,
                         ids=[f"{w}-to-{r}" for w, r in DIRECTIONS])
def test_changes_seen_by_reader(any_stack, writer, reader):
    """The reader sees each change itself, not only the same tree."""
    stack = any_stack(writer)
    build_lowers(stack)
    stack.mount()
    apply_changes(stack.merged)

    stack.remount(reader)
    m = stack.merged
    names = set(os.listdir(m))

    assert "delete.txt" not in names
    assert "deldir" not in names
    assert "rename-src.txt" not in names
    with open(os.path.join(m, "edit.txt")) as f:
        assert f.read() == "lower text\nappended\n"
    assert os.path.isfile(os.path.join(m, "dir2file"))
    assert os.listdir(os.path.join(m, "file2dir")) == ["inside"]
    assert os.listdir(os.path.join(m, "opaque")) == ["fresh"]
    assert sorted(os.listdir(os.path.join(m, "merged"))) == [
        "from0", "from1", "fromupper"]
    assert os.getxattr(os.path.join(m, "xattr.txt"), "user.keep") == b"lower"
    assert os.stat(os.path.join(m, "link-dst.txt")).st_nlink == 2
    assert stat.S_IMODE(os.stat(os.path.join(m, "chmod.txt")).st_mode) == 0o600


@pytest.mark.parametrize("writer,reader", DIRECTIONS + [("lamina", "lamina")],
                         ids=[f"{w}-to-{r}" for w, r in DIRECTIONS] +
                         ["lamina-to-lamina"])
def test_copied_up_entries_keep_dir_inode(any_stack, writer, reader):
    """readdir reports the st_ino of entries that the writer copied up.

    A copy-up keeps the lower inode number as st_ino, and marks the upper
    parent impure so that readdir there looks up origins too.
    """
    stack = any_stack(writer)
    write_file(stack.lo(1, "d", "f"), "x")
    write_file(stack.lo(1, "g"), "y")
    stack.mount()
    os.chmod(os.path.join(stack.merged, "d", "f"), 0o600)
    os.chmod(os.path.join(stack.merged, "g"), 0o600)

    stack.remount(reader)
    for sub in ("", "d"):
        with os.scandir(os.path.join(stack.merged, sub)) as entries:
            for entry in entries:
                st_ino = os.lstat(entry.path).st_ino
                assert entry.inode() == st_ino, entry.path
    stack.unmount()
    assert get_xattr(stack.u("d"), "trusted.overlay.impure") == b"y"
    assert get_xattr(stack.u(), "trusted.overlay.impure") == b"y"


@pytest.mark.parametrize("change", ["unlink", "chmod"])
def test_reads_kernel_metacopy_index_entry(any_stack, change):
    """overlayfs with metacopy=on keeps a hard-linked lower file's data in
    the lower layer after a change of metadata, under an index entry
    without data. lamina reads and writes that file's data correctly."""
    stack = any_stack("kernel")
    options = ["redirect_dir=on", "index=on", "metacopy=on"]
    write_file(stack.lo(0, "b"), "lowerdata\n")
    os.link(stack.lo(0, "b"), stack.lo(0, "z"))
    stack.mount(extra=options)
    if change == "unlink":
        os.unlink(stack.m("z"))
    else:
        os.chmod(stack.m("z"), 0o600)
    stack.unmount()

    stack.mount(impl="lamina", extra=options)
    assert read_file(stack.m("b")) == b"lowerdata\n"
    with open(stack.m("b"), "ab") as f:
        f.write(b"more\n")
    assert read_file(stack.m("b")) == b"lowerdata\nmore\n"
    if change == "chmod":
        assert read_file(stack.m("z")) == b"lowerdata\nmore\n"
    stack.unmount()

    assert read_file(stack.lo(0, "b")) == b"lowerdata\n"
    stack.mount(extra=options)
    assert read_file(stack.m("b")) == b"lowerdata\nmore\n"
