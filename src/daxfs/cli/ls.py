"""daxfs ls: list a directory in a pool (or name one file), optionally long.

``-l`` prints, like ls -l: mode string, links, size, modification time,
name (and ``-> target`` for a symlink).
"""

from __future__ import annotations

import posixpath
import stat
import time
from typing import Annotated

import typer

from ..fs import FileSystem
from .common import command, console, mounted, pool_or_path

SIX_MONTHS = 183 * 24 * 3600


def format_mtime(mtime: float, now: float | None = None) -> str:
    """ls's time column: time of day for recent files, the year for old ones."""
    now = time.time() if now is None else now
    fmt = "%b %e %H:%M" if abs(now - mtime) < SIX_MONTHS else "%b %e  %Y"
    return time.strftime(fmt, time.localtime(mtime))


def long_line(fs: FileSystem, path: str, name: str, widths: tuple[int, int]) -> str:
    st = fs.lstat(path)
    shown = name
    if stat.S_ISLNK(st.st_mode):
        shown += " -> " + fs.readlink(path)
    return (
        f"{stat.filemode(st.st_mode)} {st.st_nlink:>{widths[0]}} "
        f"{st.st_size:>{widths[1]}} {format_mtime(st.st_mtime)} {shown}"
    )


def entries(fs: FileSystem, path: str) -> list[tuple[str, str]]:
    """(name, full path) to list: a directory's children, or the file itself."""
    if fs.isdir(path):
        return [(n, posixpath.join(path, n)) for n in sorted(fs.listdir(path))]
    fs.lstat(path)  # raises FileNotFoundError for a missing path
    return [(path, path)]


def widths(fs: FileSystem, items: list[tuple[str, str]]) -> tuple[int, int]:
    stats = [fs.lstat(p) for _, p in items]
    return (
        max((len(str(s.st_nlink)) for s in stats), default=1),
        max((len(str(s.st_size)) for s in stats), default=1),
    )


def print_listing(fs: FileSystem, path: str, long: bool) -> None:
    """Print ``path``'s listing (one name a line, or ls -l lines); dirs in blue."""
    out = console()
    items = entries(fs, path)
    cols = widths(fs, items) if long else (0, 0)
    for name, full in items:
        style = "bold blue" if stat.S_ISDIR(fs.lstat(full).st_mode) else None
        text = long_line(fs, full, name, cols) if long else name
        out.print(text, style=style, markup=False)


@command
def ls_cmd(
    target: Annotated[str, typer.Argument(metavar="POOL[:/path]", help="A pool or a path.")],
    long: Annotated[bool, typer.Option("-l", help="Mode, links, size, mtime, name.")] = False,
) -> None:
    """List a directory in a pool."""
    pp = pool_or_path(target)
    with mounted(pp.pool, readonly=True) as fs:
        print_listing(fs, pp.path, long)
