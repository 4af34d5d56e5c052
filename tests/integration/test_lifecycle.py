"""The lamina daemon's life: mount, unmount, signals and memory use.

These tests run on lamina only, since they check the daemon itself.
"""

import os
import signal
import subprocess
import sys
import threading
import time

from conftest import (
    EXIT_TIMEOUT,
    LAMINA,
    LaminaDaemon,
    force_unmount,
    read_log,
    run,
    run_lamina,
    wait_for,
)
from helpers import find_mount, read_file, rss_kib, write_file


def daemon_pids(merged):
    """Return pids of lamina processes whose arguments name merged.

    The background daemon's pid is not reported anywhere, so this reads
    /proc/PID/exe and /proc/PID/cmdline. merged is a fresh temp path, so
    only daemons this test started can match.
    """
    pids = []
    target = os.path.realpath(LAMINA)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            exe = os.readlink(f"/proc/{entry}/exe")
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if exe == target and os.fsencode(merged) in args:
            pids.append(int(entry))
    return pids


def pid_alive(pid):
    """Tell whether pid exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z"


def stop_leftover_daemons(merged):
    """Unmount merged and wait for this test's daemons to exit.

    Returns the pids still alive EXIT_TIMEOUT seconds after the unmount,
    which it then ends with SIGTERM.
    """
    force_unmount(merged)
    pids = daemon_pids(merged)
    wait_for(lambda: not any(pid_alive(pid) for pid in pids), EXIT_TIMEOUT)
    leftover = [pid for pid in pids if pid_alive(pid)]
    for pid in leftover:
        os.kill(pid, signal.SIGTERM)
    return leftover


def test_background_mount_ready(lamina_stack):
    """lamina mount without -f returns only once the mount serves requests."""
    stack = lamina_stack
    write_file(stack.lo(0, "hello"), "world")

    stack.record_lowers()
    try:
        code, _out, err = run_lamina(["mount", "-o", stack.options(),
                                      stack.merged], stack.root)
        info = find_mount(stack.merged)
        # No retry and no sleep: the mount must work the moment
        # lamina mount has returned.
        names = os.listdir(stack.merged) if info else None
        content = read_file(stack.m("hello")) if info else None
    finally:
        leftover = stop_leftover_daemons(stack.merged)

    assert code == 0, err
    assert info is not None, "not mounted after lamina mount returned"
    assert info["fstype"] == "fuse.lamina"
    assert names == ["hello"]
    assert content == b"world"
    assert leftover == [], "daemon still running after umount"


def background_mount(stack):
    """Mount stack in the background; return the daemon's pid."""
    code, _out, err = run_lamina(["mount", "-o", stack.options(),
                                  stack.merged], stack.root)
    assert code == 0, err
    pids = daemon_pids(stack.merged)
    assert len(pids) == 1, f"expected one daemon, found {pids}"
    return pids[0]


def test_lamina_umount(lamina_stack):
    """lamina umount removes a background mount and the daemon exits."""
    stack = lamina_stack
    try:
        pid = background_mount(stack)

        code, _out, err = run_lamina(["umount", stack.merged], stack.root)

        assert code == 0, err
        assert find_mount(stack.merged) is None
        assert wait_for(lambda: not pid_alive(pid), EXIT_TIMEOUT), (
            "daemon still running after lamina umount")
    finally:
        stop_leftover_daemons(stack.merged)


def test_mount_over_dead_mount(lamina_stack):
    """A mount over a mount whose daemon was killed names the way out,
    and lamina umount clears it for the next mount."""
    stack = lamina_stack
    try:
        pid = background_mount(stack)
        os.kill(pid, signal.SIGKILL)
        assert wait_for(lambda: not pid_alive(pid), EXIT_TIMEOUT)

        code, _out, err = run_lamina(["mount", "-o", stack.options(),
                                      stack.merged], stack.root)

        assert code != 0
        assert len(err.splitlines()) == 1, err
        assert "lamina umount" in err
        code, _out, err = run_lamina(["umount", stack.merged], stack.root)
        assert code == 0, err
        background_mount(stack)
        code, _out, err = run_lamina(["umount", stack.merged], stack.root)
        assert code == 0, err
    finally:
        stop_leftover_daemons(stack.merged)


def test_lamina_umount_stopped_daemon(lamina_stack):
    """lamina umount names a stopped daemon at once, with the fix."""
    stack = lamina_stack
    try:
        pid = background_mount(stack)
        os.kill(pid, signal.SIGSTOP)
        try:
            start = time.monotonic()
            code, _out, err = run_lamina(["umount", stack.merged],
                                         stack.root, timeout=20)
            elapsed = time.monotonic() - start
        finally:
            os.kill(pid, signal.SIGCONT)

        assert code == 0, err
        assert find_mount(stack.merged) is None
        assert f"its daemon, pid {pid}, is stopped (state T)" in err
        assert f"kill -CONT {pid}" in err
        # The full wait for a daemon that does not finish is 30 seconds.
        assert elapsed < 10, f"lamina umount took {elapsed:.1f} s"
        assert wait_for(lambda: not pid_alive(pid), EXIT_TIMEOUT), (
            "daemon still running after SIGCONT")
    finally:
        stop_leftover_daemons(stack.merged)


def test_first_request_races_init(lamina_stack):
    """A request sent the moment the mount appears gets a real reply.

    The kernel lists a FUSE mount before the daemon has replied to INIT
    and keeps the first requests waiting until then. A worker thread can read one
    of them while another is still sending the INIT reply; it must not
    fail with EIO. The race is narrow, so the test mounts many times and
    polls the mount table without sleeping.
    """
    stack = lamina_stack
    write_file(stack.lo(0, "f"), "x")
    failures = []
    for round_no in range(60):
        log_path = os.path.join(stack.root, f"race.{round_no}.log")
        daemon = LaminaDaemon(stack.merged, stack.options(), log_path)
        stack.daemons.append(daemon)
        while find_mount(stack.merged) is None:
            assert daemon.proc.poll() is None, read_log(log_path)
        try:
            os.statvfs(stack.merged)
            os.stat(stack.m("f"))
        except OSError as e:
            failures.append(f"round {round_no}: {e}")
        force_unmount(stack.merged)
        assert daemon.wait_exit() == 0, read_log(log_path)
    assert not failures, failures


def test_lamina_umount_foreground(lamina_stack):
    """lamina umount ends a foreground daemon, which exits with status 0."""
    stack = lamina_stack
    stack.mount()

    code, _out, err = run_lamina(["umount", stack.merged], stack.root)

    assert code == 0, err
    assert find_mount(stack.merged) is None
    assert stack.daemon.wait_exit() == 0


def test_plain_umount_stops_daemon(lamina_stack):
    stack = lamina_stack
    stack.mount()

    run(["umount", stack.merged])

    assert stack.daemon.wait_exit() == 0
    assert find_mount(stack.merged) is None


def test_sigterm_unmounts(lamina_stack):
    stack = lamina_stack
    stack.mount()

    os.kill(stack.daemon.pid, signal.SIGTERM)

    assert stack.daemon.wait_exit() == 0
    assert find_mount(stack.merged) is None


def make_big_lower(stack, size):
    chunk = os.urandom(1 << 20)
    with open(stack.lo(1, "big"), "wb") as f:
        for _ in range(size >> 20):
            f.write(chunk)


def test_sigterm_during_copyup(lamina_stack):
    """SIGTERM while an open copies up a 256 MiB file: the daemon exits
    with status 0, with nothing leaked (the sanitizer build checks), and
    the upper layer has the whole copy or none."""
    stack = lamina_stack
    size = 256 << 20
    make_big_lower(stack, size)
    stack.mount()
    staging = os.path.join(stack.work, "work")
    opener = threading.Thread(target=append_nothing, args=(stack.m("big"),))
    opener.start()

    wait_for(lambda: os.listdir(staging) or not opener.is_alive(), 10)
    os.kill(stack.daemon.pid, signal.SIGTERM)
    opener.join(30)

    assert not opener.is_alive()
    assert stack.daemon.wait_exit() == 0
    assert find_mount(stack.merged) is None
    if os.path.exists(stack.u("big")):
        assert os.path.getsize(stack.u("big")) == size


def test_killed_open_during_copyup(lamina_stack):
    """An open killed while it copies up a file: the copy-up completes,
    and the daemon keeps no descriptor of the file afterwards."""
    stack = lamina_stack
    make_big_lower(stack, 256 << 20)
    stack.mount()
    pid = stack.daemon.pid
    staging = os.path.join(stack.work, "work")
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; open(sys.argv[1], 'ab')",
         stack.m("big")])

    wait_for(lambda: os.listdir(staging) or child.poll() is not None, 10)
    child.kill()
    child.wait()
    wait_for(lambda: os.path.exists(stack.u("big")), 30)

    assert os.path.getsize(stack.u("big")) == 256 << 20
    assert wait_for(lambda: not fds_of_big(pid), 10), fds_of_big(pid)


def fds_of_big(pid):
    """Return the daemon's descriptors of the big file in any layer, or of
    a file in the staging directory. The daemon reaches each layer
    through a private mount, so the paths start at the layer's root."""
    found = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            continue  # closed meanwhile
        if target.endswith("/big") or "/work/work/" in target:
            found.append(target)
    return found


def append_nothing(path):
    """Open path for appending and close it. An error is expected when
    the mount goes away meanwhile."""
    try:
        with open(path, "ab"):
            pass
    except OSError:
        pass

def test_sigint_unmounts(lamina_stack):
    stack = lamina_stack
    stack.mount()

    os.kill(stack.daemon.pid, signal.SIGINT)

    assert stack.daemon.wait_exit() == 0
    assert find_mount(stack.merged) is None


def test_umount_busy_then_free(lamina_stack):
    """umount of a busy mount fails with EBUSY and leaves it working."""
    stack = lamina_stack
    write_file(stack.lo(0, "f"), "data")
    stack.mount()

    fd = os.open(stack.m("f"), os.O_RDONLY)
    try:
        busy = run(["umount", stack.merged], check=False)
        still_mounted = find_mount(stack.merged) is not None
        content = os.pread(fd, 4, 0)
    finally:
        os.close(fd)

    assert busy.returncode != 0
    assert still_mounted
    assert content == b"data"
    assert stack.daemon.proc.poll() is None, "daemon died on a busy umount"


def test_debug_logs_requests(lamina_stack):
    """-d logs each request: 50 lookups of new names give 50+ log lines.
    Without the prefetch, which would list the directory after the
    second lookup and spare the other 48."""
    stack = lamina_stack
    for i in range(50):
        write_file(stack.lo(0, f"f{i}"), "")
    stack.mount(extra=["prefetch=off"], daemon_args=["-d"])
    with open(stack.daemon.log_path) as f:
        before = len(f.readlines())

    for i in range(50):
        os.stat(stack.m(f"f{i}"))

    with open(stack.daemon.log_path) as f:
        after = len(f.readlines())
    assert after - before >= 50


def drop_caches():
    """Make the kernel forget unused dentries and inodes (sends FORGET)."""
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("2\n")


def test_forget_bounds_memory(lamina_stack):
    """The daemon frees nodes the kernel forgets, so its RSS stops growing.

    Each round looks up 10,000 lower files, creates 10,000 new files,
    stats them, then drops the kernel's dentry and inode caches, which
    sends FORGET for all of them. A daemon that keeps every node it ever
    handed out grows in each round by about what the first round cost.
    The check compares memory sizes only, never time.
    """
    stack = lamina_stack
    count = 10_000
    os.makedirs(stack.lo(0, "tree"))
    for i in range(count):
        open(stack.lo(0, "tree", f"f{i:05d}"), "wb").close()
    # ASan keeps freed memory in quarantine, which would look like a leak.
    asan_options = os.environ.get("ASAN_OPTIONS", "")
    env = {"ASAN_OPTIONS": ":".join(filter(None, [
        asan_options, "quarantine_size_mb=0",
        "thread_local_quarantine_size_kb=0"]))}
    stack.mount(daemon_env=env)
    pid = stack.daemon.pid
    drop_caches()
    base = rss_kib(pid)

    rss = []
    for round_number in range(5):
        for name in os.listdir(stack.m("tree")):
            os.lstat(stack.m("tree", name))
        new_dir = stack.m(f"round{round_number}")
        os.mkdir(new_dir)
        for i in range(count):
            path = os.path.join(new_dir, f"n{i:05d}")
            open(path, "wb").close()
            os.lstat(path)
        drop_caches()
        rss.append(rss_kib(pid))

    # The daemon returns freed memory to the system in batches, so RSS
    # moves by a few MiB between rounds. Keeping the 80,000 nodes of the
    # later rounds would cost over 10 MiB, so 4 MiB still separates the
    # two cases.
    first_round = max(rss[0] - base, 4096)
    later_growth = rss[-1] - rss[0]
    assert later_growth < first_round, (
        f"RSS in KiB: base {base}, after each round {rss}")


def test_sigterm_leaves_covering_mount(lamina_stack):
    """A daemon stopped by SIGTERM unmounts by path. When another
    filesystem covers its mount point, it leaves both mounted and keeps
    serving through descriptors opened before, until the user unmounts."""
    stack = lamina_stack
    write_file(stack.lo(0, "f"), b"data")
    stack.mount()
    fd = os.open(stack.merged, os.O_RDONLY | os.O_DIRECTORY)
    try:
        run(["mount", "-t", "tmpfs", "lamina-cover", stack.merged])
        try:
            stack.daemon.proc.send_signal(signal.SIGTERM)
            assert wait_for(lambda: "another filesystem is mounted over"
                            in read_file(stack.daemon.log_path).decode(
                                errors="replace"), 10)
            assert find_mount(stack.merged)["fstype"] == "tmpfs"
            assert stack.daemon.proc.poll() is None
            with open(os.open("f", os.O_RDONLY, dir_fd=fd), "rb") as f:
                assert f.read() == b"data"
        finally:
            run(["umount", stack.merged])
    finally:
        os.close(fd)
    assert find_mount(stack.merged)["fstype"].startswith("fuse")


def test_plain_umount_logs_no_cover_warning(lamina_stack):
    """After umount(8) the mount point shows the directory below, which
    is no other filesystem mounted over it: the daemon exits quietly."""
    stack = lamina_stack
    write_file(stack.lo(0, "f"), b"data")
    stack.mount()
    daemon = stack.daemon
    run(["umount", stack.merged])
    assert daemon.wait_exit() == 0
    log = read_file(daemon.log_path).decode(errors="replace")
    assert "another filesystem is mounted over" not in log


def test_exit_spares_mount_that_took_the_place(lamina_stack):
    """A filesystem mounted where lamina was, after a lazy unmount and
    before the daemon exits, may get the same device number. The daemon
    leaves it mounted and logs no warning."""
    stack = lamina_stack
    stack.mount(extra=["prefetch=off"])
    daemon = stack.daemon
    os.kill(daemon.pid, signal.SIGSTOP)
    try:
        run(["umount", "-l", "--no-canonicalize", stack.merged])
        run(["mount", "-t", "tmpfs", "lamina-next", stack.merged])
    finally:
        os.kill(daemon.pid, signal.SIGCONT)
    try:
        assert daemon.wait_exit() == 0
        assert find_mount(stack.merged)["fstype"] == "tmpfs"
        log = read_file(daemon.log_path).decode(errors="replace")
        assert "another filesystem is mounted over" not in log
    finally:
        run(["umount", stack.merged])


def test_background_mount_with_closed_streams(lamina_stack):
    """lamina mount started with stdin, stdout and stderr closed still
    serves its layers from the background."""
    stack = lamina_stack
    write_file(stack.lo(0, "f"), b"data")
    options = (f"lowerdir={stack.lowers[0]}:{stack.lowers[1]},"
               f"upperdir={stack.upper},workdir={stack.work}")
    run(["sh", "-c", f'"$0" mount -o "$1" "$2" <&- >&- 2>&-', LAMINA,
         options, stack.merged])
    try:
        assert read_file(stack.m("f")) == b"data"
        write_file(stack.m("g"), b"new")
        assert read_file(stack.u("g")) == b"new"
    finally:
        run(["umount", stack.merged])
    assert wait_for(lambda: not daemon_pids(stack.merged), 10)
