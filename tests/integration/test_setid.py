"""Set-user-ID and set-group-ID bits cleared by writes, truncates and chown.

Every case runs on kernel overlayfs and on lamina and must leave the same
mode. With passthrough the kernel writes without asking lamina, and
lamina clears the bits when the kernel requests it.
"""

import os
import stat
import subprocess

from helpers import write_file
from test_fileops import run_as

OTHER = 1234


def mode_of(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def append(path, data=b"x"):
    def action():
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)

    return action


def test_write_by_other_user_clears_setid(stack):
    write_file(stack.lo(0, "f"), "data", mode=0o6777)
    stack.mount()

    assert run_as(OTHER, OTHER, [("w", append(stack.m("f")))]) == {"w": 0}

    assert mode_of(stack.m("f")) == 0o777
    stack.remount()
    assert mode_of(stack.m("f")) == 0o777


def test_write_by_root_keeps_setid(stack):
    write_file(stack.lo(0, "f"), "data", mode=0o6755)
    stack.mount()

    append(stack.m("f"))()

    assert mode_of(stack.m("f")) == 0o6755


def test_setuid_after_writes_is_cleared_again(stack):
    """A file written many times, then made set-user-ID, loses the bit at
    the next write: the kernel stops checking a file only while it has no
    set-ID bits."""
    write_file(stack.lo(0, "f"), "", mode=0o666)
    stack.mount()
    path = stack.m("f")
    actions = [(f"w{i}", append(path)) for i in range(20)]
    assert set(run_as(OTHER, OTHER, actions).values()) == {0}

    os.chmod(path, 0o4666)
    assert run_as(OTHER, OTHER, [("w", append(path))]) == {"w": 0}

    assert mode_of(path) == 0o666
    assert os.path.getsize(path) == 21


def test_setgid_without_group_exec(stack):
    """Without group execute, set-group-ID stays for a writer in the
    file's group and goes for one outside it."""
    write_file(stack.lo(0, "in"), "", mode=0o2666)
    write_file(stack.lo(0, "out"), "", mode=0o2666)
    os.chown(stack.lo(0, "in"), 0, OTHER)
    stack.mount()

    result = run_as(OTHER, OTHER, [("in", append(stack.m("in"))),
                                   ("out", append(stack.m("out")))])

    assert result == {"in": 0, "out": 0}
    assert mode_of(stack.m("in")) == 0o2666
    assert mode_of(stack.m("out")) == 0o666


def test_truncate_by_other_user_clears_setid(stack):
    write_file(stack.lo(0, "t"), "data", mode=0o6777)
    write_file(stack.lo(0, "o"), "data", mode=0o6777)
    stack.mount()

    def open_trunc():
        os.close(os.open(stack.m("o"), os.O_WRONLY | os.O_TRUNC))

    result = run_as(OTHER, OTHER, [("t", lambda: os.truncate(stack.m("t"), 1)),
                                   ("o", open_trunc)])

    assert result == {"t": 0, "o": 0}
    assert mode_of(stack.m("t")) == 0o777
    assert mode_of(stack.m("o")) == 0o777
    assert os.path.getsize(stack.m("t")) == 1


def test_chown_clears_setuid(stack):
    write_file(stack.lo(0, "f"), "data", mode=0o4755)
    stack.mount()

    os.chown(stack.m("f"), OTHER, OTHER)

    st = os.stat(stack.m("f"))
    assert (st.st_uid, st.st_gid) == (OTHER, OTHER)
    assert stat.S_IMODE(st.st_mode) == 0o755


def test_directory_setgid_survives_writes_inside(stack):
    os.makedirs(stack.lo(0, "d"))
    os.chmod(stack.lo(0, "d"), 0o2777)
    stack.mount()

    write_file(stack.m("d", "f"), "x")

    assert mode_of(stack.m("d")) == 0o2777


def test_setgid_supplementary_group(stack):
    """A member of the file's group through a supplementary group keeps
    set-group-ID on a file without group execute, writing or truncating."""
    for name in ("w", "t"):
        write_file(stack.lo(0, name), "", mode=0o2666)
        os.chown(stack.lo(0, name), 0, 4321)
    stack.mount()

    pid = os.fork()
    if pid == 0:
        try:
            os.setgroups([4321])
            os.setgid(OTHER)
            os.setuid(OTHER)
            append(stack.m("w"))()
            os.truncate(stack.m("t"), 1)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)

    assert os.path.getsize(stack.m("w")) == 1
    assert os.path.getsize(stack.m("t")) == 1
    assert mode_of(stack.m("w")) == 0o2666
    assert mode_of(stack.m("t")) == 0o2666


def test_chgrp_by_root_keeps_setgid(stack):
    write_file(stack.lo(0, "g"), "data", mode=0o2644)
    write_file(stack.lo(0, "ug"), "data", mode=0o6644)
    stack.mount()

    os.chown(stack.m("g"), -1, OTHER)
    os.chown(stack.m("ug"), OTHER, OTHER)

    assert mode_of(stack.m("g")) == 0o2644
    assert mode_of(stack.m("ug")) == 0o2644


def test_open_trunc_mode_seen_at_once(stack):
    """After an O_TRUNC open clears the bits, a stat that requests only
    the mode must not get the old one from a cache."""
    write_file(stack.lo(0, "f"), "data", mode=0o4777)
    stack.mount()
    path = stack.m("f")
    assert subprocess.check_output(["stat", "-c", "%a", path]).strip() == b"4777"

    def open_trunc():
        os.close(os.open(path, os.O_WRONLY | os.O_TRUNC))

    assert run_as(OTHER, OTHER, [("o", open_trunc)]) == {"o": 0}

    assert subprocess.check_output(["stat", "-c", "%a", path]).strip() == b"777"
