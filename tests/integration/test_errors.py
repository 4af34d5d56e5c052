"""`lamina mount` rejects bad input with one clear message and mounts nothing.

Every case runs `lamina mount -o OPTIONS MERGED` in its background form and
expects: a non-zero exit, exactly one non-empty line on stderr, that line
starting with "lamina: " and naming the bad path or option, and no mount
on MERGED afterwards. The message text beyond that is not fixed here.
"""

import errno
import os
import shutil
import stat
import subprocess

import pytest

from conftest import (
    LAMINA,
    force_unmount,
    require_lamina,
    run,
    run_lamina,
)
from helpers import find_mount, shared_libraries


class Layout:
    """Layer dirs for one error case, plus scratch mounts to undo later."""

    def __init__(self, stack):
        self.stack = stack
        self.root = stack.root
        self.lowers = stack.lowers
        self.upper = stack.upper
        self.work = stack.work
        self.merged = stack.merged
        self.mounts = []
        self.loops = []

    def path(self, *parts):
        return os.path.join(self.root, *parts)

    def lowerdir(self):
        return "lowerdir=" + ":".join(self.lowers)

    def options(self, upper=None, work=None, lowerdir=None):
        return ",".join([lowerdir or self.lowerdir(),
                         f"upperdir={upper or self.upper}",
                         f"workdir={work or self.work}"])

    def mount_scratch(self, fstype, name, options=None):
        """Mount an empty fstype (tmpfs, ramfs) at a dir under the root."""
        target = self.path(name)
        os.mkdir(target)
        run(["mount", "-t", fstype, *(["-o", options] if options else []),
             fstype, target])
        self.mounts.append(target)
        return target

    def mount_ext2_without_filetype(self, name):
        """Mount a small ext2 image made without the filetype feature.

        Directory entries on it carry no type, so getdents reports
        DT_UNKNOWN for every entry: a filesystem without d_type.
        """
        image = self.path(name + ".img")
        with open(image, "wb") as f:
            f.truncate(16 << 20)
        run(["mke2fs", "-q", "-t", "ext2", "-O", "^filetype", image])
        device = run(["losetup", "--find", "--show", image]).stdout.strip()
        self.loops.append(device)
        target = self.path(name)
        os.mkdir(target)
        run(["mount", "-t", "ext2", device, target])
        self.mounts.append(target)
        return target

    def cleanup(self):
        problems = []
        for target in reversed(self.mounts):
            problems.extend(force_unmount(target))
        for device in self.loops:
            proc = run(["losetup", "-d", device], check=False)
            if proc.returncode != 0:
                problems.append(f"losetup -d {device}: {proc.stderr}")
        return problems


@pytest.fixture
def layout(lamina_stack):
    require_lamina()
    result = Layout(lamina_stack)
    yield result
    problems = result.cleanup()
    assert not problems, "\n".join(problems)


def expect_rejected(layout, options, names, extra_args=()):
    """Run lamina mount and check the single-line rejection.

    names lists strings of which the message must contain at least one.
    """
    try:
        code, _out, err = run_lamina(
            ["mount", *extra_args, "-o", options, layout.merged], layout.root)
    finally:
        left_mounted = find_mount(layout.merged) is not None
        if left_mounted:
            force_unmount(layout.merged)
    lines = [line for line in err.splitlines() if line.strip()]

    assert code != 0, f"lamina mount succeeded; stderr: {err!r}"
    assert len(lines) == 1, f"expected one stderr line, got: {err!r}"
    assert lines[0].startswith("lamina: "), lines[0]
    assert any(name in lines[0] for name in names), (
        f"message does not name any of {names}: {lines[0]!r}")
    assert not left_mounted, "a mount was left behind"


def case_missing_lower(layout):
    missing = layout.path("no-such-lower")
    lowerdir = f"lowerdir={missing}:{layout.lowers[1]}"
    return layout.options(lowerdir=lowerdir), [missing]


def case_missing_upper(layout):
    missing = layout.path("no-such-upper")
    return layout.options(upper=missing), [missing]


def case_missing_work(layout):
    missing = layout.path("no-such-work")
    return layout.options(work=missing), [missing]


def case_work_other_fs(layout):
    tmpfs = layout.mount_scratch("tmpfs", "tmpfs")
    upper = os.path.join(tmpfs, "upper")
    os.mkdir(upper)
    return layout.options(upper=upper), [layout.work, upper]


def case_upper_in_lower(layout):
    upper = os.path.join(layout.lowers[0], "upper")
    os.mkdir(upper)
    return layout.options(upper=upper), [upper]


def case_work_in_lower(layout):
    work = os.path.join(layout.lowers[1], "work")
    os.mkdir(work)
    return layout.options(work=work), [work]


def case_upper_in_merged(layout):
    upper = os.path.join(layout.merged, "upper")
    os.mkdir(upper)
    return layout.options(upper=upper), [upper, layout.merged]


def case_work_in_merged(layout):
    work = os.path.join(layout.merged, "work")
    os.mkdir(work)
    return layout.options(work=work), [work, layout.merged]


def case_work_in_upper(layout):
    work = os.path.join(layout.upper, "work")
    os.mkdir(work)
    return layout.options(work=work), [work]


def case_upper_in_work(layout):
    upper = os.path.join(layout.work, "upper")
    os.mkdir(upper)
    return layout.options(upper=upper), [upper]


def case_upper_is_work(layout):
    return layout.options(work=layout.upper), [layout.upper]


def case_upper_no_dtype(layout):
    fs = layout.mount_ext2_without_filetype("nodtype")
    upper = os.path.join(fs, "upper")
    work = os.path.join(fs, "work")
    os.mkdir(upper)
    os.mkdir(work)
    return layout.options(upper=upper, work=work), [upper]


def case_upper_no_xattr(layout):
    # ramfs has no xattr handlers at all, not even trusted.*.
    fs = layout.mount_scratch("ramfs", "ramfs")
    upper = os.path.join(fs, "upper")
    work = os.path.join(fs, "work")
    os.mkdir(upper)
    os.mkdir(work)
    return layout.options(upper=upper, work=work), [upper]


def case_unknown_option(layout):
    return layout.options() + ",frobnicate=yes", ["frobnicate"]


def case_unknown_flag_option(layout):
    return layout.options() + ",nosuchflag", ["nosuchflag"]


def case_empty_lowerdir(layout):
    return layout.options(lowerdir="lowerdir="), ["lowerdir"]


def case_empty_layer(layout):
    lowerdir = f"lowerdir={layout.lowers[0]}::"
    return layout.options(lowerdir=lowerdir), ["lowerdir"]


def case_no_lowerdir(layout):
    return f"upperdir={layout.upper},workdir={layout.work}", ["lowerdir"]


def case_upper_without_work(layout):
    return f"{layout.lowerdir()},upperdir={layout.upper}", ["workdir"]


def case_upperdir_no_value(layout):
    return f"{layout.lowerdir()},upperdir,workdir={layout.work}", ["upperdir"]


def case_bad_passthrough_value(layout):
    return layout.options() + ",passthrough=maybe", ["passthrough", "maybe"]


def case_bad_prefetch_value(layout):
    return layout.options() + ",prefetch=maybe", ["prefetch", "maybe"]


def case_unsupported_option(layout):
    # A kernel overlay option that lamina does not implement yet.
    return layout.options() + ",nfs_export=on", ["nfs_export"]


def case_lower_is_file(layout):
    path = layout.path("plainfile")
    with open(path, "w"):
        pass
    lowerdir = f"lowerdir={path}:{layout.lowers[1]}"
    return layout.options(lowerdir=lowerdir), [path]


def case_index_symlink(layout):
    real = layout.path("real-index")
    os.mkdir(real)
    os.makedirs(layout.work, exist_ok=True)
    os.symlink(real, os.path.join(layout.work, "index"))
    return layout.options() + ",index=on", ["index is not a directory"]


CASES = {
    "missing-lower": case_missing_lower,
    "missing-upper": case_missing_upper,
    "missing-work": case_missing_work,
    "lower-is-file": case_lower_is_file,
    "work-other-fs": case_work_other_fs,
    "upper-in-lower": case_upper_in_lower,
    "work-in-lower": case_work_in_lower,
    "upper-in-merged": case_upper_in_merged,
    "work-in-merged": case_work_in_merged,
    "work-in-upper": case_work_in_upper,
    "upper-in-work": case_upper_in_work,
    "upper-is-work": case_upper_is_work,
    "upper-no-dtype": case_upper_no_dtype,
    "upper-no-xattr": case_upper_no_xattr,
    "unknown-option": case_unknown_option,
    "unknown-flag": case_unknown_flag_option,
    "empty-lowerdir": case_empty_lowerdir,
    "empty-layer": case_empty_layer,
    "no-lowerdir": case_no_lowerdir,
    "upper-without-work": case_upper_without_work,
    "upperdir-no-value": case_upperdir_no_value,
    "bad-passthrough-value": case_bad_passthrough_value,
    "bad-prefetch-value": case_bad_prefetch_value,
    "unsupported-option": case_unsupported_option,
    "index-symlink": case_index_symlink,
}


@pytest.mark.parametrize("case", list(CASES))
def test_mount_rejects(layout, case):
    options, names = CASES[case](layout)
    expect_rejected(layout, options, names)


@pytest.mark.parametrize("case", ["missing-upper", "unknown-option"])
def test_foreground_rejects(layout, case):
    """The -f form rejects bad input the same way."""
    options, names = CASES[case](layout)
    expect_rejected(layout, options, names, extra_args=["-f"])


@pytest.mark.parametrize("work_left", [False, True],
                         ids=["first-mount", "remount"])
def test_upper_without_free_inodes(layout, work_left):
    """mount and check name the upper, the workdir and the fix.

    With work_left, workdir/work of an earlier mount is there, so
    recreating it frees and takes the same inode and a later test entry
    fails instead.
    """
    fs = layout.mount_scratch("tmpfs", "full", "nr_inodes=16")
    upper = os.path.join(fs, "upper")
    work = os.path.join(fs, "work")
    os.mkdir(upper)
    os.mkdir(work)
    if work_left:
        os.mkdir(os.path.join(work, "work"))
    for i in range(16):
        try:
            os.mkdir(os.path.join(upper, f"d{i}"))
        except OSError as e:
            assert e.errno == errno.ENOSPC, e
            break
    options = layout.options(upper=upper, work=work)

    code, _out, err = run_lamina(["mount", "-o", options, layout.merged],
                                 layout.root)
    left_mounted = find_mount(layout.merged) is not None
    if left_mounted:
        force_unmount(layout.merged)
    lines = [line for line in err.splitlines() if line.strip()]

    assert code == 32, err
    assert not left_mounted
    assert len(lines) == 1, err
    assert f"workdir {work}:" in lines[0]
    assert f"filesystem of upperdir {upper} has no free inodes" in lines[0]
    assert "delete files there" in lines[0]

    code, _out, err = run_lamina(["check", "-o", options], layout.root)

    assert code == 3, err
    assert f"upperdir {upper} has no free inodes" in err


def test_rejects_missing_mountpoint(layout):
    missing = layout.path("no-such-mountpoint")
    code, _out, err = run_lamina(["mount", "-o", layout.options(), missing],
                                 layout.root)
    lines = [line for line in err.splitlines() if line.strip()]

    assert code != 0
    assert len(lines) == 1, err
    assert lines[0].startswith("lamina: "), lines[0]
    assert missing in lines[0]


def test_rejects_missing_arguments(layout):
    code, _out, err = run_lamina(["mount"], layout.root)

    assert code != 0
    assert err.startswith("lamina: "), err


def test_rejects_missing_command(layout):
    code, out, err = run_lamina([], layout.root)

    assert code == 1
    assert out == ""
    assert err.splitlines() == [
        "lamina: no command given; run lamina --help for the commands "
        "and options"]


@pytest.mark.parametrize("args", [
    ["mount", "-o"],
    ["mount", "/mnt", "--options"],
    ["export", "-o"],
    ["check", "-o"],
    ["diff", "-o"],
    ["reset", "-o"],
    ["commit", "-o"],
    ["squash", "-o"],
], ids="_".join)
def test_option_without_argument(tmp_path, args):
    """The missing argument of an option given last is reported as
    missing, not as an invalid option."""
    code, out, err = run_lamina(args, str(tmp_path))

    assert code == 1
    assert out == ""
    assert len(err.splitlines()) == 1, err
    assert err.startswith("lamina: "), err
    assert f"option '{args[-1]}' requires an argument" in err


def test_mount_helper_option_without_argument(tmp_path):
    helper = tmp_path / "mount.lamina"
    os.symlink(LAMINA, helper)

    code, out, err = run_lamina(["lamina", str(tmp_path), "-o"],
                                str(tmp_path), binary=[str(helper)])

    assert code == 1
    assert out == ""
    assert err.splitlines() == [
        "mount.lamina: option '-o' requires an argument"]


def test_umount_not_mounted(layout):
    """lamina umount of a dir that is not a lamina mount fails, naming it."""
    code, _out, err = run_lamina(["umount", layout.merged], layout.root)
    lines = [line for line in err.splitlines() if line.strip()]

    assert code != 0
    assert len(lines) == 1, err
    assert lines[0].startswith("lamina: "), lines[0]
    assert layout.merged in lines[0]


def build_chroot(layout, fuse_device):
    """Build a chroot with lamina, its libraries, /proc and a fake /dev/fuse.

    fuse_device is "missing" (no /dev/fuse) or "null" (/dev/fuse is the
    null device 1:3, a char device that is not FUSE). Returns the chroot
    dir; its /proc is a scratch mount that layout.cleanup() undoes.
    """
    root = layout.path("chroot")
    for sub in ("dev", "proc", "tmp", "l0", "l1", "u", "w", "merged"):
        os.makedirs(os.path.join(root, sub))
    shutil.copy2(LAMINA, os.path.join(root, "lamina"))
    for lib in shared_libraries(LAMINA):
        dest = os.path.join(root, lib.lstrip("/"))
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        shutil.copy2(lib, dest)
    os.mknod(os.path.join(root, "dev", "null"), stat.S_IFCHR | 0o666,
             os.makedev(1, 3))
    if fuse_device == "null":
        os.mknod(os.path.join(root, "dev", "fuse"), stat.S_IFCHR | 0o666,
                 os.makedev(1, 3))
    proc_dir = os.path.join(root, "proc")
    run(["mount", "-t", "proc", "proc", proc_dir])
    layout.mounts.append(proc_dir)
    return root


@pytest.mark.parametrize("fuse_device", ["missing", "null"])
def test_rejects_unusable_dev_fuse(layout, fuse_device):
    """An absent or non-FUSE /dev/fuse gives one message naming /dev/fuse.

    lamina runs in a chroot whose /dev is a plain dir under the test's temp
    dir, so the real /dev/fuse is never touched.
    """
    root = build_chroot(layout, fuse_device)
    merged = os.path.join(root, "merged")
    options = "lowerdir=/l0:/l1,upperdir=/u,workdir=/w"

    try:
        code, _out, err = run_lamina(
            ["mount", "-o", options, "/merged"], layout.root,
            binary=[shutil.which("chroot"), root, "/lamina"],
            env={"PATH": "/nonexistent"})
    except subprocess.TimeoutExpired:
        force_unmount(merged)
        raise
    left_mounted = find_mount(merged) is not None
    if left_mounted:
        force_unmount(merged)
    lines = [line for line in err.splitlines() if line.strip()]

    assert code != 0
    assert len(lines) == 1, err
    assert lines[0].startswith("lamina: "), lines[0]
    assert "/dev/fuse" in lines[0]
    assert not left_mounted
