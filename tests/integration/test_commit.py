"""lamina commit: the upper becomes a new lower layer, and the tree stays.

Each test changes a layer stack through a mount (kernel overlayfs or
lamina), records the merged tree and commits. It then mounts the new
stack with both implementations: the new layer on top of the old
lowers, with the new empty upper. The merged tree must be the same,
entry by entry.
"""

import contextlib
import os
import shutil
import signal
import stat
import subprocess
import sys
import time

import pytest

import helpers
from conftest import (LAMINA, force_unmount, make_tempdir, run, run_lamina,
                      scratch_mount)

READERS = ("kernel", "lamina")

# A time with nanoseconds, to see that commit keeps them.
MTIME_NS = 1_600_000_000_123_456_789


def tree(root):
    """Snapshot root: type, mode, owner, size, content, xattrs, link
    target, mtime, and which names are hard links of one another."""
    snap = helpers.snapshot_tree(root)
    inodes = {}
    for rel, record in snap.items():
        st = os.lstat(os.path.join(root, rel))
        record["mtime_ns"] = st.st_mtime_ns
        if not stat.S_ISDIR(st.st_mode):
            inodes.setdefault(st.st_ino, []).append(rel)
    for names in inodes.values():
        if len(names) > 1:
            for name in names:
                snap[name]["links"] = sorted(names)
    return snap


def assert_same_tree(before, after):
    problems = helpers.diff_trees(before, after)
    assert not problems, "\n".join(problems[:40])


def fill_lowers(stack):
    """Two lower layers with names that the changes below delete,
    replace, link and copy up."""
    top, bottom = stack.lowers
    helpers.write_file(os.path.join(bottom, "gone"), "deleted later")
    helpers.write_file(os.path.join(bottom, "replaced", "sub", "old"), "old")
    helpers.write_file(os.path.join(bottom, "moved", "inner", "file"), "m")
    helpers.write_file(os.path.join(bottom, "linked"), "link me", 0o640)
    helpers.write_file(os.path.join(bottom, "shadow"), "bottom")
    helpers.write_file(os.path.join(bottom, "dir", "low"), "low")
    helpers.write_file(os.path.join(top, "dir", "high"), "high")
    helpers.write_file(os.path.join(top, "shadow"), "top")
    helpers.write_file(os.path.join(top, "kept"), "kept", 0o644)
    os.setxattr(os.path.join(top, "kept"), "user.lower", b"from below")


def change_tree(merged):
    """Deletions, an opaque directory, hard links, xattrs, a symlink,
    device nodes, a sparse file, owners, modes and times."""
    m = lambda *p: os.path.join(merged, *p)  # noqa: E731
    os.unlink(m("gone"))
    os.unlink(m("dir", "low"))
    shutil.rmtree(m("replaced"))
    os.mkdir(m("replaced"))
    helpers.write_file(m("replaced", "new"), "new")
    os.link(m("linked"), m("linked2"))
    helpers.write_file(m("new", "file"), "new file", 0o600)
    os.chown(m("new", "file"), 1000, 1001)
    os.link(m("new", "file"), m("new", "file-link"))
    os.symlink("../kept", m("new", "link"))
    os.mknod(m("new", "null"), stat.S_IFCHR | 0o600, os.makedev(1, 3))
    os.mknod(m("new", "block"), stat.S_IFBLK | 0o600, os.makedev(7, 0))
    os.mkfifo(m("new", "fifo"), 0o640)
    os.setxattr(m("kept"), "user.note", b"through the mount")
    os.setxattr(m("new"), "user.dir", b"on a directory")
    os.chmod(m("dir", "high"), 0o4755)
    helpers.make_sparse(m("sparse"), 8 << 20, {0: b"head", 4 << 20: b"mid"})
    os.utime(m("kept"), ns=(MTIME_NS, MTIME_NS))


def lamina_ok(args, cwd_dir):
    """Run lamina; assert success and a quiet stderr; return stdout."""
    code, out, err = run_lamina(args, cwd_dir)
    assert code == 0, f"lamina {args[0]} failed with {code}: {err}"
    assert err == ""
    return out


def commit_options(stack, extra=()):
    return stack.options(extra)


def commit(stack, newlayer, extra=()):
    """Commit stack's upper to newlayer; return the printed lowerdir."""
    out = lamina_ok(["commit", "-o", commit_options(stack, extra), newlayer],
                    stack.root)
    return out.strip()


def check_committed(stack, newlayer, printed):
    """The printed lowerdir, an empty upper and a cleared workdir."""
    assert printed == "lowerdir=" + ":".join([newlayer, *stack.lowers])
    assert os.listdir(stack.upper) == []
    assert not os.path.exists(os.path.join(stack.work, "work"))
    assert not os.path.exists(os.path.join(stack.work, "index"))
    for parent in (os.path.dirname(newlayer), os.path.dirname(stack.upper)):
        leftovers = [n for n in os.listdir(parent) if ".lamina-commit" in n]
        assert leftovers == []


def finish_big_commit(stack, args, newlayer):
    """Run an interrupted commit of the 2 MiB file "big" again."""
    code, out, err = run_lamina(args, stack.root)
    assert code == 0, err
    assert "finishing the interrupted commit" in err
    check_committed(stack, newlayer, out.strip())
    assert os.path.getsize(os.path.join(newlayer, "big")) == 2 << 20
    shutil.rmtree(newlayer)


def tree_of_stack(stack, reader, lowers, extra=()):
    """Mount lowers and the upper with reader and snapshot the tree."""
    stack.mount(reader, extra=extra, lowers=lowers)
    try:
        return tree(stack.merged)
    finally:
        stack.unmount()


def read_back(stack, newlayer, reader, extra=()):
    """Mount newlayer over the lowers with reader and snapshot it."""
    return tree_of_stack(stack, reader, [newlayer, *stack.lowers], extra)


def build(stack, extra=()):
    fill_lowers(stack)
    stack.mount(extra=extra)
    change_tree(stack.merged)
    before = tree(stack.merged)
    stack.unmount()
    return before


@pytest.mark.parametrize("reader", READERS)
def test_commit_same_filesystem(stack, reader):
    before = build(stack)
    upper_mode = stat.S_IMODE(os.stat(stack.upper).st_mode)
    newlayer = os.path.join(stack.root, "layer1")
    printed = commit(stack, newlayer)
    check_committed(stack, newlayer, printed)
    assert stat.S_IMODE(os.stat(stack.upper).st_mode) == upper_mode
    assert helpers.is_whiteout(os.path.join(newlayer, "gone"))
    assert_same_tree(before, read_back(stack, newlayer, reader))


def test_commit_renames_the_upper(stack):
    build(stack)
    upper_ino = os.stat(stack.upper).st_ino
    newlayer = os.path.join(stack.root, "layer1")
    commit(stack, newlayer)
    assert os.stat(newlayer).st_ino == upper_ino


@pytest.mark.parametrize("reader", READERS)
def test_commit_renamed_directory(stack, reader):
    fill_lowers(stack)
    stack.mount(extra=("redirect_dir=on",))
    os.rename(stack.m("moved"), stack.m("moved2"))
    os.rename(stack.m("moved2", "inner"), stack.m("dir", "inner2"))
    before = tree(stack.merged)
    stack.unmount()
    newlayer = os.path.join(stack.root, "layer1")
    commit(stack, newlayer)
    redirect = helpers.get_xattr(os.path.join(newlayer, "moved2"),
                                 "trusted.overlay.redirect")
    assert redirect is not None
    assert_same_tree(before, read_back(stack, newlayer, reader))


@pytest.mark.parametrize("reader", READERS)
def test_commit_userxattr(stack, reader):
    before = build(stack, extra=("userxattr",))
    newlayer = os.path.join(stack.root, "layer1")
    commit(stack, newlayer, extra=("userxattr",))
    opaque = helpers.get_xattr(os.path.join(newlayer, "replaced"),
                               "user.overlay.opaque")
    assert opaque == b"y"
    assert_same_tree(before,
                     read_back(stack, newlayer, reader, ("userxattr",)))


class Tmpfs:
    """A tmpfs mounted in a fresh temporary directory: another filesystem."""

    def __init__(self):
        self.path = make_tempdir("lamina-tmpfs.")
        run(["mount", "-t", "tmpfs", "-o", "size=1g", "lamina-test",
             self.path])

    def close(self):
        run(["umount", self.path], check=False)
        if helpers.find_mount(self.path) is None:
            os.rmdir(self.path)


@pytest.fixture
def tmpfs():
    fs = Tmpfs()
    yield fs.path
    fs.close()


@pytest.mark.parametrize("reader", READERS)
def test_commit_other_filesystem(stack, tmpfs, reader):
    before = build(stack)
    newlayer = os.path.join(tmpfs, "layer1")
    printed = commit(stack, newlayer)
    check_committed(stack, newlayer, printed)
    assert os.stat(newlayer).st_dev != os.stat(stack.upper).st_dev
    assert os.stat(os.path.join(newlayer, "sparse")).st_blocks * 512 < 1 << 20
    linked = os.stat(os.path.join(newlayer, "linked"))
    assert linked.st_ino == os.stat(os.path.join(newlayer, "linked2")).st_ino
    assert_same_tree(before, read_back(stack, newlayer, reader))


def test_commit_twice(stack):
    """A second commit puts a second layer on top of the first."""
    build(stack)
    first = os.path.join(stack.root, "layer1")
    commit(stack, first)
    stack.mount(lowers=[first, *stack.lowers])
    os.unlink(stack.m("kept"))
    helpers.write_file(stack.m("second"), "second")
    expected = tree(stack.merged)
    stack.unmount()
    second = os.path.join(stack.root, "layer2")
    options = stack.options(lowers=[first, *stack.lowers])
    out = lamina_ok(["commit", "-o", options, second], stack.root)
    assert out.strip() == "lowerdir=" + ":".join(
        [second, first, *stack.lowers])
    for reader in READERS:
        assert_same_tree(expected, tree_of_stack(
            stack, reader, [second, first, *stack.lowers]))


def test_commit_progress_on_terminal(stack, tmpfs):
    """A terminal gets a progress bar; a pipe gets nothing (see above)."""
    build(stack)

    status, output = helpers.run_with_terminal_stderr(
        [LAMINA, "commit", "-o", stack.options(),
         os.path.join(tmpfs, "layer1")], timeout=60)

    assert status == 0
    assert b"commit [" in output
    assert b"100%" in output


# Bad input ---------------------------------------------------------------


def assert_rejected(stack, args, words):
    """lamina exits 1 with one message that contains words."""
    code, out, err = run_lamina(args, stack.root)
    assert code == 1
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("lamina: ")
    for word in words:
        assert word in lines[0]


def test_commit_rejects_existing_newlayer(stack):
    os.mkdir(os.path.join(stack.root, "exists"))
    assert_rejected(stack, ["commit", "-o", stack.options(),
                            os.path.join(stack.root, "exists")],
                    ["already exists"])


def test_commit_rejects_bad_input(stack):
    new = os.path.join(stack.root, "new")
    cases = [
        (["commit", "-o", stack.options()], ["NEWLAYER is missing"]),
        (["commit", "-o", stack.options(upper=False), new],
         ["no upperdir"]),
        (["commit", "-o", stack.options(), new, "extra"],
         ["too many arguments"]),
        (["commit", "-o", stack.options(), "--bottom", new],
         ["invalid option"]),
        (["commit", "-o", stack.options() + ",bogus", new],
         ["unknown option 'bogus'"]),
        (["commit", "-o", stack.options(),
          os.path.join(stack.root, "missing", "new")], ["missing"]),
        (["commit", "-o", stack.options(), stack.u("new")],
         ["inside upperdir"]),
        (["commit", "-o", stack.options(), stack.lo(1, "new")],
         ["inside lowerdir"]),
        (["commit", "-o", stack.options(), os.path.join(stack.work, "n")],
         ["inside workdir"]),
    ]
    for args, words in cases:
        assert_rejected(stack, args, words)
    assert not os.path.exists(new)
    assert [n for n in os.listdir(stack.root) if "lamina-commit" in n] == []


def test_commit_rejects_read_only_upper(tmpfs):
    """An upper and workdir on a read-only filesystem are rejected before
    the commit writes the new layer."""
    for name in ("upper", "work"):
        os.mkdir(os.path.join(tmpfs, name))
    helpers.write_file(os.path.join(tmpfs, "upper", "u"), "u")
    root = make_tempdir("lamina-commit-ro.")
    try:
        lower = os.path.join(root, "lower")
        os.mkdir(lower)
        os.mkdir(os.path.join(root, "out"))
        run(["mount", "-o", "remount,ro", tmpfs])
        new = os.path.join(root, "new")
        options = (f"lowerdir={lower},upperdir={tmpfs}/upper,"
                   f"workdir={tmpfs}/work")

        code, out, err = run_lamina(["commit", "-o", options, new],
                                    os.path.join(root, "out"))

        assert code == 1, out
        assert len(err.splitlines()) == 1, err
        assert "read-only filesystem" in err
        assert f"{tmpfs}/upper" in err
        assert sorted(os.listdir(root)) == ["lower", "out"]
        assert os.listdir(os.path.join(tmpfs, "upper")) == ["u"]
    finally:
        run(["mount", "-o", "remount,rw", tmpfs])
        shutil.rmtree(root)


def test_commit_rejects_overlapping_layers(lamina_stack):
    """A workdir that is or lies in the upper, or a lower that overlaps
    the upper or the workdir, is rejected before anything changes, as
    the mount rejects it."""
    stack = lamina_stack
    root = os.path.realpath(stack.root)
    upper = os.path.join(root, "upper")
    work = os.path.join(root, "work")
    inner = os.path.join(upper, "w")
    lower_in_work = os.path.join(work, "lower")
    for name in ("work", "index", "w/work"):
        helpers.write_file(os.path.join(upper, name, "file"), "kept")
    os.mkdir(lower_in_work)
    before = helpers.snapshot_tree(upper)
    new = os.path.join(root, "new")

    cases = [
        (upper, upper, stack.lowers,
         f"upperdir and workdir are the same directory, {upper}; "),
        (upper, inner, stack.lowers,
         f"workdir {inner} is inside upperdir {upper}; "),
        (inner, upper, stack.lowers,
         f"upperdir {inner} is inside workdir {upper}; "),
        (upper, work, [upper],
         f"upperdir and lowerdir are the same directory, {upper}; "),
        (upper, work, [stack.lowers[0], lower_in_work],
         f"lowerdir {lower_in_work} is inside workdir {work}; "),
    ]

    for upperdir, workdir, lowers, expected in cases:
        options = (f"lowerdir={':'.join(lowers)},upperdir={upperdir},"
                   f"workdir={workdir}")
        assert_rejected(stack, ["commit", "-o", options, new],
                        ["lamina: commit: " + expected])
        assert not os.path.exists(new), options
        assert helpers.snapshot_tree(upper) == before, options

    assert [n for n in os.listdir(root) if "lamina-commit" in n] == []


def test_commit_rejects_duplicate_lower(lamina_stack):
    """A lower given twice is rejected before anything changes."""
    stack = lamina_stack
    top = os.path.realpath(stack.lowers[0])
    helpers.write_file(stack.u("file"), "kept")
    new = os.path.join(stack.root, "new")
    options = (f"lowerdir={top}:{stack.lowers[1]}:{top},"
               f"upperdir={stack.upper},workdir={stack.work}")

    assert_rejected(stack, ["commit", "-o", options, new],
                    [f"lamina: commit: lowerdir {top} is given twice; "
                     "list each layer once"])

    assert not os.path.exists(new)
    assert os.listdir(stack.upper) == ["file"]


def test_commit_rejects_mounted_upper(stack):
    fill_lowers(stack)
    stack.mount()
    helpers.write_file(stack.m("busy"), "busy")
    new = os.path.join(stack.root, "new")
    assert_rejected(stack, ["commit", "-o", stack.options(), new],
                    ["unmount it first"])
    assert not os.path.exists(new)
    assert os.path.exists(stack.u("busy"))


def test_commit_out_of_space(lamina_stack):
    """A commit that runs out of space tells the user to free space before
    the rerun, and the rerun finishes once there is space."""
    stack = lamina_stack
    helpers.write_file(stack.u("big"), os.urandom(2 << 20))
    with scratch_mount("lamina-small.", "tmpfs", "size=1m") as small:
        newlayer = os.path.join(small, "layer1")
        args = ["commit", "-o", stack.options(), newlayer]

        code, out, err = run_lamina(args, stack.root)

        assert code == 1, out
        assert out == ""
        assert err.endswith(
            f"No space left on device; free space on the filesystem that "
            f"contains {small}, then run the same command again to finish "
            "it\n"), err
        assert os.listdir(stack.upper) == ["big"]

        run(["mount", "-o", "remount,size=8m", small])
        finish_big_commit(stack, args, newlayer)


# Interrupted commits -----------------------------------------------------


def fill_big_upper(upper, dirs=150, files=200):
    """An upper with dirs * files small files, a whiteout and an opaque
    directory: enough to take a commit to another filesystem a while."""
    for d in range(dirs):
        path = os.path.join(upper, f"d{d:03}")
        os.mkdir(path)
        for f in range(files):
            with open(os.path.join(path, f"f{f:03}"), "wb") as out:
                out.write(b"%d/%d\n" % (d, f) * 8)
    helpers.make_whiteout(os.path.join(upper, "gone"))
    os.mkdir(os.path.join(upper, "replaced"))
    os.setxattr(os.path.join(upper, "replaced"), "trusted.overlay.opaque",
                b"y")


def test_commit_killed_and_rerun(any_stack, tmpfs):
    """SIGKILL during a commit to another filesystem leaves a stack that
    mounts as before or as after, and running the command again finishes.
    Where the kill lands depends on the machine's speed, so a commit that
    ended before it is checked as it is."""
    stack = any_stack("kernel")
    fill_lowers(stack)
    newlayer = os.path.join(tmpfs, "layer1")
    for delay in (0.1, 0.7, 1.6):
        fill_big_upper(stack.upper)
        before = tree_of_stack(stack, "kernel", stack.lowers)
        upper_ino = os.stat(stack.upper).st_ino
        args = [LAMINA, "commit", "-o", stack.options(), newlayer]
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        out = proc.communicate()[0]
        if proc.returncode == 0:
            check_committed(stack, newlayer, out.strip())
            assert_same_tree(before, tree_of_stack(
                stack, "kernel", [newlayer, *stack.lowers]))
            shutil.rmtree(newlayer)
            continue
        assert proc.returncode == -signal.SIGKILL
        if os.stat(stack.upper).st_ino == upper_ino:
            seen = tree_of_stack(stack, "kernel", stack.lowers)
        else:
            seen = tree_of_stack(stack, "kernel", [newlayer, *stack.lowers])
        assert_same_tree(before, seen)
        staging = os.path.join(tmpfs, ".layer1.lamina-commit")
        left = os.path.exists(os.path.join(staging, "state"))
        code, out, err = run_lamina(
            ["commit", "-o", stack.options(), newlayer], stack.root)
        assert code == 0, err
        if left:
            assert "finishing the interrupted commit" in err
        check_committed(stack, newlayer, out.strip())
        assert_same_tree(before, tree_of_stack(
            stack, "kernel", [newlayer, *stack.lowers]))
        shutil.rmtree(newlayer)


def test_commit_rerun_after_kill_at_the_end(stack):
    """A commit killed while it removed its record at the very end
    leaves an empty staging directory; the rerun reports the layer."""
    fill_lowers(stack)
    helpers.write_file(stack.u("new"), "new")
    newlayer = os.path.join(stack.root, "layer1")
    code, out, err = run_lamina(
        ["commit", "-o", stack.options(), newlayer], stack.root)
    assert code == 0, err
    os.mkdir(os.path.join(stack.root, ".layer1.lamina-commit"))
    code, out, err = run_lamina(
        ["commit", "-o", stack.options(), newlayer], stack.root)
    assert code == 0, err
    assert "left after it had finished" in err
    check_committed(stack, newlayer, out.strip())
    assert helpers.read_file(os.path.join(newlayer, "new")) == b"new"


# Concurrent runs -----------------------------------------------------------

# A process that takes the locks of a running commit or squash: an
# exclusive flock on each directory given. With "mark" it also takes the
# OFD read lock with which a commit marks its upper, so that the commit is
# distinguished from a mount. It prints "locked" once it has the locks and
# keeps them until it is killed.
LOCK_HOLDER = r"""
import fcntl, os, struct, sys

fds = []
for path in sys.argv[2:]:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    if sys.argv[1] == "mark":
        lock = struct.pack("hhqqi4x", fcntl.F_RDLCK, os.SEEK_SET, 0, 0, 0)
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, lock)
    fds.append(fd)
print("locked", flush=True)
sys.stdin.read()
"""


@contextlib.contextmanager
def held_locks(paths, mark=False):
    """Run LOCK_HOLDER on paths until the block ends, then SIGKILL it, as
    a run killed in the middle ends, and wait for it to exit."""
    proc = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, "mark" if mark else "plain",
         *paths], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "locked\n"
        yield proc
    finally:
        proc.kill()
        proc.wait()
        proc.stdin.close()
        proc.stdout.close()


@pytest.mark.parametrize("mark,expected", [
    (True, "lamina: commit: another commit of upperdir {} is running; "
     "wait for it to end"),
    (False, "lamina: commit: a lamina mount uses {}; unmount it first"),
])
def test_commit_stops_while_upper_is_locked(lamina_stack, mark, expected):
    """A running commit holds the upper's flock and marks the upper; a
    mount holds the flock alone. A second commit reports which of the two
    it found, changes nothing, and commits once the holder is gone."""
    stack = lamina_stack
    upper = os.path.realpath(stack.upper)
    helpers.write_file(stack.u("file"), "kept")
    before = helpers.snapshot_tree(upper, with_ino=True)
    newlayer = os.path.join(stack.root, "layer1")
    args = ["commit", "-o", stack.options(), newlayer]

    with held_locks([upper], mark=mark):
        assert_rejected(stack, args, [expected.format(upper)])

        assert not os.path.exists(newlayer)
        assert helpers.snapshot_tree(upper, with_ino=True) == before
        assert [n for n in os.listdir(stack.root)
                if "lamina-commit" in n] == []

    printed = commit(stack, newlayer)
    check_committed(stack, newlayer, printed)
    assert helpers.read_file(os.path.join(newlayer, "file")) == b"kept"


def test_reset_during_commit(lamina_stack):
    """reset of an upper that a running commit has locked reports the
    commit, not a mount, and changes nothing."""
    stack = lamina_stack
    upper = os.path.realpath(stack.upper)
    helpers.write_file(stack.u("file"), "kept")
    before = helpers.snapshot_tree(upper, with_ino=True)

    with held_locks([upper], mark=True):
        assert_rejected(
            stack, ["reset", upper, "-o", f"workdir={stack.work}"],
            [f"lamina: reset: a lamina commit of {upper} is running; "
             "wait for it to end"])
        assert helpers.snapshot_tree(upper, with_ino=True) == before


@pytest.mark.parametrize("index", ["on", "off"])
def test_mount_during_commit(lamina_stack, index):
    """A commit replaces the upper with an empty one, so a mount of the
    upper while a commit runs fails, with or without the index."""
    stack = lamina_stack
    upper = os.path.realpath(stack.upper)

    with held_locks([upper], mark=True):
        code, _out, err = run_lamina(
            ["mount", "-o", stack.options(extra=(f"index={index}",)),
             stack.merged], stack.root)
        left_mounted = helpers.find_mount(stack.merged) is not None
        if left_mounted:
            force_unmount(stack.merged)

    assert code == 32, err
    assert not left_mounted
    assert f"upperdir {upper} is being committed by lamina commit; " \
        "wait for it to end" in err


def test_commit_stops_while_newlayer_is_locked(lamina_stack):
    """A commit to another filesystem that ran out of space left its
    record and a partial copy in the staging directory. While a process
    holds the staging directory's lock, as a running commit to the same
    NEWLAYER does, a rerun stops without touching either. Once that
    process is killed, the rerun finishes the commit."""
    stack = lamina_stack
    helpers.write_file(stack.u("big"), os.urandom(2 << 20))
    with scratch_mount("lamina-small.", "tmpfs", "size=1m") as small:
        newlayer = os.path.join(small, "layer1")
        staging = os.path.join(small, ".layer1.lamina-commit")
        args = ["commit", "-o", stack.options(), newlayer]
        code, _, err = run_lamina(args, stack.root)
        assert code == 1, err
        assert os.path.exists(os.path.join(staging, "state"))
        assert os.path.exists(os.path.join(staging, "layer"))
        run(["mount", "-o", "remount,size=8m", small])
        left = helpers.snapshot_tree(staging, with_ino=True)
        upper_before = helpers.snapshot_tree(stack.upper, with_ino=True)

        with held_locks([staging]):
            assert_rejected(stack, args, [
                f"lamina: commit: another commit to {newlayer} is running "
                f"and holds {staging}; wait for it to end"])

            assert helpers.snapshot_tree(staging, with_ino=True) == left
            assert helpers.snapshot_tree(stack.upper,
                                         with_ino=True) == upper_before
            assert not os.path.exists(newlayer)

        finish_big_commit(stack, args, newlayer)


# Points at which strace kills a commit: (where NEWLAYER is, system
# call, occurrence). On the upper's filesystem: the staging directory,
# the state record, the new empty upper, the exchange, an fsync after
# it, and the workdir's removal. On another filesystem: the staging
# directory, the copy, its sync and rename, the exchange, and the
# removal of the old upper.
KILL_POINTS = [
    ("same", "mkdirat", 1), ("same", "renameat", 1), ("same", "mkdirat", 2),
    ("same", "renameat2", 1), ("same", "fsync", 5), ("same", "unlinkat", 1),
    ("same", "unlinkat", 3),
    ("other", "mkdirat", 1), ("other", "mkdirat", 2), ("other", "mkdirat", 3),
    ("other", "syncfs", 1), ("other", "renameat2", 1),
    ("other", "renameat2", 2), ("other", "unlinkat", 3),
]


@pytest.mark.parametrize("where,call,when", KILL_POINTS)
def test_commit_killed_at_step(any_stack, tmpfs, where, call, when):
    """A commit killed at a given system call leaves the old or the new
    stack, and the same command run again finishes the commit."""
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed; scripts/install-deps.sh "
                    "installs it")
    stack = any_stack("kernel")
    before = build(stack)
    upper_ino = os.stat(stack.upper).st_ino
    parent = stack.root if where == "same" else tmpfs
    newlayer = os.path.join(parent, "layer1")
    args = ["commit", "-o", stack.options(), newlayer]
    kill = ["strace", "-f", "-qq", "-o", "/dev/null", "-e",
            f"trace={call}", "-e",
            f"inject={call}:signal=SIGKILL:when={when}", LAMINA]
    code, _, err = run_lamina(args, stack.root, binary=kill)
    assert code != 0, f"the commit ended before {call} number {when}"

    if os.stat(stack.upper).st_ino == upper_ino:
        seen = tree_of_stack(stack, "kernel", stack.lowers)
    else:
        seen = tree_of_stack(stack, "kernel", [newlayer, *stack.lowers])
    assert_same_tree(before, seen)

    state = os.path.join(parent, ".layer1.lamina-commit", "state")
    interrupted = os.path.exists(state)
    code, out, err = run_lamina(args, stack.root)
    assert code == 0, err
    if interrupted:
        assert "finishing the interrupted commit" in err
    check_committed(stack, newlayer, out.strip())
    for reader in READERS:
        assert_same_tree(before, read_back(stack, newlayer, reader))


@pytest.mark.parametrize("metacopy", [False, True])
@pytest.mark.parametrize("reader", READERS)
def test_commit_links_names_from_the_index(stack, reader, metacopy):
    """With the index, a change through one name of a hard-linked lower
    file reaches its other names through the index entry. Commit links
    those names into the upper first, so the committed tree keeps it."""
    bottom = stack.lowers[1]
    helpers.write_file(os.path.join(bottom, "hl", "a"), "original")
    for name in (("hl", "b"), ("other", "c"), ("moved", "deep", "d"),
                 ("gone", "e")):
        os.makedirs(os.path.join(bottom, *name[:-1]), exist_ok=True)
        os.link(os.path.join(bottom, "hl", "a"), os.path.join(bottom, *name))
    helpers.write_file(os.path.join(bottom, "meta"), "metadata only")
    options = ("index=on", "redirect_dir=on") + (
        ("metacopy=on",) if metacopy else ())
    stack.mount(extra=options)
    os.chmod(stack.m("meta"), 0o600)
    helpers.write_file(stack.m("hl", "a"), "changed")
    os.chmod(stack.m("hl", "a"), 0o600)
    os.rename(stack.m("moved"), stack.m("moved2"))
    os.mkdir(stack.m("new"))
    os.rename(stack.m("other"), stack.m("new", "other2"))
    os.unlink(stack.m("gone", "e"))
    before = tree(stack.merged)
    stack.unmount()
    assert not os.path.exists(os.path.join(stack.upper, "moved2", "deep"))

    newlayer = os.path.join(stack.root, "layer1")
    check_committed(stack, newlayer, commit(stack, newlayer))

    assert_same_tree(before, read_back(stack, newlayer, reader, options))


@pytest.mark.parametrize("reader", READERS)
def test_commit_links_special_files(stack, reader):
    """As for regular files, commit links into the upper the names of
    hard-linked symlinks, FIFOs and device nodes that show a change
    only through the index."""
    bottom = stack.lowers[1]
    os.symlink("target", os.path.join(bottom, "s1"))
    os.mkfifo(os.path.join(bottom, "f1"), 0o644)
    os.mknod(os.path.join(bottom, "c1"), stat.S_IFCHR | 0o644,
             os.makedev(1, 3))
    for kind in ("s", "f", "c"):
        os.link(os.path.join(bottom, kind + "1"),
                os.path.join(bottom, kind + "2"), follow_symlinks=False)
    options = ("index=on",)
    stack.mount(extra=options)
    for kind in ("s", "f", "c"):
        os.chown(stack.m(kind + "1"), 1000, 1000, follow_symlinks=False)
        os.setxattr(stack.m(kind + "1"), "trusted.note", b"changed",
                    follow_symlinks=False)
    before = tree(stack.merged)
    stack.unmount()
    assert not os.path.lexists(os.path.join(stack.upper, "s2"))

    newlayer = os.path.join(stack.root, "layer1")
    check_committed(stack, newlayer, commit(stack, newlayer))

    assert_same_tree(before, read_back(stack, newlayer, reader, options))
