"""listing: reading directories, the ListingPath room of FileSystem.

listdir, scandir (with DirEntry, the os.DirEntry interface) and walk, an
iterative os.walk that refuses a directory met twice (MetOnce keeps the
same watch for the other walks: rmtree, fsspec's and zarr's).  Mixed into
FileSystem (fs.py) as data.py's DataPath is; the methods use its
resolution (_existing), directory cache (_dir) and locking (_locked).
"""

from __future__ import annotations

import errno
import os
import stat
from typing import TYPE_CHECKING

from .layout import CorruptionError
from .path import DIR_T, LNK_T, oserror, to_str

if TYPE_CHECKING:
    from .fs import FileSystem


class MetOnce:
    """The directories one walk met, by inode.  A tree meets each once; a
    second meeting is a damaged (or crafted) pool, whose walk would otherwise
    cycle, or multiply (forty directories naming the next twice: 2^40 paths)."""

    def __init__(self) -> None:
        self.paths: dict[int, str] = {}

    def check(self, entry: DirEntry) -> None:
        first = self.paths.setdefault(entry.inode(), entry.path)
        if first != entry.path:
            raise met_twice(entry.path, first, entry.inode())


def met_twice(path: str, first: str, ino: object) -> CorruptionError:
    return CorruptionError(
        f"{path}: directory met twice in one walk, first as {first} (inode {ino}); "
        "the pool's tree is damaged"
    )


class DirEntry:
    """What fs.scandir yields; the same interface as os.DirEntry."""

    def __init__(self, fs: FileSystem, parent: str, name: str, ino: int, ftype: int):
        self._fs, self.name, self._ino, self._ftype = fs, name, ino, ftype
        self.path = parent.rstrip("/") + "/" + name

    def inode(self) -> int:
        return self._ino

    def is_dir(self, *, follow_symlinks: bool = True) -> bool:
        if self._ftype == LNK_T and follow_symlinks:
            return self._fs.isdir(self.path)
        return self._ftype == DIR_T

    def is_file(self, *, follow_symlinks: bool = True) -> bool:
        if self._ftype == LNK_T and follow_symlinks:
            return self._fs.isfile(self.path)
        return self._ftype == stat.S_IFREG >> 12

    def is_symlink(self) -> bool:
        return self._ftype == LNK_T

    def type_bits(self) -> int:
        """The entry's S_IFMT bits, from the directory alone (what readdir's
        d_type gives; not in os.DirEntry, which has no FIFO or device test)."""
        return self._ftype << 12

    def stat(self, *, follow_symlinks: bool = True) -> os.stat_result:
        return self._fs.stat(self.path) if follow_symlinks else self._fs.lstat(self.path)

    def __fspath__(self) -> str:
        return self.path

    def __repr__(self) -> str:
        return f"<DirEntry {self.name!r}>"


class _ScandirIterator:
    def __init__(self, entries: list[DirEntry]):
        self._it = iter(entries)

    def __iter__(self):
        return self

    def __next__(self) -> DirEntry:
        return next(self._it)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._it = iter(())


class ListingPath:
    """listdir, scandir and walk (mixed into FileSystem)."""

    def listdir(self, path="/") -> list[str]:
        return self._query(self._names_in, to_str(path))

    def _names_in(self, spath: str) -> list[str]:
        r = self._existing(spath)
        if r.ftype != DIR_T:
            raise oserror(errno.ENOTDIR, spath)
        return list(self._dir(r.ino).entries)  # type: ignore[arg-type]

    def scandir(self, path="/") -> _ScandirIterator:
        return _ScandirIterator(self._listing(to_str(path))[1])

    def _listing(self, spath: str) -> tuple[int, list[DirEntry]]:
        """The directory ``spath`` names (symlinks followed): its inode and
        entries, from one resolution at one commit."""
        return self._query(self._entries_of, spath)

    def _entries_of(self, spath: str) -> tuple[int, list[DirEntry]]:
        r = self._existing(spath)
        if r.ftype != DIR_T:
            raise oserror(errno.ENOTDIR, spath)
        d = self._dir(r.ino)  # type: ignore[arg-type]
        entries = [DirEntry(self, spath or "/", name, e[0], e[1]) for name, e in d.entries.items()]
        return r.ino, entries  # type: ignore[return-value]

    def walk(self, top="/", topdown: bool = True, onerror=None, followlinks: bool = False):
        """Like os.walk: yields (dirpath, dirnames, filenames); topdown callers
        may prune dirnames in place.  A loop, not recursion: a tree has no
        depth limit.  Lookups already refuse a directory named twice
        (CorruptionError), and the walk keeps its own set of the directories
        it listed too: meeting one again raises CorruptionError naming the
        path, at once (a damaged pool, or a directory moved during the walk).
        With ``followlinks``, directories reached through symlinks are walked
        again as os.walk walks them, but a symlink back to a directory the
        walk is inside is not followed (a loop; ``find -L`` says so too).
        Errors listing a directory go to ``onerror`` as in os.walk, but
        without ``onerror`` damage is raised: a damaged pool never looks like
        a smaller tree."""
        stack: list[tuple] = [(to_str(top), None)]
        seen: set[int] = set()
        while stack:
            item = stack.pop()
            if len(item) == 3:  # bottom-up: its subdirectories are done
                yield item
                continue
            path, above = item
            listed = self._walk_listing(path, above, seen, followlinks, onerror)
            if listed is None:
                continue
            here, dirs, files, links = listed
            if topdown:
                yield path, dirs, files
            else:
                stack.append((path, dirs, files))
            prefix = path.rstrip("/") + "/"
            for name in reversed(dirs):
                if followlinks or name not in links:
                    stack.append((prefix + name, here))

    def _walk_listing(self, path: str, above, seen: set[int], followlinks: bool, onerror):
        """One directory of a walk: (its chain of directories, dirs, files,
        names of symlinks), or None when it is skipped (an error given to
        onerror, or a symlink loop).  ``above`` is the chain of the directory
        it was found in, (ino, chain above) pairs: only followed symlinks
        need it, to tell a loop from a second way to one directory."""
        try:
            ino, entries = self._listing(path)
            if ino in seen:
                if not followlinks:
                    raise CorruptionError(
                        f"directory {ino} met twice in one walk "
                        "(a damaged pool, or a directory moved during the walk)",
                        path=path,
                    )
                if _on_chain(ino, above):
                    return None
            seen.add(ino)
        except OSError as e:
            if onerror is not None:
                onerror(e)
                return None
            if isinstance(e, CorruptionError):
                raise
            return None
        # As os.walk: a symlink to a directory is listed among the directories,
        # and walked into only with followlinks.
        dirs = [e.name for e in entries if e.is_dir()]
        files = [e.name for e in entries if not e.is_dir()]
        links = {e.name for e in entries if e.is_symlink()}
        return (ino, above), dirs, files, links


def _on_chain(ino: int, chain) -> bool:
    """Is ``ino`` one of the directories on a walk's chain of (ino, above) pairs?"""
    while chain is not None:
        if chain[0] == ino:
            return True
        chain = chain[1]
    return False
