"""Extended attributes: pass-through, private overlay names and escaping.

overlayfs keeps its own metadata in trusted.overlay.* on the layers. Those
names never show through the merged tree. A lower-layer name with a second
"overlay." (trusted.overlay.overlay.foo) is an escaped user xattr, which
shows as trusted.overlay.foo. Writing trusted.overlay.foo through the
mount stores the escaped form in upper.
"""

import errno
import os
import struct

import pytest

from helpers import get_xattr, write_file


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
    # Imported here: the module is a test file of its own.
    from test_prefetch import prefetch_tid, run_time_ns, wait_for_work
    pid = stack.daemon.pid
    tid = prefetch_tid(pid)
    ran = run_time_ns(pid, tid)
    for d in dirs:
        os.stat(stack.m(d))
    wait_for_work(pid, tid, ran)


def test_xattrs_of_entries_read_ahead(stack):
    """Lower entries that the prefetch has read answer for their xattrs,
    opaque marks and merges as they would without it, before and after
    a copy-up."""
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


# struct vfs_cap_data, revision 2, effective: CAP_NET_BIND_SERVICE.
CAPS = struct.pack("<IIIII", 0x02000001, 1 << 10, 0, 0, 0)


def test_capability_of_created_file(stack):
    """A file created through the mount has no security.capability until
    one is set, through its own name or another link to it."""
    stack.mount()
    write_file(stack.m("f"), "x")

    with pytest.raises(OSError) as info:
        os.getxattr(stack.m("f"), "security.capability")
    assert info.value.errno == errno.ENODATA
    os.setxattr(stack.m("f"), "security.capability", CAPS)
    assert os.getxattr(stack.m("f"), "security.capability") == CAPS

    write_file(stack.m("g"), "x")
    os.link(stack.m("g"), stack.m("g2"))
    os.setxattr(stack.m("g2"), "security.capability", CAPS)
    assert os.getxattr(stack.m("g"), "security.capability") == CAPS
    # chown clears the capability, as on any filesystem.
    os.chown(stack.m("g"), 0, 0)
    with pytest.raises(OSError) as info:
        os.getxattr(stack.m("g2"), "security.capability")
    assert info.value.errno == errno.ENODATA
