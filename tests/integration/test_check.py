"""lamina check: the findings about a layer stack, without mounting."""

import os

from conftest import run_lamina
from helpers import find_mount


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
