"""Unusual names and the errno of invalid operations on merged entries."""

import errno
import os
import socket

import pytest

from helpers import read_file, write_file

# Names that need care in a path-based implementation: the maximum length,
# bytes that are not UTF-8, separators of other syntaxes, leading dashes
# and dots, whitespace and a newline.
ODD_NAMES = [
    b"n" * 255,
    b"\xff\xfe-not-utf8",
    b"colon:and,comma",
    b"back\\slash",
    b"-leading-dash",
    b"..dots",
    b" space ",
    b"new\nline",
    "unicode-\u00e9\u4e2d".encode(),
]


def test_odd_names_lower(stack):
    """Lower files with odd names are listed, read and copied up."""
    lower = os.fsencode(stack.lo(1))
    for name in ODD_NAMES:
        write_file(os.path.join(lower, name), name)
    stack.mount()
    merged = os.fsencode(stack.merged)

    assert sorted(os.listdir(merged)) == sorted(ODD_NAMES)
    for name in ODD_NAMES:
        path = os.path.join(merged, name)
        assert read_file(path) == name, name
        os.chmod(path, 0o600)
        assert os.path.exists(os.path.join(os.fsencode(stack.upper), name))


def test_odd_names_created(stack):
    """Files with odd names created through the mount survive remount."""
    stack.mount()
    merged = os.fsencode(stack.merged)
    for name in ODD_NAMES:
        write_file(os.path.join(merged, name), name)

    stack.remount()

    assert sorted(os.listdir(merged)) == sorted(ODD_NAMES)
    for name in ODD_NAMES:
        assert read_file(os.path.join(merged, name)) == name, name


def test_name_too_long(stack):
    stack.mount()

    with pytest.raises(OSError) as info:
        write_file(stack.m("x" * 256), "")

    assert info.value.errno == errno.ENAMETOOLONG


def test_deep_path(stack):
    """A 40-level lower path copies up every parent."""
    parts = [f"level{i}" for i in range(40)]
    write_file(stack.lo(1, *parts, "f"), "deep")
    stack.mount()

    with open(stack.m(*parts, "f"), "ab") as f:
        f.write(b"!")

    assert read_file(stack.u(*parts, "f")) == b"deep!"


@pytest.mark.parametrize("call,target,expected", [
    ("mkdir", "lowerdir", errno.EEXIST),
    ("mkdir", "lowerfile", errno.EEXIST),
    ("rmdir", "lowerfile", errno.ENOTDIR),
    ("unlink", "lowerdir", errno.EISDIR),
    ("unlink", "missing", errno.ENOENT),
    ("rmdir", "missing", errno.ENOENT),
    ("chmod", "whiteout", errno.ENOENT),
    ("open_dir_write", "lowerdir", errno.EISDIR),
    ("open_file_as_dir", "lowerfile", errno.ENOTDIR),
    ("symlink", "lowerfile", errno.EEXIST),
    ("stat_through_file", "lowerfile", errno.ENOTDIR),
])
def test_invalid_operation_errno(stack, call, target, expected):
    os.makedirs(stack.lo(1, "lowerdir"))
    write_file(stack.lo(1, "lowerdir", "inside"), "")
    write_file(stack.lo(0, "lowerfile"), "")
    write_file(stack.lo(1, "whiteout"), "")
    stack.mount()
    os.unlink(stack.m("whiteout"))
    path = stack.m(target)
    calls = {
        "mkdir": lambda: os.mkdir(path),
        "rmdir": lambda: os.rmdir(path),
        "unlink": lambda: os.unlink(path),
        "chmod": lambda: os.chmod(path, 0o600),
        "open_dir_write": lambda: os.open(path, os.O_WRONLY),
        "open_file_as_dir": lambda: os.open(path, os.O_RDONLY
                                            | os.O_DIRECTORY),
        "symlink": lambda: os.symlink("x", path),
        "stat_through_file": lambda: os.stat(os.path.join(path, "child")),
    }

    with pytest.raises(OSError) as info:
        calls[call]()

    assert info.value.errno == expected


def test_symlink_loop(stack):
    os.symlink("b", stack.lo(1, "a"))
    os.symlink("a", stack.lo(1, "b"))
    stack.mount()

    with pytest.raises(OSError) as info:
        os.stat(stack.m("a"))

    assert info.value.errno == errno.ELOOP


def test_rename_to_same_name(stack):
    """rename(x, x) on a lower file succeeds and changes nothing."""
    write_file(stack.lo(1, "f"), "data")
    stack.mount()

    os.rename(stack.m("f"), stack.m("f"))

    assert read_file(stack.m("f")) == b"data"
    assert os.listdir(stack.merged) == ["f"]


def test_unix_socket_connect(stack):
    """A socket bound in the merged tree accepts connections by path."""
    os.makedirs(stack.lo(1, "run"))
    stack.mount()
    path = stack.m("run", "sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.bind(path)
        server.listen(1)
        client.connect(path)
        conn, _addr = server.accept()
        with conn:
            client.sendall(b"ping")
            assert conn.recv(4) == b"ping"
    finally:
        client.close()
        server.close()
