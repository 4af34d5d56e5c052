"""lamina mounted by a user other than root, through fusermount3.

Each test builds a chroot in a fresh temporary directory: lamina and its
libraries, fusermount3, an /etc that names the user, /proc, and a /dev
whose FUSE device node (character device 10:229) has the mode that the
case needs. So the machine's own /dev/fuse, which may be open to root
only, is never changed. lamina runs in the chroot as nobody, whom
mount(2) rejects, so it mounts through the set-user-ID fusermount3. The
file operations run as nobody through the same paths from outside the
chroot, since the temporary directory is open to every user.
"""

import io
import os
import shutil
import stat
import subprocess
import tarfile

import pytest

from conftest import (
    LAMINA,
    LOG_ALARMS,
    MOUNT_TIMEOUT,
    force_unmount,
    make_tempdir,
    run,
    run_lamina,
    wait_for,
)
from helpers import (NOBODY, find_mount, in_child, read_file,
                     shared_libraries)

USER_OPTIONS = "lowerdir=/l,upperdir=/u,workdir=/w,userxattr"
FUSERMOUNT = shutil.which("fusermount3")


class Jail:
    """A chroot for lamina run as nobody, with lower, upper, work and
    merged directories inside it."""

    def __init__(self, fuse_mode=0o666, fusermount=True):
        self.root = make_tempdir("lamina-nonroot.")
        self.mounts = []
        for sub in ("bin", "dev", "etc", "proc", "l", "u", "w", "merged"):
            os.mkdir(self.path(sub))
        self.install(LAMINA, "lamina")
        if fusermount:
            self.install(FUSERMOUNT, "bin/fusermount3")
        os.mknod(self.path("dev", "null"), stat.S_IFCHR | 0o666,
                 os.makedev(1, 3))
        os.mknod(self.path("dev", "fuse"), stat.S_IFCHR | fuse_mode,
                 os.makedev(10, 229))
        os.chmod(self.path("dev", "fuse"), fuse_mode)
        with open(self.path("etc", "passwd"), "w") as f:
            f.write(f"nobody:x:{NOBODY}:{NOBODY}:nobody:/:/bin/false\n")
        with open(self.path("etc", "group"), "w") as f:
            f.write(f"nogroup:x:{NOBODY}:\n")
        os.symlink("/proc/self/mounts", self.path("etc", "mtab"))
        run(["mount", "-t", "proc", "proc", self.path("proc")])
        self.mounts.append(self.path("proc"))
        for sub in ("u", "w", "merged"):
            os.chown(self.path(sub), NOBODY, NOBODY)

    def path(self, *parts):
        return os.path.join(self.root, *parts)

    def install(self, binary, name):
        """Copy binary to name in the chroot, with the libraries it loads
        and its mode, set-user-ID bit included."""
        shutil.copy2(binary, self.path(name))
        for lib in shared_libraries(binary):
            dest = self.path(lib.lstrip("/"))
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            if not os.path.exists(dest):
                shutil.copy2(lib, dest)

    def command(self):
        """Return the command prefix that runs lamina in the chroot as
        nobody."""
        return [shutil.which("chroot"), f"--userspec={NOBODY}:{NOBODY}",
                f"--groups={NOBODY}", self.root, "/lamina"]

    def lamina(self, *args):
        """Run lamina in the chroot as nobody; return (code, out, err)."""
        return run_lamina(list(args), self.root, binary=self.command(),
                          env={"PATH": "/bin"})

    def mount(self, options=USER_OPTIONS):
        return self.lamina("mount", "-o", options, "/merged")

    def mount_foreground(self, options=USER_OPTIONS):
        """Start `lamina mount -f` and wait for the mount; return the
        daemon's process, whose standard error goes to a file."""
        log = open(self.path("daemon.log"), "w")
        daemon = subprocess.Popen(
            self.command() + ["mount", "-f", "-o", options, "/merged"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            env={"PATH": "/bin"})
        log.close()
        mounted = wait_for(
            lambda: find_mount(self.path("merged")) is not None
            or daemon.poll() is not None, MOUNT_TIMEOUT)
        if not mounted or daemon.poll() is not None:
            daemon.kill()
            daemon.wait()
            raise AssertionError("lamina mount -f as nobody did not mount: "
                                 + read_file(self.path("daemon.log")).decode())
        return daemon

    def stop(self, daemon):
        """Unmount as nobody with lamina umount; return the daemon's exit
        status and the lines of its log that report an error."""
        code, _out, err = self.lamina("umount", "/merged")
        assert code == 0, err
        try:
            status = daemon.wait(timeout=MOUNT_TIMEOUT)
        except subprocess.TimeoutExpired:
            daemon.kill()
            status = daemon.wait()
        log = read_file(self.path("daemon.log")).decode()
        alarms = [line for line in log.splitlines()
                  if any(word in line for word in LOG_ALARMS)]
        return status, alarms

    def cleanup(self):
        problems = []
        if find_mount(self.path("merged")) is not None:
            problems.append("the merged directory was still mounted")
            problems += force_unmount(self.path("merged"))
        for path in reversed(self.mounts):
            problems += force_unmount(path)
        if not problems:
            shutil.rmtree(self.root)
        return problems


@pytest.fixture
def jail_factory():
    jails = []

    def make(**kwargs):
        if not FUSERMOUNT:
            pytest.fail("fusermount3 not found: install the fuse3 package")
        jail = Jail(**kwargs)
        jails.append(jail)
        return jail

    yield make
    problems = []
    for jail in jails:
        problems += jail.cleanup()
    assert not problems, problems


def fill_lower(jail):
    """Write a small lower layer owned by nobody."""
    lower = jail.path("l")
    for rel, data in (("f", b"lower\n"), ("d/g", b"g\n"), ("e/h", b"h\n")):
        path = os.path.join(lower, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
    for dirpath, dirnames, filenames in os.walk(lower):
        for name in dirnames + filenames + ["."]:
            os.chown(os.path.join(dirpath, name), NOBODY, NOBODY)


def change_as_nobody(merged):
    """Copy up, remove, replace a directory and link, as nobody; return
    what the mount then shows."""
    def work():
        with open(os.path.join(merged, "f"), "ab") as f:
            f.write(b"more\n")
        os.unlink(os.path.join(merged, "d", "g"))
        shutil.rmtree(os.path.join(merged, "e"))
        os.mkdir(os.path.join(merged, "e"))
        os.link(os.path.join(merged, "f"), os.path.join(merged, "f2"))
        first = os.stat(os.path.join(merged, "f"))
        second = os.stat(os.path.join(merged, "f2"))
        return {
            "f": read_file(os.path.join(merged, "f2")).decode(),
            "d": os.listdir(os.path.join(merged, "d")),
            "e": os.listdir(os.path.join(merged, "e")),
            "same_inode": first.st_ino == second.st_ino,
            "nlink": first.st_nlink,
            "owner": [first.st_uid, first.st_gid],
        }
    return in_child(NOBODY, NOBODY, work)


def error_lines(err):
    """Return the lines of err that are not warnings. A mount without
    root warns that passthrough needs CAP_SYS_ADMIN before it fails."""
    return [line for line in err.splitlines()
            if line.strip() and not line.startswith("lamina: warning:")]


def test_nonroot_mount_and_change(jail_factory):
    jail = jail_factory()
    fill_lower(jail)

    code, _out, err = jail.mount()
    assert code == 0, err
    mount = find_mount(jail.path("merged"))
    assert mount is not None
    assert mount["fstype"] == "fuse.lamina"
    assert f"user_id={NOBODY}" in mount["options"]

    seen = change_as_nobody(jail.path("merged"))
    assert seen["f"] == "lower\nmore\n"
    assert seen["d"] == []
    assert seen["e"] == []
    assert seen["same_inode"]
    assert seen["nlink"] == 2
    assert seen["owner"] == [NOBODY, NOBODY]

    code, _out, err = jail.lamina("umount", "/merged")
    assert code == 0, err
    assert wait_for(lambda: find_mount(jail.path("merged")) is None,
                    MOUNT_TIMEOUT)


def test_nonroot_upper_format(jail_factory):
    """Check the upper that nobody's mount wrote: the whiteout, the
    opaque mark in user.overlay.*, the copy-up and the hard link."""
    jail = jail_factory()
    fill_lower(jail)
    daemon = jail.mount_foreground()
    change_as_nobody(jail.path("merged"))
    status, alarms = jail.stop(daemon)
    assert status == 0
    assert alarms == []
    assert find_mount(jail.path("merged")) is None

    upper = jail.path("u")
    whiteout = os.lstat(os.path.join(upper, "d", "g"))
    assert stat.S_ISCHR(whiteout.st_mode)
    assert whiteout.st_rdev == os.makedev(0, 0)
    assert whiteout.st_uid == NOBODY
    opaque = os.getxattr(os.path.join(upper, "e"), "user.overlay.opaque")
    assert opaque == b"y"
    assert read_file(os.path.join(upper, "f")) == b"lower\nmore\n"
    assert os.stat(os.path.join(upper, "f")).st_uid == NOBODY
    assert (os.stat(os.path.join(upper, "f")).st_ino
            == os.stat(os.path.join(upper, "f2")).st_ino)
    assert read_file(jail.path("l", "f")) == b"lower\n"


# Mounts that fail: the jail, the options and words of the one message.
REJECTED = {
    "without fusermount3": ({"fusermount": False}, USER_OPTIONS,
                            ["fusermount3", "fuse3"]),
    # fusermount3 fails too, and the message gives its reason and the
    # chmod that opens the device.
    "dev fuse for root only": ({"fuse_mode": 0o600}, USER_OPTIONS,
                               ["/dev/fuse", "chmod 0666 /dev/fuse"]),
    # nobody may not set trusted.* xattrs, so the message names the
    # capability and userxattr rather than the filesystem.
    "without userxattr": ({}, "lowerdir=/l,upperdir=/u,workdir=/w",
                          ["CAP_SYS_ADMIN", "-o userxattr"]),
}


@pytest.mark.parametrize("case", sorted(REJECTED))
def test_nonroot_mount_rejected(jail_factory, case):
    jail_args, options, words = REJECTED[case]
    jail = jail_factory(**jail_args)
    fill_lower(jail)

    code, _out, err = jail.mount(options)
    lines = error_lines(err)
    mounted = find_mount(jail.path("merged")) is not None

    assert code != 0
    assert not mounted
    assert len(lines) == 1, err
    assert lines[0].startswith("lamina: ")
    for word in words:
        assert word in lines[0]


def mount_flags(mountpoint):
    """Return the per-mount flags of mountpoint from mountinfo."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4] == mountpoint:
                return fields[5].split(",")
    return None


def test_nonroot_mount_flags(jail_factory):
    """The standard mount flags reach fusermount3: noexec and noatime
    hold for a mount without root as for one by root."""
    jail = jail_factory()
    fill_lower(jail)

    code, _out, err = jail.mount(USER_OPTIONS + ",noexec,noatime")
    assert code == 0, err
    flags = mount_flags(jail.path("merged"))

    code, _out, err = jail.lamina("umount", "/merged")
    assert code == 0, err
    assert "noexec" in flags
    assert "noatime" in flags
    assert "nosuid" in flags


def write_marks_tar(path):
    """Write a tar with a whiteout, an opaque directory and a read-only
    file that carries a user.* xattr."""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name in ("a", "b"):
            entry = tarfile.TarInfo(name)
            entry.type = tarfile.DIRTYPE
            entry.mode = 0o755
            tar.addfile(entry)
        tar.addfile(tarfile.TarInfo("a/.wh.gone"), io.BytesIO(b""))
        tar.addfile(tarfile.TarInfo("b/.wh..wh..opq"), io.BytesIO(b""))
        entry = tarfile.TarInfo("c")
        entry.size = 2
        entry.mode = 0o444
        entry.pax_headers = {"SCHILY.xattr.user.k": "v"}
        tar.addfile(entry, io.BytesIO(b"c\n"))


def test_nonroot_import_userxattr(jail_factory):
    """nobody imports a tar with whiteouts and a read-only file with an
    xattr, as xattr whiteouts and opaque marks in user.overlay.*."""
    jail = jail_factory()
    write_marks_tar(jail.path("l", "layer.tar"))
    os.chown(jail.path("l"), NOBODY, NOBODY)

    code, _out, err = jail.lamina("import", "--userxattr", "/l/layer.tar",
                                  "/u/layer")

    assert code == 0, err
    layer = jail.path("u", "layer")
    whiteout = os.lstat(os.path.join(layer, "a", "gone"))
    assert stat.S_ISREG(whiteout.st_mode)
    assert whiteout.st_size == 0
    assert os.getxattr(os.path.join(layer, "a", "gone"),
                       "user.overlay.whiteout") == b""
    assert os.getxattr(os.path.join(layer, "b"), "user.overlay.opaque") == b"y"
    assert os.getxattr(os.path.join(layer, "c"), "user.k") == b"v"
    assert stat.S_IMODE(os.stat(os.path.join(layer, "c")).st_mode) == 0o444


def test_nonroot_index_falls_back(jail_factory):
    """index=on finds lower files by handle, which needs
    CAP_DAC_READ_SEARCH: without it the mount warns and goes without the
    index, as overlayfs does."""
    jail = jail_factory()
    fill_lower(jail)

    code, _out, err = jail.mount(USER_OPTIONS + ",index=on")
    assert code == 0, err
    code, _out, umount_err = jail.lamina("umount", "/merged")

    assert code == 0, umount_err
    assert "CAP_DAC_READ_SEARCH" in err
    assert "index=off" in err
    assert not os.path.exists(jail.path("w", "index"))


def test_nonroot_owner_after_copy_up(jail_factory):
    """A copy-up by a rename or an xattr change, of files owned by root
    in a world-writable directory, shows nobody as the owner at once, as
    the upper copies have it."""
    jail = jail_factory()
    pub = jail.path("l", "pub")
    os.mkdir(pub)
    os.chmod(pub, 0o777)
    for name in ("moved", "tagged"):
        with open(os.path.join(pub, name), "w") as f:
            f.write(name)
        os.chmod(os.path.join(pub, name), 0o666)
    daemon = jail.mount_foreground()
    merged = jail.path("merged", "pub")

    def owner(name):
        # stat(1) requests the owner alone from statx(2), which the
        # kernel then takes from its cache unless the owner was dropped.
        return int(subprocess.run(["stat", "-c", "%u",
                                   os.path.join(merged, name)],
                                  capture_output=True, text=True,
                                  check=True).stdout)

    def work():
        before = [owner(n) for n in ("moved", "tagged")]
        os.rename(os.path.join(merged, "moved"),
                  os.path.join(merged, "moved2"))
        os.setxattr(os.path.join(merged, "tagged"), "user.k", b"v")
        after = [owner(n) for n in ("moved2", "tagged")]
        return {"before": before, "after": after}

    seen = in_child(NOBODY, NOBODY, work)
    status, alarms = jail.stop(daemon)

    assert seen["before"] == [0, 0]
    assert seen["after"] == [NOBODY, NOBODY]
    assert os.stat(jail.path("u", "pub", "moved2")).st_uid == NOBODY
    assert status == 0
    assert alarms == []
