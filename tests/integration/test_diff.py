"""lamina diff: the changes an upper layer makes to its lower layers."""

import json
import os
import shutil
import subprocess

from conftest import LAMINA, escape_layer, run_lamina
from helpers import make_whiteout, write_file

# Every kind of change that build_changes makes, in the upper's name order.
EXPECTED_TEXT = [
    "A  added",
    "C  changed",
    "C  chmoded",
    "R  dir2/ -> dir2new/",
    "A  dir2new/inside",
    "D  gone",
    "D  gonedir/",
    "A  newdir/",
    "A  newdir/file",
    "C  opaque/ (replaced)",
    "A  opaque/fresh",
    "C  under",
]

EXPECTED_JSON = [
    {"change": "added", "path": "added", "directory": False,
     "replaced": False},
    {"change": "changed", "path": "changed", "directory": False,
     "replaced": False},
    {"change": "changed", "path": "chmoded", "directory": False,
     "replaced": False},
    {"change": "renamed", "path": "dir2new", "from": "dir2",
     "directory": True, "replaced": False},
    {"change": "added", "path": "dir2new/inside", "directory": False,
     "replaced": False},
    {"change": "deleted", "path": "gone", "directory": False,
     "replaced": False},
    {"change": "deleted", "path": "gonedir", "directory": True,
     "replaced": False},
    {"change": "added", "path": "newdir", "directory": True,
     "replaced": False},
    {"change": "added", "path": "newdir/file", "directory": False,
     "replaced": False},
    {"change": "changed", "path": "opaque", "directory": True,
     "replaced": True},
    {"change": "added", "path": "opaque/fresh", "directory": False,
     "replaced": False},
    {"change": "changed", "path": "under", "directory": False,
     "replaced": False},
]


def build_changes(stack):
    """Fill two lowers, mount, and change the tree through the mount."""
    write_file(stack.lo(0, "changed"), "old", mtime=1000)
    write_file(stack.lo(0, "chmoded"), "same", mode=0o644)
    write_file(stack.lo(0, "gone"), "g")
    write_file(stack.lo(0, "gonedir", "a"), "a")
    write_file(stack.lo(0, "opaque", "old"), "o")
    write_file(stack.lo(0, "dir2", "keep"), "k")
    write_file(stack.lo(0, "readonly"), "r")
    write_file(stack.lo(1, "under"), "lower layer 2")
    write_file(stack.lo(1, "kept", "file"), "kept")

    extra = ["redirect_dir=on"] if stack.impl == "kernel" else []
    stack.mount(extra=extra)

    write_file(stack.m("added"), "new")
    with open(stack.m("changed"), "a") as f:
        f.write("er")
    os.chmod(stack.m("chmoded"), 0o600)
    os.unlink(stack.m("gone"))
    shutil.rmtree(stack.m("gonedir"))
    shutil.rmtree(stack.m("opaque"))
    os.mkdir(stack.m("opaque"))
    write_file(stack.m("opaque", "fresh"), "f")
    os.rename(stack.m("dir2"), stack.m("dir2new"))
    write_file(stack.m("dir2new", "inside"), "i")
    os.mkdir(stack.m("newdir"))
    write_file(stack.m("newdir", "file"), "n")
    with open(stack.m("under"), "a") as f:
        f.write("!")

    # Opened for writing but left as it was: copied up, yet no change.
    with open(stack.m("readonly"), "r+"):
        pass
    # Created and deleted again: nothing remains to report.
    write_file(stack.m("kept", "temp"), "t")
    os.unlink(stack.m("kept", "temp"))


def offline_args(stack):
    lowers = ":".join(escape_layer(p) for p in stack.lowers)
    return [stack.upper, "-o", f"lowerdir={lowers}"]


def test_diff_live_mount_text(stack):
    """diff MERGED lists each change exactly, in name order."""
    build_changes(stack)

    code, out, err = run_lamina(["diff", stack.merged], stack.root)

    assert code == 0, err
    assert out.splitlines() == EXPECTED_TEXT


def test_diff_live_mount_json(stack):
    """diff --json MERGED gives the same changes as JSON."""
    build_changes(stack)

    code, out, err = run_lamina(["diff", "--json", stack.merged], stack.root)

    assert code == 0, err
    assert json.loads(out)["changes"] == EXPECTED_JSON


def test_diff_upperdir_offline(stack):
    """After unmounting, UPPERDIR -o lowerdir= gives the same output."""
    build_changes(stack)
    stack.unmount()

    code, out, err = run_lamina(["diff", *offline_args(stack)], stack.root)

    assert code == 0, err
    assert out.splitlines() == EXPECTED_TEXT


def test_diff_whiteout_hiding_nothing(lamina_stack):
    """A whiteout over no visible lower entry is not a deletion."""
    stack = lamina_stack
    write_file(stack.lo(1, "hidden"), "h")
    make_whiteout(stack.lo(0, "hidden"))
    make_whiteout(stack.u("hidden"))
    make_whiteout(stack.u("never"))
    write_file(stack.lo(1, "shadow", "f"), "f")
    os.mkdir(stack.lo(0, "shadow"))
    os.setxattr(stack.lo(0, "shadow"), "trusted.overlay.opaque", b"y")
    make_whiteout(stack.u("shadow"))
    os.mkdir(stack.u("shadow2"))

    code, out, err = run_lamina(["diff", *offline_args(stack)], stack.root)

    assert code == 0, err
    assert out.splitlines() == ["D  shadow/", "A  shadow2/"]


def test_diff_no_changes(stack):
    """A mount with nothing changed gives empty output and exit 0."""
    write_file(stack.lo(0, "file"), "x")
    stack.mount()

    code, out, err = run_lamina(["diff", "--json", stack.merged], stack.root)

    assert code == 0, err
    assert json.loads(out) == {"changes": []}


def test_diff_read_only_mount(stack):
    """A mount without an upper layer has no changes: exit 0."""
    write_file(stack.lo(0, "file"), "x")
    stack.mount(upper=False)

    code, out, err = run_lamina(["diff", "--json", stack.merged], stack.root)
    assert code == 0, err
    assert json.loads(out) == {"changes": []}
    code, out, err = run_lamina(["diff", stack.merged], stack.root)
    assert code == 0, err
    assert out == ""


def test_diff_bad_input(lamina_stack):
    """Missing paths and wrong options give one message and exit 1."""
    stack = lamina_stack
    missing = os.path.join(stack.root, "missing")
    cases = [
        [],
        [stack.merged],
        [missing, "-o", f"lowerdir={stack.lowers[0]}"],
        [stack.upper, "-o", f"lowerdir={missing}"],
        [stack.upper, "-o", "bogus=1"],
        ["--bogus", stack.merged],
        [stack.upper, stack.merged, "-o", f"lowerdir={stack.lowers[0]}"],
    ]
    for args in cases:
        code, out, err = run_lamina(["diff", *args], stack.root)
        assert code == 1, args
        assert out == "", args
        assert err.startswith("lamina: diff: "), args
        assert len(err.splitlines()) == 1, (args, err)


def test_diff_follows_lower_redirects(make_stack):
    """A directory moved in a lower layer is compared with its old place.

    The first mount moves directories in an upper that then becomes a
    lower layer over base, so they carry redirects to their old places.
    """
    first = make_stack(nlower=1)
    write_file(first.lo(0, "old", "a"), "a")
    write_file(first.lo(0, "old", "sub", "f"), "f")
    write_file(first.lo(0, "rel", "deep", "x"), "x")
    write_file(first.lo(0, "far", "z", "q"), "q")
    extra = ["redirect_dir=on"] if first.impl == "kernel" else []
    first.mount(extra=extra)
    os.rename(first.m("old"), first.m("new"))
    os.rename(first.m("rel", "deep"), first.m("rel", "moved"))
    # Into another parent: the redirect is an absolute path.
    os.rename(first.m("far", "z"), first.m("rel", "z2"))
    first.unmount()
    second = make_stack(nlower=0)
    second.mount(extra=extra, lowers=[first.upper, first.lowers[0]])
    shutil.rmtree(second.m("new", "sub"))
    with open(second.m("new", "a"), "a") as f:
        f.write("changed\n")
    write_file(second.m("rel", "moved", "x"), "y")
    write_file(second.m("rel", "z2", "q"), "r")

    code, out, err = run_lamina(["diff", second.merged], second.root)

    assert code == 0, err
    assert out.splitlines() == ["C  new/a", "D  new/sub/", "C  rel/moved/x",
                                "C  rel/z2/q"]


def test_diff_json_names_not_utf8(lamina_stack):
    """Names with bytes that are not UTF-8 give valid JSON, from which
    os.fsencode() gives back the bytes; valid UTF-8 stays as it is."""
    stack = lamina_stack
    names = [b"bad\xff\xfe", "caf\u00e9".encode(), b"cut\xc3",
             b"sur\xed\xa0\x80"]
    for name in names:
        write_file(os.fsdecode(os.path.join(os.fsencode(stack.upper), name)),
                   "x")

    proc = subprocess.run([LAMINA, "diff", "--json", *offline_args(stack)],
                          capture_output=True, check=False)

    assert proc.returncode == 0, proc.stderr
    text = proc.stdout.decode("utf-8")
    paths = sorted(os.fsencode(change["path"])
                   for change in json.loads(text)["changes"])
    assert paths == sorted(names)
    assert "caf\u00e9" in text
