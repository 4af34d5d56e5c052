"""Upper and work directories that another mount uses.

A second mount of an upper that a lamina or kernel overlay mount uses,
with a workdir of its own, is rejected while the index is on and gets a
warning with index=off, as overlayfs does. A workdir that a kernel
overlay mount uses is always rejected, because recreating workdir/work
would break that mount's copy-ups.
"""

import os

from conftest import force_unmount, run_lamina
from helpers import find_mount, read_file, write_file


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


def mount_second(stack, options, merged):
    """Run lamina mount of options on merged; return its exit status and
    standard error, and unmount it again if it mounted."""
    code, _out, err = run_lamina(["mount", "-o", options, merged],
                                 stack.root)
    mounted = find_mount(merged) is not None
    if code == 0:
        run_lamina(["umount", merged], stack.root)
    force_unmount(merged)
    return code, err, mounted


def test_kernel_mount_workdir_rejected(lamina_stack):
    """The workdir of a kernel mount is rejected, and that mount goes on
    copying up."""
    stack = lamina_stack
    write_file(stack.lo(0, "before"), "lower\n")
    write_file(stack.lo(0, "after"), "lower\n")
    stack.mount("kernel")
    with open(stack.m("before"), "a") as f:
        f.write("kernel\n")
    merged = os.path.join(stack.root, "merged2")
    os.mkdir(merged)

    code, err, mounted = mount_second(stack, stack.options(), merged)

    assert code == 32, err
    assert not mounted
    assert f"workdir {stack.work} is in use by the overlay mount on " \
        f"{stack.merged}" in err
    assert f"unmount {stack.merged} first" in err
    with open(stack.m("after"), "a") as f:
        f.write("kernel\n")
    assert read_file(stack.m("after")) == b"lower\nkernel\n"

    code, _out, err = run_lamina(["check", "-o", stack.options()],
                                 stack.root)

    assert code == 3, err
    assert f"workdir {stack.work} is in use by the overlay mount on " \
        f"{stack.merged}" in err


def test_kernel_mount_upper_index_on_rejected(lamina_stack):
    stack = lamina_stack
    stack.mount("kernel")
    options, merged = second_mount(stack, "on")

    code, err, mounted = mount_second(stack, options, merged)

    assert code == 32, err
    assert not mounted
    assert f"upperdir {stack.upper} is in use by the overlay mount on " \
        f"{stack.merged}" in err
    assert "mount with -o index=off to share it" in err


def test_kernel_mount_upper_index_off_warns(lamina_stack):
    stack = lamina_stack
    stack.mount("kernel")
    options, merged = second_mount(stack, "off")

    code, err, mounted = mount_second(stack, options, merged)

    assert code == 0, err
    assert mounted
    assert (f"lamina: warning: upperdir {stack.upper} is in use by the "
            f"overlay mount on {stack.merged} too") in err
