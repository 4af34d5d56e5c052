"""lamina squash: several lower layers merged into one new layer.

The layers are made the way overlayfs makes them: each one is the upper
directory of a mount (kernel overlayfs or lamina) over the layers below.
The squashed layer, mounted over the layer that was below the squashed
set, must show the same tree as the layers it replaces, under both
implementations. That layer (D) contains names that the squashed layers
delete or hide, so a dropped whiteout or opaque marker shows up.
"""

import os
import pty
import shutil
import signal
import socket
import stat
import subprocess
import time

import pytest

import helpers
from conftest import LAMINA, lamina_for_others, make_tempdir, run_lamina
from test_commit import assert_rejected, assert_same_tree, held_locks, tree

READERS = ("kernel", "lamina")

MTIME_NS = 1_500_000_000_987_654_321


class Layers:
    """Layers A, B, C (squashed, top first) and D below them, all in the
    stack's directory. C and D are the stack's lower layers."""

    def __init__(self, stack, extra=()):
        self.stack = stack
        self.extra = tuple(extra)
        self.c, self.d = stack.lowers
        self.a = os.path.join(stack.root, "A")
        self.b = os.path.join(stack.root, "B")
        self.empty = os.path.join(stack.root, "empty")
        os.mkdir(self.empty)

    def path(self, name):
        return os.path.join(self.stack.root, name)

    def change(self, name, lowers, changes):
        """Mount lowers with a fresh upper, apply changes to the merged
        tree, and keep the upper as layer name."""
        stack = self.stack
        # The kernel rejects redirect_dir=on together with userxattr.
        redirect = () if "userxattr" in self.extra else ("redirect_dir=on",)
        stack.mount(extra=self.extra + redirect, lowers=lowers)
        try:
            changes(stack.merged)
        finally:
            stack.unmount()
        os.rename(stack.upper, self.path(name))
        os.mkdir(stack.upper)
        shutil.rmtree(stack.work)
        os.mkdir(stack.work)

    def view(self, reader, lowers):
        """The tree that lowers show, mounted read-only by reader."""
        stack = self.stack
        stack.mount(reader, extra=self.extra, upper=False, lowers=lowers)
        try:
            return tree(stack.merged)
        finally:
            stack.unmount()

    def squash(self, lowers, newlayer, extra_args=()):
        options = "lowerdir=" + ":".join(lowers)
        if self.extra:
            options += "," + ",".join(self.extra)
        code, out, err = run_lamina(
            ["squash", "-o", options, *extra_args, newlayer],
            self.stack.root)
        assert code == 0, err
        assert out == ""
        assert err == ""


def fill_base(layers):
    """C: every file type and metadata; D: names the squash must hide."""
    c, d = layers.c, layers.d
    for name in ("gone_in_b", "gone_in_a", "opaque_dir/probe",
                 "dir/deleted", "kept_from_d", "tree/probe"):
        helpers.write_file(os.path.join(d, name), "below: " + name)
    helpers.write_file(os.path.join(c, "gone_in_b"), "c")
    helpers.write_file(os.path.join(c, "gone_in_a"), "c")
    helpers.write_file(os.path.join(c, "dir", "deleted"), "c")
    helpers.write_file(os.path.join(c, "dir", "c"), "c", 0o750)
    helpers.write_file(os.path.join(c, "opaque_dir", "c"), "c")
    helpers.write_file(os.path.join(c, "tree", "a"), "a")
    helpers.write_file(os.path.join(c, "lone", "deleted"), "not in D")
    helpers.write_file(os.path.join(c, "lone", "kept"), "not in D")
    helpers.write_file(os.path.join(c, "hl1"), "hard link", 0o600)
    os.link(os.path.join(c, "hl1"), os.path.join(c, "hl2"))
    os.chown(os.path.join(c, "hl1"), 1000, 1000)
    os.setxattr(os.path.join(c, "hl1"), "user.c", b"on a hard link")
    helpers.make_sparse(os.path.join(c, "sparse"), 16 << 20,
                        {0: b"start", 8 << 20: b"middle"})
    os.mkfifo(os.path.join(c, "fifo"), 0o600)
    os.mknod(os.path.join(c, "null"), stat.S_IFCHR | 0o666,
             os.makedev(1, 3))
    os.mknod(os.path.join(c, "loop"), stat.S_IFBLK | 0o660,
             os.makedev(7, 0))
    os.symlink("dir/c", os.path.join(c, "symlink"))
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(os.path.join(c, "socket"))
    sock.close()
    os.utime(os.path.join(c, "dir", "c"), ns=(MTIME_NS, MTIME_NS))


def change_b(merged):
    m = lambda *p: os.path.join(merged, *p)  # noqa: E731
    os.unlink(m("gone_in_b"))
    shutil.rmtree(m("opaque_dir"))
    os.mkdir(m("opaque_dir"))
    helpers.write_file(m("opaque_dir", "b"), "b")
    helpers.write_file(m("dir", "b"), "b")
    helpers.write_file(m("tree", "a"), "changed in b")
    os.setxattr(m("dir"), "user.b", b"b")
    os.chown(m("dir", "c"), 1000, 1002)


def change_a(merged):
    m = lambda *p: os.path.join(merged, *p)  # noqa: E731
    os.unlink(m("gone_in_a"))
    os.unlink(m("dir", "deleted"))
    os.unlink(m("lone", "deleted"))
    os.mkdir(m("gone_in_b"))
    helpers.write_file(m("gone_in_b", "now a dir"), "a")
    helpers.write_file(m("new", "one"), "one", 0o644)
    os.link(m("new", "one"), m("new", "two"))
    os.symlink("/absolute/target", m("new", "abs"))
    os.setxattr(m("new", "one"), "trusted.kept", b"trusted value")
    os.chmod(m("tree", "a"), 0o2755)


def build(layers):
    fill_base(layers)
    layers.change("B", [layers.c, layers.d], change_b)
    layers.change("A", [layers.b, layers.c, layers.d], change_a)


def overlay_xattrs(root, prefix="trusted.overlay."):
    """{path: [overlay xattr names]} for every entry of a layer."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [".", *dirnames, *filenames]:
            path = os.path.normpath(os.path.join(dirpath, name))
            names = [x for x in helpers.xattrs(path) if x.startswith(prefix)]
            if names:
                found[os.path.relpath(path, root)] = sorted(names)
    return found


@pytest.mark.parametrize("reader", READERS)
def test_squash_keeps_the_tree(stack, reader):
    layers = Layers(stack)
    build(layers)
    before = layers.view(reader, [layers.a, layers.b, layers.c, layers.d])
    assert "gone_in_a" not in before
    assert "opaque_dir/probe" not in before
    squashed = layers.path("S")
    layers.squash([layers.a, layers.b, layers.c], squashed)
    assert_same_tree(before, layers.view(reader, [squashed, layers.d]))
    assert helpers.is_whiteout(os.path.join(squashed, "gone_in_a"))
    marks = overlay_xattrs(squashed)
    assert marks.get("opaque_dir") == ["trusted.overlay.opaque"]
    assert not any("impure" in x for names in marks.values() for x in names)


def test_squash_file_types_and_metadata(stack):
    layers = Layers(stack)
    build(layers)
    squashed = layers.path("S")
    layers.squash([layers.a, layers.b, layers.c], squashed)
    s = lambda *p: os.path.join(squashed, *p)  # noqa: E731
    assert os.stat(s("hl1")).st_ino == os.stat(s("hl2")).st_ino
    assert os.stat(s("new", "one")).st_ino == os.stat(s("new", "two")).st_ino
    assert os.stat(s("sparse")).st_size == 16 << 20
    assert os.stat(s("sparse")).st_blocks * 512 < 1 << 20
    assert stat.S_ISSOCK(os.lstat(s("socket")).st_mode)
    assert stat.S_ISFIFO(os.lstat(s("fifo")).st_mode)
    assert os.lstat(s("loop")).st_rdev == os.makedev(7, 0)
    assert os.lstat(s("dir", "c")).st_mtime_ns == MTIME_NS
    assert os.lstat(s("dir", "c")).st_uid == 1000
    assert os.readlink(s("new", "abs")) == "/absolute/target"
    assert helpers.get_xattr(s("new", "one"), "trusted.kept") == \
        b"trusted value"
    assert stat.S_IMODE(os.lstat(s("tree", "a")).st_mode) == 0o2755


@pytest.mark.parametrize("reader", READERS)
def test_squash_bottom(stack, reader):
    layers = Layers(stack)
    build(layers)
    all_layers = [layers.a, layers.b, layers.c, layers.d]
    before = layers.view(reader, all_layers)
    squashed = layers.path("S")
    layers.squash(all_layers, squashed, ["--bottom"])
    assert overlay_xattrs(squashed) == {}
    for dirpath, dirnames, filenames in os.walk(squashed):
        for name in filenames:
            assert not helpers.is_whiteout(os.path.join(dirpath, name))
    assert_same_tree(before, layers.view(reader, [squashed, layers.empty]))


def move_dirs_b(merged):
    m = lambda *p: os.path.join(merged, *p)  # noqa: E731
    os.rename(m("moved"), m("moved_b"))
    os.rename(m("x", "sub"), m("y", "sub_b"))


def move_dirs_a(merged):
    m = lambda *p: os.path.join(merged, *p)  # noqa: E731
    os.rename(m("moved_b"), m("moved_a"))
    helpers.write_file(m("moved_a", "added_in_a"), "a")
    os.rename(m("y", "sub_b"), m("sub_a"))


@pytest.mark.parametrize("reader", READERS)
def test_squash_renamed_directories(stack, reader):
    layers = Layers(stack)
    for layer in (layers.c, layers.d):
        tag = os.path.basename(layer)
        helpers.write_file(os.path.join(layer, "moved", "in_" + tag), tag)
        helpers.write_file(os.path.join(layer, "x", "sub", "in_" + tag), tag)
    os.makedirs(os.path.join(layers.c, "y"))
    layers.change("B", [layers.c, layers.d], move_dirs_b)
    layers.change("A", [layers.b, layers.c, layers.d], move_dirs_a)
    before = layers.view(reader, [layers.a, layers.b, layers.c, layers.d])
    assert "moved_a/in_lower1" in before
    assert "sub_a/in_lower1" in before
    squashed = layers.path("S")
    layers.squash([layers.a, layers.b, layers.c], squashed)
    redirect = helpers.get_xattr(os.path.join(squashed, "moved_a"),
                                 "trusted.overlay.redirect")
    assert redirect in (b"moved", b"/moved")
    assert_same_tree(before, layers.view(reader, [squashed, layers.d]))


def move_parents_b(merged):
    m = lambda *p: os.path.join(merged, *p)  # noqa: E731
    os.rename(m("p"), m("p2"))
    os.mkdir(m("r"))
    os.rename(m("t"), m("r", "t2"))


def move_parents_a(merged):
    m = lambda *p: os.path.join(merged, *p)  # noqa: E731
    os.rename(m("p2", "q"), m("qa"))
    os.rename(m("r", "t2", "u"), m("ua"))


@pytest.mark.parametrize("reader", READERS)
def test_squash_follows_moved_parents(stack, reader):
    """A directory moved out of a directory that an upper layer had moved
    already: its absolute redirect names the parent's new path, which
    the layers below reach only through the parent's own redirect, and
    past a new (opaque) directory when that redirect is absolute."""
    layers = Layers(stack)
    for layer in (layers.c, layers.d):
        tag = os.path.basename(layer)
        helpers.write_file(os.path.join(layer, "p", "q", "in_" + tag), tag)
        helpers.write_file(os.path.join(layer, "t", "u", "in_" + tag), tag)
    layers.change("B", [layers.c, layers.d], move_parents_b)
    layers.change("A", [layers.b, layers.c, layers.d], move_parents_a)
    assert helpers.get_xattr(os.path.join(layers.a, "qa"),
                             REDIRECT) == b"/p2/q"
    assert helpers.get_xattr(os.path.join(layers.b, "r", "t2"),
                             REDIRECT) == b"/t"
    before = layers.view(reader, [layers.a, layers.b, layers.c, layers.d])
    for name in ("qa/in_lower0", "qa/in_lower1", "ua/in_lower0",
                 "ua/in_lower1"):
        assert name in before
    squashed = layers.path("S")
    layers.squash([layers.a, layers.b, layers.c], squashed)
    assert_same_tree(before, layers.view(reader, [squashed, layers.d]))


@pytest.mark.parametrize("reader", READERS)
def test_squash_userxattr(stack, reader):
    layers = Layers(stack, extra=("userxattr",))
    build(layers)
    before = layers.view(reader, [layers.a, layers.b, layers.c, layers.d])
    squashed = layers.path("S")
    layers.squash([layers.a, layers.b, layers.c], squashed)
    assert helpers.get_xattr(os.path.join(squashed, "opaque_dir"),
                             "user.overlay.opaque") == b"y"
    assert_same_tree(before, layers.view(reader, [squashed, layers.d]))


@pytest.mark.parametrize("reader", READERS)
def test_squash_xattr_whiteouts(stack, reader):
    """Whiteouts that are files with overlay.whiteout, in a directory
    marked overlay.opaque=x, hide names as the kernel reads them."""
    layers = Layers(stack)
    b = layers.path("B")
    os.makedirs(os.path.join(b, "dir"))
    open(os.path.join(b, "dir", "hidden"), "w").close()
    os.setxattr(os.path.join(b, "dir", "hidden"), "trusted.overlay.whiteout",
                b"")
    os.setxattr(os.path.join(b, "dir"), "trusted.overlay.opaque", b"x")
    helpers.write_file(os.path.join(layers.c, "dir", "hidden"), "c")
    helpers.write_file(os.path.join(layers.c, "dir", "shown"), "c")
    helpers.write_file(os.path.join(layers.d, "dir", "hidden"), "d")
    before = layers.view(reader, [b, layers.c, layers.d])
    assert "dir/hidden" not in before
    squashed = layers.path("S")
    layers.squash([b, layers.c], squashed)
    assert_same_tree(before, layers.view(reader, [squashed, layers.d]))


# Metacopy files -----------------------------------------------------------

# Options that let each reader follow metacopy files and their redirects.
META_VIEW = {"kernel": ("metacopy=on", "redirect_dir=on"),
             "lamina": ("metacopy=on",)}
METACOPY = "trusted.overlay.metacopy"
REDIRECT = "trusted.overlay.redirect"
MIB = 1 << 20


def big_file(path, tag):
    """4 MiB with data at both ends and a hole between."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    helpers.make_sparse(path, 4 * MIB,
                        {0: b"head of " + tag, 3 * MIB: b"tail of " + tag})


def used_bytes(path):
    return os.lstat(path).st_blocks * 512


def fill_metacopy_base(layers):
    """Big files in C and in D, for metadata-only changes above them."""
    for layer, tag in ((layers.c, "c"), (layers.d, "d")):
        for name in ("chmod", "chown", "xattr", "moved", "twice"):
            big_file(os.path.join(layer, f"{tag}_{name}"), tag.encode())
        big_file(os.path.join(layer, "dir", f"{tag}_moved"), tag.encode())
    os.makedirs(os.path.join(layers.c, "other"))


def metacopy_changes_b(merged):
    """Metadata-only changes: the upper holds metacopy files only."""
    m = lambda *p: os.path.join(merged, *p)  # noqa: E731
    for tag in ("c", "d"):
        os.chmod(m(f"{tag}_chmod"), 0o600)
        os.chown(m(f"{tag}_chown"), 1234, 5678)
        os.setxattr(m(f"{tag}_xattr"), "user.note", tag.encode())
        os.chmod(m(f"{tag}_moved"), 0o640)
        os.rename(m(f"{tag}_moved"), m(f"{tag}_renamed"))
        os.chown(m("dir", f"{tag}_moved"), 42, 42)
        os.rename(m("dir", f"{tag}_moved"), m("other", f"{tag}_renamed"))
        os.chmod(m(f"{tag}_twice"), 0o700)


def metacopy_changes_a(merged):
    """A second metacopy copy-up of files that B already holds so."""
    for tag in ("c", "d"):
        os.chown(os.path.join(merged, f"{tag}_twice"), 7, 7)
        os.utime(os.path.join(merged, f"{tag}_renamed"),
                 ns=(MTIME_NS, MTIME_NS))


def build_metacopy(layers):
    fill_metacopy_base(layers)
    meta = ("metacopy=on",)
    layers.extra = meta
    layers.change("B", [layers.c, layers.d], metacopy_changes_b)
    layers.change("A", [layers.b, layers.c, layers.d], metacopy_changes_a)
    layers.extra = ()
    for tag in ("c", "d"):
        assert helpers.get_xattr(os.path.join(layers.b, f"{tag}_chmod"),
                                 METACOPY) is not None
        assert helpers.get_xattr(os.path.join(layers.a, f"{tag}_twice"),
                                 METACOPY) is not None


def metacopy_view(layers, reader, lowers):
    layers.extra = META_VIEW[reader]
    try:
        return layers.view(reader, lowers)
    finally:
        layers.extra = ()


def metacopy_files(root):
    """{path: bytes used} of the metacopy files under root."""
    found = {}
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            path = os.path.join(dirpath, name)
            if helpers.get_xattr(path, METACOPY) is not None:
                found[os.path.relpath(path, root)] = used_bytes(path)
    return found


@pytest.mark.parametrize("reader", READERS)
def test_squash_metacopy_with_data(stack, reader):
    """Squashing the metacopy layers with C, which holds half the data:
    C's files become plain files, D's stay metacopy files."""
    layers = Layers(stack)
    build_metacopy(layers)
    all_layers = [layers.a, layers.b, layers.c, layers.d]
    before = metacopy_view(layers, reader, all_layers)
    assert before["other/c_renamed"]["uid"] == 42
    squashed = layers.path("S")
    layers.squash([layers.a, layers.b, layers.c], squashed)
    assert_same_tree(before,
                     metacopy_view(layers, reader, [squashed, layers.d]))
    s = lambda *p: os.path.join(squashed, *p)  # noqa: E731
    expected = {f"d_{n}" for n in ("chmod", "chown", "xattr", "renamed",
                                   "twice")} | {"other/d_renamed"}
    assert set(metacopy_files(squashed)) == expected
    for name in ("c_chmod", "c_twice", "other/c_renamed"):
        data = helpers.read_file(s(name))
        assert data.startswith(b"head of c")
        assert data[3 * MIB:].startswith(b"tail of c")
        assert used_bytes(s(name)) < MIB
    assert helpers.get_xattr(s("d_renamed"), REDIRECT) == b"/d_moved"
    assert helpers.get_xattr(s("other", "d_renamed"), REDIRECT) == \
        b"/dir/d_moved"
    assert helpers.get_xattr(s("d_chmod"), REDIRECT) is None
    # The whiteout of the rename still hides D's file.
    assert helpers.is_whiteout(s("dir", "d_moved"))


@pytest.mark.parametrize("reader", READERS)
def test_squash_metacopy_above_data(stack, reader):
    """Squashing only the metacopy layers keeps metacopy files that find
    their data in C and D below."""
    layers = Layers(stack)
    build_metacopy(layers)
    all_layers = [layers.a, layers.b, layers.c, layers.d]
    before = metacopy_view(layers, reader, all_layers)
    squashed = layers.path("S")
    layers.squash([layers.a, layers.b], squashed)
    after = metacopy_view(layers, reader, [squashed, layers.c, layers.d])
    assert_same_tree(before, after)
    used = metacopy_files(squashed)
    assert len(used) == 12
    assert sum(used.values()) < MIB
    for tag in ("c", "d"):
        path = os.path.join(squashed, f"{tag}_renamed")
        assert helpers.get_xattr(path, REDIRECT) == f"/{tag}_moved".encode()
        assert os.lstat(path).st_size == 4 * MIB


def test_squash_metacopy_bottom_without_data(stack):
    layers = Layers(stack)
    build_metacopy(layers)
    new = layers.path("new")
    options = f"lowerdir={layers.a}:{layers.b}:{layers.c}"
    assert_rejected(stack, ["squash", "-o", options, "--bottom", new],
                    ["d_chmod", "metacopy", "--bottom"])
    assert not os.path.exists(new)
    assert [n for n in os.listdir(stack.root) if "lamina-squash" in n] == []


def test_squash_metacopy_data_hidden(stack):
    """A whiteout between a metacopy file and its data is an error, as
    overlayfs returns EIO for the file."""
    layers = Layers(stack)
    big_file(os.path.join(layers.d, "f"), b"d")
    b = layers.path("B")
    os.mkdir(b)
    helpers.make_whiteout(os.path.join(b, "f"))
    os.mkdir(layers.a)
    with open(os.path.join(layers.a, "f"), "wb") as f:
        f.truncate(4 * MIB)
    os.setxattr(os.path.join(layers.a, "f"), METACOPY, b"")
    new = layers.path("new")
    assert_rejected(stack, ["squash", "-o",
                            f"lowerdir={layers.a}:{b}", new],
                    ["f is a metacopy file", "whiteout"])
    assert not os.path.exists(new)


# Interrupted squash and bad input --------------------------------------


def fill_big_layer(root, dirs=150, files=200):
    for d in range(dirs):
        path = os.path.join(root, f"d{d:03}")
        os.mkdir(path)
        for f in range(files):
            with open(os.path.join(path, f"f{f:03}"), "wb") as out:
                out.write(b"%d/%d\n" % (d, f) * 8)


def test_squash_killed_and_rerun(any_stack):
    """SIGKILL during a squash changes no input, and the same command run
    again finishes. Where the kill lands depends on the machine's speed,
    so a squash that ended before it is checked as it is."""
    stack = any_stack("kernel")
    layers = Layers(stack)
    fill_big_layer(layers.c)
    helpers.write_file(os.path.join(layers.d, "base"), "base")
    os.mkdir(layers.a)
    helpers.write_file(os.path.join(layers.a, "top"), "top")
    inputs = [layers.a, layers.c]
    manifests = {p: helpers.snapshot_tree(p, with_times=True, with_ino=True)
                 for p in inputs}
    squashed = layers.path("S")
    staging = layers.path(".S.lamina-squash")
    options = "lowerdir=" + ":".join(inputs)
    expected = layers.view("kernel", [*inputs, layers.d])

    for delay in (0.1, 0.5):
        proc = subprocess.Popen([LAMINA, "squash", "-o", options, squashed],
                                stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        code = proc.wait()
        assert code in (0, -signal.SIGKILL)
        for path, before in manifests.items():
            after = helpers.snapshot_tree(path, with_times=True,
                                          with_ino=True)
            assert helpers.diff_trees(before, after) == []
        if os.path.exists(squashed):
            assert not os.path.exists(staging)
            assert_same_tree(expected,
                             layers.view("kernel", [squashed, layers.d]))
            shutil.rmtree(squashed)
        elif os.path.exists(staging):
            code, out, err = run_lamina(
                ["squash", "-o", options, squashed], stack.root)
            assert code == 0, err
            assert "interrupted squash" in err
            assert not os.path.exists(staging)
            assert_same_tree(expected,
                             layers.view("kernel", [squashed, layers.d]))
            shutil.rmtree(squashed)


def test_squash_stops_while_another_runs(stack):
    """While a process holds the lock on the staging directory, as a
    running squash to the same NEWLAYER does, a second squash stops
    without touching what the first has built. Once that process is
    killed, a rerun removes the leftover and squashes."""
    layers = Layers(stack)
    build(layers)
    inputs = [layers.a, layers.b, layers.c]
    expected = layers.view("kernel", [*inputs, layers.d])
    squashed = layers.path("S")
    staging = layers.path(".S.lamina-squash")
    args = ["squash", "-o", "lowerdir=" + ":".join(inputs), squashed]
    helpers.write_file(os.path.join(staging, "partial", "file"), "built")
    built = helpers.snapshot_tree(staging, with_ino=True)

    with held_locks([staging]):
        assert_rejected(stack, args, [
            f"lamina: squash: another squash to {squashed} is running and "
            f"holds {staging}; wait for it to end"])

        assert helpers.snapshot_tree(staging, with_ino=True) == built
        assert not os.path.exists(squashed)

    code, out, err = run_lamina(args, stack.root)
    assert code == 0, err
    assert out == ""
    assert err == (f"lamina: removing {staging}, which an interrupted "
                   "squash left\n")
    assert not os.path.exists(staging)
    assert_same_tree(expected, layers.view("kernel", [squashed, layers.d]))


# Points at which strace kills a squash: the staging directory, a
# directory inside it, the sync, and the rename to NEWLAYER.
KILL_POINTS = [("mkdirat", 1), ("mkdirat", 4), ("syncfs", 1),
               ("renameat2", 1)]


@pytest.mark.parametrize("call,when", KILL_POINTS)
def test_squash_killed_at_step(any_stack, call, when):
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed; scripts/install-deps.sh "
                    "installs it")
    stack = any_stack("kernel")
    layers = Layers(stack)
    build(layers)
    inputs = [layers.a, layers.b, layers.c]
    manifests = {p: helpers.snapshot_tree(p, with_times=True, with_ino=True)
                 for p in inputs}
    expected = layers.view("kernel", [*inputs, layers.d])
    squashed = layers.path("S")
    args = ["squash", "-o", "lowerdir=" + ":".join(inputs), squashed]
    kill = ["strace", "-f", "-qq", "-o", "/dev/null", "-e",
            f"trace={call}", "-e",
            f"inject={call}:signal=SIGKILL:when={when}", LAMINA]
    code, _, _ = run_lamina(args, stack.root, binary=kill)
    assert code != 0, f"the squash ended before {call} number {when}"
    for path, before in manifests.items():
        after = helpers.snapshot_tree(path, with_times=True, with_ino=True)
        assert helpers.diff_trees(before, after) == []
    if not os.path.exists(squashed):
        code, _, err = run_lamina(args, stack.root)
        assert code == 0, err
    assert not os.path.exists(layers.path(".S.lamina-squash"))
    assert_same_tree(expected, layers.view("kernel", [squashed, layers.d]))


def test_squash_progress_on_terminal(stack):
    layers = Layers(stack)
    build(layers)
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(
            [LAMINA, "squash", "-o", f"lowerdir={layers.a}:{layers.b}",
             layers.path("S")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=slave)
        os.close(slave)
        slave = None
        output = b""
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:
                break
            if not data:
                break
            output += data
        assert proc.wait(timeout=60) == 0
    finally:
        if slave is not None:
            os.close(slave)
        os.close(master)
    assert b"squash [" in output
    assert b"100%" in output


def test_squash_rejects_bad_input(stack):
    layers = Layers(stack)
    helpers.write_file(os.path.join(layers.c, "file"), "c")
    lowers = "lowerdir=" + layers.c + ":" + layers.d
    new = layers.path("new")
    os.mkdir(layers.path("exists"))
    cases = [
        (["squash", "-o", lowers], ["NEWLAYER is missing"]),
        (["squash", new], ["no lowerdir"]),
        (["squash", "-o", stack.options(), new],
         ["upperdir", "lower layers only"]),
        # Without workdir too: the advice to add one would not help.
        (["squash", "-o", lowers + ",upperdir=" + stack.upper, new],
         ["upperdir", "lower layers only"]),
        (["squash", "-o", lowers, layers.path("exists")],
         ["already exists"]),
        (["squash", "-o", lowers + ":" + layers.path("nope"), new],
         ["nope"]),
        (["squash", "-o", lowers, os.path.join(layers.c, "new")],
         ["inside lowerdir"]),
        (["squash", "-o", lowers, "--top", new], ["invalid option"]),
        (["squash", "-o", lowers + ",bogus=1", new], ["bogus"]),
    ]
    for args, words in cases:
        assert_rejected(stack, args, words)
    assert not os.path.exists(new)
    assert [n for n in os.listdir(stack.root) if "lamina-squash" in n] == []


def test_squash_rejects_duplicate_layer(lamina_stack):
    """A layer given twice is rejected, as the mount rejects it, also
    when the two spellings differ."""
    stack = lamina_stack
    top, bottom = (os.path.realpath(p) for p in stack.lowers)
    helpers.write_file(os.path.join(top, "file"), "top")
    link = os.path.join(stack.root, "link")
    os.symlink(top, link)
    new = os.path.join(stack.root, "new")

    for lowers in ([top, top], [top, bottom, top + "/"], [top, link]):
        options = "lowerdir=" + ":".join(lowers)
        assert_rejected(stack, ["squash", "-o", options, new],
                        [f"lamina: squash: lowerdir {top} is given twice; "
                         "list each layer once"])
        assert not os.path.exists(new), options

    assert [n for n in os.listdir(stack.root) if "lamina-squash" in n] == []


@pytest.mark.parametrize("value", [b"a/b", b""])
def test_squash_rejects_invalid_redirect(stack, value):
    layers = Layers(stack)
    os.makedirs(os.path.join(layers.c, "bad"))
    os.setxattr(os.path.join(layers.c, "bad"), "trusted.overlay.redirect",
                value)
    helpers.write_file(os.path.join(layers.d, "bad", "d"), "d")
    new = layers.path("new")
    assert_rejected(stack, ["squash", "-o",
                            f"lowerdir={layers.c}:{layers.d}", new],
                    ["invalid overlay.redirect", "bad"])
    assert not os.path.exists(new)
    assert [n for n in os.listdir(stack.root) if "lamina-squash" in n] == []


def make_deep(root, parts):
    """Make root/parts[0]/parts[1]/..., which may be longer than PATH_MAX."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    for part in parts:
        os.mkdir(part, dir_fd=fd)
        child = os.open(part, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = child
    os.close(fd)


def test_squash_redirect_too_long(stack):
    """A squashed redirect longer than ext4 keeps for one file fails the
    squash with a message that names the xattr and the way out."""
    if subprocess.run(["stat", "-f", "-c", "%T", stack.root],
                      capture_output=True, text=True).stdout.strip() \
            != "ext2/ext3":
        pytest.skip("the limit checked here is ext4's")
    layers = Layers(stack)
    # The path is in no layer: only the squashed redirect must name it.
    deep = ["d%d" % i + "x" * 240 for i in range(15)]
    tail = ["t" * 220, "u" * 220]
    os.makedirs(os.path.join(layers.c, "s"))
    os.setxattr(os.path.join(layers.c, "s"), "trusted.overlay.redirect",
                ("/" + "/".join(deep)).encode())
    make_deep(os.path.join(layers.c, "s"), tail)
    os.makedirs(os.path.join(layers.b, "x"))
    os.setxattr(os.path.join(layers.b, "x"), "trusted.overlay.redirect",
                ("/s/" + "/".join(tail)).encode())
    new = layers.path("new")
    assert_rejected(stack, ["squash", "-o",
                            f"lowerdir={layers.b}:{layers.c}", new],
                    ["writing trusted.overlay.redirect of", "ea_inode"])
    assert not os.path.exists(new)


def test_squash_without_root_names_owner_problem():
    """A user who may not give files another owner learns that squash
    needs root for that."""
    root = make_tempdir("lamina-squash-owner.")
    try:
        layer = os.path.join(root, "layer")
        helpers.write_file(os.path.join(layer, "etc", "hostname"), "h\n")
        out = os.path.join(root, "out")
        os.mkdir(out)
        os.chown(out, helpers.NOBODY, helpers.NOBODY)
        binary = lamina_for_others(root)
        proc = helpers.run_as_nobody(
            [binary, "squash", "-o", f"lowerdir={layer}",
             os.path.join(out, "new")])
        left = os.listdir(out)
    finally:
        shutil.rmtree(root)

    assert proc.returncode != 0
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
    assert "run squash as root" in proc.stderr
    assert left == []
