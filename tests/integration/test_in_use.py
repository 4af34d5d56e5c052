"""The layer commands refuse an upper that a live mount uses.

A kernel overlay mount made with relative paths shows them as given in
mountinfo; the commands must still recognise its upper.
"""

import os

from conftest import (kernel_overlay, make_tempdir, remove_tree, run,
                      run_lamina)


def test_relative_kernel_mount_is_seen():
    root = make_tempdir()
    try:
        for d in ("l", "u", "w", "m"):
            os.mkdir(os.path.join(root, d))
        with open(os.path.join(root, "l", "a"), "w") as f:
            f.write("a")
        run(["mount", "-t", "overlay", "overlay", "-o",
             "lowerdir=l,upperdir=u,workdir=w", "m"], cwd=root)
        try:
            with open(os.path.join(root, "m", "kept"), "w") as f:
                f.write("kept")
            code, _out, err = run_lamina(
                ["reset", os.path.join(root, "u"), "-o",
                 "workdir=" + os.path.join(root, "w")], root)
            assert code == 1
            assert "overlay mount on" in err
            code, _out, err = run_lamina(
                ["commit", "-o", f"lowerdir={root}/l,upperdir={root}/u,"
                 f"workdir={root}/w", os.path.join(root, "new")], root)
            assert code == 1
            assert sorted(os.listdir(os.path.join(root, "m"))) == [
                "a", "kept"]
        finally:
            run(["umount", os.path.join(root, "m")])
    finally:
        remove_tree(root)


def test_escaped_kernel_mount_is_seen():
    """A kernel overlay mount shows an upperdir with a comma as "\\," in
    mountinfo; commit and reset must still see that it uses the upper."""
    root = make_tempdir()
    top = os.path.join(root, "a,b")
    try:
        with kernel_overlay(top) as options:
            with open(os.path.join(top, "m", "kept"), "w") as f:
                f.write("kept")

            code, _out, err = run_lamina(
                ["commit", "-o", options, os.path.join(root, "new")], root)

            assert code == 1
            assert f"the overlay mount on {top}/m uses {top}/u" in err
            assert not os.path.exists(os.path.join(root, "new"))

            code, _out, err = run_lamina(
                ["reset", os.path.join(top, "u")], root)

            assert code == 1
            assert f"the overlay mount on {top}/m uses {top}/u" in err
            assert os.listdir(os.path.join(top, "u")) == ["kept"]
            assert os.listdir(os.path.join(top, "m")) == ["kept"]
    finally:
        remove_tree(root)
