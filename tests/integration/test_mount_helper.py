"""`mount -t fuse.lamina`: mount(8) runs mount.fuse3, which runs lamina.

mount.fuse3 calls `lamina SOURCE MERGED -o OPTIONS` through /bin/sh.
mount(8) from util-linux 2.38.1 (checked with strace) removes PATH from
the helper's environment, so /bin/sh then finds lamina only in its
built-in search path (/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:
/sbin:/bin on Debian's dash), where `make install` puts it.
"""

import filecmp
import os
import shutil

import pytest

from conftest import LAMINA, require_lamina, run_to_files
from helpers import find_mount, read_file, write_file
from test_lifecycle import stop_leftover_daemons

SHELL_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def check_helper_mount(stack, command, env=None):
    """Mount with command, use the mount, unmount; check every step."""
    write_file(stack.lo(0, "f"), "through mount.fuse3")
    stack.record_lowers()
    try:
        code, _out, err = run_to_files(command, stack.root, env=env)
        info = find_mount(stack.merged)
        content = read_file(stack.m("f")) if info else None
        if info:
            write_file(stack.m("new"), "written")
    finally:
        leftover = stop_leftover_daemons(stack.merged)

    assert code == 0, err
    assert info is not None, "nothing mounted"
    assert info["fstype"] == "fuse.lamina"
    assert info["source"] == "lamina-test"
    assert content == b"through mount.fuse3"
    assert read_file(stack.u("new")) == b"written"
    assert leftover == [], "daemon still running after umount"


def test_mount_fuse3_helper(lamina_stack):
    """mount.fuse3 called as mount(8) calls it, with lamina in PATH."""
    require_lamina()
    stack = lamina_stack
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(LAMINA) + ":" + env.get("PATH", "")
    command = [shutil.which("mount.fuse3") or "/sbin/mount.fuse3",
               "lamina-test", stack.merged, "-o", "rw," + stack.options(),
               "-t", "fuse.lamina"]

    check_helper_mount(stack, command, env)


def require_installed():
    """Skip unless mount(8) would run a copy of the binary under test."""
    require_lamina()
    installed = shutil.which("lamina", path=SHELL_DEFAULT_PATH)
    if installed is None or not filecmp.cmp(installed, LAMINA,
                                            shallow=False):
        pytest.skip(f"{LAMINA} is not installed in {SHELL_DEFAULT_PATH}, "
                    "where mount(8) lets mount.fuse3 find it")


def test_mount_type_fuse_lamina(lamina_stack):
    """`mount -t fuse.lamina` works when lamina is installed.

    Skipped unless the lamina found in /bin/sh's built-in search path is
    a copy of the binary under test (see the module docstring).
    """
    require_installed()
    stack = lamina_stack
    command = ["mount", "-t", "fuse.lamina", "lamina-test", stack.merged,
               "-o", stack.options()]

    check_helper_mount(stack, command)


def test_direct_source_form(lamina_stack):
    """`lamina SOURCE MERGED -o OPTIONS` mounts like lamina mount."""
    require_lamina()
    stack = lamina_stack
    write_file(stack.lo(1, "g"), "direct")

    try:
        stack.record_lowers()
        code, _out, err = run_to_files(
            [LAMINA, "src-name", stack.merged, "-o", stack.options()],
            stack.root)
        info = find_mount(stack.merged)
        content = read_file(stack.m("g")) if info else None
    finally:
        leftover = stop_leftover_daemons(stack.merged)

    assert code == 0, err
    assert info is not None, "nothing mounted"
    assert info["source"] == "src-name"
    assert content == b"direct"
    assert leftover == []


def test_fstab_line(lamina_stack):
    """An fstab line of type fuse.lamina mounts with `mount MERGED`.

    The line goes into a private fstab file given with mount -T, so the
    system's /etc/fstab is never touched.
    """
    require_installed()
    stack = lamina_stack
    fstab = os.path.join(stack.root, "fstab")
    with open(fstab, "w") as f:
        f.write(f"lamina-test {stack.merged} fuse.lamina "
                f"{stack.options()},nofail 0 0\n")
    command = ["mount", "-T", fstab, stack.merged]

    check_helper_mount(stack, command)


def test_fstab_type_lamina(lamina_stack):
    """An fstab line of type lamina, written as for overlay, mounts.

    mount(8) runs /sbin/mount.lamina, which make install links to lamina.
    """
    require_installed()
    helper = "/sbin/mount.lamina"
    if not os.path.exists(helper) or not filecmp.cmp(helper, LAMINA,
                                                     shallow=False):
        pytest.skip(f"{helper} is not a copy of {LAMINA}")
    stack = lamina_stack
    fstab = os.path.join(stack.root, "fstab")
    with open(fstab, "w") as f:
        f.write(f"lamina-test {stack.merged} lamina {stack.options()} 0 0\n")

    check_helper_mount(stack, ["mount", "-T", fstab, stack.merged])
