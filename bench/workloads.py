"""The workloads, and the per-run context that mounts, times and cleans up."""

import os
import re
import signal
import subprocess
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field

import mounts
from dataset import git_env

MiB = 1 << 20
REQUEST_LINE = re.compile(rb"^lamina: unique: \d+, opcode: (\w+)")


class WorkloadError(Exception):
    pass


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    unit: str  # "s", "MiB" or "B/inode"


@dataclass
class Workload:
    key: str
    description: str
    metrics: list
    run: object = field(repr=False)


WORKLOADS = []


def workload(key, description, metrics):
    def register(fn):
        WORKLOADS.append(Workload(key, description, [Metric(*m) for m in metrics], fn))
        return fn
    return register


class RunContext:
    """One run of one workload on one implementation.

    It owns a scratch directory under the harness's temporary directory;
    close() unmounts everything mounted for the run and removes it.
    """

    def __init__(self, impl, dataset, tmp_root, options, debug=False):
        self.impl = impl
        self.dataset = dataset
        self.options = options
        self.debug = debug
        self.values = {}
        self.requests = Counter()
        self.step_requests = {}  # metric key -> Counter, with debug only
        self.mounts = []
        self.problems = []
        self.scratch = tempfile.mkdtemp(prefix=f"{impl.key}.", dir=tmp_root)
        self._count = 0

    def _new_dir(self, name):
        self._count += 1
        path = os.path.join(self.scratch, f"{name}{self._count}")
        os.makedirs(path)
        return path

    def mount(self, lower=None, writable=None, need_pid=False):
        """Mount the implementation over lower, the data set's lower tree by default.

        writable lists the paths, relative to lower, that the workload
        will change. For native there is no union to absorb the changes,
        so those paths are copied (`cp -a`, untimed) into a scratch
        directory that replaces the mount.
        """
        lower = lower or self.dataset.lower
        if self.impl.key == "native" and writable is not None:
            copy = self._new_dir("copy")
            for rel in writable:
                dest = os.path.join(copy, rel)
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                self.check(["cp", "-a", os.path.join(lower, rel), dest], timeout=3600)
            return mounts.Mount(self.impl, copy)
        m = self.impl.mount(lower, self._new_dir("mnt"), debug=self.debug, need_pid=need_pid)
        self.mounts.append(m)
        return m

    def drop_caches(self, level=3):
        subprocess.run(["sync"], check=True)
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write(f"{level}\n")

    def _spawn(self, argv, cwd, env, stdout):
        if isinstance(argv, str):
            argv = ["bash", "-c", argv]
        timeout = self.options.timeout
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                stdout=stdout, stderr=subprocess.PIPE,
                                start_new_session=True)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                # A process stuck on a hung FUSE mount dies once the
                # daemon is killed during teardown.
                pass
            raise WorkloadError(f"timed out after {timeout} s: {' '.join(argv)}")
        if proc.returncode != 0:
            message = " | ".join(err.decode(errors="replace").strip().splitlines()[-3:])
            raise WorkloadError(f"exit status {proc.returncode}: {' '.join(argv)}: {message}")
        return out

    def check(self, argv, cwd=None, env=None, timeout=None):
        """Run an untimed command and return its standard output."""
        saved = self.options.timeout
        if timeout is not None:
            self.options.timeout = max(saved, timeout)
        try:
            return self._spawn(argv, cwd, env, subprocess.PIPE).decode(errors="replace")
        finally:
            self.options.timeout = saved

    def discard(self, argv, cwd=None, env=None):
        """Run an untimed command with its output discarded."""
        self._spawn(argv, cwd, env, subprocess.DEVNULL)

    def timed(self, metric, argv, cwd=None, env=None):
        """Run a command with its output discarded and record its wall-clock time.

        In the debug pass it also counts the requests that the command
        sent, from what it added to each daemon's log.
        """
        logs = [m.log_path for m in self.mounts if self.debug and m.log_path]
        offsets = [os.path.getsize(path) for path in logs]
        start = time.perf_counter()
        self._spawn(argv, cwd, env, subprocess.DEVNULL)
        self.record(metric, time.perf_counter() - start)
        if logs:
            counts = Counter()
            for path, offset in zip(logs, offsets):
                self._count_requests(path, counts, offset)
            self.step_requests[metric] = counts

    def record(self, metric, value):
        self.values[metric] = value

    def close(self):
        for m in reversed(self.mounts):
            self.problems += self.impl.unmount(m)
            if self.debug and m.log_path:
                self._count_requests(m.log_path, self.requests)
        self.mounts.clear()
        left = mounts.mounts_below(self.scratch)
        if left:
            self.problems.append(f"left {self.scratch} in place: still mounted: {left}")
            return
        subprocess.run(["rm", "-rf", "--one-file-system", self.scratch])

    @staticmethod
    def _count_requests(log_path, counts, offset=0):
        with open(log_path, "rb") as f:
            f.seek(offset)
            for line in f:
                found = REQUEST_LINE.match(line)
                if found:
                    counts[found.group(1).decode()] += 1


def meminfo_bytes(key):
    with open("/proc/meminfo") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name == key:
                return int(rest.split()[0]) * 1024
    raise WorkloadError(f"no {key} in /proc/meminfo")


# The workloads, in the order the tables list them.


@workload("find", "`find` over the whole lower tree, first with cold caches, then again on the same mount",
          [("find-first", "find, first", "s"), ("find-repeat", "find, repeated", "s")])
def run_find(run):
    m = run.mount()
    run.drop_caches()
    run.timed("find-first", ["find", m.path])
    run.timed("find-repeat", ["find", m.path])


@workload("ls", "`ls -lR` over the whole lower tree with cold caches",
          [("ls-lR", "ls -lR", "s")])
def run_ls(run):
    m = run.mount()
    run.drop_caches()
    run.timed("ls-lR", ["ls", "-lR", m.path])


@workload("read", "sequential read (`cat`) of the big lower file, cold then again on the same mount",
          [("read-first", "read big file, first", "s"),
           ("read-repeat", "read big file, repeated", "s")])
def run_read(run):
    m = run.mount()
    path = os.path.join(m.path, "big.bin")
    run.drop_caches()
    run.timed("read-first", ["cat", path])
    run.timed("read-repeat", ["cat", path])


@workload("copyup", "append one byte to the big lower file, which copies it up",
          [("copy-up", "copy-up: append 1 byte to big file", "s")])
def run_copyup(run):
    m = run.mount(writable=["big.bin"])
    path = os.path.join(m.path, "big.bin")
    run.drop_caches()
    run.timed("copy-up", ["bash", "-c", 'printf x >> "$1"', "append", path])
    size = os.stat(path).st_size
    expected = run.dataset.meta["big_file_bytes"] + 1
    if size != expected:
        raise WorkloadError(f"size after append is {size}, expected {expected}")


@workload("tar", "extract the tar archive of the lower's usr/ into a new directory in the mount",
          [("tar-extract", "tar -x", "s")])
def run_tar(run):
    m = run.mount(writable=[])
    dest = os.path.join(m.path, "extract")
    os.mkdir(dest)
    run.drop_caches()
    run.timed("tar-extract", ["tar", "-xf", run.dataset.tar, "-C", dest])
    probe = os.path.join(dest, run.dataset.meta["stat_target"])
    if run.dataset.meta["stat_target"].startswith("usr/") and not os.path.isfile(probe):
        raise WorkloadError(f"{probe} missing after extraction")


@workload("write", "`dd` writes 64 MiB of zeros in 4 KiB blocks to a new file in the mount",
          [("write-4k", "write 64 MiB in 4 KiB blocks", "s")])
def run_write(run):
    m = run.mount(writable=[])
    path = os.path.join(m.path, "written.bin")
    run.drop_caches()
    run.timed("write-4k", ["dd", "if=/dev/zero", f"of={path}", "bs=4k", "count=16384",
                           "status=none"])
    size = os.stat(path).st_size
    if size != 64 << 20:
        raise WorkloadError(f"{path} has {size} bytes after dd, expected {64 << 20}")


@workload("rm", "`rm -rf` of the lower's usr/ tree through the mount",
          [("rm-rf", "rm -rf", "s")])
def run_rm(run):
    m = run.mount(writable=["usr"])
    path = os.path.join(m.path, "usr")
    run.drop_caches()
    run.timed("rm-rf", ["rm", "-rf", path])
    if os.path.lexists(path):
        raise WorkloadError(f"{path} still exists after rm -rf")


@workload("chmod", "`chmod -R g+w` of the lower's usr/include tree",
          [("chmod-R", "chmod -R", "s")])
def run_chmod(run):
    m = run.mount(writable=["usr/include"])
    path = os.path.join(m.path, "usr/include")
    run.drop_caches()
    run.timed("chmod-R", ["chmod", "-R", "g+w", path])
    if not os.stat(path).st_mode & 0o020:
        raise WorkloadError(f"{path} lacks g+w after chmod -R")


@workload("stat", "stat(2) of one lower file in a loop, by a compiled helper",
          [("stat", "stat x 2000", "s")])
def run_stat(run):
    m = run.mount()
    path = os.path.join(m.path, run.dataset.meta["stat_target"])
    run.drop_caches()
    out = run.check([run.options.stat_helper, path, str(run.options.stat_count)])
    run.record("stat", float(out))


@workload("roundtrip", "a missing extended attribute of one lower file read in a loop, "
          "by the same helper: one FUSE round trip per call",
          [("roundtrip", "getxattr x 20000", "s")])
def run_roundtrip(run):
    m = run.mount()
    path = os.path.join(m.path, run.dataset.meta["stat_target"])
    run.check([run.options.stat_helper, path, "100", "xattr"])
    out = run.check([run.options.stat_helper, path, "20000", "xattr"])
    run.record("roundtrip", float(out))


@workload("git", "`git status` in the repository in the lower, cold then again on the same mount",
          [("git-status-first", "git status, first", "s"),
           ("git-status-repeat", "git status, repeated", "s")])
def run_git(run):
    m = run.mount()
    repo = os.path.join(m.path, "repo")
    env = git_env()
    run.drop_caches()
    run.timed("git-status-first", ["git", "status"], cwd=repo, env=env)
    run.timed("git-status-repeat", ["git", "status"], cwd=repo, env=env)


@workload("pagecache", "growth of `Cached:` in /proc/meminfo while several mounts over the same lower "
          "each read the big file once after dropping caches",
          [("page-cache", "page cache growth, 4 mounts read big file", "MiB")])
def run_pagecache(run):
    count = run.options.page_cache_mounts
    merged = [run.mount().path for _ in range(count)]
    run.drop_caches()
    before = meminfo_bytes("Cached")
    for path in merged:
        run.discard(["cat", os.path.join(path, "big.bin")])
    run.record("page-cache", (meminfo_bytes("Cached") - before) / MiB)


def _settled_rss(pid, limit=30.0):
    """Wait until the daemon's RSS stops changing for 2 s, up to limit seconds."""
    rss = mounts.vm_rss_bytes(pid)
    stable_since = time.monotonic()
    deadline = stable_since + limit
    while time.monotonic() < deadline and time.monotonic() - stable_since < 2.0:
        time.sleep(0.25)
        now = mounts.vm_rss_bytes(pid)
        if now != rss:
            rss, stable_since = now, time.monotonic()
    return rss


@workload("memory", "daemon RSS (VmRSS) after `find -size +0` over a tree of one million empty files, "
          "and after `echo 2 > /proc/sys/vm/drop_caches` makes the kernel forget the inodes",
          [("find-1m", "find -size +0, 1M-file tree", "s"),
           ("rss-mounted", "daemon RSS after mount", "MiB"),
           ("rss-after-find", "daemon RSS after find", "MiB"),
           ("rss-per-inode", "daemon RSS growth per looked-up inode", "B/inode"),
           ("rss-after-forget", "daemon RSS after drop_caches 2", "MiB")])
def run_memory(run):
    m = run.mount(lower=run.dataset.million, need_pid=True)
    pid = m.pid if run.impl.has_daemon else None
    if run.impl.has_daemon and pid is None:
        raise WorkloadError("the daemon's pid is unknown")
    run.drop_caches()
    rss_mounted = mounts.vm_rss_bytes(pid) if pid else None
    # -size makes find stat(2) every entry, so every file is looked up even
    # where the kernel lists directories without READDIRPLUS (unionfs-fuse
    # speaks FUSE 7.19, which predates it). Only directories match.
    run.timed("find-1m", ["find", m.path, "-size", "+0"])
    if pid is None:
        for key in ("rss-mounted", "rss-after-find", "rss-per-inode", "rss-after-forget"):
            run.record(key, None)
        return
    rss_found = _settled_rss(pid, limit=10.0)
    run.drop_caches(2)
    rss_forgotten = _settled_rss(pid)
    entries = run.dataset.meta["million_entries"] + 1
    run.record("rss-mounted", rss_mounted / MiB)
    run.record("rss-after-find", rss_found / MiB)
    run.record("rss-per-inode", (rss_found - rss_mounted) / entries)
    run.record("rss-after-forget", rss_forgotten / MiB)


def select(keys):
    """Return the workloads named in keys, in table order."""
    known = {w.key: w for w in WORKLOADS}
    unknown = [k for k in keys if k not in known]
    if unknown:
        raise ValueError(f"unknown workload(s) {', '.join(unknown)}; "
                         f"choose from {', '.join(known)}")
    return [w for w in WORKLOADS if w.key in keys]

