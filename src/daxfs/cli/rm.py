"""daxfs rm: remove files from a pool; -r removes directories and their contents."""

from __future__ import annotations

import errno
import posixpath
import stat
from typing import Annotated

import typer

from ..fs import FileSystem
from ..path import ROOT_INO
from .common import EXIT_ERROR, CliError, command, describe_oserror, mounted, pool_path, warn


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
    st = fs.lstat(path)  # follows a symlink only when the path ends in "/"
    if not stat.S_ISDIR(st.st_mode):
        fs.unlink(path)
    elif st.st_ino == ROOT_INO:  # by inode: "//", "/.", "/d/.." and links to "/" too
        raise CliError(f"{path}: refusing to remove the root directory of a pool")
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
    failed = False
    for spec in targets:  # as rm(1): a target that fails does not stop the others
        try:
            pp = pool_path(spec)
            with mounted(pp.pool) as fs:
                remove(fs, pp.path, recursive)
        except (CliError, OSError) as e:
            warn(e.message if isinstance(e, CliError) else describe_oserror(e))
            failed = True
    if failed:
        raise typer.Exit(EXIT_ERROR)
