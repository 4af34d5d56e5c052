"""userxattr: the options overlayfs allows with it, on both implementations.

overlayfs follows no redirect and no metacopy mark stored in user.*
xattrs, which any owner of a file can set: with userxattr it turns
redirect_dir and metacopy off, and rejects asking for them.
"""

import errno
import os

import pytest

from helpers import read_file, write_file


@pytest.mark.parametrize("option", ["redirect_dir=on", "redirect_dir=follow",
                                    "metacopy=on"])
def test_userxattr_rejects(stack, option):
    with pytest.raises(AssertionError):
        stack.mount(extra=["userxattr", option])


def test_userxattr_lower_dir_rename_is_exdev(stack):
    """Without redirects a lower directory cannot move, as in overlayfs."""
    write_file(stack.lo(1, "d", "f"), "f")
    stack.mount(extra=["userxattr"])

    with pytest.raises(OSError) as failure:
        os.rename(stack.m("d"), stack.m("e"))

    assert failure.value.errno == errno.EXDEV
    assert read_file(stack.m("d", "f")) == b"f"


def test_userxattr_allows_nofollow(stack):
    write_file(stack.lo(1, "f"), "f")
    stack.mount(extra=["userxattr", "redirect_dir=nofollow"])

    assert read_file(stack.m("f")) == b"f"
