"""lamina check: the findings about a layer stack, without mounting."""

import os
import subprocess

from conftest import run_lamina
from helpers import find_mount, write_file


def check(stack, options=None):
    return run_lamina(["check", "-o", options or stack.options()],
                      stack.root)


def test_check_clean_stack(lamina_stack):
    """A good stack exits 0, mounts nothing and leaves the workdir empty."""
    code, out, err = check(lamina_stack)

    assert code == 0, err
    assert "the layers can be mounted" in out
    assert "passthrough:" in out
    assert find_mount(lamina_stack.merged) is None
    assert os.listdir(lamina_stack.work) == []


def test_check_missing_workdir(lamina_stack):
    """A missing workdir is an error that names it, exit status 3."""
    stack = lamina_stack
    os.rmdir(stack.work)

    code, _out, err = check(stack)

    assert code == 3
    assert f"workdir {stack.work}" in err
    assert "lamina: error:" in err


def test_check_nonempty_workdir(lamina_stack):
    """A stray file in the workdir is reported and left in place."""
    stack = lamina_stack
    stray = os.path.join(stack.work, "stray")
    open(stray, "w").close()

    code, _out, err = check(stack)

    assert code == 3
    assert "'stray'" in err
    assert os.listdir(stack.work) == ["stray"]


def test_check_reports_every_error(lamina_stack):
    """Errors that do not depend on each other are all reported at once."""
    stack = lamina_stack
    missing = os.path.join(stack.root, "missing")
    open(os.path.join(stack.work, "stray"), "w").close()
    lowers = ":".join([stack.lowers[0], missing, stack.lowers[0]])
    options = (f"lowerdir={lowers},upperdir={stack.upper},"
               f"workdir={stack.work}")

    code, _out, err = check(stack, options)

    assert code == 3
    errors = [line for line in err.splitlines()
              if line.startswith("lamina: error:")]
    assert len(errors) == 3, err
    assert f"lowerdir {missing}" in err
    assert "given twice" in err
    assert "'stray'" in err
    assert "lamina: 3 errors: the mount would fail" in err


def test_check_leaves_crash_leftovers(lamina_stack):
    """workdir/work of a crashed mount stays as it is for the next mount."""
    stack = lamina_stack
    leftover = os.path.join(stack.work, "work", "#leftover")
    os.makedirs(leftover)

    code, _out, err = check(stack)

    assert code == 0, err
    assert os.path.isdir(leftover)
    assert sorted(os.listdir(stack.work)) == ["work"]


def test_check_bad_option(lamina_stack):
    """An unknown option is a usage error, exit status 1."""
    code, _out, err = check(lamina_stack, "lowerdir=/x,bogus")

    assert code == 1
    assert "bogus" in err


def test_check_merged_not_a_directory(lamina_stack):
    """A MERGED that is missing or a file is an error, as for mount."""
    stack = lamina_stack
    missing = os.path.join(stack.root, "nonexistent")
    a_file = os.path.join(stack.root, "file")
    open(a_file, "w").close()
    cases = [(missing, "No such file or directory; create the directory"),
             (a_file, "not a directory; give a directory")]
    for merged, reason in cases:
        code, out, err = run_lamina(
            ["check", "-o", stack.options(), merged], stack.root)

        assert code == 3, (merged, out, err)
        assert f"lamina: error: mount point {merged}: {reason}" in err, err
        assert "lamina: 1 error: the mount would fail" in err, err
        assert "can be mounted" not in out, out


def test_check_lower_on_fuse(any_stack):
    """A FUSE lower gives warnings, a closing line and a qualified info."""
    inner = any_stack("lamina")
    outer = any_stack("lamina")
    write_file(inner.lo(0, "f"), "f")
    inner.mount()
    options = (f"lowerdir={inner.merged},upperdir={outer.upper},"
               f"workdir={outer.work}")

    code, out, err = run_lamina(["check", "-o", options, outer.merged],
                                outer.root)

    assert code == 2, (out, err)
    assert f"lowerdir {inner.merged} is on a FUSE filesystem" in err, err
    warnings = err.count("lamina: warning: ")
    noun = "warning" if warnings == 1 else "warnings"
    lines = out.splitlines()
    assert lines[-1] == f"lamina: the layers can be mounted, with the {noun} above"
    available = [line for line in lines
                 if line.startswith("lamina: passthrough: available")]
    # Without root or on Linux before 6.9 passthrough is a warning instead.
    if "passthrough: unavailable" not in err:
        assert available == [
            "lamina: passthrough: available, except for the files of the "
            "1 layer on FUSE or overlayfs warned about above"], out


def dead_pid():
    """Return the pid of a child process that has exited and been reaped."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def make_check_dir(stack, pid):
    """Make the test directory that a killed lamina check with pid leaves,
    with an entry inside as its tests make."""
    path = os.path.join(stack.work, f"#lamina-check.{pid}")
    os.makedirs(os.path.join(path, "#0.1"))
    return path


def test_mount_removes_killed_check_dir(lamina_stack):
    """A killed check's directory does not stop the next mount."""
    stack = lamina_stack
    leftover = make_check_dir(stack, dead_pid())

    stack.mount()

    assert not os.path.exists(leftover)
    assert find_mount(stack.merged) is not None


def test_check_removes_killed_check_dir(lamina_stack):
    """A killed check's directory does not stop the next check."""
    stack = lamina_stack
    leftover = make_check_dir(stack, dead_pid())

    code, out, err = check(stack)

    assert code == 0, err
    assert "the layers can be mounted" in out
    assert f"removed {os.path.basename(leftover)}" in err
    assert os.listdir(stack.work) == []


def test_mount_keeps_running_check_dir(lamina_stack):
    """A check directory whose pid is alive stays, and the message
    explains how to remove it."""
    stack = lamina_stack
    leftover = make_check_dir(stack, os.getpid())

    code, _out, err = run_lamina(["mount", "-o", stack.options(),
                                  stack.merged], stack.root)

    assert code == 32, err
    assert find_mount(stack.merged) is None
    assert os.path.isdir(leftover)
    assert f"lamina check pid {os.getpid()}" in err
    assert f"delete {stack.work}/#lamina-check.{os.getpid()}" in err
