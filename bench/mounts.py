"""Mounting and unmounting of each implementation under test.

Every mount made here is recorded in ACTIVE until it is unmounted, so the
harness can take down whatever is left on any exit path.
"""

import os
import re
import signal
import subprocess
import time

MOUNT_TIMEOUT = 60  # seconds a mount command or daemon gets to be ready
UNMOUNT_TIMEOUT = 60  # seconds an unmount command gets
# Seconds a FUSE daemon gets to exit after unmount. After a find over one
# million files, fuse-overlayfs 1.10, unionfs-fuse 1.0 and lamina each took
# more than 30 s to exit once unmounted.
DAEMON_EXIT_TIMEOUT = 180

ACTIVE = []


class MountError(Exception):
    pass


def _unescape(field):
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mount_table():
    """Return (mount point, file system type) pairs from /proc/self/mountinfo."""
    table = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            table.append((_unescape(left.split()[4]), right.split()[0]))
    return table


def is_mounted(path):
    return any(point == path for point, _ in mount_table())


def mounts_below(directory):
    prefix = directory.rstrip("/") + "/"
    return [point for point, _ in mount_table() if point.startswith(prefix)]


def tail(path, lines=5):
    """Return the last lines of a log file, joined, for error messages."""
    try:
        with open(path, errors="replace") as f:
            return " | ".join(f.read().strip().splitlines()[-lines:])
    except OSError:
        return ""


def run_command(argv, timeout, what):
    """Run a setup command and raise MountError with its output on failure."""
    try:
        done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              timeout=timeout, errors="replace")
    except subprocess.TimeoutExpired:
        raise MountError(f"{what} timed out after {timeout} s: {' '.join(argv)}")
    except OSError as e:
        raise MountError(f"{what} failed: {' '.join(argv)}: {e}")
    if done.returncode != 0:
        output = " | ".join(done.stdout.strip().splitlines()[-5:])
        raise MountError(f"{what} failed with exit status {done.returncode}: "
                         f"{' '.join(argv)}: {output}")
    return done.stdout


def vm_rss_bytes(pid):
    """Return VmRSS of pid in bytes, from /proc/PID/status."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise MountError(f"no VmRSS in /proc/{pid}/status")


class Mount:
    """One mounted union (or the plain lower directory for native)."""

    def __init__(self, impl, path, scratch=None, proc=None, pid=None, log_path=None):
        self.impl = impl
        self.path = path
        self.scratch = scratch
        self.proc = proc  # Popen of a daemon started with -f, if any
        self.pid = pid  # the daemon's pid, when known
        self.log_path = log_path
        self.argv = []


def _kill_own(pid, proc):
    """Send SIGTERM, then SIGKILL, to a daemon this harness started."""
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 10)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                return
            if proc is None and not os.path.exists(f"/proc/{pid}"):
                return
            time.sleep(0.1)


def force_unmount(m, first_argv):
    """Unmount m.path, escalating to killing the daemon and a lazy unmount.

    Returns a list of problems met on the way; an empty list means the
    mount and its daemon went away cleanly.
    """
    problems = []
    if is_mounted(m.path):
        try:
            run_command(first_argv, UNMOUNT_TIMEOUT, "unmount")
        except MountError as e:
            problems.append(str(e))
    if is_mounted(m.path) and m.pid is not None:
        _kill_own(m.pid, m.proc)
        subprocess.run(["umount", m.path], stderr=subprocess.DEVNULL)
    if is_mounted(m.path):
        subprocess.run(["umount", "-l", m.path], stderr=subprocess.DEVNULL)
        problems.append(f"needed a lazy unmount of {m.path}")
    if m.proc is not None:
        try:
            m.proc.wait(DAEMON_EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            problems.append(f"daemon pid {m.pid} did not exit after unmount; killed")
            _kill_own(m.pid, m.proc)
    elif m.pid is not None and os.path.exists(f"/proc/{m.pid}"):
        deadline = time.monotonic() + DAEMON_EXIT_TIMEOUT
        while os.path.exists(f"/proc/{m.pid}") and time.monotonic() < deadline:
            time.sleep(0.1)
        if os.path.exists(f"/proc/{m.pid}"):
            problems.append(f"daemon pid {m.pid} did not exit after unmount; killed")
            _kill_own(m.pid, None)
    if m in ACTIVE:
        ACTIVE.remove(m)
    return problems


class Implementation:
    key = ""
    label = ""
    has_daemon = False
    default = True  # run when --impls is not given

    def unavailable_reason(self):
        return None

    def mount(self, lower, scratch, debug=False, need_pid=False):
        raise NotImplementedError

    def unmount(self, m):
        return force_unmount(m, ["umount", m.path])

    @staticmethod
    def _dirs(scratch):
        upper, work, merged = (os.path.join(scratch, n) for n in ("upper", "work", "merged"))
        for d in (upper, work, merged):
            os.makedirs(d)
        return upper, work, merged


class Native(Implementation):
    """The lower directory itself, with no union on top."""

    key = "native"
    label = "native"

    def mount(self, lower, scratch, debug=False, need_pid=False):
        return Mount(self, lower)

    def unmount(self, m):
        return []


class KernelOverlay(Implementation):
    key = "kernel"
    label = "kernel overlayfs"

    def mount(self, lower, scratch, debug=False, need_pid=False):
        upper, work, merged = self._dirs(scratch)
        argv = ["mount", "-t", "overlay", "overlay", "-o",
                f"lowerdir={lower},upperdir={upper},workdir={work}", merged]
        run_command(argv, MOUNT_TIMEOUT, "mount")
        m = Mount(self, merged, scratch)
        m.argv = argv
        ACTIVE.append(m)
        return m


class FuseDaemon(Implementation):
    """A FUSE file system whose daemon is started in the foreground (-f)."""

    has_daemon = True
    program = ""

    def unavailable_reason(self):
        if not _which(self.program):
            return f"{self.program} not found in PATH"
        return None

    def daemon_argv(self, lower, upper, work, merged, debug):
        raise NotImplementedError

    def mount(self, lower, scratch, debug=False, need_pid=False):
        upper, work, merged = self._dirs(scratch)
        argv = self.daemon_argv(lower, upper, work, merged, debug)
        return self.start_daemon(argv, merged, scratch)

    def start_daemon(self, argv, merged, scratch):
        log_path = os.path.join(scratch, "daemon.log")
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=log, start_new_session=True)
        m = Mount(self, merged, scratch, proc=proc, pid=proc.pid, log_path=log_path)
        m.argv = argv
        ACTIVE.append(m)
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while not is_mounted(merged):
            if proc.poll() is not None:
                ACTIVE.remove(m)
                raise MountError(f"{argv[0]} exited with status {proc.returncode} "
                                 f"before mounting: {tail(log_path)}")
            if time.monotonic() > deadline:
                force_unmount(m, ["umount", merged])
                raise MountError(f"{argv[0]} did not mount within {MOUNT_TIMEOUT} s")
            time.sleep(0.02)
        return m


class FuseOverlayfs(FuseDaemon):
    key = "fuse-overlayfs"
    label = "fuse-overlayfs"
    program = "fuse-overlayfs"

    def daemon_argv(self, lower, upper, work, merged, debug):
        return ["fuse-overlayfs", "-f", "-o",
                f"lowerdir={lower},upperdir={upper},workdir={work}", merged]


class UnionfsFuse(FuseDaemon):
    key = "unionfs-fuse"
    label = "unionfs-fuse"
    program = "unionfs"

    def daemon_argv(self, lower, upper, work, merged, debug):
        # unionfs-fuse keeps its whiteouts in upper/.unionfs and needs no
        # work directory.
        return ["unionfs", "-f", "-o", "cow,allow_other", f"{upper}=RW:{lower}=RO", merged]


class Lamina(FuseDaemon):
    key = "lamina"
    label = "lamina"
    extra = ""  # more mount options, for the variant below

    def __init__(self, binary):
        self.binary = binary
        self.program = binary or "lamina"

    def unavailable_reason(self):
        if not self.binary:
            return "LAMINA is not set to the path of the lamina binary"
        if not os.access(self.binary, os.X_OK):
            return f"{self.binary} is missing or not executable"
        return None

    def daemon_argv(self, lower, upper, work, merged, debug):
        return [self.binary, "mount", "-f"] + (["-d"] if debug else []) + [
            "-o", self._options(lower, upper, work), merged]

    def _options(self, lower, upper, work):
        options = f"lowerdir={lower},upperdir={upper},workdir={work}"
        return f"{options},{self.extra}" if self.extra else options

    def mount(self, lower, scratch, debug=False, need_pid=False):
        if debug or need_pid:
            return super().mount(lower, scratch, debug, need_pid)
        # The usual way: `lamina mount` returns once the mount is ready
        # and leaves a daemon in the background.
        upper, work, merged = self._dirs(scratch)
        argv = [self.binary, "mount", "-o", self._options(lower, upper, work),
                merged]
        m = Mount(self, merged, scratch)
        m.argv = argv
        ACTIVE.append(m)
        try:
            run_command(argv, MOUNT_TIMEOUT, "lamina mount")
            if not is_mounted(merged):
                raise MountError(f"lamina mount returned 0 but {merged} is not a mount point")
        except MountError:
            m.pid = self._find_daemon(merged)
            force_unmount(m, ["umount", merged])
            raise
        m.pid = self._find_daemon(merged)
        return m

    def unmount(self, m):
        return force_unmount(m, [self.binary, "umount", m.path])

    def _find_daemon(self, merged):
        """Find the daemon that `lamina mount` left for merged.

        The match is on this harness's own, unique mount point among the
        arguments of a process running the lamina binary, so it only finds
        a daemon this harness started.
        """
        binary = os.path.realpath(self.binary)
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                if os.path.realpath(f"/proc/{entry}/exe") != binary:
                    continue
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    args = f.read().split(b"\0")
            except OSError:
                continue
            if merged.encode() in args:
                return int(entry)
        return None


class LaminaNoPassthrough(Lamina):
    """lamina serving every read and write itself, as it does where the
    kernel offers no passthrough or the daemon lacks CAP_SYS_ADMIN."""
    key = "lamina-nopt"
    label = "lamina, passthrough=off"
    extra = "passthrough=off"
    default = False


def _which(program):
    if "/" in program:
        return os.access(program, os.X_OK)
    return any(os.access(os.path.join(d, program), os.X_OK)
               for d in os.environ.get("PATH", "").split(os.pathsep) if d)


def implementations(lamina_binary):
    return [Native(), KernelOverlay(), FuseOverlayfs(), UnionfsFuse(), Lamina(lamina_binary),
            LaminaNoPassthrough(lamina_binary)]
