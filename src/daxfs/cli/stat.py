"""daxfs stat: show a file's inode in a pool, like stat(1) (symlinks not followed).

The file row names the path (and a symlink's target) quoted as coreutils
quotes names in messages, on a terminal or not: a name is anybody's bytes.
"""

from __future__ import annotations

import os
import stat
import time
from typing import Annotated

import typer

from ..fs import FileSystem
from ..hugemap import eligible_total
from .common import cell, command, console, mounted, pool_path, table
from .quoting import quote

# stat(1)'s names for the types a pool holds.
_KINDS = {
    stat.S_IFREG: "regular file",
    stat.S_IFDIR: "directory",
    stat.S_IFLNK: "symbolic link",
    stat.S_IFIFO: "fifo",
    stat.S_IFCHR: "character special file",
    stat.S_IFBLK: "block special file",
    stat.S_IFSOCK: "socket",
}


def _when(ns: int) -> str:
    secs, frac = divmod(ns, 10**9)
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(secs)) + f".{frac:09d}"


def rows(fs: FileSystem, path: str) -> list[tuple[str, str]]:
    """(field, value) rows for ``path``."""
    st: os.stat_result = fs.lstat(path)
    kind = _KINDS.get(stat.S_IFMT(st.st_mode), "other")
    name = quote(path) + (f" -> {quote(fs.readlink(path))}" if stat.S_ISLNK(st.st_mode) else "")
    out = [
        ("file", name),
        ("type", kind),
        ("size", str(st.st_size)),
        ("blocks", f"{st.st_blocks} (512-byte units)"),
        ("io block", str(st.st_blksize)),
        ("inode", str(st.st_ino)),
        ("links", str(st.st_nlink)),
        ("access", f"{st.st_mode & 0o7777:04o} ({stat.filemode(st.st_mode)})"),
        ("uid / gid", f"{st.st_uid} / {st.st_gid}"),
        ("modify", _when(st.st_mtime_ns)),
        ("change", _when(st.st_ctime_ns)),
    ]
    if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        out.insert(2, ("device", f"{os.major(st.st_rdev)}, {os.minor(st.st_rdev)}"))
    if stat.S_ISREG(st.st_mode):
        extents = fs.iomap(path)
        mapped = sum(1 for e in extents if e.kind == "mapped")
        huge = eligible_total(extents, st.st_size)
        out.append(("extents", f"{mapped} mapped, {len(extents) - mapped} holes"))
        out.append(("2 MiB-eligible", f"{huge} of {st.st_size} bytes"))
    return out


@command
def stat_cmd(target: Annotated[str, typer.Argument(metavar="POOL:/path")]) -> None:
    """Show the status of a file or directory in a pool."""
    pp = pool_path(target)
    with mounted(pp.pool, readonly=True) as fs:
        data = rows(fs, pp.path)
    t = table("field", "value")
    for field, value in data:
        t.add_row(field, cell(value))
    console().print(t)
