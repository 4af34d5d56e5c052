"""Directory listings of merged directories."""

import os
import threading

from helpers import DirStream, getdents, make_whiteout, write_file

DT_DIR = 4
DT_REG = 8
DT_LNK = 10


def names(entries):
    return [name for name, _ino, _type in entries if name not in (".", "..")]


def test_readdir_merges_layers(stack):
    write_file(stack.lo(1, "a"), "")
    write_file(stack.lo(1, "dup"), "1")
    write_file(stack.lo(1, "gone"), "")
    write_file(stack.lo(0, "b"), "")
    write_file(stack.lo(0, "dup"), "0")
    write_file(stack.u("c"), "")
    write_file(stack.u("dup"), "u")
    make_whiteout(stack.u("gone"))
    stack.mount()

    entries, _calls = getdents(stack.merged)
    listed = names(entries)

    assert sorted(listed) == ["a", "b", "c", "dup"]
    assert len(listed) == len(set(listed)), "duplicate names"
    assert [n for n, _i, _t in entries].count(".") == 1
    assert [n for n, _i, _t in entries].count("..") == 1


def test_readdir_hides_whiteout(stack):
    write_file(stack.lo(0, "victim"), "")
    write_file(stack.lo(0, "keep"), "")
    stack.mount()

    os.unlink(stack.m("victim"))

    assert os.listdir(stack.merged) == ["keep"]


def test_readdir_subdir_merge(stack):
    write_file(stack.lo(1, "d", "x"), "")
    write_file(stack.lo(0, "d", "y"), "")
    write_file(stack.u("d", "z"), "")
    stack.mount()

    assert sorted(os.listdir(stack.m("d"))) == ["x", "y", "z"]


def test_readdir_d_type(stack):
    os.makedirs(stack.lo(1, "dir"))
    write_file(stack.lo(0, "reg"), "")
    os.symlink("reg", stack.lo(0, "sym"))
    write_file(stack.u("upreg"), "")
    stack.mount()

    entries, _calls = getdents(stack.merged)
    types = {name: d_type for name, _ino, d_type in entries}

    assert types["dir"] == DT_DIR
    assert types["reg"] == DT_REG
    assert types["sym"] == DT_LNK
    assert types["upreg"] == DT_REG


def test_readdir_d_ino_matches_st_ino(stack):
    """d_ino from getdents equals st_ino from stat for every kind of entry.

    Entries: lower-only file, upper-only file, copied-up file, merged dir,
    lower-only dir.
    """
    write_file(stack.lo(1, "lowfile"), "")
    write_file(stack.lo(0, "copied"), "old")
    os.makedirs(stack.lo(1, "mdir"))
    os.makedirs(stack.lo(0, "mdir", "sub"))
    os.makedirs(stack.lo(0, "lowdir"))
    stack.mount()
    write_file(stack.m("upfile"), "")
    with open(stack.m("copied"), "ab") as f:
        f.write(b"new")

    for directory in (stack.merged, stack.m("mdir")):
        entries, _calls = getdents(directory)
        for name, d_ino, _type in entries:
            if name in (".", ".."):
                continue
            st_ino = os.lstat(os.path.join(directory, name)).st_ino
            assert d_ino == st_ino, f"{directory}/{name}"


def test_readdir_after_lookups(stack):
    """A listing of names that were looked up and changed before shows
    the same types, inode numbers and attributes as before it."""
    write_file(stack.lo(1, "low"), "")
    write_file(stack.lo(0, "changed"), "old")
    os.makedirs(stack.lo(1, "dir", "sub"))
    os.symlink("low", stack.lo(0, "link"))
    stack.mount()
    os.chmod(stack.m("changed"), 0o600)
    write_file(stack.m("new"), "")
    names = ["low", "changed", "dir", "link", "new"]
    before = {name: os.lstat(stack.m(name)) for name in names}

    entries, _calls = getdents(stack.merged)
    after = {name: os.lstat(stack.m(name)) for name in names}

    kinds = {name: (d_ino, d_type) for name, d_ino, d_type in entries}
    assert sorted(set(kinds) - {".", ".."}) == sorted(names)
    for name in names:
        assert kinds[name][0] == before[name].st_ino, name
        assert after[name].st_ino == before[name].st_ino, name
        assert after[name].st_mode == before[name].st_mode, name
        assert after[name].st_nlink == before[name].st_nlink, name
    assert kinds["dir"][1] == DT_DIR
    assert kinds["link"][1] == DT_LNK
    assert kinds["changed"][1] == DT_REG
    assert after["changed"].st_mode & 0o777 == 0o600


def test_readdir_100k_entries(stack):
    """A 100,000-entry merged dir reads fully in many small getdents calls.

    Names are spread over both lowers and the upper, with overlaps and
    whiteouts, so the merge and the continuation offset both matter.
    """
    total = 100_000
    paths = {
        0: stack.lo(1, "big"),
        1: stack.lo(0, "big"),
        2: stack.u("big"),
    }
    for path in paths.values():
        os.mkdir(path)
    expected = set()
    for i in range(total):
        name = f"entry{i:06d}"
        layer = i % 3
        open(os.path.join(paths[layer], name), "wb").close()
        expected.add(name)
        if i % 7 == 0:
            # The same name in a second layer must not be listed twice.
            open(os.path.join(paths[(layer + 1) % 3], name), "wb").close()
    for i in range(0, 3000):
        name = f"whiteout{i:04d}"
        open(os.path.join(paths[i % 2], name), "wb").close()
        make_whiteout(os.path.join(paths[2], name))
    stack.mount()

    entries, calls = getdents(stack.m("big"), bufsize=4096)
    listed = names(entries)

    assert calls > 100
    assert len(listed) == len(set(listed)), "duplicate names"
    assert set(listed) - expected == set(), "names that should be hidden"
    assert expected - set(listed) == set(), "names missing"


def test_readdir_after_create_and_unlink(stack):
    """A listing reflects creates and unlinks made through the mount."""
    for i in range(10):
        write_file(stack.lo(0, "d", f"f{i}"), "")
    stack.mount()

    before = set(os.listdir(stack.m("d")))
    os.unlink(stack.m("d", "f3"))
    write_file(stack.m("d", "new"), "")
    after = set(os.listdir(stack.m("d")))

    assert after == (before - {"f3"}) | {"new"}


def test_readdir_dot_entries(stack):
    """'.' of a merged subdir carries the merged dir's inode number."""
    os.makedirs(stack.lo(0, "d"))
    os.makedirs(stack.lo(1, "d"))
    stack.mount()

    entries, _calls = getdents(stack.m("d"))
    inos = {name: ino for name, ino, _type in entries}

    assert inos["."] == os.stat(stack.m("d")).st_ino


def read_names(stream, count=None):
    names_read = []
    while count is None or len(names_read) < count:
        name = stream.read()
        if name is None:
            break
        names_read.append(name)
    return names_read


def test_readdir_seekdir(stack):
    """seekdir to a telldir position resumes the listing at that entry.

    The dir is big enough (3,000 entries over three layers) that glibc
    needs several getdents calls, so positions past the first buffer are
    continuation offsets that the filesystem must honour.
    """
    for i in range(3000):
        layer_dir = [stack.lo(0, "d"), stack.lo(1, "d"), stack.u("d")][i % 3]
        write_file(os.path.join(layer_dir, f"entry-with-a-long-name-{i:05d}"),
                   "")
    stack.mount()

    stream = DirStream(stack.m("d"))
    try:
        first = read_names(stream, 2000)
        position = stream.tell()
        rest = read_names(stream)
        stream.seek(position)
        again = read_names(stream)
        stream.rewind()
        everything = read_names(stream)
    finally:
        stream.close()

    assert again == rest
    assert everything == first + rest
    assert len(set(everything) - {".", ".."}) == 3000


def drop_dentries_until(stop):
    """Make the kernel forget unused dentries and inodes, which sends
    FORGET, every 20 ms until stop is set."""
    while not stop.is_set():
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("2\n")
        stop.wait(0.02)


def test_listing_while_kernel_forgets(lamina_stack):
    """Directories listed to the end and closed while the kernel drops
    its caches. The FORGET of a directory can arrive while lamina still
    finishes the reply that ended its listing. The fixture checks the
    daemon's log, where a sanitizer build reports a use after free. The
    window is narrow, so a run finds such a bug only sometimes."""
    stack = lamina_stack
    for d in range(100):
        for i in range(3):
            write_file(stack.lo(1, f"d{d}", f"f{i}"), b"x")
    stack.mount()
    stop = threading.Event()
    dropper = threading.Thread(target=drop_dentries_until, args=(stop,))
    dropper.start()
    try:
        for _ in range(20):
            for d in range(100):
                assert sorted(os.listdir(stack.m(f"d{d}"))) == [
                    "f0", "f1", "f2"]
    finally:
        stop.set()
        dropper.join()
    assert stack.daemon.proc.poll() is None
