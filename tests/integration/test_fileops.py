"""File operations through the merged tree: create flags, links, I/O calls,
space management, locks and permission checks."""

import errno
import fcntl
import hashlib
import mmap
import os
import stat
import subprocess

import pytest

import helpers

from helpers import (
    FALLOC_FL_KEEP_SIZE,
    FALLOC_FL_PUNCH_HOLE,
    access_errno,
    fallocate,
    is_whiteout,
    link_fd,
    make_sparse,
    read_file,
    sha256_file,
    write_file,
)


def test_create_new_file(stack):
    os.makedirs(stack.lo(1, "d"))
    stack.mount()

    write_file(stack.m("d", "new"), "hello")

    assert read_file(stack.m("d", "new")) == b"hello"
    assert read_file(stack.u("d", "new")) == b"hello"


def test_create_mode_and_owner(stack):
    stack.mount()
    old_umask = os.umask(0o022)
    try:
        fd = os.open(stack.m("f"), os.O_CREAT | os.O_WRONLY, 0o777)
        os.close(fd)
        os.mkdir(stack.m("d"), 0o777)
    finally:
        os.umask(old_umask)

    assert stat.S_IMODE(os.stat(stack.m("f")).st_mode) == 0o755
    assert stat.S_IMODE(os.stat(stack.m("d")).st_mode) == 0o755
    assert os.stat(stack.m("f")).st_uid == os.getuid()


def test_o_excl_existing_lower(stack):
    write_file(stack.lo(1, "f"), "lower")
    stack.mount()

    with pytest.raises(FileExistsError):
        os.open(stack.m("f"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)

    assert read_file(stack.m("f")) == b"lower"


def test_o_excl_over_whiteout(stack):
    write_file(stack.lo(1, "f"), "lower")
    stack.mount()
    os.unlink(stack.m("f"))

    fd = os.open(stack.m("f"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    os.close(fd)

    assert read_file(stack.m("f")) == b""


def test_o_append(stack):
    write_file(stack.lo(1, "f"), "lower")
    stack.mount()

    fd = os.open(stack.m("f"), os.O_WRONLY | os.O_APPEND)
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, b"+more")
    finally:
        os.close(fd)

    assert read_file(stack.m("f")) == b"lower+more"


def test_pwrite_past_end(stack):
    stack.mount()
    write_file(stack.m("f"), "abc")

    fd = os.open(stack.m("f"), os.O_RDWR)
    try:
        os.pwrite(fd, b"z", 10)
        assert os.pread(fd, 11, 0) == b"abc" + bytes(7) + b"z"
    finally:
        os.close(fd)


def test_mmap_shared_write(stack):
    write_file(stack.lo(1, "f"), b"0" * 8192)
    stack.mount()

    with open(stack.m("f"), "r+b") as f:
        with mmap.mmap(f.fileno(), 8192) as m:
            m[4096:4100] = b"MMAP"
            m.flush()

    assert read_file(stack.m("f"))[4096:4100] == b"MMAP"
    assert read_file(stack.u("f"))[4096:4100] == b"MMAP"


def test_hard_link_upper(stack):
    stack.mount()
    write_file(stack.m("a"), "data")

    os.link(stack.m("a"), stack.m("b"))

    st_a = os.stat(stack.m("a"))
    st_b = os.stat(stack.m("b"))
    assert st_a.st_ino == st_b.st_ino
    assert st_a.st_nlink == 2
    with open(stack.m("b"), "ab") as f:
        f.write(b"+b")
    assert read_file(stack.m("a")) == b"data+b"


def test_hard_link_lower_unlink(stack):
    """Linking a lower file, then unlinking the original, keeps the data."""
    write_file(stack.lo(1, "a"), "data")
    stack.mount()

    os.link(stack.m("a"), stack.m("b"))
    os.unlink(stack.m("a"))

    assert read_file(stack.m("b")) == b"data"
    assert not os.path.lexists(stack.m("a"))
    assert os.stat(stack.m("b")).st_nlink == 1


def test_link_to_existing_name(stack):
    write_file(stack.lo(1, "a"), "")
    write_file(stack.lo(0, "b"), "")
    stack.mount()

    with pytest.raises(FileExistsError):
        os.link(stack.m("a"), stack.m("b"))


def test_symlink_create(stack):
    stack.mount()

    os.symlink("target/path", stack.m("sym"))

    assert os.readlink(stack.m("sym")) == "target/path"
    assert os.readlink(stack.u("sym")) == "target/path"


def test_mknod_types(stack):
    os.makedirs(stack.lo(1, "d"))
    stack.mount()

    os.mknod(stack.m("d", "fifo"), stat.S_IFIFO | 0o600)
    os.mknod(stack.m("d", "chr"), stat.S_IFCHR | 0o600, os.makedev(1, 5))
    os.mknod(stack.m("d", "reg"), stat.S_IFREG | 0o600)

    assert stat.S_ISFIFO(os.lstat(stack.m("d", "fifo")).st_mode)
    chr_st = os.lstat(stack.m("d", "chr"))
    assert stat.S_ISCHR(chr_st.st_mode)
    assert chr_st.st_rdev == os.makedev(1, 5)
    assert stat.S_ISREG(os.lstat(stack.m("d", "reg")).st_mode)
    assert stat.S_ISCHR(os.lstat(stack.u("d", "chr")).st_mode)


def test_mknod_whiteout_rejected(stack):
    """mknod of a char device 0/0 through the mount fails with EPERM.

    Kernel overlayfs rejects it, so a user of the mount cannot forge a
    whiteout.
    """
    write_file(stack.lo(1, "f"), "lower")
    stack.mount()

    with pytest.raises(OSError) as info:
        os.mknod(stack.m("g"), stat.S_IFCHR | 0o600, os.makedev(0, 0))

    assert info.value.errno == errno.EPERM
    assert read_file(stack.m("f")) == b"lower"


def test_tmpfile_linkat(stack):
    """O_TMPFILE in a lower-only dir, then linkat gives it a name."""
    os.makedirs(stack.lo(1, "d"))
    stack.mount()

    fd = os.open(stack.m("d"), os.O_TMPFILE | os.O_RDWR, 0o640)
    try:
        os.write(fd, b"anonymous")
        assert os.listdir(stack.m("d")) == []
        link_fd(fd, stack.m("d", "named"))
    finally:
        os.close(fd)

    assert read_file(stack.m("d", "named")) == b"anonymous"
    assert read_file(stack.u("d", "named")) == b"anonymous"
    assert stat.S_IMODE(os.stat(stack.m("d", "named")).st_mode) == 0o640


def test_tmpfile_writes_after_linkat(stack):
    """Writes and a chmod through the O_TMPFILE descriptor after linkat
    show through the new name, whose attributes the kernel must not keep
    from before them."""
    os.makedirs(stack.lo(1, "d"))
    stack.mount()

    fd = os.open(stack.m("d"), os.O_TMPFILE | os.O_RDWR, 0o600)
    try:
        os.write(fd, b"tmpdata")
        link_fd(fd, stack.m("d", "named"))
        assert os.stat(stack.m("d", "named")).st_size == 7
        os.write(fd, b"more")
        os.fchmod(fd, 0o755)
    finally:
        os.close(fd)

    st = os.stat(stack.m("d", "named"))
    assert st.st_size == 11
    assert stat.S_IMODE(st.st_mode) == 0o755
    assert read_file(stack.m("d", "named")) == b"tmpdatamore"


def test_read_after_temporary_link(stack):
    """A file read, then written through a second name that is removed
    again, reads the new data through its first name."""
    stack.mount()
    write_file(stack.m("a"), "new0")
    assert read_file(stack.m("a")) == b"new0"

    os.link(stack.m("a"), stack.m("b"))
    write_file(stack.m("b"), "new1")
    os.unlink(stack.m("b"))

    assert read_file(stack.m("a")) == b"new1"


def test_fallocate_allocates(stack):
    stack.mount()
    write_file(stack.m("f"), "")

    fd = os.open(stack.m("f"), os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, 1 << 20)
    finally:
        os.close(fd)

    st = os.stat(stack.m("f"))
    assert st.st_size == 1 << 20
    assert st.st_blocks * 512 >= 1 << 20


def test_fallocate_punch_hole(stack):
    data = b"x" * (1 << 20)
    write_file(stack.lo(1, "f"), data)
    stack.mount()

    fd = os.open(stack.m("f"), os.O_RDWR)
    try:
        fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                  256 << 10, 512 << 10)
    finally:
        os.close(fd)

    content = read_file(stack.m("f"))
    assert len(content) == 1 << 20
    assert content[256 << 10:768 << 10] == bytes(512 << 10)
    assert content[:256 << 10] == data[:256 << 10]
    assert os.stat(stack.m("f")).st_blocks * 512 <= 600 << 10
    assert read_file(stack.lo(1, "f")) == data


@pytest.mark.parametrize("copied", [False, True], ids=["lower", "upper"])
def test_seek_data_hole(stack, copied):
    """SEEK_DATA and SEEK_HOLE report the layout of a sparse file."""
    size = 8 << 20
    make_sparse(stack.lo(1, "sparse"), size,
                {2 << 20: b"d" * 4096, size - 4096: b"e" * 4096})
    stack.mount()
    if copied:
        os.chmod(stack.m("sparse"), 0o600)

    fd = os.open(stack.m("sparse"), os.O_RDONLY)
    try:
        first_data = os.lseek(fd, 0, os.SEEK_DATA)
        hole_after = os.lseek(fd, first_data, os.SEEK_HOLE)
        last_data = os.lseek(fd, hole_after, os.SEEK_DATA)
        end_hole = os.lseek(fd, last_data, os.SEEK_HOLE)
        with pytest.raises(OSError) as info:
            os.lseek(fd, size, os.SEEK_DATA)
    finally:
        os.close(fd)

    # The kernel copies sparse files in 1 MiB chunks, so data may start
    # up to 1 MiB early after a copy-up; see test_copyup_sparse_file.
    assert (2 << 20) - (1 << 20) <= first_data <= 2 << 20
    assert hole_after < size - (1 << 20)
    assert last_data <= size - 4096
    assert end_hole == size
    assert info.value.errno == errno.ENXIO


def test_copy_file_range(stack):
    data = os.urandom(1 << 20)
    write_file(stack.lo(1, "src"), data)
    stack.mount()

    src = os.open(stack.m("src"), os.O_RDONLY)
    dst = os.open(stack.m("dst"), os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        copied = 0
        while copied < len(data):
            n = os.copy_file_range(src, dst, len(data) - copied)
            assert n > 0
            copied += n
    finally:
        os.close(src)
        os.close(dst)

    assert read_file(stack.m("dst")) == data
    assert not os.path.lexists(stack.u("src"))


def test_fsync_file_and_dir(stack):
    write_file(stack.lo(1, "f"), "")
    os.makedirs(stack.lo(1, "d"))
    stack.mount()

    fd = os.open(stack.m("f"), os.O_WRONLY)
    try:
        os.write(fd, b"synced")
        os.fsync(fd)
        os.fdatasync(fd)
    finally:
        os.close(fd)
    dfd = os.open(stack.m("d"), os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)

    assert read_file(stack.u("f")) == b"synced"


def test_statfs_reports_upper(stack):
    """statfs of the mount reports the size of the upper filesystem."""
    stack.mount()

    merged = os.statvfs(stack.merged)
    upper = os.statvfs(stack.upper)

    assert merged.f_blocks * merged.f_frsize == upper.f_blocks * upper.f_frsize
    assert merged.f_namemax == upper.f_namemax
    assert merged.f_files == upper.f_files


def test_statfs_read_only_mount(stack):
    stack.mount(upper=False)

    merged = os.statvfs(stack.merged)
    lower = os.statvfs(stack.lowers[0])

    assert merged.f_blocks * merged.f_frsize == lower.f_blocks * lower.f_frsize
    assert merged.f_flag & os.ST_RDONLY


def lock_conflicts(path, use_flock):
    """Ask a child process for a non-blocking exclusive lock on path.

    Returns True when the child found the lock held by someone else.
    """
    pid = os.fork()
    if pid == 0:
        code = 2
        try:
            fd = os.open(path, os.O_RDWR)
            try:
                if use_flock:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                else:
                    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 10, 0)
                code = 0
            except OSError as e:
                code = 1 if e.errno in (errno.EAGAIN, errno.EACCES) else 3
        finally:
            os._exit(code)
    _pid, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    assert code in (0, 1), f"lock child failed with code {code}"
    return code == 1


def test_flock(stack):
    write_file(stack.lo(1, "f"), "")
    stack.mount()

    fd = os.open(stack.m("f"), os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert lock_conflicts(stack.m("f"), use_flock=True)
        fcntl.flock(fd, fcntl.LOCK_UN)
        assert not lock_conflicts(stack.m("f"), use_flock=True)
    finally:
        os.close(fd)


def test_fcntl_lock(stack):
    write_file(stack.lo(1, "f"), "0123456789abcdef")
    stack.mount()

    fd = os.open(stack.m("f"), os.O_RDWR)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX, 4, 2)
        assert lock_conflicts(stack.m("f"), use_flock=False)
        fcntl.lockf(fd, fcntl.LOCK_UN, 4, 2)
        assert not lock_conflicts(stack.m("f"), use_flock=False)
    finally:
        os.close(fd)


def test_access_modes(stack):
    write_file(stack.lo(1, "exec"), "", mode=0o755)
    write_file(stack.lo(1, "plain"), "", mode=0o644)
    write_file(stack.lo(1, "gone"), "")
    stack.mount()
    os.unlink(stack.m("gone"))

    assert access_errno(stack.m("exec"), os.X_OK) == 0
    assert access_errno(stack.m("plain"), os.R_OK | os.W_OK) == 0
    # Root gets X_OK only when some execute bit is set.
    assert access_errno(stack.m("plain"), os.X_OK) == errno.EACCES
    assert access_errno(stack.m("gone"), os.F_OK) == errno.ENOENT
    assert not os.path.lexists(stack.u("plain")), "access must not copy up"


def test_access_read_only_mount(stack):
    write_file(stack.lo(1, "f"), "", mode=0o644)
    stack.mount(upper=False)

    assert access_errno(stack.m("f"), os.R_OK) == 0
    assert access_errno(stack.m("f"), os.W_OK) == errno.EROFS


def run_as(uid, gid, actions):
    """Run each (name, callable) in a child with the given uid and gid.

    Returns {name: 0 or errno}. The child drops supplementary groups too.
    """
    def act():
        results = {}
        for name, action in actions:
            try:
                action()
                results[name] = 0
            except OSError as e:
                results[name] = e.errno
        return results

    return helpers.in_child(uid, gid, act)


def test_other_user_permissions(stack):
    """Another user gets the permissions that mode and owner give, no more.

    uid 1234 may read a world-readable root file but not write it, may not
    create in a root-owned 0755 dir, and may create in a 0777 dir, where
    the new file belongs to uid 1234.
    """
    write_file(stack.lo(1, "rootfile"), "root data", mode=0o644)
    os.makedirs(stack.lo(1, "closed"), mode=0o755)
    os.makedirs(stack.lo(1, "open"))
    os.chmod(stack.lo(1, "open"), 0o777)
    write_file(stack.lo(1, "secret"), "secret", mode=0o600)
    stack.mount()

    def read_rootfile():
        with open(stack.m("rootfile"), "rb") as f:
            f.read()

    def create_in(directory):
        def create():
            fd = os.open(stack.m(directory, "mine"),
                         os.O_CREAT | os.O_WRONLY, 0o644)
            os.close(fd)
        return create

    results = run_as(1234, 1234, [
        ("read", read_rootfile),
        ("write", lambda: os.close(os.open(stack.m("rootfile"),
                                           os.O_WRONLY))),
        ("read_secret", lambda: os.close(os.open(stack.m("secret"),
                                                 os.O_RDONLY))),
        ("create_closed", create_in("closed")),
        ("create_open", create_in("open")),
        ("chmod_rootfile", lambda: os.chmod(stack.m("rootfile"), 0o666)),
    ])

    assert results["read"] == 0
    assert results["write"] == errno.EACCES
    assert results["read_secret"] == errno.EACCES
    assert results["create_closed"] == errno.EACCES
    assert results["create_open"] == 0
    assert results["chmod_rootfile"] == errno.EPERM
    assert os.stat(stack.m("open", "mine")).st_uid == 1234
    assert not os.path.lexists(stack.u("rootfile"))


def test_large_file_io(stack):
    """32 MiB written in odd-sized chunks reads back the same."""
    stack.mount()
    chunk = os.urandom(1 << 20 | 4097)
    digest = hashlib.sha256()

    with open(stack.m("big"), "wb") as f:
        for _ in range(31):
            f.write(chunk)
            digest.update(chunk)

    assert sha256_file(stack.m("big")) == digest.hexdigest()
    assert sha256_file(stack.u("big")) == digest.hexdigest()


def test_unlink_open_file(stack):
    """An open file stays usable after its name is unlinked."""
    write_file(stack.lo(1, "f"), "lower")
    stack.mount()

    fd = os.open(stack.m("f"), os.O_RDWR)
    try:
        os.unlink(stack.m("f"))
        os.pwrite(fd, b"LOW", 0)
        content = os.pread(fd, 10, 0)
        nlink = os.fstat(fd).st_nlink
    finally:
        os.close(fd)

    assert content == b"LOWer"
    assert nlink == 0
    assert not os.path.lexists(stack.m("f"))
    assert os.listdir(stack.merged) == []


def test_change_attributes_of_open_files(stack):
    """fchmod, fchown, futimens and fgetxattr of open files reach the
    file itself, also after a rename and after an unlink of its name."""
    write_file(stack.lo(1, "lower"), "lower")
    stack.mount()
    write_file(stack.m("upper"), "upper")
    fds = [os.open(stack.m(n), os.O_RDWR) for n in ("lower", "upper")]
    try:
        os.rename(stack.m("lower"), stack.m("moved"))
        os.unlink(stack.m("upper"))
        for i, fd in enumerate(fds):
            os.fchmod(fd, 0o640 + i)
            os.fchown(fd, 1000 + i, 2000 + i)
            os.utime(fd, ns=(1_000_000_000, 2_000_000_000 + i))
            os.setxattr(fd, "user.tag", b"v%d" % i)
        seen = [os.fstat(fd) for fd in fds]
        tags = [os.getxattr(fd, "user.tag") for fd in fds]
        with pytest.raises(OSError) as err:
            os.getxattr(fds[1], "user.none")
    finally:
        for fd in fds:
            os.close(fd)

    assert err.value.errno == errno.ENODATA
    for i, st in enumerate(seen):
        assert stat.S_IMODE(st.st_mode) == 0o640 + i
        assert (st.st_uid, st.st_gid) == (1000 + i, 2000 + i)
        assert st.st_mtime_ns == 2_000_000_000 + i
    assert tags == [b"v0", b"v1"]
    moved = os.lstat(stack.m("moved"))
    assert stat.S_IMODE(moved.st_mode) == 0o640
    assert (moved.st_uid, moved.st_mtime_ns) == (1000, 2_000_000_000)


def test_rm_rf_merged_tree(stack):
    """rm -rf removes a tree spread over all layers, leaving one whiteout."""
    for i in range(3000):
        layer = i % 3
        if layer == 2:
            write_file(stack.u("tree", f"sub{i % 10}", f"f{i}"), "")
        else:
            write_file(stack.lo(layer, "tree", f"sub{i % 10}", f"f{i}"), "")
    stack.mount()

    subprocess.run(["rm", "-rf", stack.m("tree")], check=True)

    assert not os.path.lexists(stack.m("tree"))
    assert os.listdir(stack.merged) == []
    assert is_whiteout(stack.u("tree"))


def test_workdir_empty_after_use(stack):
    """After copy-ups, deletes, renames and rmdir, workdir/work is clean.

    Kernel overlayfs (checked on 6.18) keeps one whiteout there, named
    #<hex>, and hard-links new whiteouts to it, so a whiteout may remain.
    """
    write_file(stack.lo(1, "a"), "a")
    write_file(stack.lo(1, "b"), "b")
    write_file(stack.lo(1, "d", "x"), "x")
    write_file(stack.lo(0, "e", "y"), "y")
    stack.mount()
    with open(stack.m("a"), "ab") as f:
        f.write(b"!")
    os.rename(stack.m("a"), stack.m("a2"))
    os.unlink(stack.m("b"))
    os.unlink(stack.m("d", "x"))
    os.rmdir(stack.m("d"))
    os.mkdir(stack.m("d"))
    os.unlink(stack.m("e", "y"))
    os.rmdir(stack.m("e"))

    stack.unmount()

    leftovers = os.listdir(os.path.join(stack.work, "work"))
    for name in leftovers:
        assert is_whiteout(os.path.join(stack.work, "work", name)), name
