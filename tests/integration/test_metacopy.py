"""metacopy=on: metadata changes copy up no data, and data-only layers.

Each test runs on kernel overlayfs and on lamina with the same options.
A metacopy file is an upper file with overlay.metacopy, the full size
and no data blocks; its data is read from below until the first open
for writing.
"""

import errno
import os
import threading

import pytest

from helpers import get_xattr, make_whiteout, read_file, write_file

META = ["metacopy=on", "redirect_dir=on"]
METACOPY = "trusted.overlay.metacopy"
MIB = 1 << 20


def big_file(path, size=4 * MIB):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    block = bytes(range(256)) * 4096
    with open(path, "wb") as f:
        for _ in range(size // len(block)):
            f.write(block)
    return block * (size // len(block))


def has_metacopy(path):
    return get_xattr(path, METACOPY) is not None


def used_bytes(path):
    return os.lstat(path).st_blocks * 512


@pytest.mark.parametrize("change", ["chown", "chmod", "utime", "setxattr"])
def test_metadata_change_copies_no_data(stack, change):
    data = big_file(stack.lo(1, "f"))
    stack.mount(extra=META)

    if change == "chown":
        os.chown(stack.m("f"), 1234, 5678)
    elif change == "chmod":
        os.chmod(stack.m("f"), 0o600)
    elif change == "utime":
        os.utime(stack.m("f"), (1000, 2000))
    else:
        os.setxattr(stack.m("f"), "user.note", b"v")

    assert has_metacopy(stack.u("f"))
    assert os.lstat(stack.u("f")).st_size == len(data)
    assert used_bytes(stack.u("f")) < MIB
    assert read_file(stack.m("f")) == data
    # du through the mount counts the data below.
    assert os.stat(stack.m("f")).st_blocks == os.stat(stack.lo(1, "f")).st_blocks


def test_write_open_brings_the_data(stack):
    data = big_file(stack.lo(1, "f"))
    stack.mount(extra=META)
    os.chmod(stack.m("f"), 0o640)

    with open(stack.m("f"), "ab") as f:
        f.write(b"tail")

    assert not has_metacopy(stack.u("f"))
    assert read_file(stack.m("f")) == data + b"tail"
    assert read_file(stack.u("f")) == data + b"tail"
    assert os.stat(stack.m("f")).st_mode & 0o777 == 0o640
    assert read_file(stack.lo(1, "f")) == data


def test_truncate_drops_the_mark(stack):
    big_file(stack.lo(1, "f"))
    stack.mount(extra=META)
    os.chown(stack.m("f"), 1, 1)

    os.truncate(stack.m("f"), 0)

    assert not has_metacopy(stack.u("f"))
    assert read_file(stack.m("f")) == b""


def test_renamed_metacopy_file_keeps_its_data(stack):
    data = big_file(stack.lo(1, "d", "f"))
    os.makedirs(stack.lo(1, "e"))
    stack.mount(extra=META)
    os.chmod(stack.m("d", "f"), 0o600)

    os.rename(stack.m("d", "f"), stack.m("e", "g"))

    assert read_file(stack.m("e", "g")) == data
    assert not os.path.lexists(stack.m("d", "f"))
    assert get_xattr(stack.u("e", "g"), "trusted.overlay.redirect") == b"/d/f"
    stack.unmount()
    stack.mount(impl=stack.other_impl(), extra=META)
    assert read_file(stack.m("e", "g")) == data
    assert has_metacopy(stack.u("e", "g"))


def test_metacopy_file_renamed_in_its_directory(stack):
    """Within one directory the redirect of a metacopy file is its old
    name, as for a directory."""
    data = big_file(stack.lo(1, "d", "f"))
    stack.mount(extra=META)
    os.chmod(stack.m("d", "f"), 0o600)

    os.rename(stack.m("d", "f"), stack.m("d", "g"))

    assert get_xattr(stack.u("d", "g"), "trusted.overlay.redirect") == b"f"
    assert read_file(stack.m("d", "g")) == data
    stack.remount(impl=stack.other_impl(), extra=META)
    assert read_file(stack.m("d", "g")) == data
    assert not os.path.lexists(stack.m("d", "f"))


def test_metacopy_written_by_other_impl(stack):
    data = big_file(stack.lo(1, "f"))
    stack.mount(impl=stack.other_impl(), extra=META)
    os.chown(stack.m("f"), 42, 42)
    stack.unmount()

    stack.mount(extra=META)

    assert has_metacopy(stack.u("f"))
    st = os.stat(stack.m("f"))
    assert (st.st_uid, st.st_size) == (42, len(data))
    assert read_file(stack.m("f")) == data


def test_chown_tree_writes_almost_nothing(stack):
    total = 0
    for i in range(16):
        total += len(big_file(stack.lo(1, "tree", f"d{i % 4}", f"f{i}")))
    stack.mount(extra=META)

    for root, dirs, files in os.walk(stack.m("tree")):
        for name in dirs + files:
            os.chown(os.path.join(root, name), 4321, 4321)

    used = 0
    for root, dirs, files in os.walk(stack.u("tree")):
        used += sum(used_bytes(os.path.join(root, n)) for n in files)
    assert total == 64 * MIB
    assert used < MIB


def test_metacopy_off_refuses_metacopy_files(stack):
    """A mount without metacopy=on will not follow the mark: EPERM."""
    big_file(stack.lo(1, "f"))
    stack.mount(extra=META)
    os.chmod(stack.m("f"), 0o600)
    stack.unmount()

    stack.mount(extra=["redirect_dir=on"])

    with pytest.raises(PermissionError):
        os.stat(stack.m("f"))


def test_metacopy_needs_redirects(stack):
    """metacopy=on with redirect_dir=off is refused at mount time."""
    with pytest.raises(AssertionError):
        stack.mount(extra=["metacopy=on", "redirect_dir=off"])


def test_data_only_layer(stack):
    """A metacopy file in a lower layer takes its data from a data layer.

    The data layer's own names do not show in the merged tree.
    """
    data = big_file(stack.lo(1, "blobs", "b1"))
    write_file(stack.lo(0, "app", "f"), b"")
    os.truncate(stack.lo(0, "app", "f"), len(data))
    os.setxattr(stack.lo(0, "app", "f"), METACOPY, b"")
    os.setxattr(stack.lo(0, "app", "f"), "trusted.overlay.redirect",
                b"/blobs/b1")
    lowers = [stack.lowers[0], "", stack.lowers[1]]  # "" makes "::"
    stack.mount(lowers=lowers, upper=False)

    assert sorted(os.listdir(stack.merged)) == ["app"]
    assert read_file(stack.m("app", "f")) == data


def test_data_only_layer_copy_up(stack):
    """Writing a file whose data is in a data layer copies the data up."""
    data = big_file(stack.lo(1, "blobs", "b1"))
    write_file(stack.lo(0, "f"), b"")
    os.truncate(stack.lo(0, "f"), len(data))
    os.setxattr(stack.lo(0, "f"), METACOPY, b"")
    os.setxattr(stack.lo(0, "f"), "trusted.overlay.redirect", b"/blobs/b1")
    stack.mount(lowers=[stack.lowers[0], "", stack.lowers[1]])

    with open(stack.m("f"), "r+b") as f:
        f.write(b"X")

    assert read_file(stack.m("f")) == b"X" + data[1:]
    assert read_file(stack.lo(1, "blobs", "b1")) == data


def test_metacopy_file_without_data(stack):
    """A metacopy file in the last layer has no data below it: EIO."""
    write_file(stack.lo(1, "f"), b"\0" * 100)
    os.setxattr(stack.lo(1, "f"), METACOPY, b"")
    write_file(stack.lo(0, "g"), "g")
    stack.mount(extra=["metacopy=on"], upper=False)

    assert "g" in os.listdir(stack.merged)
    with pytest.raises(OSError) as failure:
        os.stat(stack.m("f"))
    assert failure.value.errno == errno.EIO


def test_new_link_keeps_the_data_below(stack):
    """A new hard link to a lower file copies up its metadata alone and
    marks it with its absolute path, as overlayfs does, so that the name
    in another directory finds the data too."""
    data = big_file(stack.lo(1, "d", "f"))
    os.makedirs(stack.lo(1, "e"))
    stack.mount(extra=META)

    os.link(stack.m("d", "f"), stack.m("e", "g"))

    for name in (("d", "f"), ("e", "g")):
        assert has_metacopy(stack.u(*name))
        assert get_xattr(stack.u(*name), "trusted.overlay.redirect") == b"/d/f"
        assert read_file(stack.m(*name)) == data
    assert used_bytes(stack.u("d", "f")) < MIB
    assert os.stat(stack.m("e", "g")).st_nlink == 2
    stack.remount(impl=stack.other_impl(), extra=META)
    assert read_file(stack.m("e", "g")) == data
    assert os.stat(stack.m("d", "f")).st_ino == os.stat(stack.m("e", "g")).st_ino


def test_link_of_renamed_metacopy_file(stack):
    """A metacopy file renamed in its directory has a relative redirect.
    A link to it replaces that with the absolute path."""
    data = big_file(stack.lo(1, "d", "f"))
    os.makedirs(stack.lo(1, "e"))
    stack.mount(extra=META)
    os.rename(stack.m("d", "f"), stack.m("d", "h"))

    os.link(stack.m("d", "h"), stack.m("e", "g"))

    assert get_xattr(stack.u("e", "g"), "trusted.overlay.redirect") == b"/d/f"
    assert read_file(stack.m("e", "g")) == data
    stack.remount(impl=stack.other_impl(), extra=META)
    assert read_file(stack.m("d", "h")) == data
    assert read_file(stack.m("e", "g")) == data


@pytest.mark.parametrize("linker", ["same", "other"])
@pytest.mark.parametrize("order", ["read-first", "write-first"])
def test_data_brought_up_through_another_name(stack, order, linker):
    """Two names of one metacopy file, linked here or by the other
    implementation. Once a write through one brings the data up, the
    other reads it from the upper file, and a write through it keeps the
    first write."""
    data = big_file(stack.lo(1, "d", "f"))
    os.makedirs(stack.lo(1, "e"))
    if linker == "other":
        stack.mount(impl=stack.other_impl(), extra=META)
        os.link(stack.m("d", "f"), stack.m("e", "g"))
        stack.unmount()
    stack.mount(extra=META)
    if linker == "same":
        os.link(stack.m("d", "f"), stack.m("e", "g"))
    if order == "read-first":
        assert read_file(stack.m("d", "f")) == data

    with open(stack.m("e", "g"), "r+b") as f:
        f.write(b"one")
    expect = b"one" + data[3:]
    assert read_file(stack.m("d", "f")) == expect
    with open(stack.m("d", "f"), "ab") as f:
        f.write(b"two")

    assert read_file(stack.m("d", "f")) == expect + b"two"
    assert read_file(stack.m("e", "g")) == expect + b"two"
    assert not has_metacopy(stack.u("d", "f"))


def test_index_entry_data_brought_up_later(stack):
    """A lower name that reads a metacopy index entry made by the other
    implementation reads the new data once a write through another name
    brought the data up."""
    data = big_file(stack.lo(1, "a"))
    os.link(stack.lo(1, "a"), stack.lo(1, "b"))
    stack.mount(impl=stack.other_impl(), extra=META + ["index=on"])
    os.chmod(stack.m("a"), 0o600)
    stack.unmount()
    stack.mount(extra=META + ["index=on"])
    assert read_file(stack.m("b")) == data

    with open(stack.m("a"), "r+b") as f:
        f.write(b"new")

    assert read_file(stack.m("b")) == b"new" + data[3:]
    assert not os.path.lexists(stack.u("b"))


def test_index_entry_is_a_metacopy_file(stack):
    """With the index, removing one name of a hard-linked lower file
    copies the file into the index as a metacopy file, and the other
    name still reads the data below."""
    data = big_file(stack.lo(1, "a"))
    os.link(stack.lo(1, "a"), stack.lo(1, "b"))
    stack.mount(extra=META + ["index=on"])

    os.unlink(stack.m("a"))

    index = os.path.join(stack.work, "index")
    entries = [e for e in os.listdir(index) if not e.startswith("#")]
    assert len(entries) == 1
    assert has_metacopy(os.path.join(index, entries[0]))
    assert used_bytes(os.path.join(index, entries[0])) < MIB
    assert read_file(stack.m("b")) == data
    assert os.stat(stack.m("b")).st_nlink == 1


def test_rename_of_linked_file_in_its_directory(stack):
    """A metacopy file whose lower file has other names gets an absolute
    redirect even in its own directory, and a second name moved later
    keeps the first one's."""
    data = big_file(stack.lo(1, "d", "f"))
    os.makedirs(stack.lo(1, "e"))
    os.link(stack.lo(1, "d", "f"), stack.lo(1, "e", "g"))
    stack.mount(extra=META + ["index=on"])

    os.rename(stack.m("d", "f"), stack.m("d", "h"))
    os.rename(stack.m("e", "g"), stack.m("h2"))

    for name in (("d", "h"), ("h2",)):
        assert get_xattr(stack.u(*name), "trusted.overlay.redirect") == b"/d/f"
        assert read_file(stack.m(*name)) == data
    stack.remount(impl=stack.other_impl(), extra=META + ["index=on"])
    assert read_file(stack.m("h2")) == data


def lower_metacopy(stack, path, target, data_len):
    """Make stack.lo(0, path) a metacopy file whose data is at target."""
    write_file(stack.lo(0, *path), b"")
    os.truncate(stack.lo(0, *path), data_len)
    os.setxattr(stack.lo(0, *path), METACOPY, b"")
    os.setxattr(stack.lo(0, *path), "trusted.overlay.redirect", target)


@pytest.mark.parametrize("data_only", [False, True])
def test_link_redirect_names_the_file(stack, data_only):
    """A link to a file whose lower metacopy finds its data elsewhere
    gets the file's own path as redirect, not the data's: the data's
    path may name another file in the top layer."""
    data = big_file(stack.lo(1, "old", "f"))
    lower_metacopy(stack, ("d", "f"), b"/old/f", len(data))
    os.makedirs(stack.lo(0, "e"))
    if not data_only:
        write_file(stack.lo(0, "old", "f"), b"other file\n")
    lowers = ([stack.lowers[0], "", stack.lowers[1]] if data_only
              else stack.lowers)
    options = dict(lowers=lowers, extra=META)
    stack.mount(**options)

    os.link(stack.m("d", "f"), stack.m("e", "g"))

    assert get_xattr(stack.u("e", "g"), "trusted.overlay.redirect") == b"/d/f"
    assert read_file(stack.m("e", "g")) == data
    with open(stack.m("e", "g"), "ab") as f:
        f.write(b"X")
    stack.unmount()
    stack.mount(impl=stack.other_impl(), **options)
    assert read_file(stack.m("d", "f")) == data + b"X"


def test_two_names_bring_data_up_at_once(stack):
    """A write through one name of a metacopy file and a truncating open
    through another, at the same time, leave one of the two results."""
    rounds = 4
    for r in range(rounds):
        big_file(stack.lo(1, f"d{r}", "f"), size=32 * MIB)
        os.makedirs(stack.lo(1, f"e{r}"))
    stack.mount(extra=META)
    for r in range(rounds):
        first, second = stack.m(f"d{r}", "f"), stack.m(f"e{r}", "g")
        os.link(first, second)
        start = threading.Barrier(2)

        def write_first():
            start.wait()
            fd = os.open(first, os.O_RDWR)
            os.pwrite(fd, b"Y", 0)
            os.close(fd)

        def truncate_second():
            start.wait()
            fd = os.open(second, os.O_WRONLY | os.O_TRUNC)
            os.write(fd, b"NEW")
            os.close(fd)

        threads = [threading.Thread(target=write_first),
                   threading.Thread(target=truncate_second)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert read_file(first) in (b"NEW", b"YEW")
        assert read_file(second) == read_file(first)


def test_linked_lower_metacopy_keeps_its_data_layer(stack):
    """Two names of a metacopy file in a lower layer find their data
    through its redirect. Once one name is in the index, the other still
    reads the data there, and a write through it copies that data up."""
    data = big_file(stack.lo(1, "blobs", "x"))
    lower_metacopy(stack, ("d", "f"), b"/blobs/x", len(data))
    os.link(stack.lo(0, "d", "f"), stack.lo(0, "d", "g"))
    stack.mount(extra=META + ["index=on"])

    os.chmod(stack.m("d", "f"), 0o600)
    assert read_file(stack.m("d", "g")) == data
    with open(stack.m("d", "g"), "ab") as f:
        f.write(b"X")

    assert read_file(stack.m("d", "f")) == data + b"X"
    stack.remount(impl=stack.other_impl(), extra=META + ["index=on"])
    assert read_file(stack.m("d", "g")) == data + b"X"


def test_removed_metacopy_file_keeps_its_metadata(stack):
    """A metacopy file open for reading and then removed: the descriptor
    shows and changes the upper file's metadata, and reads the data."""
    data = big_file(stack.lo(0, "f"))
    stack.mount(extra=META)
    os.chmod(stack.m("f"), 0o640)
    os.chown(stack.m("f"), 1234, 5678)
    fd = os.open(stack.m("f"), os.O_RDONLY)
    try:
        os.unlink(stack.m("f"))
        st = os.fstat(fd)
        assert (oct(st.st_mode), st.st_uid, st.st_gid, st.st_nlink) == \
            (oct(0o100640), 1234, 5678, 0)
        assert st.st_size == len(data)
        os.fchmod(fd, 0o600)
        os.fchown(fd, 42, 43)
        st = os.fstat(fd)
        assert (oct(st.st_mode), st.st_uid, st.st_gid) == \
            (oct(0o100600), 42, 43)
        assert os.pread(fd, len(data), 0) == data
    finally:
        os.close(fd)
    assert os.lstat(stack.lo(0, "f")).st_mode == 0o100644
