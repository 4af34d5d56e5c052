"""Fixtures that build a layer stack and mount it with either implementation.

A test that takes the `stack` fixture runs twice: once against kernel
overlayfs (`mount -t overlay`) and once against lamina (`lamina mount -f`).
The test fills the lower layers, calls `stack.mount()`, and checks the
merged tree. At teardown the fixture unmounts, checks that the lamina
daemon exited cleanly and logged nothing alarming, and checks that no lower
layer changed while it was mounted.
"""

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import helpers  # noqa: E402

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
LAMINA = os.environ.get("LAMINA") or os.path.join(REPO, "build", "lamina")

# Upper bounds on waits, never asserted on: a slow machine only waits longer.
MOUNT_TIMEOUT = 15.0
EXIT_TIMEOUT = 15.0

# A daemon log line that contains one of these fails the test.
LOG_ALARMS = ("lamina: error:", "AddressSanitizer", "runtime error", "LeakSanitizer")

IMPLS = ("kernel", "lamina")


def escape_layer(path):
    """Escape a layer path for lowerdir=: backslash, colon and comma."""
    return (str(path).replace("\\", "\\\\").replace(":", "\\:")
            .replace(",", "\\,"))


def make_tempdir(prefix="lamina-test."):
    """Create a fresh dir under /tmp that other users may traverse.

    Mode 0755 lets the tests that switch to another uid reach the merged
    tree inside it.
    """
    path = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    os.chmod(path, 0o755)
    return path


def lamina_for_others(directory):
    """Copy the lamina binary into directory, made by make_tempdir(), so
    that another user can run it wherever the binary under test lies;
    return the copy's path."""
    binary = os.path.join(directory, "lamina")
    shutil.copy2(LAMINA, binary)
    return binary


@contextlib.contextmanager
def scratch_mount(prefix, fstype, options=None):
    """Mount a new fstype instance on a fresh temporary dir and yield the
    dir; unmount and remove it afterwards."""
    path = make_tempdir(prefix)
    args = ["mount", "-t", fstype] + (["-o", options] if options else [])
    run(args + ["lamina-test", path])
    try:
        yield path
    finally:
        run(["umount", path], check=False)
        if helpers.find_mount(path) is None:
            os.rmdir(path)


@contextlib.contextmanager
def kernel_overlay(top):
    """Mount a kernel overlay of top/l, top/u and top/w on top/m, with
    each path escaped in the options; yield the options and unmount
    afterwards.

    A top whose name has a comma, a colon or a backslash shows in
    mountinfo in that escaped form.
    """
    for name in ("l", "u", "w", "m"):
        os.makedirs(os.path.join(top, name))
    options = ",".join(f"{key}={escape_layer(os.path.join(top, name))}"
                       for key, name in (("lowerdir", "l"),
                                         ("upperdir", "u"),
                                         ("workdir", "w")))
    run(["mount", "-t", "overlay", "overlay", "-o", options,
         os.path.join(top, "m")])
    try:
        yield options
    finally:
        run(["umount", os.path.join(top, "m")])


def wait_for(predicate, timeout, interval=0.02):
    """Poll predicate until it returns true or timeout seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def run(args, check=True, **kwargs):
    """Run a command, capturing text output; raise with its stderr if asked."""
    proc = subprocess.run(args, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, **kwargs)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"command failed with exit {proc.returncode}: {args}\n"
            f"stdout: {proc.stdout}\nstderr: {proc.stderr}")
    return proc


def run_to_files(command, output_dir, timeout=30, env=None):
    """Run command; return (exit status, stdout text, stderr text).

    Output goes to files in output_dir rather than to pipes, so a daemon
    that detaches with a stream still open cannot stall the caller.
    """
    out_path = os.path.join(output_dir, "command.stdout")
    err_path = os.path.join(output_dir, "command.stderr")
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.run(command, stdin=subprocess.DEVNULL,
                              stdout=out, stderr=err, timeout=timeout,
                              env=env)
    with open(out_path, errors="replace") as out, \
            open(err_path, errors="replace") as err:
        return proc.returncode, out.read(), err.read()


def run_lamina(args, output_dir, timeout=30, binary=None, env=None):
    """Run lamina with args through run_to_files.

    binary replaces the command prefix, e.g. ["/usr/sbin/chroot", root,
    "/lamina"].
    """
    require_lamina()
    command = (binary or [LAMINA]) + list(args)
    return run_to_files(command, output_dir, timeout, env)


def require_lamina():
    if not os.access(LAMINA, os.X_OK):
        raise AssertionError(
            f"lamina binary not found or not executable at {LAMINA}: "
            "run make in the repository or set LAMINA")


def kernel_log_tail(lines=5):
    proc = run(["dmesg"], check=False)
    return "\n".join(proc.stdout.splitlines()[-lines:])


def force_unmount(path):
    """Unmount path, retrying while busy, with umount -l as the last resort.

    Returns a list of problems; an empty list means path is not mounted.
    """
    problems = []
    for _ in range(20):
        if helpers.find_mount(path) is None:
            return problems
        proc = run(["umount", path], check=False)
        if proc.returncode == 0 and helpers.find_mount(path) is None:
            return problems
        time.sleep(0.1)
    problems.append(f"umount {path} kept failing; detaching it lazily")
    run(["umount", "-l", path], check=False)
    if helpers.find_mount(path) is not None:
        problems.append(f"{path} is still mounted after umount -l")
    return problems


def log_alarms(log_path):
    """Return the daemon log lines that contain an alarm word."""
    try:
        with open(log_path, errors="replace") as f:
            return [line.rstrip("\n") for line in f
                    if any(word in line for word in LOG_ALARMS)]
    except FileNotFoundError:
        return []


def read_log(log_path, limit=4000):
    try:
        with open(log_path, errors="replace") as f:
            text = f.read()
    except FileNotFoundError:
        return "<no log>"
    return text[-limit:]


class LaminaDaemon:
    """A `lamina mount -f` process started by the tests, and its log."""

    def __init__(self, merged, options, log_path, extra_args=(), env=None,
                 wrapper=()):
        require_lamina()
        self.merged = merged
        self.log_path = log_path
        self.args = [*wrapper, LAMINA, "mount", "-f", *extra_args, "-o",
                     options, merged]
        with open(log_path, "ab") as log:
            log.write(f"+ {' '.join(self.args)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=log,
                                         env={**os.environ, **(env or {})})

    @property
    def pid(self):
        return self.proc.pid

    def wait_mounted(self):
        """Wait until the FUSE mount shows up; raise if the daemon dies."""
        def ready():
            info = helpers.find_mount(self.merged)
            if info is not None and info["fstype"].startswith("fuse"):
                return True
            return self.proc.poll() is not None

        wait_for(ready, MOUNT_TIMEOUT)
        if self.proc.poll() is not None:
            raise AssertionError(
                f"lamina exited with {self.proc.returncode} before the "
                f"mount appeared; log:\n{read_log(self.log_path)}")
        if helpers.find_mount(self.merged) is None:
            self.stop()
            raise AssertionError(
                f"{self.merged} did not appear in /proc/self/mountinfo "
                f"within {MOUNT_TIMEOUT}s; log:\n{read_log(self.log_path)}")

    def wait_exit(self, timeout=EXIT_TIMEOUT):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self):
        """Make sure the daemon is gone: SIGTERM, then SIGKILL, by pid."""
        problems = []
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            if self.wait_exit(5.0) is None:
                problems.append(f"lamina pid {self.pid} ignored SIGTERM; "
                                "killed it")
                self.proc.kill()
                self.proc.wait()
        return problems

    def check(self):
        """Return problems: a non-zero exit status or alarming log lines."""
        problems = []
        code = self.proc.returncode
        if code is None:
            problems.append(f"lamina pid {self.pid} is still running")
        elif code != 0:
            problems.append(f"lamina exited with status {code}")
        for line in log_alarms(self.log_path):
            problems.append(f"lamina logged: {line}")
        if problems:
            problems.append(f"lamina log:\n{read_log(self.log_path)}")
        return problems


class Stack:
    """Lower layers, upper, work and merged dirs under one temp directory.

    Attributes are plain string paths: lowers[0] is the top (leftmost)
    lower layer.
    """

    def __init__(self, root, impl, nlower=2):
        self.root = root
        self.impl = impl
        self.lowers = [os.path.join(root, f"lower{i}") for i in range(nlower)]
        self.upper = os.path.join(root, "upper")
        self.work = os.path.join(root, "work")
        self.merged = os.path.join(root, "merged")
        for path in [*self.lowers, self.upper, self.work, self.merged]:
            os.mkdir(path)
        self.mounted_impl = None
        self.daemon = None
        self.daemons = []
        self.problems = []
        self.manifests = None
        self.log_count = 0

    # Paths ---------------------------------------------------------------

    def m(self, *parts):
        """Return a path inside the merged tree."""
        return os.path.join(self.merged, *parts)

    def u(self, *parts):
        """Return a path inside the upper layer."""
        return os.path.join(self.upper, *parts)

    def lo(self, index, *parts):
        """Return a path inside lower layer index (0 is the top lower)."""
        return os.path.join(self.lowers[index], *parts)

    # Mounting ------------------------------------------------------------

    def options(self, extra=(), upper=True, lowers=None):
        """Build the overlay option string for this stack."""
        lowers = self.lowers if lowers is None else lowers
        parts = ["lowerdir=" + ":".join(escape_layer(p) for p in lowers)]
        if upper:
            parts.append(f"upperdir={self.upper}")
            parts.append(f"workdir={self.work}")
        parts.extend(extra)
        return ",".join(parts)

    def mount(self, impl=None, extra=(), upper=True, lowers=None,
              daemon_args=(), daemon_env=None, daemon_wrapper=()):
        """Mount the stack on self.merged with impl (default: the fixture's).

        extra lists more overlay options such as "ro" or "redirect_dir=off";
        daemon_args are more lamina flags such as "-d", daemon_env adds
        variables to the daemon's environment, and daemon_wrapper is a
        command that runs the daemon, such as strace. The first mount
        records the lower-layer manifest that teardown compares against.
        """
        impl = impl or self.impl
        assert self.mounted_impl is None, "stack is already mounted"
        lowers = self.lowers if lowers is None else lowers
        self.record_lowers()
        options = self.options(extra, upper, lowers)
        if impl == "kernel":
            proc = run(["mount", "-t", "overlay", "overlay", "-o", options,
                        self.merged], check=False)
            if proc.returncode != 0:
                raise AssertionError(
                    f"kernel overlay mount failed: {proc.stderr.strip()}\n"
                    f"options: {options}\n{kernel_log_tail()}")
        elif impl == "lamina":
            # LAMINA_OPTIONS adds options to every lamina mount, for
            # running the suite in another mode, e.g. passthrough=off.
            if os.environ.get("LAMINA_OPTIONS"):
                options += "," + os.environ["LAMINA_OPTIONS"]
            self.log_count += 1
            log_path = os.path.join(self.root, f"lamina.{self.log_count}.log")
            daemon = LaminaDaemon(self.merged, options, log_path,
                                  daemon_args, daemon_env, daemon_wrapper)
            self.daemons.append(daemon)
            daemon.wait_mounted()
            self.daemon = daemon
        else:
            raise ValueError(f"unknown implementation {impl!r}")
        self.mounted_impl = impl

    def unmount(self):
        """Unmount; for lamina also wait for the daemon and check its exit."""
        if self.mounted_impl is None:
            return
        self.problems.extend(force_unmount(self.merged))
        if self.daemon is not None:
            if self.daemon.wait_exit() is None:
                self.problems.append(
                    f"lamina pid {self.daemon.pid} did not exit within "
                    f"{EXIT_TIMEOUT}s of the unmount")
                self.problems.extend(self.daemon.stop())
            self.problems.extend(self.daemon.check())
            self.daemon = None
        self.mounted_impl = None

    def remount(self, impl=None, extra=(), upper=True):
        """Unmount, then mount the same layers again, maybe with impl."""
        self.unmount()
        self.mount(impl, extra, upper)

    def other_impl(self):
        return "kernel" if self.impl == "lamina" else "lamina"

    # Teardown checks -----------------------------------------------------

    def record_lowers(self):
        """Record the lower-layer manifest once; teardown compares to it."""
        if self.manifests is None:
            self.manifests = {p: self.manifest(p) for p in self.lowers}

    @staticmethod
    def manifest(path):
        return helpers.snapshot_tree(path, with_times=True, with_ino=True)

    def check_lowers(self):
        """Return problems for every lower layer that changed since mount."""
        problems = []
        if self.manifests is None:
            return problems
        for path, before in self.manifests.items():
            after = self.manifest(path)
            for line in helpers.diff_trees(before, after)[:20]:
                problems.append(f"lower layer {path} changed: {line}")
        return problems

    def close(self):
        """Unmount and stop everything; return every problem found."""
        try:
            self.unmount()
        finally:
            for daemon in self.daemons:
                self.problems.extend(daemon.stop())
        self.problems.extend(self.check_lowers())
        return self.problems


def remove_tree(root):
    """Delete a test's temp dir unless something is still mounted inside."""
    prefix = os.path.realpath(root) + "/"
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = helpers.unescape_mountinfo(line.split(" ")[4])
            if point.startswith(prefix):
                return
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=IMPLS)
def impl(request):
    """The implementation under test: "kernel" or "lamina"."""
    return request.param


class StackSet:
    """Stacks created by one test; closing them collects every problem."""

    def __init__(self):
        self.stacks = []

    def new(self, impl, nlower=2):
        stack = Stack(make_tempdir(), impl, nlower)
        self.stacks.append(stack)
        return stack

    def close(self):
        problems = []
        for stack in self.stacks:
            problems.extend(stack.close())
        for stack in self.stacks:
            remove_tree(stack.root)
        assert not problems, "\n".join(problems)


@pytest.fixture
def make_stack(impl):
    """Factory for stacks of the current impl: make_stack(nlower=2)."""
    stacks = StackSet()
    yield lambda nlower=2: stacks.new(impl, nlower)
    stacks.close()


@pytest.fixture
def stack(make_stack):
    """A stack with two lower layers, unmounted, for the current impl."""
    return make_stack()


@pytest.fixture
def any_stack():
    """Factory for stacks with an explicit impl: any_stack("lamina")."""
    stacks = StackSet()
    yield lambda impl, nlower=2: stacks.new(impl, nlower)
    stacks.close()


@pytest.fixture
def lamina_stack(any_stack):
    """A two-lower stack that always uses lamina (no impl parameter)."""
    return any_stack("lamina")
