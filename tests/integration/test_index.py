"""index=on: the names of a hard-linked lower file stay one file.

Every test runs on kernel overlayfs and on lamina, mounted with
index=on, and checks the same things: one inode number for all names,
a write through one name seen through the others, link counts as on a
plain filesystem, and the kernel's on-disk index in workdir/index.
"""

import os
import threading

import pytest

from helpers import get_xattr, read_file, write_file

INDEX = ["index=on"]


def linked_lower(stack, names=("a", "b", "c")):
    write_file(stack.lo(1, names[0]), "data")
    for name in names[1:]:
        os.link(stack.lo(1, names[0]), stack.lo(1, name))


def inodes(stack, *names):
    return {os.stat(stack.m(n)).st_ino for n in names}


def nlinks(stack, *names):
    return [os.stat(stack.m(n)).st_nlink for n in names]


def test_write_through_one_name(stack):
    linked_lower(stack)
    stack.mount(extra=INDEX)
    before = inodes(stack, "a")

    with open(stack.m("a"), "a") as f:
        f.write("+more")

    assert read_file(stack.m("b")) == b"data+more"
    assert read_file(stack.m("c")) == b"data+more"
    assert inodes(stack, "a", "b", "c") == before
    assert nlinks(stack, "a", "b", "c") == [3, 3, 3]
    assert read_file(stack.lo(1, "a")) == b"data"


def test_index_entry_is_named_after_origin(stack):
    linked_lower(stack)
    stack.mount(extra=INDEX)

    os.chmod(stack.m("b"), 0o600)

    entries = os.listdir(os.path.join(stack.work, "index"))
    files = [e for e in entries if not e.startswith("#")]
    origin = get_xattr(stack.u("b"), "trusted.overlay.origin")
    assert files == [origin.hex()]
    index = os.path.join(stack.work, "index", files[0])
    assert os.stat(index).st_ino == os.stat(stack.u("b")).st_ino
    assert all(os.stat(stack.m(n)).st_mode & 0o777 == 0o600
               for n in ("a", "b", "c"))


def test_unlink_and_link_keep_counts(stack):
    linked_lower(stack)
    stack.mount(extra=INDEX)
    with open(stack.m("a"), "a") as f:
        f.write("!")

    os.unlink(stack.m("c"))
    assert nlinks(stack, "a", "b") == [2, 2]
    os.link(stack.m("b"), stack.m("d"))
    assert nlinks(stack, "a", "b", "d") == [3, 3, 3]
    assert inodes(stack, "a", "b", "d") == inodes(stack, "a")
    assert read_file(stack.m("d")) == b"data!"
    assert sorted(os.listdir(stack.merged)) == ["a", "b", "d"]


@pytest.mark.parametrize("reader", ["same", "other"])
def test_links_survive_remount(stack, reader):
    linked_lower(stack)
    stack.mount(extra=INDEX)
    with open(stack.m("b"), "w") as f:
        f.write("new")
    os.unlink(stack.m("c"))
    stack.unmount()

    impl = stack.impl if reader == "same" else stack.other_impl()
    stack.mount(impl=impl, extra=INDEX)

    assert read_file(stack.m("a")) == b"new"
    assert inodes(stack, "a", "b") == {os.stat(stack.m("b")).st_ino}
    assert nlinks(stack, "a", "b") == [2, 2]
    with open(stack.m("a"), "a") as f:
        f.write("2")
    assert read_file(stack.m("b")) == b"new2"


def test_upper_tied_to_its_lowers(stack):
    """An indexed upper mounted over another top lower is refused."""
    linked_lower(stack)
    stack.mount(extra=INDEX)
    os.chmod(stack.m("a"), 0o600)
    stack.unmount()

    with pytest.raises(AssertionError) as failure:
        stack.mount(extra=INDEX, lowers=[stack.lowers[1], stack.lowers[0]])
    if stack.impl == "lamina":
        assert "other lower layers" in str(failure.value)


def test_lamina_indexes_by_default(lamina_stack):
    """Without index=, lamina keeps the links together where it can."""
    stack = lamina_stack
    linked_lower(stack)
    stack.mount()

    with open(stack.m("a"), "a") as f:
        f.write("+")

    assert read_file(stack.m("c")) == b"data+"
    assert os.listdir(os.path.join(stack.work, "index"))


def test_default_index_steps_aside(lamina_stack):
    """Without index=, an upper indexed over other lowers still mounts."""
    stack = lamina_stack
    linked_lower(stack)
    stack.mount()
    os.chmod(stack.m("a"), 0o600)
    stack.unmount()

    stack.mount(lowers=[stack.lowers[1], stack.lowers[0]])

    assert read_file(stack.m("a")) == b"data"
    with open(stack.daemon.log_path) as log:
        assert "other lower layers" in log.read()


def test_last_name_removes_index_entry(stack):
    linked_lower(stack, ("a", "b"))
    stack.mount(extra=INDEX)
    with open(stack.m("a"), "a") as f:
        f.write("!")
    index = os.path.join(stack.work, "index")
    assert [e for e in os.listdir(index) if not e.startswith("#")]

    os.unlink(stack.m("a"))
    os.unlink(stack.m("b"))

    assert [e for e in os.listdir(index) if not e.startswith("#")] == []


def test_index_off_after_index(stack):
    """Without the index, two upper copies keep their own inode numbers."""
    linked_lower(stack, ("a", "b"))
    stack.mount(extra=INDEX)
    with open(stack.m("a"), "w") as f:
        f.write("changed")
    stack.unmount()

    stack.mount(extra=["index=off"])

    assert os.stat(stack.m("a")).st_ino != os.stat(stack.m("b")).st_ino
    assert read_file(stack.m("a")) == b"changed"
    assert read_file(stack.m("b")) == b"data"


def test_open_reader_sees_other_name_copy_up(lamina_stack):
    """Without passthrough a reader follows a copy-up through another name.

    With passthrough the kernel keeps the reader on the lower file, as the
    README documents.
    """
    stack = lamina_stack
    linked_lower(stack, ("g", "g2"))
    stack.mount(extra=INDEX + ["passthrough=off"])

    with open(stack.m("g"), "rb") as reader:
        with open(stack.m("g2"), "w") as writer:
            writer.write("new")
        assert reader.read() == b"new"


@pytest.mark.parametrize("removal", ["unlink", "rename-over"])
def test_link_count_after_removing_a_name(stack, removal):
    """Removing one of three names of a lower file, by unlink or by a
    rename over it, leaves a count of 2 on the other names. That holds
    for a name not copied up too, and for the other implementation,
    which reads the count from the index entry."""
    os.makedirs(stack.lo(1, "c"))
    write_file(stack.lo(1, "b"), "data")
    os.link(stack.lo(1, "b"), stack.lo(1, "c", "p"))
    os.link(stack.lo(1, "b"), stack.lo(1, "c", "q"))
    write_file(stack.lo(1, "c", "o"), "other")
    stack.mount(extra=INDEX)

    if removal == "unlink":
        os.unlink(stack.m("c", "p"))
    else:
        os.rename(stack.m("c", "o"), stack.m("c", "p"))

    assert nlinks(stack, "b", "c/q") == [2, 2]
    stack.unmount()
    stack.mount(impl=stack.other_impl(), extra=INDEX)
    assert nlinks(stack, "b", "c/q") == [2, 2]


def test_parallel_copy_up_through_two_names(stack):
    """Two processes that open two names of one lower file for writing at
    once both succeed, and every name then shows both writes."""
    names = ("a", "b", "c")
    linked_lower(stack, names)
    stack.mount(extra=INDEX)
    for name in names:
        os.stat(stack.m(name))

    def append(name, tag):
        fd = os.open(stack.m(name), os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, tag)
        finally:
            os.close(fd)

    start = threading.Barrier(2)
    errors = []

    def worker(name, tag):
        start.wait()
        try:
            append(name, tag)
        except OSError as e:
            errors.append(e)

    threads = [threading.Thread(target=worker, args=("a", b"A")),
               threading.Thread(target=worker, args=("b", b"B"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    data = {read_file(stack.m(n)) for n in names}
    assert len(data) == 1
    assert sorted(data.pop()[4:]) == [ord("A"), ord("B")]


def test_link_count_after_unlink_and_read(stack):
    """After one of four names of a lower file goes, reading through
    another leaves every name at three links."""
    names = ("d1/f", "d2/g", "d3/h", "d4/i")
    write_file(stack.lo(1, names[0]), "data")
    for name in names[1:]:
        os.makedirs(os.path.dirname(stack.lo(1, name)), exist_ok=True)
        os.link(stack.lo(1, names[0]), stack.lo(1, name))
    stack.mount(extra=INDEX)

    os.unlink(stack.m("d4/i"))
    assert nlinks(stack, "d1/f") == [3]
    read_file(stack.m("d1/f"))

    assert nlinks(stack, "d1/f", "d2/g", "d3/h") == [3, 3, 3]


def test_parallel_link_ups_keep_the_count(stack):
    """Many names of a lower file whose first name is copied up already,
    changed at once from as many threads, all link the one index entry
    and keep the lower file's link count, before and after a remount."""
    rounds, per_round = 4, 10
    for r in range(rounds):
        first = stack.lo(1, f"r{r}d0", "f")
        os.makedirs(os.path.dirname(first))
        write_file(first, "data")
        for i in range(1, per_round):
            os.makedirs(stack.lo(1, f"r{r}d{i}"))
            os.link(first, stack.lo(1, f"r{r}d{i}", "f"))
    stack.mount(extra=INDEX)
    for r in range(rounds):
        names = [f"r{r}d{i}/f" for i in range(per_round)]
        os.chmod(stack.m(names[0]), 0o600)
        start = threading.Barrier(per_round - 1)
        errors = []

        def worker(name):
            start.wait()
            try:
                os.chmod(stack.m(name), 0o640)
            except OSError as e:
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(n,))
                   for n in names[1:]]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert set(nlinks(stack, *names)) == {per_round}
    stack.unmount()
    stack.mount(impl=stack.other_impl(), extra=INDEX)
    for r in range(rounds):
        names = [f"r{r}d{i}/f" for i in range(per_round)]
        assert set(nlinks(stack, *names)) == {per_round}


@pytest.mark.parametrize("change", ["set", "remove"])
def test_xattr_of_a_name_not_copied_up(stack, change):
    """An xattr change through a lower name of a file that another name
    brought into the index changes the index entry, which every name
    shows, and copies up no name."""
    os.makedirs(stack.lo(1, "d"))
    linked_lower(stack, ("a", "d/b"))
    os.setxattr(stack.lo(1, "a"), "user.old", b"1")
    stack.mount(extra=INDEX)
    with open(stack.m("a"), "ab") as f:
        f.write(b"+")

    if change == "set":
        os.setxattr(stack.m("d", "b"), "user.new", b"2")
    else:
        os.removexattr(stack.m("d", "b"), "user.old")

    assert not os.path.lexists(stack.u("d"))
    for name in ("a", "d/b"):
        assert get_xattr(stack.m(name), "user.new") == (
            b"2" if change == "set" else None)
        assert get_xattr(stack.m(name), "user.old") == (
            b"1" if change == "set" else None)
    stack.remount(impl=stack.other_impl(), extra=INDEX)
    assert get_xattr(stack.m("d", "b"), "user.new") == (
        b"2" if change == "set" else None)
    assert read_file(stack.m("d", "b")) == b"data+"


def test_reader_follows_metacopy_data_up(lamina_stack):
    """Without passthrough a reader of one name of a metacopy file reads
    the data that a write through another name brought up."""
    stack = lamina_stack
    os.makedirs(stack.lo(1, "d"))
    linked_lower(stack, ("f", "d/g"))
    stack.mount(extra=INDEX + ["metacopy=on", "redirect_dir=on",
                               "passthrough=off"])
    os.chmod(stack.m("f"), 0o600)
    os.chmod(stack.m("d", "g"), 0o600)

    with open(stack.m("d", "g"), "rb") as reader:
        assert reader.read() == b"data"
        with open(stack.m("f"), "r+b") as writer:
            writer.write(b"NEW")
        assert os.pread(reader.fileno(), 10, 0) == b"NEWa"


def test_parallel_xattr_changes_copy_up_one_name(stack):
    """Xattrs set at once through many names of a lower file copy up one
    name, and the others change the index entry it made."""
    names = [f"d{i}/f" for i in range(8)]
    write_file(stack.lo(1, names[0]), "data")
    for name in names[1:]:
        os.makedirs(os.path.dirname(stack.lo(1, name)))
        os.link(stack.lo(1, names[0]), stack.lo(1, name))
    stack.mount(extra=INDEX)
    start = threading.Barrier(len(names))

    def worker(i):
        start.wait()
        os.setxattr(stack.m(names[i]), f"user.n{i}", b"1")

    threads = [threading.Thread(target=worker, args=(i,))
               for i in range(len(names))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    copied = [n for n in names if os.path.lexists(stack.u(n))]
    assert len(copied) == 1
    for name in names:
        assert len(os.listxattr(stack.m(name))) == len(names)


@pytest.mark.parametrize("first", ["lower", "copied-up"])
def test_truncate_through_removed_name(stack, first):
    """A truncate and a write through a file whose name was removed show
    at once in the size and data of the file's other name."""
    write_file(stack.lo(1, "a"), "0123456789")
    os.link(stack.lo(1, "a"), stack.lo(1, "b"))
    stack.mount(extra=INDEX)
    if first == "copied-up":
        with open(stack.m("b"), "ab") as f:
            f.write(b"!")
    size = os.stat(stack.m("b")).st_size

    fd = os.open(stack.m("a"), os.O_RDWR)
    try:
        os.unlink(stack.m("a"))
        assert os.stat(stack.m("b")).st_size == size
        assert os.stat(stack.m("b")).st_nlink == 1

        os.ftruncate(fd, 4)
        assert os.stat(stack.m("b")).st_size == 4
        os.pwrite(fd, b"WXYZ", 6)
        assert os.stat(stack.m("b")).st_size == 10
        assert read_file(stack.m("b")) == b"0123\0\0WXYZ"
        os.ftruncate(fd, 12)
        assert os.stat(stack.m("b")).st_size == 12
        assert os.fstat(fd).st_size == 12
    finally:
        os.close(fd)
    stack.remount(extra=INDEX)
    assert read_file(stack.m("b")) == b"0123\0\0WXYZ\0\0"


METACOPY = INDEX + ["metacopy=on", "redirect_dir=on"]


@pytest.mark.parametrize("extra", [INDEX, METACOPY],
                         ids=["index", "metacopy"])
@pytest.mark.parametrize("mode", ["read", "write"])
@pytest.mark.parametrize("copied_up", [False, True],
                         ids=["lower", "copied-up"])
def test_fstat_counts_names_left(stack, extra, mode, copied_up):
    """fstat of a file open through one of three names of a lower file
    counts the names left as they are removed, down to 0."""
    linked_lower(stack)
    stack.mount(extra=extra)
    if copied_up:
        os.chmod(stack.m("b"), 0o640)
    flags = os.O_RDONLY if mode == "read" else os.O_RDWR

    fd = os.open(stack.m("a"), flags)
    try:
        counts = [os.fstat(fd).st_nlink]
        for name in ("a", "b", "c"):
            os.unlink(stack.m(name))
            counts.append(os.fstat(fd).st_nlink)
        assert counts == [3, 2, 1, 0]
        assert os.pread(fd, 10, 0) == b"data"
    finally:
        os.close(fd)


@pytest.mark.parametrize("extra", [INDEX, METACOPY],
                         ids=["index", "metacopy"])
def test_link_count_through_each_step(stack, extra):
    """Each name of a lower file with three names shows the number of
    names left after a write, an unlink, a link and a rename, and after
    a remount."""
    linked_lower(stack)
    stack.mount(extra=extra)

    with open(stack.m("a"), "a") as f:
        f.write("+")
    assert nlinks(stack, "a", "b", "c") == [3, 3, 3]
    os.unlink(stack.m("b"))
    assert nlinks(stack, "a", "c") == [2, 2]
    os.link(stack.m("a"), stack.m("d"))
    assert nlinks(stack, "a", "c", "d") == [3, 3, 3]
    os.rename(stack.m("c"), stack.m("e"))
    assert nlinks(stack, "a", "d", "e") == [3, 3, 3]
    assert sorted(os.listdir(stack.merged)) == ["a", "d", "e"]

    stack.remount(extra=extra)
    assert nlinks(stack, "a", "d", "e") == [3, 3, 3]
    assert read_file(stack.m("e")) == b"data+"
