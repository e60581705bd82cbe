"""daxfs rm: remove files from a pool; -r removes directories and their contents."""

from __future__ import annotations

import errno
import posixpath
import stat
from typing import Annotated

import typer

from ..fs import FileSystem
from .common import CliError, command, mounted, pool_path


def remove_tree(fs: FileSystem, path: str) -> None:
    """Remove ``path`` and everything below it (symlinks are removed, not followed)."""
    for entry in fs.scandir(path):
        child = posixpath.join(path, entry.name)
        if entry.is_dir(follow_symlinks=False):
            remove_tree(fs, child)
        else:
            fs.unlink(child)
    fs.rmdir(path)


def remove(fs: FileSystem, path: str, recursive: bool) -> None:
    if posixpath.normpath(path) == "/":
        raise CliError("refusing to remove the root directory of a pool")
    if not stat.S_ISDIR(fs.lstat(path).st_mode):
        fs.unlink(path)
    elif recursive:
        remove_tree(fs, path)
    else:
        raise OSError(errno.EISDIR, "Is a directory (use -r)", path)


@command
def rm_cmd(
    targets: Annotated[list[str], typer.Argument(metavar="POOL:/path", help="What to remove.")],
    recursive: Annotated[
        bool, typer.Option("-r", "-R", "--recursive", help="Remove directories.")
    ] = False,
) -> None:
    """Remove files (and with -r, directories) from a pool."""
    for spec in targets:
        pp = pool_path(spec)
        with mounted(pp.pool) as fs:
            remove(fs, pp.path, recursive)
