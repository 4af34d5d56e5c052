"""Two mounts of one upper directory, each with a workdir of its own.

A second mount of an upper that a lamina mount uses is rejected while the
index is on and gets a warning with index=off, as overlayfs does.
"""

import os

from conftest import force_unmount, run_lamina
from helpers import find_mount


def second_mount(stack, index):
    """Make a workdir and a mount point for a second mount of the upper,
    and return its options and mount point."""
    work = os.path.join(stack.root, "work2")
    merged = os.path.join(stack.root, "merged2")
    os.mkdir(work)
    os.mkdir(merged)
    options = (f"lowerdir={':'.join(stack.lowers)},upperdir={stack.upper},"
               f"workdir={work},index={index}")
    return options, merged


def test_shared_upper_index_on_rejected(lamina_stack):
    stack = lamina_stack
    stack.mount()
    options, merged = second_mount(stack, "on")

    code, _out, err = run_lamina(["mount", "-o", options, merged],
                                 stack.root)
    left_mounted = find_mount(merged) is not None
    if left_mounted:
        force_unmount(merged)

    assert code == 32, err
    assert not left_mounted
    assert f"upperdir {stack.upper} is in use by another lamina mount" in err
    assert "mount with -o index=off to share it" in err

    code, _out, err = run_lamina(["check", "-o", options], stack.root)

    assert code == 3, err
    assert f"upperdir {stack.upper} is in use by another lamina mount" in err


def test_shared_upper_index_off_warns(lamina_stack):
    stack = lamina_stack
    stack.mount()
    options, merged = second_mount(stack, "off")

    code, _out, err = run_lamina(["mount", "-o", options, merged],
                                 stack.root)
    try:
        mounted = find_mount(merged) is not None
    finally:
        if code == 0:
            run_lamina(["umount", merged], stack.root)
        force_unmount(merged)

    assert code == 0, err
    assert mounted
    assert (f"lamina: warning: upperdir {stack.upper} is in use by another "
            "lamina mount too") in err

    code, _out, err = run_lamina(["check", "-o", options], stack.root)

    assert code == 2, err
    assert f"upperdir {stack.upper} is in use by another lamina mount" in err
