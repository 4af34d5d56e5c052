"""Acceptance test: install a Debian package into a Debian 12 root filesystem
through a union mount, with the root filesystem as the only lower layer.

The root filesystem comes from ``debootstrap --variant=minbase bookworm``
against the mirror that this machine's apt uses. It is cached as a tarball
under /var/tmp/lamina-cache (or $LAMINA_CACHE_DIR), so only the first run
needs debootstrap. Delete the tarball to rebuild it.

Each run mounts the stack and runs ``apt-get install hello`` in a chroot. It
checks that the package runs and passes ``dpkg --verify``, and that the lower
layer did not change at all. Then it mounts the same upper and work
directories with the kernel's overlayfs, which shows that the result is valid
overlayfs on-disk format. The same steps run once with the kernel's
overlayfs as the engine, as a reference that separates problems of this
machine (mirror, network, debootstrap) from problems of lamina.

Needs root, network access to the Debian mirror, and about 1 GiB in /tmp
and /var/tmp. Set LAMINA_SKIP_DEBIAN=1 to skip it, and LAMINA to choose the
lamina binary (default: build/lamina in this repository).
"""

import fcntl
import hashlib
import os
import re
import shutil
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LAMINA = Path(os.environ.get("LAMINA", REPO / "build" / "lamina"))
CACHE_DIR = Path(os.environ.get("LAMINA_CACHE_DIR", "/var/tmp/lamina-cache"))
SUITE = "bookworm"
PACKAGE = "hello"
HELLO_OUTPUT = "Hello, world!\n"

# Timeouts in seconds for the slow steps. They are generous upper bounds,
# not expectations: debootstrap and packing its output took 28 to 41 s on a
# 2-core machine with deb.debian.org as the mirror.
DEBOOTSTRAP_TIMEOUT = 1800
APT_TIMEOUT = 900
MOUNT_TIMEOUT = 60
DAEMON_EXIT_TIMEOUT = 20

CHROOT_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LC_ALL": "C",
    "DEBIAN_FRONTEND": "noninteractive",
}
# Use-Pty=0 keeps dpkg from asking for a pseudo-terminal, so the chroot
# needs no /dev/pts.
APT_OPTIONS = ["-q", "-o", "Dpkg::Use-Pty=0", "-o", "Acquire::Retries=3"]

pytestmark = pytest.mark.skipif(
    os.environ.get("LAMINA_SKIP_DEBIAN") == "1",
    reason="LAMINA_SKIP_DEBIAN=1 is set",
)


def run(args, timeout, env=None, pass_fds=()):
    """Run a command and return the CompletedProcess with text output."""
    return subprocess.run(
        [str(arg) for arg in args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        timeout=timeout,
        env=env,
        pass_fds=pass_fds,
    )


def describe(result):
    """Format a finished command and the end of its output for an assert."""
    output = result.stdout[-4000:]
    return f"{' '.join(result.args)} exited with {result.returncode}:\n{output}"


def chroot(root, *args, timeout=APT_TIMEOUT):
    env = dict(CHROOT_ENV)
    for name in ("http_proxy", "https_proxy", "no_proxy"):
        if name in os.environ:
            env[name] = os.environ[name]
    return run(["chroot", root, *args], timeout=timeout, env=env)


# --- The mirror -------------------------------------------------------------


def parse_one_line_sources(text):
    """Yield (uri, suites) for each "deb" line of a sources.list file."""
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        # Drop an options block such as "[arch=amd64 signed-by=...]".
        line = re.sub(r"\[[^\]]*\]", " ", line)
        fields = line.split()
        if len(fields) >= 3 and fields[0] == "deb":
            yield fields[1], [fields[2]]


def parse_deb822_sources(text):
    """Yield (uri, suites) for each enabled "deb" stanza of a .sources file."""
    for stanza in re.split(r"\n\s*\n", text):
        fields = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[0].isspace():
                continue
            name, value = line.split(":", 1)
            fields[name.strip().lower()] = value.split()
        if "deb" not in fields.get("types", []):
            continue
        if fields.get("enabled", ["yes"])[0].lower() == "no":
            continue
        for uri in fields.get("uris", []):
            yield uri, fields.get("suites", [])


def find_debian_mirror():
    """Return the URI that this machine's apt uses for Debian bookworm.

    Reads /etc/apt/sources.list and the *.list and *.sources files in
    /etc/apt/sources.list.d, the files apt itself reads. Entries for
    bookworm-security and bookworm-updates do not count, because debootstrap
    needs the main archive.
    """
    entries = []
    sources_list = Path("/etc/apt/sources.list")
    if sources_list.is_file():
        entries += parse_one_line_sources(sources_list.read_text())
    parts = Path("/etc/apt/sources.list.d")
    if parts.is_dir():
        for path in sorted(parts.iterdir()):
            if path.suffix == ".list":
                entries += parse_one_line_sources(path.read_text())
            elif path.suffix == ".sources":
                entries += parse_deb822_sources(path.read_text())
    for uri, suites in entries:
        if SUITE in suites:
            return uri
    pytest.fail(
        f"no apt source for Debian {SUITE} in /etc/apt/sources.list or "
        f"/etc/apt/sources.list.d; add one, for example "
        f"'deb http://deb.debian.org/debian {SUITE} main'"
    )


# --- The cached root filesystem ---------------------------------------------


def mounts_under(root):
    """Return the mount points at or below root, deepest first."""
    root = os.path.realpath(root)
    targets = []
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            target = line.split()[4]
            # mountinfo escapes space, tab, newline and backslash as \ooo.
            target = re.sub(
                r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), target
            )
            if target == root or target.startswith(root + "/"):
                targets.append(target)
    return sorted(targets, key=len, reverse=True)


def is_mounted(path):
    return os.path.realpath(path) in mounts_under(path)


def unmount_all_under(root):
    """Unmount everything at or below root, lazily if a normal unmount fails.

    Returns the mount points that are still there afterwards.
    """
    for target in mounts_under(root):
        if run(["umount", target], timeout=MOUNT_TIMEOUT).returncode != 0:
            run(["umount", "-l", target], timeout=MOUNT_TIMEOUT)
    return mounts_under(root)


def remove_tree(path):
    """Remove a directory tree unless something is still mounted inside it.

    Removing a tree with a mount inside would delete files through that
    mount, so in that case the tree is kept and the mounts are reported.
    """
    remaining = unmount_all_under(path)
    if remaining:
        raise RuntimeError(
            f"not removing {path}: still mounted inside it: {remaining}"
        )
    shutil.rmtree(path, ignore_errors=True)


def debian_architecture():
    result = run(["dpkg", "--print-architecture"], timeout=60)
    assert result.returncode == 0, describe(result)
    return result.stdout.strip()


def fsync_path(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def build_rootfs_tarball(mirror, tarball, lock):
    """Run debootstrap and pack its output into tarball, atomically.

    The tarball is written under a temporary name and renamed into place
    only when complete, so an interrupted run leaves no tarball that looks
    valid. debootstrap and tar inherit the locked file, so that if this
    process is killed, the next run waits for them to exit before it
    removes what they leave behind.
    """
    lock_fds = (lock.fileno(),)
    build_dir = Path(tempfile.mkdtemp(prefix="build.", dir=CACHE_DIR))
    partial = CACHE_DIR / f"partial.{os.getpid()}.{tarball.name}"
    try:
        root = build_dir / "root"
        result = run(
            ["debootstrap", "--variant=minbase", SUITE, root, mirror],
            timeout=DEBOOTSTRAP_TIMEOUT,
            pass_fds=lock_fds,
        )
        assert result.returncode == 0, describe(result)
        result = run(
            [
                "tar",
                "--numeric-owner",
                "--xattrs",
                "--xattrs-include=*",
                "--acls",
                "-C",
                root,
                "-czf",
                partial,
                ".",
            ],
            timeout=DEBOOTSTRAP_TIMEOUT,
            pass_fds=lock_fds,
        )
        assert result.returncode == 0, describe(result)
        fsync_path(partial)
        os.rename(partial, tarball)
        fsync_path(CACHE_DIR)
    finally:
        partial.unlink(missing_ok=True)
        remove_tree(build_dir)


def remove_stale_build_files():
    """Remove what an interrupted build left behind in the cache directory.

    Called with the cache lock held, so no other build is running.
    """
    for path in CACHE_DIR.iterdir():
        if path.name.startswith("build.") and path.is_dir():
            remove_tree(path)
        elif path.name.startswith("partial."):
            path.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def rootfs_tarball():
    """Path of the cached debootstrap tarball, built on first use."""
    assert os.geteuid() == 0, "the Debian root filesystem test must run as root"
    mirror = find_debian_mirror()
    arch = debian_architecture()
    key = hashlib.sha256(f"{SUITE} minbase {arch} {mirror}".encode()).hexdigest()
    tarball = CACHE_DIR / f"debian-{SUITE}-minbase-{arch}-{key[:12]}.tar.gz"

    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(CACHE_DIR / "lock", "w") as lock:
        # Concurrent runs wait here instead of building the tarball twice.
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not tarball.exists():
            remove_stale_build_files()
            started = time.monotonic()
            build_rootfs_tarball(mirror, tarball, lock)
            print(
                f"debootstrap {SUITE} from {mirror}: "
                f"{time.monotonic() - started:.0f} s"
            )
    return tarball


# --- Checks -----------------------------------------------------------------


def file_sha256(path):
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def manifest(root):
    """Describe every entry of a tree, keyed by its path relative to root.

    Each entry records type and mode, owner, size, link count, device
    number, modification and change times, the SHA-256 of a regular file's
    contents, a symlink's target and all extended attributes. Any write,
    metadata change, creation or deletion in the tree changes the manifest.
    """
    def raise_error(error):
        raise error

    entries = {}
    paths = [root]
    for directory, dirnames, filenames in os.walk(root, onerror=raise_error):
        paths += [os.path.join(directory, name) for name in dirnames + filenames]
    for path in paths:
        st = os.lstat(path)
        xattrs = {
            attr: os.getxattr(path, attr, follow_symlinks=False)
            for attr in sorted(os.listxattr(path, follow_symlinks=False))
        }
        entry = {
            "mode": oct(st.st_mode),
            "owner": (st.st_uid, st.st_gid),
            "size": st.st_size,
            "nlink": st.st_nlink,
            "rdev": st.st_rdev,
            "mtime_ns": st.st_mtime_ns,
            "ctime_ns": st.st_ctime_ns,
            "xattrs": xattrs,
        }
        if stat.S_ISREG(st.st_mode):
            entry["sha256"] = file_sha256(path)
        elif stat.S_ISLNK(st.st_mode):
            entry["target"] = os.readlink(path)
        entries[os.path.normpath(os.path.relpath(path, root))] = entry
    return entries


def manifest_differences(before, after, limit=20):
    """List up to limit paths whose entries differ, with both versions."""
    lines = []
    for path in sorted(before.keys() | after.keys()):
        if before.get(path) != after.get(path):
            lines.append(f"{path}: {before.get(path)} -> {after.get(path)}")
    if len(lines) > limit:
        lines = lines[:limit] + [f"... and {len(lines) - limit} more"]
    return "\n".join(lines)


def ensure_resolv_conf(merged):
    """Give the chroot the host's DNS configuration if it differs."""
    host = Path("/etc/resolv.conf").read_bytes()
    target = Path(merged, "etc/resolv.conf")
    if target.is_symlink() or not target.is_file() or target.read_bytes() != host:
        target.unlink(missing_ok=True)
        target.write_bytes(host)


# --- Mounting ---------------------------------------------------------------


def overlay_options(layers):
    return (
        f"lowerdir={layers['lower']},upperdir={layers['upper']},"
        f"workdir={layers['work']}"
    )


def mount_kernel_overlay(layers, merged):
    result = run(
        ["mount", "-t", "overlay", "overlay", "-o", overlay_options(layers), merged],
        timeout=MOUNT_TIMEOUT,
    )
    assert result.returncode == 0, describe(result)


def read_log(path, limit=4000):
    try:
        return Path(path).read_text(errors="replace")[-limit:]
    except FileNotFoundError:
        return "<no log>"


def sanitizer_env(sanitizer_log):
    """Return os.environ with ASan, LSan and UBSan reports sent to files.

    Each process writes its reports to sanitizer_log.PID. The daemon closes
    its standard error when it goes to the background, so without a log
    path its reports would be lost. In a build without sanitizers the
    variables have no effect.
    """
    env = dict(os.environ)
    for name in ("ASAN_OPTIONS", "UBSAN_OPTIONS"):
        options = [env[name]] if env.get(name) else []
        env[name] = ":".join(options + [f"log_path={sanitizer_log}"])
    return env


def mount_lamina(layers, merged, log_path, sanitizer_log):
    """Mount with lamina, sending the output of lamina mount to log_path.

    A file rather than a pipe, because reading a pipe would wait for the
    daemon to exit if the daemon kept the inherited output open.
    """
    assert LAMINA.is_file(), f"lamina binary not found at {LAMINA}; run make"
    args = [str(LAMINA), "mount", "-o", overlay_options(layers), str(merged)]
    with open(log_path, "w") as log:
        result = subprocess.run(
            args,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=MOUNT_TIMEOUT,
            env=sanitizer_env(sanitizer_log),
        )
    assert result.returncode == 0, (
        f"{' '.join(args)} exited with {result.returncode}:\n"
        f"{read_log(log_path)}"
    )


def sanitizer_reports(log_path, sanitizer_log):
    """Return the text of every sanitizer report that lamina wrote.

    Looks in the sanitizer_log.PID files and, for reports written before
    the daemon closed its standard error, in log_path.
    """
    alarms = ("AddressSanitizer", "LeakSanitizer", "runtime error")
    reports = []
    for path in sorted(sanitizer_log.parent.glob(sanitizer_log.name + ".*")):
        reports.append(f"{path}:\n{read_log(path)}")
    log = read_log(log_path)
    if any(word in log for word in alarms):
        reports.append(f"{log_path}:\n{log}")
    return reports


def lamina_daemon_pids(merged):
    """Return the pids of lamina processes serving the mount at merged.

    lamina mount leaves a daemon in the background, which keeps the command
    line that started it.
    """
    binary = os.path.realpath(LAMINA)
    merged = str(merged)
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            exe = os.readlink(f"/proc/{entry}/exe")
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        if exe == binary and merged in argv:
            pids.append(int(entry))
    return pids


def wait_for_exit(pids, timeout):
    """Wait until none of pids exists, and return those still running at the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        alive = [pid for pid in pids if os.path.exists(f"/proc/{pid}")]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


def unmount_engine(engine, merged):
    if engine == "lamina":
        result = run([LAMINA, "umount", merged], timeout=MOUNT_TIMEOUT)
    else:
        result = run(["umount", merged], timeout=MOUNT_TIMEOUT)
    assert result.returncode == 0, describe(result)


@pytest.fixture
def workspace():
    """A fresh directory under /tmp, unmounted and removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="lamina-debian.", dir="/tmp"))
    try:
        yield path
    finally:
        # pytest shows this output only when the test fails.
        log_path = path / "lamina.log"
        if log_path.exists():
            print(f"--- end of {log_path}:\n{read_log(log_path)}")
        remove_tree(path)


# --- The test ---------------------------------------------------------------


@pytest.mark.parametrize("engine", ["kernel", "lamina"])
def test_debian_rootfs_install(engine, rootfs_tarball, workspace):
    layers = {name: workspace / name for name in ("lower", "upper", "work")}
    for path in layers.values():
        path.mkdir()
    merged = workspace / "merged"
    merged.mkdir()

    result = run(
        [
            "tar",
            "--numeric-owner",
            "--xattrs",
            "--xattrs-include=*",
            "--acls",
            "-xpzf",
            rootfs_tarball,
            "-C",
            layers["lower"],
        ],
        timeout=DEBOOTSTRAP_TIMEOUT,
    )
    assert result.returncode == 0, describe(result)
    lower_before = manifest(layers["lower"])

    daemon_pids = []
    log_path = workspace / "lamina.log"
    sanitizer_log = workspace / "sanitizer"
    if engine == "lamina":
        mount_lamina(layers, merged, log_path, sanitizer_log)
        daemon_pids = lamina_daemon_pids(merged)
    else:
        mount_kernel_overlay(layers, merged)
    assert is_mounted(merged), f"{engine} mount at {merged} is not listed"

    ensure_resolv_conf(merged)

    result = chroot(merged, "apt-get", *APT_OPTIONS, "update")
    assert result.returncode == 0, describe(result)

    result = chroot(merged, "apt-get", *APT_OPTIONS, "install", "-y", PACKAGE)
    assert result.returncode == 0, describe(result)

    result = chroot(merged, PACKAGE, timeout=60)
    assert result.returncode == 0, describe(result)
    assert result.stdout == HELLO_OUTPUT

    result = chroot(merged, "dpkg", "--verify", PACKAGE, timeout=120)
    assert result.returncode == 0, describe(result)
    assert result.stdout == "", f"dpkg --verify {PACKAGE} reported:\n{result.stdout}"

    installed = layers["upper"] / "usr/bin" / PACKAGE
    assert installed.is_file(), f"{installed} missing from the upper layer"

    unmount_engine(engine, merged)
    assert not is_mounted(merged), f"{merged} still mounted after unmount"
    still_running = wait_for_exit(daemon_pids, DAEMON_EXIT_TIMEOUT)
    assert not still_running, (
        f"lamina daemon pids {still_running} still running "
        f"{DAEMON_EXIT_TIMEOUT} s after unmount"
    )
    reports = sanitizer_reports(log_path, sanitizer_log)
    assert not reports, "sanitizer reports from lamina:\n" + "\n".join(reports)

    lower_after = manifest(layers["lower"])
    assert lower_after == lower_before, (
        "the lower layer changed:\n"
        + manifest_differences(lower_before, lower_after)
    )
    assert not (layers["lower"] / "usr/bin" / PACKAGE).exists()

    # The same upper and work directories under the kernel's overlayfs.
    kernel_merged = workspace / "kernel-merged"
    kernel_merged.mkdir()
    mount_kernel_overlay(layers, kernel_merged)

    result = chroot(kernel_merged, PACKAGE, timeout=60)
    assert result.returncode == 0, describe(result)
    assert result.stdout == HELLO_OUTPUT

    result = chroot(
        kernel_merged, "dpkg-query", "-W", "-f=${db:Status-Status}", PACKAGE,
        timeout=60,
    )
    assert result.returncode == 0, describe(result)
    assert result.stdout == "installed"

    result = chroot(kernel_merged, "dpkg", "--verify", PACKAGE, timeout=120)
    assert result.returncode == 0, describe(result)
    assert result.stdout == "", f"dpkg --verify {PACKAGE} reported:\n{result.stdout}"

    unmount_engine("kernel", kernel_merged)
