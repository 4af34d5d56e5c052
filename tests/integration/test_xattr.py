"""Extended attributes: pass-through, private overlay names and escaping.

overlayfs keeps its own metadata in trusted.overlay.* on the layers. Those
names never show through the merged tree. A lower-layer name with a second
"overlay." (trusted.overlay.overlay.foo) is an escaped user xattr, which
shows as trusted.overlay.foo. Writing trusted.overlay.foo through the
mount stores the escaped form in upper.
"""

import ctypes
import errno
import os
import shutil

import pytest

import helpers
from conftest import make_tempdir, run, scratch_mount
from helpers import FILE_CAPS, get_xattr, write_file
from test_prefetch import prefetch_tid, run_time_ns, wait_for_work


def test_xattr_passthrough(stack):
    write_file(stack.lo(0, "f"), "")
    os.setxattr(stack.lo(0, "f"), "user.a", b"1")
    os.setxattr(stack.lo(0, "f"), "trusted.t", b"2")
    stack.mount()

    assert os.getxattr(stack.m("f"), "user.a") == b"1"
    assert os.getxattr(stack.m("f"), "trusted.t") == b"2"
    assert set(os.listxattr(stack.m("f"))) >= {"user.a", "trusted.t"}


def test_xattr_missing_enodata(stack):
    write_file(stack.lo(0, "f"), "")
    stack.mount()

    with pytest.raises(OSError) as info:
        os.getxattr(stack.m("f"), "user.none")

    assert info.value.errno == errno.ENODATA


def test_private_xattrs_hidden(stack):
    """trusted.overlay.* written by overlayfs is invisible in the mount."""
    write_file(stack.lo(1, "f"), "")
    os.setxattr(stack.lo(1, "f"), "trusted.overlay.private", b"x")
    os.setxattr(stack.lo(1, "f"), "user.visible", b"v")
    stack.mount()

    names = os.listxattr(stack.m("f"))

    assert "user.visible" in names
    assert [n for n in names if n.startswith("trusted.overlay.")] == []
    with pytest.raises(OSError) as info:
        os.getxattr(stack.m("f"), "trusted.overlay.private")
    assert info.value.errno == errno.ENODATA


def test_origin_xattr_hidden(stack):
    """After copy-up, upper carries trusted.overlay.origin; the mount hides it."""
    write_file(stack.lo(1, "f"), "")
    stack.mount()

    os.chmod(stack.m("f"), 0o600)

    assert get_xattr(stack.u("f"), "trusted.overlay.origin") is not None
    assert [n for n in os.listxattr(stack.m("f"))
            if n.startswith("trusted.overlay.")] == []
    with pytest.raises(OSError) as info:
        os.getxattr(stack.m("f"), "trusted.overlay.origin")
    assert info.value.errno == errno.ENODATA


def test_escaped_xattr_unescaped(stack):
    """Lower trusted.overlay.overlay.foo shows as trusted.overlay.foo."""
    write_file(stack.lo(1, "f"), "")
    os.setxattr(stack.lo(1, "f"), "trusted.overlay.overlay.foo", b"bar")
    stack.mount()

    names = os.listxattr(stack.m("f"))

    assert "trusted.overlay.foo" in names
    assert "trusted.overlay.overlay.foo" not in names
    assert os.getxattr(stack.m("f"), "trusted.overlay.foo") == b"bar"


def test_escaped_xattr_set(stack):
    """Setting trusted.overlay.foo through the mount stores it escaped."""
    write_file(stack.lo(1, "f"), "")
    stack.mount()

    os.setxattr(stack.m("f"), "trusted.overlay.foo", b"bar")

    assert get_xattr(stack.u("f"), "trusted.overlay.overlay.foo") == b"bar"
    assert get_xattr(stack.u("f"), "trusted.overlay.foo") is None
    assert os.getxattr(stack.m("f"), "trusted.overlay.foo") == b"bar"


def test_escaped_opaque_not_opaque(stack):
    """Writing trusted.overlay.opaque through the mount does not hide lowers."""
    write_file(stack.lo(1, "d", "x"), "")
    stack.mount()

    os.setxattr(stack.m("d"), "trusted.overlay.opaque", b"y")

    assert os.listdir(stack.m("d")) == ["x"]
    assert get_xattr(stack.u("d"), "trusted.overlay.opaque") is None
    assert get_xattr(stack.u("d"), "trusted.overlay.overlay.opaque") == b"y"
    stack.remount()
    assert os.listdir(stack.m("d")) == ["x"]


def test_xattr_on_dir(stack):
    os.makedirs(stack.lo(0, "d"))
    os.setxattr(stack.lo(0, "d"), "user.d", b"dir")
    stack.mount()

    assert os.getxattr(stack.m("d"), "user.d") == b"dir"
    os.setxattr(stack.m("d"), "user.e", b"new")
    assert os.getxattr(stack.m("d"), "user.e") == b"new"
    assert os.getxattr(stack.m("d"), "user.d") == b"dir"


def test_xattr_remove(stack):
    stack.mount()
    write_file(stack.m("f"), "")
    os.setxattr(stack.m("f"), "user.x", b"1")

    os.removexattr(stack.m("f"), "user.x")

    assert "user.x" not in os.listxattr(stack.m("f"))
    with pytest.raises(OSError) as info:
        os.removexattr(stack.m("f"), "user.x")
    assert info.value.errno == errno.ENODATA


def test_xattr_create_replace_flags(stack):
    stack.mount()
    write_file(stack.m("f"), "")
    os.setxattr(stack.m("f"), "user.x", b"1", os.XATTR_CREATE)

    with pytest.raises(OSError) as create:
        os.setxattr(stack.m("f"), "user.x", b"2", os.XATTR_CREATE)
    with pytest.raises(OSError) as replace:
        os.setxattr(stack.m("f"), "user.y", b"2", os.XATTR_REPLACE)

    assert create.value.errno == errno.EEXIST
    assert replace.value.errno == errno.ENODATA


def test_xattr_large_value(stack):
    """A 4000-byte value round-trips, so size queries work through FUSE."""
    value = bytes(range(256)) * 15 + b"x" * 160
    write_file(stack.lo(0, "f"), "")
    os.setxattr(stack.lo(0, "f"), "user.big", value)
    stack.mount()

    assert os.getxattr(stack.m("f"), "user.big") == value


def settle_prefetch(stack, *dirs):
    """Look up dirs and, on lamina, wait until the prefetch has read them,
    so that the entries below are found with what it learnt."""
    if stack.mounted_impl != "lamina":
        for d in dirs:
            os.stat(stack.m(d))
        return
    pid = stack.daemon.pid
    tid = prefetch_tid(pid)
    ran = run_time_ns(pid, tid)
    for d in dirs:
        os.stat(stack.m(d))
    wait_for_work(pid, tid, ran)


def test_xattrs_of_entries_read_ahead(stack):
    """Lower entries that the prefetch has read show their xattrs, opaque
    marks and merges as they would without it, before and after a
    copy-up."""
    write_file(stack.lo(0, "d", "bare"), "x")
    write_file(stack.lo(0, "d", "tagged"), "x")
    os.setxattr(stack.lo(0, "d", "tagged"), "user.t", b"1")
    write_file(stack.lo(0, "d", "plain", "top"), "x")
    write_file(stack.lo(1, "d", "plain", "below"), "x")
    write_file(stack.lo(0, "d", "opq", "shown"), "x")
    write_file(stack.lo(1, "d", "opq", "hidden"), "x")
    os.setxattr(stack.lo(0, "d", "opq"), "trusted.overlay.opaque", b"y")
    stack.mount()
    settle_prefetch(stack, "d", "d/plain", "d/opq")

    for name in ["user.none", "security.capability", "security.selinux"]:
        with pytest.raises(OSError) as info:
            os.getxattr(stack.m("d", "bare"), name)
        assert info.value.errno == errno.ENODATA
    assert os.listxattr(stack.m("d", "bare")) == []
    assert os.listxattr(stack.m("d", "plain")) == []
    assert os.getxattr(stack.m("d", "tagged"), "user.t") == b"1"
    assert sorted(os.listdir(stack.m("d", "plain"))) == ["below", "top"]
    assert os.listdir(stack.m("d", "opq")) == ["shown"]

    os.setxattr(stack.m("d", "bare"), "user.new", b"v")
    assert os.getxattr(stack.m("d", "bare"), "user.new") == b"v"
    assert os.listxattr(stack.m("d", "bare")) == ["user.new"]
    os.setxattr(stack.m("d", "plain"), "user.dir", b"w")
    assert os.listxattr(stack.m("d", "plain")) == ["user.dir"]



def test_capability_of_created_file(stack):
    """A file created through the mount has no security.capability until
    one is set, through its own name or another link to it."""
    stack.mount()
    write_file(stack.m("f"), "x")

    with pytest.raises(OSError) as info:
        os.getxattr(stack.m("f"), "security.capability")
    assert info.value.errno == errno.ENODATA
    os.setxattr(stack.m("f"), "security.capability", FILE_CAPS)
    assert os.getxattr(stack.m("f"), "security.capability") == FILE_CAPS

    write_file(stack.m("g"), "x")
    os.link(stack.m("g"), stack.m("g2"))
    os.setxattr(stack.m("g2"), "security.capability", FILE_CAPS)
    assert os.getxattr(stack.m("g"), "security.capability") == FILE_CAPS
    # chown clears the capability, as on any filesystem.
    os.chown(stack.m("g"), 0, 0)
    with pytest.raises(OSError) as info:
        os.getxattr(stack.m("g2"), "security.capability")
    assert info.value.errno == errno.ENODATA


def test_unknown_namespace_of_entry_read_ahead(stack):
    """A name in no namespace that the layer supports is refused, also on
    a lower file without xattrs that the prefetch has seen."""
    write_file(stack.lo(0, "d", "a"), "x")
    stack.mount()
    settle_prefetch(stack, "d")

    for name in ["foo.bar", "system.lamina"]:
        with pytest.raises(OSError) as info:
            os.getxattr(stack.m("d", "a"), name)
        assert info.value.errno == errno.EOPNOTSUPP


@pytest.fixture
def ramfs_dir():
    """A ramfs mount, a filesystem without xattrs, in a temporary dir."""
    with scratch_mount("lamina-ramfs.", "ramfs") as path:
        yield path


def test_lower_without_xattr_support(stack, ramfs_dir):
    """On a lower filesystem without xattrs every name is refused, as the
    filesystem itself does, although it lists no names."""
    write_file(os.path.join(ramfs_dir, "d", "a"), "x")
    stack.mount(lowers=[ramfs_dir])
    settle_prefetch(stack, "d")

    assert os.listxattr(stack.m("d", "a")) == []
    for name in ["user.x", "trusted.x", "security.capability"]:
        with pytest.raises(OSError) as info:
            os.getxattr(stack.m("d", "a"), name)
        assert info.value.errno == errno.EOPNOTSUPP


@pytest.fixture
def two_filesystem_layer():
    """A read-only kernel overlay over two tmpfs with xino=off, so that
    its files from either tmpfs share inode numbers: one lower layer
    that spans two filesystems."""
    root = make_tempdir("lamina-span.")
    a, b, top = (os.path.join(root, n) for n in ("a", "b", "top"))
    mounted = []
    try:
        for path in (a, b):
            os.mkdir(path)
            run(["mount", "-t", "tmpfs", "-o", "size=8m", "lamina-test",
                 path])
            mounted.insert(0, path)
        yield a, b, top
    finally:
        for path in mounted:
            run(["umount", path], check=False)
        if all(helpers.find_mount(p) is None for p in (a, b, top)):
            shutil.rmtree(root)


def test_layer_spanning_filesystems(stack, two_filesystem_layer):
    """Files of two filesystems inside one layer with the same inode
    number keep their own xattrs and opaque marks."""
    a, b, top = two_filesystem_layer
    for i in range(6):
        write_file(os.path.join(a, "d", f"x{i}"), "x")
        os.setxattr(os.path.join(a, "d", f"x{i}"), "user.x", b"1")
        write_file(os.path.join(b, "d", f"y{i}"), "y")
    os.makedirs(os.path.join(a, "d", "o"))
    os.setxattr(os.path.join(a, "d", "o"), "trusted.overlay.overlay.opaque",
                b"y")
    os.mkdir(top)
    run(["mount", "-t", "overlay", "overlay", "-o",
         f"lowerdir={a}:{b},xino=off", top])
    try:
        write_file(stack.lo(1, "d", "o", "hidden"), "h")
        stack.mount(lowers=[top, stack.lo(1)])
        settle_prefetch(stack, "d")

        for i in range(6):
            assert os.getxattr(stack.m("d", f"x{i}"), "user.x") == b"1"
        assert os.listdir(stack.m("d", "o")) == []
    finally:
        stack.unmount()
        run(["umount", top], check=False)


def list_as(uid, path):
    """listxattr(path) in a child running as uid, or the errno."""
    def listing():
        try:
            return sorted(os.listxattr(path))
        except OSError as e:
            return e.errno

    return helpers.in_child(uid, uid, listing)


def test_trusted_names_listed_to_admin_only(stack):
    write_file(stack.lo(0, "f"), "x")
    os.setxattr(stack.lo(0, "f"), "trusted.t", b"1")
    os.setxattr(stack.lo(0, "f"), "user.u", b"2")
    stack.mount()

    assert sorted(os.listxattr(stack.m("f"))) == ["trusted.t", "user.u"]
    assert list_as(65534, stack.m("f")) == ["user.u"]


def test_xattr_of_hard_link_after_copy_up(stack):
    """With index=on, an xattr set through one name of a lower hard link
    shows through the other name, in listings too."""
    write_file(stack.lo(0, "a"), "x")
    os.link(stack.lo(0, "a"), stack.lo(0, "b"))
    stack.mount(extra=["index=on"])
    os.stat(stack.m("b"))

    os.setxattr(stack.m("a"), "user.x", b"1")
    assert os.listxattr(stack.m("b")) == ["user.x"]
    assert os.getxattr(stack.m("b"), "user.x") == b"1"


def test_fuse_lower_with_repeated_inodes(stack, any_stack,
                                         two_filesystem_layer):
    """A lower layer on a FUSE filesystem that shows one inode number for
    two files (lamina with xino=off over two tmpfs) keeps each file's
    xattrs apart."""
    a, b, _top = two_filesystem_layer
    for i in range(6):
        write_file(os.path.join(a, "d", f"f{i}"), "f")
        write_file(os.path.join(b, "d", f"g{i}"), "g")
        os.setxattr(os.path.join(b, "d", f"g{i}"), "user.x", b"1")
    inner = any_stack("lamina")
    inner.mount(lowers=[a, b], upper=False, extra=["xino=off"])
    try:
        stack.mount(lowers=[inner.merged])
        settle_prefetch(stack, "d")
        for i in range(6):
            os.stat(stack.m("d", f"f{i}"))
        for i in range(6):
            assert os.getxattr(stack.m("d", f"g{i}"), "user.x") == b"1"
    finally:
        stack.unmount()
        inner.unmount()


def listxattr_sized(path, size):
    """llistxattr(2) with a buffer of size bytes: (result, errno)."""
    buf = ctypes.create_string_buffer(max(size, 1))
    n = helpers.libc.llistxattr(os.fsencode(path), buf if size else None,
                                ctypes.c_size_t(size))
    return (n, 0) if n >= 0 else (n, ctypes.get_errno())


def test_listxattr_size_counts_hidden_names(stack):
    """As overlayfs: the size that listxattr reports, and the room it
    needs, include the private names that the listing leaves out."""
    write_file(stack.lo(0, "f"), "x")
    os.setxattr(stack.lo(0, "f"), "user.a", b"1")
    os.setxattr(stack.lo(0, "f"), "trusted.overlay.private", b"p")
    stack.mount()

    full, err = listxattr_sized(stack.m("f"), 0)
    assert err == 0
    assert full == len(b"user.a\0trusted.overlay.private\0")
    assert listxattr_sized(stack.m("f"), len(b"user.a\0")) == (
        -1, errno.ERANGE)
    assert listxattr_sized(stack.m("f"), full) == (len(b"user.a\0"), 0)


def test_names_without_suffix_invalid(stack):
    """A namespace prefix alone is an invalid name, also on a lower file
    without xattrs that the prefetch has seen, and so is the private
    overlay prefix alone."""
    write_file(stack.lo(0, "d", "a"), "x")
    stack.mount()
    settle_prefetch(stack, "d")

    for name in ["user.", "trusted.", "security.", "trusted.overlay."]:
        with pytest.raises(OSError) as info:
            os.getxattr(stack.m("d", "a"), name)
        assert info.value.errno == errno.EINVAL


def test_private_name_too_long_once_escaped(stack):
    write_file(stack.lo(0, "f"), "x")
    stack.mount()

    with pytest.raises(OSError) as info:
        os.getxattr(stack.m("f"), "trusted.overlay." + "x" * 235)
    assert info.value.errno == errno.EOPNOTSUPP


def test_remove_missing_xattr_no_copy_up(stack):
    """Removing an xattr that a lower file lacks fails with ENODATA and,
    as in overlayfs, copies nothing up; removing one it has copies up."""
    os.makedirs(stack.lo(0, "d"))
    write_file(stack.lo(0, "d", "f"), "f")
    write_file(stack.lo(0, "d", "g"), "g")
    os.setxattr(stack.lo(0, "d", "g"), "user.x", b"1")
    stack.mount()

    with pytest.raises(OSError) as failure:
        os.removexattr(stack.m("d", "f"), "user.nope")
    assert failure.value.errno == errno.ENODATA
    assert os.listdir(stack.upper) == []

    os.removexattr(stack.m("d", "g"), "user.x")
    assert os.listxattr(stack.m("d", "g")) == []
    assert os.listdir(stack.u("d")) == ["g"]
    assert get_xattr(stack.lo(0, "d", "g"), "user.x") == b"1"
