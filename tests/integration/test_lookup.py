"""Which layer a name resolves to, layer path escaping, read-only mounts."""

import errno
import os

import pytest

from helpers import read_file, write_file


def test_upper_wins(stack):
    write_file(stack.lo(0, "f"), "lower0")
    write_file(stack.lo(1, "f"), "lower1")
    write_file(stack.u("f"), "upper")
    stack.mount()

    assert read_file(stack.m("f")) == b"upper"


def test_leftmost_lower_wins(stack):
    write_file(stack.lo(0, "f"), "lower0")
    write_file(stack.lo(1, "f"), "lower1")
    write_file(stack.lo(1, "only1"), "from lower1")
    stack.mount()

    assert read_file(stack.m("f")) == b"lower0"
    assert read_file(stack.m("only1")) == b"from lower1"


def test_lookup_missing_name(stack):
    stack.mount()

    with pytest.raises(FileNotFoundError):
        os.stat(stack.m("nothing"))


def test_lookup_through_merged_dirs(stack):
    """A dir present in several layers merges at every depth."""
    write_file(stack.lo(1, "a", "b", "deep1"), "1")
    write_file(stack.lo(0, "a", "b", "deep0"), "0")
    write_file(stack.u("a", "b", "deepu"), "u")
    stack.mount()

    assert read_file(stack.m("a", "b", "deep1")) == b"1"
    assert read_file(stack.m("a", "b", "deep0")) == b"0"
    assert read_file(stack.m("a", "b", "deepu")) == b"u"


def test_file_hides_lower_dir(stack):
    """A non-directory in a higher layer hides a directory below it."""
    write_file(stack.lo(1, "x", "inside"), "below")
    write_file(stack.lo(0, "x"), "file on top")
    stack.mount()

    assert read_file(stack.m("x")) == b"file on top"
    with pytest.raises(NotADirectoryError):
        os.stat(stack.m("x", "inside"))


def test_dir_hides_lower_file(stack):
    """A directory in a higher layer hides a file below, without merging."""
    write_file(stack.lo(1, "x"), "file below")
    write_file(stack.lo(0, "x", "inside"), "top")
    stack.mount()

    assert os.path.isdir(stack.m("x"))
    assert os.listdir(stack.m("x")) == ["inside"]


def test_colon_escaped_lowerdir(make_stack):
    """A layer path containing ':' is passed as '\\:' in lowerdir=."""
    stack = make_stack(nlower=1)
    colon_layer = os.path.join(stack.root, "low:er")
    os.mkdir(colon_layer)
    write_file(os.path.join(colon_layer, "f"), "colon layer")
    write_file(stack.lo(0, "g"), "plain layer")
    stack.lowers.insert(0, colon_layer)
    stack.mount()

    assert read_file(stack.m("f")) == b"colon layer"
    assert read_file(stack.m("g")) == b"plain layer"


def test_three_lowers(make_stack):
    stack = make_stack(nlower=3)
    write_file(stack.lo(2, "f"), "2")
    write_file(stack.lo(2, "g"), "2")
    write_file(stack.lo(1, "g"), "1")
    write_file(stack.lo(2, "h"), "2")
    stack.mount()

    assert read_file(stack.m("f")) == b"2"
    assert read_file(stack.m("g")) == b"1"
    assert sorted(os.listdir(stack.merged)) == ["f", "g", "h"]


def expect_erofs(call, *args):
    with pytest.raises(OSError) as info:
        call(*args)
    assert info.value.errno == errno.EROFS, info.value


def check_read_only(stack):
    """Every kind of write through the merged tree fails with EROFS."""
    assert read_file(stack.m("f")) == b"data"
    expect_erofs(open, stack.m("f"), "ab")
    expect_erofs(open, stack.m("new"), "wb")
    expect_erofs(os.mkdir, stack.m("newdir"))
    expect_erofs(os.unlink, stack.m("f"))
    expect_erofs(os.rmdir, stack.m("d"))
    expect_erofs(os.rename, stack.m("f"), stack.m("g"))
    expect_erofs(os.chmod, stack.m("f"), 0o600)
    expect_erofs(os.symlink, "f", stack.m("link"))
    expect_erofs(os.setxattr, stack.m("f"), "user.x", b"1")
    expect_erofs(os.utime, stack.m("f"), None)
    assert os.statvfs(stack.merged).f_flag & os.ST_RDONLY


def test_lowers_only_read_only(stack):
    """Two lower layers and no upper give a read-only mount."""
    write_file(stack.lo(0, "f"), "data")
    os.mkdir(stack.lo(1, "d"))
    stack.mount(upper=False)

    check_read_only(stack)
    assert os.listdir(stack.upper) == []


def test_ro_option_read_only(stack):
    """Option ro makes a mount with an upper layer read-only."""
    write_file(stack.lo(0, "f"), "data")
    os.mkdir(stack.lo(1, "d"))
    stack.mount(extra=["ro"])

    check_read_only(stack)
    assert os.listdir(stack.upper) == []


@pytest.mark.parametrize("extra", [["ro"], []], ids=["ro", "no-ro"])
def test_single_lower_read_only(lamina_stack, extra):
    """lamina mounts one lower layer without upper read-only, ro or not.

    Kernel overlayfs (checked on 6.18) rejects one lower without upper
    ("at least 2 lowerdir are needed while upperdir nonexistent"), even
    with ro, so this test runs on lamina only.
    """
    stack = lamina_stack
    write_file(stack.lo(0, "f"), "data")
    os.mkdir(stack.lo(0, "d"))
    stack.mount(extra=extra, upper=False, lowers=stack.lowers[:1])

    check_read_only(stack)


def test_symlink_across_layers(stack):
    """A relative symlink in one layer resolves to a file in another."""
    write_file(stack.lo(1, "target"), "in lower1")
    os.makedirs(stack.lo(0, "links"))
    os.symlink("../target", stack.lo(0, "links", "rel"))
    stack.mount()

    assert os.readlink(stack.m("links", "rel")) == "../target"
    assert read_file(stack.m("links", "rel")) == b"in lower1"


def test_st_dev_uniform(stack):
    """Entries from every layer report the st_dev of the mount."""
    write_file(stack.lo(1, "one"), "")
    write_file(stack.lo(0, "zero"), "")
    os.makedirs(stack.lo(1, "dir"))
    write_file(stack.u("up"), "")
    stack.mount()

    root_dev = os.stat(stack.merged).st_dev
    for name in ("one", "zero", "dir", "up"):
        assert os.lstat(stack.m(name)).st_dev == root_dev, name


def test_st_ino_unique(stack):
    """Different files from different layers never share an inode number."""
    for i in range(20):
        write_file(stack.lo(i % 2, f"f{i}"), "")
        write_file(stack.u(f"u{i}"), "")
    stack.mount()

    inos = [os.lstat(stack.m(name)).st_ino
            for name in os.listdir(stack.merged)]

    assert len(inos) == 40
    assert len(set(inos)) == 40
