"""lamina import: an OCI layer tar unpacked into an overlayfs layer.

The round trips export a layer written through kernel overlayfs or lamina
(the `stack` fixture runs each test with both), import the tar, and
compare the two layers entry by entry and as lowers of a mount. Hostile
tars are built with tarfile and must leave nothing behind.
"""

import errno
import io
import os
import stat
import subprocess
import tarfile

import pytest

import helpers
from conftest import LAMINA, require_lamina, wait_for
from test_export import (diff, export_to_file, is_opaque, lamina, make_layer,
                         small_tmpfs, snapshot, SPARSE_SIZE)

COMPRESSIONS = {"plain": [], "gzip": ["--gzip"], "zstd": ["--zstd"]}


def import_ok(tar, target, *args):
    proc = lamina(["import", *args, tar, target])
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert proc.stderr == b"", "import wrote to stderr outside a terminal"
    return target


def leftovers(parent, name):
    """Staging directories that an import left next to its target."""
    return [n for n in os.listdir(parent) if n.startswith(f".{name}.import-")]


@pytest.mark.parametrize("compression", sorted(COMPRESSIONS))
def test_round_trip_keeps_every_entry(stack, tmp_path, compression):
    layer = make_layer(stack)
    tar = export_to_file(layer, str(tmp_path / "layer.tar"),
                         *COMPRESSIONS[compression])
    imported = import_ok(tar, str(tmp_path / "imported"))

    assert diff(snapshot(layer), snapshot(imported)) == []
    assert leftovers(str(tmp_path), "imported") == []


def test_round_trip_keeps_holes(stack, tmp_path):
    layer = make_layer(stack)
    tar = export_to_file(layer, str(tmp_path / "layer.tar"))
    imported = import_ok(tar, str(tmp_path / "imported"))

    st = os.stat(os.path.join(imported, "sparse"))
    assert st.st_size == SPARSE_SIZE
    assert st.st_blocks * 512 < SPARSE_SIZE // 4, "holes were filled"


def test_round_trip_through_stdin(stack, tmp_path):
    layer = make_layer(stack)
    tar = export_to_file(layer, str(tmp_path / "layer.tar"), "--zstd")
    with open(tar, "rb") as source:
        proc = lamina(["import", "-", str(tmp_path / "imported")],
                      stdin=source)
    assert proc.returncode == 0, proc.stderr
    assert diff(snapshot(layer), snapshot(tmp_path / "imported")) == []


def merged_view(stack, top, impl):
    """Snapshot the read-only merge of top over the stack's base."""
    stack.mount(impl=impl, upper=False, lowers=[top, stack.lowers[0]])
    try:
        return snapshot(stack.merged)
    finally:
        stack.unmount()


def test_imported_layer_as_lower(stack, tmp_path):
    layer = make_layer(stack)
    tar = export_to_file(layer, str(tmp_path / "layer.tar"))
    imported = import_ok(tar, str(tmp_path / "imported"))

    for impl in ("kernel", "lamina"):
        original = merged_view(stack, layer, impl)
        again = merged_view(stack, imported, impl)
        assert diff(original, again) == [], f"merged views differ on {impl}"
        assert b"gone" not in again
        assert os.fsencode("olddir/x") not in again


def test_import_into_empty_directory(tmp_path):
    tar = tmp_path / "t.tar"
    with tarfile.open(tar, "w", format=tarfile.PAX_FORMAT) as t:
        add_file(t, "f", b"data")
    os.mkdir(tmp_path / "empty", 0o711)
    import_ok(str(tar), str(tmp_path / "empty"))
    assert helpers.read_file(tmp_path / "empty" / "f") == b"data"
    assert stat.S_IMODE(os.stat(tmp_path / "empty").st_mode) == 0o711


def add_file(t, name, data=b"", mode=0o644):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    t.addfile(info, io.BytesIO(data))


def add_link(t, name, target, kind):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    t.addfile(info)


def write_whiteout_tar(path):
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as t:
        add_file(t, ".wh.top")
        add_file(t, "d/.wh.gone")
        add_file(t, "d/kept", b"k")
        add_file(t, "d/.wh.kept")  # the layer's own entry wins
        add_file(t, "o/.wh.hidden")  # unneeded: o is opaque
        add_file(t, "o/.wh..wh..opq")
        add_file(t, "o/new", b"n")


def test_import_converts_whiteouts(tmp_path):
    write_whiteout_tar(tmp_path / "wh.tar")
    layer = import_ok(str(tmp_path / "wh.tar"), str(tmp_path / "layer"))

    assert helpers.is_whiteout(os.path.join(layer, "top"))
    assert helpers.is_whiteout(os.path.join(layer, "d", "gone"))
    assert helpers.read_file(os.path.join(layer, "d", "kept")) == b"k"
    assert is_opaque(os.path.join(layer, "o"))
    assert sorted(os.listdir(os.path.join(layer, "o"))) == ["new"]
    assert not any(name.startswith(".wh.")
                   for _, dirs, files in os.walk(layer)
                   for name in dirs + files)


def test_import_userxattr_whiteouts(tmp_path):
    write_whiteout_tar(tmp_path / "wh.tar")
    layer = import_ok(str(tmp_path / "wh.tar"), str(tmp_path / "layer"),
                      "--userxattr")

    gone = os.path.join(layer, "d", "gone")
    assert stat.S_ISREG(os.lstat(gone).st_mode)
    assert os.lstat(gone).st_size == 0
    assert helpers.get_xattr(gone, "user.overlay.whiteout") is not None
    assert helpers.get_xattr(os.path.join(layer, "d"),
                             "user.overlay.opaque") == b"x"
    assert is_opaque(os.path.join(layer, "o"), "user.overlay.")
    assert not is_opaque(os.path.join(layer, "o"))

    again = export_to_file(layer, str(tmp_path / "again.tar"),
                           "-o", "userxattr")
    with tarfile.open(again) as t:
        names = sorted(m.name for m in t.getmembers())
    assert names == sorted([".", ".wh.top", "d", "d/.wh.gone", "d/kept",
                            "o", "o/.wh..wh..opq", "o/new"])


def hostile(kind):
    """Entries of one unsafe tar, as (name, data or link, type)."""
    outside = "/tmp/lamina-import-escape"
    return {
        "absolute": [(outside + "/abs", b"x", tarfile.REGTYPE)],
        "dotdot": [("ok", b"x", tarfile.REGTYPE),
                   ("../escape", b"x", tarfile.REGTYPE)],
        "symlink": [("esc", outside, tarfile.SYMTYPE),
                    ("esc/through", b"x", tarfile.REGTYPE)],
        "hardlink": [("pw", "/etc/passwd", tarfile.LNKTYPE)],
        "hardlink_dotdot": [("pw", "../../../etc/passwd", tarfile.LNKTYPE)],
        "whiteout_slash": [(".wh.dir/name", b"", tarfile.REGTYPE)],
    }[kind]


@pytest.mark.parametrize("kind", ["absolute", "dotdot", "symlink", "hardlink",
                                  "hardlink_dotdot", "whiteout_slash"])
def test_import_refuses_hostile_tar(tmp_path, kind):
    outside = "/tmp/lamina-import-escape"
    os.makedirs(outside, exist_ok=True)
    before = sorted(os.listdir(outside))
    passwd = helpers.read_file("/etc/passwd")
    tar = tmp_path / "hostile.tar"
    entries = hostile(kind)
    with tarfile.open(tar, "w", format=tarfile.PAX_FORMAT) as t:
        for name, payload, kind_flag in entries:
            if kind_flag == tarfile.REGTYPE:
                add_file(t, name, payload)
            else:
                add_link(t, name, payload, kind_flag)

    proc = lamina(["import", str(tar), str(tmp_path / "layer")])
    message = proc.stderr.decode()
    assert proc.returncode == 1
    assert message.startswith("lamina: ")
    assert f"'{entries[-1][0]}'" in message, message
    assert len(message.splitlines()) == 1
    assert not os.path.exists(tmp_path / "layer")
    assert leftovers(str(tmp_path), "layer") == []
    assert not os.path.exists(tmp_path.parent / "escape")
    assert sorted(os.listdir(outside)) == before
    assert helpers.read_file("/etc/passwd") == passwd


def test_import_target_not_empty(tmp_path):
    write_whiteout_tar(tmp_path / "wh.tar")
    helpers.write_file(str(tmp_path / "layer" / "old"), "old")
    proc = lamina(["import", str(tmp_path / "wh.tar"), str(tmp_path / "layer")])
    assert proc.returncode == 1
    assert b"not an empty directory" in proc.stderr
    assert len(proc.stderr.splitlines()) == 1
    assert os.listdir(tmp_path / "layer") == ["old"]


def test_import_missing_input(tmp_path):
    proc = lamina(["import", str(tmp_path / "none.tar"),
                   str(tmp_path / "layer")])
    assert proc.returncode == 1
    assert proc.stderr.startswith(b"lamina: cannot open input file ")
    assert len(proc.stderr.splitlines()) == 1
    assert not os.path.exists(tmp_path / "layer")
    assert leftovers(str(tmp_path), "layer") == []


def test_import_not_a_tar(tmp_path):
    helpers.write_file(str(tmp_path / "junk"), b"\x00not a tar" * 100)
    proc = lamina(["import", str(tmp_path / "junk"), str(tmp_path / "layer")])
    assert proc.returncode == 1
    assert proc.stderr.startswith(b"lamina: ")
    assert not os.path.exists(tmp_path / "layer")
    assert leftovers(str(tmp_path), "layer") == []


def test_import_refuses_terminal(tmp_path):
    primary, secondary = os.openpty()
    try:
        proc = lamina(["import", str(tmp_path / "layer")], stdin=secondary)
    finally:
        os.close(secondary)
        os.close(primary)
    assert proc.returncode == 1
    assert b"terminal" in proc.stderr
    assert not os.path.exists(tmp_path / "layer")
    assert leftovers(str(tmp_path), "layer") == []


def test_import_strips_overlay_xattrs(tmp_path):
    tar = tmp_path / "x.tar"
    with tarfile.open(tar, "w", format=tarfile.PAX_FORMAT) as t:
        info = tarfile.TarInfo("d")
        info.type = tarfile.DIRTYPE
        info.pax_headers = {"SCHILY.xattr.trusted.overlay.redirect": "/etc",
                            "SCHILY.xattr.user.keep": "yes"}
        t.addfile(info)
    layer = import_ok(str(tar), str(tmp_path / "layer"))
    attrs = helpers.xattrs(os.path.join(layer, "d"))
    assert attrs == {"user.keep": b"yes"}


def test_import_progress_on_terminal(tmp_path):
    tar = tmp_path / "t.tar"
    with tarfile.open(tar, "w", format=tarfile.PAX_FORMAT) as t:
        add_file(t, "f", b"data")
    require_lamina()

    status, shown = helpers.run_with_terminal_stderr(
        [LAMINA, "import", str(tar), str(tmp_path / "layer")])

    assert status == 0
    assert b"import" in shown


def test_import_interrupted_leaves_nothing(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        add_file(t, "first", b"1" * 65536)
        add_file(t, "second", b"2" * 65536)
    fifo = tmp_path / "slow"
    os.mkfifo(fifo)
    proc = subprocess.Popen([LAMINA, "import", str(fifo),
                             str(tmp_path / "layer")],
                            stderr=subprocess.PIPE)
    writer = open(fifo, "wb")
    try:
        # Half the tar, then nothing: the import waits inside an entry.
        writer.write(buf.getvalue()[:70000])
        writer.flush()
        wait_for(lambda: leftovers(str(tmp_path), "layer"), 15.0)
        proc.terminate()
        _, stderr = proc.communicate(timeout=30)
    finally:
        try:
            writer.close()
        except BrokenPipeError:
            pass
    assert proc.returncode == 1
    assert b"interrupted" in stderr
    assert not os.path.exists(tmp_path / "layer")
    assert leftovers(str(tmp_path), "layer") == []


def expect_failed_import(tar, target, entry, existed):
    """Import tar into target on a full filesystem: the import fails with
    one line that names entry and the cause, and target is as before."""
    proc = lamina(["import", str(tar), target])

    err = proc.stderr.decode()
    assert proc.returncode == 1, err
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"lamina: import into {target} failed: "), err
    assert f"tar entry '{entry}'" in err
    assert "No space left on device" in err
    if existed:
        assert os.listdir(target) == []
    else:
        assert not os.path.exists(target)
    parent, name = os.path.split(target)
    assert leftovers(parent, name) == []


@pytest.mark.parametrize("existed", [False, True], ids=["new", "empty"])
def test_import_data_on_full_filesystem(tmp_path, existed):
    """A file that does not fit fails the import, although libarchive
    reports that write error as ARCHIVE_WARN."""
    tar = tmp_path / "big.tar"
    with tarfile.open(tar, "w", format=tarfile.PAX_FORMAT) as t:
        add_file(t, "small", b"s")
        add_file(t, "big", os.urandom(3 << 20))

    with small_tmpfs(tmp_path / "small") as small:
        target = os.path.join(small, "layer")
        if existed:
            os.mkdir(target)
        expect_failed_import(tar, target, "big", existed)


def test_import_xattr_on_full_filesystem(tmp_path):
    """An xattr that does not fit fails the import. tmpfs charges user
    xattrs to its inode space, 1 KiB for each of nr_inodes (Linux 6.6 and
    later), so 16 inodes leave no room for 32 KiB."""
    tar = tmp_path / "xattr.tar"
    with tarfile.open(tar, "w", format=tarfile.PAX_FORMAT) as t:
        info = tarfile.TarInfo("f")
        info.pax_headers = {"SCHILY.xattr.user.big": "x" * 32768}
        t.addfile(info)

    with small_tmpfs(tmp_path / "small", "size=2m,nr_inodes=16") as small:
        probe = os.path.join(small, "probe")
        helpers.write_file(probe)
        try:
            os.setxattr(probe, "user.small", b"x")
        except OSError as e:
            if e.errno != errno.EOPNOTSUPP:
                raise
            pytest.skip("this kernel's tmpfs has no user xattrs")
        os.remove(probe)
        expect_failed_import(tar, os.path.join(small, "layer"), "f", False)


def kill_import_midway(tmp_path, target):
    """Kill an import of target mid-tar and return its staging names."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        add_file(t, "first", b"1" * 65536)
        add_file(t, "second", b"2" * 65536)
    fifo = tmp_path / "slow"
    os.mkfifo(fifo)
    proc = subprocess.Popen([LAMINA, "import", str(fifo), str(target)],
                            stderr=subprocess.DEVNULL)
    writer = open(fifo, "wb")
    try:
        writer.write(buf.getvalue()[:70000])
        writer.flush()
        wait_for(lambda: leftovers(str(tmp_path), target.name), 15.0)
        proc.kill()
        proc.wait(timeout=30)
    finally:
        try:
            writer.close()
        except BrokenPipeError:
            pass
    return leftovers(str(tmp_path), target.name)


def test_import_removes_killed_staging(tmp_path):
    """The next import of a target removes what a killed one left."""
    outside = tmp_path / "outside"
    helpers.write_file(str(outside / "precious"), "p")
    target = tmp_path / "layer"
    staged = kill_import_midway(tmp_path, target)
    assert len(staged) == 1
    os.symlink(outside, tmp_path / staged[0] / "link")
    # Same form of name, but a symlink: it is no staging directory.
    decoy = tmp_path / ".layer.import-abcdef"
    os.symlink(outside, decoy)
    write_whiteout_tar(tmp_path / "wh.tar")

    proc = lamina(["import", str(tmp_path / "wh.tar"), str(target)])

    err = proc.stderr.decode()
    assert proc.returncode == 0, err
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"lamina: removing {staged[0]} next to "), err
    assert "interrupted import" in err
    assert leftovers(str(tmp_path), "layer") == [decoy.name]
    assert os.path.islink(decoy)
    assert os.listdir(outside) == ["precious"]
    assert helpers.read_file(str(outside / "precious")) == b"p"
    assert os.path.isdir(target)


def test_import_other_target_keeps_staging(tmp_path):
    """Staging directories of another target are not touched."""
    staged = kill_import_midway(tmp_path, tmp_path / "layer")
    assert len(staged) == 1
    write_whiteout_tar(tmp_path / "wh.tar")

    import_ok(str(tmp_path / "wh.tar"), str(tmp_path / "layer2"))

    assert leftovers(str(tmp_path), "layer") == staged


def test_import_target_symlink(tmp_path):
    """A target that is a symlink to an empty directory is rejected."""
    os.mkdir(tmp_path / "empty")
    os.symlink(tmp_path / "empty", tmp_path / "link")
    write_whiteout_tar(tmp_path / "wh.tar")

    proc = lamina(["import", str(tmp_path / "wh.tar"), str(tmp_path / "link")])

    err = proc.stderr.decode()
    assert proc.returncode == 1
    assert err.startswith(f"lamina: layer directory {tmp_path / 'link'} "), err
    assert "is a symbolic link" in err
    assert "give the path of a directory" in err
    assert len(err.splitlines()) == 1
    assert os.listdir(tmp_path / "empty") == []
    assert os.path.islink(tmp_path / "link")


def acl_xattrs(path):
    """Return the POSIX ACL xattrs of path, by name."""
    found = {}
    for name in ("system.posix_acl_access", "system.posix_acl_default"):
        value = helpers.get_xattr(path, name)
        if value is not None:
            found[name] = value
    return found


def test_import_no_inherited_acls(tmp_path):
    """Entries below a directory with a default ACL get only the ACLs
    that the tar holds for them, and the layer's root none from the
    target's parent."""
    layer = str(tmp_path / "layer")
    helpers.write_file(os.path.join(layer, "d", "f"), "f\n")
    os.makedirs(os.path.join(layer, "d", "sub"))
    subprocess.run(["setfacl", "-d", "-m", "u:1234:rwx",
                    os.path.join(layer, "d")], check=True)
    tar = export_to_file(layer, str(tmp_path / "layer.tar"))
    parent = tmp_path / "parent"
    parent.mkdir()
    subprocess.run(["setfacl", "-d", "-m", "u:4321:rwx", str(parent)],
                   check=True)

    imported = import_ok(tar, str(parent / "imported"))

    assert acl_xattrs(imported) == {}
    assert acl_xattrs(os.path.join(imported, "d", "f")) == {}
    assert acl_xattrs(os.path.join(imported, "d", "sub")) == {}
    assert (acl_xattrs(os.path.join(imported, "d"))
            == acl_xattrs(os.path.join(layer, "d")))
    assert (os.stat(os.path.join(imported, "d", "f")).st_mode
            == os.stat(os.path.join(layer, "d", "f")).st_mode)
    assert diff(snapshot(layer), snapshot(imported)) == []


def test_import_rejects_mount_point(tmp_path):
    """An empty directory that is a mount point is rejected before
    anything is unpacked, since the import renames its result over it."""
    layer = str(tmp_path / "layer")
    helpers.write_file(os.path.join(layer, "f"), "f\n")
    tar = export_to_file(layer, str(tmp_path / "layer.tar"))
    target = tmp_path / "target"
    target.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(target)], check=True)
    try:
        proc = lamina(["import", tar, str(target)])
        left = leftovers(str(tmp_path), "target")
        contents = os.listdir(target)
    finally:
        subprocess.run(["umount", str(target)], check=True)

    assert proc.returncode != 0
    assert b"mount point" in proc.stderr
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
    assert left == []
    assert contents == []
