"""Copy-up: which operations copy a lower entry into upper, and what it keeps.

Each trigger test checks three things: the operation's effect in the
merged tree, that the entry now exists in upper, and that the data the
operation did not touch came along.
"""

import errno
import os
import socket
import stat
import threading
import time

import pytest

import helpers
from conftest import make_tempdir, run

from helpers import (
    UTIME_NOW,
    UTIME_OMIT,
    get_xattr,
    is_whiteout,
    make_sparse,
    read_file,
    utimensat,
    write_file,
    xattrs,
)

MTIME = 1_500_000_000  # a fixed past time, so a copy-up that resets it shows


def lower_file(stack, name="f", data="lower data", mode=0o644, layer=1):
    path = stack.lo(layer, name)
    write_file(path, data, mode=mode, mtime=MTIME)
    return path


def test_read_open_does_not_copy_up(stack):
    lower_file(stack)
    stack.mount()

    assert read_file(stack.m("f")) == b"lower data"
    os.stat(stack.m("f"))

    assert not os.path.lexists(stack.u("f"))


def test_copyup_on_write_open(stack):
    """Opening for write copies up at open time, before any write."""
    lower_file(stack)
    stack.mount()

    fd = os.open(stack.m("f"), os.O_WRONLY)
    try:
        assert read_file(stack.u("f")) == b"lower data"
    finally:
        os.close(fd)
    assert read_file(stack.m("f")) == b"lower data"


def test_copyup_on_rdwr_write(stack):
    lower_file(stack)
    stack.mount()

    with open(stack.m("f"), "r+b") as f:
        f.seek(0)
        f.write(b"LOWER")

    assert read_file(stack.m("f")) == b"LOWER data"
    assert read_file(stack.u("f")) == b"LOWER data"


def test_copyup_o_trunc(stack):
    lower_file(stack)
    stack.mount()

    fd = os.open(stack.m("f"), os.O_WRONLY | os.O_TRUNC)
    os.close(fd)

    assert os.stat(stack.m("f")).st_size == 0
    assert read_file(stack.u("f")) == b""


def test_copyup_truncate_path(stack):
    lower_file(stack)
    stack.mount()

    os.truncate(stack.m("f"), 5)

    assert read_file(stack.m("f")) == b"lower"
    assert read_file(stack.u("f")) == b"lower"


def test_copyup_chmod(stack):
    lower_file(stack)
    stack.mount()

    os.chmod(stack.m("f"), 0o600)

    assert stat.S_IMODE(os.stat(stack.m("f")).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(stack.u("f")).st_mode) == 0o600
    assert read_file(stack.u("f")) == b"lower data"
    assert os.stat(stack.m("f")).st_mtime == MTIME


def test_copyup_chown(stack):
    lower_file(stack)
    stack.mount()

    os.chown(stack.m("f"), 1234, 5678)

    st = os.stat(stack.m("f"))
    assert (st.st_uid, st.st_gid) == (1234, 5678)
    up = os.stat(stack.u("f"))
    assert (up.st_uid, up.st_gid) == (1234, 5678)
    assert read_file(stack.u("f")) == b"lower data"


def test_copyup_utimes(stack):
    lower_file(stack)
    stack.mount()

    os.utime(stack.m("f"), (MTIME + 10, MTIME + 20))

    assert os.stat(stack.m("f")).st_mtime == MTIME + 20
    assert os.stat(stack.m("f")).st_atime == MTIME + 10
    assert os.stat(stack.u("f")).st_mtime == MTIME + 20
    assert read_file(stack.u("f")) == b"lower data"


def test_copyup_utime_now_omit(stack):
    """UTIME_NOW sets atime to the current time; UTIME_OMIT keeps mtime."""
    lower_file(stack)
    stack.mount()
    before = helpers.fs_clock()

    utimensat(stack.m("f"), UTIME_NOW, UTIME_OMIT)

    st = os.stat(stack.m("f"))
    assert st.st_mtime == MTIME
    assert st.st_atime >= before
    assert os.path.exists(stack.u("f"))


def test_copyup_utime_omit_now(stack):
    lower_file(stack)
    stack.mount()
    before = helpers.fs_clock()

    utimensat(stack.m("f"), (MTIME + 5, 0), UTIME_NOW)

    st = os.stat(stack.m("f"))
    assert st.st_atime == MTIME + 5
    assert st.st_mtime >= before


def test_copyup_setxattr(stack):
    lower_file(stack)
    stack.mount()

    os.setxattr(stack.m("f"), "user.new", b"value")

    assert os.getxattr(stack.m("f"), "user.new") == b"value"
    assert get_xattr(stack.u("f"), "user.new") == b"value"
    assert read_file(stack.u("f")) == b"lower data"


def test_copyup_removexattr(stack):
    path = lower_file(stack)
    os.setxattr(path, "user.old", b"1")
    stack.mount()

    os.removexattr(stack.m("f"), "user.old")

    assert "user.old" not in os.listxattr(stack.m("f"))
    assert get_xattr(stack.u("f"), "user.old") is None


def test_copyup_link(stack):
    lower_file(stack)
    stack.mount()

    os.link(stack.m("f"), stack.m("g"))

    assert read_file(stack.m("g")) == b"lower data"
    assert os.stat(stack.m("f")).st_nlink == 2
    assert os.stat(stack.u("f")).st_ino == os.stat(stack.u("g")).st_ino


def test_copyup_rename(stack):
    lower_file(stack)
    stack.mount()

    os.rename(stack.m("f"), stack.m("g"))

    assert read_file(stack.m("g")) == b"lower data"
    assert not os.path.lexists(stack.m("f"))
    assert read_file(stack.u("g")) == b"lower data"
    assert is_whiteout(stack.u("f"))


def test_copyup_parents_first(stack):
    """Copy-up of a deep file first copies each parent dir with its attrs."""
    os.makedirs(stack.lo(1, "a", "b", "c"))
    os.chmod(stack.lo(1, "a"), 0o751)
    os.chown(stack.lo(1, "a", "b"), 1234, 5678)
    os.setxattr(stack.lo(1, "a", "b", "c"), "user.dir", b"c")
    write_file(stack.lo(1, "a", "b", "c", "f"), "deep")
    for d in ("a/b/c", "a/b", "a"):
        os.utime(stack.lo(1, d), (MTIME, MTIME))
    stack.mount()

    with open(stack.m("a", "b", "c", "f"), "ab") as f:
        f.write(b"!")

    assert read_file(stack.u("a", "b", "c", "f")) == b"deep!"
    assert stat.S_IMODE(os.stat(stack.u("a")).st_mode) == 0o751
    up_b = os.stat(stack.u("a", "b"))
    assert (up_b.st_uid, up_b.st_gid) == (1234, 5678)
    assert get_xattr(stack.u("a", "b", "c"), "user.dir") == b"c"
    for d in ("a", "a/b", "a/b/c"):
        assert os.stat(stack.m(d)).st_mtime == MTIME, d


def test_copyup_sparse_file(stack):
    """A sparse lower file stays sparse in upper: st_blocks stays small.

    Kernel overlayfs (checked on 6.18) finds data with SEEK_DATA but copies
    in 1 MiB chunks, so each data region may allocate up to 1 MiB in upper.
    The bound below allows that and still fails a copy that fills holes.
    """
    size = 64 << 20
    chunks = {0: b"head" * 1024, 20 << 20: b"middle" * 1024,
              size - 4096: b"t" * 4096}
    make_sparse(stack.lo(1, "sparse"), size, chunks)
    stack.mount()

    with open(stack.m("sparse"), "r+b") as f:
        f.seek(1 << 20)
        f.write(b"x")

    up = os.stat(stack.u("sparse"))
    assert up.st_size == size
    limit = 8 << 20
    assert up.st_blocks * 512 < limit, up.st_blocks
    assert os.stat(stack.m("sparse")).st_blocks * 512 < limit
    with open(stack.m("sparse"), "rb") as f:
        f.seek(20 << 20)
        assert f.read(6) == b"middle"
        f.seek(size - 4096)
        assert f.read(4096) == b"t" * 4096
        f.seek(10 << 20)
        assert f.read(4096) == bytes(4096)


def test_copyup_large_file_content(stack):
    data = os.urandom(3 << 20) + b"end"
    write_file(stack.lo(1, "big"), data)
    stack.mount()

    os.chmod(stack.m("big"), 0o600)

    assert read_file(stack.u("big")) == data
    assert read_file(stack.m("big")) == data


@pytest.mark.parametrize("extra", [(), ("volatile",)])
def test_copyup_file_of_many_chunks(stack, extra):
    """A 40 MiB file with data extents and holes on both sides of 8 MiB
    boundaries comes through exactly, synced or volatile."""
    size = 40 << 20
    head = os.urandom((9 << 20) + 123)
    middle = os.urandom(4096)
    tail = os.urandom(5 << 20)
    make_sparse(stack.lo(1, "big"), size,
                {0: head, 24 << 20: middle, size - len(tail): tail})
    stack.mount(extra=extra)

    with open(stack.m("big"), "ab") as f:
        f.write(b"!")

    expected = bytearray(size)
    expected[:len(head)] = head
    expected[24 << 20:(24 << 20) + 4096] = middle
    expected[size - len(tail):] = tail
    expected += b"!"
    assert read_file(stack.u("big")) == expected
    assert read_file(stack.m("big")) == expected


def test_copyup_full_upper_enospc(stack):
    """A copy-up into a full upper on another filesystem fails with
    ENOSPC, as on overlayfs, and leaves no file in the upper layer."""
    full = make_tempdir("lamina-full.")
    run(["mount", "-t", "tmpfs", "-o", "size=8m", "lamina-test", full])
    try:
        stack.upper = os.path.join(full, "upper")
        stack.work = os.path.join(full, "work")
        os.mkdir(stack.upper)
        os.mkdir(stack.work)
        write_file(stack.lo(1, "big"), os.urandom(16 << 20))
        stack.mount()

        with pytest.raises(OSError) as failed:
            open(stack.m("big"), "r+b").close()
        assert failed.value.errno == errno.ENOSPC
        assert os.listdir(stack.upper) == []
        stack.unmount()
    finally:
        run(["umount", full], check=False)
        if helpers.find_mount(full) is None:
            os.rmdir(full)


def test_copyup_keeps_metadata(stack):
    """Mode, owner, mtime and xattrs survive a copy-up made by setxattr."""
    path = lower_file(stack, mode=0o2751)
    os.chown(path, 1234, 5678)
    os.chmod(path, 0o2751)  # chown cleared the setgid bit
    os.setxattr(path, "user.a", b"alpha")
    os.setxattr(path, "trusted.b", b"beta")
    os.utime(path, ns=(MTIME * 10**9 + 123, MTIME * 10**9 + 456789))
    stack.mount()
    before = os.stat(stack.m("f"))

    os.setxattr(stack.m("f"), "user.c", b"gamma")

    for path in (stack.m("f"), stack.u("f")):
        st = os.stat(path)
        assert stat.S_IMODE(st.st_mode) == 0o2751, path
        assert (st.st_uid, st.st_gid) == (1234, 5678), path
        assert st.st_mtime_ns == MTIME * 10**9 + 456789, path
    merged = xattrs(stack.m("f"))
    assert merged.get("user.a") == b"alpha"
    assert merged.get("trusted.b") == b"beta"
    assert merged.get("user.c") == b"gamma"
    assert os.stat(stack.m("f")).st_mode == before.st_mode


def test_copyup_keeps_ino(stack):
    """st_ino of a file, a dir and a symlink stays the same across copy-up."""
    lower_file(stack)
    os.makedirs(stack.lo(1, "d"))
    os.symlink("f", stack.lo(1, "sym"))
    stack.mount()
    before = {name: os.lstat(stack.m(name)).st_ino
              for name in ("f", "d", "sym")}

    os.chmod(stack.m("f"), 0o600)
    os.chmod(stack.m("d"), 0o700)
    os.chown(stack.m("sym"), 1234, 5678, follow_symlinks=False)

    for name, ino in before.items():
        assert os.path.lexists(stack.u(name)), name
        assert os.lstat(stack.m(name)).st_ino == ino, name
    stack.remount()
    for name, ino in before.items():
        assert os.lstat(stack.m(name)).st_ino == ino, name


def test_copyup_symlink(stack):
    os.symlink("some/target", stack.lo(1, "sym"))
    stack.mount()

    os.chown(stack.m("sym"), 1234, 5678, follow_symlinks=False)

    assert os.path.islink(stack.u("sym"))
    assert os.readlink(stack.u("sym")) == "some/target"
    assert os.readlink(stack.m("sym")) == "some/target"
    assert os.lstat(stack.m("sym")).st_uid == 1234


def test_copyup_fifo(stack):
    os.mkfifo(stack.lo(1, "fifo"), 0o644)
    stack.mount()

    os.chmod(stack.m("fifo"), 0o600)

    assert stat.S_ISFIFO(os.lstat(stack.u("fifo")).st_mode)
    assert stat.S_ISFIFO(os.lstat(stack.m("fifo")).st_mode)
    assert stat.S_IMODE(os.lstat(stack.m("fifo")).st_mode) == 0o600


def test_copyup_socket(stack):
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(stack.lo(1, "sock"))
    finally:
        sock.close()
    stack.mount()

    os.chmod(stack.m("sock"), 0o600)

    assert stat.S_ISSOCK(os.lstat(stack.u("sock")).st_mode)
    assert stat.S_ISSOCK(os.lstat(stack.m("sock")).st_mode)


def test_copyup_device_nodes(stack):
    os.mknod(stack.lo(1, "chr"), stat.S_IFCHR | 0o644, os.makedev(1, 3))
    os.mknod(stack.lo(1, "blk"), stat.S_IFBLK | 0o644, os.makedev(7, 99))
    stack.mount()

    os.chmod(stack.m("chr"), 0o600)
    os.chmod(stack.m("blk"), 0o600)

    chr_st = os.lstat(stack.u("chr"))
    assert stat.S_ISCHR(chr_st.st_mode)
    assert chr_st.st_rdev == os.makedev(1, 3)
    blk_st = os.lstat(stack.u("blk"))
    assert stat.S_ISBLK(blk_st.st_mode)
    assert blk_st.st_rdev == os.makedev(7, 99)
    assert os.lstat(stack.m("chr")).st_rdev == os.makedev(1, 3)


def test_copyup_breaks_lower_hardlink(stack):
    """Writing one name of a lower hard-link pair leaves the other as it was.

    This is kernel overlayfs with index=off (the kernel's default; lamina
    indexes by default): copy-up copies only the name it is reached
    through.
    """
    lower_file(stack, "one")
    os.link(stack.lo(1, "one"), stack.lo(1, "two"))
    stack.mount(extra=["index=off"])

    with open(stack.m("one"), "ab") as f:
        f.write(b"!")

    assert read_file(stack.m("one")) == b"lower data!"
    assert read_file(stack.m("two")) == b"lower data"


def test_copyup_hardlink_listing_inode(stack):
    """A listing read before a copy-up that breaks a lower hard link
    (index=off) shows each entry with its st_ino afterwards."""
    os.mkdir(stack.lo(1, "d"))
    write_file(stack.lo(1, "d", "one"), b"data")
    os.link(stack.lo(1, "d", "one"), stack.lo(1, "d", "two"))
    stack.mount(extra=["index=off"])
    with os.scandir(stack.m("d")) as entries:
        assert sorted(e.name for e in entries) == ["one", "two"]

    with open(stack.m("d", "one"), "ab") as f:
        f.write(b"!")

    with os.scandir(stack.m("d")) as entries:
        listed = {e.name: e.inode() for e in entries}
    assert listed["one"] == os.lstat(stack.m("d", "one")).st_ino
    assert listed["two"] == os.lstat(stack.m("d", "two")).st_ino


def test_copyup_hardlink_during_listing(stack):
    """Copy-ups that break lower hard links (index=off) while another
    thread reads the directory's listing: a listing read afterwards shows
    each copy's new st_ino."""
    os.mkdir(stack.lo(1, "d"))
    for i in range(20000):
        os.close(os.open(stack.lo(1, "d", f"f{i:05}"), os.O_CREAT, 0o644))
    pairs = [f"h{i:03}" for i in range(200)]
    for name in pairs:
        write_file(stack.lo(1, "d", name), b"data")
        os.link(stack.lo(1, "d", name), stack.lo(1, "d", name + ".b"))
    stack.mount(extra=["index=off"])
    stop = threading.Event()

    def lister():
        while not stop.is_set():
            with os.scandir(stack.m("d")) as entries:
                for _ in entries:
                    pass

    thread = threading.Thread(target=lister)
    thread.start()
    try:
        for name in pairs:
            with open(stack.m("d", name), "ab") as f:
                f.write(b"!")
    finally:
        stop.set()
        thread.join()

    with os.scandir(stack.m("d")) as entries:
        listed = {e.name: e.inode() for e in entries if e.name[0] == "h"}
    wrong = [name for name in listed
             if listed[name] != os.lstat(stack.m("d", name)).st_ino]
    assert wrong == []


def test_link_of_lower_hardlink_shows_the_copy_inode(stack):
    """link(2) of one name of a lower hard link copies that name up
    (index=off). The new name is the copy and shows the copy's st_ino
    from the first stat on."""
    write_file(stack.lo(1, "one"), b"data")
    os.link(stack.lo(1, "one"), stack.lo(1, "two"))
    stack.mount(extra=["index=off"])

    os.link(stack.m("one"), stack.m("three"))
    three = os.lstat(stack.m("three"))
    one = os.lstat(stack.m("one"))
    assert three.st_ino == one.st_ino
    assert three.st_nlink == 2
    assert os.lstat(stack.m("two")).st_ino != one.st_ino


def test_concurrent_copyup(stack):
    """Eight threads opening one lower file for write copy it up once.

    Each thread writes its own byte at its own offset, so the result
    shows whether a write landed in a copy that was later replaced.
    """
    data = bytes(4096)
    write_file(stack.lo(1, "shared"), data)
    stack.mount()
    errors = []

    def writer(index):
        try:
            fd = os.open(stack.m("shared"), os.O_WRONLY)
            try:
                os.pwrite(fd, bytes([index + 1]), index * 512)
            finally:
                os.close(fd)
        except OSError as e:
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    content = read_file(stack.m("shared"))
    assert len(content) == 4096
    for index in range(8):
        assert content[index * 512] == index + 1, index
    assert read_file(stack.u("shared")) == content


@pytest.mark.parametrize("mode, data, expected", [
    ("r+b", b"new", b"new contents"),  # overwrite in place
    ("ab", b"x", b"old contentsx"),   # append: the size grows
])
def test_read_fd_sees_copyup(stack, mode, data, expected):
    """A read-only fd opened before a copy-up reads the copied-up data,
    and fstat on it shows the copy's size.

    Kernel overlayfs has behaved this way since Linux 4.19, when its file
    operations began to switch to the upper file after a copy-up. lamina
    does the same with passthrough=off; with passthrough the kernel binds
    the open file to the lower file (see the next test).
    """
    lower_file(stack, data="old contents")
    stack.mount(extra=("passthrough=off",) if stack.impl == "lamina" else ())
    reader = os.open(stack.m("f"), os.O_RDONLY)
    try:
        assert os.pread(reader, 3, 0) == b"old"

        with open(stack.m("f"), mode) as f:
            f.write(data)

        assert os.pread(reader, 4096, 0) == expected
        assert os.fstat(reader).st_size == len(expected)
    finally:
        os.close(reader)


def test_read_fd_copies_and_seeks_copyup(stack):
    """copy_file_range() and SEEK_HOLE on a read-only fd opened before a
    copy-up use the copied-up data, as read() does."""
    lower_file(stack, data="old contents")
    stack.mount(extra=("passthrough=off",) if stack.impl == "lamina" else ())
    expected = b"old contents" + b"x" * 5000
    reader = os.open(stack.m("f"), os.O_RDONLY)
    try:
        with open(stack.m("f"), "ab") as f:
            f.write(b"x" * 5000)
        with open(stack.m("copy"), "wb") as out:
            copied = os.copy_file_range(reader, out.fileno(), 1 << 20, 0)
        assert copied == len(expected)
        assert read_file(stack.m("copy")) == expected
        assert os.lseek(reader, 0, os.SEEK_HOLE) == len(expected)
        os.fsync(reader)
    finally:
        os.close(reader)
    assert read_file(stack.lo(1, "f")) == b"old contents"


def test_passthrough_reader_keeps_lower(stack):
    """With passthrough, an fd opened before a copy-up keeps the lower data.

    The write and every later open see the copied-up file; only the
    reader that was already open still reads the lower file, as overlayfs
    did before Linux 4.19. lamina documents this difference.
    """
    if stack.impl != "lamina":
        pytest.skip("lamina's passthrough behaviour")
    if "passthrough=off" in os.environ.get("LAMINA_OPTIONS", ""):
        pytest.skip("passthrough is off for this run")
    lower_file(stack, data="old contents")
    stack.mount()
    reader = os.open(stack.m("f"), os.O_RDONLY)
    try:
        assert os.pread(reader, 3, 0) == b"old"

        with open(stack.m("f"), "r+b") as f:
            f.write(b"new")

        assert read_file(stack.m("f")) == b"new contents"
        assert os.pread(reader, 12, 0) == b"old contents"
    finally:
        os.close(reader)
    assert read_file(stack.u("f")) == b"new contents"


def test_dir_copyup_keeps_merge(stack):
    """Copy-up of a dir (by chmod) leaves it merged, not opaque."""
    write_file(stack.lo(1, "d", "low"), "")
    write_file(stack.lo(0, "d", "mid"), "")
    stack.mount()

    os.chmod(stack.m("d"), 0o700)

    assert os.path.isdir(stack.u("d"))
    assert sorted(os.listdir(stack.m("d"))) == ["low", "mid"]
    assert get_xattr(stack.u("d"), "trusted.overlay.opaque") is None


def test_symlink_trusted_xattr(stack):
    """A trusted.* xattr set on a lower symlink copies the link up."""
    os.symlink("target", stack.lo(1, "sym"))
    stack.mount()

    os.setxattr(stack.m("sym"), "trusted.mark", b"1", follow_symlinks=False)

    assert os.path.islink(stack.u("sym"))
    assert os.getxattr(stack.m("sym"), "trusted.mark",
                       follow_symlinks=False) == b"1"
    assert os.readlink(stack.m("sym")) == "target"


def test_dir_copy_up_shows_merged_link_count(stack):
    """A lower directory shows its own link count until a copy-up makes it
    a merged directory, which shows 1 as in overlayfs."""
    os.makedirs(stack.lo(1, "d", "x"))
    os.makedirs(stack.lo(1, "d", "y"))
    write_file(stack.lo(1, "d", "x", "q"), "q")
    stack.mount()
    assert os.stat(stack.m("d")).st_nlink == 4

    os.unlink(stack.m("d", "x", "q"))

    assert os.stat(stack.m("d")).st_nlink == 1
    assert os.stat(stack.m("d", "x")).st_nlink == 1


def birth_time(path):
    """Return the birth time that stat(1) shows. The format names the
    size too, so that statx(2) requests more than the birth time."""
    out = run(["stat", "-c", "%W %s", path]).stdout.split()
    return int(out[0])


def test_birth_time_follows_copy_up(stack):
    """Files and directories show the birth time of the file that
    contains their metadata, the lower one and then the upper copy."""
    names = ("chmoded", "written", "opened", "dir")
    write_file(stack.lo(0, "chmoded"), "c")
    write_file(stack.lo(0, "written"), "w")
    write_file(stack.lo(0, "opened"), "o")
    os.makedirs(stack.lo(0, "dir"))
    stack.mount()
    for name in names:
        assert birth_time(stack.m(name)) == birth_time(stack.lo(0, name))
    time.sleep(1.1)

    os.chmod(stack.m("chmoded"), 0o600)
    with open(stack.m("written"), "a") as f:
        f.write("more")
    # Copied up by the open, then changed without a copy-up.
    os.close(os.open(stack.m("opened"), os.O_WRONLY | os.O_APPEND))
    os.chmod(stack.m("opened"), 0o600)
    write_file(stack.m("dir", "new"), "n")

    for name in names:
        assert birth_time(stack.m(name)) == birth_time(stack.u(name)), name
        assert birth_time(stack.u(name)) > birth_time(stack.lo(0, name))
