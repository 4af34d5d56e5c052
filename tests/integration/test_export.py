"""lamina export: a layer directory as an OCI image layer tar.

The layers are upper directories written through kernel overlayfs and
through lamina (the `stack` fixture runs each test with both), so the
export reads the on-disk format that each one writes. The helpers here
build such a layer and snapshot layers; test_import.py uses them too.
"""

import contextlib
import hashlib
import io
import os
import shutil
import stat
import subprocess
import tarfile

import pytest

import helpers
from conftest import (LAMINA, lamina_for_others, make_tempdir,
                      require_lamina)

OVERLAY_PREFIXES = ("trusted.overlay.", "user.overlay.")

# Names that tar headers and the layer walk must keep byte for byte.
ODD_NAMES = [b"with space", b"new\nline", b"bytes\xff\xfe", "ünïcode".encode()]
SPARSE_SIZE = 8 << 20


def lamina(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
           stderr=subprocess.PIPE):
    """Run lamina with byte output; return the CompletedProcess."""
    require_lamina()
    return subprocess.run([LAMINA, *args], stdin=stdin, stdout=stdout,
                          stderr=stderr, timeout=120)


def fill_base(base):
    """The lower layer that the exported layer changes."""
    helpers.write_file(os.path.join(base, "keep"), "kept\n")
    helpers.write_file(os.path.join(base, "gone"), "deleted later\n")
    helpers.write_file(os.path.join(base, "dir", "a"), "a\n")
    helpers.write_file(os.path.join(base, "dir", "b"), "b\n")
    helpers.write_file(os.path.join(base, "olddir", "x"), "x\n")
    helpers.write_file(os.path.join(base, "olddir", "y", "z"), "z\n")


def change_merged(m):
    """Make every kind of entry the export must carry, through a mount."""
    os.remove(os.path.join(m, "gone"))
    os.remove(os.path.join(m, "dir", "b"))
    shutil.rmtree(os.path.join(m, "olddir"))
    os.mkdir(os.path.join(m, "olddir"))
    helpers.write_file(os.path.join(m, "olddir", "fresh"), "fresh\n")
    helpers.write_file(os.path.join(m, "dir", "a"), "changed\n")
    helpers.write_file(os.path.join(m, "new"), "new\n")
    os.setxattr(os.path.join(m, "new"), "user.test", b"value\x00\x01")
    os.chown(os.path.join(m, "new"), 1234, 5678)
    os.chmod(os.path.join(m, "new"), 0o4750)
    helpers.write_file(os.path.join(m, "h1"), "linked\n")
    os.makedirs(os.path.join(m, "sub"))
    os.link(os.path.join(m, "h1"), os.path.join(m, "h2"))
    os.link(os.path.join(m, "h1"), os.path.join(m, "sub", "h3"))
    os.symlink("dir/../keep", os.path.join(m, "sym"))
    os.mknod(os.path.join(m, "chr"), stat.S_IFCHR | 0o620, os.makedev(1, 3))
    os.mknod(os.path.join(m, "blk"), stat.S_IFBLK | 0o600, os.makedev(7, 9))
    os.mkfifo(os.path.join(m, "fifo"), 0o640)
    helpers.make_sparse(os.path.join(m, "sparse"), SPARSE_SIZE,
                        {0: b"head", 4 << 20: b"middle"})
    mbytes = os.fsencode(m)
    for name in ODD_NAMES:
        helpers.write_file(os.fsdecode(os.path.join(mbytes, name)), name)
    helpers.utimensat(os.path.join(m, "new"), (1, 0), (1500000000, 123456789))


def make_layer(stack):
    """Fill the stack's base, change it through a mount; return the upper."""
    fill_base(stack.lowers[0])
    # The same options on both, so that both mark sub opaque.
    stack.mount(lowers=stack.lowers[:1], extra=["redirect_dir=on"])
    try:
        change_merged(stack.merged)
    finally:
        stack.unmount()
    return stack.upper


def is_opaque(path, prefix="trusted.overlay."):
    return helpers.get_xattr(path, prefix + "opaque") == b"y"


def is_any_whiteout(path):
    """A whiteout device, or an xattr whiteout in a directory marked x."""
    if helpers.is_whiteout(path):
        return True
    parent = os.path.dirname(path)
    return (helpers.get_xattr(parent, "user.overlay.opaque") == b"x"
            and helpers.get_xattr(path, "user.overlay.whiteout") is not None)


def describe(path):
    """One entry of a layer as the round trip must keep it."""
    if is_any_whiteout(path):
        return {"whiteout": True}
    st = os.lstat(path)
    record = {
        "type": stat.S_IFMT(st.st_mode), "mode": stat.S_IMODE(st.st_mode),
        "uid": st.st_uid, "gid": st.st_gid, "mtime_ns": st.st_mtime_ns,
        "nlink": st.st_nlink,
        "xattrs": {k: v for k, v in helpers.xattrs(path).items()
                   if not k.startswith(OVERLAY_PREFIXES)},
        "opaque": is_opaque(path) or is_opaque(path, "user.overlay."),
    }
    if stat.S_ISREG(st.st_mode):
        record["size"] = st.st_size
        record["sha256"] = helpers.sha256_file(path)
    elif stat.S_ISLNK(st.st_mode):
        record["target"] = os.readlink(path)
    elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        record["rdev"] = st.st_rdev
    return record


def snapshot(root):
    """{relative path as bytes: describe(...)} for root and below."""
    root = os.fsencode(root)
    tree = {b".": describe(root)}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            tree[os.path.relpath(full, root)] = describe(full)
    return tree


def diff(left, right):
    """List the differences between two snapshots, one line each."""
    problems = []
    for rel in sorted(set(left) | set(right)):
        if left.get(rel) != right.get(rel):
            problems.append(f"{rel!r}: {left.get(rel)} != {right.get(rel)}")
    return problems


@contextlib.contextmanager
def small_tmpfs(path, options="size=2m"):
    """Mount a tmpfs with options on the new directory path, yield path as
    a string, and unmount it afterwards. A few MiB fill it up."""
    os.mkdir(path)
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "lamina-test",
                    str(path)], check=True, capture_output=True)
    try:
        yield str(path)
    finally:
        subprocess.run(["umount", str(path)], check=True,
                       capture_output=True)


def export_to_file(layer, out, *args):
    proc = lamina(["export", *args, layer, out])
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert proc.stderr == b"", "export wrote to stderr outside a terminal"
    return out


def tar_escape(name):
    """GNU tar's default (escape) quoting of a name in tar -t output."""
    out = []
    for byte in name:
        if byte == ord("\\"):
            out.append("\\\\")
        elif byte == ord("\n"):
            out.append("\\n")
        elif 32 <= byte < 127:
            out.append(chr(byte))
        else:
            out.append(f"\\{byte:03o}")
    return "".join(out)


def expected_names():
    """The tar names export must write for the layer of make_layer."""
    names = [b"./", b"blk", b"chr", b"dir/", b"dir/.wh.b", b"dir/a",
             b"fifo", b".wh.gone", b"h1", b"h2", b"new", b"olddir/",
             b"olddir/.wh..wh..opq", b"olddir/fresh", b"sparse", b"sub/",
             b"sub/.wh..wh..opq", b"sub/h3", b"sym", *ODD_NAMES]
    return sorted(names)


def test_export_names_match_tar_listing(stack, tmp_path):
    layer = make_layer(stack)
    out = export_to_file(layer, str(tmp_path / "layer.tar"))

    proc = subprocess.run(["tar", "-tf", out], capture_output=True,
                          env={**os.environ, "LC_ALL": "C"})
    assert proc.returncode == 0, proc.stderr
    listed = proc.stdout.decode("ascii").splitlines()
    assert sorted(listed) == sorted(tar_escape(n) for n in expected_names())


def test_export_entries_keep_metadata(stack, tmp_path):
    layer = make_layer(stack)
    out = export_to_file(layer, str(tmp_path / "layer.tar"))

    with tarfile.open(out, encoding="utf-8", errors="surrogateescape") as t:
        members = {os.fsencode(m.name): m for m in t.getmembers()}
    new = members[b"new"]
    assert (new.uid, new.gid, new.mode) == (1234, 5678, 0o4750)
    assert new.pax_headers["mtime"] == "1500000000.123456789"
    assert new.pax_headers["SCHILY.xattr.user.test"] == "value\x00\x01"
    assert not any("overlay" in key for m in members.values()
                   for key in m.pax_headers)
    assert members[b"h2"].islnk()
    assert members[b"h2"].linkname == "h1"
    assert members[b"sub/h3"].islnk()
    assert members[b"sub/h3"].linkname == "h1"
    assert members[b"sym"].issym()
    assert members[b"sym"].linkname == "dir/../keep"
    assert members[b"chr"].ischr()
    assert (members[b"chr"].devmajor, members[b"chr"].devminor) == (1, 3)
    assert members[b"blk"].isblk()
    assert members[b"fifo"].isfifo()
    assert members[b"sparse"].pax_headers.get("GNU.sparse.realsize") == \
        str(SPARSE_SIZE)


def test_export_order_parents_first(stack, tmp_path):
    layer = make_layer(stack)
    out = export_to_file(layer, str(tmp_path / "layer.tar"))

    with tarfile.open(out, encoding="utf-8", errors="surrogateescape") as t:
        names = [m.name for m in t.getmembers()]
    seen = set()
    for name in names:
        parent = os.path.dirname(name)
        assert parent in seen or parent in ("", "."), f"{name} before {parent}"
        seen.add(name)


def test_export_is_reproducible(stack, tmp_path):
    layer = make_layer(stack)
    for flag in ([], ["--gzip"], ["--zstd"]):
        first = export_to_file(layer, str(tmp_path / "a"), *flag)
        with open(tmp_path / "b", "wb") as out:
            proc = lamina(["export", *flag, layer, "-"], stdout=out)
        assert proc.returncode == 0, proc.stderr
        assert helpers.read_file(first) == helpers.read_file(tmp_path / "b"), \
            f"two exports with {flag} differ"


def test_export_compression_formats(stack, tmp_path):
    layer = make_layer(stack)
    gz = helpers.read_file(export_to_file(layer, str(tmp_path / "g"),
                                          "--gzip"))
    zst = helpers.read_file(export_to_file(layer, str(tmp_path / "z"),
                                           "--zstd"))
    assert gz[:2] == b"\x1f\x8b"
    assert zst[:4] == b"\x28\xb5\x2f\xfd"
    plain = subprocess.run(["zstd", "-dc", str(tmp_path / "z")],
                           capture_output=True, check=True).stdout
    assert plain == helpers.read_file(export_to_file(layer,
                                                     str(tmp_path / "p")))


def make_redirected_layer(root):
    """A base and an upper where the kernel moved base/a to b."""
    base, upper = os.path.join(root, "base"), os.path.join(root, "upper")
    work, merged = os.path.join(root, "work"), os.path.join(root, "merged")
    for path in (base, upper, work, merged):
        os.mkdir(path)
    helpers.write_file(os.path.join(base, "a", "f"), "f\n")
    helpers.write_file(os.path.join(base, "a", "in", "g"), "g\n")
    helpers.write_file(os.path.join(base, "a", "in", "h"), "h\n")
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir={base},upperdir={upper},workdir={work},"
                    "redirect_dir=on", merged], check=True)
    try:
        os.rename(os.path.join(merged, "a"), os.path.join(merged, "b"))
        os.remove(os.path.join(merged, "b", "in", "g"))
        helpers.write_file(os.path.join(merged, "b", "n"), "n\n")
    finally:
        subprocess.run(["umount", merged], check=True)
    assert helpers.get_xattr(os.path.join(upper, "b"),
                             "trusted.overlay.redirect") is not None
    return base, upper


def test_export_redirect_needs_lowers(tmp_path):
    base, upper = make_redirected_layer(str(tmp_path))
    proc = lamina(["export", upper, str(tmp_path / "out.tar")])
    message = proc.stderr.decode()
    assert proc.returncode == 1
    assert message.startswith("lamina: ")
    assert "'b'" in message
    assert "lowerdir=" in message
    assert len(message.splitlines()) == 1
    assert not os.path.exists(tmp_path / "out.tar")


def test_export_redirect_as_opaque_merge(tmp_path):
    base, upper = make_redirected_layer(str(tmp_path))
    out = export_to_file(upper, str(tmp_path / "out.tar"),
                         "-o", f"lowerdir={base}")

    with tarfile.open(out) as t:
        names = sorted(m.name for m in t.getmembers())
        data = t.extractfile("b/f").read()
    assert names == sorted([".", ".wh.a", "b", "b/.wh..wh..opq", "b/f",
                            "b/in", "b/in/h", "b/n"])
    assert data == b"f\n"


def test_export_metacopy_data_from_lower(tmp_path):
    base, layer = str(tmp_path / "base"), str(tmp_path / "layer")
    helpers.write_file(os.path.join(base, "f"), "lower data\n")
    helpers.write_file(os.path.join(layer, "f"), "")
    os.truncate(os.path.join(layer, "f"), len("lower data\n"))
    os.chmod(os.path.join(layer, "f"), 0o600)
    os.setxattr(os.path.join(layer, "f"), "trusted.overlay.metacopy", b"")

    proc = lamina(["export", layer, str(tmp_path / "no.tar")])
    assert proc.returncode == 1
    assert b"'f'" in proc.stderr
    assert b"lowerdir=" in proc.stderr
    out = export_to_file(layer, str(tmp_path / "out.tar"),
                         "-o", f"lowerdir={base}")
    with tarfile.open(out) as t:
        assert t.getmember("f").mode == 0o600
        assert t.extractfile("f").read() == b"lower data\n"


def test_export_missing_layer(tmp_path):
    proc = lamina(["export", str(tmp_path / "nope"), str(tmp_path / "o")])
    assert proc.returncode == 1
    assert proc.stderr.decode().startswith("lamina: layer directory ")
    assert len(proc.stderr.splitlines()) == 1
    assert not os.path.exists(tmp_path / "o")


def test_export_refuses_terminal(tmp_path):
    os.mkdir(tmp_path / "layer")
    primary, secondary = os.openpty()
    try:
        proc = lamina(["export", str(tmp_path / "layer")], stdout=secondary)
    finally:
        os.close(secondary)
        os.close(primary)
    assert proc.returncode == 1
    assert b"terminal" in proc.stderr
    assert len(proc.stderr.splitlines()) == 1


def test_export_output_inside_layer(tmp_path):
    os.mkdir(tmp_path / "layer")
    proc = lamina(["export", str(tmp_path / "layer"),
                   str(tmp_path / "layer" / "self.tar")])
    assert proc.returncode == 1
    assert b"inside the layer" in proc.stderr
    assert os.listdir(tmp_path / "layer") == []


def test_export_full_filesystem_names_cause(tmp_path):
    """A tar that does not fit fails the export with the entry and the
    errno text, and leaves no partial tar."""
    helpers.write_file(str(tmp_path / "layer" / "big"), os.urandom(3 << 20))

    with small_tmpfs(tmp_path / "small") as small:
        out = os.path.join(small, "layer.tar")
        proc = lamina(["export", str(tmp_path / "layer"), out])

        err = proc.stderr.decode()
        assert proc.returncode == 1, err
        assert len(err.splitlines()) == 1, err
        assert err.startswith(
            f"lamina: export of {tmp_path / 'layer'} failed: "), err
        assert "tar entry 'big'" in err
        assert "No space left on device" in err
        assert os.listdir(small) == []


def test_export_progress_on_terminal(tmp_path):
    helpers.write_file(str(tmp_path / "layer" / "f"), "x")
    require_lamina()

    status, shown = helpers.run_with_terminal_stderr(
        [LAMINA, "export", str(tmp_path / "layer"), str(tmp_path / "o.tar")])

    assert status == 0
    assert b"export" in shown


def test_export_empty_output_name(tmp_path):
    """An empty FILE is rejected before anything is written."""
    require_lamina()
    os.mkdir(tmp_path / "layer")
    helpers.write_file(str(tmp_path / "layer" / "f"), "f\n")
    proc = subprocess.run([LAMINA, "export", str(tmp_path / "layer"), ""],
                          stdin=subprocess.DEVNULL, capture_output=True,
                          cwd=tmp_path, timeout=120)
    err = proc.stderr.decode()
    assert proc.returncode == 1
    assert err.startswith("lamina: the output file name is empty; "), err
    assert "give a file name" in err
    assert len(err.splitlines()) == 1
    assert sorted(os.listdir(tmp_path)) == ["layer"]


def test_export_names_unreadable_entry():
    """A user who cannot read an entry learns which one stopped the
    export."""
    root = make_tempdir("lamina-export-access.")
    try:
        layer = os.path.join(root, "layer")
        helpers.write_file(os.path.join(layer, "etc", "shadow"), "s\n",
                           mode=0o640)
        out = os.path.join(root, "out")
        os.mkdir(out)
        os.chown(out, helpers.NOBODY, helpers.NOBODY)
        binary = lamina_for_others(root)
        proc = helpers.run_as_nobody(
            [binary, "export", layer, os.path.join(out, "layer.tar")])
    finally:
        shutil.rmtree(root)

    assert proc.returncode != 0
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
    assert "at etc/shadow" in proc.stderr


def test_export_warns_of_user_marks(tmp_path):
    """A layer with user.overlay.* marks exported without -o userxattr
    gets a warning; with it, the opaque mark reaches the tar."""
    layer = str(tmp_path / "layer")
    helpers.write_file(os.path.join(layer, "e", "f"), "f\n")
    os.setxattr(os.path.join(layer, "e"), "user.overlay.opaque", b"y")

    plain = lamina(["export", layer, str(tmp_path / "plain.tar")])
    marked = lamina(["export", "-o", "userxattr", layer,
                     str(tmp_path / "marked.tar")])

    assert plain.returncode == 0, plain.stderr
    assert b"-o userxattr" in plain.stderr
    assert len(plain.stderr.splitlines()) == 1, plain.stderr
    assert marked.returncode == 0, marked.stderr
    assert marked.stderr == b""
    with tarfile.open(str(tmp_path / "marked.tar")) as archive:
        names = [n.removeprefix("./") for n in archive.getnames()]
    assert "e/.wh..wh..opq" in names
