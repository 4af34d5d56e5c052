"""`mount -t fuse.lamina`: mount(8) runs mount.fuse3, which runs lamina.

mount.fuse3 finds lamina through PATH and calls it as
`lamina SOURCE MERGED -o OPTIONS`.
"""

import os

from conftest import LAMINA, require_lamina, run_to_files
from helpers import find_mount, read_file, write_file
from test_lifecycle import stop_leftover_daemons


def helper_env():
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(LAMINA) + ":" + env.get("PATH", "")
    return env


def test_mount_type_fuse_lamina(lamina_stack):
    require_lamina()
    stack = lamina_stack
    write_file(stack.lo(0, "f"), "through mount.fuse3")

    try:
        stack.record_lowers()
        code, _out, err = run_to_files(
            ["mount", "-t", "fuse.lamina", "lamina-test", stack.merged,
             "-o", stack.options()], stack.root, env=helper_env())
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
