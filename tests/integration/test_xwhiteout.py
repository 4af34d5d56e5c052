"""Xattr whiteouts, for an upper where character devices cannot be made.

With userxattr, lamina falls back to xattr whiteouts when mknod of a 0/0
device fails: an empty file with user.overlay.whiteout in a directory
marked user.overlay.opaque="x". Here strace makes every mknodat of the
daemon fail with EPERM, as on a filesystem that refuses device nodes.
overlayfs reads such whiteouts only in lower layers, so the kernel is
checked with the upper mounted as a lower.
"""

import os
import shutil
import stat

import pytest

from conftest import escape_layer, run
from helpers import read_file, write_file

NO_MKNOD = ["strace", "-f", "-qq", "-o", "/dev/null", "-e",
            "trace=mknodat,mknod", "-e", "inject=mknodat:error=EPERM"]
WHITEOUT = "user.overlay.whiteout"
OPAQUE = "user.overlay.opaque"


# LeakSanitizer cannot run under ptrace, so a sanitizer build of the
# daemon runs under strace with leak checking off.
NO_LEAK_CHECK = {"ASAN_OPTIONS": ":".join(
    filter(None, [os.environ.get("ASAN_OPTIONS"), "detect_leaks=0"]))}


@pytest.fixture
def no_mknod():
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed; scripts/install-deps.sh installs it")
    return NO_MKNOD


def mount_no_mknod(stack, wrapper, extra=("userxattr",)):
    stack.mount(extra=list(extra), daemon_wrapper=wrapper,
                daemon_env=NO_LEAK_CHECK)


def lower_tree(stack):
    write_file(stack.lo(1, "d", "gone"), "gone")
    write_file(stack.lo(1, "d", "kept"), "kept")
    write_file(stack.lo(1, "top"), "top")
    os.makedirs(stack.lo(1, "dir", "sub"))


def is_xwhiteout(path):
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode) or st.st_size != 0:
        return False
    return WHITEOUT in os.listxattr(path, follow_symlinks=False)


def test_unlink_makes_xattr_whiteouts(lamina_stack, no_mknod):
    stack = lamina_stack
    lower_tree(stack)
    mount_no_mknod(stack, no_mknod)

    os.unlink(stack.m("d", "gone"))
    os.unlink(stack.m("top"))
    os.rmdir(stack.m("dir", "sub"))

    assert sorted(os.listdir(stack.m("d"))) == ["kept"]
    assert not os.path.lexists(stack.m("top"))
    assert os.listdir(stack.m("dir")) == []
    assert is_xwhiteout(stack.u("d", "gone"))
    assert os.getxattr(stack.u("d"), OPAQUE) == b"x"
    assert os.getxattr(stack.upper, OPAQUE) == b"x"
    with open(stack.daemon.log_path) as log:
        assert "using xattr whiteouts" in log.read()


def test_xattr_whiteouts_survive_remount(lamina_stack, no_mknod):
    """lamina reads its own xattr whiteouts back, with mknod allowed."""
    stack = lamina_stack
    lower_tree(stack)
    mount_no_mknod(stack, no_mknod)
    os.unlink(stack.m("d", "gone"))
    stack.unmount()

    stack.mount(extra=["userxattr"])

    assert sorted(os.listdir(stack.m("d"))) == ["kept"]
    assert not os.path.lexists(stack.m("d", "gone"))


def test_create_over_xattr_whiteout(lamina_stack, no_mknod):
    stack = lamina_stack
    lower_tree(stack)
    mount_no_mknod(stack, no_mknod)
    os.unlink(stack.m("d", "gone"))

    write_file(stack.m("d", "gone"), "new")
    os.rmdir(stack.m("dir", "sub"))
    os.mkdir(stack.m("dir", "sub"))

    assert read_file(stack.m("d", "gone")) == b"new"
    assert os.listdir(stack.m("dir", "sub")) == []


def test_rename_leaves_xattr_whiteout(lamina_stack, no_mknod):
    stack = lamina_stack
    lower_tree(stack)
    mount_no_mknod(stack, no_mknod)

    os.rename(stack.m("d", "gone"), stack.m("moved"))

    assert sorted(os.listdir(stack.m("d"))) == ["kept"]
    assert read_file(stack.m("moved")) == b"gone"
    assert is_xwhiteout(stack.u("d", "gone"))


def test_kernel_reads_upper_as_lower(lamina_stack, no_mknod):
    """The upper, used by the kernel as a middle lower layer, hides the same."""
    stack = lamina_stack
    lower_tree(stack)
    mount_no_mknod(stack, no_mknod)
    os.unlink(stack.m("d", "gone"))
    os.unlink(stack.m("top"))
    stack.unmount()

    lowers = ":".join(escape_layer(p) for p in (stack.upper, stack.lowers[1]))
    run(["mount", "-t", "overlay", "overlay", "-o",
         f"lowerdir={lowers},userxattr", stack.merged])
    try:
        assert sorted(os.listdir(stack.m("d"))) == ["kept"]
        assert sorted(os.listdir(stack.merged)) == ["d", "dir"]
    finally:
        run(["umount", stack.merged])


def test_without_userxattr_mount_fails(lamina_stack, no_mknod):
    """Without userxattr there is no fallback: the mount names the fix."""
    stack = lamina_stack
    with pytest.raises(AssertionError) as failure:
        mount_no_mknod(stack, no_mknod, extra=())
    assert "-o userxattr" in str(failure.value)
