"""FUSE over io_uring: requests that come through the per-CPU ring queues.

Each test here switches the fuse module's enable_uring parameter to the
value it needs and puts the old value back. The parameter only decides
whether FUSE connections made while it is on may use io_uring.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import run_lamina
from helpers import write_file, read_file

PARAM = "/sys/module/fuse/parameters/enable_uring"


def set_param(value):
    with open(PARAM, "w") as f:
        f.write(value)


def param_set_for_test(value):
    """Set enable_uring to value for one test, then restore it."""
    if not os.access(PARAM, os.W_OK):
        pytest.skip(f"{PARAM} is missing (kernel older than 6.14)")
    with open(PARAM) as f:
        old = f.read().strip()
    set_param(value)
    try:
        yield
    finally:
        set_param(old)


@pytest.fixture(params=["Y", "N"], ids=["uring-on", "uring-off"])
def uring(request):
    """The kernel's enable_uring set to the parameter, then restored."""
    for _ in param_set_for_test(request.param):
        yield request.param == "Y"


@pytest.fixture
def uring_on():
    yield from param_set_for_test("Y")


def features(stack):
    code, out, err = run_lamina(["status", "--json", stack.merged],
                                stack.root)
    assert code == 0, err
    return json.loads(out)["mounts"][0]["features"]


def test_status_reports_ring_use(lamina_stack, uring):
    """With enable_uring on, lamina takes requests through the ring and
    status reports it. With it off, the mount reads /dev/fuse."""
    stack = lamina_stack
    write_file(stack.lo(0, "f"), b"lower")
    stack.mount()

    assert read_file(stack.m("f")) == b"lower"
    assert features(stack)["io_uring"] is uring
    code, out, err = run_lamina(["status", stack.merged], stack.root)
    assert code == 0, err
    assert f"io_uring={'yes' if uring else 'no'}" in out


def test_option_off_keeps_dev_fuse(lamina_stack, uring_on):
    """io_uring=off declines the ring even when the kernel offers it."""
    stack = lamina_stack
    stack.mount(extra=["io_uring=off"])
    write_file(stack.m("new"), b"x")

    assert features(stack)["io_uring"] is False
    assert read_file(stack.u("new")) == b"x"


@pytest.mark.parametrize("passthrough", ["on", "off"])
def test_file_data_through_the_ring(lamina_stack, uring_on, passthrough):
    """Reads and writes of every size up to several ring buffers give the
    same bytes, also after a remount, with and without passthrough."""
    stack = lamina_stack
    sizes = [0, 1, 4095, 4096, 131075, 1 << 20, (3 << 20) + 17]
    for size in sizes:
        write_file(stack.lo(0, f"low{size}"), os.urandom(size))
    extra = [f"passthrough={passthrough}"]
    stack.mount(extra=extra)
    assert features(stack)["io_uring"] is True

    data = {}
    for size in sizes:
        data[size] = os.urandom(size)
        write_file(stack.m(f"new{size}"), data[size])
        assert read_file(stack.m(f"low{size}")) == read_file(
            stack.lo(0, f"low{size}"))
    with open(stack.m("low1048576"), "r+b") as f:
        f.seek(1000)
        f.write(b"patched")
        f.seek(995)
        assert f.read(20) == read_file(stack.lo(0, "low1048576"))[995:1000] \
            + b"patched" + read_file(stack.lo(0, "low1048576"))[1007:1015]
    stack.remount(extra=extra)

    for size in sizes:
        assert read_file(stack.m(f"new{size}")) == data[size]
        assert read_file(stack.u(f"new{size}")) == data[size]


def test_metadata_through_the_ring(lamina_stack, uring_on):
    """Long names, a listing of thousands, an xattr value of a block and a long
    symlink target pass through the ring buffers intact."""
    stack = lamina_stack
    names = {f"{i:04d}" + "n" * 251 for i in range(3000)}
    os.mkdir(stack.lo(0, "big"))
    for name in names:
        write_file(stack.lo(0, "big", name))
    stack.mount()

    assert set(os.listdir(stack.m("big"))) == names
    value = os.urandom(3500)
    write_file(stack.m("x"), b"")
    os.setxattr(stack.m("x"), "user.big", value)
    assert os.getxattr(stack.m("x"), "user.big") == value
    assert "user.big" in os.listxattr(stack.m("x"))
    target = "t" * 4095
    os.symlink(target, stack.m("link"))
    assert os.readlink(stack.m("link")) == target
    first = sorted(names)[0]
    os.rename(stack.m("big", first), stack.m("moved"))
    os.link(stack.m("moved"), stack.m("linked"))
    assert os.stat(stack.m("linked")).st_nlink == 2
    os.unlink(stack.m("big", sorted(names)[1]))
    assert len(os.listdir(stack.m("big"))) == len(names) - 2
    assert os.statvfs(stack.m("")).f_bsize > 0


CPU_LOOP = """
import os, sys
os.sched_setaffinity(0, {int(sys.argv[1])})
path = sys.argv[2]
for i in range(2000):
    os.stat(path)
    try:
        os.getxattr(path, "user.missing")
    except OSError:
        pass
    with open(path, "rb") as f:
        assert f.read() == b"shared"
"""


def test_requests_from_every_cpu(lamina_stack, uring_on):
    """Callers bound to each CPU at once all get replies, so every queue
    is served."""
    stack = lamina_stack
    write_file(stack.lo(0, "f"), b"shared")
    stack.mount()

    cpus = sorted(os.sched_getaffinity(0))
    procs = [subprocess.Popen([sys.executable, "-c", CPU_LOOP, str(cpu),
                               stack.m("f")]) for cpu in cpus * 2]
    codes = [p.wait(timeout=120) for p in procs]

    assert codes == [0] * len(procs)


def test_daemon_bound_to_one_cpu(lamina_stack, uring_on):
    """A daemon that may run on one CPU only still serves the queues of
    the others, from that CPU."""
    stack = lamina_stack
    write_file(stack.lo(0, "f"), b"shared")
    first = min(os.sched_getaffinity(0))
    stack.mount(daemon_wrapper=("taskset", "-c", str(first)))
    assert features(stack)["io_uring"] is True

    cpus = sorted(os.sched_getaffinity(0))
    procs = [subprocess.Popen([sys.executable, "-c", CPU_LOOP, str(cpu),
                               stack.m("f")]) for cpu in cpus]
    codes = [p.wait(timeout=120) for p in procs]

    assert codes == [0] * len(procs)


def test_sigterm_unmounts_with_the_ring(lamina_stack, uring_on):
    """SIGTERM unmounts and the daemon exits cleanly while its ring
    threads wait for requests."""
    stack = lamina_stack
    stack.mount()
    assert features(stack)["io_uring"] is True

    stack.daemon.proc.send_signal(signal.SIGTERM)

    assert stack.daemon.wait_exit() == 0
    assert not os.path.ismount(stack.merged)
    stack.mounted_impl = None
    problems = stack.daemon.check()
    stack.daemon = None
    assert problems == []


CREATE_LOOP = """
import os, sys
top = sys.argv[1]
for i in range(3000):
    fd = os.open(os.path.join(top, f"f{i}"), os.O_CREAT | os.O_WRONLY, 0o644)
    os.fchmod(fd, 0o600)
    os.close(fd)
"""


def busy_loops():
    """One busy loop bound to each CPU this process may use."""
    return [subprocess.Popen(["taskset", "-c", str(cpu), "sh", "-c",
                              "while :; do :; done"])
            for cpu in sorted(os.sched_getaffinity(0))]


def idle_threads(pid):
    """The daemon's threads that run at SCHED_IDLE now."""
    found = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            if os.sched_getscheduler(int(tid)) == os.SCHED_IDLE:
                found.append(int(tid))
        except ProcessLookupError:
            pass
    return found


def test_one_caller_beside_busy_loops(lamina_stack, uring_on):
    """A caller that shares its CPU with a busy loop still gets every
    reply: ring threads that wait at idle priority for their CPU go back
    to normal priority. The bound is for a hang, not a measurement."""
    stack = lamina_stack
    stack.mount()
    os.mkdir(stack.m("d"))
    loops = busy_loops()
    try:
        proc = subprocess.Popen([sys.executable, "-c", CREATE_LOOP,
                                 stack.m("d")])
        assert proc.wait(timeout=300) == 0
    finally:
        for loop in loops:
            loop.kill()
            loop.wait()
    assert len(os.listdir(stack.u("d"))) == 3000


def test_unused_mount_leaves_idle_priority(lamina_stack, uring_on):
    """After a caller stops, no ring thread stays at idle priority, so the
    guard that watches such threads can sleep."""
    stack = lamina_stack
    stack.mount()
    os.mkdir(stack.m("d"))
    subprocess.run([sys.executable, "-c", CREATE_LOOP, stack.m("d")],
                   check=True, timeout=300)
    left = idle_threads(stack.daemon.pid)
    for _ in range(100):
        if not left:
            break
        time.sleep(0.1)
        left = idle_threads(stack.daemon.pid)
    assert left == []
