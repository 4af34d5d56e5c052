"""The layer commands on a tree deeper than the soft limit on open files.

A walk keeps one descriptor per directory level, so each command raises
its soft limit to the hard limit, as the mount daemon does. The tests run
lamina with a soft limit of 1024 and a tree of 1,100 levels, and one
with a tree whose paths exceed PATH_MAX.
"""

import os
import resource
import tarfile

import pytest

from conftest import LAMINA, run, run_lamina, scratch_mount
from helpers import write_file

DEPTH = 1100
SOFT_LIMIT = 1024
DEEP_PATH = "/".join(["d"] * DEPTH)
# Deeper than PATH_MAX: 4,202 bytes of path to the file.
VERY_DEEP = 2100
VERY_DEEP_PATH = "/".join(["d"] * VERY_DEEP) + "/f"


def limited_lamina():
    """The command prefix that runs lamina with the soft limit lowered."""
    return ["sh", "-c", f'ulimit -Sn {SOFT_LIMIT} && exec "$0" "$@"',
            LAMINA]


@pytest.fixture
def deep_stack(lamina_stack):
    """lamina_stack with lowers[1] holding DEPTH nested directories.

    Python's os.makedirs and shutil.rmtree recurse once per level and
    stop at the interpreter's recursion limit, so mkdir -p and rm -rf
    make and remove the tree.
    """
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < DEPTH + 100:
        pytest.skip(f"the hard limit on open files, {hard}, is too low")
    stack = lamina_stack
    write_file(stack.lo(0, "top"), "top\n")
    deep_dir = os.path.join(stack.lowers[1], DEEP_PATH)
    run(["mkdir", "-p", "--", deep_dir])
    with open(os.path.join(deep_dir, "f"), "w") as f:
        f.write("bottom\n")
    yield stack
    run(["rm", "-rf", "--one-file-system", "--", stack.root])


def run_limited(stack, args):
    return run_lamina(args, stack.root, timeout=120,
                      binary=limited_lamina())


def test_squash_deep_tree(deep_stack):
    stack = deep_stack
    new = os.path.join(stack.root, "squashed")
    lowers = ":".join(stack.lowers)

    code, _out, err = run_limited(stack, ["squash", "-o",
                                          f"lowerdir={lowers}", new])

    assert code == 0, err
    with open(os.path.join(new, DEEP_PATH, "f")) as f:
        assert f.read() == "bottom\n"


def test_export_deep_tree(deep_stack):
    stack = deep_stack
    tar = os.path.join(stack.root, "layer.tar")

    code, _out, err = run_limited(stack, ["export", stack.lowers[1], tar])

    assert code == 0, err
    with tarfile.open(tar) as archive:
        names = archive.getnames()
    assert DEEP_PATH + "/f" in [name.removeprefix("./") for name in names]


def test_diff_deep_tree(deep_stack):
    stack = deep_stack

    code, out, err = run_limited(stack, ["diff", stack.lowers[1], "-o",
                                         f"lowerdir={stack.lowers[0]}"])

    assert code == 0, err
    assert f"A  {DEEP_PATH}/f" in out.splitlines()


def test_reset_deep_tree(deep_stack):
    stack = deep_stack
    os.rmdir(stack.upper)
    os.rename(stack.lowers[1], stack.upper)
    os.mkdir(stack.lowers[1])

    code, _out, err = run_limited(stack, ["reset", stack.upper, "-o",
                                          f"workdir={stack.work}"])

    assert code == 0, err
    assert os.listdir(stack.upper) == []
    assert [name for name in os.listdir(stack.root)
            if name.startswith(".lamina-reset")] == []


def test_commit_deep_tree_to_other_fs(deep_stack):
    """A commit to another filesystem copies the upper, level by level."""
    stack = deep_stack
    os.rmdir(stack.upper)
    os.rename(stack.lowers[1], stack.upper)
    os.mkdir(stack.lowers[1])
    # Unmounting the tmpfs removes the new layer.
    with scratch_mount("lamina-commit-target.", "tmpfs") as target:
        new = os.path.join(target, "layer")

        code, _out, err = run_limited(stack, [
            "commit", "-o", stack.options(), new])

        assert code == 0, err
        with open(os.path.join(new, DEEP_PATH, "f")) as f:
            assert f.read() == "bottom\n"


def make_deep_upper(upper, depth):
    """Nest depth directories named d in upper, each made from its open
    parent, since the whole path exceeds what one system call takes."""
    fd = os.open(upper, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir("d", dir_fd=fd)
            child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
        leaf = os.open("f", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(leaf, b"bottom\n")
        os.close(leaf)
    finally:
        os.close(fd)


@pytest.fixture
def very_deep_stack(lamina_stack):
    """lamina_stack whose upper contains a file below more than PATH_MAX
    bytes of path."""
    stack = lamina_stack
    make_deep_upper(stack.upper, VERY_DEEP)
    yield stack
    run(["rm", "-rf", "--one-file-system", "--", stack.root])


def test_tools_beyond_path_max(very_deep_stack):
    """diff, export and reset go below PATH_MAX (4,096 bytes) of path."""
    stack = very_deep_stack
    tar = os.path.join(stack.root, "layer.tar")
    assert len(VERY_DEEP_PATH) > 4096

    code, out, err = run_limited(stack, ["diff", stack.upper, "-o",
                                         f"lowerdir={stack.lowers[0]}"])
    assert code == 0, err
    assert f"A  {VERY_DEEP_PATH}" in out.splitlines()

    code, _out, err = run_limited(stack, ["export", stack.upper, tar])
    assert code == 0, err
    with tarfile.open(tar) as archive:
        names = [name.removeprefix("./") for name in archive.getnames()]
    assert VERY_DEEP_PATH in names

    code, _out, err = run_limited(stack, ["reset", stack.upper, "-o",
                                          f"workdir={stack.work}"])
    assert code == 0, err
    assert os.listdir(stack.upper) == []
    assert [name for name in os.listdir(stack.root)
            if name.startswith(".lamina-reset")] == []
