"""The kernel's writeback cache, asked for with writeback=on.

It applies only where reads and writes go through lamina, so every mount
here has passthrough=off. The kernel then gathers writes in its page
cache and sends them in large pieces, keeps mtime itself and sends it
back on close. The tests check what a user and the upper layer see:
data, sizes and times on disk, appends, write-only opens and mmap.
"""

import json
import mmap
import os
import re

import pytest

from conftest import run_lamina
from helpers import read_file, write_file

WB = ["passthrough=off", "writeback=on"]


def features(stack):
    code, out, err = run_lamina(["status", "--json", stack.merged],
                                stack.root)
    assert code == 0, err
    return json.loads(out)["mounts"][0]["features"]


def effective(extra, key, default):
    """The value of an on/off option after LAMINA_OPTIONS, which the
    fixture adds to every mount of a run in another mode."""
    value = default
    options = list(extra) + os.environ.get("LAMINA_OPTIONS", "").split(",")
    for option in options:
        if option.startswith(key + "="):
            value = option.split("=", 1)[1] == "on"
    return value


def write_requests(stack):
    with open(stack.daemon.log_path, errors="replace") as f:
        return len(re.findall(r"opcode: WRITE\b", f.read()))


@pytest.mark.parametrize("extra", [WB, ["passthrough=off"], ["writeback=off"],
                                   []])
def test_writeback_follows_option(lamina_stack, extra):
    stack = lamina_stack
    write_file(stack.lo(1, "f"), b"x")
    stack.mount(extra=extra)
    feats = features(stack)
    expected = (effective(extra, "writeback", False)
                and not feats["passthrough"])
    assert feats["writeback"] is expected
    code, out, err = run_lamina(["status", stack.merged], stack.root)
    assert code == 0, err
    assert f"writeback={'yes' if expected else 'no'}" in out


def test_writeback_gives_way_to_passthrough(lamina_stack):
    """With passthrough in use the kernel cannot cache writes: the option
    has no effect, and the log states it."""
    stack = lamina_stack
    stack.mount(extra=["writeback=on"])
    feats = features(stack)
    assert feats["writeback"] is not feats["passthrough"]
    with open(stack.daemon.log_path) as f:
        said = "writeback=on has no effect" in f.read()
    assert said is feats["passthrough"]


def test_small_writes_are_gathered(lamina_stack):
    stack = lamina_stack
    stack.mount(extra=WB, daemon_args=["-d"])
    before = write_requests(stack)
    path = stack.m("lines")
    with open(path, "wb", buffering=0) as f:
        for i in range(2000):
            f.write(b"line %05d\n" % i)
    sent = write_requests(stack) - before
    expected = b"".join(b"line %05d\n" % i for i in range(2000))
    assert read_file(stack.u("lines")) == expected
    assert sent <= 20, f"{sent} WRITE requests for 2000 writes"


def test_mtime_on_disk_matches_after_close(lamina_stack):
    stack = lamina_stack
    write_file(stack.lo(1, "f"), b"lower data\n")
    os.utime(stack.lo(1, "f"), ns=(10**18, 10**18))
    stack.mount(extra=WB)
    with open(stack.m("f"), "ab") as f:
        f.write(b"more\n")
    seen = os.stat(stack.m("f"))
    disk = os.stat(stack.u("f"))
    assert seen.st_mtime_ns == disk.st_mtime_ns
    assert seen.st_mtime_ns != 10**18
    assert seen.st_size == disk.st_size == len(b"lower data\nmore\n")
    assert read_file(stack.lo(1, "f")) == b"lower data\n"


def test_mtime_of_writes_in_one_clock_tick(lamina_stack):
    """Writes right after a truncate may leave the kernel's mtime as the
    truncate set it, when they come within one tick of its clock (about
    one file in a hundred here). The upper file must end with that mtime,
    not with the time that lamina wrote the data."""
    stack = lamina_stack
    stack.mount(extra=WB)
    for i in range(400):
        path = stack.m(f"f{i}")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.ftruncate(fd, 8 << 20)
            os.pwrite(fd, b"head", 0)
            os.pwrite(fd, b"mid", 4 << 20)
            if i % 2:
                os.fsync(fd)
        finally:
            os.close(fd)
    for i in range(400):
        seen = os.stat(stack.m(f"f{i}")).st_mtime_ns
        assert os.stat(stack.u(f"f{i}")).st_mtime_ns == seen, f"f{i}"


def test_explicit_times_survive_cached_writes(lamina_stack):
    """A time set while the file has cached writes is what ends on disk,
    as tar and cp -p rely on."""
    stack = lamina_stack
    stack.mount(extra=WB)
    path = stack.m("f")
    with open(path, "wb") as f:
        f.write(b"a" * 10000)
        os.utime(f.fileno(), ns=(2 * 10**18, 2 * 10**18))
    assert os.stat(path).st_mtime_ns == 2 * 10**18
    assert os.stat(stack.u("f")).st_mtime_ns == 2 * 10**18
    assert read_file(stack.u("f")) == b"a" * 10000


def test_partial_page_write_to_write_only_file(lamina_stack):
    """The kernel reads the rest of a page before it caches part of it,
    also for a file opened write-only whose mode forbids reading."""
    stack = lamina_stack
    data = bytes(range(256)) * 40
    write_file(stack.lo(1, "wo"), data)
    os.chmod(stack.lo(1, "wo"), 0o200)
    stack.mount(extra=WB)
    fd = os.open(stack.m("wo"), os.O_WRONLY)
    try:
        os.pwrite(fd, b"XYZ", 5000)
    finally:
        os.close(fd)
    expected = data[:5000] + b"XYZ" + data[5003:]
    assert read_file(stack.u("wo")) == expected
    assert os.stat(stack.u("wo")).st_mode & 0o777 == 0o200
    assert read_file(stack.lo(1, "wo")) == data


def test_appends_from_two_opens_land_at_the_end(lamina_stack):
    stack = lamina_stack
    write_file(stack.lo(1, "log"), b"start\n")
    stack.mount(extra=WB)
    a = os.open(stack.m("log"), os.O_WRONLY | os.O_APPEND)
    b = os.open(stack.m("log"), os.O_WRONLY | os.O_APPEND)
    try:
        for i in range(50):
            os.write(a, b"a%02d\n" % i)
            os.write(b, b"b%02d\n" % i)
    finally:
        os.close(a)
        os.close(b)
    expected = b"start\n" + b"".join(b"a%02d\nb%02d\n" % (i, i)
                                     for i in range(50))
    assert read_file(stack.m("log")) == expected
    assert read_file(stack.u("log")) == expected


def test_shared_mmap_writes_reach_the_upper_file(lamina_stack):
    stack = lamina_stack
    write_file(stack.lo(1, "map"), b"\0" * 8192)
    stack.mount(extra=WB)
    with open(stack.m("map"), "r+b") as f:
        with mmap.mmap(f.fileno(), 8192) as m:
            m[100:105] = b"hello"
            m[8000:8005] = b"world"
            m.flush()
    data = read_file(stack.u("map"))
    assert data[100:105] == b"hello" and data[8000:8005] == b"world"
    assert len(data) == 8192
    assert read_file(stack.lo(1, "map")) == b"\0" * 8192


def test_truncate_and_extend(lamina_stack):
    stack = lamina_stack
    write_file(stack.lo(1, "t"), b"0123456789" * 1000)
    stack.mount(extra=WB)
    with open(stack.m("t"), "r+b") as f:
        f.write(b"head")
        f.truncate(6)
        f.seek(20000)
        f.write(b"tail")
    expected = b"head45" + b"\0" * (20000 - 6) + b"tail"
    assert os.stat(stack.m("t")).st_size == len(expected)
    assert read_file(stack.u("t")) == expected
    assert os.stat(stack.u("t")).st_size == len(expected)


def test_fsync_puts_cached_data_on_disk(lamina_stack):
    stack = lamina_stack
    stack.mount(extra=WB)
    with open(stack.m("s"), "wb") as f:
        f.write(b"synced")
        f.flush()
        os.fsync(f.fileno())
        assert read_file(stack.u("s")) == b"synced"


def test_hard_link_written_name(lamina_stack):
    """The name written to shows the new size and mtime; another name of
    the file shows them once the kernel has forgotten its inode."""
    stack = lamina_stack
    write_file(stack.lo(1, "a"), b"hello\n")
    os.utime(stack.lo(1, "a"), ns=(10**18, 10**18))
    stack.mount(extra=WB)
    os.link(stack.m("a"), stack.m("b"))
    assert os.stat(stack.m("b")).st_size == 6
    with open(stack.m("a"), "ab") as f:
        f.write(b"more\n")
    seen = os.stat(stack.m("a"))
    assert seen.st_size == 11 and seen.st_mtime_ns != 10**18
    assert os.stat(stack.u("a")).st_mtime_ns == seen.st_mtime_ns
    assert read_file(stack.u("b")) == b"hello\nmore\n"
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("2\n")
    assert read_file(stack.m("b")) == b"hello\nmore\n"
    assert os.stat(stack.m("b")).st_mtime_ns == seen.st_mtime_ns
