"""daxfs mv: rename within a pool; moving onto a directory puts the source inside it."""

from __future__ import annotations

import errno
import posixpath
from typing import Annotated

import typer

from .common import CliError, command, mounted, pool_path
from .quoting import quote_always


def same_pool(a: str, b: str) -> bool:
    try:
        return posixpath.samefile(a, b)
    except OSError:
        return a == b


@command
def mv_cmd(
    source: Annotated[str, typer.Argument(metavar="POOL:/src", help="What to move.")],
    dest: Annotated[str, typer.Argument(metavar="POOL:/dst", help="Where to (same pool).")],
) -> None:
    """Move or rename a file or directory inside a pool."""
    src, dst = pool_path(source), pool_path(dest)
    if not same_pool(src.pool, dst.pool):
        raise CliError("mv works within one pool (use cp and rm across pools)")
    with mounted(src.pool) as fs:
        target = dst.path
        if fs.isdir(target):
            target = posixpath.join(target, posixpath.basename(src.path.rstrip("/")))
        try:
            fs.rename(src.path, target)
        except OSError as e:  # the two that need words, as mv(1) gives them
            shown = quote_always(str(src))
            if e.errno == errno.EINVAL:
                raise CliError(f"cannot move {shown} to a subdirectory of itself") from None
            if e.errno == errno.EBUSY:
                raise CliError(f"cannot move {shown}: it is a root or ends in . or ..") from None
            raise
