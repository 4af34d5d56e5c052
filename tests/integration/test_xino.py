"""xino: inode numbers stay unique when the layers sit on several filesystems.

A FUSE mount has one st_dev for every file, so lamina puts the number of a
layer's filesystem into the high bits of st_ino, as overlayfs does with
xino=on. The kernel runs the same steps with xino=on for comparison.
"""

import os

from conftest import run
from helpers import write_file


def tmpfs_lower(stack):
    """Mount a tmpfs in the test's directory and make a lower layer on it."""
    mnt = os.path.join(stack.root, "tmpfs")
    os.mkdir(mnt)
    run(["mount", "-t", "tmpfs", "tmpfs", mnt])
    lower = os.path.join(mnt, "lower")
    os.mkdir(lower)
    for i in range(20):
        write_file(os.path.join(lower, f"t{i}"), "t")
    return mnt, lower


def inode_numbers(stack):
    return {name: os.lstat(stack.m(name)).st_ino
            for name in os.listdir(stack.merged)}


def test_xino_unique_and_stable(stack):
    """st_ino is unique, equals d_ino, and survives copy-up and remount."""
    for i in range(20):
        write_file(stack.lo(0, f"e{i}"), "e")
    mnt, lower = tmpfs_lower(stack)
    lowers = [lower] + stack.lowers
    try:
        stack.mount(lowers=lowers, extra=["xino=on"])
        inos = inode_numbers(stack)
        d_inos = {e.name: e.inode() for e in os.scandir(stack.merged)}
        with open(stack.m("t3"), "a") as f:
            f.write("x")
        after_copy_up = os.lstat(stack.m("t3")).st_ino
        stack.unmount()
        stack.mount(lowers=lowers, extra=["xino=on"])
        after_remount = os.lstat(stack.m("t3")).st_ino
        other = os.lstat(stack.m("e3")).st_ino
    finally:
        stack.unmount()
        run(["umount", mnt])

    assert len(set(inos.values())) == len(inos) == 40
    assert d_inos == inos
    assert after_copy_up == inos["t3"]
    assert after_remount == inos["t3"]
    assert other == inos["e3"]
