"""Standard mount options on both implementations, and lamina's own options."""

import errno
import mmap
import os
import stat
import subprocess

import pytest

from helpers import read_file, write_file

SCRIPT = "#!/bin/sh\nexit 0\n"


def test_noexec(stack):
    write_file(stack.lo(1, "script"), SCRIPT, mode=0o755)
    stack.mount(extra=["noexec"])

    with pytest.raises(PermissionError):
        subprocess.run([stack.m("script")], check=False)

    assert os.statvfs(stack.merged).f_flag & os.ST_NOEXEC


def test_exec_default(stack):
    write_file(stack.lo(1, "script"), SCRIPT, mode=0o755)
    stack.mount()

    proc = subprocess.run([stack.m("script")], check=False)

    assert proc.returncode == 0


def test_nodev(stack):
    os.mknod(stack.lo(1, "null"), stat.S_IFCHR | 0o666, os.makedev(1, 3))
    stack.mount(extra=["nodev"])

    with pytest.raises(OSError) as info:
        os.open(stack.m("null"), os.O_RDONLY)

    assert info.value.errno == errno.EACCES
    assert os.statvfs(stack.merged).f_flag & os.ST_NODEV


def test_device_open_default(stack):
    """Without nodev, a device node opens as the device (here: null)."""
    os.mknod(stack.lo(1, "null"), stat.S_IFCHR | 0o666, os.makedev(1, 3))
    stack.mount()

    fd = os.open(stack.m("null"), os.O_RDWR)
    try:
        written = os.write(fd, b"discarded")
        content = os.read(fd, 100)
    finally:
        os.close(fd)

    assert written == 9
    assert content == b""


def test_nosuid_flag(stack):
    stack.mount(extra=["nosuid"])

    assert os.statvfs(stack.merged).f_flag & os.ST_NOSUID


def test_noatime_flag(stack):
    stack.mount(extra=["noatime"])

    assert os.statvfs(stack.merged).f_flag & os.ST_NOATIME


@pytest.mark.parametrize("mode", ["on", "off"])
def test_passthrough_io(lamina_stack, mode):
    """Reads, writes, mmap and copy-up work with passthrough=on and =off.

    lamina only: passthrough is not a kernel overlayfs option.
    """
    stack = lamina_stack
    data = os.urandom(256 << 10)
    write_file(stack.lo(1, "f"), data)
    write_file(stack.lo(1, "g"), b"0" * 8192)
    stack.mount(extra=[f"passthrough={mode}"])

    assert read_file(stack.m("f")) == data
    with open(stack.m("f"), "ab") as f:
        f.write(b"tail")
    with open(stack.m("g"), "r+b") as f:
        with mmap.mmap(f.fileno(), 8192) as m:
            m[0:4] = b"MMAP"
    os.truncate(stack.m("f"), 1000)

    assert read_file(stack.m("f")) == data[:1000]
    assert read_file(stack.u("f")) == data[:1000]
    assert read_file(stack.m("g"))[:5] == b"MMAP0"
    assert read_file(stack.u("g"))[:5] == b"MMAP0"
    assert read_file(stack.lo(1, "f")) == data
