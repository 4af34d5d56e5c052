"""lamina reset: an upper directory made empty again, safely."""

import glob
import json
import os
import stat

import pytest

from conftest import (LAMINA, escape_layer, kernel_overlay,
                      lamina_for_others, make_tempdir, remove_tree, run,
                      run_lamina)
from helpers import (NOBODY, find_mount, get_xattr, make_whiteout, read_file,
                     run_as_nobody, write_file)


def fill_upper(stack):
    """Give the upper files, a directory tree, a whiteout and xattrs."""
    write_file(stack.lo(0, "base"), "base")
    write_file(stack.u("new"), "n")
    write_file(stack.u("deep", "er", "file"), "d")
    make_whiteout(stack.u("base"))
    os.chmod(stack.upper, 0o751)
    os.chown(stack.upper, 1234, 2345)
    os.setxattr(stack.upper, "user.keep", b"kept")
    os.setxattr(stack.upper, "trusted.overlay.opaque", b"y")


def leftovers(stack):
    return [n for n in os.listdir(stack.root) if n.startswith(".lamina-reset")]


def test_reset_plain_upper(lamina_stack):
    """An unmounted upper is emptied, keeping its owner, mode and xattrs."""
    stack = lamina_stack
    fill_upper(stack)
    os.makedirs(os.path.join(stack.work, "work", "#1f"))
    os.makedirs(os.path.join(stack.work, "index", "00fb1d"))

    code, out, err = run_lamina(
        ["reset", stack.upper, "-o", f"workdir={stack.work}"], stack.root)

    assert code == 0, err
    assert os.listdir(stack.upper) == []
    st = os.lstat(stack.upper)
    assert stat.S_IMODE(st.st_mode) == 0o751
    assert (st.st_uid, st.st_gid) == (1234, 2345)
    assert get_xattr(stack.upper, "user.keep") == b"kept"
    assert get_xattr(stack.upper, "trusted.overlay.opaque") is None
    assert os.listdir(os.path.join(stack.work, "work")) == []
    assert not os.path.exists(os.path.join(stack.work, "index"))
    assert leftovers(stack) == []
    assert f"{os.path.realpath(stack.upper)} is empty" in out
    stack.mount("kernel")
    assert sorted(os.listdir(stack.merged)) == ["base"]


def test_reset_refuses_live_mount(stack):
    """A mounted stack is left alone without --remount, by either path."""
    stack.mount()
    write_file(stack.m("mine"), "m")

    for target in (stack.merged, stack.upper):
        code, out, err = run_lamina(["reset", target], stack.root)
        assert code == 1, target
        assert err.startswith("lamina: reset: "), target
        assert "--remount" in err, target
        assert len(err.splitlines()) == 1, target
    assert os.listdir(stack.upper) == ["mine"]
    assert read_file(stack.m("mine")) == b"m"


def test_reset_remount_lamina(lamina_stack):
    """--remount unmounts, resets and mounts again; the lower shows alone."""
    stack = lamina_stack
    write_file(stack.lo(0, "base"), "base")
    stack.mount()
    write_file(stack.m("mine"), "m")
    os.unlink(stack.m("base"))

    code, out, err = run_lamina(["reset", "--remount", stack.merged],
                                stack.root)

    try:
        assert code == 0, err
        merged = os.path.realpath(stack.merged)
        assert f"unmounted {merged}" in out
        assert f"mounted {merged} again" in out
        assert sorted(os.listdir(stack.merged)) == ["base"]
        assert read_file(stack.m("base")) == b"base"
        write_file(stack.m("after"), "a")
        assert read_file(stack.m("after")) == b"a"
        assert os.listdir(stack.upper) == ["after"]
        assert leftovers(stack) == []
        code, out, err = run_lamina(["status", "--json", stack.merged],
                                    stack.root)
        assert code == 0, err
        assert json.loads(out)["mounts"][0]["type"] == "fuse.lamina"
    finally:
        run_lamina(["umount", stack.merged], stack.root)


def test_reset_remount_kernel_refused(any_stack):
    """--remount on a kernel overlay mount is rejected with the steps."""
    stack = any_stack("kernel")
    stack.mount()
    write_file(stack.m("mine"), "m")

    code, _out, err = run_lamina(["reset", "--remount", stack.merged],
                                 stack.root)

    assert code == 1
    assert "lamina mounts only" in err
    assert os.listdir(stack.upper) == ["mine"]


def test_reset_keeps_symlink_targets(lamina_stack):
    """Symlinks in the upper that point outside are removed, not followed."""
    stack = lamina_stack
    outside = os.path.join(stack.root, "outside")
    write_file(os.path.join(outside, "precious"), "p")
    os.symlink(outside, stack.u("dirlink"))
    os.symlink(os.path.join(outside, "precious"), stack.u("filelink"))
    os.makedirs(stack.u("sub"))
    os.symlink(outside, stack.u("sub", "deeper"))

    code, _out, err = run_lamina(["reset", stack.upper], stack.root)

    assert code == 0, err
    assert os.listdir(stack.upper) == []
    assert read_file(os.path.join(outside, "precious")) == b"p"


def test_reset_refuses_symlink_upper(lamina_stack):
    """An UPPERDIR that is a symlink is refused, and its target kept."""
    stack = lamina_stack
    write_file(stack.u("mine"), "m")
    link = os.path.join(stack.root, "upperlink")
    os.symlink(stack.upper, link)

    code, out, err = run_lamina(["reset", link], stack.root)

    assert code == 1
    assert "is a symbolic link" in err
    assert os.listdir(stack.upper) == ["mine"]


def test_reset_removes_leftover(lamina_stack):
    """A tree left aside by an interrupted reset is removed next time."""
    stack = lamina_stack
    aside = os.path.join(stack.root, ".lamina-reset.upper")
    write_file(os.path.join(aside, "old", "file"), "o")
    write_file(stack.u("mine"), "m")

    code, out, err = run_lamina(["reset", stack.upper], stack.root)

    assert code == 0, err
    assert "interrupted reset" in out
    assert leftovers(stack) == []
    assert os.listdir(stack.upper) == []


def test_reset_bad_input(lamina_stack):
    """Missing paths and wrong options give one message and exit 1."""
    stack = lamina_stack
    missing = os.path.join(stack.root, "missing")
    cases = [
        [],
        [missing],
        [stack.upper, "-o", "lowerdir=/x"],
        [stack.upper, "-o", f"workdir={missing}"],
        [stack.upper, stack.work],
        ["--bogus", stack.upper],
    ]
    write_file(stack.u("mine"), "m")
    for args in cases:
        code, out, err = run_lamina(["reset", *args], stack.root)
        assert code == 1, args
        assert err.startswith("lamina: reset: "), (args, err)
        assert len(err.splitlines()) == 1, (args, err)


def test_reset_bad_workdir_changes_nothing(lamina_stack):
    """A workdir reset cannot clear is rejected before the upper changes."""
    stack = lamina_stack
    outside = os.path.join(stack.root, "outside")
    write_file(os.path.join(outside, "precious"), "p")
    write_file(stack.u("mine"), "m")
    work = os.path.join(stack.work, "work")
    index = os.path.join(stack.work, "index")
    setups = [
        ("work", lambda: write_file(work, "not a directory")),
        ("work", lambda: os.symlink(outside, work)),
        ("index", lambda: os.symlink(outside, index)),
    ]
    for name, setup in setups:
        for path in (work, index):
            if os.path.lexists(path):
                os.unlink(path)
        setup()

        code, out, err = run_lamina(
            ["reset", stack.upper, "-o", f"workdir={stack.work}"], stack.root)

        assert code == 1, (name, out)
        assert err.startswith("lamina: reset: "), err
        assert f"{stack.work}/{name} is " in err, err
        assert "not a directory; remove it" in err, err
        assert len(err.splitlines()) == 1, err
        assert out == "", out
        assert os.listdir(stack.upper) == ["mine"], name
        assert leftovers(stack) == [], name
        assert os.listdir(outside) == ["precious"], name
        assert read_file(os.path.join(outside, "precious")) == b"p", name


def test_reset_rejects_overlapping_workdir(lamina_stack):
    """A workdir that is the upper, lies inside it or contains it is
    rejected before the upper changes, as the mount rejects it."""
    stack = lamina_stack
    root = os.path.realpath(stack.root)
    upper = os.path.join(root, "upper")
    inner = os.path.join(upper, "w")
    outer = os.path.join(root, "outer")
    outer_upper = os.path.join(outer, "upper")
    for top in (upper, outer_upper):
        write_file(os.path.join(top, "mine"), "m")
        os.makedirs(os.path.join(top, "w", "work"))
        os.makedirs(os.path.join(top, "w", "index"))

    cases = [
        (upper, upper, "upperdir and workdir are the same directory, "
         f"{upper}; use separate directories"),
        (upper, inner, f"workdir {inner} is inside upperdir {upper}; "
         "use separate directory trees"),
        (outer_upper, outer, f"upperdir {outer_upper} is inside workdir "
         f"{outer}; use separate directory trees"),
    ]

    for target, workdir, expected in cases:
        code, out, err = run_lamina(
            ["reset", target, "-o", f"workdir={workdir}"], stack.root)

        assert code == 1, (workdir, out)
        assert err == f"lamina: reset: {expected}\n"
        assert out == ""
        assert sorted(os.listdir(target)) == ["mine", "w"], workdir
        assert sorted(os.listdir(os.path.join(target, "w"))) == [
            "index", "work"], workdir
        assert leftovers(stack) == [], workdir
        assert [n for n in os.listdir(outer)
                if n.startswith(".lamina-reset")] == [], workdir


def test_reset_workdir_with_comma(lamina_stack):
    """A workdir path with a comma is taken with the comma escaped, as in
    the mount options. Unescaped, the comma splits the option."""
    stack = lamina_stack
    root = os.path.realpath(stack.root)
    workdir = os.path.join(root, "a,b")
    os.makedirs(os.path.join(workdir, "work", "#2a.1234"))
    write_file(stack.u("mine"), "m")

    code, out, err = run_lamina(
        ["reset", stack.upper, "-o", f"workdir={workdir}"], root)

    assert code == 1, out
    assert err == (f"lamina: reset: invalid option 'b' in "
                   f"'-o workdir={workdir}'; reset takes only "
                   "-o workdir=DIR, once, with each comma in DIR escaped "
                   "as \\,\n")
    assert out == ""
    assert os.listdir(stack.upper) == ["mine"]

    code, out, err = run_lamina(
        ["reset", stack.upper, "-o", f"workdir={escape_layer(workdir)}"],
        root)

    assert code == 0, err
    assert f"cleared the work and index directories in {workdir}\n" in out
    assert os.listdir(stack.upper) == []
    assert os.listdir(os.path.join(workdir, "work")) == []


def test_reset_kernel_steps_escape_workdir():
    """The steps printed for a kernel overlay mount give a workdir with
    a comma escaped, and the reset command in them works."""
    root = make_tempdir()
    top = os.path.join(root, "a,b")
    upper = os.path.join(top, "u")
    workdir = os.path.join(top, "w")
    try:
        with kernel_overlay(top):
            write_file(os.path.join(top, "m", "mine"), "m")

            code, out, err = run_lamina(
                ["reset", "--remount", os.path.join(top, "m")], root)

            assert code == 1, out
            assert (f"run lamina reset {upper} -o "
                    f"'workdir={escape_layer(workdir)}', and mount it "
                    "again\n") in err
            assert os.listdir(upper) == ["mine"]

        code, out, err = run_lamina(
            ["reset", upper, "-o", f"workdir={escape_layer(workdir)}"], root)

        assert code == 0, err
        assert os.listdir(upper) == []
    finally:
        remove_tree(root)


def test_reset_remount_bad_workdir(lamina_stack):
    """--remount checks the workdir before it unmounts anything."""
    stack = lamina_stack
    stack.mount()
    write_file(stack.m("mine"), "m")
    bad = os.path.join(stack.root, "badwork")
    os.mkdir(bad)
    write_file(os.path.join(bad, "work"), "file")

    code, out, err = run_lamina(
        ["reset", "--remount", stack.merged, "-o", f"workdir={bad}"],
        stack.root)

    assert code == 1, out
    assert f"{bad}/work is another file type" in err, err
    assert read_file(stack.m("mine")) == b"m"
    assert os.listdir(stack.upper) == ["mine"]


def test_reset_counts_entries(lamina_stack):
    """The count covers what was inside the upper, in singular or plural."""
    stack = lamina_stack
    cases = [([], "deleted 0 entries"), (["one"], "deleted 1 entry"),
             (["one", "two"], "deleted 2 entries")]
    for names, expected in cases:
        for name in names:
            write_file(stack.u(name), "x")

        code, out, err = run_lamina(["reset", stack.upper], stack.root)

        assert code == 0, err
        assert f"{expected} of the old upper" in out, out
        assert os.listdir(stack.upper) == []


@pytest.mark.parametrize("form", ["lamina", "mount.lamina"])
@pytest.mark.parametrize("source", ["mysrc", "overlay"])
def test_reset_remount_keeps_source(lamina_stack, form, source):
    """The remounted stack shows the source it was first mounted with."""
    stack = lamina_stack
    binary = [LAMINA]
    if form == "mount.lamina":
        helper = os.path.join(stack.root, "mount.lamina")
        os.symlink(LAMINA, helper)
        binary = [helper]
    write_file(stack.lo(0, "base"), "base")
    code, _out, err = run_lamina(
        [source, stack.merged, "-o", stack.options()], stack.root,
        binary=binary)
    assert code == 0, err
    try:
        assert find_mount(stack.merged)["source"] == source

        code, out, err = run_lamina(["reset", "--remount", stack.merged],
                                    stack.root)

        assert code == 0, err
        info = find_mount(stack.merged)
        assert info is not None
        assert info["fstype"] == "fuse.lamina"
        assert info["source"] == source
        assert read_file(stack.m("base")) == b"base"
    finally:
        run_lamina(["umount", stack.merged], stack.root)


def test_reset_remount_keeps_options(lamina_stack):
    """The remounted stack keeps metacopy, index and its data-only layer."""
    stack = lamina_stack
    write_file(stack.lo(0, "base"), "base")
    data = os.path.join(stack.root, "data-only")
    os.mkdir(data)
    write_file(os.path.join(data, "hidden-data"), "d")
    options = (f"lowerdir={stack.lowers[0]}:{stack.lowers[1]}::{data},"
               f"upperdir={stack.upper},workdir={stack.work},"
               "metacopy=on,index=off")
    code, _out, err = run_lamina(["mount", "-o", options, stack.merged],
                                 stack.root)
    assert code == 0, err
    try:
        code, out, err = run_lamina(["reset", "--remount", stack.merged],
                                    stack.root)
        assert code == 0, err

        assert sorted(os.listdir(stack.merged)) == ["base"]
        os.chmod(stack.m("base"), 0o600)
        assert get_xattr(stack.u("base"), "trusted.overlay.metacopy") \
            is not None
        assert not os.path.exists(os.path.join(stack.work, "index")) or \
            os.listdir(os.path.join(stack.work, "index")) == []
        code, out, err = run_lamina(["status", "--json", stack.merged],
                                    stack.root)
        assert code == 0, err
        features = json.loads(out)["mounts"][0]["features"]
        assert features["metacopy"] is True
        assert features["index"] is False
    finally:
        run_lamina(["umount", stack.merged], stack.root)


def test_reset_undeletable_old_upper(lamina_stack):
    """A file that cannot be deleted stops the deletion of the old upper.
    The message gives the old upper's path beside the upper, and the
    file."""
    stack = lamina_stack
    write_file(os.path.join(stack.upper, "f"), b"f")
    run(["chattr", "+i", os.path.join(stack.upper, "f")])
    try:
        code, _out, err = run_lamina(["reset", stack.upper], stack.root)
        aside = [n for n in os.listdir(stack.root)
                 if n.startswith(".lamina-reset.")]
        assert code != 0
        assert len(aside) == 1, os.listdir(stack.root)
        assert f"{os.path.join(stack.root, aside[0])} failed at f:" in err
        assert os.listdir(stack.upper) == []
    finally:
        for path in glob.glob(os.path.join(stack.root, ".lamina-reset.*", "f")):
            run(["chattr", "-i", path])


def test_reset_remount_needs_mount(lamina_stack):
    """--remount on a directory that is neither a mount point nor the
    upper of a mount deletes nothing."""
    stack = lamina_stack
    write_file(stack.m("userfile"), "mine")

    code, out, err = run_lamina(["reset", "--remount", stack.merged],
                                stack.root)

    assert code == 1, out
    assert err.startswith("lamina: reset: --remount needs a mount point")
    assert len(err.splitlines()) == 1, err
    assert os.listdir(stack.merged) == ["userfile"]
    assert leftovers(stack) == []


@pytest.mark.parametrize("sub,name", [("index", "precious"),
                                      ("work", "notes.txt")])
def test_reset_rejects_foreign_workdir(lamina_stack, sub, name):
    """A workdir whose work or index directory contains a name that no
    overlay mount makes is likely another directory, so nothing is
    deleted, in it or in the upper."""
    stack = lamina_stack
    write_file(stack.u("mine"), "m")
    other = os.path.join(stack.root, "data")
    write_file(os.path.join(other, sub, name), "keep")
    write_file(os.path.join(other, "work", "#3"), "temporary")

    code, out, err = run_lamina(
        ["reset", stack.upper, "-o", f"workdir={other}"], stack.root)

    assert code == 1, out
    assert f"'{name}'" in err
    assert len(err.splitlines()) == 1, err
    assert read_file(os.path.join(other, sub, name)) == b"keep"
    assert read_file(os.path.join(other, "work", "#3")) == b"temporary"
    assert os.listdir(stack.upper) == ["mine"]


def test_reset_rejects_workdir_elsewhere(lamina_stack):
    """A workdir on another filesystem than the upper was never used
    with it, as the mount rejects such a pair."""
    stack = lamina_stack
    write_file(stack.u("mine"), "m")
    other = os.path.join(stack.root, "tmpfs")
    os.mkdir(other)
    run(["mount", "-t", "tmpfs", "tmpfs", other])
    try:
        os.makedirs(os.path.join(other, "work", "#4"))

        code, out, err = run_lamina(
            ["reset", stack.upper, "-o", f"workdir={other}"], stack.root)

        assert code == 1, out
        assert "different filesystems" in err
        assert len(err.splitlines()) == 1, err
        assert os.listdir(os.path.join(other, "work")) == ["#4"]
        assert os.listdir(stack.upper) == ["mine"]
    finally:
        run(["umount", other])


def test_reset_kernel_index_workdir(lamina_stack):
    """The workdir of a kernel mount with index entries is cleared."""
    stack = lamina_stack
    write_file(stack.lo(0, "a"), "a")
    os.link(stack.lo(0, "a"), stack.lo(0, "b"))
    stack.mount("kernel", extra=["index=on"])
    with open(stack.m("a"), "a") as f:
        f.write("more")
    stack.unmount()
    assert os.listdir(os.path.join(stack.work, "index")) != []

    code, out, err = run_lamina(
        ["reset", stack.upper, "-o", f"workdir={stack.work}"], stack.root)

    assert code == 0, err
    assert os.listdir(stack.upper) == []
    assert not os.path.exists(os.path.join(stack.work, "index"))


def test_reset_parent_not_writable():
    """A user who may not write beside the upper learns why, and the
    upper stays as it is."""
    root = make_tempdir("lamina-reset-parent.")
    try:
        upper = os.path.join(root, "parent", "upper")
        write_file(os.path.join(upper, "f"), "x")
        os.chown(upper, NOBODY, NOBODY)
        binary = lamina_for_others(root)
        proc = run_as_nobody([binary, "reset", upper])
        left = os.listdir(upper)
    finally:
        remove_tree(root)

    assert proc.returncode != 0
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
    assert "cannot write in the directory that contains" in proc.stderr
    assert left == ["f"]
