"""sides: the two sides of ``daxfs cp``, the host and a pool, as mechanism.

A side gives a *tree* (a source, read by a cursor that moves down and up)
and a *target* (a destination, written by such a cursor).  What may be
overwritten, followed or refused is cp.py's rule; this module only makes
sure that each call touches exactly the name it is given:

* The host is reached through a directory descriptor (HostDir): every
  name is resolved in the directory the cursor stands in (openat, mkdirat,
  symlinkat, unlinkat, fstatat), never again from the root and never
  through a symlink unless the caller asks.  ``down`` opens a child with
  O_DIRECTORY|O_NOFOLLOW; ``up`` opens ".." and checks that it is the
  directory it came from (a directory moved meanwhile stops the walk).  So
  one descriptor is open per cursor at any depth (plus one per symlink the
  caller chose to follow on its way down): a tree deeper than
  RLIMIT_NOFILE, or with paths past PATH_MAX, is walked like a shallow one.
  New files are created O_CREAT|O_EXCL|O_NOFOLLOW; an existing file is
  opened O_NOFOLLOW|O_NONBLOCK and checked (the file that was looked at, not
  a pool) before it is emptied.
* A pool is reached by path (the daxfs API has no descriptors), each path
  built from names the cursor checked with lstat; ``open(path, "x")``
  never follows the last name.  A pool's damage (CorruptionError) is
  reported as such, with the fsck to run.
* Readers give a file's data runs (SEEK_DATA/SEEK_HOLE on the host, one
  iomap in a pool), so a copy skips holes.

Labels (paths as the user would write them, ``POOL:/path`` in a pool) are
for messages only: no call resolves them.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from ..fs import FileSystem
from ..inode import data_runs
from ..layout import CorruptionError
from ..region import holds_a_pool
from .common import CliError

O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC

Identity = tuple[int, int]


def identity(st: os.stat_result) -> Identity:
    """What a file is, whatever its names: (st_dev, st_ino)."""
    return st.st_dev, st.st_ino


@dataclass(frozen=True)
class Entry:
    """One thing in a source tree: its name in its directory, its label, its
    own attributes (followed for the source the user named: ``top``)."""

    name: str
    label: str
    st: os.stat_result
    top: bool = False

    @property
    def ident(self) -> Identity:
        return identity(self.st)


def basename(path: str) -> str:
    return posixpath.basename(path.rstrip("/"))


def _is_dir(stat_call: Callable[[str], os.stat_result], path: str) -> bool:
    try:
        return stat.S_ISDIR(stat_call(path).st_mode)
    except FileNotFoundError:
        return False


# --------------------------------------------------------------------------
# the sides
# --------------------------------------------------------------------------
class HostSide:
    """The host file system; remembers the pools in use, never to overwrite them."""

    def __init__(self) -> None:
        self.pools_in_use: set[object] = set()

    def label(self, path: str) -> str:
        return path

    def stat(self, path: str) -> os.stat_result:
        return os.stat(path)

    def tree(self, path: str) -> HostTree:
        return HostTree(self, path)

    def target(self) -> HostTarget:
        return HostTarget(self)


class PoolSide:
    """A mounted pool; labels read ``POOL:/path``."""

    def __init__(self, pool: str, fs: FileSystem):
        self.pool, self.fs = pool, fs

    def label(self, path: str) -> str:
        return f"{self.pool}:{path}"

    def stat(self, path: str) -> os.stat_result:
        return self.fs.stat(path)

    def tree(self, path: str) -> PoolTree:
        return PoolTree(self, path)

    def target(self) -> PoolTarget:
        return PoolTarget(self)


# --------------------------------------------------------------------------
# a host directory, held by a descriptor
# --------------------------------------------------------------------------
class HostDir:
    """The host directory a cursor stands in (see the module docstring)."""

    def __init__(self, fd: int, label: str):
        self.fd, self.label = fd, label
        # One per level below the first: (parent identity, the parent's fd
        # when kept open for a followed symlink, parent label).
        self._trail: list[tuple[Identity, int | None, str]] = []

    @classmethod
    def open(cls, path: str, label: str) -> HostDir:
        """The directory at ``path``, symlinks followed (the user named it)."""
        return cls(os.open(path or ".", O_DIR), label)

    @property
    def depth(self) -> int:
        return len(self._trail)

    def name_label(self, name: str) -> str:
        return posixpath.join(self.label, name) if self.label else name

    def lstat(self, name: str, follow: bool = False) -> os.stat_result | None:
        """``name``'s own attributes (its target's with ``follow``); None if missing."""
        try:
            return os.stat(name, dir_fd=self.fd, follow_symlinks=follow)
        except FileNotFoundError:
            return None

    def down(self, name: str, follow: bool = False) -> os.stat_result:
        """Stand in the child directory ``name``; its attributes."""
        child = os.open(name, O_DIR if follow else O_DIR | os.O_NOFOLLOW, dir_fd=self.fd)
        parent = identity(os.fstat(self.fd))
        self._trail.append((parent, self.fd if follow else None, self.label))
        if not follow:
            os.close(self.fd)
        self.fd, self.label = child, self.name_label(name)
        return os.fstat(child)

    def up(self) -> None:
        """Back to the directory ``down`` came from, or CliError."""
        parent, kept, label = self._trail.pop()
        if kept is not None:  # entered through a symlink: its ".." is elsewhere
            os.close(self.fd)
            self.fd, self.label = kept, label
            return
        try:
            fd = os.open("..", O_DIR, dir_fd=self.fd)
        except OSError as e:
            raise CliError(f"{self.label}/..: {e.strerror}; stopping") from None
        if identity(os.fstat(fd)) != parent:
            os.close(fd)
            raise CliError(f"{self.label}: moved out of '{label}' during the copy; stopping")
        os.close(self.fd)
        self.fd, self.label = fd, label

    def close(self) -> None:
        for _, kept, _ in self._trail:
            if kept is not None:
                os.close(kept)
        self._trail.clear()
        os.close(self.fd)


# --------------------------------------------------------------------------
# trees: a source read by a cursor.  ``top()`` first; the other calls act
# in the directory the cursor stands in, or on the top itself by its path
# before the first ``down``.
# --------------------------------------------------------------------------
class HostTree:
    """A host source, walked through one directory descriptor."""

    def __init__(self, side: HostSide, path: str):
        self.side, self.path = side, path
        self._dir: HostDir | None = None

    def top(self) -> Entry:
        return Entry(basename(self.path), self.path, os.stat(self.path), top=True)

    @property
    def dir(self) -> HostDir:
        assert self._dir is not None, "no down() yet"
        return self._dir

    def down(self, entry: Entry) -> os.stat_result:
        if self._dir is None:
            self._dir = HostDir.open(self.path, self.path)
            return os.fstat(self._dir.fd)
        return self._dir.down(entry.name)

    def up(self) -> None:
        if self.dir.depth:
            self.dir.up()
        else:
            self.close()

    def names(self) -> list[str]:
        return sorted(os.listdir(self.dir.fd))

    def child(self, name: str) -> Entry:
        st = os.stat(name, dir_fd=self.dir.fd, follow_symlinks=False)
        return Entry(name, self.dir.name_label(name), st)

    def open_data(self, entry: Entry) -> HostReader:
        if entry.top:
            # Named by the user, so followed; a pipe or a device is read as a
            # stream, as cp(1) reads them.
            return HostReader(os.open(self.path, os.O_RDONLY | os.O_CLOEXEC))
        flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
        fd = os.open(entry.name, flags, dir_fd=self.dir.fd)
        st = os.fstat(fd)
        if identity(st) != entry.ident or not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise CliError(f"{entry.label}: replaced during the copy; not copied")
        return HostReader(fd)

    def readlink(self, entry: Entry) -> str:
        return os.readlink(entry.name, dir_fd=self.dir.fd)

    def met_twice(self, entry: Entry) -> str:
        return f"{entry.label}: a directory met twice (a loop: a bind mount?); not copied again"

    def close(self) -> None:
        if self._dir is not None:
            self._dir.close()
            self._dir = None


class PoolTree:
    """A source in a pool, walked by path."""

    def __init__(self, side: PoolSide, path: str):
        self.side, self.path, self.fs = side, path, side.fs
        self._dirs: list[str] = []

    def _path(self, name: str) -> str:
        return posixpath.join(self._dirs[-1], name) if self._dirs else self.path

    @contextmanager
    def _reading(self, label: str) -> Iterator[None]:
        try:
            yield
        except CorruptionError as e:
            raise CliError(f"{label}: {e.strerror or e}; {self._damaged()}") from None

    def _damaged(self) -> str:
        return f"the pool is damaged (run 'daxfs fsck {self.side.pool}')"

    def top(self) -> Entry:
        with self._reading(self.side.label(self.path)):
            st = self.fs.stat(self.path)
        return Entry(basename(self.path), self.side.label(self.path), st, top=True)

    def down(self, entry: Entry) -> os.stat_result:
        path = self._path(entry.name)
        with self._reading(entry.label):
            st = self.fs.stat(path, follow_symlinks=entry.top)
        self._dirs.append(path)
        return st

    def up(self) -> None:
        self._dirs.pop()

    def names(self) -> list[str]:
        with self._reading(self.side.label(self._dirs[-1])):
            return sorted(self.fs.listdir(self._dirs[-1]))

    def child(self, name: str) -> Entry:
        path = self._path(name)
        with self._reading(self.side.label(path)):
            return Entry(name, self.side.label(path), self.fs.lstat(path))

    def open_data(self, entry: Entry) -> PoolReader:
        with self._reading(entry.label):
            return PoolReader(self.fs, self._path(entry.name))

    def readlink(self, entry: Entry) -> str:
        with self._reading(entry.label):
            return self.fs.readlink(self._path(entry.name))

    def met_twice(self, entry: Entry) -> str:
        return f"{entry.label}: a directory met twice: {self._damaged()}; not copied again"

    def close(self) -> None:
        self._dirs.clear()


# --------------------------------------------------------------------------
# readers: a file's data runs, and its bytes by offset
# --------------------------------------------------------------------------
DataRun = tuple[int, "int | None"]  # [start, end) of data; end None: on to the end


class HostReader:
    """A host file; its data runs from SEEK_DATA/SEEK_HOLE."""

    def __init__(self, fd: int):
        self.fd, self._streamed = fd, 0

    def data_runs(self) -> Iterator[DataRun]:
        """Each run of data; one open-ended run where there are no offsets
        (a pipe) or no SEEK_DATA."""
        off = 0
        while True:
            try:
                start = os.lseek(self.fd, off, os.SEEK_DATA)
            except OSError as e:
                if e.errno == errno.ENXIO:  # no data at or past off
                    return
                if off == 0 and e.errno in (errno.ESPIPE, errno.EINVAL, errno.EOPNOTSUPP):
                    yield 0, None
                    return
                raise
            off = os.lseek(self.fd, start, os.SEEK_HOLE)
            yield start, off

    def read_into(self, view: memoryview, offset: int) -> int:
        try:
            return os.preadv(self.fd, [view], offset)
        except OSError as e:
            if e.errno != errno.ESPIPE:
                raise
        n = os.readv(self.fd, [view])  # a stream: the offsets asked for are consecutive
        self._streamed += n
        return n

    def size(self) -> int:
        st = os.fstat(self.fd)
        return st.st_size if stat.S_ISREG(st.st_mode) else self._streamed

    def close(self) -> None:
        os.close(self.fd)


class PoolReader:
    """A pool file; its data runs from one iomap, linear in its extents
    however many a crafted file has."""

    def __init__(self, fs: FileSystem, path: str):
        self.fs, self.path = fs, path
        self.raw = fs.open(path, "rb", buffering=0)

    def data_runs(self) -> Iterator[DataRun]:
        return iter(data_runs(self.fs.iomap(self.path)))

    def read_into(self, view: memoryview, offset: int) -> int:
        self.raw.seek(offset)
        return self.raw.readinto(view)

    def size(self) -> int:
        return self.raw.seek(0, os.SEEK_END)

    def close(self) -> None:
        self.raw.close()


Reader = HostReader | PoolReader


# --------------------------------------------------------------------------
# writers: a destination file by offset
# --------------------------------------------------------------------------
class HostWriter:
    def __init__(self, fd: int):
        self.fd, self.ident = fd, identity(os.fstat(fd))

    def write_at(self, view: memoryview, offset: int) -> None:
        while view:
            n = os.pwrite(self.fd, view, offset)
            view, offset = view[n:], offset + n

    def truncate(self, size: int) -> None:
        os.ftruncate(self.fd, size)

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)


class PoolWriter:
    def __init__(self, fs: FileSystem, path: str, mode: str):
        self.raw = fs.open(path, mode, buffering=0)
        self.ident = identity(fs.lstat(path))

    def write_at(self, view: memoryview, offset: int) -> None:
        self.raw.seek(offset)
        self.raw.write(view)

    def truncate(self, size: int) -> None:
        self.raw.truncate(size)

    def close(self) -> None:
        self.raw.close()


Writer = HostWriter | PoolWriter


# --------------------------------------------------------------------------
# targets: a destination written by a cursor.  ``start`` first; the other
# calls act in the directory the cursor stands in.
# --------------------------------------------------------------------------
class HostTarget:
    """Where a copy goes on the host: names resolved in one directory descriptor."""

    def __init__(self, side: HostSide):
        self.side = side
        self._dir: HostDir | None = None

    def start(self, dst: str, name: str) -> tuple[str, bool]:
        """Stand where the top entry goes: in ``dst`` if it is a directory
        (the entry keeps ``name``), else in its parent (the entry is named
        by ``dst``).  Returns the entry's name there and whether the user
        named the entry itself (then it may be followed, as by cp(1))."""
        self.stop()
        if _is_dir(os.stat, dst):
            self._dir = HostDir.open(dst, dst)
            return name, False
        parent, last = posixpath.split(dst.rstrip("/") or dst)
        self._dir = HostDir.open(parent, parent)
        return last, True

    @property
    def dir(self) -> HostDir:
        assert self._dir is not None, "no start() yet"
        return self._dir

    def label(self, name: str | None = None) -> str:
        return self.dir.label if name is None else self.dir.name_label(name)

    def lstat(self, name: str, follow: bool = False) -> os.stat_result | None:
        return self.dir.lstat(name, follow)

    def create_file(self, name: str) -> HostWriter:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        return HostWriter(os.open(name, flags, 0o600, dir_fd=self.dir.fd))

    def overwrite_file(self, name: str, seen: os.stat_result, follow: bool) -> HostWriter:
        """The regular file ``seen`` at ``name``, emptied: never through a
        symlink (unless ``follow``), never a pool in use nor any pool file."""
        flags = os.O_WRONLY | os.O_CLOEXEC | os.O_NONBLOCK | (0 if follow else os.O_NOFOLLOW)
        writer = HostWriter(os.open(name, flags, dir_fd=self.dir.fd))
        try:
            self._refuse_to_overwrite(writer, seen, self.label(name))
            writer.truncate(0)
        except BaseException:
            writer.close()
            raise
        return writer

    def _refuse_to_overwrite(self, writer: HostWriter, seen: os.stat_result, label: str) -> None:
        if writer.ident != identity(seen):
            raise CliError(f"{label}: replaced during the copy; not overwritten")
        if writer.ident in self.side.pools_in_use:
            raise CliError(f"{label}: refusing to overwrite a pool that is being copied")
        if holds_a_pool(f"/proc/self/fd/{writer.fd}"):  # the very file opened
            raise CliError(
                f"{label}: refusing to overwrite a daxfs pool with a host file "
                f"(to copy into the pool, name a path in it: {label}:/NAME)"
            )

    def remove(self, name: str) -> None:
        os.unlink(name, dir_fd=self.dir.fd)

    def discard(self, name: str, writer: Writer) -> None:
        """Remove the file ``writer`` made at ``name`` (if it is still there)."""
        st = self.lstat(name)
        if st is not None and identity(st) == writer.ident:
            self.remove(name)

    def mkdir(self, name: str, mode: int) -> None:
        os.mkdir(name, mode, dir_fd=self.dir.fd)

    def enter(self, name: str, follow: bool = False) -> os.stat_result:
        return self.dir.down(name, follow)

    def leave(self) -> None:
        self.dir.up()

    def set_dir_mode(self, mode: int) -> None:
        os.fchmod(self.dir.fd, mode)

    def set_file_mode(self, name: str, writer: Writer, mode: int) -> None:
        assert isinstance(writer, HostWriter)
        os.fchmod(writer.fd, mode)

    def symlink(self, text: str, name: str) -> os.stat_result:
        os.symlink(text, name, dir_fd=self.dir.fd)
        return os.stat(name, dir_fd=self.dir.fd, follow_symlinks=False)

    def stop(self) -> None:
        if self._dir is not None:
            self._dir.close()
            self._dir = None


class PoolTarget:
    """Where a copy goes in a pool, by path."""

    def __init__(self, side: PoolSide):
        self.side, self.fs = side, side.fs
        self._dirs: list[str] = []

    def start(self, dst: str, name: str) -> tuple[str, bool]:
        """As HostTarget.start."""
        if _is_dir(self.fs.stat, dst):
            self._dirs = [dst]
            return name, False
        parent, last = posixpath.split(dst.rstrip("/") or dst)
        parent = parent or "/"
        if not _is_dir(self.fs.stat, parent):
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), parent)
        self._dirs = [parent]
        return last, True

    def _path(self, name: str) -> str:
        return posixpath.join(self._dirs[-1], name)

    def label(self, name: str | None = None) -> str:
        return self.side.label(self._dirs[-1] if name is None else self._path(name))

    def lstat(self, name: str, follow: bool = False) -> os.stat_result | None:
        try:
            return self.fs.stat(self._path(name), follow_symlinks=follow)
        except FileNotFoundError:
            return None

    def create_file(self, name: str) -> PoolWriter:
        return PoolWriter(self.fs, self._path(name), "xb")  # "x" never follows the last name

    def create_whole(self, name: str, data, perms: int) -> Identity:
        """Make the new file ``name`` holding ``data`` with ``perms``, name,
        bytes and mode in one change (a crash leaves it whole or absent):
        its identity.  FileExistsError if the name is taken (never followed)."""
        ino = self.fs._create_with(self._path(name), data, perms)
        return self.fs.st_dev, ino  # (what lstat would say, without the call)

    def overwrite_file(self, name: str, seen: os.stat_result, follow: bool) -> PoolWriter:
        writer = PoolWriter(self.fs, self._path(name), "r+b")
        if writer.ident != identity(seen) and not follow:
            writer.close()
            raise CliError(f"{self.label(name)}: replaced during the copy; not overwritten")
        writer.truncate(0)
        return writer

    def remove(self, name: str) -> None:
        self.fs.unlink(self._path(name))

    def discard(self, name: str, writer: Writer) -> None:
        st = self.lstat(name)
        if st is not None and identity(st) == writer.ident:
            self.remove(name)

    def mkdir(self, name: str, mode: int) -> None:
        self.fs.mkdir(self._path(name), mode)

    def enter(self, name: str, follow: bool = False) -> os.stat_result:
        path = self._path(name)
        st = self.fs.stat(path, follow_symlinks=follow)
        if not stat.S_ISDIR(st.st_mode):
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path)
        self._dirs.append(path)
        return st

    def leave(self) -> None:
        self._dirs.pop()

    def set_dir_mode(self, mode: int) -> None:
        self.fs.chmod(self._dirs[-1], mode)

    def set_file_mode(self, name: str, writer: Writer, mode: int) -> None:
        self.fs.chmod(self._path(name), mode)

    def symlink(self, text: str, name: str) -> os.stat_result:
        self.fs.symlink(text, self._path(name))
        return self.fs.lstat(self._path(name))

    def stop(self) -> None:
        self._dirs.clear()


Side = HostSide | PoolSide
Tree = HostTree | PoolTree
Target = HostTarget | PoolTarget
