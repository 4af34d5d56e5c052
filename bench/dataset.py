"""Builds and caches the benchmark data set under /var/tmp/lamina-bench.

Each part (the lower tree, the tar archive, the tree of empty files) is
built under a ".partial" name and renamed into place when complete. A build
that was interrupted therefore leaves no part that looks finished, and the
next run redoes it.
"""

import fcntl
import json
import os
import shutil
import stat
import subprocess
from dataclasses import dataclass

MiB = 1 << 20


@dataclass(frozen=True)
class Sizes:
    """Dimensions of one data set."""

    name: str
    big_file_bytes: int
    # Non-directory entries copied from each of /usr/share and /usr/include,
    # or None for a full `cp -a` of both.
    usr_limit_each: int | None
    repo_files: int
    million_dirs: int
    million_files_per_dir: int


FULL = Sizes("full", 1 << 30, None, 4000, 1000, 1000)
QUICK = Sizes("quick", 64 * MiB, 2500, 500, 100, 200)

GIT_ENV = {
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@localhost",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@localhost",
}


def git_env():
    """Return an environment that keeps the host's git configuration out."""
    env = dict(os.environ)
    env.update(GIT_ENV)
    return env


def count_entries(top):
    """Count the entries below top, directories included, top excluded."""
    total = 0
    for _root, dirs, files in os.walk(top):
        total += len(dirs) + len(files)
    return total


def copy_tree_limited(src, dst, limit):
    """Copy src to dst with metadata, stopping after limit non-directories.

    Directories are visited in sorted order and a directory's files are
    copied before its subdirectories, so the selection is deterministic.
    Returns the number of non-directory entries copied.
    """
    copied = 0
    for root, dirs, files in os.walk(src):
        dirs.sort()
        files.sort()
        target = os.path.normpath(os.path.join(dst, os.path.relpath(root, src)))
        os.makedirs(target, exist_ok=True)
        shutil.copystat(root, target)
        # os.walk lists symbolic links to directories among the directories.
        for name in [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            dirs.remove(name)
            files.append(name)
        for name in files:
            if copied >= limit:
                dirs.clear()
                break
            source = os.path.join(root, name)
            dest = os.path.join(target, name)
            if os.path.islink(source):
                os.symlink(os.readlink(source), dest)
            elif os.path.isfile(source):
                shutil.copy2(source, dest)
            else:
                continue
            copied += 1
    return copied


def run(argv, cwd=None, env=None):
    subprocess.run(argv, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL)


class Dataset:
    """The cached lower tree, tar archive and tree of one million files."""

    def __init__(self, cache_root, sizes):
        self.sizes = sizes
        self.root = os.path.join(cache_root, sizes.name)
        self.lower = os.path.join(self.root, "lower")
        self.tar = os.path.join(self.root, "extract.tar")
        self.million = os.path.join(self.root, "million")
        self.big_file = os.path.join(self.lower, "big.bin")
        self.repo = os.path.join(self.lower, "repo")
        self.meta = {}

    def ensure(self, need_million, log):
        """Build whatever part is missing, then load the recorded counts."""
        os.makedirs(self.root, exist_ok=True)
        with open(os.path.join(self.root, ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._build_once(self.lower, self._build_lower, log)
            self._build_once(self.tar, self._build_tar, log)
            if need_million:
                self._build_once(self.million, self._build_million, log)
        with open(self.lower + ".json") as f:
            self.meta.update(json.load(f))
        with open(self.tar + ".json") as f:
            self.meta.update(json.load(f))
        if need_million:
            with open(self.million + ".json") as f:
                self.meta.update(json.load(f))

    def _build_once(self, final, builder, log):
        if os.path.exists(final) and os.path.exists(final + ".json"):
            return
        partial = final + ".partial"
        log(f"dataset: building {final}")
        for stale in (partial, final):
            if os.path.isdir(stale):
                shutil.rmtree(stale)
            elif os.path.exists(stale):
                os.unlink(stale)
        meta = builder(partial)
        os.rename(partial, final)
        with open(final + ".json.partial", "w") as f:
            json.dump(meta, f, indent=1)
        os.rename(final + ".json.partial", final + ".json")
        log(f"dataset: built {final}: {meta}")

    def _build_lower(self, path):
        usr = os.path.join(path, "usr")
        os.makedirs(usr)
        limit = self.sizes.usr_limit_each
        for name in ("share", "include"):
            if limit is None:
                run(["cp", "-a", f"/usr/{name}", os.path.join(usr, name)])
            else:
                copy_tree_limited(f"/usr/{name}", os.path.join(usr, name), limit)

        with open(os.path.join(path, "big.bin"), "wb") as f:
            remaining = self.sizes.big_file_bytes
            while remaining > 0:
                chunk = min(remaining, 4 * MiB)
                f.write(os.urandom(chunk))
                remaining -= chunk

        repo = os.path.join(path, "repo")
        repo_files = copy_tree_limited("/usr/include", repo, self.sizes.repo_files)
        run(["git", "init", "-q"], cwd=repo, env=git_env())
        run(["git", "add", "-A"], cwd=repo, env=git_env())
        run(["git", "commit", "-q", "-m", "Benchmark repository"], cwd=repo, env=git_env())
        # Refresh the index once so that the native run of `git status`
        # finds it current and does not rewrite it.
        run(["git", "status"], cwd=repo, env=git_env())

        stat_target = "usr/include/stdio.h"
        if not os.path.isfile(os.path.join(path, stat_target)):
            stat_target = "big.bin"
        return {
            "lower_entries": count_entries(path),
            "usr_entries": count_entries(usr),
            "usr_include_entries": count_entries(os.path.join(usr, "include")),
            "big_file_bytes": self.sizes.big_file_bytes,
            "repo_files": repo_files,
            "stat_target": stat_target,
        }

    def _build_tar(self, path):
        run(["tar", "-cf", path, "-C", self.lower, "usr"])
        return {"tar_entries": count_entries(os.path.join(self.lower, "usr")) + 1,
                "tar_bytes": os.path.getsize(path)}

    def _build_million(self, path):
        os.makedirs(path)
        mode = 0o644 | stat.S_IFREG
        for d in range(self.sizes.million_dirs):
            directory = os.path.join(path, f"d{d:04d}")
            os.mkdir(directory)
            for n in range(self.sizes.million_files_per_dir):
                os.mknod(os.path.join(directory, f"f{n:04d}"), mode)
        files = self.sizes.million_dirs * self.sizes.million_files_per_dir
        return {"million_entries": files + self.sizes.million_dirs,
                "million_files": files}
