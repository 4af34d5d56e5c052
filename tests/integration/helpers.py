"""Filesystem helpers shared by the integration tests.

Everything here works on plain paths, so the same helper inspects a merged
tree, an upper layer or a lower layer.
"""

import ctypes
import errno
import hashlib
import json
import os
import stat
import struct
import subprocess
import time

libc = ctypes.CDLL(None, use_errno=True)

RENAME_NOREPLACE = 1 << 0
RENAME_EXCHANGE = 1 << 1

UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2

FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02

AT_FDCWD = -100
AT_SYMLINK_FOLLOW = 0x400
SYS_getdents64 = 217  # x86_64


def _check(ret, call):
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{call}: {os.strerror(err)}")
    return ret


def renameat2(old, new, flags):
    """Call renameat2(2) with RENAME_* flags, raising OSError on failure."""
    fn = libc.renameat2
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int,
                   ctypes.c_char_p, ctypes.c_uint]
    ret = fn(AT_FDCWD, os.fsencode(old), AT_FDCWD, os.fsencode(new), flags)
    _check(ret, f"renameat2 {old} -> {new}")


class Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def link_fd(fd, new):
    """Give the file open as fd the name new: linkat(2) of /proc/self/fd/N.

    os.link calls link(2), which would link the /proc symlink itself, so
    this calls linkat with AT_SYMLINK_FOLLOW.
    """
    fn = libc.linkat
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int,
                   ctypes.c_char_p, ctypes.c_int]
    source = f"/proc/self/fd/{fd}".encode()
    ret = fn(AT_FDCWD, source, AT_FDCWD, os.fsencode(new), AT_SYMLINK_FOLLOW)
    _check(ret, f"linkat fd {fd} -> {new}")


def utimensat(path, atime, mtime, follow=True):
    """Call utimensat(2). Each time is (sec, nsec) or UTIME_NOW/UTIME_OMIT."""
    def spec(value):
        if value in (UTIME_NOW, UTIME_OMIT):
            return Timespec(0, value)
        return Timespec(value[0], value[1])

    times = (Timespec * 2)(spec(atime), spec(mtime))
    flags = 0 if follow else 0x100  # AT_SYMLINK_NOFOLLOW
    fn = libc.utimensat
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p,
                   ctypes.c_int]
    _check(fn(AT_FDCWD, os.fsencode(path), times, flags), f"utimensat {path}")


def fallocate(fd, mode, offset, length):
    """Call fallocate(2) with an explicit mode (os.posix_fallocate has none)."""
    fn = libc.fallocate
    fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
    _check(fn(fd, mode, offset, length), "fallocate")


def access_errno(path, mode):
    """Return 0 if access(2) allows mode on path, else the errno it set."""
    fn = libc.access
    fn.argtypes = [ctypes.c_char_p, ctypes.c_int]
    if fn(os.fsencode(path), mode) == 0:
        return 0
    return ctypes.get_errno()


def getdents(path, bufsize=4096):
    """Read a directory with raw getdents64 calls of bufsize bytes each.

    Returns (entries, calls): entries is a list of (name, d_ino, d_type) in
    the order the kernel returned them, '.' and '..' included, and calls is
    the number of getdents64 calls that returned entries.
    """
    syscall = libc.syscall
    syscall.restype = ctypes.c_long
    syscall.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_void_p,
                        ctypes.c_size_t]
    buf = ctypes.create_string_buffer(bufsize)
    entries = []
    calls = 0
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        while True:
            n = syscall(SYS_getdents64, fd, buf, bufsize)
            _check(n, f"getdents64 {path}")
            if n == 0:
                break
            calls += 1
            raw = buf.raw[:n]
            pos = 0
            while pos < n:
                d_ino, _off, reclen, d_type = struct.unpack_from(
                    "<QqHB", raw, pos)
                name_start = pos + 19
                name_end = raw.index(b"\0", name_start)
                entries.append((os.fsdecode(raw[name_start:name_end]),
                                d_ino, d_type))
                pos += reclen
    finally:
        os.close(fd)
    return entries, calls


class Dirent(ctypes.Structure):
    """glibc's struct dirent on x86_64."""

    _fields_ = [("d_ino", ctypes.c_uint64), ("d_off", ctypes.c_int64),
                ("d_reclen", ctypes.c_uint16), ("d_type", ctypes.c_uint8),
                ("d_name", ctypes.c_char * 256)]


class DirStream:
    """A libc DIR stream, for telldir/seekdir, which os lacks."""

    def __init__(self, path):
        libc.opendir.restype = ctypes.c_void_p
        libc.opendir.argtypes = [ctypes.c_char_p]
        libc.readdir.restype = ctypes.POINTER(Dirent)
        libc.readdir.argtypes = [ctypes.c_void_p]
        libc.telldir.restype = ctypes.c_long
        libc.telldir.argtypes = [ctypes.c_void_p]
        libc.seekdir.argtypes = [ctypes.c_void_p, ctypes.c_long]
        libc.rewinddir.argtypes = [ctypes.c_void_p]
        libc.closedir.argtypes = [ctypes.c_void_p]
        self.dir = libc.opendir(os.fsencode(path))
        if not self.dir:
            err = ctypes.get_errno()
            raise OSError(err, f"opendir {path}: {os.strerror(err)}")

    def read(self):
        """Return the next name, or None at the end of the directory."""
        ctypes.set_errno(0)
        entry = libc.readdir(self.dir)
        if not entry:
            err = ctypes.get_errno()
            if err:
                raise OSError(err, f"readdir: {os.strerror(err)}")
            return None
        return os.fsdecode(entry.contents.d_name)

    def tell(self):
        return libc.telldir(self.dir)

    def seek(self, position):
        libc.seekdir(self.dir, position)

    def rewind(self):
        libc.rewinddir(self.dir)

    def close(self):
        libc.closedir(self.dir)


def write_file(path, data=b"", mode=None, mtime=None):
    """Create or replace a file with data; optionally set mode and mtime."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(path, "wb") as f:
        f.write(data)
    if mode is not None:
        os.chmod(path, mode)
    if mtime is not None:
        os.utime(path, (mtime, mtime))


def read_file(path):
    with open(path, "rb") as f:
        return f.read()


def make_sparse(path, size, chunks):
    """Create a file of size bytes with data only at the given offsets.

    chunks maps an offset to the bytes written there. Everything else is a
    hole on filesystems that support them.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.ftruncate(fd, size)
        for offset, data in chunks.items():
            os.pwrite(fd, data, offset)
        os.fsync(fd)
    finally:
        os.close(fd)


def is_whiteout(path):
    """Tell whether path is an overlayfs whiteout: a char device 0/0."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(0, 0)


def make_whiteout(path):
    os.mknod(path, stat.S_IFCHR | 0o000, os.makedev(0, 0))


def get_xattr(path, name, follow=False):
    """Return the value of xattr name, or None if it is not set."""
    try:
        return os.getxattr(path, name, follow_symlinks=follow)
    except OSError as e:
        if e.errno in (errno.ENODATA, errno.EOPNOTSUPP):
            return None
        raise


def xattrs(path, follow=False):
    """Return a dict of every xattr on path (not following symlinks)."""
    try:
        names = os.listxattr(path, follow_symlinks=follow)
    except OSError as e:
        if e.errno == errno.EOPNOTSUPP:
            return {}
        raise
    result = {}
    for name in names:
        try:
            result[name] = os.getxattr(path, name, follow_symlinks=follow)
        except OSError as e:
            # A listed name can still fail to read, for example when it
            # was removed in between; the errno then shows in comparisons.
            result[name] = f"<errno {e.errno}>"
    return result


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def describe_entry(path, with_times=False, with_ino=False):
    """Return a comparable record of one entry: type, mode, owner, content.

    Regular files carry size and sha256, symlinks their target, devices
    their rdev; xattrs are included for every type.
    """
    st = os.lstat(path)
    record = {
        "type": stat.S_IFMT(st.st_mode),
        "mode": stat.S_IMODE(st.st_mode),
        "uid": st.st_uid,
        "gid": st.st_gid,
        "xattrs": xattrs(path),
    }
    if stat.S_ISREG(st.st_mode):
        record["size"] = st.st_size
        record["sha256"] = sha256_file(path)
    elif stat.S_ISLNK(st.st_mode):
        record["target"] = os.readlink(path)
    elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        record["rdev"] = st.st_rdev
    if with_times:
        record["mtime_ns"] = st.st_mtime_ns
        record["ctime_ns"] = st.st_ctime_ns
    if with_ino:
        record["ino"] = st.st_ino
        record["nlink"] = st.st_nlink
    return record


def snapshot_tree(root, with_times=False, with_ino=False):
    """Return {relative path: describe_entry(...)} for root and below.

    The root itself is recorded under ".". Directories are not followed
    through symlinks.
    """
    tree = {".": describe_entry(root, with_times, with_ino)}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            tree[rel] = describe_entry(full, with_times, with_ino)
    return tree


def diff_trees(left, right):
    """List human-readable differences between two snapshot_tree results."""
    problems = []
    for rel in sorted(set(left) | set(right)):
        if rel not in left:
            problems.append(f"{rel}: only in second tree")
        elif rel not in right:
            problems.append(f"{rel}: only in first tree")
        elif left[rel] != right[rel]:
            for key in sorted(set(left[rel]) | set(right[rel])):
                a = left[rel].get(key)
                b = right[rel].get(key)
                if a != b:
                    problems.append(f"{rel}: {key} {a!r} != {b!r}")
    return problems


NOBODY = 65534


def run_as_nobody(args):
    """Run args as the user nobody with no supplementary groups; return
    the CompletedProcess, with text output."""
    return subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}",
         "--clear-groups", *args],
        stdin=subprocess.DEVNULL, capture_output=True, text=True,
        check=False)


def shared_libraries(binary):
    """List the absolute paths of the shared libraries binary loads."""
    out = subprocess.run(["ldd", binary], capture_output=True, text=True,
                         check=True).stdout
    paths = []
    for line in out.splitlines():
        for word in line.split():
            if word.startswith("/"):
                paths.append(word)
    return paths


def find_mount(mountpoint):
    """Return the /proc/self/mountinfo fields for mountpoint, or None.

    The result is a dict with "fstype", "source" and "options" of the
    last (topmost) mount on that path.
    """
    target = os.path.realpath(mountpoint)
    found = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, right = line.rstrip("\n").split(" - ", 1)
            fields = left.split(" ")
            point = unescape_mountinfo(fields[4])
            if point != target:
                continue
            fstype, source, options = (right.split(" ", 2) + ["", ""])[:3]
            found = {"fstype": fstype,
                     "source": unescape_mountinfo(source),
                     "options": options}
    return found


def unescape_mountinfo(text):
    """Undo the octal escapes (\\040 and so on) used in /proc mount tables."""
    out = []
    i = 0
    while i < len(text):
        digits = text[i + 1:i + 4]
        if text[i] == "\\" and len(digits) == 3 and digits.isdigit():
            out.append(chr(int(digits, 8)))
            i += 4
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def rss_kib(pid):
    """Return the resident set size of pid in KiB, from /proc/PID/status."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS line for pid {pid}")


def run_with_terminal_stderr(args, timeout=120):
    """Run args with stderr on a pseudo-terminal; return (status, output).

    Commands draw progress bars only on a terminal, so this is how the
    tests see them. Standard output is discarded.
    """
    import pty
    import subprocess

    primary, secondary = pty.openpty()
    try:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=secondary)
        os.close(secondary)
        secondary = -1
        output = b""
        while True:
            try:
                chunk = os.read(primary, 4096)
            except OSError:  # EIO once the command has closed the terminal
                break
            if not chunk:
                break
            output += chunk
        return proc.wait(timeout=timeout), output
    finally:
        if secondary >= 0:
            os.close(secondary)
        os.close(primary)


def in_child(uid, gid, fn):
    """Return fn(), run in a child with the given uid and gid and no
    supplementary groups. fn's result must be JSON data."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            os.write(write_end, json.dumps(fn()).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        output = f.read()
    os.waitpid(pid, 0)
    return json.loads(output)


CLOCK_REALTIME_COARSE = 5


def fs_clock():
    """Return the time that file timestamps are taken from: the kernel's
    coarse clock, which may lag time.time() by a few milliseconds."""
    return time.clock_gettime(CLOCK_REALTIME_COARSE)


# struct vfs_cap_data, revision 2, effective: CAP_NET_BIND_SERVICE.
FILE_CAPS = struct.pack("<IIIII", 0x02000001, 1 << 10, 0, 0, 0)
