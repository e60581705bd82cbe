"""path: resolving POSIX paths to inodes.

Paths are absolute POSIX paths (a relative path is taken from the root:
a pool has no working directory).  "." is skipped, ".." goes to the parent
and never above the root, symlinks are followed (at most 40, as Linux) in
every component and, when asked, in the last.  Resolution needs only two
questions answered by the layer above: lookup(dir, name) and the target of a
symlink.
"""

from __future__ import annotations

import errno
import os
import stat
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from .layout import MAX_NAME

ROOT_INO = 1
MAX_SYMLINKS = 40


def oserror(code: int, path: object = None, path2: object = None) -> OSError:
    """The builtin OSError subclass for ``code`` (FileNotFoundError, ...)."""
    if path2 is not None:
        return OSError(code, os.strerror(code), path, None, path2)
    if path is not None:
        return OSError(code, os.strerror(code), path)
    return OSError(code, os.strerror(code))


def to_str(path: object) -> str:
    p = os.fspath(path)  # type: ignore[arg-type]
    if isinstance(p, bytes):
        p = p.decode("utf-8", "surrogateescape")
    if "\0" in p:
        raise ValueError("embedded null byte")
    return p


def components(path: str) -> list[str]:
    """Split into names, dropping empty and "." parts; checks name length."""
    parts = [c for c in path.split("/") if c and c != "."]
    for c in parts:
        if len(c.encode("utf-8", "surrogateescape")) > MAX_NAME:
            raise oserror(errno.ENAMETOOLONG, path)
    return parts


@dataclass(frozen=True)
class Resolved:
    """Where a path leads: the directory holding the last name, the name
    (None when the path ends at "/" or ".."), and the inode it names (None
    if no such entry)."""

    parent: int
    name: str | None
    ino: int | None
    ftype: int | None
    trailing_slash: bool


Lookup = Callable[[int, str], "tuple[int, int] | None"]
ReadLink = Callable[[int], str]
ParentOf = Callable[[int], int]

DIR_T = stat.S_IFDIR >> 12
LNK_T = stat.S_IFLNK >> 12


def resolve(
    path: str, lookup: Lookup, readlink: ReadLink, parent_of: ParentOf, follow: bool = True
) -> Resolved:
    trailing = path.endswith("/") and path.strip("/") != ""
    parts = deque(components(path))
    cur, links = ROOT_INO, 0
    if not parts:
        return Resolved(ROOT_INO, None, ROOT_INO, DIR_T, False)
    while parts:
        name = parts.popleft()
        if name == "..":
            cur = parent_of(cur)
            if not parts:
                return Resolved(parent_of(cur), None, cur, DIR_T, trailing)
            continue
        found = lookup(cur, name)
        last = not parts
        if found is None:
            if last:
                return Resolved(cur, name, None, None, trailing)
            raise oserror(errno.ENOENT, path)
        ino, ftype = found
        if ftype == LNK_T and (not last or follow or trailing):
            links += 1
            if links > MAX_SYMLINKS:
                raise oserror(errno.ELOOP, path)
            target = readlink(ino)
            if target.startswith("/"):
                cur = ROOT_INO
            parts.extendleft(reversed(components(target)))
            if not parts:  # a link to "/" or to "."
                return Resolved(parent_of(cur), None, cur, DIR_T, trailing)
            continue
        if last:
            if trailing and ftype != DIR_T:
                raise oserror(errno.ENOTDIR, path)
            return Resolved(cur, name, ino, ftype, trailing)
        if ftype != DIR_T:
            raise oserror(errno.ENOTDIR, path)
        cur = ino
    raise AssertionError("unreachable")
