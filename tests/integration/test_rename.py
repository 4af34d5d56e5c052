"""rename and renameat2 across layers, including directory renames."""

import errno
import os
import stat
import threading

import pytest

from helpers import (
    RENAME_EXCHANGE,
    RENAME_NOREPLACE,
    get_xattr,
    is_whiteout,
    read_file,
    renameat2,
    write_file,
)


def test_rename_upper_file(stack):
    stack.mount()
    write_file(stack.m("a"), "a")

    os.rename(stack.m("a"), stack.m("b"))

    assert read_file(stack.m("b")) == b"a"
    assert not os.path.lexists(stack.m("a"))
    assert not os.path.lexists(stack.u("a")), "no whiteout for upper-only"


def test_rename_over_lower_file(stack):
    write_file(stack.lo(0, "src"), "src")
    write_file(stack.lo(1, "dst"), "dst")
    stack.mount()

    os.rename(stack.m("src"), stack.m("dst"))

    assert read_file(stack.m("dst")) == b"src"
    assert not os.path.lexists(stack.m("src"))
    assert is_whiteout(stack.u("src"))
    assert sorted(os.listdir(stack.merged)) == ["dst"]


def test_rename_into_subdir(stack):
    write_file(stack.lo(0, "f"), "f")
    os.makedirs(stack.lo(1, "d"))
    stack.mount()

    os.rename(stack.m("f"), stack.m("d", "f"))

    assert read_file(stack.m("d", "f")) == b"f"
    assert read_file(stack.u("d", "f")) == b"f"
    assert not os.path.lexists(stack.m("f"))


def test_noreplace_existing_lower(stack):
    write_file(stack.lo(0, "src"), "src")
    write_file(stack.lo(1, "dst"), "dst")
    stack.mount()

    with pytest.raises(OSError) as info:
        renameat2(stack.m("src"), stack.m("dst"), RENAME_NOREPLACE)

    assert info.value.errno == errno.EEXIST
    assert read_file(stack.m("dst")) == b"dst"
    assert read_file(stack.m("src")) == b"src"


def test_noreplace_over_whiteout(stack):
    """A whited-out name counts as free for RENAME_NOREPLACE."""
    write_file(stack.lo(0, "src"), "src")
    write_file(stack.lo(1, "dst"), "dst")
    stack.mount()
    os.unlink(stack.m("dst"))

    renameat2(stack.m("src"), stack.m("dst"), RENAME_NOREPLACE)

    assert read_file(stack.m("dst")) == b"src"
    assert not os.path.lexists(stack.m("src"))


def test_noreplace_new_name(stack):
    write_file(stack.lo(0, "src"), "src")
    stack.mount()

    renameat2(stack.m("src"), stack.m("dst"), RENAME_NOREPLACE)

    assert read_file(stack.m("dst")) == b"src"
    assert not os.path.lexists(stack.m("src"))


def test_exchange_lower_files(stack):
    write_file(stack.lo(0, "a"), "A")
    write_file(stack.lo(1, "b"), "B")
    stack.mount()

    renameat2(stack.m("a"), stack.m("b"), RENAME_EXCHANGE)

    assert read_file(stack.m("a")) == b"B"
    assert read_file(stack.m("b")) == b"A"
    assert read_file(stack.u("a")) == b"B"
    assert read_file(stack.u("b")) == b"A"
    stack.remount()
    assert read_file(stack.m("a")) == b"B"
    assert read_file(stack.m("b")) == b"A"


def test_exchange_file_and_dir(stack):
    write_file(stack.lo(0, "f"), "F")
    stack.mount()
    os.mkdir(stack.m("d"))
    write_file(stack.m("d", "inside"), "I")

    renameat2(stack.m("f"), stack.m("d"), RENAME_EXCHANGE)

    assert read_file(stack.m("d")) == b"F"
    assert read_file(stack.m("f", "inside")) == b"I"


def test_exchange_missing_target(stack):
    write_file(stack.lo(0, "a"), "A")
    stack.mount()

    with pytest.raises(OSError) as info:
        renameat2(stack.m("a"), stack.m("none"), RENAME_EXCHANGE)

    assert info.value.errno == errno.ENOENT
    assert read_file(stack.m("a")) == b"A"


def test_rename_file_over_dir(stack):
    write_file(stack.lo(0, "f"), "")
    os.makedirs(stack.lo(1, "d"))
    stack.mount()

    with pytest.raises(OSError) as info:
        os.rename(stack.m("f"), stack.m("d"))

    assert info.value.errno == errno.EISDIR


def test_rename_dir_over_nonempty(stack):
    """The target merged dir has entries only in a lower: ENOTEMPTY."""
    write_file(stack.lo(1, "target", "x"), "")
    stack.mount()
    os.mkdir(stack.m("src"))

    with pytest.raises(OSError) as info:
        os.rename(stack.m("src"), stack.m("target"))

    assert info.value.errno == errno.ENOTEMPTY


# The kernel built here defaults to redirect_dir=off, but another build may
# default to on, and lamina defaults to on, so the tests below ask for off.
def no_redirect(stack):
    return ["redirect_dir=off"]


def test_rename_upper_dir(stack):
    """A dir that exists only in upper renames even without redirects."""
    stack.mount(extra=no_redirect(stack))
    os.mkdir(stack.m("d"))
    write_file(stack.m("d", "f"), "f")

    os.rename(stack.m("d"), stack.m("e"))

    assert read_file(stack.m("e", "f")) == b"f"
    assert not os.path.lexists(stack.m("d"))


@pytest.mark.parametrize("where", ["lower", "merged", "copied"])
def test_rename_dir_exdev(stack, where):
    """Without redirects, renaming a dir that has lower parts is EXDEV.

    "copied" is a lower dir already copied up by chmod: it is in upper
    now, but it still has a lower origin, so it is not purely upper.
    Callers such as mv(1) fall back to copying on EXDEV.
    """
    write_file(stack.lo(1, "d", "x"), "x")
    if where == "merged":
        write_file(stack.u("d", "y"), "y")
    stack.mount(extra=no_redirect(stack))
    if where == "copied":
        os.chmod(stack.m("d"), 0o700)

    with pytest.raises(OSError) as info:
        os.rename(stack.m("d"), stack.m("e"))

    assert info.value.errno == errno.EXDEV
    assert os.path.isdir(stack.m("d"))
    assert not os.path.lexists(stack.m("e"))


def test_rename_new_dir_into_lower_dir(stack):
    """A dir created through the mount moves into a lower dir freely."""
    os.makedirs(stack.lo(1, "parent"))
    stack.mount(extra=no_redirect(stack))
    os.mkdir(stack.m("d"))
    write_file(stack.m("d", "f"), "f")

    os.rename(stack.m("d"), stack.m("parent", "d"))

    assert read_file(stack.m("parent", "d", "f")) == b"f"
    assert read_file(stack.u("parent", "d", "f")) == b"f"


def lower_tree(stack):
    """A lower dir "a" with a subdir, files, and a sibling dir "c"."""
    write_file(stack.lo(1, "a", "b", "f"), "f")
    write_file(stack.lo(1, "a", "g"), "g")
    os.makedirs(stack.lo(1, "c"))


@pytest.mark.parametrize("where", ["lower", "merged"])
def test_redirect_rename_dir(stack, where):
    """With redirect_dir=on a dir with lower parts moves, contents and all."""
    lower_tree(stack)
    if where == "merged":
        write_file(stack.u("a", "u"), "u")
    stack.mount(extra=["redirect_dir=on"])

    os.rename(stack.m("a"), stack.m("c", "a2"))

    assert not os.path.lexists(stack.m("a"))
    assert read_file(stack.m("c", "a2", "b", "f")) == b"f"
    assert read_file(stack.m("c", "a2", "g")) == b"g"
    expected = ["b", "g", "u"] if where == "merged" else ["b", "g"]
    assert sorted(os.listdir(stack.m("c", "a2"))) == expected
    assert is_whiteout(stack.u("a"))
    assert get_xattr(stack.u("c", "a2"), "trusted.overlay.redirect") == b"/a"


def test_redirect_same_dir_relative(stack):
    """A rename within one directory writes a relative redirect."""
    lower_tree(stack)
    stack.mount(extra=["redirect_dir=on"])

    os.rename(stack.m("a"), stack.m("a2"))

    assert get_xattr(stack.u("a2"), "trusted.overlay.redirect") == b"a"
    assert read_file(stack.m("a2", "b", "f")) == b"f"


@pytest.mark.parametrize("moves,expected", [
    ((("a",), ("a2",), ("a3",)), b"a"),
    ((("a",), ("a2",), ("c", "a3")), b"/a"),
    ((("a",), ("c", "a2"), ("c", "a3")), b"/a"),
])
def test_redirect_kept_or_rewritten(stack, moves, expected):
    """A redirect stays through a rename within its directory, and an
    absolute one stays through any rename. A plain name that leaves its
    directory becomes an absolute path."""
    lower_tree(stack)
    stack.mount(extra=["redirect_dir=on"])

    for old, new in zip(moves, moves[1:]):
        os.rename(stack.m(*old), stack.m(*new))

    assert get_xattr(stack.u(*moves[-1]), "trusted.overlay.redirect") == expected
    stack.remount(impl=stack.other_impl(), extra=["redirect_dir=on"])
    assert read_file(stack.m(*moves[-1], "b", "f")) == b"f"
    assert not os.path.lexists(stack.m("a"))


def test_redirect_twice_and_write(stack):
    """A moved dir moves again and takes new files; both show after remount."""
    lower_tree(stack)
    stack.mount(extra=["redirect_dir=on"])
    os.rename(stack.m("a"), stack.m("c", "a2"))
    write_file(stack.m("c", "a2", "b", "new"), "new")
    os.rename(stack.m("c", "a2"), stack.m("x"))
    stack.unmount()

    stack.mount(extra=["redirect_dir=on"])

    assert sorted(os.listdir(stack.merged)) == ["c", "x"]
    assert sorted(os.listdir(stack.m("x", "b"))) == ["f", "new"]
    assert read_file(stack.m("x", "b", "f")) == b"f"
    assert os.listdir(stack.m("c")) == []


def test_redirect_keeps_inode_numbers(stack):
    """A moved dir keeps st_ino, and readdir's d_ino matches it."""
    lower_tree(stack)
    stack.mount(extra=["redirect_dir=on"])
    before = os.stat(stack.m("a")).st_ino

    os.rename(stack.m("a"), stack.m("c", "a2"))

    assert os.stat(stack.m("c", "a2")).st_ino == before
    d_ino = {e.name: e.inode() for e in os.scandir(stack.m("c"))}
    assert d_ino["a2"] == before


def test_redirect_rmdir_moved(stack):
    """A moved, emptied dir can be removed and stays gone."""
    lower_tree(stack)
    stack.mount(extra=["redirect_dir=on"])
    os.rename(stack.m("a"), stack.m("a2"))
    os.unlink(stack.m("a2", "b", "f"))
    os.rmdir(stack.m("a2", "b"))
    os.unlink(stack.m("a2", "g"))

    os.rmdir(stack.m("a2"))

    assert sorted(os.listdir(stack.merged)) == ["c"]
    stack.unmount()
    stack.mount(extra=["redirect_dir=on"])
    assert sorted(os.listdir(stack.merged)) == ["c"]


def test_redirect_read_by_other_impl(stack):
    """A tree moved by one implementation reads the same in the other."""
    lower_tree(stack)
    stack.mount(extra=["redirect_dir=on"])
    os.rename(stack.m("a"), stack.m("c", "a2"))
    write_file(stack.m("c", "a2", "h"), "h")
    stack.unmount()

    stack.mount(impl=stack.other_impl(), extra=["redirect_dir=on"])

    assert sorted(os.listdir(stack.m("c", "a2"))) == ["b", "g", "h"]
    assert read_file(stack.m("c", "a2", "b", "f")) == b"f"
    assert not os.path.lexists(stack.m("a"))


@pytest.mark.parametrize("what", ["file", "dir"])
def test_rename_races_stat(stack, what):
    """stat and open racing renames see the entry or ENOENT, never EIO."""
    import threading

    write_file(stack.lo(1, "a", "s", "f"), "x")
    stack.mount(extra=["redirect_dir=on"])
    old = stack.m("a", "s") if what == "dir" else stack.m("a", "s", "f")
    new = old + "2"
    done = threading.Event()

    def rename_loop():
        # A rename that fails ends the loop too, so that the test fails
        # with its errors instead of waiting forever.
        try:
            for _ in range(3000):
                os.rename(old, new)
                os.rename(new, old)
        finally:
            done.set()

    thread = threading.Thread(target=rename_loop)
    thread.start()
    errors = set()
    while not done.is_set():
        try:
            os.stat(old)
            if what == "dir":
                os.listdir(old)
            else:
                os.close(os.open(old, os.O_RDONLY))
        except OSError as e:
            errors.add(errno.errorcode[e.errno])
    thread.join()
    assert errors <= {"ENOENT"}


def test_create_below_exchanged_directories(stack):
    """Directories made from a descriptor of a directory land in that
    directory, while another thread exchanges its parent with a twin
    again and again."""
    stack.mount()
    for side in ("one", "two"):
        os.makedirs(stack.m(side, "sub"))
        write_file(stack.m(side, "sub", "who"), side)
    done = threading.Event()

    def exchange_loop():
        try:
            while not done.is_set():
                renameat2(stack.m("one"), stack.m("two"), RENAME_EXCHANGE)
        finally:
            done.set()

    # The descriptor keeps the first "sub", wherever its parent goes.
    fd = os.open(stack.m("one", "sub"), os.O_RDONLY | os.O_DIRECTORY)
    thread = threading.Thread(target=exchange_loop)
    thread.start()
    try:
        for i in range(3000):
            os.mkdir(f"d{i}", dir_fd=fd)
    finally:
        done.set()
        thread.join()
        os.close(fd)

    for side in ("one", "two"):
        sub = stack.m(side, "sub")
        created = [n for n in os.listdir(sub) if n != "who"]
        if read_file(os.path.join(sub, "who")) == b"one":
            assert len(created) == 3000
        else:
            assert created == []


def two_lower_names(stack):
    """Lower file d/x with a second name e/p."""
    os.makedirs(stack.lo(0, "d"))
    os.makedirs(stack.lo(0, "e"))
    write_file(stack.lo(0, "d", "x"), "data")
    os.link(stack.lo(0, "d", "x"), stack.lo(0, "e", "p"))


@pytest.mark.parametrize("flags", [0, RENAME_EXCHANGE])
def test_rename_between_links_of_one_file(stack, flags):
    """Two names of one lower hard-linked file: rename(2) leaves both, as
    POSIX requires, and writes nothing to the upper layer."""
    two_lower_names(stack)
    stack.mount(extra=["index=on"])

    renameat2(stack.m("e", "p"), stack.m("d", "x"), flags)

    assert read_file(stack.m("e", "p")) == b"data"
    assert read_file(stack.m("d", "x")) == b"data"
    assert os.listdir(stack.upper) == []


@pytest.mark.parametrize("flags", [0, RENAME_EXCHANGE])
def test_rename_between_lower_links_without_index(stack, flags):
    """Without the index, two names of one lower file are two files until
    copied up, so rename(2) between them moves one over the other."""
    two_lower_names(stack)
    stack.mount(extra=["index=off"])

    renameat2(stack.m("e", "p"), stack.m("d", "x"), flags)

    assert read_file(stack.m("d", "x")) == b"data"
    if flags == RENAME_EXCHANGE:
        assert read_file(stack.m("e", "p")) == b"data"
    else:
        assert not os.path.lexists(stack.m("e", "p"))
        assert is_whiteout(stack.u("e", "p"))


def test_rename_dir_there_and_back(stack):
    """A lower directory moved to a new name and back leaves no whiteout at
    the new name, where no lower entry ever was."""
    os.makedirs(stack.lo(1, "a", "z"))
    os.makedirs(stack.lo(1, "e", "x"))
    write_file(stack.lo(1, "e", "x", "f"), "f")
    stack.mount(extra=["redirect_dir=on"])

    os.rename(stack.m("e", "x"), stack.m("a", "z", "q"))
    os.rename(stack.m("a", "z", "q"), stack.m("e", "x"))

    assert read_file(stack.m("e", "x", "f")) == b"f"
    assert os.listdir(stack.m("a", "z")) == []
    assert os.listdir(stack.u("a", "z")) == []


def test_exchange_new_dir_with_lower_dir_d_ino(stack):
    """After a lower directory and a new one change places, readdir gives
    each the st_ino that lstat gives: the new one does not merge with the
    lower directory now below its name."""
    write_file(stack.lo(1, "e", "y", "p"), "p")
    os.makedirs(stack.lo(1, "c"))
    stack.mount(extra=["redirect_dir=on"])
    os.mkdir(stack.m("c", "y"))

    renameat2(stack.m("e", "y"), stack.m("c", "y"), RENAME_EXCHANGE)

    for parent in ("e", "c"):
        entry = next(e for e in os.scandir(stack.m(parent)) if e.name == "y")
        assert entry.inode() == os.lstat(stack.m(parent, "y")).st_ino
    assert os.listdir(stack.m("e", "y")) == []
    assert os.listdir(stack.m("c", "y")) == ["p"]


def test_exchange_races_readers(stack):
    """open, stat, listxattr and readlink never fail on names that an
    exchange swaps again and again, because the names never go away."""
    write_file(stack.lo(0, "d", "f"), "file")
    write_file(stack.lo(0, "d", "g"), "other")
    os.makedirs(stack.lo(0, "d", "s"))
    os.symlink("target", stack.lo(0, "d", "l"))
    stack.mount(extra=["redirect_dir=on"])
    names = [stack.m("d", n) for n in ("f", "g", "s", "l")]
    done = threading.Event()

    def exchange_loop():
        try:
            for _ in range(1500):
                renameat2(names[0], names[2], RENAME_EXCHANGE)
                renameat2(names[0], names[1], RENAME_EXCHANGE)
                renameat2(names[3], names[1], RENAME_EXCHANGE)
        finally:
            done.set()

    thread = threading.Thread(target=exchange_loop)
    thread.start()
    errors = set()
    contents = set()
    while not done.is_set():
        for name in names:
            try:
                os.stat(name, follow_symlinks=False)
                os.listxattr(name, follow_symlinks=False)
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW)
                try:
                    if os.path.isfile(f"/proc/self/fd/{fd}"):
                        contents.add(os.read(fd, 16))
                finally:
                    os.close(fd)
            except OSError as e:
                if e.errno != errno.ELOOP:
                    errors.add(errno.errorcode[e.errno])
            try:
                os.readlink(name)
            except OSError as e:
                if e.errno != errno.EINVAL:
                    errors.add(errno.errorcode[e.errno])
    thread.join()
    assert errors == set()
    assert contents <= {b"file", b"other"}


def test_exchange_races_truncating_open(stack):
    """open(O_TRUNC) of one file while an exchange swaps its name with
    another's truncates that file only."""
    stack.mount()
    write_file(stack.m("d", "a"), "AAAA")
    write_file(stack.m("d", "b"), "BBBB")
    first = os.open(stack.m("d", "a"), os.O_RDONLY)
    second = os.open(stack.m("d", "b"), os.O_RDONLY)
    done = threading.Event()

    def exchange_loop():
        try:
            for _ in range(3000):
                renameat2(stack.m("d", "a"), stack.m("d", "b"),
                          RENAME_EXCHANGE)
        finally:
            done.set()

    thread = threading.Thread(target=exchange_loop)
    thread.start()
    try:
        while not done.is_set():
            fd = os.open(f"/proc/self/fd/{first}",
                         os.O_WRONLY | os.O_TRUNC)
            os.write(fd, b"AAAA")
            os.close(fd)
    finally:
        done.set()
        thread.join()
    try:
        assert os.pread(first, 16, 0) == b"AAAA"
        assert os.pread(second, 16, 0) == b"BBBB"
    finally:
        os.close(first)
        os.close(second)


@pytest.mark.parametrize("how", ["exchange", "rename"])
def test_directory_changes_race_moves(stack, how):
    """chmod and setxattr through a descriptor of a directory change that
    directory while a rename moves it: never the other one, and never
    ENOENT."""
    stack.mount()
    for name in ("x", "y"):
        os.makedirs(stack.m("p", name))
        os.chmod(stack.m("p", name), 0o755)
    moved = os.open(stack.m("p", "x"), os.O_RDONLY | os.O_DIRECTORY)
    other = os.open(stack.m("p", "y"), os.O_RDONLY | os.O_DIRECTORY)
    done = threading.Event()

    def move_loop():
        try:
            for _ in range(2000):
                if how == "exchange":
                    renameat2(stack.m("p", "x"), stack.m("p", "y"),
                              RENAME_EXCHANGE)
                else:
                    os.rename(stack.m("p", "x"), stack.m("p", "z"))
                    os.rename(stack.m("p", "z"), stack.m("p", "x"))
        finally:
            done.set()

    thread = threading.Thread(target=move_loop)
    thread.start()
    errors = set()
    try:
        while not done.is_set():
            try:
                os.fchmod(moved, 0o700)
                os.setxattr(moved, "user.k", b"x")
            except OSError as e:
                errors.add(errno.errorcode[e.errno])
    finally:
        done.set()
        thread.join()
    try:
        assert errors == set()
        assert stat.S_IMODE(os.fstat(other).st_mode) == 0o755
        assert os.listxattr(other) == []
        assert stat.S_IMODE(os.fstat(moved).st_mode) == 0o700
    finally:
        os.close(moved)
        os.close(other)
