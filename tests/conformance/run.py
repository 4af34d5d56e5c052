#!/usr/bin/python3
"""Probe the POSIX behaviours where overlay filesystems differ from a plain
filesystem, on lamina, the kernel's overlayfs and fuse-overlayfs.

Each probe builds fresh layers in a temporary directory under /tmp, mounts
them with every implementation (and with the options named in its variants),
acts on the merged tree, and reports what it observed in a few words. The
results are printed as the Markdown tables of docs/conformance.md.

Run as root from the repository root, after `make`:

    tests/conformance/run.py              # every probe
    tests/conformance/run.py --list       # probe names
    tests/conformance/run.py --only rename_lower,hardlink

LAMINA overrides the lamina binary (default build/lamina). The binary is
copied into the temporary directory first, so a rebuild during the run
cannot mix two versions.
"""

import argparse
import array
import ctypes
import errno
import fcntl
import json
import re
import mmap
import os
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
KINDS = ("lamina", "kernel", "fuse-overlayfs")
COLUMN_TITLES = {"lamina": "lamina", "kernel": "kernel overlayfs",
                 "fuse-overlayfs": "fuse-overlayfs"}

# Upper bounds on waits, in seconds. A slow machine only waits longer.
MOUNT_TIMEOUT = 15.0
EXIT_TIMEOUT = 15.0
# A probe variant still running after this many seconds has its FUSE
# daemons killed, so that a hung request fails instead of blocking the run.
PROBE_TIMEOUT = 60.0

OLD = b"old data"
NEW = b"NEW DATA"
MIB = 1 << 20


class MountFailed(Exception):
    """A mount command failed; the message is the reason it printed."""


LIBC = ctypes.CDLL(None, use_errno=True)
AT_FDCWD = -100
AT_SYMLINK_FOLLOW = 0x400


def check_libc(ret):
    """Raise OSError from errno when a libc call returned -1."""
    if ret == -1:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return ret


def renameat2(old, new, flags):
    check_libc(LIBC.renameat2(AT_FDCWD, old.encode(), AT_FDCWD, new.encode(), flags))


def linkat_follow(old, new):
    """linkat(2) with AT_SYMLINK_FOLLOW, which os.link does not pass."""
    check_libc(LIBC.linkat(AT_FDCWD, old.encode(), AT_FDCWD, new.encode(),
                           AT_SYMLINK_FOLLOW))


def errname(exc):
    """Return the symbolic errno name of an OSError, such as EXDEV."""
    return errno.errorcode.get(exc.errno, str(exc.errno))


def attempt(func, *args):
    """Call func(*args); return "ok", or the errno name it raised."""
    try:
        func(*args)
    except OSError as exc:
        return errname(exc)
    return "ok"


def write_file(path, data, mode=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    if mode is not None:
        os.chmod(path, mode)


def read_file(path):
    with open(path, "rb") as f:
        return f.read()


def append_file(path, data):
    with open(path, "ab") as f:
        f.write(data)


def which_data(data):
    """Name the probe data that a read returned."""
    if data.startswith(NEW):
        return "new data"
    if data.startswith(OLD):
        return "old data"
    return repr(data[:16])


def raw_xattrs(path):
    """Return {name: value} of a file's extended attributes, not following symlinks."""
    result = {}
    for name in os.listxattr(path, follow_symlinks=False):
        result[name] = os.getxattr(path, name, follow_symlinks=False)
    return result


def overlay_xattrs(path):
    """Return the names of the overlay.* xattrs in trusted.* or user.*."""
    return sorted(n for n in os.listxattr(path, follow_symlinks=False)
                  if ".overlay." in n or "fuseoverlayfs" in n)


def describe_entry(path):
    """Describe an upper-layer entry: its type and overlay xattrs."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return "no entry"
    if stat.S_ISCHR(st.st_mode):
        kind = f"char {os.major(st.st_rdev)}/{os.minor(st.st_rdev)}"
    elif stat.S_ISDIR(st.st_mode):
        children = sorted(os.listdir(path))
        kind = "directory" + (" holding " + ", ".join(children) if children else "")
    elif stat.S_ISREG(st.st_mode):
        kind = f"regular file, {st.st_size} bytes"
    else:
        kind = f"mode {st.st_mode:o}"
    xattrs = raw_xattrs(path)
    if xattrs:
        kind += ", " + ", ".join(f"{n}={v.decode(errors='replace')!r}"
                                 for n, v in sorted(xattrs.items()))
    return kind


def snapshot(root):
    """Return the merged tree as a set of "path/" and "path=content" strings."""
    entries = set()
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        for name in dirnames:
            entries.add(os.path.normpath(os.path.join(rel, name)) + "/")
        for name in filenames:
            full = os.path.join(dirpath, name)
            relname = os.path.normpath(os.path.join(rel, name))
            if os.path.isfile(full) and not os.path.islink(full):
                entries.add(f"{relname}={read_file(full).decode(errors='replace')}")
            else:
                entries.add(relname + "@")
    return entries


def describe_diff(expected, got):
    """Say in a few words how tree snapshot `got` differs from `expected`."""
    def path_of(entry):
        return entry.split("=", 1)[0]

    extra = sorted(path_of(e) for e in got - expected)
    missing = sorted(path_of(e) for e in expected - got)
    parts = []
    if extra:
        parts.append("also shows " + ", ".join(extra[:3]))
    if missing:
        parts.append("lacks " + ", ".join(missing[:3]))
    return "; ".join(parts) if parts else "same"


def mounted_at(path):
    """Return the filesystem type mounted at path, or None."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            mount_point = fields[4].encode().decode("unicode_escape")
            if mount_point == path:
                return fields[sep + 1]
    return None


def kernel_log_lines():
    proc = subprocess.run(["dmesg"], capture_output=True, text=True)
    return proc.stdout.splitlines()


def first_line(text):
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


class Mounter:
    """Mounts and unmounts with each implementation and tracks what is mounted.

    FUSE daemons run in the foreground (-f) as children of this process, so
    that an unmount can wait for the daemon to finish, and so that only
    processes this script started are ever signalled.
    """

    def __init__(self, lamina):
        self.lamina = lamina
        self.active = {}  # merged path -> (kind, Popen or None, log path)
        self.lock = threading.Lock()

    def mount(self, kind, lowers, upper, work, merged, options=()):
        opts = ["lowerdir=" + ":".join(lowers)]
        if upper is not None:
            opts += ["upperdir=" + upper, "workdir=" + work]
        opts += list(options)
        optstr = ",".join(opts)
        if kind == "kernel":
            self._mount_kernel(optstr, merged)
        elif kind == "lamina":
            self._mount_fuse(kind, [self.lamina, "mount", "-f", "-o", optstr, merged],
                             merged)
        elif kind == "fuse-overlayfs":
            self._mount_fuse(kind, ["fuse-overlayfs", "-f", "-o", optstr, merged],
                             merged)
        else:
            raise ValueError(f"unknown implementation {kind!r}")

    def _mount_kernel(self, optstr, merged):
        before = len(kernel_log_lines())
        proc = subprocess.run(["mount", "-t", "overlay", "overlay", "-o", optstr,
                               merged], capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=MOUNT_TIMEOUT)
        if proc.returncode != 0:
            new_lines = [ln for ln in kernel_log_lines()[before:] if "overlay" in ln]
            reason = new_lines[-1].split("] ", 1)[-1] if new_lines else \
                first_line(proc.stderr)
            raise MountFailed(reason)
        with self.lock:
            self.active[merged] = ("kernel", None, None)

    def _mount_fuse(self, kind, argv, merged):
        log_path = merged + f".{kind}.log"
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=log)
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while True:
            if mounted_at(merged) is not None:
                break
            if proc.poll() is not None:
                reason = first_line(read_file(log_path).decode(errors="replace"))
                raise MountFailed(reason or f"exit status {proc.returncode}")
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                raise MountFailed("mount timed out")
            time.sleep(0.01)
        with self.lock:
            self.active[merged] = (kind, proc, log_path)

    def umount(self, merged):
        with self.lock:
            kind, proc, _ = self.active.pop(merged)
        if kind == "lamina":
            argv = [self.lamina, "umount", merged]
        elif kind == "fuse-overlayfs":
            argv = ["fusermount3", "-u", merged]
        else:
            argv = ["umount", merged]
        done = subprocess.run(argv, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=EXIT_TIMEOUT)
        if done.returncode != 0:
            # Last resort: detach lazily so that the run can go on.
            subprocess.run(["umount", "-l", merged], capture_output=True)
        if proc is not None:
            try:
                proc.wait(timeout=EXIT_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if done.returncode != 0:
            raise MountFailed(f"unmount failed: {first_line(done.stderr)}")

    def kill_daemons(self):
        """Kill the FUSE daemons this script started, so hung requests fail."""
        with self.lock:
            procs = [p for _, p, _ in self.active.values() if p is not None]
        for proc in procs:
            if proc.poll() is None:
                proc.kill()

    def umount_all(self):
        for merged in list(self.active):
            try:
                self.umount(merged)
            except (MountFailed, subprocess.TimeoutExpired):
                pass


class Stack:
    """Layer directories for one probe variant: lowers, upper, work, merged."""

    def __init__(self, ctx, nlowers=1):
        self.ctx = ctx
        self.dir = tempfile.mkdtemp(dir=ctx.tmp, prefix="stack.")
        self.lowers = []
        for i in range(nlowers):
            path = os.path.join(self.dir, f"lower{i}")
            os.mkdir(path)
            self.lowers.append(path)
        self.lower = self.lowers[0]
        self.upper = os.path.join(self.dir, "upper")
        self.work = os.path.join(self.dir, "work")
        self.merged = os.path.join(self.dir, "merged")
        self.spare_works = 0
        for path in (self.upper, self.work, self.merged):
            os.mkdir(path)

    def fresh_work(self):
        """Return a new empty work directory beside the upper directory."""
        self.spare_works += 1
        path = os.path.join(self.dir, f"work{self.spare_works}")
        os.mkdir(path)
        return path

    def mount(self, kind=None, options=None, upper=True, work=None, lowers=None):
        kind = kind or self.ctx.kind
        if options is None:
            options = self.ctx.options
        self.ctx.mounter.mount(kind, lowers or self.lowers,
                               self.upper if upper else None,
                               work or self.work, self.merged, options)

    def umount(self):
        self.ctx.mounter.umount(self.merged)

    def m(self, *parts):
        return os.path.join(self.merged, *parts)

    def u(self, *parts):
        return os.path.join(self.upper, *parts)

    def lo(self, *parts):
        return os.path.join(self.lower, *parts)


class Context:
    """What a probe variant runs with: the implementation and its options."""

    def __init__(self, tmp, mounter, kind, options):
        self.tmp = tmp
        self.mounter = mounter
        self.kind = kind
        self.options = list(options)

    def stack(self, nlowers=1):
        return Stack(self, nlowers)


# ---------------------------------------------------------------------------
# Probes. Each takes a Context and returns {row key: observed result}.

PROBES = []


def probe(name, rows, variants=None):
    """Register a probe with its table rows (key, group, title) and variants.

    variants maps an implementation to lists of extra mount options; each
    list is one run. The default is one run with default options.
    """
    def register(func):
        PROBES.append({"name": name, "rows": rows, "func": func,
                       "variants": variants or {}})
        return func
    return register


def read_back_elsewhere(s, expected):
    """Mount s's upper with the same and the other implementations; compare."""
    parts = []
    s.mount()
    parts.append("after remount: " + describe_diff(expected, snapshot(s.merged)))
    s.umount()
    for kind in KINDS:
        if kind == s.ctx.kind:
            continue
        try:
            s.mount(kind=kind, options=[], work=s.fresh_work())
        except MountFailed as exc:
            parts.append(f"{kind}: mount failed ({exc})")
            continue
        parts.append(f"{kind}: " + describe_diff(expected, snapshot(s.merged)))
        s.umount()
    return "; ".join(parts)


def rename_dir(ctx, merged_dir):
    s = ctx.stack()
    write_file(s.lo("d", "f"), b"f")
    write_file(s.lo("d", "sub", "g"), b"g")
    if merged_dir:
        write_file(s.u("d", "u"), b"u")
    s.mount()
    try:
        os.rename(s.m("d"), s.m("e"))
    except OSError as exc:
        s.umount()
        return errname(exc)
    expected = snapshot(s.merged)
    s.umount()
    redirect = os.getxattr(s.u("e"), "trusted.overlay.redirect") \
        if "trusted.overlay.redirect" in os.listxattr(s.u("e")) else None
    head = "works"
    if redirect is not None:
        head += f" (redirect {redirect.decode()!r})"
    return head + "; " + read_back_elsewhere(s, expected)


RENAME_VARIANTS = {"kernel": [[], ["redirect_dir=on"]],
                   "lamina": [[], ["redirect_dir=off"]]}


@probe("rename_lower", [("rename_lower", "Renames",
                         "rename(2) of a lower directory d to e; the tree after "
                         "remount and when the other two mount the upper")],
       RENAME_VARIANTS)
def probe_rename_lower(ctx):
    return {"rename_lower": rename_dir(ctx, merged_dir=False)}


@probe("rename_merged", [("rename_merged", "Renames",
                          "rename(2) of a merged directory (in upper and lower)")],
       RENAME_VARIANTS)
def probe_rename_merged(ctx):
    return {"rename_merged": rename_dir(ctx, merged_dir=True)}


@probe("rename2", [("rename_exchange", "Renames",
                    "renameat2 RENAME_EXCHANGE of two lower files"),
                   ("rename_noreplace", "Renames",
                    "renameat2 RENAME_NOREPLACE onto an existing lower file")])
def probe_rename2(ctx):
    rename_noreplace, rename_exchange = 1, 2
    s = ctx.stack()
    write_file(s.lo("a"), b"a")
    write_file(s.lo("b"), b"b")
    s.mount()
    result = attempt(renameat2, s.m("a"), s.m("b"), rename_exchange)
    if result == "ok":
        swapped = read_file(s.m("a")) == b"b" and read_file(s.m("b")) == b"a"
        result = "swaps the files" if swapped else "ok but contents not swapped"
    noreplace = attempt(renameat2, s.m("a"), s.m("b"), rename_noreplace)
    s.umount()
    return {"rename_exchange": result, "rename_noreplace": noreplace}


@probe("hardlink", [("hardlink", "Hard links",
                     "Lower file with two names a and b: st_nlink and st_ino, "
                     "then after writing to a (copy-up)")],
       {"kernel": [[], ["index=on"]], "lamina": [[], ["index=off"]]})
def probe_hardlink(ctx):
    s = ctx.stack()
    write_file(s.lo("a"), OLD)
    os.link(s.lo("a"), s.lo("b"))
    s.mount()

    def names_state():
        sa, sb = os.lstat(s.m("a")), os.lstat(s.m("b"))
        same = "same st_ino" if sa.st_ino == sb.st_ino else "different st_ino"
        return f"nlink {sa.st_nlink}/{sb.st_nlink}, {same}"

    before = names_state()
    with open(s.m("a"), "r+b") as f:
        f.write(NEW)
    after = names_state()
    b_data = which_data(read_file(s.m("b")))
    s.umount()
    s.mount()
    b_remount = which_data(read_file(s.m("b")))
    s.umount()
    return {"hardlink": f"before: {before}; after: {after}, b reads {b_data} "
                        f"({b_remount} after remount)"}


@probe("hardlink_symlink", [("hardlink_symlink", "Hard links",
                             "Lower symlink with two names s and t (one inode): "
                             "lchown(2) of s, then the owner and st_ino of t")],
       {"kernel": [[], ["index=on"]], "lamina": [[], ["index=off"]]})
def probe_hardlink_symlink(ctx):
    s = ctx.stack()
    os.symlink("target", s.lo("s"))
    os.link(s.lo("s"), s.lo("t"), follow_symlinks=False)
    s.mount()
    os.chown(s.m("s"), 1000, 1000, follow_symlinks=False)
    ls, lt = os.lstat(s.m("s")), os.lstat(s.m("t"))
    s.umount()
    owner = "changed" if (lt.st_uid, lt.st_gid) == (1000, 1000) else "old"
    same = "same st_ino" if ls.st_ino == lt.st_ino else "different st_ino"
    return {"hardlink_symlink": f"t shows the {owner} owner, {same}, "
                                f"nlink {ls.st_nlink}/{lt.st_nlink}"}


@probe("link_lower", [("link_lower", "Hard links",
                       "link(2) to a lower file, then st_nlink of both names")])
def probe_link_lower(ctx):
    s = ctx.stack()
    write_file(s.lo("a"), OLD)
    s.mount()
    result = attempt(os.link, s.m("a"), s.m("b"))
    if result == "ok":
        sa, sb = os.lstat(s.m("a")), os.lstat(s.m("b"))
        same = "same" if sa.st_ino == sb.st_ino else "different"
        result = f"works: nlink {sa.st_nlink}/{sb.st_nlink}, {same} st_ino"
    s.umount()
    return {"link_lower": result}


def dino_mismatches(directory):
    """Return the names whose readdir d_ino differs from their lstat st_ino."""
    bad = []
    with os.scandir(directory) as it:
        for entry in it:
            try:
                if entry.inode() != os.lstat(entry.path).st_ino:
                    bad.append(entry.name)
            except FileNotFoundError:
                bad.append(entry.name + " (listed, but lstat gives ENOENT)")
    return sorted(bad)


@probe("ino_samefs", [
    ("ino_copyup", "Inode numbers",
     "st_ino of a lower file and a lower directory across copy-up (all layers on one fs)"),
    ("ino_remount", "Inode numbers",
     "st_ino across unmount and mount (lower, copied-up and upper entries)"),
    ("ino_source", "Inode numbers",
     "st_ino compared with the inode number in the layer"),
    ("st_dev", "Inode numbers",
     "st_dev of the entries in the merged tree"),
    ("d_ino", "Inode numbers",
     "readdir d_ino equals st_ino (root and a merged subdirectory)"),
])
def probe_ino_samefs(ctx):
    s = ctx.stack()
    write_file(s.lo("f"), OLD)
    write_file(s.lo("g"), OLD)
    write_file(s.lo("d", "x"), OLD)
    write_file(s.u("u"), OLD)
    names = ("f", "g", "d", "u")
    s.mount()
    before = {n: os.lstat(s.m(n)).st_ino for n in names}
    raw = {"f": os.lstat(s.lo("f")).st_ino, "g": os.lstat(s.lo("g")).st_ino,
           "d": os.lstat(s.lo("d")).st_ino, "u": os.lstat(s.u("u")).st_ino}
    devs = {os.lstat(s.m(n)).st_dev for n in names + ("d/x",)}
    devs.add(os.stat(s.merged).st_dev)
    append_file(s.m("f"), NEW)
    write_file(s.m("d", "new"), NEW)
    after = {n: os.lstat(s.m(n)).st_ino for n in names}
    bad = dino_mismatches(s.merged) + ["d/" + n for n in dino_mismatches(s.m("d"))]
    s.umount()
    s.mount()
    remount = {n: os.lstat(s.m(n)).st_ino for n in names}
    s.umount()

    changed = [n for n in ("f", "d") if before[n] != after[n]]
    copyup = "constant" if not changed else "changes for " + ", ".join(changed)
    changed = [n for n in names if after[n] != remount[n]]
    remount_text = "constant" if not changed else "changes for " + ", ".join(changed)
    differs = [n for n in names if before[n] != raw[n]]
    source = "equals the layer's inode number" if not differs else \
        "differs from the layer's for " + ", ".join(differs)
    dev = "one st_dev, the mount's" if len(devs) == 1 else f"{len(devs)} st_dev values"
    dino = "all equal" if not bad else "differs for " + ", ".join(bad)
    return {"ino_copyup": copyup, "ino_remount": remount_text,
            "ino_source": source, "st_dev": dev, "d_ino": dino}


@probe("ino_multifs", [
    ("ino_unique", "Inode numbers",
     "Two lowers on two tmpfs instances whose inode numbers collide, upper on "
     "ext4: (st_dev, st_ino) pairs, st_dev, d_ino, st_ino across copy-up and remount")],
       {"lamina": [[], ["xino=off"]], "kernel": [[], ["xino=on"]]})
def probe_ino_multifs(ctx):
    s = ctx.stack(nlowers=2)
    mounted = []
    try:
        for lower in s.lowers:
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", lower],
                           check=True)
            mounted.append(lower)

        # Fresh tmpfs instances number inodes alike, so a0 and b0 collide.
        for i in range(3):
            write_file(os.path.join(s.lowers[0], f"a{i}"), OLD)
            write_file(os.path.join(s.lowers[1], f"b{i}"), OLD)
        collide = os.lstat(os.path.join(s.lowers[0], "a0")).st_ino == \
            os.lstat(os.path.join(s.lowers[1], "b0")).st_ino
        write_file(s.u("u"), OLD)
        names = ["a0", "a1", "a2", "b0", "b1", "b2", "u"]

        s.mount()
        stats = {n: os.lstat(s.m(n)) for n in names}
        root = os.stat(s.merged)
        ids = [(st.st_dev, st.st_ino) for st in stats.values()]
        ids.append((root.st_dev, root.st_ino))
        duplicates = len(ids) - len(set(ids))
        devs = {i[0] for i in ids}
        bad = dino_mismatches(s.merged)

        append_file(s.m("a0"), NEW)
        ino_copied = os.lstat(s.m("a0")).st_ino
        s.umount()
        s.mount()
        ino_remount = {n: os.lstat(s.m(n)).st_ino for n in names}
        s.umount()
    finally:
        # The overlay sits on the tmpfs mounts, so it goes first.
        ctx.mounter.umount_all()
        for lower in mounted:
            subprocess.run(["umount", lower], capture_output=True)

    parts = ["unique" if not duplicates else f"{duplicates} duplicate (st_dev, st_ino)"]
    parts.append("one st_dev" if len(devs) == 1 else f"{len(devs)} st_dev values")
    parts.append("d_ino == st_ino" if not bad else "d_ino differs for " + ", ".join(bad))
    parts.append("copy-up: " + ("constant" if ino_copied == stats["a0"].st_ino
                                else "changes"))
    moved = [n for n in names if n != "a0" and ino_remount[n] != stats[n].st_ino]
    if ino_remount["a0"] != ino_copied:
        moved.insert(0, "a0")
    parts.append("remount: " + ("constant" if not moved else
                                "changes for " + ", ".join(moved)))
    if not collide:
        parts.append("(NOTE: the tmpfs inode numbers did not collide)")
    return {"ino_unique": ", ".join(parts)}


@probe("dir_nlink", [("dir_nlink", "Directories",
                      "st_nlink of directories with 3 subdirectories (plain fs: 5)")])
def probe_dir_nlink(ctx):
    s = ctx.stack()
    for sub in ("s1", "s2", "s3"):
        os.makedirs(s.lo("lower_only", sub))
        os.makedirs(s.u("upper_only", sub))
    os.makedirs(s.lo("merged", "s1"))
    os.makedirs(s.lo("merged", "s2"))
    os.makedirs(s.u("merged", "s3"))
    s.mount()
    counts = {n: os.lstat(s.m(n)).st_nlink for n in ("merged", "lower_only", "upper_only")}
    s.umount()
    return {"dir_nlink": ", ".join(f"{n} {c}" for n, c in counts.items())}


@probe("readdir_dup", [("readdir_offsets", "Directories",
                        "readdir of a merged directory with shadowed names: "
                        "duplicates, . and .., order across two listings")])
def probe_readdir(ctx):
    s = ctx.stack()
    for i in range(40):
        write_file(s.lo("d", f"l{i:02}"), b"x")
        write_file(s.u("d", f"u{i:02}"), b"x")
    for i in range(10):
        write_file(s.u("d", f"l{i:02}"), b"y")  # shadows the lower names
    s.mount()
    names = subprocess.run(["ls", "-f", s.m("d")], capture_output=True,
                           text=True).stdout.split()
    dup = len(names) - len(set(names))
    dots = "." in names and ".." in names
    again = subprocess.run(["ls", "-f", s.m("d")], capture_output=True,
                           text=True).stdout.split()
    s.umount()
    parts = [f"{len(names)} entries" + (f", {dup} duplicates" if dup else "")]
    parts.append(". and .. listed" if dots else ". or .. missing")
    parts.append("stable order" if names == again else "order changes between reads")
    return {"readdir_offsets": ", ".join(parts)}


@probe("atime", [("atime", "Data and open files",
                  "Reading a lower file (atime older than mtime, relatime): "
                  "atime in the merged tree and on the lower file")],
       {"lamina": [[], ["passthrough=off"]]})
def probe_atime(ctx):
    s = ctx.stack()
    write_file(s.lo("f"), OLD)
    os.utime(s.lo("f"), (946684800, 978307200))  # atime 2000, mtime 2001
    s.mount()
    read_file(s.m("f"))
    merged_atime = os.lstat(s.m("f")).st_atime
    lower_atime = os.lstat(s.lo("f")).st_atime
    copied = os.path.lexists(s.u("f"))
    s.umount()
    s.mount()
    remount_atime = os.lstat(s.m("f")).st_atime
    s.umount()

    def updated(t):
        return "updated" if t > 946684800 else "unchanged"

    text = (f"merged: {updated(merged_atime)} ({updated(remount_atime)} after "
            f"remount); lower file: {updated(lower_atime)}")
    if copied:
        text += "; copied up"
    return {"atime": text}


@probe("open_fd", [("open_fd", "Data and open files",
                    "O_RDONLY fd on a lower file, then another process writes "
                    "the file (copy-up): what the fd reads")],
       {"lamina": [[], ["passthrough=off"]]})
def probe_open_fd(ctx):
    results = []
    for primed in (False, True):
        s = ctx.stack()
        write_file(s.lo("f"), OLD)
        s.mount()
        fd = os.open(s.m("f"), os.O_RDONLY)
        if primed:
            os.pread(fd, 64, 0)
        subprocess.run([sys.executable, "-c",
                        "import sys; f = open(sys.argv[1], 'r+b'); "
                        "f.write(sys.argv[2].encode()); f.close()",
                        s.m("f"), NEW.decode()], check=True)
        seen = which_data(os.pread(fd, 64, 0))
        os.close(fd)
        fresh = which_data(read_file(s.m("f")))
        s.umount()
        label = "fd already read" if primed else "fd not yet read"
        results.append(f"{label}: {seen}")
    return {"open_fd": "; ".join(results) + f"; a new open: {fresh}"}


@probe("mmap", [("mmap_shared", "Data and open files",
                 "MAP_SHARED mapping of a lower file opened O_RDONLY, then "
                 "the file is written through another fd")],
       {"lamina": [[], ["passthrough=off"]]})
def probe_mmap(ctx):
    s = ctx.stack()
    write_file(s.lo("f"), OLD + b"\0" * (4096 - len(OLD)))
    s.mount()
    fd = os.open(s.m("f"), os.O_RDONLY)
    mapping = mmap.mmap(fd, 4096, mmap.MAP_SHARED, mmap.PROT_READ)
    mapping[:8]
    wfd = os.open(s.m("f"), os.O_RDWR)
    os.pwrite(wfd, NEW, 0)
    os.close(wfd)
    seen = which_data(mapping[:16])
    fd_seen = which_data(os.pread(fd, 16, 0))
    mapping.close()
    os.close(fd)
    s.umount()
    return {"mmap_shared": f"mapping: {seen}; read(2) on the same fd: {fd_seen}"}


@probe("etxtbsy", [("etxtbsy", "Data and open files",
                    "While a lower executable runs: open(O_WRONLY) and truncate(2)")],
       {"lamina": [[], ["passthrough=off"]]})
def probe_etxtbsy(ctx):
    s = ctx.stack()
    for name in ("prog1", "prog2"):
        shutil.copy("/bin/sleep", s.lo(name))
    s.mount()
    procs = [subprocess.Popen([s.m(name), "30"]) for name in ("prog1", "prog2")]
    try:
        for proc in procs:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    if os.readlink(f"/proc/{proc.pid}/exe").startswith(s.merged):
                        break
                except OSError:
                    pass
                time.sleep(0.01)

        def open_write(path):
            os.close(os.open(path, os.O_WRONLY))

        opened = attempt(open_write, s.m("prog1"))
        truncated = attempt(os.truncate, s.m("prog2"), 0)
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
    s.umount()
    return {"etxtbsy": f"open: {opened}; truncate: {truncated}"}


def data_copy_text(path, size):
    st = os.lstat(path)
    used = st.st_blocks * 512
    marks = [n for n in overlay_xattrs(path) if "metacopy" in n]
    if used >= size:
        return f"copies the data ({used // 1024} KiB allocated)"
    text = f"metadata only (size {st.st_size}, {used // 1024} KiB allocated"
    return text + (", " + ", ".join(marks) if marks else "") + ")"


@probe("chmod_copyup", [("chmod_copyup", "Copy-up",
                         "chmod(2) and chown(2) of a 1 MiB lower file: "
                         "what the upper file holds")],
       {"kernel": [[], ["metacopy=on"]], "lamina": [[], ["metacopy=on"]]})
def probe_chmod(ctx):
    s = ctx.stack()
    data = bytes(range(256)) * (MIB // 256)
    write_file(s.lo("f"), data)
    write_file(s.lo("g"), data)
    s.mount()
    os.chmod(s.m("f"), 0o600)
    os.chown(s.m("g"), 1000, 1000)
    intact = read_file(s.m("f")) == data and read_file(s.m("g")) == data
    s.umount()
    text = (f"chmod: {data_copy_text(s.u('f'), MIB)}; "
            f"chown: {data_copy_text(s.u('g'), MIB)}")
    if not intact:
        text += "; merged data changed"
    return {"chmod_copyup": text}


@probe("sparse_copyup", [("sparse_copyup", "Copy-up",
                          "Copy-up of a 64 MiB sparse lower file with 8 KiB of data")])
def probe_sparse(ctx):
    s = ctx.stack()
    with open(s.lo("f"), "wb") as f:
        f.write(b"x" * 4096)
        f.seek(64 * MIB - 4096)
        f.write(b"y" * 4096)
    s.mount()
    with open(s.m("f"), "r+b") as f:
        f.write(b"z")
    s.umount()
    used = os.lstat(s.u("f")).st_blocks * 512
    return {"sparse_copyup": f"upper file allocates {used // 1024} KiB"}


@probe("copyup_meta", [("copyup_meta", "Copy-up",
                        "Copy-up by open(O_WRONLY) of d/f: mode, owner, mtime and "
                        "user.* xattr of f and of its parent d")])
def probe_copyup_meta(ctx):
    s = ctx.stack()
    write_file(s.lo("d", "f"), OLD)
    os.chmod(s.lo("d"), 0o750)
    os.chmod(s.lo("d", "f"), 0o640)
    for path in (s.lo("d", "f"), s.lo("d")):
        os.chown(path, 1000, 1001)
        os.setxattr(path, "user.probe", b"1")
        os.utime(path, (978307200, 978307200))
    s.mount()
    os.close(os.open(s.m("d", "f"), os.O_WRONLY))
    s.umount()
    lost = []
    for rel in ("d", "d/f"):
        low, up = os.lstat(s.lo(rel)), os.lstat(s.u(rel))
        if stat.S_IMODE(low.st_mode) != stat.S_IMODE(up.st_mode):
            lost.append(f"{rel} mode")
        if (low.st_uid, low.st_gid) != (up.st_uid, up.st_gid):
            lost.append(f"{rel} owner")
        if low.st_mtime_ns != up.st_mtime_ns:
            lost.append(f"{rel} mtime")
        if "user.probe" not in os.listxattr(s.u(rel)):
            lost.append(f"{rel} user.probe")
    return {"copyup_meta": "all kept" if not lost else "not kept: " + ", ".join(lost)}


@probe("metacopy_open", [("metacopy_open", "Copy-up",
                          "metacopy=on (fuse-overlayfs: no option): chown(2) of a "
                          "lower file, then open(O_WRONLY) and close with no write: "
                          "the file's mtime")],
       {"kernel": [["metacopy=on"]], "lamina": [["metacopy=on"]]})
def probe_metacopy_open(ctx):
    s = ctx.stack()
    write_file(s.lo("f"), OLD)
    os.utime(s.lo("f"), (978307200, 978307200))
    s.mount()
    os.chown(s.m("f"), 1000, 1000)
    after_chown = os.lstat(s.m("f")).st_mtime_ns
    os.close(os.open(s.m("f"), os.O_WRONLY))
    after_open = os.lstat(s.m("f")).st_mtime_ns
    s.umount()
    low = os.lstat(s.lo("f")).st_mtime_ns

    def text(mtime):
        return "kept" if mtime == low else "set to the time of the copy-up"
    return {"metacopy_open": f"after chown: {text(after_chown)}; "
                             f"after the open: {text(after_open)}"}


@probe("metacopy_link", [("metacopy_link", "Copy-up",
                          "metacopy=on (fuse-overlayfs: no option): link(2) of a 1 MiB "
                          "lower file d/f to e/g: what the upper file holds")],
       {"kernel": [["metacopy=on"]], "lamina": [["metacopy=on"]]})
def probe_metacopy_link(ctx):
    s = ctx.stack()
    os.makedirs(s.lo("e"))
    write_file(s.lo("d", "f"), b"x" * (1 << 20))
    s.mount()
    os.link(s.m("d", "f"), s.m("e", "g"))
    same = read_file(s.m("e", "g")) == read_file(s.lo("d", "f"))
    s.umount()
    up = s.u("e", "g")
    marks = [name.split(".")[-1] for name in os.listxattr(up)
             if name in ("trusted.overlay.metacopy", "trusted.overlay.redirect")]
    text = f"{os.lstat(up).st_blocks // 2} KiB allocated"
    if "redirect" in marks:
        text += ", redirect " + os.getxattr(up, "trusted.overlay.redirect").decode()
    if "metacopy" in marks:
        text += ", trusted.overlay.metacopy"
    return {"metacopy_link": text + ("" if same else "; e/g reads other data")}


@probe("unlink_open", [("unlink_open", "Data and open files",
                        "unlink(2) of an open lower file: read and fstat st_nlink on the fd "
                        "(plain fs: 0)")])
def probe_unlink_open(ctx):
    s = ctx.stack()
    write_file(s.lo("f"), OLD)
    s.mount()
    fd = os.open(s.m("f"), os.O_RDONLY)
    os.unlink(s.m("f"))
    nlink = os.fstat(fd).st_nlink
    data = which_data(os.pread(fd, 16, 0))
    os.close(fd)
    s.umount()
    return {"unlink_open": f"fd reads {data}, fstat st_nlink {nlink}"}


@probe("tmpfile", [("o_tmpfile", "Data and open files",
                    "open(O_TMPFILE) in the merged root, then linkat(2) it in")])
def probe_tmpfile(ctx):
    s = ctx.stack()
    s.mount()
    try:
        fd = os.open(s.merged, os.O_TMPFILE | os.O_RDWR, 0o600)
    except OSError as exc:
        s.umount()
        return {"o_tmpfile": errname(exc)}
    os.write(fd, NEW)
    linked = attempt(linkat_follow, f"/proc/self/fd/{fd}", s.m("t"))
    os.close(fd)
    s.umount()
    return {"o_tmpfile": f"works; linkat: {linked}"}


@probe("whiteout", [("whiteout", "On-disk format",
                     "Upper entry left by unlink of a lower file and rmdir of a "
                     "lower directory"),
                    ("opaque", "On-disk format",
                     "Upper entry of a lower directory removed and created again")])
def probe_whiteout(ctx):
    s = ctx.stack()
    write_file(s.lo("f"), OLD)
    write_file(s.lo("d", "x"), OLD)
    write_file(s.lo("o", "x"), OLD)
    s.mount()
    os.unlink(s.m("f"))
    shutil.rmtree(s.m("d"))
    shutil.rmtree(s.m("o"))
    os.mkdir(s.m("o"))
    merged_o = os.listdir(s.m("o"))
    s.umount()
    extra = sorted(set(os.listdir(s.upper)) - {"f", "d", "o"})
    whiteout = f"file: {describe_entry(s.u('f'))}; dir: {describe_entry(s.u('d'))}"
    if extra:
        whiteout += "; other upper entries: " + ", ".join(extra)
    opaque = describe_entry(s.u("o"))
    if merged_o:
        opaque += "; lower entries still shown"
    return {"whiteout": whiteout, "opaque": opaque}


@probe("lower_marks", [
    ("lower_whiteout", "On-disk format",
     "Reading marks in a lower layer: char 0/0 whiteout, opaque=y directory, "
     "xattr whiteout (regular file with overlay.whiteout in an opaque=x directory)")])
def probe_lower_marks(ctx):
    s = ctx.stack(nlowers=2)
    top, bottom = s.lowers
    for rel in ("f", "d/x", "w/g", "w/h"):
        write_file(os.path.join(bottom, rel), OLD)
    os.mknod(os.path.join(top, "f"), stat.S_IFCHR | 0o600, os.makedev(0, 0))
    write_file(os.path.join(top, "d", "z"), OLD)
    os.setxattr(os.path.join(top, "d"), "trusted.overlay.opaque", b"y")
    write_file(os.path.join(top, "w", "g"), b"")
    os.setxattr(os.path.join(top, "w", "g"), "trusted.overlay.whiteout", b"")
    os.setxattr(os.path.join(top, "w"), "trusted.overlay.opaque", b"x")
    s.mount()
    f_hidden = not os.path.lexists(s.m("f"))
    d_list = sorted(os.listdir(s.m("d")))
    w_list = sorted(os.listdir(s.m("w")))
    s.umount()
    parts = ["char 0/0: " + ("hides" if f_hidden else "shown")]
    parts.append("opaque=y: " + ("hides" if d_list == ["z"] else f"lists {d_list}"))
    parts.append("xattr whiteout: " + ("hides" if w_list == ["h"] else f"lists {w_list}"))
    return {"lower_whiteout": ", ".join(parts)}


@probe("xattr", [
    ("xattr_set", "On-disk format",
     "setxattr trusted.overlay.foo on a merged file: result, name stored in the "
     "upper file, listxattr in the merged tree"),
    ("xattr_private", "On-disk format",
     "A lower file's own trusted.overlay.foo (private) and "
     "trusted.overlay.overlay.bar (escaped) in listxattr")])
def probe_xattr(ctx):
    s = ctx.stack()
    write_file(s.lo("f"), OLD)
    write_file(s.lo("p"), OLD)
    os.setxattr(s.lo("p"), "trusted.overlay.foo", b"1")
    os.setxattr(s.lo("p"), "trusted.overlay.overlay.bar", b"2")
    os.setxattr(s.lo("p"), "user.plain", b"3")
    s.mount()
    result = attempt(os.setxattr, s.m("f"), "trusted.overlay.foo", b"v")
    merged_f = [n for n in os.listxattr(s.m("f")) if "overlay" in n]
    merged_p = sorted(os.listxattr(s.m("p")))
    s.umount()
    stored = overlay_xattrs(s.u("f")) if os.path.exists(s.u("f")) else ["no upper file"]
    set_text = (f"{result}; upper stores {', '.join(stored) or 'nothing'}; merged lists "
                f"{', '.join(merged_f) or 'nothing'}")
    return {"xattr_set": set_text,
            "xattr_private": "lists " + (", ".join(merged_p) or "nothing")}


def volatile_marker(work):
    return os.path.isdir(os.path.join(work, "work", "incompat", "volatile"))


@probe("volatile", [("volatile", "Mount",
                     "volatile: work/incompat/volatile while mounted and after a "
                     "clean unmount; the next mount by each implementation")])
def probe_volatile(ctx):
    s = ctx.stack()
    write_file(s.lo("f"), OLD)
    try:
        s.mount(options=ctx.options + ["volatile"])
    except MountFailed as exc:
        return {"volatile": f"mount failed ({exc})"}

    write_file(s.m("new"), NEW)
    during = volatile_marker(s.work)
    s.umount()
    after = volatile_marker(s.work)
    parts = ["marker while mounted: " + ("yes" if during else "no"),
             "after unmount: " + ("kept" if after else "removed")]

    try:
        s.mount()
        s.umount()
        parts.append("next mount: works")
    except MountFailed as exc:
        parts.append(f"next mount: fails ({exc})")

    # A fresh stack for each implementation that mounts after this one.
    for kind in KINDS:
        if kind == ctx.kind:
            continue
        s = ctx.stack()
        s.mount(options=ctx.options + ["volatile"])
        s.umount()
        try:
            s.mount(kind=kind, options=[])
            s.umount()
            parts.append(f"then {kind}: works")
        except MountFailed as exc:
            parts.append(f"then {kind}: fails ({exc})")

    if ctx.kind == "lamina":
        parts.append(volatile_background(ctx))
    return {"volatile": "; ".join(parts)}


BACKGROUND_ROUNDS = 10


def volatile_background(ctx):
    """Check the marker right after `lamina umount` of a background mount.

    Whether the daemon has removed the marker by then is a race, so the check
    runs BACKGROUND_ROUNDS times. The background daemon is not a child of
    this script, so it is never signalled here; it exits by itself once
    unmounted.
    """
    found = 0
    for _ in range(BACKGROUND_ROUNDS):
        s = ctx.stack()
        optstr = f"lowerdir={s.lower},upperdir={s.upper},workdir={s.work},volatile"
        subprocess.run([ctx.mounter.lamina, "mount", "-o", optstr, s.merged],
                       check=True, capture_output=True, timeout=MOUNT_TIMEOUT)
        write_file(s.m("new"), NEW)
        subprocess.run([ctx.mounter.lamina, "umount", s.merged], check=True,
                       capture_output=True, timeout=EXIT_TIMEOUT)
        if volatile_marker(s.work):
            found += 1
        deadline = time.monotonic() + EXIT_TIMEOUT
        while volatile_marker(s.work) and time.monotonic() < deadline:
            time.sleep(0.005)
        if volatile_marker(s.work):
            return (f"background mount: marker still there {EXIT_TIMEOUT:.0f} s after "
                    "`lamina umount`")
    return (f"background mount: marker still there when `lamina umount` returns "
            f"in {found} of {BACKGROUND_ROUNDS} runs, gone within {EXIT_TIMEOUT:.0f} s")


@probe("workdir", [("workdir_junk", "Mount",
                    "workdir with a stray file beside work/, and leftovers inside "
                    "work/ from an earlier mount")])
def probe_workdir(ctx):
    parts = []
    s = ctx.stack()
    write_file(os.path.join(s.work, "stray"), b"x")
    try:
        s.mount()
        s.umount()
        parts.append("stray file: mounts")
    except MountFailed as exc:
        parts.append(f"stray file: fails ({exc})")
    s = ctx.stack()
    write_file(os.path.join(s.work, "work", "#1a"), b"x")
    os.makedirs(os.path.join(s.work, "work", "#1b", "sub"))
    try:
        s.mount()
        left = sorted(os.listdir(os.path.join(s.work, "work")))
        s.umount()
        leftovers = [n for n in left if n.startswith("#1")]
        parts.append("leftovers in work/: mounts, " +
                     ("removes them" if not leftovers else "keeps them"))
    except MountFailed as exc:
        parts.append(f"leftovers in work/: fails ({exc})")
    return {"workdir_junk": "; ".join(parts)}


@probe("lower_only", [("lower_only", "Mount",
                       "No upper layer: one lower, one lower with ro, two lowers")])
def probe_lower_only(ctx):
    parts = []
    for label, nlowers, extra in (("one lower", 1, []), ("one lower, ro", 1, ["ro"]),
                                  ("two lowers", 2, [])):
        s = ctx.stack(nlowers=nlowers)
        write_file(s.lo("f"), OLD)
        try:
            s.mount(upper=False, options=ctx.options + extra)
        except MountFailed as exc:
            parts.append(f"{label}: fails ({exc})")
            continue
        wrote = attempt(append_file, s.m("f"), NEW)
        s.umount()
        parts.append(f"{label}: mounts, write gives {wrote}")
    return {"lower_only": "; ".join(parts)}


@probe("upper_root", [("upper_root", "On-disk format",
                       "What one mount and unmount leave in the upper root's xattrs "
                       "and in the workdir")])
def probe_upper_root(ctx):
    s = ctx.stack()
    write_file(s.lo("f"), OLD)
    s.mount()
    s.umount()
    xattrs = overlay_xattrs(s.upper)
    work = sorted(os.listdir(s.work))
    return {"upper_root": f"upper root: {', '.join(xattrs) or 'no overlay xattrs'}; "
                          f"workdir: {', '.join(work) or 'empty'}"}


@probe("mknod_00", [("mknod_00", "On-disk format",
                     "mknod(2) of a char 0/0 device in the merged tree")])
def probe_mknod(ctx):
    s = ctx.stack()
    s.mount()
    result = attempt(os.mknod, s.m("c"), stat.S_IFCHR | 0o600, os.makedev(0, 0))
    if result == "ok":
        result = "works, then " + ("shows as a device" if os.path.lexists(s.m("c"))
                                   else "the name is gone")
    s.umount()
    return {"mknod_00": result}


@probe("statfs", [("statfs", "Mount",
                   "statfs(2) f_type of the merged root")])
def probe_statfs(ctx):
    s = ctx.stack()
    s.mount()
    out = subprocess.run(["stat", "-f", "-c", "%t %T", s.merged], capture_output=True,
                         text=True).stdout.split()
    s.umount()
    names = {"65735546": "FUSE", "794c7630": "overlayfs"}
    if not out:
        return {"statfs": "unknown"}
    return {"statfs": f"0x{out[0]} ({names.get(out[0], out[-1])})"}


@probe("impure", [("impure", "On-disk format",
                   "Copy-up of d/f, then f moved into a new directory n: overlay "
                   "xattrs on the upper root, d and n; d_ino == st_ino in n when "
                   "the kernel mounts the upper")])
def probe_impure(ctx):
    s = ctx.stack()
    write_file(s.lo("d", "f"), OLD)
    write_file(s.lo("d", "g"), OLD)
    s.mount()
    append_file(s.m("d", "f"), NEW)
    os.mkdir(s.m("n"))
    os.rename(s.m("d", "f"), s.m("n", "f"))
    s.umount()
    marks = []
    for label, path in (("root", s.upper), ("d", s.u("d")), ("n", s.u("n"))):
        names = [n.replace("trusted.overlay.", "") for n in overlay_xattrs(path)]
        marks.append(f"{label}: {', '.join(names) or '-'}")
    s.mount(kind="kernel", options=[], work=s.fresh_work())
    bad = dino_mismatches(s.m("n"))
    s.umount()
    dino = "kernel d_ino == st_ino" if not bad else "kernel d_ino differs from st_ino"
    return {"impure": "; ".join(marks) + "; " + dino}


@probe("interop", [("interop", "On-disk format",
                    "Upper written by one implementation (unlink, rm -r and mkdir, "
                    "copy-up, new directory, symlink), mounted by each other one")])
def probe_interop(ctx):
    s = ctx.stack()
    write_file(s.lo("f"), OLD)
    write_file(s.lo("g"), OLD)
    write_file(s.lo("o", "x"), OLD)
    write_file(s.lo("keep", "y"), OLD)
    s.mount()
    os.unlink(s.m("f"))
    shutil.rmtree(s.m("o"))
    os.mkdir(s.m("o"))
    write_file(s.m("o", "new"), NEW)
    append_file(s.m("g"), NEW)
    os.mkdir(s.m("n"))
    write_file(s.m("n", "z"), NEW)
    os.symlink("g", s.m("link"))
    expected = snapshot(s.merged)
    s.umount()
    return {"interop": read_back_elsewhere(s, expected)}


@probe("lower_redirect", [("lower_redirect", "Renames",
                           "A lower layer holds e with overlay.redirect=d and a "
                           "whiteout d; the layer below holds d/f: what e shows")])
def probe_lower_redirect(ctx):
    s = ctx.stack(nlowers=2)
    top, bottom = s.lowers
    write_file(os.path.join(bottom, "d", "f"), OLD)
    os.mkdir(os.path.join(top, "e"))
    os.setxattr(os.path.join(top, "e"), "trusted.overlay.redirect", b"d")
    os.mknod(os.path.join(top, "d"), stat.S_IFCHR | 0o600, os.makedev(0, 0))
    s.mount()
    listing = sorted(os.listdir(s.m("e")))
    d_shown = os.path.lexists(s.m("d"))
    s.umount()
    text = "e lists " + (", ".join(listing) if listing else "nothing")
    if d_shown:
        text += ", d shown"
    return {"lower_redirect": text}


@probe("rename_emptied", [("rename_emptied", "Renames",
                           "rename(2) of a new directory onto a lower directory "
                           "whose entries were all deleted")])
def probe_rename_emptied(ctx):
    s = ctx.stack()
    write_file(s.lo("b", "x"), OLD)
    s.mount()
    os.mkdir(s.m("a"))
    write_file(s.m("a", "y"), NEW)
    os.unlink(s.m("b", "x"))
    result = attempt(os.rename, s.m("a"), s.m("b"))
    s.umount()
    if result != "ok":
        return {"rename_emptied": result}
    s.mount()
    listing = sorted(os.listdir(s.m("b")))
    s.umount()
    return {"rename_emptied": "works; after remount b lists " + ", ".join(listing)}


FS_IOC_GETFLAGS = 0x80086601
FS_IOC_SETFLAGS = 0x40086602
FS_NOATIME_FL = 0x80


@probe("fileattr", [("fileattr", "Data and open files",
                     "FS_IOC_GETFLAGS and FS_IOC_SETFLAGS (chattr +A) on a lower file")])
def probe_fileattr(ctx):
    s = ctx.stack()
    write_file(s.lo("f"), OLD)
    s.mount()
    flags = array.array("i", [0])
    fd = os.open(s.m("f"), os.O_RDONLY)
    got = attempt(fcntl.ioctl, fd, FS_IOC_GETFLAGS, flags, True)
    os.close(fd)
    flags[0] |= FS_NOATIME_FL
    fd = os.open(s.m("f"), os.O_RDONLY)
    put = attempt(fcntl.ioctl, fd, FS_IOC_SETFLAGS, flags, False)
    os.close(fd)
    s.umount()
    text = f"get: {got}; set: {put}"
    if put == "ok":
        text += ", upper copy " + ("exists" if os.path.lexists(s.u("f")) else "missing")
    return {"fileattr": text}


LOCK_CHILD = r"""
import errno, fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
for name, take in (("flock", lambda: fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)),
                   ("fcntl", lambda: fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB))):
    try:
        take()
        print(name + " granted")
    except OSError as exc:
        print(name + " " + errno.errorcode[exc.errno])
"""


@probe("locks", [("locks", "Data and open files",
                  "flock(2) and fcntl(2) locks held on a lower file opened O_RDONLY; "
                  "another process opens it O_RDWR (copy-up) and locks")],
       {"lamina": [[], ["passthrough=off"]]})
def probe_locks(ctx):
    s = ctx.stack()
    write_file(s.lo("f"), OLD)
    s.mount()
    fd = os.open(s.m("f"), os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        fcntl.lockf(fd, fcntl.LOCK_SH)
        child = subprocess.run([sys.executable, "-c", LOCK_CHILD, s.m("f")],
                               capture_output=True, text=True, check=True)
    finally:
        os.close(fd)
        s.umount()
    results = dict(line.split(" ", 1) for line in child.stdout.splitlines())
    conflict = {"EAGAIN", "EACCES", "EWOULDBLOCK"}

    def word(name):
        value = results.get(name, "not run")
        return "conflict seen" if value in conflict else value

    return {"locks": f"flock: {word('flock')}; fcntl: {word('fcntl')}"}


IN_MODIFY = 0x2
IN_NONBLOCK = 0o4000


def count_events(buf, mask):
    """Count the inotify events in buf whose mask has a bit of `mask`."""
    count, offset = 0, 0
    while offset + 16 <= len(buf):
        _, event_mask, _, name_len = struct.unpack_from("iIII", buf, offset)
        if event_mask & mask:
            count += 1
        offset += 16 + name_len
    return count


@probe("inotify", [("inotify", "Data and open files",
                    "tail -f pattern: O_RDONLY fd and inotify IN_MODIFY watch on a "
                    "lower file; another process appends (copy-up), then appends "
                    "again. Then the watch alone, with no fd open")],
       {"lamina": [[], ["passthrough=off"]]})
def probe_inotify(ctx):
    with_reader = watch_appends(ctx, hold_open=True)
    watch_only = watch_appends(ctx, hold_open=False)
    return {"inotify": f"with the fd: {with_reader}; watch alone: {watch_only}"}


def watch_appends(ctx, hold_open):
    """Append to a lower file twice from a child; report inotify events and reads."""
    s = ctx.stack()
    write_file(s.lo("f"), OLD)
    s.mount()
    fd = os.open(s.m("f"), os.O_RDONLY) if hold_open else None
    ifd = check_libc(LIBC.inotify_init1(IN_NONBLOCK))
    try:
        check_libc(LIBC.inotify_add_watch(ifd, s.m("f").encode(), IN_MODIFY))
        steps = []
        for _ in range(2):
            subprocess.run([sys.executable, "-c",
                            "import sys; f = open(sys.argv[1], 'ab'); "
                            "f.write(b'x'); f.close()", s.m("f")], check=True)
            time.sleep(0.05)
            try:
                events = os.read(ifd, 4096)
            except BlockingIOError:
                events = b""
            step = "event" if count_events(events, IN_MODIFY) else "no event"
            if fd is not None:
                size = len(os.pread(fd, 4096, 0))
                step += f", fd reads {size - len(OLD)} new bytes"
            steps.append(step)
    finally:
        os.close(ifd)
        if fd is not None:
            os.close(fd)
        s.umount()
    return f"first append: {steps[0]}, second: {steps[1]}"


@probe("upper_whiteout_listing", [
    ("whiteout_in_pure_dir", "On-disk format",
     "Whiteouts that an upper layer holds inside an upper-only directory and "
     "inside an opaque directory (as other tools write them): readdir and lstat")])
def probe_upper_whiteout_listing(ctx):
    s = ctx.stack()
    write_file(s.lo("o", "x"), OLD)
    write_file(s.u("n", "a"), OLD)
    write_file(s.u("o", "b"), OLD)
    os.setxattr(s.u("o"), "trusted.overlay.opaque", b"y")
    for rel in ("n/w", "o/w"):
        os.mknod(s.u(rel), stat.S_IFCHR | 0o600, os.makedev(0, 0))
    s.mount()
    parts = []
    for name in ("n", "o"):
        listing = sorted(os.listdir(s.m(name)))
        text = f"{name} lists {', '.join(listing)}"
        if "w" in listing:
            text += " (lstat w: " + attempt(os.lstat, s.m(name, "w")) + ")"
        parts.append(text)
    s.umount()
    return {"whiteout_in_pure_dir": "; ".join(parts)}


DEEP_LEVELS = 18  # 18 names of 255 bytes make a path of more than 4,096 bytes


def walk_down(top, create):
    """Open the DEEP_LEVELS nested directories under top with openat(2).

    Paths this long cannot be passed whole to a system call, so every step
    is relative to the previous directory's descriptor. Returns the deepest
    directory's descriptor.
    """
    name = "d" * 255
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(DEEP_LEVELS):
        if create:
            os.mkdir(name, dir_fd=fd)
        try:
            child = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        finally:
            os.close(fd)
        fd = child
    return fd


@probe("path_length", [("path_length", "Directories",
                        "A lower file 4,600 bytes deep in its layer, reached with "
                        "openat(2) step by step: read, then write (copy-up)")])
def probe_path_length(ctx):
    s = ctx.stack()
    fd = walk_down(s.lower, create=True)
    try:
        with open(os.open("f", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "wb") as f:
            f.write(OLD)
    finally:
        os.close(fd)
    s.mount()
    results = []
    try:
        fd = walk_down(s.merged, create=False)
    except OSError as exc:
        s.umount()
        return {"path_length": f"walk: {errname(exc)}"}
    try:
        for label, flags in (("read", os.O_RDONLY), ("write", os.O_WRONLY | os.O_APPEND)):
            try:
                ffd = os.open("f", flags, dir_fd=fd)
                if flags == os.O_RDONLY:
                    os.read(ffd, 64)
                else:
                    os.write(ffd, NEW)
                os.close(ffd)
                results.append(f"{label}: ok")
            except OSError as exc:
                results.append(f"{label}: {errname(exc)}")
    finally:
        os.close(fd)
        s.umount()
    return {"path_length": "; ".join(results)}


# ---------------------------------------------------------------------------


def run_variant(tmp, mounter, spec, kind, options):
    """Run one probe with one implementation; return {row key: text}."""
    ctx = Context(tmp, mounter, kind, options)
    timer = threading.Timer(PROBE_TIMEOUT, mounter.kill_daemons)
    timer.start()
    try:
        result = spec["func"](ctx)
        return {key: shorten_paths(tmp, text) for key, text in result.items()}
    except MountFailed as exc:
        text = f"mount failed: {exc}"
    except Exception as exc:  # a probe's failure becomes its table cell
        text = f"probe error: {type(exc).__name__}: {exc}"
    finally:
        timer.cancel()
        mounter.umount_all()
    return {key: shorten_paths(tmp, text) for key, _, _ in spec["rows"]}


def shorten_paths(tmp, text):
    """Drop the temporary directory from paths quoted in messages."""
    return re.sub(re.escape(tmp) + r"/stack\.[^/ ]+/", "", text)


def cell_text(results):
    """Join the results of one column's variants into one table cell."""
    if len(results) == 1:
        return results[0][1]
    lines = []
    for options, text in results:
        label = "default" if not options else "`" + ",".join(options) + "`"
        lines.append(f"{label}: {text}")
    return "<br>".join(lines)


def render(rows, cells):
    out = []
    group = None
    groups = []
    for _, row_group, _ in rows:
        if row_group not in groups:
            groups.append(row_group)
    rows = sorted(rows, key=lambda row: groups.index(row[1]))
    for key, row_group, title in rows:
        if row_group != group:
            group = row_group
            out.append("")
            out.append(f"### {group}")
            out.append("")
            out.append("| behaviour | " + " | ".join(COLUMN_TITLES[k] for k in KINDS)
                       + " |")
            out.append("| --- " * (len(KINDS) + 1) + "|")
        values = [cells[key].get(k, "not run").replace("|", "\\|") for k in KINDS]
        out.append(f"| {title} | " + " | ".join(values) + " |")
    return "\n".join(out).lstrip("\n")


def machine_line(lamina, lamina_src):
    """Describe lamina's version and source commit, the kernel and fuse-overlayfs."""
    kernel = os.uname().release
    version = subprocess.run([lamina, "--version"], capture_output=True,
                             text=True).stdout.strip()
    # The commit of the work tree that contains the binary. A "-dirty" suffix
    # marks uncommitted changes in it.
    commit = subprocess.run(["git", "-C", os.path.dirname(lamina_src), "describe",
                             "--always", "--dirty"],
                            capture_output=True, text=True).stdout.strip()
    fo = subprocess.run(["fuse-overlayfs", "--version"], capture_output=True, text=True)
    fo_version = next((ln.split(":", 1)[1].replace("version", "").strip() for ln in
                       (fo.stdout + fo.stderr).splitlines()
                       if ln.startswith("fuse-overlayfs")), "unknown")
    fs_type = subprocess.run(["findmnt", "-n", "-o", "FSTYPE", "-T", "/tmp"],
                             capture_output=True, text=True).stdout.strip()
    return (f"{version or 'lamina'} (commit {commit or 'unknown'}); Linux {kernel}; "
            f"fuse-overlayfs {fo_version}; layers under /tmp on {fs_type}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="comma-separated probe names")
    parser.add_argument("--list", action="store_true", help="list probe names and exit")
    parser.add_argument("--json", help="also write the raw results to this file")
    args = parser.parse_args()
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)

    if args.list:
        for spec in PROBES:
            print(spec["name"])
        return 0
    if os.geteuid() != 0:
        print("run.py: must run as root, because it mounts filesystems",
              file=sys.stderr)
        return 2
    selected = PROBES
    if args.only:
        requested = set(args.only.split(","))
        unknown = requested - {p["name"] for p in PROBES}
        if unknown:
            print(f"run.py: unknown probe(s): {', '.join(sorted(unknown))}; "
                  "see --list", file=sys.stderr)
            return 2
        selected = [p for p in PROBES if p["name"] in requested]

    lamina_src = os.environ.get("LAMINA") or os.path.join(REPO, "build", "lamina")
    if not os.access(lamina_src, os.X_OK):
        print(f"run.py: lamina binary {lamina_src} not found; run make first",
              file=sys.stderr)
        return 2
    tmp = tempfile.mkdtemp(prefix="lamina-conformance.", dir="/tmp")
    lamina = os.path.join(tmp, "lamina")
    shutil.copy(lamina_src, lamina)
    mounter = Mounter(lamina)
    machine = machine_line(lamina, lamina_src)

    def on_signal(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    rows, cells, raw = [], {}, []
    try:
        for spec in selected:
            rows.extend(spec["rows"])
            per_kind = {}
            for kind in KINDS:
                for options in spec["variants"].get(kind, [[]]):
                    started = time.monotonic()
                    result = run_variant(tmp, mounter, spec, kind, options)
                    raw.append({"probe": spec["name"], "impl": kind,
                                "options": options, "result": result})
                    print(f"{spec['name']:14} {kind:14} {','.join(options) or '-':16} "
                          f"{time.monotonic() - started:5.2f}s", file=sys.stderr)
                    per_kind.setdefault(kind, []).append((options, result))
            for key, _, _ in spec["rows"]:
                cells[key] = {kind: cell_text([(o, r[key]) for o, r in res])
                              for kind, res in per_kind.items()}
    finally:
        mounter.umount_all()
        leftover = subprocess.run(["findmnt", "-rn", "-o", "TARGET"],
                                  capture_output=True, text=True).stdout.split()
        for target in sorted(t for t in leftover if t.startswith(tmp + "/")):
            subprocess.run(["umount", "-l", target], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"Measured with: {machine}\n")
    print(render(rows, cells))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(raw, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
