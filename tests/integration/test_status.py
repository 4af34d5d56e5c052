"""lamina status: the mounts, their layers, the upper's contents, features."""

import json
import os
import shutil

import pytest

from conftest import (kernel_overlay, lamina_for_others, make_tempdir,
                      remove_tree, run, run_lamina)
from helpers import run_as_nobody, write_file


def build_changes(stack):
    """Mount the stack and leave one of each kind of upper entry.

    The upper then contains new.txt (4 bytes), newdir, olddir (opaque),
    moved2 (a redirect) and whiteouts for gone and moved.
    """
    write_file(stack.lo(0, "gone"), "g")
    write_file(stack.lo(0, "olddir", "x"), "x")
    write_file(stack.lo(1, "moved", "y"), "y")
    extra = ["redirect_dir=on"] if stack.impl == "kernel" else []
    stack.mount(extra=extra)
    write_file(stack.m("new.txt"), "abcd")
    os.mkdir(stack.m("newdir"))
    os.unlink(stack.m("gone"))
    shutil.rmtree(stack.m("olddir"))
    os.mkdir(stack.m("olddir"))
    os.rename(stack.m("moved"), stack.m("moved2"))


# olddir is opaque, and with redirect_dir=on so is newdir, made in a
# merged directory, so that its lookups skip the lowers.
OPAQUE_DIRS = 2


def status(stack, *args):
    return run_lamina(["status", *args], stack.root)


def expected_type(stack):
    return "overlay" if stack.impl == "kernel" else "fuse.lamina"


def test_status_json_one_mount(stack):
    """--json MERGED gives the layers, usage and features of that mount."""
    build_changes(stack)

    code, out, err = status(stack, "--json", stack.merged)

    assert code == 0, err
    mounts = json.loads(out)["mounts"]
    assert len(mounts) == 1
    m = mounts[0]
    assert m["mountpoint"] == os.path.realpath(stack.merged)
    assert m["type"] == expected_type(stack)
    if stack.impl == "lamina":
        assert m["pid"] == stack.daemon.pid
    else:
        assert m["pid"] is None
    assert m["upper"] == os.path.realpath(stack.upper)
    assert m["work"] == os.path.realpath(stack.work)
    assert m["lowers"] == [os.path.realpath(p) for p in stack.lowers]
    usage = m["upper_usage"]
    assert usage["bytes"] == 4
    assert usage["files"] == 1
    assert usage["directories"] == 3
    assert usage["whiteouts"] == 2
    assert usage["opaque_directories"] == OPAQUE_DIRS
    assert usage["redirects"] == 1
    # The kernel may share one inode among its whiteouts.
    assert 4 <= usage["inodes"] <= 6
    features = m["features"]
    assert features["redirect_dir"] == "on"
    assert features["userxattr"] is False
    assert features["volatile"] is False
    assert features["read_only"] is False
    assert isinstance(features["passthrough"], bool)
    assert features["xino"] in ("on", "off", "auto")


@pytest.mark.parametrize("index", ["on", "off"])
def test_status_index_and_metacopy(stack, index):
    """status shows whether the index and metacopy are in effect, from the
    mount options or, when they are not given, the defaults."""
    write_file(stack.lo(0, "f"), "f")
    stack.mount(extra=[f"index={index}", "metacopy=on"])
    code, out, err = status(stack, "--json", stack.merged)
    assert code == 0, err
    features = json.loads(out)["mounts"][0]["features"]
    assert features["index"] is (index == "on")
    assert features["metacopy"] is True
    code, out, err = status(stack, stack.merged)
    assert code == 0, err
    assert f"index={'yes' if index == 'on' else 'no'}" in out
    assert "metacopy=yes" in out
    stack.unmount()

    stack.mount()
    code, out, err = status(stack, "--json", stack.merged)
    assert code == 0, err
    features = json.loads(out)["mounts"][0]["features"]
    assert features["metacopy"] is False
    if stack.impl == "kernel":
        with open("/sys/module/overlay/parameters/index") as f:
            assert features["index"] is (f.read().strip() == "Y")
    else:
        assert features["index"] is True  # the layers allow it here


def test_status_text_one_mount(stack):
    """The text output names the mount, its layers and the upper's counts."""
    build_changes(stack)

    code, out, err = status(stack, stack.merged)

    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith(
        f"{os.path.realpath(stack.merged)} ({expected_type(stack)}")
    assert f"  upper:    {os.path.realpath(stack.upper)}" in lines
    assert f"  work:     {os.path.realpath(stack.work)}" in lines
    assert f"  lower 1:  {os.path.realpath(stack.lowers[0])}" in lines
    assert f"  lower 2:  {os.path.realpath(stack.lowers[1])}" in lines
    holds = [line for line in lines if line.startswith("  upper holds:")]
    assert len(holds) == 1
    assert "4 bytes" in holds[0]
    assert "1 file, 3 directories, 2 whiteouts" in holds[0]
    opaque = OPAQUE_DIRS
    noun = "opaque directory" if opaque == 1 else "opaque directories"
    assert f", {opaque} {noun}," in holds[0]
    assert ", 1 redirect," in holds[0]
    assert "redirect_dir=on" in out
    assert "read-only=no" in out


def test_status_text_singular_counts(lamina_stack):
    """Counts of one use the singular noun; layer labels end in a colon."""
    stack = lamina_stack
    stack.mount()
    write_file(stack.m("a"), "x")

    code, out, err = status(stack, stack.merged)

    assert code == 0, err
    holds = [line for line in out.splitlines()
             if line.startswith("  upper holds:")]
    assert len(holds) == 1
    assert holds[0].startswith("  upper holds: 1 byte (")
    assert ", 1 file, 0 directories, 0 whiteouts," in holds[0]
    assert ", 0 opaque directories, 0 redirects, 1 inode" in holds[0]
    assert "  lower 1:  " in out
    assert "  lower 2:  " in out


def test_status_lists_every_mount(any_stack):
    """Without MERGED, status shows the kernel's and lamina's mounts."""
    kernel = any_stack("kernel")
    lamina = any_stack("lamina")
    kernel.mount()
    lamina.mount(extra=["ro", "userxattr"], upper=False)

    code, out, err = run_lamina(["status", "--json"], kernel.root)

    assert code == 0, err
    by_point = {m["mountpoint"]: m for m in json.loads(out)["mounts"]}
    k = by_point[os.path.realpath(kernel.merged)]
    la = by_point[os.path.realpath(lamina.merged)]
    assert k["type"] == "overlay"
    assert la["type"] == "fuse.lamina"
    assert la["upper"] is None
    assert la["upper_usage"] is None
    assert la["features"]["read_only"] is True
    assert la["features"]["userxattr"] is True
    assert la["lowers"] == [os.path.realpath(p) for p in lamina.lowers]


def test_status_not_a_mount(stack):
    """A directory that is no overlay mount is an error, exit 1."""
    code, out, err = status(stack, stack.merged)

    assert code == 1
    assert out == ""
    assert err.startswith("lamina: status: ")
    assert "is not a lamina or overlay mount" in err
    assert len(err.splitlines()) == 1


def test_status_bad_arguments(lamina_stack):
    """An unknown option or two mount points give one message, exit 1."""
    stack = lamina_stack
    for args in (["--bogus"], [stack.merged, stack.upper],
                 [os.path.join(stack.root, "missing")]):
        code, _out, err = status(stack, *args)
        assert code == 1, args
        assert err.startswith("lamina: status: "), args
        assert len(err.splitlines()) == 1, args


# A directory name with each character that the overlay options escape
# with a backslash (comma, colon and backslash) and a space, which
# mountinfo shows as \040.
ESCAPED_NAME = "a,b:c\\d e"


def test_status_kernel_escaped_paths():
    """A kernel overlay mount's paths with a comma, a colon or a
    backslash: status and diff show and read the real paths."""
    root = make_tempdir()
    top = os.path.join(root, ESCAPED_NAME)
    try:
        with kernel_overlay(top):
            write_file(os.path.join(top, "l", "old"), "o")
            write_file(os.path.join(top, "m", "new"), "new")

            code, out, err = run_lamina(
                ["status", "--json", os.path.join(top, "m")], root)

            assert code == 0, err
            m = json.loads(out)["mounts"][0]
            assert m["upper"] == os.path.join(top, "u")
            assert m["work"] == os.path.join(top, "w")
            assert m["lowers"] == [os.path.join(top, "l")]
            assert m["upper_usage"]["files"] == 1

            code, out, err = run_lamina(
                ["diff", os.path.join(top, "m")], root)

            assert code == 0, err
            assert out == "A  new\n"
    finally:
        remove_tree(root)


def test_status_kernel_lowerdir_plus():
    """A kernel overlay mount made with lowerdir+ and datadir+ (Linux 6.8
    and later) shows one lowerdir+= or datadir+= per layer, each path
    without escapes."""
    root = make_tempdir()
    top = os.path.join(root, "c\\d")
    data = os.path.join(root, "data")
    merged = os.path.join(root, "m")
    for path in (os.path.join(top, "l"), data, os.path.join(root, "u"),
                 os.path.join(root, "w"), merged):
        os.makedirs(path)
    write_file(os.path.join(top, "l", "old"), "o")
    options = (f"lowerdir+={top}/l,datadir+={data},upperdir={root}/u,"
               f"workdir={root}/w")
    try:
        proc = run(["mount", "-t", "overlay", "overlay", "-o", options,
                    merged], check=False)
        if proc.returncode != 0:
            pytest.skip("the kernel overlay mount with lowerdir+ failed: "
                        f"{proc.stderr.strip()}")
        try:
            write_file(os.path.join(merged, "new"), "new")

            code, out, err = run_lamina(["status", "--json", merged], root)

            assert code == 0, err
            m = json.loads(out)["mounts"][0]
            assert m["lowers"] == [os.path.join(top, "l"), data]
            assert m["upper"] == os.path.join(root, "u")

            code, out, err = run_lamina(["diff", merged], root)

            assert code == 0, err
            assert out == "A  new\n"
        finally:
            run(["umount", merged])
    finally:
        remove_tree(root)


def test_status_of_another_users_mount(lamina_stack):
    """A user who may not query the daemon learns who may, instead of a
    broken connection."""
    stack = lamina_stack
    stack.mount()
    home = make_tempdir("lamina-status.")
    try:
        binary = lamina_for_others(home)
        proc = run_as_nobody([binary, "status", stack.merged])
    finally:
        shutil.rmtree(home)

    assert proc.returncode != 0
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
    assert "answers only root and the user who mounted it" in proc.stderr
