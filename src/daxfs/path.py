"""path: resolving POSIX paths to inodes.

Paths are absolute POSIX paths (a relative path is taken from the root:
a pool has no working directory).  Resolution follows Linux's namei:

- "" names nothing (ENOENT); a path of PATH_MAX (4096) bytes or more, or a
  name over 255 bytes, is ENAMETOOLONG.
- "." stays and ".." goes to the parent, never above the root; a name
  before either must be a directory ("file/." is ENOTDIR).
- Symlinks are followed (at most 40) in every component and, when asked,
  in the last; a trailing slash asks for it too, except for the calls that
  change the entry itself (``entry=True``: mkdir, rmdir, unlink, rename,
  link, symlink), which never follow the last name, as Linux's
  *parent-at* lookups do not.
- The path "/", and a path whose last name is "." or "..", names a
  directory but no entry in one (``Resolved.last`` says which), so
  removing or renaming it is refused with Linux's errno for each.

Resolution needs only the answers of the layer above: lookup(dir, name),
the target of a symlink and a directory's parent.

A server that names files as the kernel does, by inode (fuse.py), passes
two other kinds of path, which the API itself never makes: ``At(name,
dir)``, one name in the directory with that inode number (a *at() call
with a directory descriptor), and ``Ino(ino)``, the inode itself (an
f*() call on an open descriptor: nothing is followed, and an unlinked
inode still held open is reached).  Both are strings, so every call and
message takes them as it takes a path.  Each may name its inode by birth
time too (``born``): the server's kernel may still hold a number the pool
has since given to a new file, and a call that meant the old one must
find it gone (ENOENT), not change the new one.
"""

from __future__ import annotations

import errno
import os
import stat
from collections import deque
from collections.abc import Callable
from typing import NamedTuple

from .layout import MAX_NAME, PATH_MAX, SPECIAL_TYPES

ROOT_INO = 1
MAX_SYMLINKS = 40


def oserror(code: int, path: object = None, path2: object = None) -> OSError:
    """The builtin OSError subclass for ``code`` (FileNotFoundError, ...)."""
    if path2 is not None:
        return OSError(code, os.strerror(code), path, None, path2)
    if path is not None:
        return OSError(code, os.strerror(code), path)
    return OSError(code, os.strerror(code))


class At(str):
    """The name ``name`` in directory ``dir`` (an inode number; if ``born``
    is given, only while that number is the directory born then)."""

    dir: int
    born: int | None

    def __new__(cls, name: str, dir: int, born: int | None = None) -> At:
        self = super().__new__(cls, name)
        self.dir, self.born = dir, born
        return self


class Ino(str):
    """Inode ``ino`` itself, whatever names it (its text is for messages);
    if ``born`` is given, only while that number is the inode born then."""

    ino: int
    born: int | None

    def __new__(cls, ino: int, born: int | None = None) -> Ino:
        self = super().__new__(cls, f"<inode {ino}>")
        self.ino, self.born = ino, born
        return self


def to_str(path: object) -> str:
    p = path if type(path) is str else os.fspath(path)  # type: ignore[arg-type]
    if isinstance(p, bytes):
        p = p.decode("utf-8", "surrogateescape")
    if "\0" in p:
        raise ValueError("embedded null byte")
    return p


def components(path: str, path_max: int | None = PATH_MAX) -> list[str]:
    """Split into names, dropping empty parts (keeping "." and ".."); checks
    the length of the path (unless ``path_max`` is None) and of each name."""
    if path_max is not None and len(path.encode("utf-8", "surrogateescape")) >= path_max:
        raise oserror(errno.ENAMETOOLONG, path)
    parts = [c for c in path.split("/") if c]
    for c in parts:
        if len(c.encode("utf-8", "surrogateescape")) > MAX_NAME:
            raise oserror(errno.ENAMETOOLONG, path)
    return parts


class Resolved(NamedTuple):
    """Where a path leads: the directory holding the last name, the name,
    and the inode it names (None if no such entry).  ``last`` is "name",
    or "root", "dot" or "dotdot" for a path ending in "/", "." or "..",
    which name a directory (``ino``) but no entry (``name`` is None), or
    "inode" for an ``Ino`` (no entry either).
    A named tuple: every call makes one, and a tuple is the cheapest."""

    parent: int
    name: str | None
    ino: int | None
    ftype: int | None
    trailing_slash: bool
    last: str = "name"
    # What the path up to its last "/" led to, (directory, symlinks followed
    # on the way), when the walk got there: a path cache keeps it, so the
    # next path in that directory walks one name (FileSystem._resolve).
    head: tuple[int, int] | None = None
    links: int = 0  # symlinks followed in all


Lookup = Callable[[int, str], "tuple[int, int] | None"]
ReadLink = Callable[[int], str]
ParentOf = Callable[[int], int]

DIR_T = stat.S_IFDIR >> 12
LNK_T = stat.S_IFLNK >> 12
REG_T = stat.S_IFREG >> 12
# FIFOs, devices and sockets (version 6): names with attributes, no bytes.
SPECIAL_T = frozenset(t >> 12 for t in SPECIAL_TYPES)
_NO_ENTRY = {".": "dot", "..": "dotdot"}


def last_name(path: str, path_max: int | None = PATH_MAX) -> list[str]:
    """The name after the last "/" (not empty), as ``components`` checks it."""
    name = path[path.rfind("/") + 1 :]
    if path_max is not None and len(path.encode("utf-8", "surrogateescape")) >= path_max:
        raise oserror(errno.ENAMETOOLONG, path)
    if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME:
        raise oserror(errno.ENAMETOOLONG, path)
    return [name]


def resolve(
    path: str,
    lookup: Lookup,
    readlink: ReadLink,
    parent_of: ParentOf,
    follow: bool = True,
    entry: bool = False,
    head: tuple[int, int] | None = None,
    path_max: int | None = PATH_MAX,
) -> Resolved:
    """Walk ``path`` from the root.  ``follow``: follow a symlink in the last
    component (a trailing slash does too, unless ``entry``).  ``head``: what
    the path up to its last "/" resolves to (Resolved.head of an earlier
    walk, the pool unchanged since), for a path that does not end in "/":
    then only the last name is walked.  ``path_max``: the longest path
    taken, None for no limit (a FUSE server's: the kernel has applied
    PATH_MAX to the path its caller passed, maybe relative, and the path it
    hands over is absolute)."""
    if not path:
        raise oserror(errno.ENOENT, path)
    if head is None:
        parts = deque(components(path, path_max))
        cur, links = ROOT_INO, 0
    else:
        parts = deque(last_name(path, path_max))
        cur, links = head
    trailing = path.endswith("/")
    if not parts:
        return Resolved(ROOT_INO, None, ROOT_INO, DIR_T, False, "root")
    at_head = None
    while parts:
        name = parts.popleft()
        last = not parts
        if last and at_head is None:
            # The path's own last name (a link's names are put before it):
            # everything before it led here.
            at_head = (cur, links)
        if name in _NO_ENTRY:
            cur = cur if name == "." else parent_of(cur)
            if last:
                return Resolved(
                    parent_of(cur), None, cur, DIR_T, trailing, _NO_ENTRY[name], at_head, links
                )
            continue
        found = lookup(cur, name)
        if found is None:
            if last:
                return Resolved(cur, name, None, None, trailing, "name", at_head, links)
            raise oserror(errno.ENOENT, path)
        ino, ftype = found
        if ftype == LNK_T and (not last or follow or (trailing and not entry)):
            links += 1
            if links > MAX_SYMLINKS:
                raise oserror(errno.ELOOP, path)
            target = readlink(ino)
            if target.startswith("/"):
                cur = ROOT_INO
            parts.extendleft(reversed(components(target)))
            if last:
                trailing = trailing or target.endswith("/")  # the target's last name is ours
            if not parts:  # a link to "/"
                return Resolved(ROOT_INO, None, ROOT_INO, DIR_T, trailing, "root", at_head, links)
            continue
        if last:
            if trailing and ftype != DIR_T and not entry:
                raise oserror(errno.ENOTDIR, path)
            return Resolved(cur, name, ino, ftype, trailing, "name", at_head, links)
        if ftype != DIR_T:
            raise oserror(errno.ENOTDIR, path)
        cur = ino
    raise AssertionError("unreachable")
