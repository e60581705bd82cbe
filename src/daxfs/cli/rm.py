"""daxfs rm: remove files from a pool; -r removes directories and their contents.

-r removes a tree with a loop and a stack, not recursion: a tree may be
deeper than Python's recursion limit.  Symlinks are removed, never followed.
Each directory's inode is remembered when its name is listed; a directory
met a second time (inside itself, or under a second name: a damaged or
crafted pool) stops the removal at once with daxfs.CorruptionError naming
the path, before anything below the directory listing it is removed,
instead of going round a cycle or down 2^n paths.  What was removed before
that stays removed, as with rm(1).
"""

from __future__ import annotations

import errno
import posixpath
import stat
from dataclasses import dataclass
from typing import Annotated

import typer

from ..fs import FileSystem
from ..layout import CorruptionError
from ..path import ROOT_INO
from .common import EXIT_ERROR, CliError, command, describe_oserror, mounted, pool_path, warn
from .quoting import quote


@dataclass
class _Level:
    """A directory being emptied: its path and the entries still to remove."""

    path: str
    pending: list


def _listing(fs: FileSystem, path: str, seen: set[int]) -> _Level:
    """List ``path`` (whole: it changes as its entries go), adding its
    subdirectories to ``seen``; CorruptionError if one is there already."""
    entries = list(fs.scandir(path))
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            if entry.inode() in seen:
                raise _met_twice(posixpath.join(path, entry.name), entry.inode())
            seen.add(entry.inode())
    return _Level(path, entries)


def _met_twice(path: str, ino: int) -> CorruptionError:
    e = CorruptionError(f"directory {ino} met twice while removing (a damaged pool)")
    e.filename = path
    return e


def remove_tree(fs: FileSystem, path: str, ino: int) -> None:
    """Remove directory ``path`` (inode ``ino``) and everything below it,
    deepest first; CorruptionError when a directory is met twice."""
    seen = {ino}
    stack = [_listing(fs, path, seen)]
    while stack:
        level = stack[-1]
        if not level.pending:
            fs.rmdir(level.path)
            stack.pop()
            continue
        entry = level.pending.pop()
        child = posixpath.join(level.path, entry.name)
        if entry.is_dir(follow_symlinks=False):
            stack.append(_listing(fs, child, seen))
        else:
            fs.unlink(child)


def remove(fs: FileSystem, path: str, recursive: bool) -> None:
    st = fs.lstat(path)  # follows a symlink only when the path ends in "/"
    if not stat.S_ISDIR(st.st_mode):
        fs.unlink(path)
    elif st.st_ino == ROOT_INO:  # by inode: "//", "/.", "/d/.." and links to "/" too
        raise CliError(f"{quote(path)}: refusing to remove the root directory of a pool")
    elif recursive:
        remove_tree(fs, path, st.st_ino)
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
